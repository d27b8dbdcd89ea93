"""Storage motion across the pool's hosts: the calls that run a mirror where the VM's datapath is
(the source host) into a VDI attached where it can be (the destination host), as SMAPIv2's
DATA.MIRROR does with tapdisk and an NBD connection to the remote host.

Internal methods (xapi.pool.internal), each also called directly when the host is this one:

- ``mirror.start(dp, vdi, dst_host, dst_vdi, task, span)`` (source): the datapath's tap mirrors into
  `dst_vdi`, opened on `dst_host` on the datapath ``mirror/<dp>``; returns once the base is copied
  (writes still mirrored); the copy's progress goes to the coordinator's `task`
  (``mirror.progress``). VDI_NEEDS_VM_FOR_MIGRATE [vdi] when the datapath holds no tap of `vdi`
  here, MIRROR_FAILED [vdi] when the mirror fails.
- ``mirror.stop(dp)`` (source): the mirror ends; its destination is closed and released.
- ``mirror.check(dp, vdi)`` (source): before the VM moves, MIRROR_FAILED [vdi] unless the mirror
  runs with every write it took acknowledged by the destination.
- ``mirror.holds(dp, vdi)``: whether the datapath is open here on `vdi` (where its mirror must run).
- ``mirror.switch(dp, vdi, dst_vdi, rw, vm_uuid, device)`` (source = destination host): the datapath
  holds `dst_vdi` and its writes go there, the domain's disk backend (xenopsd VBD params) follows,
  `vdi` is released on the datapath; returns the new disk's path.
- ``mirror.dst_open(mdp, dst_vdi)``, ``mirror.dst_close(mdp)`` (destination): the destination disk
  of a mirror running on another host, which the source writes over one stream per mirror
  (xapi.sm.mirror_stream): the base copy pipelined, each guest write waiting for its acknowledgement
  (mirrored synchronously, as tapdisk's). The disk failing to open or write: VDI_IO_ERROR [reason].
- ``mirror.attach(dp, vdi, rw)``, ``mirror.activate(dp, vdi)``, ``mirror.release(dp, vdi)``: the VM's
  datapath moving with it to the host of its new VDI (attached there before the memory moves,
  released on the source after, which ends the mirror, then activated there).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from xapi.datamodel.errors import XapiError
from xapi.pool.internal import method
from xapi.sm import copy as sm_copy, mirror, mirror_stream

log = logging.getLogger("xapi.sm.mirror")
REMOTE_TIMEOUT = 60.0


async def _caught_up(app, generation) -> None:
    if getattr(app, "replica", None) is not None and generation is not None:
        await app.replica.caught_up(int(generation))


def _vdi_uuid(app, vdi: str) -> str:
    try:
        return app.db.table("VDI").get_field(vdi, "uuid")
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "VDI", vdi) from None


# -- the destination side ----------------------------------------------------------------------------
@method("mirror.dst_open")
async def dst_open(app, mdp: str, dst_vdi: str, generation=None):
    await _caught_up(app, generation)
    await app.storage.ready()
    access = app.storage.access
    await access.attach(mdp, dst_vdi, True)
    try:
        info = await access.activate(mdp, dst_vdi)
        disk = mirror.DstDisk(await _io(sm_copy.open_disk, info, True))
    except BaseException:
        await asyncio.shield(access.release(mdp, dst_vdi))
        raise
    mirror.of(app).dsts[mdp] = (disk, dst_vdi)
    return ""


@method("mirror.dst_close")
async def dst_close(app, mdp: str):
    entry = mirror.of(app).dsts.pop(mdp, None)
    if entry is None:
        return ""
    disk, vdi = entry
    try:
        await mirror.run(disk.close)
    finally:
        if vdi in app.db.table("VDI"):
            await app.storage.access.release(mdp, vdi)
    return ""


async def _io(fn, *args):
    """A destination disk's call in the pool; its I/O failure as xapi's VDI_IO_ERROR [reason]."""
    from xapi.sm.vhd import VHDError
    try:
        return await mirror.run(fn, *args)
    except (OSError, VHDError) as e:
        log.error("mirror destination: %s", e)
        raise XapiError("VDI_IO_ERROR", str(e) or type(e).__name__) from None


class _LocalDst:
    """A destination disk on this host, for pool threads. Closing it releases its datapath."""

    def __init__(self, app, loop, mdp: str) -> None:
        self.app, self.loop, self.mdp = app, loop, mdp
        self.disk = mirror.of(app).dsts[mdp][0]

    def write(self, offset: int, data) -> None:
        self.disk.write(offset, data)

    def close(self) -> None:
        entry = mirror.of(self.app).dsts.pop(self.mdp, None)
        if entry is None:
            return
        self.disk.close()
        if entry[1] in self.app.db.table("VDI"):
            asyncio.run_coroutine_threadsafe(self.app.storage.access.release(self.mdp, entry[1]),
                                             self.loop).result(REMOTE_TIMEOUT)


# -- the source side ------------------------------------------------------------------------------------
async def start(app, dp: str, vdi: str, dst_host: str, dst_vdi: str, progress=None, generation=None):
    await _caught_up(app, generation)
    await app.storage.ready()
    datapaths = mirror.of(app)
    tap = datapaths.ensure(dp, vdi)
    if tap is None or tap.vdi_uuid != _vdi_uuid(app, vdi) or dp in datapaths.mirrors:
        raise XapiError("VDI_NEEDS_VM_FOR_MIGRATE", vdi)
    mdp = f"mirror/{dp}"
    loop = asyncio.get_running_loop()
    datapaths.mirrors[dp] = None                # taken: a stop from now on ends this start
    try:
        if dst_host in (None, "", app.host_ref):
            await dst_open(app, mdp, dst_vdi)
            dst = _LocalDst(app, loop, mdp)
        else:
            await app.pool.call(dst_host, "mirror.dst_open", mdp, dst_vdi, app.db.generation)
            dst = mirror_stream.StreamDst(app, loop, dst_host, mdp)
            try:
                await dst.open()
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(app.pool.call(dst_host, "mirror.dst_close", mdp))
                raise
    except BaseException:
        datapaths.mirrors.pop(dp, None)
        raise
    m = mirror.Mirror(tap, dst)
    if dp not in datapaths.mirrors:             # stopped while the destination opened
        await m.stop()
        raise XapiError("MIRROR_FAILED", vdi)
    datapaths.mirrors[dp] = m
    log.info("mirror of VDI %s on %s into VDI %s on %s: copying %d bytes", vdi, dp, dst_vdi,
             dst_host or app.host_ref, tap.size)
    try:
        await m.run(progress)
    except mirror.MirrorFailed as e:
        datapaths.mirrors.pop(dp, None)
        log.error("mirror of VDI %s on %s: %s", vdi, dp, e)
        raise XapiError("MIRROR_FAILED", vdi) from None
    except OSError as e:        # not the disks' (the mirror reports those): still the mirror's failure
        datapaths.mirrors.pop(dp, None)
        log.exception("mirror of VDI %s on %s: %s", vdi, dp, e)
        raise XapiError("MIRROR_FAILED", vdi) from None
    except BaseException:
        datapaths.mirrors.pop(dp, None)
        raise
    log.info("mirror of VDI %s on %s: base copied, %d writes mirrored", vdi, dp, m.mirrored_writes)
    return ""


@method("mirror.start")
async def start_call(app, dp: str, vdi: str, dst_host: str, dst_vdi: str, task: str = "",
                     span: tuple = (0.0, 1.0), generation=None):
    """`task` (the coordinator's) gets the copy's progress, mapped into `span`."""
    return await start(app, dp, vdi, dst_host, dst_vdi, _reporter(app, task, span), generation=generation)


def _reporter(app, task: str, span):
    """A progress callback sending the coordinator the task's progress (a call per whole percent)."""
    if not task:
        return None
    pools = app.db.table("pool")
    coordinator = next((pools.get_field(p, "master") for p in pools.refs()), None)
    first, width = float(span[0]), float(span[1])
    last = [-1]

    def report(p: float) -> None:
        value = first + p * width
        if coordinator is None or int(value * 100) == last[0]:
            return
        last[0] = int(value * 100)
        call = app.pool.call(coordinator, "mirror.progress", task, value)
        asyncio.get_running_loop().create_task(_quiet(call))
    return report


async def _quiet(call) -> None:
    try:
        await call
    except Exception as e:  # noqa: BLE001 - progress is informative
        log.debug("progress report failed: %s", e)


@method("mirror.progress")
def progress(app, task: str, value: float, generation=None):
    """On the coordinator: a mirror's progress on another host, into the migration's task."""
    tasks = app.db.table("task")
    if task in tasks and tasks.get_field(task, "status") == "pending" \
            and float(value) > float(tasks.get_field(task, "progress")):
        tasks.set_field(task, "progress", min(0.99, float(value)))
    return ""


@method("mirror.stop")
async def stop(app, dp: str, generation=None):
    m = mirror.of(app).mirrors.pop(dp, None)
    if m is not None:           # (None: its start is opening the destination; it sees the stop)
        await m.stop()
    return ""


@method("mirror.check")
async def check(app, dp: str, vdi: str, generation=None):
    """Before the VM's memory moves to the mirror's host: the mirror still runs and every write it
    took is on the destination (acknowledged); else MIRROR_FAILED [vdi]."""
    m = mirror.of(app).mirrors.get(dp)
    if m is None:
        raise XapiError("MIRROR_FAILED", vdi)
    try:
        await mirror.run(m._flush)
    except mirror.MirrorFailed as e:
        log.error("mirror of VDI %s on %s: %s", vdi, dp, e)
        raise XapiError("MIRROR_FAILED", vdi) from None
    return ""


@method("mirror.switch")
async def switch(app, dp: str, vdi: str, dst_vdi: str, rw: bool, vm_uuid: str, device: str, generation=None):
    await _caught_up(app, generation)
    datapaths = mirror.of(app)
    m = datapaths.mirrors.get(dp)
    access = app.storage.access
    if m is None:
        raise XapiError("MIRROR_FAILED", vdi)
    await access.attach(dp, dst_vdi, bool(rw))
    try:
        info = await access.activate(dp, dst_vdi) or {}
        await datapaths.switch(dp, _vdi_uuid(app, dst_vdi), m)
    except mirror.MirrorFailed as e:
        log.error("switch of %s to VDI %s: %s", dp, dst_vdi, e)
        await asyncio.shield(access.release(dp, dst_vdi))
        raise XapiError("MIRROR_FAILED", vdi) from None
    except BaseException:
        await asyncio.shield(access.release(dp, dst_vdi))
        raise
    datapaths.mirrors.pop(dp, None)
    params = str(info.get("params", ""))
    try:
        await app.xenops.call("VBD.set_media", vm_uuid, {"device": device, "params": params})
    except Exception as e:  # noqa: BLE001 - the datapath switched; the backend's path is cosmetic here
        log.warning("VM %s: backend of %s not updated: %s", vm_uuid, device, e)
    try:
        await access.release(dp, vdi)
    except Exception as e:  # noqa: BLE001 - the VM runs on the new disk whatever happens here
        log.error("releasing %s of %s after the switch failed: %s", dp, vdi, e)
    return params


# -- the datapath moving with the VM to another host -----------------------------------------------------
@method("mirror.attach")
async def attach(app, dp: str, vdi: str, rw: bool, generation=None):
    """Before the memory moves: the new VDI attached (not activated) for the VM's datapath here."""
    await _caught_up(app, generation)
    await app.storage.ready()
    await app.storage.access.attach(dp, vdi, bool(rw))
    return ""


@method("mirror.activate")
async def activate(app, dp: str, vdi: str, generation=None):
    """Once the source released it: the datapath activated here (its tap opens, the guest's writes
    go on here)."""
    await _caught_up(app, generation)
    await app.storage.access.activate(dp, vdi)
    return ""


@method("mirror.release")
async def release(app, dp: str, vdi: str, generation=None):
    await _caught_up(app, generation)
    m = mirror.of(app).mirrors.get(dp)
    if m is not None and m.failed is not None:
        log.error("mirror of VDI %s on %s failed before its datapath moved (%s): the destination "
                  "misses the writes since", vdi, dp, m.failed)
    if vdi in app.db.table("VDI"):
        await app.storage.access.release(dp, vdi)
    return ""


@method("mirror.holds")
async def holds(app, dp: str, vdi: str, generation=None):
    """Whether this host has the datapath open on `vdi` (the host a mirror of it runs on)."""
    await _caught_up(app, generation)
    await app.storage.ready()
    tap = mirror.of(app).ensure(dp, vdi)
    return tap is not None and vdi in app.db.table("VDI") and tap.vdi_uuid == _vdi_uuid(app, vdi)
