"""Server certificates in a pool. Internal calls pin each host's certificate by fingerprint, so a new
certificate has to reach whoever pins it:

- host.get_server_certificate / host.reset_server_certificate of a member run on that member (as
  xapi forwards them); the coordinator records the member's new certificate, and its next internal
  calls pin that.
- a new certificate for the coordinator is announced to every member (`pool.coordinator_fingerprint`),
  which pins it from then on (pool.conf) for its replica stream, heartbeats and XenAPI calls.
"""
from __future__ import annotations

import asyncio
import logging

from xapi.actions import host as host_actions
from xapi.datamodel.errors import XapiError
from xapi.pool import role as pool_role
from xapi.pool.internal import method
from xapi.server import tls

log = logging.getLogger("xapi.pool.certificates")

_lock: asyncio.Lock | None = None


def _check(app, host) -> None:
    if type(host) is not str or host not in app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)


@method("host.own_certificate")
def own_certificate(app) -> str:
    return host_actions.get_server_certificate(_Ctx(app), None, app.host_ref)


@method("host.new_own_certificate")
async def new_own_certificate(app) -> str:
    """A member's new self-signed certificate, in its listener at once; returns it (PEM) for the
    coordinator to record (the member's own database is a replica)."""
    global _lock
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        pem = await asyncio.to_thread(tls.make_certificate, app.config.address)
        await asyncio.to_thread(tls.write_atomically, app.cert_path, pem)
        context = getattr(app, "ssl_context", None)
        if context is not None:
            tls.reload(context, app.cert_path)
    log.info("new self-signed server certificate")
    return tls.certificate_info(pem).pem


@method("pool.coordinator_fingerprint")
def coordinator_fingerprint(app, fingerprint: str) -> str:
    if app.is_coordinator or not isinstance(fingerprint, str):
        raise XapiError("OPERATION_NOT_ALLOWED", "not a member")
    app.role = pool_role.Role(False, app.role.address, fingerprint)
    pool_role.write(app.config.data_dir, app.role)
    return ""


class _Ctx:
    def __init__(self, app) -> None:
        self.app = app


async def get_server_certificate(ctx, session, host):
    app = ctx.app
    _check(app, host)
    if host == app.host_ref:
        return host_actions.get_server_certificate(ctx, session, host)
    return await app.pool.call(host, "host.own_certificate")


async def reset_server_certificate(ctx, session, host):
    app = ctx.app
    _check(app, host)
    if host != app.host_ref:
        pem = await app.pool.call(host, "host.new_own_certificate")
        host_actions.record_certificate(app.db, host, pem.encode())
        app.hub.poke()
        return ""
    await host_actions.reset_server_certificate(ctx, session, host)
    fingerprint = app.pool.host_fingerprint(app.host_ref)
    for member in app.db.table("host").refs():
        if member == app.host_ref:
            continue
        try:
            await app.pool.call(member, "pool.coordinator_fingerprint", fingerprint, timeout=10)
        except (XapiError, asyncio.TimeoutError) as e:
            log.warning("host %s did not take the coordinator's new certificate: %s", member, e)
    return ""
