"""Live metrics in a 2-host `xapi sim` pool through the XenAPI SDK: the coordinator keeps the member's
host_metrics, host_cpu and its VMs' VM_metrics current from the member's xenopsd."""
from __future__ import annotations

from tests.fixtures import own_pool
from tests.helpers import MIB, eventually
from tests.system.pool_vms import hosts_by_address, new_vm


sim = own_pool(2, env={"XAPI_METRICS_INTERVAL": "0.2"})


def test_member_metrics_reach_the_coordinator(sim):
    s = sim.coordinator.session()
    x = s.xenapi
    try:
        member = hosts_by_address(x)[1]
        hm = x.host.get_metrics(member)
        assert eventually(lambda: x.host_metrics.get_live(hm) is True)
        free = int(x.host_metrics.get_memory_free(hm))
        vm = new_vm(x, "on-member", memory=512 * MIB, vcpus=2)
        x.VM.start_on(vm, member, False, False)
        assert x.VM.get_resident_on(vm) == member
        m = x.VM.get_metrics(vm)
        assert eventually(lambda: len(x.VM_metrics.get_VCPUs_utilisation(m)) == 2)
        rec = x.VM_metrics.get_record(m)
        assert rec["state"] == ["running"] and int(rec["memory_actual"]) == 512 * MIB
        assert all(0.0 < u <= 1.0 for u in rec["VCPUs_utilisation"].values())
        assert eventually(lambda: int(x.host_metrics.get_memory_free(hm)) <= free - 512 * MIB)
        cpus = x.host.get_host_CPUs(member)
        assert cpus and eventually(lambda: x.host_cpu.get_utilisation(cpus[0]) > 0.0)
        x.VM.hard_shutdown(vm)
        assert eventually(lambda: x.VM_metrics.get_state(m) == [])
        x.VM.destroy(vm)
    finally:
        s.xenapi.session.logout()
