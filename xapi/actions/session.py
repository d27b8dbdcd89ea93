"""session.*: logins, logouts and the caller's own session."""
from __future__ import annotations

from xapi.datamodel.errors import XapiError


async def _login(ctx, user: str, password: str, originator: str, *, pool_local: bool):
    app = ctx.app
    if ctx.local:
        # Callers on the Unix socket are root already, as with xapi's local socket.
        return app.sessions.create(user or "root", superuser=True, originator=originator).ref
    # Only root may log in until subjects give other users roles.
    if user == "root" and await app.auth.check(user, password, ctx.peer):
        return app.sessions.create(user, superuser=True, originator=originator).ref
    await app.auth.failed(user, ctx.peer)
    raise XapiError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")


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
