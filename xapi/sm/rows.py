"""Database helpers the storage actions share: adding and removing rows (the database keeps the
relation sets), handle checks, and refreshing SR and VDI allowed_operations (xapi.sm.operations)."""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert
from xapi.sm import operations


def check(db, cls: str, ref) -> dict:
    try:
        return db.table(cls).get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", cls, ref) from None


def add(db, cls: str, **values) -> str:
    return insert(db, cls, **values)


def remove(db, cls: str, ref: str) -> None:
    table = db.table(cls)
    if ref in table:
        table.remove(ref)


def set_ref(db, cls: str, ref: str, field: str, value: str) -> None:
    """Sets a reference field; the database moves the row between the referenced objects' sets."""
    table = db.table(cls)
    if table.get_field(ref, field) != value:
        table.set_field(ref, field, value)


def destroy_vdi_row(db, vdi: str) -> None:
    """The VDI's record and its VBDs' (xapi destroys them with the VDI); snapshots keep no link."""
    table = db.table("VDI")
    if vdi not in table:
        return
    for vbd in list(table.get_field(vdi, "VBDs")):
        remove(db, "VBD", vbd)
    for snap in list(table.get_field(vdi, "snapshots")):
        if snap in table:
            table.set_field(snap, "snapshot_of", NULL_REF)
    remove(db, "VDI", vdi)


# -- allowed operations (xapi.sm.operations has the rules) ----------------------------------------
def refresh_sr(app, sr: str) -> None:
    operations.refresh_sr(app, sr)


def refresh_vdi(app, vdi: str) -> None:
    operations.refresh_vdi(app, vdi)


def refresh_sr_and_vdis(app, sr: str) -> None:
    refresh_sr(app, sr)
    if sr in app.db.table("SR"):
        for vdi in app.db.table("SR").get_field(sr, "VDIs"):
            refresh_vdi(app, vdi)
