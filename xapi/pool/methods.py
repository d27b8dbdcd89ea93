"""Internal methods every host answers (see xapi.pool.internal): its xenopsd, and a liveness ping."""
from __future__ import annotations

import asyncio

from xapi.pool.internal import method


@method("xenops.call")
async def xenops_call(app, name: str, params: list):
    return await app.xenops.call(name, *params)


@method("xenops.wait")
async def xenops_wait(app, tid: str, timeout: float, destroy: bool):
    """A xenopsd task's state once it has finished (then destroyed if `destroy`), or its progress
    after `timeout` seconds: a caller on another host makes one round trip per `timeout` at most
    (xapi.pool.xenops), not one per progress step."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(0.0, float(timeout)), 60.0)
    while True:
        st = await app.xenops.call("TASK.wait", tid, max(0.0, min(5.0, deadline - loop.time())))
        if st["state"] != "pending":
            if destroy:
                await app.xenops.call("TASK.destroy", tid)
            return st
        if loop.time() >= deadline:
            return st


@method("host.ping")
def ping(app):
    return app.host_ref


async def _caught_up(app, generation) -> None:
    if getattr(app, "replica", None) is not None and generation is not None:
        await app.replica.caught_up(int(generation))


@method("storage.plug")
async def storage_plug(app, pbd: str, generation=None):
    """Plugs one of this member's PBDs (its own drivers and storage access layer)."""
    await _caught_up(app, generation)
    await app.storage.ready()
    await app.storage.plug(pbd)
    return ""


@method("storage.unplug")
async def storage_unplug(app, pbd: str, generation=None):
    await _caught_up(app, generation)
    await app.storage.ready()
    await app.storage.unplug(pbd)
    return ""
