"""Garbage collection and coalescing against a real daemon, through the SDK: snapshots destroyed are merged
away in the background (the data unchanged, the space reclaimed, qemu still reads the disk), and a
collector step killed part way is finished before the next operation on the SR."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests import daemon as _daemon
from tests import helpers
from tests.fixtures import own_daemon, root_xenapi
from xapi.sm import gc, vhd

MiB = 1 << 20
SIZE = 16 * MiB
QEMU_IMG = shutil.which("qemu-img")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


gc_daemon = own_daemon(env={"XAPI_GC_DELAY": "0.2"})
x = root_xenapi("gc_daemon", originator="pyxapi-tests")


@pytest.fixture(scope="module")
def host(x):
    return x.host.get_all()[0]


def new_vdi(x, sr, size):
    return helpers.new_vdi(x, sr, size, name="gc")


def pattern(i: int, n: int) -> bytes:
    return bytes([(i * 41 + k) % 253 for k in range(256)]) * (n // 256)


class Disk:
    """A VDI's file, written directly, and a model of what it must read."""

    def __init__(self, folder, location):
        self.path = os.path.join(folder, location + ".vhd")
        self.model = bytearray(SIZE)

    def write(self, off, data):
        with vhd.open(self.path) as h:
            h.write(off, data)
        self.model[off:off + len(data)] = data

    def check(self):
        with vhd.open(self.path, readonly=True) as h:
            assert not h.hidden and h.virtual_size == SIZE
            assert h.read(0, SIZE) == bytes(self.model)
        assert vhd.check(self.path) == []


def vhds(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".vhd"))


def wait_for(cond, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_destroyed_snapshots_are_coalesced_away(x, host, tmp_path):
    folder = str(tmp_path / "sr")
    sr = x.SR.create(host, {"path": folder}, "0", "gc", "", "ext", "user", False, {})
    v = new_vdi(x, sr, SIZE)
    loc = x.VDI.get_location(v)
    disk = Disk(folder, loc)
    disk.write(0, pattern(1, 4 * MiB))
    snaps = []
    for i in range(3):
        snaps.append(x.VDI.snapshot(v))
        disk.write(i * MiB + 512, pattern(i + 2, 2 * MiB))              # the same blocks again, unaligned
        disk.write(SIZE - (i + 1) * 4096, pattern(i + 7, 4096))
    assert len(vhds(folder)) == 7                                        # the disk, 3 base copies, 3 snapshots
    assert len([r for r in x.VDI.get_all_records_where(f'field "SR" = "{sr}"').values() if not r["managed"]]) == 3
    x.SR.update(sr)
    used_before = int(x.SR.get_physical_utilisation(sr))
    for s in snaps:
        x.VDI.destroy(s)
    x.SR.scan(sr)                                                        # and the collector runs after it

    def collected():                                                     # the files, then the records
        return vhds(folder) == [loc + ".vhd"] and x.SR.get_VDIs(sr) == [v] \
            and "vhd-parent" not in x.VDI.get_sm_config(v)
    wait_for(collected, what="the collector")
    disk.check()
    rec = x.VDI.get_record(v)
    assert rec["location"] == loc and rec["virtual_size"] == str(SIZE)
    assert int(rec["physical_utilisation"]) == os.path.getsize(disk.path)
    assert int(x.SR.get_physical_utilisation(sr)) <= used_before - 4 * MiB      # the space is reclaimed
    assert not os.path.exists(os.path.join(folder, gc.JOURNAL_DIR))
    if QEMU_IMG:
        # no chain left: qemu reads the whole disk from this one file
        p = subprocess.run([QEMU_IMG, "info", "-f", "vpc", disk.path], capture_output=True, text=True)
        assert p.returncode == 0 and "virtual size: 16 MiB" in p.stdout, p.stderr
        raw = str(tmp_path / "disk.raw")
        subprocess.run([QEMU_IMG, "convert", "-f", "vpc", "-O", "raw", disk.path, raw], check=True)
        with open(raw, "rb") as f:
            assert f.read() == bytes(disk.model)
    x.VDI.destroy(v)
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    x.SR.destroy(sr)
    assert not os.path.exists(folder)


def test_an_interrupted_step_is_finished_before_the_next_operation(x, host, tmp_path):
    folder = str(tmp_path / "sr")
    sr = x.SR.create(host, {"path": folder}, "0", "gc", "", "ext", "user", False, {})
    x.SR.add_to_other_config(sr, "gc", "false")                          # the daemon's collector keeps off
    v = new_vdi(x, sr, SIZE)
    loc = x.VDI.get_location(v)
    disk = Disk(folder, loc)
    disk.write(MiB, pattern(3, 3 * MiB))
    snap = x.VDI.snapshot(v)
    disk.write(2 * MiB, pattern(4, MiB))
    x.VDI.destroy(snap)
    (base,) = [n[:-4] for n in vhds(folder) if n[:-4] != loc]
    # a collector killed after renaming the leaf away: the VDI's file is missing
    env = {**os.environ, "XAPI_GC_CRASH_AT": "4", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "xapi.sm.gc", "--sr-path", folder, "--protect", loc, "--leaf", loc],
                       capture_output=True, env=env, timeout=60)
    assert p.returncode == -9
    assert not os.path.exists(disk.path) and gc.pending(folder)
    # the next operation on the SR rolls it forward first, and the records follow
    x.VDI.update(v)
    assert vhds(folder) == [loc + ".vhd"] and not gc.pending(folder)
    disk.check()
    assert x.SR.get_VDIs(sr) == [v] and "vhd-parent" not in x.VDI.get_sm_config(v)
    assert not [r for r in x.VDI.get_all_records_where(f'field "location" = "{base}"')]
    x.VDI.destroy(v)
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    x.SR.destroy(sr)


def test_a_step_cut_by_a_shutdown_is_finished_at_the_next_start(fresh_daemon, tmp_path):
    # the collector's steps are slowed down (a pause at each of its points) so the daemon stops inside one
    d = fresh_daemon(env={"XAPI_GC_DELAY": "0", "XAPI_GC_PAUSE": "0.3"})
    s = helpers.login(d)
    x = s.xenapi
    folder = str(tmp_path / "sr")
    sr = x.SR.create(x.host.get_all()[0], {"path": folder}, "0", "gc", "", "ext", "user", False, {})
    v = new_vdi(x, sr, SIZE)
    loc = x.VDI.get_location(v)
    disk = Disk(folder, loc)
    disk.write(0, pattern(5, 2 * MiB))
    snap = x.VDI.snapshot(v)
    disk.write(MiB, pattern(6, 2 * MiB))
    x.VDI.destroy(snap)                                                  # leaves a leaf to coalesce
    wait_for(lambda: gc.pending(folder), what="a collector step to start")
    d.stop()
    assert gc.pending(folder)                                            # killed inside the step
    d2 = _daemon.start(data_dir=d.data_dir, env={"XAPI_GC_DELAY": "0"})
    try:
        s2 = helpers.login(d2)
        x2 = s2.xenapi
        wait_for(lambda: vhds(folder) == [loc + ".vhd"] and not gc.pending(folder)
                 and x2.SR.get_VDIs(sr) == [v], what="the step to be finished and the collection to end")
        disk.check()
        assert "finishing an interrupted garbage-collection step" in d2.log() and "recovered leaf" in d2.log()
        x2.VDI.destroy(v)
    finally:
        d2.stop()
