"""Storage motion's disks in their pool threads (xapi.sm.mirror, xapi.sm.copy): a datapath closed
under a running mirror, a destination closed under a write, a copy cancelled again and again: no
thread ever uses a descriptor after its close (whose number is soon another file's or a pipe's:
'[Errno 29] Illegal seek'), every file is closed once, and a disk that fails is the mirror's or the
copy's failure (MirrorFailed, VDI_COPY_FAILED [reason]), never a bare OSError."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from xapi.datamodel.errors import XapiError
from xapi.sm import copy as sm_copy, mirror

MIB = 1 << 20


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def disk(tmp_path, name: str, size: int, fill: bytes | None = None) -> dict:
    path = tmp_path / name
    with open(path, "wb") as f:
        if fill is None:
            f.truncate(size)
        else:
            f.write((fill * (size // len(fill) + 1))[:size])
    return {"params": str(path), "format": "raw"}


def test_datapath_closed_under_a_running_mirror(tmp_path, monkeypatch):
    """The tap closes (its VM halts) while the base copies and the guest writes: the mirror ends as
    MirrorFailed, the guest's next write as TapClosed, both disks are closed, none twice."""
    monkeypatch.setattr(mirror, "COPY_DELAY", 0.01)
    size = 24 * MIB
    src = disk(tmp_path, "src", size, b"source block")
    dst = disk(tmp_path, "dst", size)
    before = open_fds()

    async def go():
        tap = mirror.Tap("vbd/vm/0", "vdi", src, size)
        m = mirror.Mirror(tap, mirror.DstDisk(sm_copy.open_disk(dst, True)))
        running = asyncio.ensure_future(m.run())
        while tap.mirror is None:                   # attached: from now on writes land on both
            await asyncio.sleep(0.001)
        writes = 0
        while m.copied.count(1) < 3:                # a few blocks copied, guest writes mirrored
            assert await mirror.run(tap.write, writes * 4096, b"w" * 4096)
            writes += 1
            await asyncio.sleep(0.005)
        await mirror.run(tap.close)
        with pytest.raises(mirror.MirrorFailed):
            await running
        with pytest.raises(mirror.TapClosed):
            await mirror.run(tap.write, 0, b"late")
        assert m.failed == "the datapath closed" and m.dst is None, (m.failed, m.dst)
        await m.stop()                              # a stop after the close closes nothing again
        return writes
    writes = asyncio.run(go())
    assert writes >= 3 and open_fds() == before
    with open(dst["params"], "rb") as f:
        head = f.read(writes * 4096)
    assert head == b"w" * 4096 * writes           # the mirrored writes reached the destination


def test_an_unreadable_source_fails_the_mirror(tmp_path):
    """The source disk can't be read (here: its path is a folder): MirrorFailed with the reason, the
    destination closed (xapi's MIRROR_FAILED [vdi] up the stack), not an OSError."""
    (tmp_path / "gone").mkdir()
    dst = disk(tmp_path, "dst", 4 * MIB)
    before = open_fds()

    async def go():
        tap = mirror.Tap("vbd/vm/0", "vdi", {"params": str(tmp_path / "gone"), "format": "raw"}, 4 * MIB)
        m = mirror.Mirror(tap, mirror.DstDisk(sm_copy.open_disk(dst, True)))
        with pytest.raises(mirror.MirrorFailed) as err:
            await m.run()
        return str(err.value), m
    reason, m = asyncio.run(go())
    assert "Is a directory" in reason and m.dst is None and open_fds() == before


def test_destination_closed_under_a_write(tmp_path):
    """mirror.dst_close while mirror.dst_write's thread writes: the close waits for the write, a
    write after it fails with an OSError of its own, the file is closed once."""
    dst = disk(tmp_path, "dst", 8 * MIB)
    before = open_fds()
    d = mirror.DstDisk(sm_copy.open_disk(dst, True))
    in_write, release = threading.Event(), threading.Event()
    real = d.disk.write

    def slow_write(offset, data):                 # the disk's write, held until the close is under way
        in_write.set()
        release.wait(5)
        real(offset, data)
    d.disk.write = slow_write
    writer = threading.Thread(target=d.write, args=(0, b"x" * 4096))
    writer.start()
    assert in_write.wait(5)
    closer = threading.Thread(target=d.close)
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive()                      # waiting for the write in flight
    release.set()
    writer.join(5)
    closer.join(5)
    assert not closer.is_alive() and open_fds() == before
    with pytest.raises(OSError, match="closed"):
        d.write(0, b"late")
    d.close()                                     # twice: nothing closed again
    with open(dst["params"], "rb") as f:
        assert f.read(4096) == b"x" * 4096


def test_copy_cancelled_twice_waits_for_its_thread(tmp_path):
    """VDI.copy's task cancelled, then cancelled again while its thread finishes a block: the caller
    goes on (to release the disks) only once the thread has closed them."""
    size = 16 * MIB
    src = disk(tmp_path, "src", size, b"data")
    dst = disk(tmp_path, "dst", size)
    started = threading.Event()

    def progress(done, total):                    # in the copy's thread: a slow disk
        started.set()
        time.sleep(0.3)

    async def go():
        before = open_fds()                       # the loop's own included
        task = asyncio.ensure_future(sm_copy.copy(src, dst, size, progress=progress))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return before, open_fds()
    before, after = asyncio.run(go())
    assert after == before


def test_copy_io_error_is_vdi_copy_failed(tmp_path):
    """A disk that can't be read fails the copy as xapi's sparse_dd failure: VDI_COPY_FAILED [reason]."""
    (tmp_path / "gone").mkdir()
    dst = disk(tmp_path, "dst", 4 * MIB)

    async def go():
        await sm_copy.copy({"params": str(tmp_path / "gone"), "format": "raw"}, dst, 4 * MIB)
    with pytest.raises(XapiError) as err:
        asyncio.run(go())
    assert err.value.args[0] == "VDI_COPY_FAILED" and "Is a directory" in err.value.args[1]
