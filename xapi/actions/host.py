"""host.*: the host's TLS server certificate.

As in xapi, the certificate the HTTPS listener presents lives in `<data>/xapi-ssl.pem` (key and
certificate) and the database describes it with one Certificate row of type "host" (name "", the host,
validity, SHA-256 fingerprint), listed in host.certificates. A new certificate replaces the row.
"""
from __future__ import annotations

import asyncio
import datetime
import logging

from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import DateTime
from xapi.db.schema import insert
from xapi.server import tls

log = logging.getLogger("xapi.host")

# One certificate change at a time (file, listener and rows must agree).
_cert_lock: asyncio.Lock | None = None


def _check(ctx, host) -> None:
    if host not in ctx.app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _wire_time(t: datetime.datetime) -> DateTime:
    return DateTime(t.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H:%M:%SZ"))


def record_certificate(db, host_ref: str, pem: bytes) -> str:
    """Makes the host's Certificate rows describe `pem`: keeps the row when the fingerprint matches,
    otherwise removes the stale rows and adds a new one (xapi's Certificates.update). Returns its ref."""
    info = tls.certificate_info(pem)
    certs = db.table("Certificate")
    mine = [r for r in certs.find("host", host_ref) if certs.get_field(r, "type") == "host"]
    for ref in mine:
        if certs.get_field(ref, "fingerprint") == info.fingerprint:
            stale = [r for r in mine if r != ref]
            _remove(db, host_ref, stale)
            _link(db, host_ref, ref)
            return ref
    _remove(db, host_ref, mine)
    ref = insert(db, "Certificate", name="", type="host", host=host_ref,
                 not_before=_wire_time(info.not_before), not_after=_wire_time(info.not_after),
                 fingerprint=info.fingerprint)
    _link(db, host_ref, ref)
    return ref


def _link(db, host_ref: str, ref: str) -> None:
    hosts = db.table("host")
    if host_ref in hosts:
        current = hosts.get_field(host_ref, "certificates")
        if ref not in current:
            hosts.set_field(host_ref, "certificates", [*current, ref])


def _remove(db, host_ref: str, refs) -> None:
    if not refs:
        return
    certs = db.table("Certificate")
    for ref in refs:
        certs.remove(ref)
    hosts = db.table("host")
    if host_ref in hosts:
        current = hosts.get_field(host_ref, "certificates")
        kept = [r for r in current if r not in refs]
        if kept != current:
            hosts.set_field(host_ref, "certificates", kept)


def get_server_certificate(ctx, session, host):
    """The PEM of the certificate the HTTPS listener presents (without the key)."""
    _check(ctx, host)
    try:
        return tls.certificate_info(_read(ctx.app.cert_path)).pem
    except (OSError, ValueError) as e:
        log.error("cannot read the server certificate %s: %s", ctx.app.cert_path, e)
        raise XapiError("CERTIFICATE_LIBRARY_CORRUPT") from None


async def reset_server_certificate(ctx, session, host):
    """A new self-signed certificate: written atomically over xapi-ssl.pem, loaded into the running
    listener (new connections see it at once, no restart), and recorded in the database."""
    global _cert_lock
    _check(ctx, host)
    app = ctx.app
    if _cert_lock is None:
        _cert_lock = asyncio.Lock()
    async with _cert_lock:
        pem = await asyncio.to_thread(tls.make_certificate, app.config.address)
        await asyncio.to_thread(tls.write_atomically, app.cert_path, pem)
        context = getattr(app, "ssl_context", None)
        if context is not None:
            tls.reload(context, app.cert_path)
        record_certificate(app.db, app.host_ref, pem)
    log.info("host %s: new self-signed server certificate", host)
    return ""


def sync_certificate(app) -> None:
    """At start-up: the host's Certificate row describes the certificate file the listener loads."""
    try:
        record_certificate(app.db, app.host_ref, _read(app.cert_path))
    except (OSError, ValueError) as e:
        log.error("cannot record the server certificate %s: %s", app.cert_path, e)
