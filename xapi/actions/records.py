"""A class's constructor record as xapi's dispatcher unmarshals it before the create call runs: each
constructor field converted to its type (FIELD_TYPE_ERROR otherwise, enums in their canonical
spelling), a missing one with a default gets it, a missing one without is the dispatcher's
FieldNotFound (an INTERNAL_ERROR on the wire, as in xapi)."""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.actions.accessors import _field_not_found
from xapi.datamodel.errors import XapiError
from xapi.dispatch.convert import converter

_CONVERTERS: dict = {}


def _fields(cls: str) -> tuple:
    got = _CONVERTERS.get(cls)
    if got is None:
        got = _CONVERTERS[cls] = tuple((name, f, converter(f.type, name))
                                       for name, f in dm.CLASSES[cls].fields.items()
                                       if f.qualifier in ("RW", "RO/constructor"))
    return got


def unmarshal(cls: str, record) -> dict:
    if not isinstance(record, dict):
        raise XapiError("FIELD_TYPE_ERROR", "args")
    out = {}
    for name, f, conv in _fields(cls):
        if name in record:
            out[name] = conv(record[name]) if conv is not None else record[name]
        elif f.default is not None:
            out[name] = f.initial()
        else:
            raise _field_not_found(name)
    return out
