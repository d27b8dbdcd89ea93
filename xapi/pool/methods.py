"""Internal methods every host answers (see xapi.pool.internal): its xenopsd, and a liveness ping."""
from __future__ import annotations

from xapi.pool.internal import method


@method("xenops.call")
async def xenops_call(app, name: str, params: list):
    return await app.xenops.call(name, *params)


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
