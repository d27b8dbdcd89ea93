"""session.*: logins, logouts and the caller's own session.

Who may log in (xapi's rules, with "PAM" as the external authentication):
- callers on the local Unix socket are root, whatever they send;
- root, with its password (the daemon's `--auth` backend), is the local superuser: never RBAC-checked;
- anyone else only while the host's external_auth_type is "PAM" (pool.enable_external_auth), with a
  password the daemon's `--auth` backend accepts (PAM, or the local password file), and only if the
  user, or a group the user is in, is a subject. The session gets the union of those subjects' roles.
  Subjects are name-service accounts (xapi.auth.subjects), so a local-file user must also be one.
"""
from __future__ import annotations

import asyncio

from xapi.auth import rbac, subjects
from xapi.datamodel.errors import XapiError

_AUTH_FAILURE = "Authentication failure"


async def _refuse(app, user: str, peer: str, msg: str = _AUTH_FAILURE):
    await app.auth.failed(user, peer)
    raise XapiError("SESSION_AUTHENTICATION_FAILED", user, msg)


async def _login(ctx, user: str, password: str, originator: str, *, pool_local: bool):
    app = ctx.app
    if ctx.local:
        # Callers on the Unix socket are root already, as with xapi's local socket.
        return app.sessions.create(user or "root", superuser=True, originator=originator).ref
    if user == "root":
        if await app.auth.check(user, password, ctx.peer):
            return app.sessions.create(user, superuser=True, originator=originator).ref
        return await _refuse(app, user, ctx.peer)
    if pool_local or subjects.external_auth_type(app.db, app.host_ref) != subjects.AUTH_TYPE_PAM:
        # No external authentication: only the local superuser logs in.
        return await _refuse(app, user, ctx.peer)
    if not await app.auth.check(user, password, ctx.peer):
        return await _refuse(app, user, ctx.peer)
    return await _external_session(ctx, user, originator)


async def _external_session(ctx, user: str, originator: str) -> str:
    app, peer = ctx.app, ctx.peer
    found = await asyncio.get_running_loop().run_in_executor(None, subjects.membership, user)
    if found is None:
        return await _refuse(app, user, peer, f"user {user} from {peer} not found in external directory")
    sid, sids = found
    info = await asyncio.get_running_loop().run_in_executor(None, _info, sid)
    if subjects.suspended(info):
        return await _refuse(app, user, peer,
                             f"User {user} (subject_id {sid}, from {peer}) suspended in external directory")
    table = app.db.table("subject")
    wanted = set(sids)
    matches = [(ref, row) for ref, row in table.all_records().items() if row["subject_identifier"] in wanted]
    if not matches:
        return await _refuse(app, user, peer,
                             f"Subject {user} (identifier {sid}, from {peer}) has no access rights in this pool")
    # the user's own subject first, then its groups', as found
    matches.sort(key=lambda m: m[1]["subject_identifier"] != sid)
    role_refs = frozenset(r for _, row in matches for r in row["roles"])
    permissions = rbac.session_permissions(role_refs)
    if not permissions:
        await app.auth.failed(user, peer)
        raise XapiError("RBAC_PERMISSION_DENIED", "session.login_with_password",
                        f"Subject {user} (identifier {sid}) has no roles in this pool")
    return app.sessions.create(user, superuser=False, roles=rbac.role_names(role_refs), originator=originator,
                               permissions=permissions, subject=matches[0][0], auth_user_sid=sid).ref


def _info(sid: str) -> dict:
    try:
        return subjects.information(sid)
    except XapiError:
        return {}


async def login_with_password(ctx, session, uname, pwd, version, originator):
    return await _login(ctx, uname, pwd, originator, pool_local=False)


async def slave_local_login_with_password(ctx, session, uname, pwd):
    return await _login(ctx, uname, pwd, "", pool_local=True)


def logout(ctx, session):
    ctx.app.sessions.destroy(session.ref)
    return ""


def local_logout(ctx, session):
    ctx.app.sessions.destroy(session.ref)
    return ""


def get_all_subject_identifiers(ctx, session):
    """The subject identifiers of every externally authenticated session, once each."""
    return list(dict.fromkeys(s.auth_user_sid for s in ctx.app.sessions.by_ref.values()
                              if not s.superuser and s.auth_user_sid))


def logout_subject_identifier(ctx, session, subject_identifier):
    """Ends the sessions of a subject identifier: never local superuser sessions, never the caller's."""
    sessions = ctx.app.sessions
    doomed = [s.ref for s in sessions.by_ref.values()
              if not s.superuser and s.ref != session.ref and s.auth_user_sid == subject_identifier]
    for ref in doomed:
        if ref in sessions.by_ref:
            sessions.destroy(ref)
    return ""


async def change_password(ctx, session, old_pwd, new_pwd):
    """root's password, for local superuser sessions only (no role may call it). As xapi, the old
    password is not checked: the session is root's already. The `local` backend writes root's line of
    <data>/passwd ($XAPI_ROOT_PASSWORD, when set, still wins at the next start); with `pam` the system's
    own tools change passwords: NOT_IMPLEMENTED."""
    if not session.superuser:
        raise XapiError("USER_IS_NOT_LOCAL_SUPERUSER", "Failed to change password for user root")
    auth = ctx.app.auth
    change = getattr(auth, "change_password", None)
    try:
        if change is not None:
            await change("root", old_pwd, new_pwd)
        elif hasattr(getattr(auth, "file", None), "set"):
            await asyncio.get_running_loop().run_in_executor(None, auth.file.set, "root", new_pwd)
        else:
            raise XapiError("NOT_IMPLEMENTED", "session.change_password")
    except ValueError as e:
        raise XapiError("CHANGE_PASSWORD_REJECTED", str(e)) from None
    return ""
