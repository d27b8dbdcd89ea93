"""A member's storage drivers write to the pool database through their own host: the calls they make
on the member's local socket with their SM session (xapi.sm.service: VDI.db_introduce,
SR.set_physical_utilisation, VDI.remove_from_sm_config...) that only the coordinator may run are
relayed to the coordinator with the member's slave_login session (xapi.pool.remote), as xapi's SM
calls on a slave reach the master. The driver goes on once the member's replica holds the change, so
what it reads next (VDI.get_record of the VDI it just introduced) is there.

Any other session still gets HOST_IS_SLAVE for these calls on a member (xapi.forwarding).
"""
from __future__ import annotations

from xmlrpc.client import DateTime

from xapi.datamodel.flags import forwarding
from xapi.pool.internal import method

SM_ORIGINATOR = "SM"        # the originator of the storage layer's driver sessions (xapi.sm.service)
CLASSES = ("SR", "VDI", "PBD", "SM")


def install(app) -> None:
    """Wraps the dispatcher's coordinator-only entries of the storage classes (once per daemon)."""
    from xapi.forwarding import _replica_read
    for name, entry in app.dispatcher.entries.items():
        m = entry.message
        if (name != entry.name or m is None or m.cls not in CLASSES or not entry.skip
                or forwarding(m) == "emergency" or _replica_read(m)):
            continue
        entry.handler = _relaying(app, entry.name, entry.handler, entry.is_async)
        entry.is_async = True


def _relaying(app, wire: str, handler, is_async: bool):
    async def relay_or_run(ctx, session, *args):
        if not app.is_coordinator and session is not None and session.originator == SM_ORIGINATOR:
            return await relay(app, wire, args)
        result = handler(ctx, session, *args)
        return await result if is_async else result
    relay_or_run.__name__ = getattr(handler, "__name__", wire)
    return relay_or_run


async def relay(app, wire: str, args) -> object:
    result = await app.pool.coordinator_api.call(wire, *(_wire(a) for a in args))
    replica = getattr(app, "replica", None)
    if replica is not None and replica.synced.is_set():
        generation = await app.pool.coordinator_peer().call("db.generation")
        await replica.caught_up(int(generation))
    return result


def _wire(v):
    """A converted argument back in JSON-RPC form (datetimes as xapi's strings)."""
    if isinstance(v, DateTime):
        return v.value
    if isinstance(v, dict):
        return {str(k): _wire(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_wire(x) for x in v]
    return v


@method("db.generation")
def generation(app) -> int:
    """The coordinator's database generation (a member waits for its replica to reach it)."""
    return app.db.generation
