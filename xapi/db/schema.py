"""Makes one table per datamodel class, and rows that start from the datamodel's defaults."""
import uuid as _uuid

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.fastdb import Database

NULL_REF = "OpaqueRef:NULL"


def new_ref() -> str:
    return f"OpaqueRef:{_uuid.uuid4()}"


def new_uuid() -> str:
    return str(_uuid.uuid4())


def new_database() -> Database:
    db = Database()
    for c in dm.CLASSES.values():
        if c.fields:
            db.create_table(c.name, list(c.fields), indexed=("uuid",) if "uuid" in c.fields else ())
    return db


def insert(db: Database, cls: str, ref: str | None = None, **values) -> str:
    """Adds a row of class `cls`: every field not given takes its datamodel default; returns its ref."""
    fields = dm.CLASSES[cls].fields
    unknown = set(values) - set(fields)
    if unknown:
        raise XapiError("INTERNAL_ERROR", f"{cls} has no fields {sorted(unknown)}")
    row = {name: values[name] if name in values else f.initial() for name, f in fields.items()}
    if "uuid" in fields and not row["uuid"]:
        row["uuid"] = new_uuid()
    ref = ref or new_ref()
    db.table(cls).add(ref, row)
    return ref
