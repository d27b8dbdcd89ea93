"""VM lifecycle against a real daemon (xapi.actions.vm over xenopsd, xapi.xenops) with the XenAPI SDK."""
import threading
import time

import pytest
import XenAPI

from tests import daemon as _daemon
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, login, needs_domains, new_vm, wait_for, xenopsd

pytestmark = needs_domains

MIB = 1 << 20

host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host", scope="function")


def test_start_pause_shutdown_reboot(x):
    vm = new_vm(x, "lifecycle")
    assert x.VM.get_power_state(vm) == "Halted"
    # (migrate_send, allowed for a halted VM in xapi, appears once storage migration is offered)
    assert set(x.VM.get_allowed_operations(vm)) - {"migrate_send"} == {
        "start", "start_on", "destroy", "clone", "copy", "snapshot", "export"}
    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and int(rec["domid"]) > 0
    assert rec["resident_on"] == x.host.get_all()[0]
    assert vm in x.host.get_resident_VMs(rec["resident_on"])
    assert {"pause", "hard_shutdown", "hard_reboot", "snapshot"} <= set(rec["allowed_operations"])
    assert "start" not in rec["allowed_operations"]
    m = x.VM_metrics.get_record(rec["metrics"])
    assert int(m["memory_actual"]) == 256 * MIB and int(m["VCPUs_number"]) == 1
    assert failure(x.VM.start, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]

    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == "Paused"
    assert "unpause" in x.VM.get_allowed_operations(vm)
    x.VM.unpause(vm)
    assert x.VM.get_power_state(vm) == "Running"

    domid = x.VM.get_domid(vm)
    x.VM.hard_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running" and int(x.VM.get_domid(vm)) > 0
    x.VM.clean_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running"
    del domid

    x.VM.clean_shutdown(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["domid"] == "-1" and rec["resident_on"] == "OpaqueRef:NULL"
    assert "start" in rec["allowed_operations"] and rec["current_operations"] == {}
    assert failure(x.VM.clean_shutdown, vm)[:1] == ["VM_BAD_POWER_STATE"]

    x.VM.start(vm, True, False)                        # start paused
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"


def test_allowed_operations_wait_for_the_guest_agent_of_an_hvm_guest(host, x):
    """As xapi_vm_lifecycle.check_op_for_feature (strict, for allowed_operations only): a running HVM
    guest offers clean shutdown/reboot, suspend, checkpoint and migration once its agent reported PV
    drivers; the calls themselves are not refused meanwhile. A PV guest offers them at once."""
    xenopsd(host, "DEBUG.set", "guest_agent_delay", 1.0)
    try:
        hvm = new_vm(x, "hvm-features")
        x.VM.start(hvm, False, False)
        gated = {"clean_shutdown", "clean_reboot", "suspend", "checkpoint", "pool_migrate"}
        assert x.VM_metrics.get_hvm(x.VM.get_metrics(hvm)) is True
        assert not gated & set(x.VM.get_allowed_operations(hvm))
        assert {"pause", "hard_shutdown", "hard_reboot"} <= set(x.VM.get_allowed_operations(hvm))
        assert wait_for(lambda: x.VM.get_guest_metrics(hvm) != "OpaqueRef:NULL", 5)
        assert wait_for(lambda: gated <= set(x.VM.get_allowed_operations(hvm)), 5)
        pv = new_vm(x, "pv-features", HVM_boot_policy="", HVM_boot_params={})
        x.VM.start(pv, False, False)
        assert x.VM_metrics.get_hvm(x.VM.get_metrics(pv)) is False
        assert gated <= set(x.VM.get_allowed_operations(pv))
        x.VM.clean_shutdown(pv)                 # not gated as a call: done before the agent reports
        x.VM.start(pv, False, False)
        x.VM.hard_shutdown(pv)
        x.VM.hard_shutdown(hvm)
        x.VM.start(hvm, False, False)
        x.VM.clean_shutdown(hvm)                # the call is allowed even before the agent reported
        assert x.VM.get_power_state(hvm) == "Halted"
    finally:
        xenopsd(host, "DEBUG.set", "guest_agent_delay", 2.0)


def test_templates_and_control_domain_refused(x):
    tpl = next(r for r, v in x.VM.get_all_records().items() if v["is_a_template"])
    assert failure(x.VM.start, tpl, False, False) == ["VM_IS_TEMPLATE", tpl, "start"]
    dom0 = next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])
    assert failure(x.VM.pause, dom0)[0] == "OPERATION_NOT_ALLOWED"


def test_not_enough_memory(x):
    vm = new_vm(x, "huge", memory=256 << 30)
    details = failure(x.VM.start, vm, False, False)
    assert details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY" and int(details[1]) == 256 << 30
    assert int(details[2]) < 256 << 30
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_current_operations(vm) == {}


def test_async_start_progress_and_concurrent_operation(host, x):
    vm = new_vm(x, "async")
    xenopsd(host, "DEBUG.set", "build_delay", 1.0)
    try:
        task = x.Async.VM.start(vm, False, False)
        assert wait_for(lambda: x.VM.get_current_operations(vm) != {})
        assert list(x.VM.get_current_operations(vm).items()) == [(task, "start")]
        assert x.VM.get_allowed_operations(vm) == []
        assert failure(x.VM.start, vm, False, False) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start", task]
        assert wait_for(lambda: 0 < float(x.task.get_progress(task)) < 1, 2)
        assert wait_for(lambda: x.task.get_status(task) != "pending", 5)
    finally:
        xenopsd(host, "DEBUG.set", "build_delay", 0)
    t = x.task.get_record(task)
    assert t["status"] == "success" and float(t["progress"]) == 1.0
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_current_operations(vm) == {}
    x.VM.hard_shutdown(vm)


def test_cancel_start(host, x):
    """xapi's task follows the xenopsd task's progress; task.cancel cancels the xenopsd task, whose
    half-built domain goes (the host's memory comes back)."""
    vm = new_vm(x, "cancelled")
    free = xenopsd(host, "HOST.stat")["free_memory"]
    xenopsd(host, "DEBUG.set", "build_delay", 2.0)
    try:
        task = x.Async.VM.start(vm, False, False)
        assert wait_for(lambda: float(x.task.get_progress(task)) > 0, 2)
        assert xenopsd(host, "VM.stat", x.VM.get_uuid(vm))["domid"] >= 0      # being built there
        assert xenopsd(host, "HOST.stat")["free_memory"] < free
        seen = float(x.task.get_progress(task))
        assert wait_for(lambda: float(x.task.get_progress(task)) > seen, 2)   # it keeps coming
        x.task.cancel(task)
        assert wait_for(lambda: x.task.get_status(task) not in ("pending", "cancelling"), 5)
    finally:
        xenopsd(host, "DEBUG.set", "build_delay", 0)
    assert x.task.get_status(task) == "cancelled"
    assert x.task.get_error_info(task) == ["TASK_CANCELLED", task]
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_current_operations(vm) == {}
    st = xenopsd(host, "VM.stat", x.VM.get_uuid(vm))
    assert st["power_state"] == "Halted" and st["domid"] == -1
    assert xenopsd(host, "HOST.stat")["free_memory"] == free
    assert "start" in x.VM.get_allowed_operations(vm)


def test_event_watcher_sees_power_state(host, x):
    vm = new_vm(x, "watched")
    token = getattr(x.event, "from")(["vm"], "", 0.0)["token"]
    seen = []
    done = threading.Event()

    def watch():
        s = login(host)
        tok = token
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not done.is_set():
            batch = getattr(s.xenapi.event, "from")(["vm"], tok, 1.0)
            tok = batch["token"]
            seen.extend(e["snapshot"]["power_state"] for e in batch["events"]
                        if e["ref"] == vm and e["operation"] == "mod")
            if "Halted" in seen[1:] and "Running" in seen:
                break
        s.xenapi.session.logout()

    t = threading.Thread(target=watch)
    t.start()
    x.VM.start(vm, False, False)
    time.sleep(0.3)
    x.VM.hard_shutdown(vm)
    t.join(12)
    done.set()
    assert "Running" in seen and seen[-1] == "Halted"


def test_guest_initiated_changes_follow_actions_after(host, x):
    """A guest that halts, reboots or crashes by itself (xenopsd DEBUG.trigger) is handled as
    actions_after_shutdown / _reboot / _crash say, as xapi_xenops.ml maps them: destroy (Halted),
    restart (a new domain), preserve (the crashed domain kept, Paused); coredump_and_restart of a
    PV guest restarts (no dump here). rename_restart is refused as xapi refuses it, and so is a core
    dump of an HVM domain."""
    vm = new_vm(x, "guest")
    uuid = x.VM.get_uuid(vm)

    def trigger(reason, expect):
        domid = x.VM.get_domid(vm)
        built = xenopsd(host, "VM.stat", uuid)["start_time"]
        xenopsd(host, "DEBUG.trigger", uuid, reason)
        if expect == "Running":         # destroyed and built again: a domain started afresh
            assert wait_for(lambda: xenopsd(host, "VM.stat", uuid)["start_time"] > built
                            and x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) != "-1", 5)
        else:
            assert wait_for(lambda: x.VM.get_power_state(vm) == expect, 5)
        return domid

    x.VM.start(vm, False, False)
    trigger("reboot", "Running")                            # actions_after_reboot = restart
    trigger("poweroff", "Halted")                           # actions_after_shutdown = destroy
    assert x.VM.get_domid(vm) == "-1" and x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    x.VM.set_actions_after_shutdown(vm, "restart")
    x.VM.set_actions_after_reboot(vm, "destroy")
    x.VM.start(vm, False, False)
    trigger("poweroff", "Running")
    trigger("reboot", "Halted")
    x.VM.start(vm, False, False)
    trigger("crash", "Halted")                              # actions_after_crash = destroy
    x.VM.set_actions_after_crash(vm, "restart")
    x.VM.start(vm, False, False)
    trigger("crash", "Running")
    x.VM.hard_shutdown(vm)
    x.VM.set_actions_after_crash(vm, "preserve")
    x.VM.start(vm, False, False)
    domid = trigger("crash", "Paused")                      # kept for inspection: the same domain
    time.sleep(0.5)                                         # and it stays so
    assert x.VM.get_power_state(vm) == "Paused" and x.VM.get_domid(vm) == domid
    assert "hard_shutdown" in x.VM.get_allowed_operations(vm)
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"

    # not supported, as xapi_vm_helpers.validate_actions_after_crash: on set and at start
    assert failure(x.VM.set_actions_after_crash, vm, "rename_restart") == [
        "VALUE_NOT_SUPPORTED", "VM.actions_after_crash", "rename_restart",
        "option would leak a domain; VMs and not domains are managed by this API"]
    assert failure(x.VM.set_actions_after_crash, vm, "coredump_and_restart") == [
        "VALUE_NOT_SUPPORTED", "VM.actions_after_crash", "coredump_and_restart",
        "cannot invoke a coredump of an HVM or PV-in-PVH domain"]
    assert x.VM.get_actions_after_crash(vm) == "preserve"
    renamed = new_vm(x, "rename", actions_after_crash="rename_restart")
    assert failure(x.VM.start, renamed, False, False)[:3] == [
        "VALUE_NOT_SUPPORTED", "VM.actions_after_crash", "rename_restart"]
    assert failure(x.VM.assert_can_boot_here, renamed, x.host.get_all()[0])[0] == "VALUE_NOT_SUPPORTED"
    assert x.VM.get_power_state(renamed) == "Halted" and x.VM.get_current_operations(renamed) == {}

    pv = new_vm(x, "pv", HVM_boot_policy="", HVM_boot_params={})
    x.VM.set_actions_after_crash(pv, "coredump_and_restart")
    x.VM.start(pv, False, False)
    vm, uuid = pv, x.VM.get_uuid(pv)
    trigger("crash", "Running")
    x.VM.hard_shutdown(pv)


def test_host_memory_free_follows(x):
    host_ref = x.host.get_all()[0]
    hm = x.host.get_metrics(host_ref)
    before = int(x.host_metrics.get_memory_free(hm))
    vm = new_vm(x, "mem", memory=512 * MIB)
    x.VM.start(vm, False, False)
    assert int(x.host_metrics.get_memory_free(hm)) == before - 512 * MIB
    x.VM.hard_shutdown(vm)
    assert int(x.host_metrics.get_memory_free(hm)) == before


def test_restart_leaves_running_vms_halted():
    """state.db keeps Running, but the domains went with the daemon: the VM comes back Halted."""
    d = _daemon.start()
    try:
        s = login(d)
        vm = new_vm(s.xenapi, "restart")
        s.xenapi.VM.start(vm, False, False)
        assert s.xenapi.VM.get_power_state(vm) == "Running"
        d.stop()
        d2 = _daemon.start(data_dir=d.data_dir)
        try:
            s = login(d2)
            assert wait_for(lambda: s.xenapi.VM.get_power_state(vm) == "Halted", 5)
            assert "start" in s.xenapi.VM.get_allowed_operations(vm)
            s.xenapi.VM.start(vm, False, False)
            assert s.xenapi.VM.get_power_state(vm) == "Running"
        finally:
            d2.stop()
    finally:
        _daemon.cleanup(d)


def test_destroy_refuses_a_running_vm_and_dom0(x):
    vm = new_vm(x)
    x.VM.start(vm, False, False)
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.destroy(vm)
    assert e.value.details[0] == "VM_BAD_POWER_STATE"
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    assert vm not in x.VM.get_all()
    dom0 = next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.destroy(dom0)
    assert e.value.details[0] == "VM_BAD_POWER_STATE"


def test_guest_agent_fills_guest_metrics(host, x):
    """The simulated guest agent writes attr/PVAddons/*, data/os_* into xenstore a moment after boot;
    xapi turns it into VM_guest_metrics, and drops the row at shutdown.  The test VM has no VIFs,
    so (as in xapi, which only reports existing VIFs) `networks` stays empty."""
    xenopsd(host, "DEBUG.set", "guest_agent_delay", 0.1)
    vm = new_vm(x, "agent")
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    x.VM.start(vm, False, False)
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL", 5.0)
    gm = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(vm))
    assert gm["os_version"]["name"] and gm["os_version"]["distro"] and gm["os_version"]["uname"]
    assert gm["PV_drivers_version"]["major"] and gm["PV_drivers_version"]["micro"]
    assert gm["live"] is True and gm["PV_drivers_up_to_date"] is True and gm["PV_drivers_detected"] is True
    assert int(gm["memory"]["total"]) == 256 * 1024
    assert gm["networks"] == {}
    ref = x.VM.get_guest_metrics(vm)
    x.VM.hard_shutdown(vm)
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL", 5.0)
    assert ref not in x.VM_guest_metrics.get_all()
