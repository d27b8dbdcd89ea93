"""The pool's TLS trust as XenAPI messages (xapi_pool.ml, xapi_host.ml, certificates.ml):

- pool.install_ca_certificate / uninstall_ca_certificate (and the older certificate_install /
  certificate_uninstall / certificate_list), pool.crl_install / crl_uninstall / crl_list: CA
  certificates and CRLs kept in every host's trust folder (xapi.pool.certificates), a CA certificate
  also as a Certificate row of type "ca" with its name; pool.certificate_sync pushes the
  coordinator's folders to the members.
- host.install_server_certificate: a user's key, certificate and chain, checked as xapi checks them,
  become the host's listener certificate without a restart; host.refresh_server_certificate and the
  emergency host.emergency_reset_server_certificate: a new self-signed one.
- pool.enable_tls_verification and the emergency host.emergency_disable/reenable_tls_verification:
  the verification flags (pool and host fields, the per-host flag file); while the emergency
  disable is in force the host's internal calls stop pinning their peers' certificates.
"""
from __future__ import annotations

import asyncio
import logging

from xapi import messages
from xapi.actions import host as host_actions
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert
from xapi.pool import calls, certificates as trust
from xapi.server import tls

log = logging.getLogger("xapi.certificates")

NULL = "OpaqueRef:NULL"


def _ca_rows(db, name: str) -> list[str]:
    certs = db.table("Certificate")
    return [r for r in certs.refs() if certs.get_field(r, "type") == "ca" and certs.get_field(r, "name") == name]


# -- CA certificates and CRLs, pool-wide --
async def _pool_install(app, kind: str, name, pem) -> None:
    await asyncio.to_thread(trust.local_install, app, kind, name, pem)
    try:
        await trust.sync_pool(app)
    except XapiError:
        trust.local_uninstall(app, kind, name, force=True)   # as xapi: undone here when a member failed
        raise


def _record_ca(db, name: str, parsed) -> None:
    for ref in _ca_rows(db, name):                           # an older row of that name is obsolete
        db.table("Certificate").remove(ref)
    insert(db, "Certificate", name=name, type="ca", host=NULL,
           not_before=host_actions._wire_time(parsed.not_valid_before_utc),
           not_after=host_actions._wire_time(parsed.not_valid_after_utc),
           fingerprint=tls.fingerprint(parsed))


async def install_ca_certificate(ctx, session, name, cert):
    app = ctx.app
    trust._path(app, "ca", name)                             # CERTIFICATE_NAME_INVALID first
    parsed = tls.load_ca_certificate(cert)
    await _pool_install(app, "ca", name, cert)
    _record_ca(app.db, name, parsed)
    app.hub.poke()
    return ""


async def exchange_on_join(app, offered: dict) -> dict:
    """The coordinator's side of xapi's exchange_ca_certificates_on_join and exchange_crls_on_join,
    before the joining host is added: its CA certificates and CRLs the pool has no file of that name
    for become the pool's (on every host, a CA certificate with its Certificate row); the pool's whole
    set (kind -> name -> PEM) goes back for the joining host to take."""
    for kind in trust.KINDS:
        have = set(trust.local_list(app, kind))
        for name, pem in (offered.get(kind) or {}).items():
            if name in have:
                continue
            trust._path(app, kind, name)
            if kind == "ca":
                parsed = tls.load_ca_certificate(pem)
                await _pool_install(app, kind, name, pem)
                _record_ca(app.db, name, parsed)
                app.hub.poke()
            else:
                tls.check_crl(pem, name)
                await _pool_install(app, kind, name, pem)
    return await asyncio.to_thread(trust.local_export, app)


async def uninstall_ca_certificate(ctx, session, name):
    app = ctx.app
    trust.local_uninstall(app, "ca", name)
    await trust.sync_pool(app)
    for ref in _ca_rows(app.db, name):
        app.db.table("Certificate").remove(ref)
    app.hub.poke()
    return ""


def certificate_list(ctx, session):
    return trust.local_list(ctx.app, "ca")


async def crl_install(ctx, session, name, cert):
    app = ctx.app
    trust._path(app, "crl", name)                            # CRL_NAME_INVALID first
    tls.check_crl(cert, name)
    await _pool_install(app, "crl", name, cert)
    return ""


async def crl_uninstall(ctx, session, name):
    app = ctx.app
    trust.local_uninstall(app, "crl", name)
    await trust.sync_pool(app)
    return ""


def crl_list(ctx, session):
    return trust.local_list(ctx.app, "crl")


async def certificate_sync(ctx, session):
    await trust.sync_pool(ctx.app)
    return ""


async def enable_tls_verification(ctx, session):
    """As xapi: not while HA is on; every member must answer over a verified (pinned) connection, else
    COULD_NOT_VERIFY_HOST [its uuid]; the trust is synced, then every host verifies from now on."""
    app = ctx.app
    db = app.db
    pools, hosts = db.table("pool"), db.table("host")
    if any(pools.get_field(p, "ha_enabled") for p in pools.refs()):
        raise XapiError("HA_IS_ENABLED")
    members = [h for h in hosts.refs() if h != app.host_ref]
    for host in members:
        try:
            await app.pool.call(host, "trust.list", "ca", timeout=10)
        except (XapiError, asyncio.TimeoutError):
            raise XapiError("COULD_NOT_VERIFY_HOST", hosts.get_field(host, "uuid")) from None
    await trust.sync_pool(app)
    for host in members:
        await app.pool.call(host, "host.set_tls_verification", True, timeout=10)
    await asyncio.to_thread(trust.set_verification, app, True)
    for host in hosts.refs():
        hosts.set_field(host, "tls_verification_enabled", True)
    for p in pools.refs():
        pools.set_field(p, "tls_verification_enabled", True)
    app.hub.poke()
    return ""


# -- a host's server certificate --
async def install_server_certificate(ctx, session, host, certificate, private_key, certificate_chain):
    app = ctx.app
    trust._check(app, host)
    # loading and checking an RSA key of up to 4096 bits is CPU work: off the event loop
    pem = await asyncio.to_thread(tls.server_certificate_file, certificate, private_key, certificate_chain)
    await trust.install_certificate(app, host, pem)
    log.info("host %s: server certificate installed", host)
    return ""


async def refresh_server_certificate(ctx, session, host):
    # One certificate serves both outside clients and pool members here (xapi keeps a second,
    # host_internal one): refreshing makes a new self-signed one.
    return await trust.reset_server_certificate(ctx, session, host)


async def emergency_reset_server_certificate(ctx, session):
    """This host only, coordinator or not: a new self-signed certificate in the listener, recorded in
    the pool database when the coordinator can be reached (the pinning of internal calls follows)."""
    app = ctx.app
    pem = await trust.new_self_signed(app)
    await trust._replace_own(app, pem)
    if app.is_coordinator:
        host_actions.record_certificate(app.db, app.host_ref, pem)
        app.hub.poke()
        await trust._announce_coordinator(app)
    else:
        try:        # a reachable coordinator pins the new one from now on
            await app.pool.coordinator_peer().call("host.member_certificate", app.host_ref,
                                                   tls.certificate_info(pem).pem, timeout=10)
        except (XapiError, asyncio.TimeoutError) as e:
            log.warning("the coordinator did not record the new certificate: %s", e)
    log.warning("emergency: new self-signed server certificate")
    return ""


ALERT = "TLS_VERIFICATION_EMERGENCY_DISABLED"       # xapi's alert while a host does not verify (priority 3)


async def _set_host_flag(app, on: bool) -> None:
    await asyncio.to_thread(trust.set_verification, app, on)
    if not app.is_coordinator:                          # the pool database is the coordinator's
        return
    hosts = app.db.table("host")
    hosts.set_field(app.host_ref, "tls_verification_enabled", on)
    uuid = hosts.get_field(app.host_ref, "uuid")
    store = messages.store(app)
    alerts = store.select(lambda ref, rec, t: rec["name"] == ALERT and rec["obj_uuid"] == uuid)
    if on:
        for ref in alerts:
            store.remove(ref)
    elif not alerts:
        store.create(ALERT, 3, "Host", uuid, f"<body><host>{uuid}</host></body>")
    app.hub.poke()


async def emergency_disable_tls_verification(ctx, session):
    """As xapi: this host stops verifying its peers (its internal calls no longer pin their
    certificates), so it reaches a peer whose certificate changed behind its back."""
    app = ctx.app
    await asyncio.to_thread(trust.set_emergency_unverified, app, True)
    calls.set_unpinned(True)
    await _set_host_flag(app, False)
    log.warning("emergency: TLS verification disabled on this host")
    return ""


async def emergency_reenable_tls_verification(ctx, session):
    """Pinning again; the connections made without it are closed."""
    app = ctx.app
    await asyncio.to_thread(trust.set_emergency_unverified, app, False)
    calls.set_unpinned(False)
    await _set_host_flag(app, True)
    log.info("TLS verification re-enabled on this host")
    return ""


POOL_MESSAGES = {
    "certificate_install": install_ca_certificate,
    "install_ca_certificate": install_ca_certificate,
    "certificate_uninstall": uninstall_ca_certificate,
    "uninstall_ca_certificate": uninstall_ca_certificate,
    "certificate_list": certificate_list,
    "crl_install": crl_install,
    "crl_uninstall": crl_uninstall,
    "crl_list": crl_list,
    "certificate_sync": certificate_sync,
    "enable_tls_verification": enable_tls_verification,
}

HOST_MESSAGES = {
    "install_server_certificate": install_server_certificate,
    "refresh_server_certificate": refresh_server_certificate,
    "emergency_reset_server_certificate": emergency_reset_server_certificate,
    "emergency_disable_tls_verification": emergency_disable_tls_verification,
    "emergency_reenable_tls_verification": emergency_reenable_tls_verification,
}
