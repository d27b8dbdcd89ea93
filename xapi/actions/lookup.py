"""A row by its reference, or xapi's HANDLE_INVALID [class, ref] for an unknown or malformed one: the
check every explicit message makes on the references it is given."""
from __future__ import annotations

from xapi.datamodel.errors import XapiError


def record(db, cls: str, ref) -> dict:
    try:
        return db.table(cls).get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", cls, ref) from None
