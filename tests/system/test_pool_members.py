"""A member's own work in a 2-host `xapi sim` pool, through the XenAPI SDK: a member restarted (here
on a bigger simulated machine) tells the coordinator its refreshed host record, memory and control
domain, is reached again at once (no stale kept connection), and ends with its PBDs plugged by its own storage, whose drivers' writes (SR other-config
"dirty", sizes, VDIs found by the scan) reach the pool database through the coordinator."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid

import XenAPI

from tests.fixtures import own_pool
from tests.helpers import MIB, eventually, failure, raw_vdi
from tests.system.pool_vms import hosts_by_address, new_vm, wait_task


sim = own_pool(2)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"      # reaped later by the supervisor
    except OSError:
        return True


def restart(sim, host, *extra: str) -> None:
    """Stops a member's daemon (SIGTERM) and starts it again with the same command line + `extra`."""
    pid = host.pid
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    host.kill(signal.SIGTERM)
    assert eventually(lambda: _gone(pid), 20)
    env = dict(os.environ, XAPI_ROOT_PASSWORD=host.password)
    with open(os.path.join(host.data_dir, "daemon.log"), "ab") as log:
        sim.restarted.append(subprocess.Popen([*cmd, *(a.encode() for a in extra)], cwd=cwd, env=env,
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))


def test_restarted_member_refreshes_its_rows_and_plugs_its_pbds(sim, x):
    h1, h2 = hosts_by_address(x)
    member = sim.hosts[1]
    local_sr = next(x.PBD.get_SR(p) for p in x.host.get_PBDs(h2) if not x.SR.get_shared(x.PBD.get_SR(p)))
    # a disk file the database doesn't know, left in the member's local SR: the member's scan after
    # plugging (an SR its driver attaches as SR master is "dirty") introduces it through the coordinator
    found = str(uuid.uuid4())
    _copy_a_disk(x, h1, sim.coordinator, member, local_sr, found)
    # several calls at once to the member leave several kept connections to it (all stale after
    # its restart: the first failure must drop them all, not only the one it was on)
    vms = [new_vm(x, f"busy{i}", memory=64 * MIB) for i in range(8)]
    for t in [x.Async.VM.start_on(vm, h2, False, False) for vm in vms]:
        assert wait_task(x, t)["status"] == "success"
    for t in [x.Async.VM.hard_shutdown(vm) for vm in vms]:
        assert wait_task(x, t)["status"] == "success"
    metrics = x.host.get_metrics(h2)
    before = int(x.host_metrics.get_memory_total(metrics))
    offset = len(member.log())
    restart(sim, member, "--sim-config=memory_mib=20480,cpus=6,dom0_memory_mib=1536")

    def plugged():
        try:
            return all(x.PBD.get_currently_attached(p) for p in x.host.get_PBDs(h2)) \
                and x.host.get_cpu_info(h2)["cpu_count"] == "6"
        except XenAPI.Failure:
            return False
    assert eventually(plugged, 25)
    assert int(x.host_metrics.get_memory_total(metrics)) == 20480 * MIB != before
    dom0 = x.host.get_control_domain(h2)
    assert x.VM.get_resident_on(dom0) == h2 and x.VM.get_is_control_domain(dom0)
    assert int(x.VM.get_memory_static_max(dom0)) == 1536 * MIB
    log = member.log()[offset:]
    assert "HOST_IS_SLAVE" not in log and "could not plug" not in log
    # the local SR was attached by the member's driver as its SR master, and scanned
    vdi = x.VDI.get_by_uuid(found)
    assert x.VDI.get_SR(vdi) == local_sr and int(x.VDI.get_virtual_size(vdi)) == 4 * MIB
    assert "dirty" not in x.SR.get_other_config(local_sr)
    assert int(x.SR.get_physical_utilisation(local_sr)) >= int(x.VDI.get_physical_utilisation(vdi)) > 0
    # the coordinator reaches the restarted member at the first try
    x.VM.start_on(vms[0], h2, False, False)
    assert x.VM.get_resident_on(vms[0]) == h2
    x.VM.hard_shutdown(vms[0])


def _copy_a_disk(x, h1, coordinator, member, member_sr, new_uuid) -> None:
    """A 4 MiB disk made on the coordinator's local SR, copied as a file into the member's SR folder."""
    sr = next(x.PBD.get_SR(p) for p in x.host.get_PBDs(h1) if not x.SR.get_shared(x.PBD.get_SR(p)))
    vdi = x.VDI.create({"name_label": "model", "name_description": "", "SR": sr, "virtual_size": str(4 * MIB),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {},
                        "xenstore_data": {}, "sm_config": {}, "tags": []})
    src = os.path.join(coordinator.data_dir, "sr", x.SR.get_uuid(sr), x.VDI.get_location(vdi) + ".vhd")
    dst = os.path.join(member.data_dir, "sr", x.SR.get_uuid(member_sr), new_uuid + ".vhd")
    shutil.copyfile(src, dst)
    x.VDI.destroy(vdi)


def _disk(x, sr, name, size=4 * MIB):
    return x.VDI.create({"name_label": name, "name_description": "", "SR": sr, "virtual_size": str(size),
                         "type": "user", "sharable": False, "read_only": False, "other_config": {},
                         "xenstore_data": {}, "sm_config": {}, "tags": []})


def _vbd(x, vm, vdi, device="0"):
    return x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": device, "bootable": device == "0", "mode": "RW",
                         "type": "Disk", "unpluggable": False, "empty": False, "other_config": {},
                         "qos_algorithm_type": "", "qos_algorithm_params": {}})


def _held(member, vdi_uuid) -> bool:
    """Whether a host's storage access layer holds the VDI (its state file; none yet: nothing held)."""
    try:
        with open(os.path.join(member.data_dir, "storage-access.json")) as f:
            return vdi_uuid in json.load(f)["vdis"]
    except FileNotFoundError:
        return False


def test_vm_on_a_members_local_disk_runs_there_with_its_storage(sim, x):
    h1, h2 = hosts_by_address(x)
    member = sim.hosts[1]
    local_sr = next(x.PBD.get_SR(p) for p in x.host.get_PBDs(h2) if not x.SR.get_shared(x.PBD.get_SR(p)))
    vdi = _disk(x, local_sr, "member-local")       # made by the member's driver, introduced via the coordinator
    uuid_ = x.VDI.get_uuid(vdi)
    local = member.local_session()
    data = b"written on host 2".ljust(MIB, b"\0")
    raw_vdi(member, local, "import_raw_vdi", vdi, data)
    vm = new_vm(x, "on-member-disk", memory=64 * MIB)
    vbd = _vbd(x, vm, vdi)
    assert failure(x.VM.start_on, vm, h1, False, False) == ["VM_REQUIRES_SR", vm, local_sr]
    x.VM.start(vm, False, False)                   # placement: the only host that sees the SR
    assert x.VM.get_resident_on(vm) == h2 and x.VBD.get_currently_attached(vbd)
    assert x.VDI.get_sm_config(vdi).get(f"host_{h2}") == "RW"     # activated RW by the member's driver
    assert _held(member, uuid_) and not _held(sim.coordinator, uuid_)
    assert "content_id" not in x.VDI.get_other_config(vdi)         # dropped by a RW activation
    x.VM.hard_shutdown(vm)
    assert not x.VBD.get_currently_attached(vbd) and not _held(member, uuid_)
    assert f"host_{h2}" not in x.VDI.get_sm_config(vdi)
    assert x.VDI.get_other_config(vdi).get("content_id")          # a fresh one once deactivated
    assert raw_vdi(member, local, "export_raw_vdi", vdi)[:MIB] == data
    x.VM.destroy(vm)
    path = os.path.join(member.data_dir, "sr", x.SR.get_uuid(local_sr), x.VDI.get_location(vdi) + ".vhd")
    x.VDI.destroy(vdi)                             # by the member's driver too
    assert not os.path.exists(path) and failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    x.SR.scan(local_sr)
    assert uuid_ not in [x.VDI.get_uuid(v) for v in x.SR.get_VDIs(local_sr)]


def test_vdi_in_use_across_hosts(sim, x):
    """A shared disk activated RW for a VM on the member cannot be activated for one on the coordinator."""
    h1, h2 = hosts_by_address(x)
    shared = next(s for s in x.SR.get_all() if x.SR.get_shared(s) and x.SR.get_type(s) == "nfs")
    vdi = _disk(x, shared, "shared-disk")
    a, b = new_vm(x, "user-a", memory=64 * MIB), new_vm(x, "user-b", memory=64 * MIB)
    _vbd(x, a, vdi)
    _vbd(x, b, vdi)
    x.VM.start_on(a, h2, False, False)
    assert x.VDI.get_sm_config(vdi).get(f"host_{h2}") == "RW"
    assert failure(x.VM.start_on, b, h1, False, False)[0] == "VDI_IN_USE"
    assert x.VM.get_power_state(b) == "Halted" and not _held(sim.coordinator, x.VDI.get_uuid(vdi))
    x.VM.hard_shutdown(a)
    x.VM.start_on(b, h1, False, False)             # released on host 2: free for host 1
    assert x.VDI.get_sm_config(vdi).get(f"host_{h1}") == "RW"
    x.VM.hard_shutdown(b)


def test_live_migration_moves_the_disks_between_the_hosts_storage(sim, x):
    """Attached by the destination's storage, released by the source's, activated on the destination
    (the sm-config host key follows); nothing held anywhere after the shutdown."""
    h1, h2 = hosts_by_address(x)
    hosts = {h1: sim.coordinator, h2: sim.hosts[1]}
    shared = next(s for s in x.SR.get_all() if x.SR.get_shared(s) and x.SR.get_type(s) == "nfs")
    vdi = _disk(x, shared, "migrating-disk")
    uuid_ = x.VDI.get_uuid(vdi)
    vm = new_vm(x, "migrating", memory=64 * MIB)
    _vbd(x, vm, vdi)
    x.VM.start_on(vm, h2, False, False)
    for src, dst in ((h2, h1), (h1, h2), (h2, h1)):
        assert _held(hosts[src], uuid_) and not _held(hosts[dst], uuid_)
        x.VM.pool_migrate(vm, dst, {"live": "true"})
        assert x.VM.get_resident_on(vm) == dst
        sm = x.VDI.get_sm_config(vdi)
        assert sm.get(f"host_{dst}") == "RW" and f"host_{src}" not in sm
        assert _held(hosts[dst], uuid_) and not _held(hosts[src], uuid_)
    x.VM.hard_shutdown(vm)
    assert not _held(sim.coordinator, uuid_) and not _held(sim.hosts[1], uuid_)
    assert not [k for k in x.VDI.get_sm_config(vdi) if k.startswith("host_")]


def test_suspend_and_resume_on_members(sim, x):
    """Suspend by the member's xenopsd with the image on an SR it sees; resume where the image and
    the disks are seen (VM_REQUIRES_SR elsewhere); resume_on another host."""
    h1, h2 = hosts_by_address(x)
    member = sim.hosts[1]
    shared = next(s for s in x.SR.get_all() if x.SR.get_shared(s) and x.SR.get_type(s) == "nfs")
    local2 = next(x.PBD.get_SR(p) for p in x.host.get_PBDs(h2) if not x.SR.get_shared(x.PBD.get_SR(p)))
    vdi = _disk(x, shared, "suspended-disk")
    uuid_ = x.VDI.get_uuid(vdi)
    vm = new_vm(x, "suspended", memory=64 * MIB)
    _vbd(x, vm, vdi)
    x.host.set_suspend_image_sr(h2, local2)
    try:
        x.VM.start_on(vm, h2, False, False)
        x.VM.suspend(vm)
        assert x.VM.get_power_state(vm) == "Suspended" and x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
        image = x.VM.get_suspend_VDI(vm)
        assert x.VDI.get_SR(image) == local2                   # the suspending host's own SR
        assert not _held(member, uuid_) and not _held(member, x.VDI.get_uuid(image))
        assert failure(x.VM.resume_on, vm, h1, False, False) == ["VM_REQUIRES_SR", vm, local2]
        x.VM.resume(vm, False, False)                          # placement: the host that sees it
        assert x.VM.get_power_state(vm) == "Running" and x.VM.get_resident_on(vm) == h2
        assert _held(member, uuid_) and failure(x.VDI.get_record, image)[0] == "HANDLE_INVALID"
        x.VM.set_suspend_SR(vm, shared)                        # an image both hosts see
        x.VM.suspend(vm)
        assert x.VDI.get_SR(x.VM.get_suspend_VDI(vm)) == shared
        x.VM.resume_on(vm, h1, False, False)
        assert x.VM.get_resident_on(vm) == h1 and x.VM.get_power_state(vm) == "Running"
        assert _held(sim.coordinator, uuid_) and not _held(member, uuid_)
        assert x.VDI.get_sm_config(vdi).get(f"host_{h1}") == "RW" and f"host_{h2}" not in x.VDI.get_sm_config(vdi)
        x.VM.hard_shutdown(vm)
        assert not _held(sim.coordinator, uuid_)
    finally:
        x.host.set_suspend_image_sr(h2, "OpaqueRef:NULL")
