"""Live metrics through the XenAPI SDK on a real daemon: the guest agent's addresses per VIF in
VM_guest_metrics.networks (read back from xenstore with xenstore-ls too), and the periodic VM_metrics,
host_metrics and host_cpu updates."""
import shutil
import time

from tests import daemon as _daemon
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import (failure, login, management_network, needs_domains, new_vm, vif_record, wait_for, xs,
                           xs_read)

pytestmark = needs_domains
MIB = 1 << 20


host = own_daemon("--request-timeout", "10", env={"XAPI_GUEST_AGENT_DELAY": "0.1",
                                                 "XAPI_METRICS_INTERVAL": "0.2"})
x = root_xenapi("host")


def networks(x, vm):
    gm = x.VM.get_guest_metrics(vm)
    return x.VM_guest_metrics.get_networks(gm) if gm != "OpaqueRef:NULL" else {}


def test_guest_agent_reports_an_address_per_vif(host, x):
    vm = new_vm(x, "agent")
    net = management_network(x)
    x.VIF.create(vif_record(vm, net, device="0"))
    x.VIF.create(vif_record(vm, net, device="1"))
    x.VM.start(vm, False, False)
    assert wait_for(lambda: "1/ipv4/0" in networks(x, vm))
    got = networks(x, vm)
    assert set(got) == {"0/ip", "0/ipv4/0", "0/ipv6/0", "1/ip", "1/ipv4/0", "1/ipv6/0"}
    assert got["0/ip"] == got["0/ipv4/0"] and got["0/ip"].startswith("192.0.2.")
    assert got["0/ipv6/0"].startswith("2001:db8::") and got["0/ip"] != got["1/ip"]
    if shutil.which("xenstore-ls"):
        domid = x.VM.get_domid(vm)
        listing = xs(host, "xenstore-ls", "-f", f"/local/domain/{domid}/attr/vif").stdout
        assert f'/local/domain/{domid}/attr/vif/1/ipv4/0 = "{got["1/ip"]}"' in listing
    # a VIF plugged later is reported too, and goes away with its unplug
    late = x.VIF.create(vif_record(vm, net, device="2"))
    x.VIF.plug(late)
    assert wait_for(lambda: "2/ipv4/0" in networks(x, vm))
    x.VIF.unplug(late)
    assert wait_for(lambda: "2/ipv4/0" not in networks(x, vm))
    x.VM.hard_shutdown(vm)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"


def test_static_ip_configuration_reaches_the_guest_agent(host, x):
    """VIF.configure_ipv4/ipv6 as xapi_vif.ml: checked (CIDR, gateway, locking mode, the agent's
    feature-static-ip-setting), recorded on the VIF, and for a plugged VIF written where xenopsd writes
    it (xenserver/device/vif/<devid>/static-ip-setting); the simulated agent applies it and reports the
    address, and mode None gives the guest its own address back."""
    vm = new_vm(x, "static-ip")
    net = management_network(x)
    vif = x.VIF.create(vif_record(vm, net, device="0"))
    assert failure(x.VIF.configure_ipv4, vif, "Static", "10.0.0.5/24", "") == ["VM_LACKS_FEATURE", vm]
    x.VM.start(vm, False, False)
    assert wait_for(lambda: "0/ipv4/0" in networks(x, vm))
    dynamic = networks(x, vm)["0/ipv4/0"]
    assert x.VM_guest_metrics.get_other(x.VM.get_guest_metrics(vm))["feature-static-ip-setting"] == "1"
    assert failure(x.VIF.configure_ipv4, vif, "Static", "10.0.0.5", "") == ["INVALID_CIDR_ADDRESS_SPECIFIED", "address"]
    assert failure(x.VIF.configure_ipv4, vif, "Static", "10.0.0.5/33", "")[0] == "INVALID_CIDR_ADDRESS_SPECIFIED"
    assert failure(x.VIF.configure_ipv4, vif, "Static", "10.0.0.5/24", "10.0.0") == [
        "INVALID_IP_ADDRESS_SPECIFIED", "gateway"]
    assert failure(x.VIF.configure_ipv6, vif, "Static", "10.0.0.5/24", "")[0] == "INVALID_CIDR_ADDRESS_SPECIFIED"
    assert x.VIF.get_ipv4_configuration_mode(vif) == "None"

    x.VIF.configure_ipv4(vif, "Static", "10.0.0.5/24", "10.0.0.1")
    rec = x.VIF.get_record(vif)
    assert (rec["ipv4_configuration_mode"], rec["ipv4_addresses"], rec["ipv4_gateway"]) == (
        "Static", ["10.0.0.5/24"], "10.0.0.1")
    assert wait_for(lambda: networks(x, vm).get("0/ipv4/0") == "10.0.0.5")
    assert networks(x, vm)["0/ip"] == "10.0.0.5"
    domid = x.VM.get_domid(vm)
    base = f"/local/domain/{domid}/xenserver/device/vif/0/static-ip-setting"
    if shutil.which("xenstore-read"):
        got = {k: xs_read(host, f"{base}/{k}") for k in ("enabled", "address", "gateway", "mac", "error-code")}
        assert got == {"enabled": "1", "address": "10.0.0.5/24", "gateway": "10.0.0.1", "mac": rec["MAC"],
                       "error-code": "0"}
    x.VIF.configure_ipv6(vif, "Static", "2001:db8:1::5/64", "")
    assert wait_for(lambda: networks(x, vm).get("0/ipv6/0") == "2001:db8:1::5")
    assert x.VIF.get_ipv6_addresses(vif) == ["2001:db8:1::5/64"]

    x.VIF.configure_ipv4(vif, "None", "", "")
    assert wait_for(lambda: networks(x, vm).get("0/ipv4/0") == dynamic)
    assert x.VIF.get_ipv4_configuration_mode(vif) == "None"
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"{base}/enabled") == "0"

    x.VIF.set_locking_mode(vif, "locked")
    assert failure(x.VIF.set_ipv4_allowed, vif, ["10.0.0.300"]) == ["INVALID_IP_ADDRESS_SPECIFIED", "ipv4_allowed"]
    x.VIF.set_ipv4_allowed(vif, ["10.0.0.6", "10.0.0.6"])
    assert x.VIF.get_ipv4_allowed(vif) == ["10.0.0.6"]
    assert failure(x.VIF.configure_ipv4, vif, "Static", "10.0.0.5/24", "") == [
        "ADDRESS_VIOLATES_LOCKING_CONSTRAINT", "10.0.0.5/24"]
    x.VIF.configure_ipv4(vif, "Static", "10.0.0.6/24", "")
    assert wait_for(lambda: networks(x, vm).get("0/ipv4/0") == "10.0.0.6")
    x.VM.hard_shutdown(vm)


def test_periodic_vm_and_host_metrics(host, x):
    hostref = x.host.get_all()[0]
    hm = x.host.get_metrics(hostref)
    free_before = int(x.host_metrics.get_memory_free(hm))
    vm = new_vm(x, "busy", memory=512 * MIB, vcpus=2)
    x.VM.start(vm, False, False)
    m = x.VM.get_metrics(vm)
    assert wait_for(lambda: len(x.VM_metrics.get_VCPUs_utilisation(m)) == 2)
    rec = x.VM_metrics.get_record(m)
    assert set(rec["VCPUs_utilisation"]) == {"0", "1"}
    assert all(0.0 < u <= 1.0 for u in rec["VCPUs_utilisation"].values())
    assert rec["state"] == ["running"] and int(rec["memory_actual"]) == 512 * MIB
    assert rec["VCPUs_number"] == "2"
    first = rec["last_updated"]
    assert wait_for(lambda: x.VM_metrics.get_last_updated(m) != first)
    assert int(x.host_metrics.get_memory_free(hm)) <= free_before - 512 * MIB
    cpus = x.host.get_host_CPUs(hostref)
    assert cpus and wait_for(lambda: x.host_cpu.get_utilisation(cpus[0]) > 0.0)
    x.VM.pause(vm)
    assert wait_for(lambda: x.VM_metrics.get_state(m) == ["paused"])
    x.VM.hard_shutdown(vm)
    assert wait_for(lambda: x.VM_metrics.get_state(m) == [] and x.VM_metrics.get_VCPUs_utilisation(m) == {})
    time.sleep(0.5)
    assert int(x.host_metrics.get_memory_free(hm)) >= free_before - 16 * MIB


def test_hypervisor_calls_through_the_bounded_pool():
    """XAPI_XENOPSD_HV_THREADS: xenopsd's hypervisor calls go to a pool of threads (as with the xc
    backend, whose calls may block); the lifecycle and the metrics work the same."""
    d = _daemon.start("--request-timeout", "10", env={"XAPI_XENOPSD_HV_THREADS": "2",
                                                       "XAPI_METRICS_INTERVAL": "0.2",
                                                       "XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
    try:
        s = login(d)
        x = s.xenapi
        vms = [new_vm(x, f"pooled-{i}") for i in range(4)]
        tasks = [x.Async.VM.start(vm, False, False) for vm in vms]
        assert wait_for(lambda: all(x.task.get_status(t) == "success" for t in tasks), 20)
        assert all(x.VM.get_power_state(vm) == "Running" for vm in vms)
        x.VM.pause(vms[0])
        assert x.VM.get_power_state(vms[0]) == "Paused"
        x.VM.unpause(vms[0])
        m = x.VM.get_metrics(vms[1])
        assert wait_for(lambda: len(x.VM_metrics.get_VCPUs_utilisation(m)) == 1)
        x.VM.clean_shutdown(vms[2])
        for vm in (vms[0], vms[1], vms[3]):
            x.VM.hard_shutdown(vm)
        assert all(x.VM.get_power_state(vm) == "Halted" for vm in vms)
        s.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)
