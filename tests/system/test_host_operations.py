"""A host's allowed_operations and current_operations in a 2-host `xapi sim` pool through the
XenAPI SDK, as xapi_host_helpers.valid_operations keeps them: an evacuation holds {task: evacuate}
on its host while its VMs move, which refuses the operations that bring VMs in and lets a second
evacuation and the rest through; reboot and shutdown need the host disabled; power_on needs the
power-on-host plugin, which is not there."""
from __future__ import annotations

from tests.fixtures import own_pool
from tests.helpers import eventually, failure, xenopsd_reply
from tests.system.pool_vms import hosts_by_address, new_vm, wait_task

sim = own_pool(2)


def test_enabled_hosts_offer_no_reboot_or_shutdown(sim, x):
    h1, h2 = hosts_by_address(x)
    enabled = {"provision", "evacuate", "vm_start", "vm_resume", "vm_migrate", "enable"}
    for h in (h1, h2):
        assert eventually(lambda h=h: set(x.host.get_allowed_operations(h)) == enabled, 5)
        assert x.host.get_current_operations(h) == {}
    assert failure(x.host.reboot, h2) == ["HOST_NOT_DISABLED"]
    assert failure(x.host.shutdown, h2) == ["HOST_NOT_DISABLED"]
    x.host.disable(h2)
    try:
        assert set(x.host.get_allowed_operations(h2)) == enabled | {"reboot", "shutdown", "apply_updates"}
    finally:
        x.host.enable(h2)
    assert set(x.host.get_allowed_operations(h2)) == enabled


def test_evacuate_holds_its_host(sim, x):
    h1, h2 = hosts_by_address(x)
    vm = new_vm(x, "moved")
    x.VM.start_on(vm, h2, False, False)
    xenopsd_reply(sim.hosts[1], "DEBUG.set", "migrate_delay", 2.0)
    try:
        task = x.Async.host.evacuate(h2)
        assert eventually(lambda: x.host.get_current_operations(h2) == {task: "evacuate"}, 5)
        allowed = set(x.host.get_allowed_operations(h2))
        assert not allowed & {"provision", "vm_resume", "vm_migrate"}
        assert {"evacuate", "vm_start", "enable"} <= allowed
        assert x.host.get_current_operations(h1) == {}
        rec = wait_task(x, task)
    finally:
        xenopsd_reply(sim.hosts[1], "DEBUG.set", "migrate_delay", 0.0)
    assert rec["status"] == "success", rec
    assert x.VM.get_resident_on(vm) == h1
    assert x.host.get_current_operations(h2) == {}
    assert {"provision", "vm_resume", "vm_migrate"} <= set(x.host.get_allowed_operations(h2))
    x.VM.hard_shutdown(vm)
