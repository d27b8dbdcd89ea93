"""Makes one table per datamodel class, and rows that start from the datamodel's defaults."""
import uuid as _uuid

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.datamodel.relations import RELATIONS
from xapi.fastdb import Database

NULL_REF = "OpaqueRef:NULL"


def new_ref() -> str:
    return f"OpaqueRef:{_uuid.uuid4()}"


def new_uuid() -> str:
    return str(_uuid.uuid4())


def new_database() -> Database:
    """Empty tables for every class, indexed on uuid and name_label, with the datamodel's relations
    (their ref fields are indexed by the database itself)."""
    db = Database()
    for c in dm.CLASSES.values():
        if c.fields:
            db.create_table(c.name, list(c.fields),
                            indexed=tuple(f for f in ("uuid", "name_label") if f in c.fields))
    for (cls, field), (other, many) in RELATIONS.items():
        db.add_relation(cls, field, other, many)
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
