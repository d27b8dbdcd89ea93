"""Settings of a running VM (xapi.actions.vm_live) with the XenAPI SDK against a real daemon: vCPU
hotplug through xenopsd into the simulated domain and xenstore, the live shadow multiplier, the wait
for the memory target, call_plugin's checks; errors and power states as xapi gives them."""
import time

import pytest

from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import MIB, destroy_vm, failure, needs_xs, new_vm, xenopsd, xs_read

RULE = "VCPU values must satisfy: 0 < VCPUs \u2264 VCPUs_max"

host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                  "XAPI_METRICS_INTERVAL": "0.2"})
x = root_xenapi("host")


@pytest.fixture
def vm(x):
    ref = new_vm(x, "live", vcpus=4, VCPUs_at_startup="2")
    yield ref
    destroy_vm(x, ref)


def _online(host, vm_uuid) -> int:
    """The simulated domain's online vCPUs, as xenopsd's periodic statistics see them."""
    return xenopsd(host, "HOST.stats")["vms"][vm_uuid]["vcpus"]


def test_vcpus_hotplug_reaches_the_domain_and_metrics(x, host, vm):
    assert failure(x.VM.set_VCPUs_number_live, vm, "3") == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start(vm, False, False)
    uuid = x.VM.get_uuid(vm)
    assert _online(host, uuid) == 2                 # VCPUs_at_startup of VCPUs_max 4
    assert "changing_VCPUs_live" in x.VM.get_allowed_operations(vm)
    x.VM.set_VCPUs_number_live(vm, "4")
    assert x.VM.get_VCPUs_at_startup(vm) == "4"
    assert _online(host, uuid) == 4
    metrics = x.VM.get_metrics(vm)
    assert x.VM_metrics.get_VCPUs_number(metrics) == "4"
    x.VM.set_VCPUs_number_live(vm, "1")
    assert _online(host, uuid) == 1 and x.VM.get_VCPUs_at_startup(vm) == "1"
    # the periodic metrics keep what the domain has
    time.sleep(0.5)
    assert x.VM_metrics.get_VCPUs_number(metrics) == "1"
    assert failure(x.VM.set_VCPUs_number_live, vm, "5") == ["INVALID_VALUE", RULE, "4"]
    assert failure(x.VM.set_VCPUs_number_live, vm, "0") == ["INVALID_VALUE", RULE, "4"]
    assert x.VM.get_current_operations(vm) == {}
    assert failure(x.VM.add_to_VCPUs_params_live, vm, "weight", "512") == [
        "NOT_IMPLEMENTED", "add_to_VCPUs_params_live"]


@needs_xs
def test_vcpus_hotplug_writes_availability(x, host, vm):
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    x.VM.set_VCPUs_number_live(vm, "3")
    got = [xs_read(host, f"/local/domain/{domid}/cpu/{i}/availability") for i in range(4)]
    assert got == ["online", "online", "online", "offline"]


def test_shadow_multiplier_live(x, vm):
    assert failure(x.VM.set_shadow_multiplier_live, vm, 2.0) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start(vm, False, False)
    before = int(x.VM.get_memory_overhead(vm))
    x.VM.set_shadow_multiplier_live(vm, 2.0)
    assert x.VM.get_HVM_shadow_multiplier(vm) == 2.0
    assert int(x.VM.get_memory_overhead(vm)) > before
    assert failure(x.VM.set_shadow_multiplier_live, vm, 0.5) == ["INVALID_VALUE", "multiplier", "0.5"]
    # more shadow memory than the host has
    err = failure(x.VM.set_shadow_multiplier_live, vm, 1e6)
    assert err[0] == "HOST_NOT_ENOUGH_FREE_MEMORY" and int(err[1]) > int(err[2])
    assert x.VM.get_HVM_shadow_multiplier(vm) == 2.0


def test_wait_memory_target_live(x, vm):
    assert failure(x.VM.wait_memory_target_live, vm) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start(vm, False, False)
    x.VM.wait_memory_target_live(vm)
    assert int(x.VM_metrics.get_memory_actual(x.VM.get_metrics(vm))) == 256 * MIB


def test_call_plugin(x, vm):
    assert failure(x.VM.call_plugin, vm, "nope", "fn", {}) == ["XENAPI_MISSING_PLUGIN", "nope"]
    x.VM.start(vm, False, False)
    err = failure(x.VM.call_plugin, vm, "guest-agent-operation", "request-rdp-on", {})
    assert err[:2] == ["XENAPI_PLUGIN_FAILURE", "failed to execute fn"] and "feature" in err[2]
    # one call per VM and 10 s
    err = failure(x.VM.call_plugin, vm, "guest-agent-operation", "request-rdp-on", {})
    assert err[:3] == ["VM_CALL_PLUGIN_RATE_LIMIT", vm, "10.0"] and 0 < float(err[3]) <= 10
