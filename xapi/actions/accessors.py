"""The implicit messages of every class, straight over its table: get_all, get_all_records, get_record,
get_by_uuid, get_by_name_label, get_<field>, set_<field>, add_to_/remove_from_<map>, add_/remove_<set>,
the hidden get_all_records_where(expr), and the generic create(record) / destroy(ref) (a class's actions
module may provide its own; those come first).
"""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.db.schema import new_ref, new_uuid
from xapi.dispatch.convert import converter

from . import where


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
    if name == "get_all_records_where":
        return _records_where(table, cls)
    if name == "create":
        return _create(db, table, cls)
    if name == "destroy":
        return _destroy(db, table, cls)
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


# -- get_all_records_where, create, destroy ----------------------------------------------------------
def _records_where(table, cls):
    compile_filter = where.compile_filter

    def get_all_records_where(ctx, session, expr):
        pred = compile_filter(cls, expr)
        return {ref: row for ref, row in table.all_records().items() if pred(ref, row)}
    return get_all_records_where


def _field_not_found(name: str) -> XapiError:
    # xapi's dispatcher raises Dispatcher_FieldNotFound for a constructor field missing from the
    # struct, and nothing maps it to an API error: it reaches the client as an INTERNAL_ERROR.
    return XapiError("INTERNAL_ERROR", f'Server_helpers.Dispatcher_FieldNotFound("{name}")')


def _create(db, table, cls):
    """create(record): the constructor fields (RW and RO/constructor, in datamodel order) from the
    struct, defaults for those it leaves out, nothing from its other members; a new ref and uuid."""
    fields = dm.CLASSES[cls].fields
    ctor = tuple((name, f, converter(f.type, name)) for name, f in fields.items()
                 if f.qualifier in ("RW", "RO/constructor"))
    rest = tuple(f for name, f in fields.items() if f.qualifier not in ("RW", "RO/constructor"))
    has_uuid = "uuid" in fields

    def create(ctx, session, record):
        row = {}
        for name, f, conv in ctor:
            if name in record:
                row[name] = conv(record[name])
            elif f.default is not None:
                row[name] = f.initial()
            else:
                raise _field_not_found(name)
        for f in rest:
            row[f.name] = f.initial()
        if has_uuid:
            row["uuid"] = new_uuid()
        ref = new_ref()
        table.add(ref, row)              # the database keeps the reverse sets (VM.VIFs, ...)
        return ref
    return create


def _destroy(db, table, cls):
    def destroy(ctx, session, ref):
        if type(ref) is not str or ref not in table:
            raise _handle_invalid(cls, ref)
        table.remove(ref)
        return ""
    return destroy
