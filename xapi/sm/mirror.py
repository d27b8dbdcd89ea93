"""The datapath of a VM's disk on this host (tapdisk's role) and its mirror.

A *tap* is one activated VBD datapath (``vbd/<vm-uuid>/<userdevice>``) on one VDI: the access layer
opens it when it activates the VDI for that datapath and closes it when it deactivates it. The guest
writes with `Tap.write` on the datapath's *current* tap (`Datapaths.tap(dp)`); the simulated guest's
writer (xapi.sm.sim_disk_writer) starts and stops with the datapath.

A mirror (storage motion, as SMAPIv2's DATA.MIRROR with tapdisk's mirroring) copies a tap's disk to
a destination VDI while the guest keeps writing: every write goes to both disks from the moment the
mirror starts, and a background copy brings over the base one 2 MiB block at a time, reading the
source and writing the destination under the tap's lock, so a write can't fall between the read and
the write of its block (a copied block that is rewritten is rewritten on both). Once every block is
copied the disks are equal and stay so until `switch`, which points the datapath at the
destination's tap (that VDI activated for the same datapath) atomically with respect to writes.
A destination on another host (xapi.sm.mirror_stream) takes the base copy's blocks pipelined
(`write_behind`) and acknowledges them by `flush`, which the copy's end and the switch wait for.

All disk I/O runs in this module's small thread pool (`run`), never on the event loop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading

from xapi.sm.wait_out import wait_out
from xapi.sm import copy as sm_copy, sim_disk_writer

log = logging.getLogger("xapi.sm.mirror")

BLOCK = 2 << 20
# a simulator setting: seconds between two blocks of a mirror's base copy (0: as fast as the disk)
COPY_DELAY = float(os.environ.get("XAPI_SIM_MIRROR_BLOCK_DELAY", "0") or 0)
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="xapi-tap")
    return _pool


async def run(fn, *args):
    """fn(*args) in the pool; a cancelled caller still waits for the call (it may hold a file)."""
    fut = asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await wait_out(fut)
        raise


class TapClosed(OSError):
    """A write on a tap that closed (its datapath switched or deactivated): the writer looks again."""


class Tap:
    """One datapath's open disk. The disk is opened on first use and closed by `close`; every use of
    it is under `lock`, so a close never comes while a pool thread still uses its descriptor."""

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
                raise TapClosed(f"datapath {self.dp} is closed")
            self._open().write(offset, data)
            m = self.mirror
            if m is not None:
                try:
                    m.dst.write(offset, data)
                except Exception as e:  # noqa: BLE001 - the mirror fails, never the guest's write
                    m.fail(e)
                    return False
                m.mirrored_writes += 1
                return True
            return False

    def read(self, offset: int, length: int) -> bytes:
        with self.lock:
            return self._open().read(offset, length)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            m = self.mirror
            if m is not None:
                m.failed = m.failed or "the datapath closed"
                if m.dst is not None:
                    with contextlib.suppress(Exception):
                        m.dst.close()
                    m.dst = None
            self.mirror = None
            if self._disk is not None:
                self._disk.close()
                self._disk = None


class MirrorFailed(Exception):
    pass


class DstDisk:
    """A mirror's destination disk on this host, written by pool threads for another host's mirror:
    `close` waits for a write in flight, and a write after it fails instead of using a closed
    descriptor (whose number is soon another file's or a pipe's)."""

    def __init__(self, disk) -> None:
        self.disk = disk
        self.lock = threading.Lock()

    def write(self, offset: int, data) -> None:
        with self.lock:
            if self.disk is None:
                raise OSError("the mirror's destination is closed")
            self.disk.write(offset, data)

    def close(self) -> None:
        with self.lock:
            disk, self.disk = self.disk, None
        if disk is not None:
            disk.close()


class Mirror:
    """Mirrors `source` (a tap) into `dst`, an open destination disk (`write(offset, data)` and
    `close()`, called from pool threads: a local disk, or one on another host, xapi.sm.mirror_calls).
    A failing write on the destination ends the mirror (the guest's write is done on the source all
    the same); `run` and the switch then raise MirrorFailed, as they do once `stop` was called."""

    def __init__(self, source: Tap, dst) -> None:
        self.source = source
        self._pending = dst
        self.dst = None
        self.nblocks = (source.size + BLOCK - 1) // BLOCK
        self.copied = bytearray(self.nblocks)      # the block bitmap of the background copy
        self.mirrored_writes = 0
        self.failed: str | None = None

    def fail(self, e: Exception) -> None:
        """Under the source's lock: the mirror stops taking writes."""
        log.error("mirror of %s failed: %s", self.source.vdi_uuid, e)
        self.failed = str(e) or type(e).__name__
        if self.source.mirror is self:
            self.source.mirror = None

    def _attach(self) -> None:
        with self.source.lock:
            if self.source.closed:
                raise MirrorFailed("the datapath closed")
            self.dst, self._pending = self._pending, None
            self.source.mirror = self          # from now on every write lands on both

    def _copy_block(self, b: int) -> None:
        src = self.source
        off = b * BLOCK
        n = min(BLOCK, src.size - off)
        with src.lock:
            if self.failed is not None:
                raise MirrorFailed(self.failed)
            try:
                data = src._open().read(off, n)
            except Exception as e:  # noqa: BLE001 - the source can't be read: the mirror fails
                self.fail(e)
                raise MirrorFailed(self.failed) from None
            # an all-zero block needs no write: the destination's block holds zeros, or the same
            # mirrored writes as the source
            if data != bytes(n):
                try:
                    # pipelined when the destination can (another host's: acknowledged by `_flush`)
                    (getattr(self.dst, "write_behind", None) or self.dst.write)(off, data)
                except Exception as e:  # noqa: BLE001 - reported as the mirror's failure
                    self.fail(e)
                    raise MirrorFailed(self.failed) from None
            self.copied[b] = 1

    def _flush(self) -> None:
        """Every write sent is acknowledged by the destination (a stream's), else MirrorFailed."""
        with self.source.lock:
            if self.failed is not None:
                raise MirrorFailed(self.failed)
            flush = getattr(self.dst, "flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception as e:  # noqa: BLE001 - reported as the mirror's failure
                    self.fail(e)
                    raise MirrorFailed(self.failed) from None

    def _detach(self) -> None:
        with self.source.lock:
            if self.source.mirror is self:
                self.source.mirror = None
            self.failed = self.failed or "stopped"
            dst, self.dst = self.dst or self._pending, None
            self._pending = None
        if dst is not None:
            with contextlib.suppress(Exception):
                dst.close()

    async def run(self, progress=None) -> None:
        """Starts mirroring writes, then copies the base; returns with both disks equal (writes
        still mirrored). Cancelling stops the mirror."""
        await run(self._attach)
        try:
            for b in range(self.nblocks):
                await run(self._copy_block, b)
                if COPY_DELAY:
                    await asyncio.sleep(COPY_DELAY)
                if progress is not None:
                    progress((b + 1) / self.nblocks)
            await run(self._flush)
        except BaseException:
            await run(self._detach)
            raise

    async def stop(self) -> None:
        await run(self._detach)


class Datapaths:
    """This host's taps and the current tap of each datapath."""

    def __init__(self, app) -> None:
        self.app = app
        self.taps: dict[tuple[str, str], Tap] = {}
        self.current: dict[str, Tap] = {}
        self.writers = sim_disk_writer.Writers(self)
        self.mirrors: dict[str, Mirror | None] = {}   # datapath -> its mirror (source side)
        self.dsts: dict[str, tuple] = {}          # mirror datapath -> (open disk, VDI) (destination side)

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
            self.writers.start(dp)

    async def deactivating(self, dp: str, vdi_ref: str) -> None:
        vdis = self.app.db.table("VDI")
        uuid = vdis.get_field(vdi_ref, "uuid") if vdi_ref in vdis else None
        tap = self.taps.pop((dp, uuid), None)
        if tap is None:
            return
        m = None
        try:
            if self.current.get(dp) is tap:
                del self.current[dp]
                m = self.mirrors.pop(dp, None)
                await self.writers.stop(dp)
        finally:
            await run(tap.close)            # cancelled or not: the tap is out of the table
            if m is not None:
                # a mirror that failed earlier is no longer the tap's: its destination closes here
                await m.stop()

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

    # -- storage motion --------------------------------------------------------------------------
    async def switch(self, dp: str, vdi_uuid: str, mirror: Mirror) -> None:
        """The datapath's writes go to its tap of `vdi_uuid` from now on; `mirror` (which was
        writing that disk) is closed first, under the old tap's lock. MirrorFailed, and nothing
        changes, if the mirror failed or the datapath closed meanwhile."""
        new = self.taps.get((dp, vdi_uuid))
        old = mirror.source

        def swap():
            with old.lock:
                if mirror.failed is not None or old.mirror is not mirror or old.closed \
                        or new is None or self.current.get(dp) is not old:
                    raise MirrorFailed(mirror.failed or "the datapath changed")
                flush = getattr(mirror.dst, "flush", None)
                if flush is not None:       # the switch only once every write is on the destination
                    try:
                        flush()
                    except Exception as e:  # noqa: BLE001 - the mirror's failure: nothing changes
                        mirror.fail(e)
                        raise MirrorFailed(mirror.failed) from None
                old.mirror = None
                if mirror.dst is not None:
                    mirror.dst.close()
                    mirror.dst = None
                old.closed = True       # a write that still finds the old tap goes round again
                self.current[dp] = new
        await run(swap)

    async def close(self) -> None:
        await self.writers.close()
        for tap in list(self.taps.values()):
            await run(tap.close)
        self.taps.clear()
        self.current.clear()
        for disk, _ in list(self.dsts.values()):       # their datapaths are released at the next start
            await run(disk.close)
        self.dsts.clear()


def of(app) -> Datapaths:
    """This daemon's datapaths (made on first use)."""
    d = getattr(app, "_datapaths", None)
    if d is None:
        d = app._datapaths = Datapaths(app)
    return d


from xapi.sm import mirror_calls  # noqa: E402,F401 - its internal methods, on every host
