"""host.compute_free_memory (xapi_host.ml, Memory_check): the memory a new VM could get on the host,
by the same accounting VM.start's placement check uses (xapi.pool.placement.free_memory: what the
host's xenopsd reported, less what starts in flight there have reserved); HOST_NOT_ENOUGH_FREE_MEMORY
carries this figure as its second parameter.

xapi.actions.host picks it up with `from xapi.actions.host_memory import compute_free_memory`.
"""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.pool import placement


def compute_free_memory(ctx, session, host):
    app = ctx.app
    if type(host) is not str or host not in app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    return max(0, placement.free_memory(app, host))
