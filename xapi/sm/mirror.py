"""The datapath of a VM's disk on this host (tapdisk's role), its mirror, and the simulated guest's
disk writer.

A *tap* is one activated VBD datapath (``vbd/<vm-uuid>/<userdevice>``) on one VDI: the access layer
opens it when it activates the VDI for that datapath and closes it when it deactivates it. The guest
writes through `write(dp, offset, data)`, which goes to the datapath's *current* tap.

A mirror (storage motion, as SMAPIv2's DATA.MIRROR with tapdisk's mirroring) copies a tap's disk to
a destination VDI while the guest keeps writing: every write goes to both disks from the moment the
mirror starts, and a background copy brings over the base one 2 MiB block at a time, reading the
source and writing the destination under the tap's lock, so a write can't fall between the read and
the write of its block (a copied block that is rewritten is rewritten on both). Once every block is
copied the disks are equal and stay so until `switch`, which points the datapath at the
destination's tap (that VDI activated for the same datapath) atomically with respect to writes.

The simulated guest's writer (``VM.other_config:sim_disk_writer=true``; period
``sim_disk_writer_ms``, default 5): while its VM's datapath is open it writes a 4 KiB counter pattern
(`pattern(seq)`) at `offset_of(seq, size)` and appends ``seq offset length mirrored`` to
``<data>/sim-disk-writer/<vm-uuid>.log`` once the write is on the disk, so a test can rebuild what
the disk must hold. The sequence goes on across datapaths of the same VM.

All disk I/O runs in this module's small thread pool, never on the event loop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading

from xapi.sm import copy as sm_copy

log = logging.getLogger("xapi.sm.mirror")

BLOCK = 2 << 20
WRITE = 4096
REGION = 16 << 20          # the writer's writes land in the first 16 MiB (8 blocks) of the disk
# a simulator setting: seconds between two blocks of a mirror's base copy (0: as fast as the disk)
COPY_DELAY = float(os.environ.get("XAPI_SIM_MIRROR_BLOCK_DELAY", "0") or 0)
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="xapi-tap")
    return _pool


async def _run(fn, *args):
    """fn(*args) in the pool; a cancelled caller still waits for the call (it may hold a file)."""
    fut = asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([fut])
        raise


def pattern(seq: int) -> bytes:
    return (b"%016x" % seq) * (WRITE // 16)


def offset_of(seq: int, size: int) -> int:
    slots = max(1, min(size, REGION) // WRITE)
    return (seq * 2654435761 % slots) * WRITE


class Tap:
    """One datapath's open disk. The disk is opened on first use and closed by `close`."""

    def __init__(self, dp: str, vdi_uuid: str, info: dict, size: int) -> None:
        self.dp, self.vdi_uuid, self.info, self.size = dp, vdi_uuid, dict(info), size
        self.lock = threading.Lock()
        self.mirror: Mirror | None = None
        self._disk = None
        self.closed = False

    def _open(self):
        if self._disk is None:
            self._disk = sm_copy.open_disk(self.info, True)
        return self._disk

    def write(self, offset: int, data: bytes) -> bool:
        """Writes on this disk, and on the mirror's destination when there is one; whether it was
        mirrored. In a pool thread."""
        with self.lock:
            if self.closed:
                raise OSError(f"datapath {self.dp} is closed")
            self._open().write(offset, data)
            m = self.mirror
            if m is not None:
                m.dst.write(offset, data)
                m.mirrored_writes += 1
                return True
            return False

    def read(self, offset: int, length: int) -> bytes:
        with self.lock:
            return self._open().read(offset, length)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.mirror is not None and self.mirror.dst is not None:
                self.mirror.dst.close()
                self.mirror.dst = None
            self.mirror = None
            if self._disk is not None:
                self._disk.close()
                self._disk = None


class Mirror:
    """Mirrors `source` (a tap) into the destination disk `dst_info`."""

    def __init__(self, source: Tap, dst_info: dict) -> None:
        self.source = source
        self.dst_info = dict(dst_info)
        self.dst = None
        self.nblocks = (source.size + BLOCK - 1) // BLOCK
        self.copied = bytearray(self.nblocks)      # the block bitmap of the background copy
        self.mirrored_writes = 0
        self.cancel = threading.Event()

    def _attach(self) -> None:
        dst = sm_copy.open_disk(self.dst_info, True)
        with self.source.lock:
            self.dst = dst
            self.source.mirror = self          # from now on every write lands on both

    def _copy_block(self, b: int) -> None:
        src = self.source
        off = b * BLOCK
        n = min(BLOCK, src.size - off)
        with src.lock:
            data = src._open().read(off, n)
            if any(data) or self.copied[b]:
                self.dst.write(off, data)
            self.copied[b] = 1

    def _detach(self, flush: bool) -> None:
        with self.source.lock:
            if self.source.mirror is self:
                self.source.mirror = None
            dst, self.dst = self.dst, None
        if dst is not None:
            if flush:
                dst.close()
            else:
                with contextlib.suppress(Exception):
                    dst.close()

    async def run(self, progress=None) -> None:
        """Starts mirroring writes, then copies the base; returns with both disks equal (writes
        still mirrored). Cancelling stops the mirror."""
        await _run(self._attach)
        try:
            for b in range(self.nblocks):
                await _run(self._copy_block, b)
                if COPY_DELAY:
                    await asyncio.sleep(COPY_DELAY)
                if progress is not None:
                    progress((b + 1) / self.nblocks)
        except BaseException:
            await _run(self._detach, False)
            raise

    async def stop(self) -> None:
        await _run(self._detach, False)


class Datapaths:
    """This host's taps, the current tap of each datapath, and the writers."""

    def __init__(self, app) -> None:
        self.app = app
        self.taps: dict[tuple[str, str], Tap] = {}
        self.current: dict[str, Tap] = {}
        self.writers: dict[str, asyncio.Task] = {}
        self.seq: dict[str, int] = {}

    # -- hooks of the access layer ---------------------------------------------------------------
    def activated(self, dp: str, vdi_ref: str, info: dict | None) -> None:
        if not dp.startswith("vbd/") or not info or not info.get("params"):
            return
        vdis = self.app.db.table("VDI")
        if vdi_ref not in vdis:
            return
        uuid = vdis.get_field(vdi_ref, "uuid")
        if (dp, uuid) in self.taps:
            return
        tap = Tap(dp, uuid, info, int(vdis.get_field(vdi_ref, "virtual_size")))
        self.taps[(dp, uuid)] = tap
        if dp not in self.current:
            self.current[dp] = tap
            self._start_writer(dp)

    async def deactivating(self, dp: str, vdi_ref: str) -> None:
        vdis = self.app.db.table("VDI")
        uuid = vdis.get_field(vdi_ref, "uuid") if vdi_ref in vdis else None
        tap = self.taps.pop((dp, uuid), None)
        if tap is None:
            return
        if self.current.get(dp) is tap:
            del self.current[dp]
            await self._stop_writer(dp)
        await _run(tap.close)

    # -- the guest's side ------------------------------------------------------------------------
    def tap(self, dp: str) -> Tap | None:
        return self.current.get(dp)

    def ensure(self, dp: str, vdi_ref: str) -> Tap | None:
        """The datapath's tap, opened again from the access layer's state when the datapath holds
        the VDI activated but has no tap (a datapath activated before this daemon started)."""
        tap = self.current.get(dp)
        vdis = self.app.db.table("VDI")
        if tap is None and vdi_ref in vdis:
            entry = self.app.storage.access.vdis.get(vdis.get_field(vdi_ref, "uuid")) or {}
            if str(entry.get("dps", {}).get(dp, "")).startswith("activated"):
                self.activated(dp, vdi_ref, entry.get("attach_info"))
                tap = self.current.get(dp)
        return tap

    async def write(self, dp: str, offset: int, data: bytes) -> bool:
        tap = self.current.get(dp)
        if tap is None:
            raise OSError(f"no open datapath {dp}")
        return await _run(tap.write, offset, data)

    # -- storage motion --------------------------------------------------------------------------
    async def switch(self, dp: str, vdi_uuid: str) -> None:
        """The datapath's writes go to its tap of `vdi_uuid` from now on; the old tap's mirror
        (which was writing that disk) is closed first, under the old tap's lock."""
        new = self.taps[(dp, vdi_uuid)]
        old = self.current.get(dp)

        def swap():
            if old is None:
                return
            with old.lock:
                m = old.mirror
                old.mirror = None
                if m is not None and m.dst is not None:
                    m.dst.close()
                    m.dst = None
                old.closed = True       # a write that still finds the old tap goes round again
                self.current[dp] = new
        await _run(swap)
        self.current[dp] = new

    # -- the simulated guest's writer --------------------------------------------------------------
    def _vm_of(self, dp: str):
        parts = dp.split("/")
        if len(parts) != 3:
            return None, None
        vms = self.app.db.table("VM")
        found = vms.find("uuid", parts[1])
        return (found[0], parts[1]) if found else (None, parts[1])

    def _start_writer(self, dp: str) -> None:
        vm, vm_uuid = self._vm_of(dp)
        if vm is None:
            return
        oc = self.app.db.table("VM").get_field(vm, "other_config") or {}
        if oc.get("sim_disk_writer") != "true" or dp in self.writers:
            return
        try:
            period = max(0.001, float(oc.get("sim_disk_writer_ms", "5")) / 1000)
        except ValueError:
            period = 0.005
        self.writers[dp] = asyncio.get_running_loop().create_task(self._writer(dp, vm_uuid, period))

    async def _stop_writer(self, dp: str) -> None:
        task = self.writers.pop(dp, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def log_path(self, vm_uuid: str) -> str:
        return os.path.join(self.app.config.data_dir, "sim-disk-writer", f"{vm_uuid}.log")

    def _next_seq(self, vm_uuid: str) -> int:
        if vm_uuid not in self.seq:
            last = -1
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(self.log_path(vm_uuid), "rb") as f:
                    lines = f.read().splitlines()
                    last = int(lines[-1].split()[0]) if lines else -1
            self.seq[vm_uuid] = last + 1
        return self.seq[vm_uuid]

    async def _writer(self, dp: str, vm_uuid: str, period: float) -> None:
        path = self.log_path(vm_uuid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log_file = open(path, "ab", buffering=0)
        try:
            while True:
                tap = self.current.get(dp)
                if tap is None:
                    return
                seq = await asyncio.to_thread(self._next_seq, vm_uuid) if vm_uuid not in self.seq \
                    else self.seq[vm_uuid]
                off = offset_of(seq, tap.size)

                def one(tap=tap, off=off, seq=seq):
                    mirrored = tap.write(off, pattern(seq))
                    log_file.write(b"%d %d %d %d\n" % (seq, off, WRITE, int(mirrored)))
                try:
                    await _run(one)
                except OSError:
                    # the tap closed between lookup and write (a switch or a shutdown): look again
                    await asyncio.sleep(period)
                    continue
                self.seq[vm_uuid] = seq + 1
                await asyncio.sleep(period)
        finally:
            log_file.close()

    async def close(self) -> None:
        for dp in list(self.writers):
            await self._stop_writer(dp)
        for tap in list(self.taps.values()):
            await _run(tap.close)
        self.taps.clear()
        self.current.clear()


def of(app) -> Datapaths:
    """This daemon's datapaths (made on first use)."""
    d = getattr(app, "_datapaths", None)
    if d is None:
        d = app._datapaths = Datapaths(app)
    return d
