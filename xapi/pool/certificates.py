"""Server certificates in a pool. Internal calls pin each host's certificate by fingerprint, so a new
certificate has to reach whoever pins it:

- host.get_server_certificate / host.reset_server_certificate of a member run on that member (as
  xapi forwards them); the coordinator records the member's new certificate, and its next internal
  calls pin that.
- a new certificate for the coordinator is announced to every member (`pool.coordinator_fingerprint`),
  which pins it from then on (pool.conf) for its replica stream, heartbeats and XenAPI calls.
- a member that makes itself a new one in an emergency tells a reachable coordinator
  (`host.member_certificate`).

The pool's trust: CA certificates and CRLs in every host's `<data>/trust/{certs,crls}`, the
coordinator's folders the reference pushed to members (`trust.*` internal calls, xapi's
certificate_sync); a joining host and the pool exchange theirs (xapi.actions.certificates.
exchange_on_join), an ejected host drops them. TLS verification: the flag file `<data>/verify-certificates` of each host; an
emergency disable also leaves `<data>/tls-verification-emergency-disabled`, which unpins internal calls.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil

from xapi import atomic
from xapi.actions import host as host_actions
from xapi.datamodel.errors import XapiError
from xapi.pool import calls, role as pool_role
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
    await _announce_coordinator(app)
    return ""


# -- the pool's trust: CA certificates and CRLs every host keeps in <data>/trust (xapi: /etc/stunnel/certs
# and /etc/stunnel/crls), the coordinator's copy the reference that certificate_sync pushes to members --
KINDS = ("ca", "crl")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_ERRORS = {"ca": ("CERTIFICATE_NAME_INVALID", "CERTIFICATE_ALREADY_EXISTS", "CERTIFICATE_DOES_NOT_EXIST"),
           "crl": ("CRL_NAME_INVALID", "CRL_ALREADY_EXISTS", "CRL_DOES_NOT_EXIST")}


def trust_dir(app, kind: str) -> str:
    return os.path.join(app.config.data_dir, "trust", "certs" if kind == "ca" else "crls")


def _path(app, kind: str, name) -> str:
    # as xapi: "<name>.pem", letters, digits, '.', '_', '-', not hidden (so never a path)
    if (kind not in KINDS or type(name) is not str or not name or name[0] == "."
            or not name.endswith(".pem") or not set(name) <= _SAFE):
        raise XapiError(_ERRORS.get(kind, _ERRORS["ca"])[0], str(name))
    return os.path.join(trust_dir(app, kind), name)


def local_list(app, kind: str) -> list[str]:
    folder = trust_dir(app, kind)
    try:
        return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    except FileNotFoundError:
        return []


def local_read(app, kind: str, name: str) -> str:
    try:
        with open(_path(app, kind, name)) as f:
            return f.read()
    except OSError:
        raise XapiError("CERTIFICATE_CORRUPT" if kind == "ca" else "CRL_CORRUPT", name) from None


def local_install(app, kind: str, name: str, pem: str) -> None:
    path = _path(app, kind, name)
    if os.path.exists(path):
        raise XapiError(_ERRORS[kind][1], name)
    # both levels 0700 (makedirs gives only the last one its mode): no one else adds a trusted CA
    top = os.path.join(app.config.data_dir, "trust")
    os.makedirs(top, mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic.write_file(path, pem.encode(), 0o644)


def local_uninstall(app, kind: str, name: str, force: bool = False) -> None:
    path = _path(app, kind, name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not force:
            raise XapiError(_ERRORS[kind][2], name) from None


def local_export(app) -> dict:
    """kind -> name -> PEM of this host's trust folders."""
    return {kind: {name: local_read(app, kind, name) for name in local_list(app, kind)} for kind in KINDS}


def local_take(app, wanted: dict) -> None:
    """This host's trust folders made exactly `wanted` (kind -> name -> PEM): a joining host takes the
    pool's set (xapi's import_joining_pool_ca_certificates and CRLs)."""
    for kind in KINDS:
        want = wanted.get(kind) or {}
        for name in local_list(app, kind):
            if name not in want or local_read(app, kind, name) != want[name]:
                local_uninstall(app, kind, name, force=True)
        for name, pem in want.items():
            if not os.path.exists(_path(app, kind, name)):
                local_install(app, kind, name, pem)


def local_forget(app) -> None:
    """An ejected host keeps none of the pool's CA certificates and CRLs (xapi's eject)."""
    shutil.rmtree(os.path.join(app.config.data_dir, "trust"), ignore_errors=True)


@method("trust.list")
def _trust_list(app, kind: str) -> list:
    return local_list(app, kind)


@method("trust.install")
async def _trust_install(app, kind: str, name: str, pem: str) -> str:
    await asyncio.to_thread(local_install, app, kind, name, pem)
    return ""


@method("trust.uninstall")
async def _trust_uninstall(app, kind: str, name: str) -> str:
    await asyncio.to_thread(local_uninstall, app, kind, name, True)
    return ""


async def sync_member(app, host: str) -> None:
    """A member's trust folders made equal to the coordinator's (xapi's certificate_sync)."""
    for kind in KINDS:
        mine = local_list(app, kind)
        theirs = await app.pool.call(host, "trust.list", kind, timeout=10)
        for name in theirs:
            if name not in mine:
                await app.pool.call(host, "trust.uninstall", kind, name, timeout=10)
        for name in mine:
            if name not in theirs:
                await app.pool.call(host, "trust.install", kind, name, local_read(app, kind, name), timeout=10)


async def sync_pool(app) -> None:
    """Every member, each tried; the last failure is raised after all were tried (as xapi)."""
    failure = None
    for host in app.db.table("host").refs():
        if host == app.host_ref:
            continue
        try:
            await sync_member(app, host)
        except (XapiError, asyncio.TimeoutError) as e:
            log.warning("certificate sync to %s failed: %s", host, e)
            failure = e if isinstance(e, XapiError) else XapiError("HOST_OFFLINE", host)
    if failure is not None:
        raise failure


# -- a host's own server certificate, installed by a user or made anew --
async def _replace_own(app, pem: bytes) -> str:
    """Writes the listener's PEM file and loads it into the live listener (new handshakes present it,
    open connections keep theirs); returns the certificate (PEM)."""
    global _lock
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        await asyncio.to_thread(tls.write_atomically, app.cert_path, pem)
        context = getattr(app, "ssl_context", None)
        if context is not None:
            tls.reload(context, app.cert_path)
    return tls.certificate_info(pem).pem


@method("host.install_own_certificate")
async def install_own_certificate(app, pem: str) -> str:
    """A member's listener takes a checked certificate file (key, certificate, chain)."""
    return await _replace_own(app, pem.encode())


async def _announce_coordinator(app) -> None:
    fingerprint = app.pool.host_fingerprint(app.host_ref)
    for member in app.db.table("host").refs():
        if member == app.host_ref:
            continue
        try:
            await app.pool.call(member, "pool.coordinator_fingerprint", fingerprint, timeout=10)
        except (XapiError, asyncio.TimeoutError) as e:
            log.warning("host %s did not take the coordinator's new certificate: %s", member, e)


async def install_certificate(app, host: str, pem: bytes) -> None:
    """`pem` (checked) becomes `host`'s server certificate: in its listener, its Certificate row, and
    pinned by whoever calls it (the coordinator records it; members learn the coordinator's)."""
    _check(app, host)
    if host != app.host_ref:
        cert = await app.pool.call(host, "host.install_own_certificate", pem.decode())
        host_actions.record_certificate(app.db, host, cert.encode())
        app.hub.poke()
        return
    await _replace_own(app, pem)
    host_actions.record_certificate(app.db, host, pem)
    app.hub.poke()
    await _announce_coordinator(app)


async def new_self_signed(app) -> bytes:
    return await asyncio.to_thread(tls.make_certificate, app.config.address)


# -- TLS verification: xapi's flag file /var/xapi/verify-certificates, here <data>/verify-certificates.
# Internal calls pin each peer's certificate (xapi.pool.calls): that is the pool's verification --
def verify_flag(app) -> str:
    return os.path.join(app.config.data_dir, "verify-certificates")


def set_verification(app, on: bool) -> None:
    path = verify_flag(app)
    if on:
        atomic.write_file(path, b"", 0o644)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def verification_on(app) -> bool:
    return os.path.exists(verify_flag(app))


def set_emergency_unverified(app, on: bool) -> None:
    """host.emergency_disable_tls_verification's own marker (the normal flag says nothing about it):
    while it is there this host's internal calls accept any certificate of their peers
    (xapi.pool.calls); kept across restarts until emergency_reenable_tls_verification."""
    path = calls.emergency_marker(app.config.data_dir)
    if on:
        atomic.write_file(path, b"", 0o644)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@method("host.set_tls_verification")
async def _set_tls_verification(app, on: bool) -> str:
    await asyncio.to_thread(set_verification, app, bool(on))
    return ""


@method("host.member_certificate")
def member_certificate(app, host: str, pem: str) -> str:
    """The coordinator records a member's certificate that the member changed on its own
    (host.emergency_reset_server_certificate), so its internal calls pin the new one."""
    if not app.is_coordinator:
        raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
    _check(app, host)
    host_actions.record_certificate(app.db, host, pem.encode())
    app.hub.poke()
    return ""
