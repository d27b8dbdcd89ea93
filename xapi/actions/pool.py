"""pool.*: external authentication (the rest of the pool's messages are the generic accessors).

As xapi's host.enable_external_auth, on every host of the pool: AUTH_ALREADY_ENABLED [type, service]
when one is on, AUTH_UNKNOWN_TYPE [type] for a type we don't have (only "PAM": accounts of the
name service, passwords through the daemon's --auth backend; xapi itself ships only "AD"); the host
then records external_auth_type, external_auth_service_name and external_auth_configuration (the config
without one-time credentials). Disabling an already disabled pool is not an error; disabling ends every
externally authenticated session, as xapi's revalidation does.
"""
from __future__ import annotations

from xapi.auth import subjects
from xapi.datamodel.errors import XapiError

# Config keys never stored (one-time credentials, as xapi's plugins filter them)
_SECRET_KEYS = ("pass", "password", "auth-pass", "secret")


def _check_pool(db, pool) -> None:
    if type(pool) is not str or pool not in db.table("pool"):
        raise XapiError("HANDLE_INVALID", "pool", pool)


def enable_external_auth(ctx, session, pool, config, service_name, auth_type):
    db = ctx.app.db
    _check_pool(db, pool)
    hosts = db.table("host")
    for host in hosts.refs():
        current = hosts.get_field(host, "external_auth_type")
        if current:
            raise XapiError("AUTH_ALREADY_ENABLED", current, hosts.get_field(host, "external_auth_service_name"))
    if auth_type != subjects.AUTH_TYPE_PAM:
        raise XapiError("AUTH_UNKNOWN_TYPE", auth_type)
    kept = {k: v for k, v in config.items() if k.lower() not in _SECRET_KEYS}
    for host in hosts.refs():
        hosts.update(host, {"external_auth_type": auth_type, "external_auth_service_name": service_name,
                            "external_auth_configuration": kept})
    return ""


def disable_external_auth(ctx, session, pool, config):
    app = ctx.app
    _check_pool(app.db, pool)
    hosts = app.db.table("host")
    for host in hosts.refs():
        if hosts.get_field(host, "external_auth_type"):
            hosts.update(host, {"external_auth_type": "", "external_auth_service_name": "",
                                "external_auth_configuration": {}})
    sessions = app.sessions
    for ref in [s.ref for s in sessions.by_ref.values() if not s.superuser and not s.pool]:
        if ref in sessions.by_ref:
            sessions.destroy(ref)
    return ""
from xapi.actions.pool_settings import *  # noqa: E402,F401,F403 - simple settings (pool_settings.__all__)
