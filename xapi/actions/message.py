"""message.*: create, destroy, destroy_many, get, get_since and the reads, over the message store
(xapi.messages), with xapi_message.ml's checks and errors:

* create: a body XML cannot carry -> INVALID_VALUE ["UTF8 expected"]; no object of that class with that
  uuid -> UUID_INVALID [cls, obj_uuid];
* get: no such object -> UUID_INVALID with no parameters; messages newer than `since`;
* get_by_uuid -> UUID_INVALID ["message", uuid]; get_record, destroy -> HANDLE_INVALID ["message", ref];
* destroy_many stops at the first message that is not there (the earlier ones are gone);
* get_all_records_where answers every message whatever the expression, as xapi does.
"""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.messages import object_exists, parse_time, store


def create(ctx, session, name, priority, cls, obj_uuid, body):
    return store(ctx.app).create(name, priority, cls, obj_uuid, body)


def destroy(ctx, session, self):
    store(ctx.app).remove(self)
    return ""


def destroy_many(ctx, session, messages):
    s = store(ctx.app)
    for ref in messages:
        s.remove(ref)
    return ""


def get(ctx, session, cls, obj_uuid, since):
    app = ctx.app
    s = store(app)
    if not object_exists(app.db, cls, obj_uuid):
        raise XapiError("UUID_INVALID")
    after = parse_time(since)
    return s.select(lambda ref, rec, t: rec["cls"] == cls and rec["obj_uuid"] == obj_uuid and t > after)


def get_since(ctx, session, since):
    after = parse_time(since)
    return store(ctx.app).select(lambda ref, rec, t: t > after)


def get_all(ctx, session):
    return list(store(ctx.app).select(lambda ref, rec, t: True))


def get_all_records(ctx, session):
    return store(ctx.app).select(lambda ref, rec, t: True)


def get_all_records_where(ctx, session, expr):
    return store(ctx.app).select(lambda ref, rec, t: True)


def get_record(ctx, session, self):
    s = store(ctx.app)
    if type(self) is not str or self not in s.table:
        raise XapiError("HANDLE_INVALID", "message", self)
    return s.table.get(self)


def get_by_uuid(ctx, session, uuid):
    refs = store(ctx.app).table.find("uuid", uuid)
    if not refs:
        raise XapiError("UUID_INVALID", "message", uuid)
    return refs[0]
