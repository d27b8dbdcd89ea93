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


@method("storage.run")
async def storage_run(app, call: dict, generation=None):
    """A driver call the coordinator sends to the host whose storage serves the SR (its local SR):
    run with this host's device-config and SR master role, and its own driver session."""
    from xapi.sm.exec import Call
    await _caught_up(app, generation)
    await app.storage.ready()
    c = Call(**call)
    c.host_ref, c.session_ref = app.host_ref, None
    if c.sr_ref:
        c.device_config = app.storage.device_config(c.sr_ref)
    return await app.storage.run(c)


@method("storage.attach")
async def storage_attach(app, dp: str, vdi: str, rw: bool, generation=None, activate: bool = True):
    """Attaches (and activates) a VDI on this host for a domain here (xapi.actions.vm_devices)."""
    await _caught_up(app, generation)
    await app.storage.ready()
    info = await app.storage.access.attach(dp, vdi, bool(rw))
    return await app.storage.access.activate(dp, vdi) if activate else info


@method("storage.activate")
async def storage_activate(app, dp: str, vdi: str, generation=None):
    await _caught_up(app, generation)
    return await app.storage.access.activate(dp, vdi)


@method("storage.release")
async def storage_release(app, dp: str):
    await app.storage.access.destroy_dp(dp, allow_leak=True)
    return ""


@method("storage.release_vm")
async def storage_release_vm(app, vm_uuid: str):
    """Releases this host's datapaths of a VM's disks (its domain here is gone)."""
    from xapi.actions import vm_devices
    await vm_devices.release_datapaths(app, vm_uuid)
    return ""
