"""The simulated guest's disk writer: what a guest's I/O is to tapdisk, so that storage motion
(xapi.sm.mirror) has writes to mirror.

Enabled per VM by ``other_config:sim_disk_writer=true`` (period ``sim_disk_writer_ms``, default 5).
While the VM's disk datapath is open on this host, it writes a 4 KiB pattern of its sequence number
(`pattern(seq)`) at `offset_of(seq, size)` through the datapath (its current tap, xapi.sm.mirror) and
appends ``seq offset length mirrored`` to ``<data>/sim-disk-writer/<vm-uuid>.log`` of this host once
the write is on the disk, so that a test can rebuild what the disk must hold. The sequence number is
the wall clock in nanoseconds (strictly increasing per writer): the logs of the hosts a VM ran on,
merged in sequence order, are its writes in the order they happened (the hosts of a simulated pool
share one clock, and a datapath leaves one host before it opens on the next).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

log = logging.getLogger("xapi.sm.mirror")

WRITE = 4096
REGION = 16 << 20          # the writes land in the first 16 MiB (8 VHD blocks) of the disk


def pattern(seq: int) -> bytes:
    return (b"%016x" % seq) * (WRITE // 16)


def offset_of(seq: int, size: int) -> int:
    slots = max(1, min(size, REGION) // WRITE)
    return (seq * 2654435761 % slots) * WRITE


class Writers:
    """The writers of one host's datapaths (`datapaths`: xapi.sm.mirror.Datapaths)."""

    def __init__(self, datapaths) -> None:
        self.datapaths = datapaths
        self.app = datapaths.app
        self.tasks: dict[str, asyncio.Task] = {}
        self.seq: dict[str, int] = {}

    def _vm_of(self, dp: str):
        parts = dp.split("/")
        if len(parts) != 3:
            return None, None
        found = self.app.db.table("VM").find("uuid", parts[1])
        return (found[0], parts[1]) if found else (None, parts[1])

    def start(self, dp: str) -> None:
        """Starts the writer of the datapath's VM if it has one enabled."""
        vm, vm_uuid = self._vm_of(dp)
        if vm is None or dp in self.tasks:
            return
        oc = self.app.db.table("VM").get_field(vm, "other_config") or {}
        if oc.get("sim_disk_writer") != "true":
            return
        try:
            period = max(0.001, float(oc.get("sim_disk_writer_ms", "5")) / 1000)
        except ValueError:
            period = 0.005
        self.tasks[dp] = asyncio.get_running_loop().create_task(self._write(dp, vm_uuid, period))

    async def stop(self, dp: str) -> None:
        task = self.tasks.pop(dp, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def close(self) -> None:
        for dp in list(self.tasks):
            await self.stop(dp)

    def log_path(self, vm_uuid: str) -> str:
        return os.path.join(self.app.config.data_dir, "sim-disk-writer", f"{vm_uuid}.log")

    async def _write(self, dp: str, vm_uuid: str, period: float) -> None:
        from xapi.sm.mirror import TapClosed, run
        path = self.log_path(vm_uuid)
        await asyncio.to_thread(os.makedirs, os.path.dirname(path), exist_ok=True)
        log_file = await asyncio.to_thread(open, path, "ab", buffering=0)
        failed = None
        try:
            while True:
                tap = self.datapaths.tap(dp)
                if tap is None:
                    return
                seq = max(time.time_ns(), self.seq.get(vm_uuid, 0))
                off = offset_of(seq, tap.size)

                def one(tap=tap, off=off, seq=seq):
                    mirrored = tap.write(off, pattern(seq))
                    log_file.write(b"%d %d %d %d\n" % (seq, off, WRITE, int(mirrored)))
                try:
                    await run(one)
                except TapClosed:
                    # the tap closed between the look-up and the write (a switch): look again
                    await asyncio.sleep(period)
                    continue
                except OSError as e:
                    # the guest's write failed (an I/O error on its disk): not logged as written
                    if str(e) != failed:
                        failed = str(e)
                        log.error("VM %s: write on %s failed: %s", vm_uuid, dp, e)
                    await asyncio.sleep(period)
                    continue
                self.seq[vm_uuid] = seq + 1
                await asyncio.sleep(period)
        finally:
            log_file.close()
