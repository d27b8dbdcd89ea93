"""Changes of coordinator (xapi_pool_transition.ml, xapi_pool.ml).

- pool.designate_new_master(host), on the coordinator: it stops taking writes (from then on it answers
  HOST_IS_SLAVE naming the new coordinator), hands over the generation it reached, and the new host takes
  over once its replica holds that generation (nothing committed is lost); the old coordinator and the
  other members then follow the new one.
- pool.emergency_transition_to_master, on a member whose coordinator is gone: it promotes its replica.
- pool.emergency_reset_master(address), on a member: follow that coordinator from now on.
- pool.recover_slaves, on the new coordinator: tells every other host to follow it; returns those that did.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from xapi.datamodel.errors import XapiError
from xapi.pool import redolog, role as pool_role
from xapi.pool.internal import method

log = logging.getLogger("xapi.pool.transitions")


def _fingerprint_of_address(app, address: str) -> str:
    hosts = app.db.table("host")
    for h in hosts.refs():
        if hosts.get_field(h, "address") == address:
            return app.pool.host_fingerprint(h)
    raise XapiError("HOST_OFFLINE", address)


async def become_coordinator(app) -> None:
    """This host holds the pool database from now on: its replica, completed from the redo-log."""
    replica = getattr(app, "replica", None)
    if replica is not None:
        await replica.stop()
        app.replica = None
        if app.redo is None:                    # pool.enable_redo_log's VDI, as the replica knows it
            app.redo = redolog.wanted(app)
        if app.redo is not None:
            applied = await app.redo.replay(replica.epoch, replica.generation)
            log.info("redo-log: %d entries replayed past generation %d", applied, replica.generation)
    app.role = pool_role.Role()
    pool_role.write(app.config.data_dir, app.role)
    app.is_coordinator = True
    app.coordinator_address = app.own_address
    pools = app.db.table("pool")
    for p in pools.refs():
        pools.set_field(p, "master", app.host_ref)
    app.pool_ref = pools.refs()[0] if pools.refs() else app.pool_ref
    app.hub.poke()
    if app.redo is not None:
        app.redo.end()
    await redolog.switch(app, redolog.wanted(app))  # a new term, in the log the pool has now
    try:
        await app.persister.flush_now()
    except Exception:
        log.exception("state.db: flush after becoming the coordinator failed")
    log.info("now the pool coordinator")


async def follow(app, address: str, fingerprint: str | None = None, end_sessions: bool = False) -> None:
    """This host is a member of the pool whose coordinator is at `address` from now on."""
    from xapi import pool as pool_setup
    if fingerprint is None:
        fingerprint = _fingerprint_of_address(app, address)
    if app.redo is not None:
        app.redo.end()
    if getattr(app, "replica", None) is not None:
        await app.replica.stop()
        app.replica = None
    role = pool_role.Role(False, address, fingerprint)
    pool_role.write(app.config.data_dir, role)
    app.role = role
    pool_setup.become_member_in_memory(app, role)
    pool_setup.start_replica(app)
    if end_sessions:
        _end_sessions(app)
    log.info("following the coordinator at %s", address)


def _end_sessions(app) -> None:
    """A coordinator that becomes a member restarts in xapi, and sessions are never persisted: every
    session it had issued is gone (SESSION_INVALID, which clients such as Xen Orchestra's answer by
    logging in again, and so meet HOST_IS_SLAVE naming the new coordinator). Pending event waits end."""
    sessions = getattr(app, "sessions", None)
    if sessions is None:
        return
    for ref in list(sessions.by_ref):
        try:
            sessions.destroy(ref)
        except Exception:
            log.exception("session %s not ended", ref)


# -- internal methods ------------------------------------------------------------------------------
@method("pool.take_over")
async def take_over(app, generation: int) -> str:
    """The old coordinator hands over at `generation`: wait for the replica to hold it, then lead."""
    if app.replica is not None:
        await app.replica.caught_up(int(generation), timeout=30.0)
    await become_coordinator(app)
    return app.host_ref


@method("pool.follow")
async def follow_method(app, address: str, fingerprint: str = "") -> str:
    await follow(app, address, fingerprint or None)
    return app.host_ref


# -- the XenAPI messages -----------------------------------------------------------------------------
async def designate_new_master(app, host) -> None:
    hosts = app.db.table("host")
    if type(host) is not str or host not in hosts:
        raise XapiError("HANDLE_INVALID", "host", host)
    if not app.is_coordinator:
        raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
    if host == app.host_ref:
        return                                   # already the coordinator: nothing to do (as xapi)
    pools = app.db.table("pool")
    if any(pools.get_field(p, "ha_enabled") for p in pools.refs()):
        raise XapiError("HA_IS_ENABLED")
    address = hosts.get_field(host, "address")
    fingerprint = app.pool.host_fingerprint(host)
    await app.pool.call(host, "host.ping")       # reachable before anything changes (else HOST_OFFLINE)
    # From here on the old coordinator takes no writes: calls get HOST_IS_SLAVE naming the new one.
    app.is_coordinator = False
    app.coordinator_address = address
    if app.redo is not None:
        await app.redo.commit()
    generation = app.db.generation
    try:
        await app.pool.call(host, "pool.take_over", generation, timeout=60)
    except BaseException:
        app.is_coordinator = True                # the handover did not happen: still the coordinator
        app.coordinator_address = app.own_address
        raise
    others = [h for h in hosts.refs() if h not in (host, app.host_ref)]
    await follow(app, address, fingerprint, end_sessions=True)
    for h in others:
        try:
            await app.pool.call(h, "pool.follow", address, fingerprint, timeout=30)
        except XapiError as e:
            log.warning("host %s did not follow the new coordinator: %s", h, e.description)


async def emergency_transition_to_master(app) -> None:
    if app.is_coordinator:
        return
    await become_coordinator(app)


async def emergency_reset_master(app, master_address) -> None:
    """As xapi_pool.ml: refused while HA is armed, the name resolved, then this host is that address's
    member without contacting it first (a coordinator too); already its member: nothing to do."""
    if not isinstance(master_address, str) or not master_address:
        raise XapiError("INVALID_VALUE", "master_address", str(master_address))
    pools = app.db.table("pool")
    if any(pools.get_field(p, "ha_enabled") for p in pools.refs()):
        raise XapiError("HA_IS_ENABLED")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(master_address, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise XapiError("INTERNAL_ERROR", f"Couldn't resolve hostname: {master_address}") from None
    address = infos[0][4][0]
    if address == app.own_address:
        raise XapiError("OPERATION_NOT_ALLOWED", "this host cannot follow itself")
    if not app.is_coordinator and app.coordinator_address == address:
        return
    # A pool host's recorded certificate is pinned; an address the pool does not know has none, and
    # the member's calls fail verification until it is pointed at a known host (as xapi's bundle).
    try:
        fingerprint = _fingerprint_of_address(app, address)
    except XapiError:
        fingerprint = ""
    await follow(app, address, fingerprint, end_sessions=app.is_coordinator)


async def recover_slaves(app) -> list:
    if not app.is_coordinator:
        raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
    fingerprint = app.pool.host_fingerprint(app.host_ref)
    recovered = []
    for h in app.db.table("host").refs():
        if h == app.host_ref:
            continue
        try:
            await app.pool.call(h, "pool.follow", app.own_address, fingerprint, timeout=15)
            recovered.append(h)
        except XapiError as e:
            log.info("recover_slaves: %s not recovered: %s", h, e.description)
    return recovered
