"""subject.*: the users and groups that may log in while external authentication is on, and their roles.

As xapi: a subject is created only while external authentication is enabled (AUTH_IS_DISABLED), for an
identifier the directory resolves (SUBJECT_CANNOT_BE_RESOLVED), once (SUBJECT_ALREADY_EXISTS); its
other_config is what the directory says about it, whatever the caller passed; it starts with no roles
(xapi's behaviour where the RBAC feature is licensed, as on XCP-ng), so it cannot log in until given
one. Role changes apply to sessions made afterwards (xapi: log out and in again).
"""
from __future__ import annotations

import asyncio

from xapi.auth import roles, subjects
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert


def _check(db, self) -> None:
    if type(self) is not str or self not in db.table("subject"):
        raise XapiError("HANDLE_INVALID", "subject", self)


def _resolve(identifier: str) -> tuple[str, dict]:
    sid = subjects.resolve(identifier)
    return sid, subjects.information(sid)


async def create(ctx, session, args):
    app = ctx.app
    if subjects.external_auth_type(app.db, app.host_ref) == "":
        raise XapiError("AUTH_IS_DISABLED")
    if "subject_identifier" not in args:
        raise XapiError("INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("subject_identifier")')
    identifier = args["subject_identifier"]
    sid, info = await asyncio.get_running_loop().run_in_executor(None, _resolve, identifier)
    table = app.db.table("subject")
    if table.find("subject_identifier", sid):
        raise XapiError("SUBJECT_ALREADY_EXISTS")
    return insert(app.db, "subject", subject_identifier=sid, other_config=info, roles=[])


def destroy(ctx, session, self):
    db = ctx.app.db
    _check(db, self)
    db.table("subject").remove(self)
    return ""


def add_to_roles(ctx, session, self, role):
    db = ctx.app.db
    _check(db, self)
    if type(role) is not str or role not in db.table("role"):
        raise XapiError("ROLE_NOT_FOUND")
    current = db.table("subject").get_field(self, "roles")
    if role in current:
        raise XapiError("ROLE_ALREADY_EXISTS")
    db.table("subject").set_field(self, "roles", [*current, role])
    return ""


def remove_from_roles(ctx, session, self, role):
    db = ctx.app.db
    _check(db, self)
    current = db.table("subject").get_field(self, "roles")
    if role not in current:
        raise XapiError("ROLE_NOT_FOUND")
    db.table("subject").set_field(self, "roles", [r for r in current if r != role])
    return ""


def get_permissions_name_label(ctx, session, self):
    """Every permission the subject's roles give (not the role names themselves)."""
    db = ctx.app.db
    _check(db, self)
    out: dict[str, None] = {}
    for role in db.table("subject").get_field(self, "roles"):
        if role in db.table("role"):
            out.update(dict.fromkeys(roles.labels(db, roles.permissions_of(db, role))))
    return list(out)

