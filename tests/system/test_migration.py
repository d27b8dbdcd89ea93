"""VM.pool_migrate in a 2-host `xapi sim` pool through the XenAPI SDK: the domain moves between the
hosts' xenopsds, resident_on and events follow, xapi's checks, progress and cancel, a destination
that fails leaves the VM running on the source, and 20 VMs ping-ponging at once."""
from __future__ import annotations

from tests.fixtures import own_pool
from tests.helpers import MIB, eventually, failure
from tests.helpers import xenopsd_reply as xenopsd
from tests.system.pool_vms import hosts_by_address, new_vm, wait_task


sim = own_pool(2)


def _sim_host(sim, x, host):
    return next(h for h in sim.hosts if h.address == x.host.get_address(host))


def test_pool_migrate_moves_the_domain(sim, x):
    h1, h2 = hosts_by_address(x)
    vm = new_vm(x, "mover")
    x.VM.start_on(vm, h1, False, False)
    uuid = x.VM.get_uuid(vm)
    assert "pool_migrate" in x.VM.get_allowed_operations(vm)
    event_from = getattr(x.event, "from")
    token = event_from(["vm"], "", 0.0)["token"]

    x.VM.pool_migrate(vm, h2, {"live": "true"})
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["resident_on"] == h2
    assert rec["current_operations"] == {} and rec["scheduled_to_be_resident_on"] == "OpaqueRef:NULL"
    assert "pool_migrate" in rec["allowed_operations"]
    assert vm in x.host.get_resident_VMs(h2) and vm not in x.host.get_resident_VMs(h1)
    member = _sim_host(sim, x, h2)
    st = xenopsd(member, "VM.stat", uuid)["result"]
    assert st["power_state"] == "Running" and int(rec["domid"]) == st["domid"]
    assert xenopsd(sim.coordinator, "VM.stat", uuid)["error"][0] == "HANDLE_INVALID"   # forgotten there
    events = event_from(["vm"], token, 5.0)["events"]
    moved = [e for e in events if e["ref"] == vm and e["snapshot"]["resident_on"] == h2]
    assert moved, events

    # and back; the member's own xenopsd shows the domain gone
    x.VM.pool_migrate(vm, h1, {})
    assert x.VM.get_resident_on(vm) == h1 and x.VM.get_power_state(vm) == "Running"
    assert xenopsd(member, "VM.stat", uuid)["error"][0] == "HANDLE_INVALID"
    x.VM.hard_shutdown(vm)


def test_pool_migrate_checks(sim, x):
    h1, h2 = hosts_by_address(x)
    vm = new_vm(x, "checked")
    assert failure(x.VM.pool_migrate, vm, h2, {}) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start_on(vm, h1, False, False)
    assert failure(x.VM.pool_migrate, vm, "OpaqueRef:nope", {}) == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]
    domid = x.VM.get_domid(vm)
    x.VM.pool_migrate(vm, h1, {"live": "true"})    # localhost migration: a new domain, same host
    assert x.VM.get_resident_on(vm) == h1 and x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_domid(vm) != domid
    st = xenopsd(sim.coordinator, "VM.stat", x.VM.get_uuid(vm))["result"]
    assert st["power_state"] == "Running" and str(st["domid"]) == x.VM.get_domid(vm)
    x.host.disable(h2)
    try:
        assert failure(x.VM.pool_migrate, vm, h2, {}) == ["HOST_DISABLED", h2]
    finally:
        x.host.enable(h2)
    # a disk on the coordinator's local SR, which the member cannot see
    disky = new_vm(x, "local-disk")
    sr = next(x.PBD.get_SR(p) for p in x.host.get_PBDs(h1) if not x.SR.get_shared(x.PBD.get_SR(p)))
    vdi = x.VDI.create({"name_label": "local", "name_description": "", "SR": sr, "virtual_size": str(8 * MIB),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {}})
    x.VBD.create({"VM": disky, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                  "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start_on(disky, h1, False, False)
    assert failure(x.VM.pool_migrate, disky, h2, {}) == ["VM_REQUIRES_SR", disky, sr]
    assert x.VM.get_resident_on(disky) == h1 and x.VM.get_current_operations(disky) == {}
    x.VM.hard_shutdown(disky)
    free = int(x.host_metrics.get_memory_free(x.host.get_metrics(h2)))
    big = new_vm(x, "big", memory=(free // 2 + 64 * MIB) // MIB * MIB)
    filler = new_vm(x, "filler", memory=(free // 2 + 64 * MIB) // MIB * MIB)
    x.VM.start_on(big, h1, False, False)
    x.VM.start_on(filler, h2, False, False)
    details = failure(x.VM.pool_migrate, big, h2, {})
    assert details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY" and int(details[1]) > int(details[2])
    assert x.VM.get_resident_on(big) == h1 and x.VM.get_power_state(big) == "Running"
    for v in (big, filler, vm):
        x.VM.hard_shutdown(v)


def test_progress_and_cancel_leave_the_vm_on_the_source(sim, x):
    h1, h2 = hosts_by_address(x)
    vm = new_vm(x, "cancelled")
    x.VM.start_on(vm, h1, False, False)
    domid = x.VM.get_domid(vm)
    xenopsd(sim.coordinator, "DEBUG.set", "migrate_delay", 3.0)
    try:
        task = x.Async.VM.pool_migrate(vm, h2, {"live": "true"})
        assert eventually(lambda: float(x.task.get_progress(task)) > 0.05, 5)
        assert x.VM.get_current_operations(vm) == {task: "pool_migrate"}
        assert x.VM.get_scheduled_to_be_resident_on(vm) == h2
        x.task.cancel(task)
        rec = wait_task(x, task)
    finally:
        xenopsd(sim.coordinator, "DEBUG.set", "migrate_delay", 0.0)
    assert rec["status"] == "cancelled", rec
    vm_rec = x.VM.get_record(vm)
    assert vm_rec["power_state"] == "Running" and vm_rec["resident_on"] == h1 and vm_rec["domid"] == domid
    assert vm_rec["current_operations"] == {} and vm_rec["scheduled_to_be_resident_on"] == "OpaqueRef:NULL"
    uuid = vm_rec["uuid"]
    assert xenopsd(sim.coordinator, "VM.stat", uuid)["result"]["power_state"] == "Running"   # unpaused
    assert xenopsd(_sim_host(sim, x, h2), "VM.stat", uuid)["error"][0] == "HANDLE_INVALID"
    x.VM.hard_shutdown(vm)


def test_destination_failure_leaves_the_vm_running_on_the_source(sim, x):
    h1, h2 = hosts_by_address(x)
    member = _sim_host(sim, x, h2)
    vm = new_vm(x, "unlucky", memory=1024 * MIB)
    x.VM.start_on(vm, h1, False, False)
    # memory taken on the destination behind xapi's back (its reservation check passes, the build fails)
    filler = "5a5a5a5a-0000-4000-8000-000000000001"
    left = xenopsd(member, "HOST.stat")["result"]["free_memory"] - 512 * MIB
    assert "error" not in xenopsd(member, "VM.add", {"id": filler, "name": "filler", "memory_kib": left // 1024,
                                                     "vcpus": 1, "vcpus_max": 1})
    tid = xenopsd(member, "VM.start", filler, False)["result"]
    while xenopsd(member, "TASK.wait", tid, 1.0)["result"]["state"] == "pending":
        pass
    try:
        details = failure(x.VM.pool_migrate, vm, h2, {})
    finally:
        tid = xenopsd(member, "VM.hard_shutdown", filler)["result"]
        while xenopsd(member, "TASK.wait", tid, 1.0)["result"]["state"] == "pending":
            pass
        xenopsd(member, "VM.remove", filler)
    assert details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY", details
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["resident_on"] == h1 and rec["current_operations"] == {}
    assert xenopsd(sim.coordinator, "VM.stat", rec["uuid"])["result"]["power_state"] == "Running"
    x.VM.hard_shutdown(vm)


def test_twenty_vms_ping_pong_concurrently(sim, x):
    h1, h2 = hosts_by_address(x)
    vms = [new_vm(x, f"pp{i}", memory=128 * MIB) for i in range(20)]
    for i, vm in enumerate(vms):
        x.VM.start_on(vm, h1 if i % 2 == 0 else h2, False, False)
    for _ in range(2):                          # two round trips: every VM crosses over and back
        for _ in range(2):
            start = {vm: x.VM.get_resident_on(vm) for vm in vms}
            tasks = {x.Async.VM.pool_migrate(vm, h2 if start[vm] == h1 else h1, {"live": "true"}): vm
                     for vm in vms}
            for task, vm in tasks.items():
                rec = wait_task(x, task, 60)
                assert rec["status"] == "success", rec["error_info"]
                x.task.destroy(task)
            for vm in vms:
                assert x.VM.get_resident_on(vm) != start[vm] and x.VM.get_power_state(vm) == "Running"
    # each host's xenopsd runs exactly the VMs the database says are there
    for h in (h1, h2):
        member = _sim_host(sim, x, h)
        for vm in vms:
            st = xenopsd(member, "VM.stat", x.VM.get_uuid(vm))
            here = x.VM.get_resident_on(vm) == h
            assert ("result" in st and st["result"]["power_state"] == "Running") == here
    for vm in vms:
        x.VM.hard_shutdown(vm)
