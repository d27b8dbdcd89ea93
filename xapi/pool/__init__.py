"""The resource pool: one coordinator holds the database and runs every XenAPI action; members reach
each other through internal calls (xapi.pool.calls, xapi.pool.internal) and keep a read replica
(xapi.pool.replica). `prepare`, `start` and `stop` hook this into the daemon's life."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from xapi.pool import internal, role as pool_role, secret

log = logging.getLogger("xapi.pool")


def prepare(app) -> None:
    """After the host's own rows are in the database: secret, role, internal calls and endpoint."""
    from xapi.pool.calls import PoolCalls
    data_dir = app.config.data_dir
    app.own_address = app.coordinator_address       # this host's management address
    app.pool_secret = secret.load_or_create(data_dir)
    app.role = pool_role.read(data_dir)
    app.pool = PoolCalls(app)
    app.replica = None
    from xapi.pool import redolog
    path = redolog.configured()
    app.redo = redolog.RedoLog(app, path) if path else None
    internal.register(app.handlers)
    from xapi.pool import member_start, relay
    relay.install(app)                  # a member's storage drivers write through the coordinator
    app.member_local = None
    if not app.role.coordinator:
        app.member_local = member_start.capture(app)    # before the replica overwrites them
        become_member_in_memory(app, app.role)


def become_member_in_memory(app, role) -> None:
    app.is_coordinator = False
    app.coordinator_address = role.address
    # populate() names this host pool master on a database loaded from disk: the replica says who is
    hosts = app.db.table("host")
    coordinator = next((h for h in hosts.refs() if hosts.get_field(h, "address") == role.address), None)
    pools = app.db.table("pool")
    if coordinator is not None:
        for p in pools.refs():
            pools.set_field(p, "master", coordinator)


async def start(app) -> None:
    from xapi.pool.liveness import Liveness
    app.member_resync = None
    if not app.is_coordinator:
        start_replica(app)
        if app.member_local is not None:
            from xapi.pool import member_start
            app.member_resync = asyncio.get_running_loop().create_task(
                member_start.resync(app, app.member_local), name="member start-up resync")
    elif app.redo is not None:
        await app.redo.begin()
    app.liveness = Liveness(app)
    app.liveness.start()


def start_replica(app) -> None:
    from xapi.pool.replica import Replica
    app.replica = Replica(app)
    app.replica.start()


async def stop(app) -> None:
    resync = getattr(app, "member_resync", None)
    if resync is not None:
        resync.cancel()
        with contextlib.suppress(BaseException):
            await resync
    if getattr(app, "liveness", None) is not None:
        await app.liveness.stop()
    if getattr(app, "replica", None) is not None:
        await app.replica.stop()
        app.replica = None
    if getattr(app, "redo", None) is not None:
        await app.redo.close()
    if getattr(app, "pool", None) is not None:
        app.pool.close()
