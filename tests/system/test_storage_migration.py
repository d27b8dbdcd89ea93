"""Storage motion in a 2-host `xapi sim` pool through the XenAPI SDK: VDI.pool_migrate and
VM.migrate_send move a running VM's disk to another SR while the simulated guest writes to it
(VM other_config sim_disk_writer), every write mirrored while the base copies; afterwards the disk,
read by qemu-img, holds exactly the base plus every write the guest logged. A cancelled migration
leaves the VM on its disk with nothing left behind; xapi's checks and errors."""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from tests import pool as _pool
from tests.fixtures import own_pool
from tests.helpers import MIB, eventually, failure, new_vdi, raw_vdi, vbd_record, xenopsd_reply, xs
from tests.system.pool_vms import hosts_by_address, new_vm, wait_task
from xapi.sm import sim_disk_writer

QEMU_IMG = shutil.which("qemu-img")
SIZE = 32 * MIB
BLOCK_DELAY = 0.04          # the mirror's base copy takes ~0.6 s: the writer (every 2 ms) overlaps it

sim = own_pool(2, env={"XAPI_SIM_MIRROR_BLOCK_DELAY": str(BLOCK_DELAY)})


def base_data() -> bytes:
    """What the disk holds before the guest writes: a distinct byte pattern per 64 KiB."""
    chunk = 64 << 10
    return b"".join(bytes([(i * 7 + 1) & 0xFF]) * chunk for i in range(SIZE // chunk))


def local_sr(x, host):
    return next(s for s in x.SR.get_all() if x.SR.get_type(s) == "ext"
                and any(x.PBD.get_host(p) == host for p in x.SR.get_PBDs(s)))


def nfs_sr(x):
    return next(s for s in x.SR.get_all() if x.SR.get_type(s) == "nfs")


def vhd_file(sim, x, vdi) -> str:
    name = x.VDI.get_location(vdi) + ".vhd"
    for root, _, files in os.walk(sim.data_dir):
        if name in files:
            return os.path.join(root, name)
    raise AssertionError(f"no file {name}")


def vhd_files(folder: str) -> set[str]:
    return {os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.endswith(".vhd")}


def import_raw(sim, vdi, data: bytes) -> None:
    host = sim.coordinator
    session = host.session()
    try:
        raw_vdi(host, session, "import_raw_vdi", vdi, data, timeout=30)
    finally:
        session.xenapi.session.logout()


def disk_vbd(vm, vdi) -> dict:
    """The VM's boot disk, not unpluggable."""
    return {**vbd_record(vm, vdi), "unpluggable": False}


def network_to(x, host):
    """A network with a PIF on `host` (what migrate_receive is given)."""
    return next(n for n in x.network.get_all() if any(x.PIF.get_host(p) == host for p in x.network.get_PIFs(n)))


def writer_vm(sim, x, host, sr, name):
    """A VM with the disk writer, its disk filled with base_data(), started on `host`."""
    vm = new_vm(x, name, memory=64 * MIB)
    x.VM.set_other_config(vm, {"sim_disk_writer": "true", "sim_disk_writer_ms": "2"})
    vdi = new_vdi(x, sr, SIZE, f"{name} disk")
    import_raw(sim, vdi, base_data())
    vbd = x.VBD.create(disk_vbd(vm, vdi))
    x.VM.start_on(vm, host, False, False)
    return vm, vdi, vbd


def datapaths(sim, prefix: str) -> list[str]:
    """The datapaths starting with `prefix` the hosts' storage access layers hold (their state files)."""
    out = []
    for host in sim.hosts:
        path = os.path.join(host.data_dir, "storage-access.json")
        if os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            out += [dp for e in state["vdis"].values() for dp in e.get("dps", {}) if dp.startswith(prefix)]
    return out


def mirror_datapaths(sim) -> list[str]:
    return datapaths(sim, "mirror/")


def host_log(host, x, vm) -> list[int]:
    """The sequence numbers of the writes the guest made while its datapath was on `host`."""
    path = os.path.join(host.data_dir, "sim-disk-writer", x.VM.get_uuid(vm) + ".log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line.split()[0]) for line in f if line.strip()]


def writes(sim, x, vm) -> list[tuple[int, int, int, int]]:
    """The guest's writes, (seq, offset, length, mirrored), from the logs of every host it ran on."""
    out = []
    for host in sim.hosts:
        path = os.path.join(host.data_dir, "sim-disk-writer", x.VM.get_uuid(vm) + ".log")
        if os.path.exists(path):
            with open(path) as f:
                out += [tuple(int(v) for v in line.split()) for line in f if line.strip()]
    return sorted(out)


def expected(log) -> bytes:
    disk = bytearray(base_data())
    seqs = [w[0] for w in log]
    assert len(set(seqs)) == len(seqs)              # one writer at a time, no write twice
    for seq, off, length, _ in log:
        disk[off:off + length] = sim_disk_writer.pattern(seq)
    return bytes(disk)


def disk_bytes(path: str) -> bytes:
    if QEMU_IMG:
        out = path + ".raw"
        try:
            info = subprocess.run([QEMU_IMG, "info", "-f", "vpc", path], check=True, capture_output=True,
                                  text=True).stdout
            assert "file format: vpc" in info
            subprocess.run([QEMU_IMG, "convert", "-f", "vpc", "-O", "raw", path, out], check=True)
            with open(out, "rb") as f:
                return f.read()[:SIZE]
        finally:
            if os.path.exists(out):
                os.unlink(out)
    from xapi.sm import vhd
    with vhd.open(path, readonly=True) as h:
        return h.read(0, SIZE)


def backend_params(host, domid: str) -> str | None:
    """The disk backend's params of the VM's first disk (xvda, devid 51712), read with Debian's
    xenstore-read; None when xenstore-utils is missing."""
    if not shutil.which("xenstore-read"):
        return None
    return xs(host, "xenstore-read", f"/local/domain/0/backend/vbd/{domid}/51712/params").stdout.strip()


def test_pool_migrate_local_to_nfs_and_back_while_writing(sim, x):
    h1, _ = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm")
    time.sleep(0.2)

    moved = x.VDI.pool_migrate(vdi, nfs, {})
    assert moved != vdi and x.VBD.get_VDI(vbd) == moved and x.VDI.get_SR(moved) == nfs
    assert failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"          # the source is gone
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_current_operations(vm) == {}
    assert int(x.VDI.get_virtual_size(moved)) == SIZE
    params = backend_params(sim.coordinator, x.VM.get_domid(vm))
    assert params is None or params == vhd_file(sim, x, moved)      # the domain's disk switched too
    during_first = [w for w in writes(sim, x, vm) if w[3]]
    assert during_first, "no write was mirrored during the migration"
    time.sleep(0.1)

    back = x.VDI.pool_migrate(moved, local, {})
    assert x.VBD.get_VDI(vbd) == back and x.VDI.get_SR(back) == local
    assert failure(x.VDI.get_record, moved)[0] == "HANDLE_INVALID"
    assert mirror_datapaths(sim) == []
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)                       # the writer stops with the datapath

    log = writes(sim, x, vm)
    assert len([w for w in log if w[3]]) > len(during_first)      # the second one mirrored too
    assert disk_bytes(vhd_file(sim, x, back)) == expected(log)
    assert [v for v in x.SR.get_VDIs(nfs) if x.VDI.get_name_label(v) == "sxm disk"] == []
    x.VM.destroy(vm)
    x.VDI.destroy(back)


def test_cancelled_pool_migrate_leaves_the_vm_on_its_disk(sim, x):
    h1, _ = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm-cancel")
    nfs_vdis = set(x.SR.get_VDIs(nfs))
    nfs_files = vhd_files(os.path.join(sim.data_dir, "nfs"))
    task = x.Async.VDI.pool_migrate(vdi, nfs, {})
    deadline = time.monotonic() + 10
    while float(x.task.get_progress(task)) < 0.2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert x.task.get_status(task) == "pending"
    x.task.cancel(task)
    rec = wait_task(x, task)
    assert rec["status"] == "cancelled" and rec["error_info"][0] == "TASK_CANCELLED"
    assert x.VBD.get_VDI(vbd) == vdi and x.VDI.get_SR(vdi) == local
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_current_operations(vm) == {}
    assert set(x.SR.get_VDIs(nfs)) == nfs_vdis                       # the mirror's VDI is gone
    assert mirror_datapaths(sim) == []                                # and its datapath
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)
    log = writes(sim, x, vm)
    assert any(w[3] for w in log)                # it was mirroring when cancelled
    assert disk_bytes(vhd_file(sim, x, vdi)) == expected(log)        # the source got every write
    assert vhd_files(os.path.join(sim.data_dir, "nfs")) == nfs_files     # nor its file
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_guest_halting_during_the_mirror(sim, x):
    """The guest powers itself off while its disk is mirrored. Either the migration ends first (as
    in xapi, shutdown commutes with storage migration: the halted VM's disk is the new VDI) or the
    datapath closes under the mirror (MIRROR_FAILED [vdi], the new VDI removed): whichever, the
    VM's disk holds every write and nothing is left behind."""
    h1, _ = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm-halt")
    nfs_vdis = set(x.SR.get_VDIs(nfs))
    task = x.Async.VDI.pool_migrate(vdi, nfs, {})
    deadline = time.monotonic() + 10
    while float(x.task.get_progress(task)) < 0.2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert xenopsd_reply(sim.coordinator, "DEBUG.trigger", x.VM.get_uuid(vm), "poweroff").get("error") is None
    rec = wait_task(x, task)
    if rec["status"] == "success":
        disk = x.VBD.get_VDI(vbd)
        assert x.VDI.get_SR(disk) == nfs and failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    else:
        assert rec["error_info"] == ["MIRROR_FAILED", vdi]
        disk = vdi
        assert x.VBD.get_VDI(vbd) == vdi and set(x.SR.get_VDIs(nfs)) == nfs_vdis
    assert eventually(lambda: x.VM.get_power_state(vm) == "Halted")
    assert eventually(lambda: mirror_datapaths(sim) == [] and datapaths(sim, f"vbd/{x.VM.get_uuid(vm)}/") == [])
    assert disk_bytes(vhd_file(sim, x, disk)) == expected(writes(sim, x, vm))
    x.VM.destroy(vm)
    x.VDI.destroy(disk)


def test_migrate_send_moves_disk_and_domain_to_the_other_host(sim, x):
    h1, h2 = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm-send")
    net = network_to(x, h2)
    dest = x.host.migrate_receive(h2, net, {})
    assert set(dest) >= {"SM", "host", "xenops", "session_id", "master"} and dest["host"] == h2
    assert dest["xenops"].endswith("/services/xenops?session_id=" + dest["session_id"])
    time.sleep(0.1)

    # without the map, the local disk can't be seen from h2
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {}, {}, {}, {}) == ["VDI_NOT_IN_MAP", vdi]
    x.VM.assert_can_migrate(vm, dest, True, {vdi: nfs}, {}, {}, {})
    assert x.VM.migrate_send(vm, dest, True, {vdi: nfs}, {}, {}) == vm
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["resident_on"] == h2
    moved = x.VBD.get_VDI(vbd)
    assert moved != vdi and x.VDI.get_SR(moved) == nfs
    assert failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    first = len([w for w in writes(sim, x, vm) if w[3]])
    assert first
    time.sleep(0.1)

    # and back: the VM to h1, its disk onto h1's local SR, still writing
    back_dest = x.host.migrate_receive(h1, net, {})
    x.VM.migrate_send(vm, back_dest, True, {moved: local}, {}, {})
    assert x.VM.get_resident_on(vm) == h1 and x.VM.get_power_state(vm) == "Running"
    back = x.VBD.get_VDI(vbd)
    assert x.VDI.get_SR(back) == local
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)
    log = writes(sim, x, vm)
    assert len([w for w in log if w[3]]) > first
    assert disk_bytes(vhd_file(sim, x, back)) == expected(log)
    x.VM.destroy(vm)
    x.VDI.destroy(back)


def test_checks(sim, x):
    h1, h2 = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vdi = new_vdi(x, local, 4 * MIB, "loose")
    assert failure(x.VDI.pool_migrate, vdi, nfs, {}) == ["VDI_NEEDS_VM_FOR_MIGRATE", vdi]
    vm = new_vm(x, "halted", memory=64 * MIB)
    x.VBD.create(disk_vbd(vm, vdi))
    assert failure(x.VDI.pool_migrate, vdi, nfs, {}) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert failure(x.VDI.pool_migrate, vdi, "OpaqueRef:nope", {})[:2] == ["HANDLE_INVALID", "SR"]
    x.VM.start_on(vm, h1, False, False)
    net = network_to(x, h2)
    assert failure(x.host.migrate_receive, "OpaqueRef:nope", net, {})[:2] == ["HANDLE_INVALID", "host"]
    dest = x.host.migrate_receive(h2, net, {})
    assert failure(x.VM.migrate_send, vm, dest, True, {}, {}, {}) == ["VDI_NOT_IN_MAP", vdi]
    assert x.VM.get_resident_on(vm) == h1
    x.VM.checkpoint(vm, "cp")
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {vdi: nfs}, {}, {}, {}) == ["VM_HAS_CHECKPOINT", vm]
    x.VM.hard_shutdown(vm)


def test_migrate_send_local_sr_to_local_sr_across_hosts(sim, x):
    """A VM on the member with its disk on the member's local SR goes to the coordinator with its
    disk onto the coordinator's local SR while it writes: neither host sees the other's SR, so the
    member mirrors every write to the coordinator until the VM and its datapath move."""
    h1, h2 = hosts_by_address(x)
    local1, local2 = local_sr(x, h1), local_sr(x, h2)
    vm, vdi, vbd = writer_vm(sim, x, h2, local2, "sxm-local")
    net = network_to(x, h1)
    dest = x.host.migrate_receive(h1, net, {})
    time.sleep(0.1)
    assert failure(x.VM.migrate_send, vm, dest, True, {vdi: local2}, {}, {}) == ["VM_REQUIRES_SR", vm, local2]
    x.VM.migrate_send(vm, dest, True, {vdi: local1}, {}, {})
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["resident_on"] == h1
    moved = x.VBD.get_VDI(vbd)
    assert x.VDI.get_SR(moved) == local1 and failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    assert mirror_datapaths(sim) == []
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)
    assert datapaths(sim, f"vbd/{x.VM.get_uuid(vm)}/") == []
    log = writes(sim, x, vm)
    assert any(w[3] for w in log)
    on_member, on_coordinator = (host_log(host, x, vm) for host in (sim.hosts[1], sim.hosts[0]))
    assert on_member and on_coordinator and max(on_member) < min(on_coordinator)   # it wrote there, then here
    assert disk_bytes(vhd_file(sim, x, moved)) == expected(log)
    x.VM.destroy(vm)
    x.VDI.destroy(moved)


def test_migrate_send_of_a_halted_vm_copies_its_disk(sim, x):
    h1, h2 = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm-halted")
    x.VM.hard_shutdown(vm)
    net = network_to(x, h2)
    dest = x.host.migrate_receive(h2, net, {})
    assert "migrate_send" in x.VM.get_allowed_operations(vm)
    assert x.VM.migrate_send(vm, dest, False, {vdi: nfs}, {}, {}) == vm
    moved = x.VBD.get_VDI(vbd)
    assert moved != vdi and x.VDI.get_SR(moved) == nfs and x.VM.get_power_state(vm) == "Halted"
    assert failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    assert disk_bytes(vhd_file(sim, x, moved)) == expected(writes(sim, x, vm))
    x.VM.destroy(vm)
    x.VDI.destroy(moved)


JS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


@pytest.mark.skipif(not shutil.which("node") or not os.path.isdir(os.path.join(JS, "node_modules", "xen-api")),
                    reason="needs node and tests/js/node_modules (make test runs tools/node-deps.sh)")
def test_xen_orchestra_storage_motion(sim, x):
    """Xen Orchestra's connector: migrate_receive's token passed back to an Async VM.migrate_send that
    moves the VM to the member and its disk to nfs, then an Async VDI.pool_migrate back to the
    coordinator's local SR, which the member can't see: the disk moves and the VM goes to the
    coordinator with it (xapi's choice of a host that sees the SR)."""
    h1, h2 = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm-xo")
    net = network_to(x, h2)
    host = sim.coordinator
    p = subprocess.run(["node", os.path.join(JS, "xo_migrate.mjs"), host.url, "root", host.password, vm, vbd,
                        h2, net, nfs, local], cwd=JS, capture_output=True, text=True, timeout=90)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["event"] == "done", (p.stdout, p.stderr[-2000:])
    done = lines[-1]
    assert set(done["token"]) >= {"SM", "host", "xenops", "session_id", "master"}
    assert done["sent"] == vm and done["residentAfterSend"] == h2
    assert done["vdi"] == x.VBD.get_VDI(vbd) != done["moved"] and x.VDI.get_SR(done["vdi"]) == local
    assert failure(x.VDI.get_record, done["moved"])[0] == "HANDLE_INVALID"         # the nfs copy went
    assert x.VM.get_resident_on(vm) == h1 and x.VM.get_power_state(vm) == "Running"
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)
    assert disk_bytes(vhd_file(sim, x, done["vdi"])) == expected(writes(sim, x, vm))
    x.VM.destroy(vm)
    x.VDI.destroy(done["vdi"])


@pytest.mark.skipif(not shutil.which("node") or not os.path.isdir(os.path.join(JS, "node_modules", "xen-api")),
                    reason="needs node and tests/js/node_modules (make test runs tools/node-deps.sh)")
def test_xen_orchestra_assert_can_migrate_with_six_parameters(sim, x):
    """Xen Orchestra's migrateVm calls VM.assert_can_migrate without vgpu_map (xapi defaults it to {}):
    the check runs (VDI_NOT_IN_MAP for a local disk left out of the map) and passes with the map."""
    h1, h2 = hosts_by_address(x)
    local, nfs = local_sr(x, h1), nfs_sr(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local, "sxm-xo-assert")
    net = network_to(x, h2)
    host = sim.coordinator
    try:
        p = subprocess.run(["node", os.path.join(JS, "xo_assert_can_migrate.mjs"), host.url, "root", host.password,
                            vm, vdi, h2, net, nfs], cwd=JS, capture_output=True, text=True, timeout=60)
        lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        assert lines and lines[-1]["event"] == "done", (p.stdout, p.stderr[-2000:])
        assert lines[-1]["without"] == {"code": "VDI_NOT_IN_MAP", "params": [vdi]}
        assert lines[-1]["with"] in ("", None)
        assert x.VM.get_resident_on(vm) == h1 and x.VBD.get_VDI(vbd) == vdi     # a check moves nothing
    finally:
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
        x.VDI.destroy(vdi)


@pytest.fixture
def small_sr(sim, x):
    """An ext SR on the coordinator in a 12 MiB tmpfs (a real full disk for the mirror to hit)."""
    folder = os.path.join(sim.data_dir, "small-sr")
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", folder],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    h1, _ = hosts_by_address(x)
    sr = x.SR.create(h1, {"path": folder}, "0", "small", "a 12 MiB SR", "ext", "user", False, {})
    yield sr
    try:
        for pbd in x.SR.get_PBDs(sr):
            x.PBD.unplug(pbd)
        x.SR.forget(sr)
    finally:
        subprocess.run(["umount", "-l", folder], check=False)


def test_mirror_onto_a_full_sr_fails_cleanly(sim, x, small_sr):
    """The destination fills up during the copy: MIRROR_FAILED [vdi] (as xapi), the guest's writes
    never failed, the new VDI is removed, the VM stays on its disk."""
    h1, _ = hosts_by_address(x)
    vm, vdi, vbd = writer_vm(sim, x, h1, local_sr(x, h1), "sxm-full")
    assert failure(x.VDI.pool_migrate, vdi, small_sr, {}) == ["MIRROR_FAILED", vdi]
    assert x.VBD.get_VDI(vbd) == vdi and x.VM.get_power_state(vm) == "Running"
    assert x.SR.get_VDIs(small_sr) == [] and mirror_datapaths(sim) == []
    assert x.VM.get_current_operations(vm) == {}
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)
    log = writes(sim, x, vm)
    assert disk_bytes(vhd_file(sim, x, vdi)) == expected(log)
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_mirror_onto_a_full_sr_on_another_host_fails_cleanly(sim, x, small_sr):
    """The member mirrors over its stream into the coordinator's SR, which fills up: the coordinator
    answers VDI_IO_ERROR on the stream, the migration fails with MIRROR_FAILED [vdi], the VM stays on
    the member on its disk, which holds every write, and no mirror datapath is left on either host."""
    h1, h2 = hosts_by_address(x)
    vm, vdi, vbd = writer_vm(sim, x, h2, local_sr(x, h2), "sxm-full-remote")
    assert failure(x.VDI.pool_migrate, vdi, small_sr, {}) == ["MIRROR_FAILED", vdi]
    assert x.VBD.get_VDI(vbd) == vdi and x.VM.get_resident_on(vm) == h2
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_current_operations(vm) == {}
    assert x.SR.get_VDIs(small_sr) == [] and mirror_datapaths(sim) == []
    assert "VDI_IO_ERROR" in sim.hosts[1].log()          # the stream's error, as the member saw it
    time.sleep(0.1)
    x.VM.hard_shutdown(vm)
    log = writes(sim, x, vm)
    assert disk_bytes(vhd_file(sim, x, vdi)) == expected(log)
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def _connect_stream(host, secret: str | None, tls: bool = True, dp: str = "mirror%2Fvbd%2Fnone%2F0") -> bytes:
    """The answer's head to a CONNECT of the mirror stream endpoint."""
    sock = socket.create_connection((host.address, host.https_port if tls else host.http_port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    with sock:
        extra = f"X-Pool-Secret: {secret}\r\n" if secret is not None else ""
        sock.sendall(f"CONNECT /services/SM/mirror?dp={dp} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
        return data.split(b"\r\n", 1)[0]


def test_mirror_stream_takes_only_pool_hosts(sim):
    """The stream endpoint is the pool's own: plain HTTP, no secret or a wrong one get 403; with the
    pool secret, a datapath with no mirror destination open gets 404 (nothing is written)."""
    from xapi.pool import secret as pool_secret
    host = sim.coordinator
    with open(pool_secret.path(host.data_dir)) as f:
        good = f.read().strip()
    assert b" 403 " in _connect_stream(host, good, tls=False)
    assert b" 403 " in _connect_stream(host, None)
    assert b" 403 " in _connect_stream(host, good + "x")
    assert b" 404 " in _connect_stream(host, good)


def no_descriptor_errors(pool) -> None:
    """No daemon of the pool logged a descriptor closed under its user (EBADF) or taken by another
    file meanwhile (ESPIPE on a disk's pread/pwrite once a driver's pipe got its number: uvloop's
    double close of the drivers' pipes, MagicStack/uvloop#763, seen as a mirror's 'Illegal seek')."""
    for host in pool.hosts:
        log = host.log()
        for sign in ("[Errno 9] Bad file descriptor", "[Errno 29] Illegal seek"):
            at = log.find(sign)
            assert at < 0, log[max(0, at - 3000):at + 200]


def test_no_daemon_met_a_descriptor_closed_under_it(sim):
    """After the storage motion above (last of the 2-host pool's tests)."""
    no_descriptor_errors(sim)


@pytest.fixture(scope="module")
def sim3(sim):
    """A 3-host pool (after the 2-host one's tests; one pool at a time on the shared machine)."""
    _pool.cleanup(sim)
    p = _pool.start(3, env={"XAPI_SIM_MIRROR_BLOCK_DELAY": str(BLOCK_DELAY)})
    yield p
    _pool.cleanup(p)


def test_migrate_send_member_local_sr_to_member_local_sr(sim3):
    """Between two members, each with its local SR: the coordinator orchestrates, member 2 mirrors
    the running guest's writes straight to member 3, then the VM and its datapath move there."""
    s = sim3.coordinator.session()
    x = s.xenapi
    try:
        _, h2, h3 = hosts_by_address(x)
        local2, local3 = local_sr(x, h2), local_sr(x, h3)
        vm, vdi, vbd = writer_vm(sim3, x, h2, local2, "sxm-members")
        net = network_to(x, h3)
        time.sleep(0.1)
        task = x.Async.VM.migrate_send(vm, x.host.migrate_receive(h3, net, {}), True, {vdi: local3}, {}, {})
        seen = set()
        while x.task.get_status(task) == "pending":
            seen.add(float(x.task.get_progress(task)))
            time.sleep(0.05)
        assert wait_task(x, task)["status"] == "success"
        assert any(0 < p < 1 for p in seen), seen          # the member's copy reported its progress
        assert x.VM.get_resident_on(vm) == h3 and x.VM.get_power_state(vm) == "Running"
        moved = x.VBD.get_VDI(vbd)
        assert x.VDI.get_SR(moved) == local3 and failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
        assert mirror_datapaths(sim3) == []
        time.sleep(0.1)
        x.VM.hard_shutdown(vm)
        assert datapaths(sim3, f"vbd/{x.VM.get_uuid(vm)}/") == []          # released where they moved
        log = writes(sim3, x, vm)
        assert any(w[3] for w in log)
        on2, on3 = host_log(sim3.hosts[1], x, vm), host_log(sim3.hosts[2], x, vm)
        assert on2 and on3 and max(on2) < min(on3) and not host_log(sim3.hosts[0], x, vm)
        assert disk_bytes(vhd_file(sim3, x, moved)) == expected(log)
        x.VM.destroy(vm)
        x.VDI.destroy(moved)
    finally:
        s.xenapi.session.logout()


def test_cancelled_migrate_send_between_members_leaves_nothing(sim3):
    """Cancelled while member 2 mirrors into member 3: the VM stays on member 2 on its disk, the new
    VDI and both ends' mirror datapaths are gone, every write is on the source disk."""
    s = sim3.coordinator.session()
    x = s.xenapi
    try:
        _, h2, h3 = hosts_by_address(x)
        local2, local3 = local_sr(x, h2), local_sr(x, h3)
        vm, vdi, vbd = writer_vm(sim3, x, h2, local2, "sxm-members-cancel")
        net = network_to(x, h3)
        before = set(x.SR.get_VDIs(local3))
        task = x.Async.VM.migrate_send(vm, x.host.migrate_receive(h3, net, {}), True, {vdi: local3}, {}, {})
        deadline = time.monotonic() + 20
        while float(x.task.get_progress(task)) < 0.2 and time.monotonic() < deadline:
            time.sleep(0.02)
        x.task.cancel(task)
        rec = wait_task(x, task)
        assert rec["status"] == "cancelled", rec["error_info"]
        assert x.VM.get_resident_on(vm) == h2 and x.VM.get_power_state(vm) == "Running"
        assert x.VBD.get_VDI(vbd) == vdi and set(x.SR.get_VDIs(local3)) == before
        assert mirror_datapaths(sim3) == [] and x.VM.get_current_operations(vm) == {}
        time.sleep(0.1)
        x.VM.hard_shutdown(vm)
        log = writes(sim3, x, vm)
        assert any(w[3] for w in log)
        assert disk_bytes(vhd_file(sim3, x, vdi)) == expected(log)
        x.VM.destroy(vm)
        x.VDI.destroy(vdi)
    finally:
        s.xenapi.session.logout()


def test_no_member_met_a_descriptor_closed_under_it(sim3):
    """After the storage motion between members (last of the 3-host pool's tests)."""
    no_descriptor_errors(sim3)
