"""Internal methods every host answers (see xapi.pool.internal): its xenopsd, and a liveness ping."""
from __future__ import annotations

from xapi.pool.internal import method


@method("xenops.call")
async def xenops_call(app, name: str, params: list):
    return await app.xenops.call(name, *params)


@method("host.ping")
def ping(app):
    return app.host_ref
