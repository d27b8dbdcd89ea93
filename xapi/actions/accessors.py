"""The implicit messages of every class, straight over its table: get_all, get_all_records, get_record,
get_by_uuid, get_by_name_label, get_<field>, set_<field>, add_to_/remove_from_<map>, add_/remove_<set>.

`create` and `destroy` are not generic: each class's actions module provides them.
"""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError


def _handle_invalid(cls: str, ref) -> XapiError:
    return XapiError("HANDLE_INVALID", cls, ref)


def accessor(message: dm.Message):
    """The handler for an implicit message, or None for those that need a class's own logic."""
    cls, name = message.cls, message.name
    fields = dm.CLASSES[cls].fields

    if name == "get_all":
        def get_all(ctx, session):
            return ctx.app.db.table(cls).refs()
        return get_all
    if name == "get_all_records":
        def get_all_records(ctx, session):
            return ctx.app.db.table(cls).all_records()
        return get_all_records
    if name == "get_record":
        def get_record(ctx, session, ref):
            try:
                return ctx.app.db.table(cls).get(ref)
            except KeyError:
                raise _handle_invalid(cls, ref) from None
        return get_record
    if name == "get_by_uuid":
        def get_by_uuid(ctx, session, uuid):
            refs = ctx.app.db.table(cls).find("uuid", uuid)
            if not refs:
                raise XapiError("UUID_INVALID", cls, uuid)
            return refs[0]
        return get_by_uuid
    if name == "get_by_name_label":
        def get_by_name_label(ctx, session, label):
            return ctx.app.db.table(cls).find("name_label", label)
        return get_by_name_label
    if name.startswith("get_") and name[4:] in fields:
        field = name[4:]

        def getter(ctx, session, ref):
            try:
                return ctx.app.db.table(cls).get_field(ref, field)
            except KeyError:
                raise _handle_invalid(cls, ref) from None
        return getter
    if name.startswith("set_") and name[4:] in fields:
        field = name[4:]

        def setter(ctx, session, ref, value):
            try:
                ctx.app.db.table(cls).set_field(ref, field, value)
            except KeyError:
                raise _handle_invalid(cls, ref) from None
            return ""
        return setter
    if name.startswith("add_to_") and name[7:] in fields:
        return _map_add(cls, name[7:])
    if name.startswith("remove_from_") and name[12:] in fields:
        return _map_remove(cls, name[12:])
    if name.startswith("add_") and name[4:] in fields:
        return _set_add(cls, name[4:])
    if name.startswith("remove_") and name[7:] in fields:
        return _set_remove(cls, name[7:])
    return None


def _current(ctx, cls, ref, field):
    try:
        return ctx.app.db.table(cls).get_field(ref, field)
    except KeyError:
        raise _handle_invalid(cls, ref) from None


# Containers are replaced, never changed in place: a row's old value may still be on its way to a client.
def _map_add(cls, field):
    def add_to(ctx, session, ref, key, value):
        current = _current(ctx, cls, ref, field)
        if key in current:
            uuid = ctx.app.db.table(cls).get_field(ref, "uuid")
            raise XapiError("MAP_DUPLICATE_KEY", cls, field, uuid, key)
        ctx.app.db.table(cls).set_field(ref, field, {**current, key: value})
        return ""
    return add_to


def _map_remove(cls, field):
    def remove_from(ctx, session, ref, key):
        current = _current(ctx, cls, ref, field)
        if key in current:
            ctx.app.db.table(cls).set_field(ref, field, {k: v for k, v in current.items() if k != key})
        return ""
    return remove_from


def _set_add(cls, field):
    def add(ctx, session, ref, value):
        current = _current(ctx, cls, ref, field)
        if value not in current:
            ctx.app.db.table(cls).set_field(ref, field, [*current, value])
        return ""
    return add


def _set_remove(cls, field):
    def remove(ctx, session, ref, value):
        current = _current(ctx, cls, ref, field)
        if value in current:
            ctx.app.db.table(cls).set_field(ref, field, [v for v in current if v != value])
        return ""
    return remove
