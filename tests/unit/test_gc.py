"""xapi.sm.gc: the VHD tree of an SR folder, each step of the collector (garbage, coalesce, leaf-coalesce),
relinking, and crash safety (the collector killed at each of its crash points, and at random times as a real
subprocess, then run again: the leaves read what a model says, no file is lost, no journal is left)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from xapi.sm import filesr, gc, vhd

MiB = 1 << 20
SIZE = 8 * MiB
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def u() -> str:
    return str(uuid.uuid4())


class SR:
    """A folder laid out as xapi.sm.filesr does (snapshots as FileSR's), with a model of every visible disk."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        self.models: dict[str, bytearray] = {}

    def file(self, loc):
        return os.path.join(self.path, loc + ".vhd")

    def create(self, size=SIZE):
        loc = u()
        vhd.create(self.file(loc), size)
        self.models[loc] = bytearray(size)
        return loc

    def write(self, loc, off, data):
        with vhd.open(self.file(loc)) as h:
            h.write(off, data)
        self.models[loc][off:off + len(data)] = data

    def snapshot(self, loc, *, keep_snapshot=True, hidden=True):
        """FileSR's snapshot: the disk becomes a hidden base, the VDI a new child; a second child is the
        snapshot. Returns (base, snapshot or None)."""
        base = u()
        os.link(self.file(loc), self.file(base))
        if hidden:
            vhd.set_hidden(self.file(base), True)
        tmp = os.path.join(self.path, ".tmp.vhd")
        vhd.snapshot(self.file(base), tmp)
        os.rename(tmp, self.file(loc))
        snap = None
        if keep_snapshot:
            snap = u()
            vhd.snapshot(self.file(base), self.file(snap))
            self.models[snap] = bytearray(self.models[loc])
        if not hidden:
            self.models[base] = bytearray(self.models[loc])
        return base, snap

    def destroy(self, loc):
        os.unlink(self.file(loc))
        self.models.pop(loc, None)

    def vhds(self):
        return sorted(n[:-4] for n in os.listdir(self.path) if n.endswith(".vhd"))

    def check(self, locs=None):
        for loc in locs or self.models:
            with vhd.open(self.file(loc), readonly=True) as h:
                assert not h.hidden, loc
                assert h.read(0, h.virtual_size) == bytes(self.models[loc]), loc
            assert vhd.check(self.file(loc)) == [], loc


def pattern(i: int, n: int) -> bytes:
    return bytes([(i * 37 + k) % 251 for k in range(256)]) * (n // 256)


def scenario(path) -> tuple[SR, dict]:
    """Four trees:
       B1 -> B2 -> B3 -> A     (three snapshots of A, destroyed: two coalesces and a leaf-coalesce)
       G -> {S, H}             (H a hidden leaf: garbage; then S is leaf-coalesced)
       K -> K2                 (a hidden subtree: garbage)
       V                       (a disk alone)"""
    sr = SR(path)
    a = sr.create()
    sr.write(a, 0, pattern(1, 3 * MiB))
    for i in range(3):
        _, snap = sr.snapshot(a)
        sr.write(a, i * MiB + 512, pattern(i + 2, MiB + 1024))     # overlapping, unaligned writes
        sr.write(a, SIZE - 4096 * (i + 1), pattern(i + 9, 512))
        sr.destroy(snap)
    s = sr.create()
    sr.write(s, MiB, pattern(20, 2 * MiB))
    g, h = sr.snapshot(s)
    vhd.set_hidden(sr.file(h), True)
    sr.models.pop(h)
    sr.write(s, 5 * MiB, pattern(21, 4096))
    k = sr.create()
    sr.write(k, 0, pattern(30, MiB))
    k2 = u()
    vhd.snapshot(sr.file(k), sr.file(k2))
    for x in (k, k2):
        vhd.set_hidden(sr.file(x), True)
        sr.models.pop(x, None)
    v = sr.create()
    sr.write(v, 2 * MiB, pattern(40, MiB))
    return sr, {"a": a, "s": s, "v": v, "g": g, "h": h, "k": k, "k2": k2}


def collector(sr, names, **kw):
    protect = [names["a"], names["s"], names["v"]]
    return gc.Collector(sr.path, protect=protect, leaves=kw.pop("leaves", protect), log=lambda m: None, **kw)


# -- the tree ------------------------------------------------------------------------------------------
def test_tree_from_the_files(tmp_path):
    sr, n = scenario(tmp_path)
    nodes = collector(sr, n).scan()
    a_parent = nodes[n["a"]].parent
    b2 = nodes[a_parent].parent
    b1 = nodes[b2].parent
    assert nodes[b1].parent is None and all(nodes[x].hidden for x in (a_parent, b2, b1))
    assert nodes[b1].children == [b2] and nodes[a_parent].children == [n["a"]] and not nodes[n["a"]].hidden
    assert nodes[n["g"]].children == sorted([n["s"], n["h"]]) and nodes[n["h"]].hidden
    assert nodes[n["k"]].children == [n["k2"]] and nodes[n["v"]].parent is None
    assert len(nodes) == 10
    # a node is read without its parent: a missing parent is reported, not fatal
    os.rename(sr.file(n["k"]), os.path.join(sr.path, "elsewhere"))
    node = gc.read_node(sr.file(n["k2"]))
    assert node.parent == n["k"] and node.hidden and not node.foreign_parent
    c = collector(sr, n)
    nodes = c.scan()
    assert c._broken(nodes[n["k2"]], nodes) and n["k2"] not in c.find_garbage(nodes)


def test_garbage_is_hidden_subtrees_without_a_managed_record(tmp_path):
    sr, n = scenario(tmp_path)
    c = collector(sr, n)
    nodes = c.scan()
    garbage = c.find_garbage(nodes)
    assert set(garbage) == {n["h"], n["k"], n["k2"]}
    assert garbage.index(n["k2"]) < garbage.index(n["k"])            # leaves first
    # a hidden VHD with a managed record stays, and so does what it hangs from
    c2 = collector(sr, n)
    c2.protect.add(n["k2"])
    assert set(c2.find_garbage(c2.scan())) == {n["h"]}
    report = c.step()
    assert report["did"] == "garbage" and set(report["removed"]) == set(garbage)
    assert not any(os.path.exists(sr.file(x)) for x in garbage) and not gc.pending(sr.path)
    sr.check()


def test_an_unreadable_file_stops_the_collector(tmp_path):
    sr, n = scenario(tmp_path)
    with open(sr.file(u()), "wb") as f:
        f.write(b"not a vhd" * 100)
    c = collector(sr, n)
    report = c.run()
    assert report["steps"] == [] and len(report["unreadable"]) == 1
    assert os.path.exists(sr.file(n["k2"]))


def test_coalesce_moves_data_up_and_relinks_the_children(tmp_path):
    sr, n = scenario(tmp_path)
    before = sr.vhds()
    c = collector(sr, n, leaves=[])
    report = c.run()
    kinds = [s["did"] for s in report["steps"]]
    assert kinds == ["garbage", "coalesce", "coalesce"], report
    assert all(step["sectors"] > 0 for step in report["steps"][1:])
    assert report["steps"][-1]["children"] == [n["a"]]
    # no leaf-coalesce without leave: A and S are proposed
    assert sorted(report["leaf_candidates"]) == sorted([n["a"], n["s"]])
    after = sr.vhds()
    assert len(after) == len(before) - 5 and n["a"] in after and n["g"] in after
    nodes = c.scan()
    b1 = nodes[n["a"]].parent
    assert nodes[b1].parent is None and nodes[b1].children == [n["a"]]
    sr.check()
    # the relinked child names its new parent everywhere vhd-util and qemu look
    with vhd.open(sr.file(n["a"]), readonly=True) as h:
        assert h.parent == sr.file(b1) and h.parent_uuid == vhd.query(sr.file(b1))["uuid"]
    assert report["reclaimed"] > 0 and not os.path.exists(os.path.join(sr.path, gc.JOURNAL_DIR))


def test_busy_chains_are_not_coalesced_and_visible_parents_never_written(tmp_path):
    sr, n = scenario(tmp_path)
    c = collector(sr, n, leaves=[], busy=[n["a"]])
    report = c.run()
    assert [s["did"] for s in report["steps"]] == ["garbage"]
    assert report["leaf_candidates"] == [n["s"]]
    # a read-only snapshot made with type=single is a visible parent: nothing is merged into it
    sr2 = SR(tmp_path / "single")
    d = sr2.create()
    sr2.write(d, 0, pattern(5, MiB))
    base, _ = sr2.snapshot(d, keep_snapshot=False, hidden=False)
    sr2.write(d, 0, pattern(6, 4096))
    c2 = gc.Collector(sr2.path, protect=[d, base], leaves=[d], log=lambda m: None)
    assert c2.run()["steps"] == [] and sorted(sr2.vhds()) == sorted([d, base])
    sr2.check()


def test_leaf_coalesce_keeps_the_vdi_location(tmp_path):
    sr, n = scenario(tmp_path)
    c = collector(sr, n, leaves=[n["s"]])
    report = c.run()
    kinds = [s["did"] for s in report["steps"]]
    assert kinds == ["garbage", "coalesce", "coalesce", "leaf"]
    assert report["steps"][-1]["leaf"] == n["s"] and report["steps"][-1]["parent"] == n["g"]
    assert report["leaf_candidates"] == [n["a"]]
    assert not os.path.exists(sr.file(n["g"])) and not os.path.exists(sr.file(gc.OLD_PREFIX + n["s"]))
    with vhd.open(sr.file(n["s"]), readonly=True) as h:
        assert h.parent is None and not h.hidden
    sr.check()
    # then A, allowed now: one file per disk is left
    c = collector(sr, n)
    assert [s["did"] for s in c.run()["steps"]] == ["leaf"]
    assert sorted(sr.vhds()) == sorted([n["a"], n["s"], n["v"]])
    sr.check()


def test_relink_is_in_place_and_idempotent(tmp_path):
    sr = SR(tmp_path)
    a = sr.create()
    sr.write(a, 0, pattern(1, MiB))
    other = u()
    os.link(sr.file(a), os.path.join(sr.path, other + ".vhd"))   # the same disk under another name
    child = u()
    vhd.snapshot(sr.file(a), sr.file(child))
    size = os.path.getsize(sr.file(child))
    for _ in range(2):
        gc.relink(sr.file(child), sr.file(other))
        assert os.path.getsize(sr.file(child)) == size
        assert vhd.check(sr.file(child)) == []
        with vhd.open(sr.file(child), readonly=True) as h:
            assert h.parent == sr.file(other) and h.read(0, MiB) == pattern(1, MiB)
        assert gc.read_node(sr.file(child)).parent == other
    with pytest.raises(gc.GCError):
        gc.relink(sr.file(child), os.path.join(sr.path, "x" * 300 + ".vhd"))     # no room for a longer name
    with pytest.raises(gc.GCError):
        gc.relink(sr.file(a), sr.file(other))                                    # not differencing


def test_sr_folder_is_where_the_drivers_put_it(tmp_path, monkeypatch):
    data = str(tmp_path / "data")
    monkeypatch.setenv("XAPI_DATA_DIR", data)
    sr_uuid = u()
    for ty, cls, dc in (("ext", filesr.EXTSR, {}), ("ext", filesr.EXTSR, {"path": str(tmp_path / "e")}),
                        ("nfs", filesr.NFSSR, {"path": str(tmp_path / "n")}),
                        ("nfs", filesr.NFSSR, {"server": "s", "serverpath": "/x"})):
        from xapi.sm.driverlib import Request
        drv = cls(Request({"command": "sr_scan", "device_config": dc, "sr_uuid": sr_uuid}))
        assert gc.sr_folder(ty, dc, sr_uuid, data) == drv.path
    assert gc.sr_folder("iso", {"location": "/x"}, sr_uuid, data) is None


# -- crash safety ---------------------------------------------------------------------------------------
def _recover_and_check(sr, n):
    c = collector(sr, n)
    recovered = c.recover()
    assert not any("error" in r for r in recovered), recovered
    assert not gc.pending(sr.path)
    for loc in (n["a"], n["s"], n["v"]):                           # no disk lost, each reads as before
        assert os.path.exists(sr.file(loc)), loc
    sr.check()
    return recovered


def _finish_and_check(sr, n):
    report = collector(sr, n).run()
    assert report["pending"] is False and report["failed"] == {} and report["leaf_candidates"] == []
    assert sorted(sr.vhds()) == sorted([n["a"], n["s"], n["v"]])
    assert not os.path.exists(os.path.join(sr.path, gc.JOURNAL_DIR))
    sr.check()


def test_killed_at_every_crash_point_loses_nothing(tmp_path):
    rolled = set()
    point = 0
    while True:
        point += 1
        assert point < 100
        sr, n = scenario(tmp_path / f"p{point}")
        pid = os.fork()
        if pid == 0:                                                # the collector, killed at its n-th point
            try:
                fd = os.open(os.devnull, os.O_WRONLY)
                os.dup2(fd, 2)
                gc._crash_at, gc._points = point, 0
                collector(sr, n).run()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):                                    # past the last point: it finished
            assert os.WEXITSTATUS(status) == 0
            sr.check()
            assert sorted(sr.vhds()) == sorted([n["a"], n["s"], n["v"]])
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
        for r in _recover_and_check(sr, n):
            rolled.add((r["op"], r["result"]))
        _finish_and_check(sr, n)
    assert point > 20
    assert rolled == {("garbage", "rolled forward"), ("coalesce", "rolled back"), ("relink", "rolled forward"),
                      ("leaf", "rolled back"), ("leaf", "rolled forward")}


def test_killed_at_random_times_as_a_subprocess(tmp_path):
    sr, n = scenario(tmp_path)
    rng = random.Random(20240611)
    env = {**os.environ, "XAPI_GC_PAUSE": "0.03", "PYTHONPATH": ROOT}
    argv = [sys.executable, "-m", "xapi.sm.gc", "--sr-path", sr.path]
    for loc in (n["a"], n["s"], n["v"]):
        argv += ["--protect", loc, "--leaf", loc]
    outcomes, mid_step = [], 0
    for _ in range(6):                                              # bounded rounds
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(0.05, 0.5))
        proc.kill()
        out, _ = proc.communicate()
        outcomes.append(proc.returncode)
        mid_step += bool(_recover_and_check(sr, n))                 # killed inside a journalled step
        if proc.returncode == 0:
            assert json.loads(out)["pending"] is False
    # and a run to the end
    p = subprocess.run(argv, capture_output=True, text=True, env={**env, "XAPI_GC_PAUSE": "0"}, timeout=60)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["pending"] is False and report["unreadable"] == {}
    _finish_and_check(sr, n)
    assert -signal.SIGKILL in outcomes and mid_step >= 1, (outcomes, mid_step)


def test_a_damaged_journal_stops_everything_but_is_kept(tmp_path):
    sr, n = scenario(tmp_path)
    os.makedirs(os.path.join(sr.path, gc.JOURNAL_DIR))
    with open(os.path.join(sr.path, gc.JOURNAL_DIR, "x"), "w") as f:
        f.write("{not json")
    c = collector(sr, n)
    report = c.run()
    assert report["steps"] == [] and report["pending"] is True
    assert report["recovered"][0]["error"]
    assert os.path.exists(sr.file(n["k2"]))
