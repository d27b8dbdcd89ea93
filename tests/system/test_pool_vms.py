"""VMs in a 2-host `xapi sim` pool through the XenAPI SDK: placement (spreading, affinity, start_on,
assert_can_boot_here, get_possible_hosts with xapi's errors), a member's VMs followed through its
xenopsd, host.evacuate and its blockers, host.reboot and host.shutdown. The tests run in order on
one pool; the last one shuts the member down."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import XenAPI

from tests.fixtures import own_pool
from tests.helpers import MIB, eventually, failure
from tests.helpers import xenopsd_reply as xenopsd
from tests.system.pool_vms import hosts_by_address, new_vm


sim = own_pool(2)


def _member(sim):
    return sim.hosts[1]


def _internal_network(x, name):
    return x.network.create({"name_label": name, "name_description": "", "MTU": "1500", "other_config": {},
                             "bridge": "", "tags": []})


def _vif(x, vm, network, device="0"):
    return x.VIF.create({"device": device, "network": network, "VM": vm, "MAC": "", "MTU": "1500",
                         "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})


def test_start_spreads_the_load_and_prefers_affinity(sim, x):
    h1, h2 = hosts_by_address(x)
    vms = [new_vm(x, f"spread{i}") for i in range(6)]
    for vm in vms:
        x.VM.start(vm, False, False)
    where = [x.VM.get_resident_on(vm) for vm in vms]
    assert where.count(h1) == 3 and where.count(h2) == 3, where
    for vm in vms:
        x.VM.hard_shutdown(vm)
    pinned = new_vm(x, "pinned")
    x.VM.set_affinity(pinned, h2)
    big = new_vm(x, "weight", memory=2048 * MIB)
    x.VM.start_on(big, h1, False, False)           # h1 has less free memory now: affinity still wins
    x.VM.set_affinity(pinned, h1)
    x.VM.start(pinned, False, False)
    assert x.VM.get_resident_on(pinned) == h1
    x.VM.hard_shutdown(pinned)
    x.VM.set_affinity(pinned, "OpaqueRef:NULL")
    x.VM.start(pinned, False, False)
    assert x.VM.get_resident_on(pinned) == h2       # the emptier host
    for vm in (pinned, big):
        x.VM.hard_shutdown(vm)


def test_member_vm_lifecycle_follows_its_xenopsd(sim, x):
    h1, h2 = hosts_by_address(x)
    vm = new_vm(x, "on-member")
    x.VM.start_on(vm, h2, False, False)
    rec = x.VM.get_record(vm)
    uuid = rec["uuid"]
    st = xenopsd(_member(sim), "VM.stat", uuid)["result"]
    assert rec["power_state"] == "Running" and rec["resident_on"] == h2 and int(rec["domid"]) == st["domid"]
    assert xenopsd(sim.coordinator, "VM.stat", uuid)["error"][0] == "HANDLE_INVALID"
    free = int(x.host_metrics.get_memory_free(x.host.get_metrics(h2)))
    assert free == xenopsd(_member(sim), "HOST.stat")["result"]["free_memory"]
    x.VM.pause(vm)
    assert xenopsd(_member(sim), "VM.stat", uuid)["result"]["power_state"] == "Paused"
    x.VM.unpause(vm)
    x.VM.clean_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_resident_on(vm) == h2
    # the guest powers itself off on the member: the coordinator's database follows
    assert "error" not in xenopsd(_member(sim), "DEBUG.trigger", uuid, "poweroff")
    assert eventually(lambda: x.VM.get_power_state(vm) == "Halted", 10)
    assert x.VM.get_resident_on(vm) == "OpaqueRef:NULL"


def test_boot_checks(sim, x):
    h1, h2 = hosts_by_address(x)
    vm = new_vm(x, "checked")
    assert sorted(x.VM.get_possible_hosts(vm)) == sorted([h1, h2])
    x.VM.assert_can_boot_here(vm, h2)
    assert failure(x.VM.start_on, vm, "OpaqueRef:none", False, False) == ["HANDLE_INVALID", "host", "OpaqueRef:none"]
    x.host.disable(h2)
    try:
        assert failure(x.VM.start_on, vm, h2, False, False) == ["HOST_DISABLED", h2]
        assert failure(x.VM.assert_can_boot_here, vm, h2) == ["HOST_DISABLED", h2]
        assert x.VM.get_possible_hosts(vm) == [h1]
        x.VM.start(vm, False, False)                 # placement leaves the disabled host alone
        assert x.VM.get_resident_on(vm) == h1
        x.VM.hard_shutdown(vm)
    finally:
        x.host.enable(h2)
    huge = new_vm(x, "huge", memory=64 << 30)
    details = failure(x.VM.start_on, huge, h2, False, False)
    assert details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY" and details[1] == str(64 << 30)
    assert failure(x.VM.start, huge, False, False)[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert x.VM.get_possible_hosts(huge) == []
    assert x.VM.get_power_state(huge) == "Halted" and x.VM.get_current_operations(huge) == {}
    # a disk on the coordinator's local SR: the member cannot see it
    local = next(p for p in x.host.get_PBDs(h1) if not x.SR.get_shared(x.PBD.get_SR(p)))
    sr = x.PBD.get_SR(local)
    vdi = x.VDI.create({"name_label": "local disk", "name_description": "", "SR": sr, "virtual_size": str(8 * MIB),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {}})
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                  "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert failure(x.VM.assert_can_boot_here, vm, h2) == ["VM_REQUIRES_SR", vm, sr]
    assert failure(x.VM.start_on, vm, h2, False, False) == ["VM_REQUIRES_SR", vm, sr]
    assert x.VM.get_possible_hosts(vm) == [h1]
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == h1
    x.VM.hard_shutdown(vm)


def test_evacuate_and_its_blockers(sim, x):
    h1, h2 = hosts_by_address(x)
    net = _internal_network(x, "evacnet")
    a, b = new_vm(x, "evac-a"), new_vm(x, "evac-b")
    for vm in (a, b):
        _vif(x, vm, net)
        x.VM.start_on(vm, h2, False, False)
    # a host-internal network ties VMs on it to one host: neither may leave alone
    blockers = x.host.get_vms_which_prevent_evacuation(h2)
    assert blockers == {a: ["VM_REQUIRES_NETWORK", a, net], b: ["VM_REQUIRES_NETWORK", b, net]}
    assert failure(x.host.evacuate, h2)[0] == "VM_REQUIRES_NETWORK"
    assert failure(x.host.assert_can_evacuate, h2)[0] == "CANNOT_EVACUATE_HOST"
    c = new_vm(x, "evac-c")                      # a third VM on that network can only join them
    _vif(x, c, net)
    assert failure(x.VM.assert_can_boot_here, c, h1) == ["VM_REQUIRES_NETWORK", c, net]
    assert x.VM.get_possible_hosts(c) == [h2]
    x.VM.start(c, False, False)
    assert x.VM.get_resident_on(c) == h2
    x.VM.hard_shutdown(c)
    x.VM.hard_shutdown(b)
    assert x.host.get_vms_which_prevent_evacuation(h2) == {}
    movers = [new_vm(x, f"evac{i}") for i in range(4)]
    for vm in movers:
        x.VM.start_on(vm, h2, False, False)
    x.host.evacuate(h2)
    for vm in [a, *movers]:
        assert x.VM.get_resident_on(vm) == h1 and x.VM.get_power_state(vm) == "Running"
    assert [v for v in x.host.get_resident_VMs(h2) if not x.VM.get_is_control_domain(v)] == []
    assert x.host.get_current_operations(h2) == {}
    x.host.disable(h2)                           # from h1 there is nowhere to go now
    try:
        assert x.host.get_vms_which_prevent_evacuation(h1)[a] == ["NO_HOSTS_AVAILABLE", a]
    finally:
        x.host.enable(h2)
    for vm in [a, *movers]:
        x.VM.hard_shutdown(vm)


def test_member_killed_and_back_leaves_its_vms_halted(sim, x):
    h1, h2 = hosts_by_address(x)
    member = _member(sim)
    vm = new_vm(x, "lost")
    x.VM.start_on(vm, h2, False, False)
    pid = member.pid
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    member.kill(signal.SIGKILL)
    assert eventually(lambda: not _alive(pid), 10)
    assert x.VM.get_power_state(vm) == "Running"          # nobody has said otherwise yet
    env = dict(os.environ, XAPI_ROOT_PASSWORD=member.password)
    with open(os.path.join(member.data_dir, "daemon.log"), "ab") as log:
        sim.restarted.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
    # its new xenopsd has no domain: the coordinator's watcher resyncs the VM resident there
    assert eventually(lambda: x.VM.get_power_state(vm) == "Halted", 20)
    assert x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    assert eventually(lambda: _try(lambda: x.VM.start_on(vm, h2, False, False)), 20)
    assert x.VM.get_resident_on(vm) == h2
    x.VM.hard_shutdown(vm)


def test_reboot_and_shutdown_of_a_member(sim, x):
    h1, h2 = hosts_by_address(x)
    member = _member(sim)
    assert failure(x.host.reboot, h2) == ["HOST_NOT_DISABLED"]
    vm = new_vm(x, "resident")
    x.VM.start_on(vm, h2, False, False)
    x.host.disable(h2)
    assert failure(x.host.reboot, h2) == ["HOST_IN_USE", h2, "vm", vm]
    x.host.evacuate(h2)
    pid = member.pid
    x.host.reboot(h2)
    assert x.host.get_enabled(h2)
    # the member's daemon starts again (same process, new image) and serves its xenopsd again
    def back():
        try:
            return xenopsd(member, "HOST.stat").get("result") is not None and member.pid == pid
        except OSError:
            return False
    time.sleep(0.5)
    assert eventually(back, 30)
    x.VM.hard_shutdown(vm)
    assert eventually(lambda: _try(lambda: x.VM.start_on(vm, h2, False, False)), 20)
    assert x.VM.get_resident_on(vm) == h2
    x.VM.hard_shutdown(vm)
    x.host.disable(h2)
    x.host.shutdown(h2)
    assert not x.host_metrics.get_live(x.host.get_metrics(h2))
    assert eventually(lambda: not _alive(pid), 20)
    assert failure(x.VM.start_on, vm, h2, False, False) == ["HOST_NOT_LIVE"]
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == h1
    x.VM.hard_shutdown(vm)


def _try(fn) -> bool:
    try:
        fn()
        return True
    except XenAPI.Failure:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                        # a zombie child of the supervisor counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
