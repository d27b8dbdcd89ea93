"""The implicit messages of every class, straight over its table: get_all, get_all_records, get_record,
get_by_uuid, get_by_name_label, get_<field>, set_<field>, add_to_/remove_from_<map>, add_/remove_<set>.

`create` and `destroy` are not generic: each class's actions module provides them.
"""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError


def _handle_invalid(cls: str, ref) -> XapiError:
    return XapiError("HANDLE_INVALID", cls, ref)


def accessor(message: dm.Message, db):
    """The handler for an implicit message, or None for those that need a class's own logic.

    The table is bound now, not looked up per call: these are the hottest calls there are."""
    cls, name = message.cls, message.name
    fields = dm.CLASSES[cls].fields
    if not fields:
        return None
    table = db.table(cls)

    if name == "get_all":
        def get_all(ctx, session):
            return table.refs()
        return get_all
    if name == "get_all_records":
        def get_all_records(ctx, session):
            return table.all_records()
        return get_all_records
    if name == "get_record":
        def get_record(ctx, session, ref):
            try:
                return table.get(ref)
            except KeyError:
                raise _handle_invalid(cls, ref) from None
        return get_record
    if name == "get_by_uuid":
        def get_by_uuid(ctx, session, uuid):
            refs = table.find("uuid", uuid)
            if not refs:
                raise XapiError("UUID_INVALID", cls, uuid)
            return refs[0]
        return get_by_uuid
    if name == "get_by_name_label":
        def get_by_name_label(ctx, session, label):
            return table.find("name_label", label)
        return get_by_name_label
    if name.startswith("get_") and name[4:] in fields:
        field = name[4:]
        get_field = table.get_field

        def getter(ctx, session, ref):
            try:
                return get_field(ref, field)
            except KeyError:
                raise _handle_invalid(cls, ref) from None
        return getter
    if name.startswith("set_") and name[4:] in fields:
        field = name[4:]

        def setter(ctx, session, ref, value):
            try:
                table.set_field(ref, field, value)
            except KeyError:
                raise _handle_invalid(cls, ref) from None
            return ""
        return setter
    if name.startswith("add_to_") and name[7:] in fields:
        return _map_add(table, cls, name[7:])
    if name.startswith("remove_from_") and name[12:] in fields:
        return _map_remove(table, cls, name[12:])
    if name.startswith("add_") and name[4:] in fields:
        return _set_add(table, cls, name[4:])
    if name.startswith("remove_") and name[7:] in fields:
        return _set_remove(table, cls, name[7:])
    return None


def _current(table, cls, ref, field):
    try:
        return table.get_field(ref, field)
    except KeyError:
        raise _handle_invalid(cls, ref) from None


# Containers are replaced, never changed in place: a row's old value may still be on its way to a client.
def _map_add(table, cls, field):
    def add_to(ctx, session, ref, key, value):
        current = _current(table, cls, ref, field)
        if key in current:
            uuid = table.get_field(ref, "uuid")
            raise XapiError("MAP_DUPLICATE_KEY", cls, field, uuid, key)
        table.set_field(ref, field, {**current, key: value})
        return ""
    return add_to


def _map_remove(table, cls, field):
    def remove_from(ctx, session, ref, key):
        current = _current(table, cls, ref, field)
        if key in current:
            table.set_field(ref, field, {k: v for k, v in current.items() if k != key})
        return ""
    return remove_from


def _set_add(table, cls, field):
    def add(ctx, session, ref, value):
        current = _current(table, cls, ref, field)
        if value not in current:
            table.set_field(ref, field, [*current, value])
        return ""
    return add


def _set_remove(table, cls, field):
    def remove(ctx, session, ref, value):
        current = _current(table, cls, ref, field)
        if value in current:
            table.set_field(ref, field, [v for v in current if v != value])
        return ""
    return remove
