"""VM, host and SR data sources (xapi.actions.data_sources) with the XenAPI SDK against a real daemon:
the values follow what the periodic metrics sample from the simulated hypervisor and what the
database holds; unknown names and halted VMs fail as rrdd's errors do through xapi."""
import math

import pytest

from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import MIB, destroy_vm, eventually, failure, login, new_vm


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                  "XAPI_METRICS_INTERVAL": "0.1"})
x = root_xenapi("host")


@pytest.fixture
def vm(x):
    ref = new_vm(x, "ds", memory=512 * MIB, vcpus=2)
    yield ref
    destroy_vm(x, ref)


def _by_name(sources):
    return {ds["name_label"]: ds for ds in sources}


def test_host_data_sources_follow_host_metrics(x, host):
    h = x.host.get_all()[0]
    got = _by_name(x.host.get_data_sources(h))
    cpus = x.host.get_host_CPUs(h)
    assert {f"cpu{i}" for i in range(len(cpus))} | {"cpu_avg", "memory_total_kib", "memory_free_kib",
                                                     "pool_session_count", "pool_task_count"} == set(got)
    for ds in got.values():
        assert ds["enabled"] is True and ds["standard"] is True and ds["min"] == 0.0
    assert got["cpu0"]["units"] == "(fraction)" and got["cpu0"]["max"] == 1.0
    assert math.isinf(got["memory_total_kib"]["max"]) and got["memory_total_kib"]["units"] == "KiB"
    metrics = x.host.get_metrics(h)
    total = int(x.host_metrics.get_memory_total(metrics))
    assert x.host.query_data_source(h, "memory_total_kib") == total // 1024
    # free memory drops by the started VM's memory, as the next sample sees it
    free_before = x.host.query_data_source(h, "memory_free_kib")
    v = new_vm(x, "eater", memory=512 * MIB)
    x.VM.start(v, False, False)
    try:
        assert eventually(lambda: free_before - x.host.query_data_source(h, "memory_free_kib") >= 512 * 1024 or None)
        assert x.host.query_data_source(h, "memory_free_kib") == int(x.host_metrics.get_memory_free(metrics)) // 1024
    finally:
        x.VM.hard_shutdown(v)
        x.VM.destroy(v)
    sessions = x.host.query_data_source(h, "pool_session_count")
    other = login(host)
    try:
        assert x.host.query_data_source(h, "pool_session_count") == sessions + 1
    finally:
        other.xenapi.session.logout()
    x.host.record_data_source(h, "cpu_avg")
    x.host.forget_data_source_archives(h, "cpu_avg")
    assert "cpu_avg" in _by_name(x.host.get_data_sources(h))
    bad = ["INTERNAL_ERROR", 'Rrd.Invalid_data_source("nope")']
    assert failure(x.host.query_data_source, h, "nope") == bad
    assert failure(x.host.record_data_source, h, "nope") == bad
    assert failure(x.host.query_data_source, "OpaqueRef:nope", "cpu0") == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_vm_data_sources_follow_the_domain(x, vm):
    assert x.VM.get_data_sources(vm) == []
    assert failure(x.VM.query_data_source, vm, "memory") == ["INTERNAL_ERROR", "Not_found"]
    x.VM.start(vm, False, False)
    got = _by_name(x.VM.get_data_sources(vm))
    assert set(got) == {"cpu0", "cpu1", "memory", "memory_target"}
    assert x.VM.query_data_source(vm, "memory") == 512 * MIB
    assert eventually(lambda: x.VM.query_data_source(vm, "memory_target") == 512 * MIB or None)
    # busy simulated vCPUs: utilisation sampled from the domain's CPU time
    assert eventually(lambda: x.VM.query_data_source(vm, "cpu0") > 0 or None)
    assert 0.0 <= x.VM.query_data_source(vm, "cpu1") <= 1.0
    x.VM.set_VCPUs_number_live(vm, "1")
    assert set(_by_name(x.VM.get_data_sources(vm))) == {"cpu0", "memory", "memory_target"}
    x.VM.record_data_source(vm, "memory")
    x.VM.forget_data_source_archives(vm, "memory")
    assert failure(x.VM.query_data_source, vm, "cpu7") == ["INTERNAL_ERROR", 'Rrd.Invalid_data_source("cpu7")']


def test_sr_has_no_data_sources(x, sr):
    assert x.SR.get_data_sources(sr) == []
    bad = ["INTERNAL_ERROR", 'Rrd.Invalid_data_source("size")']
    assert failure(x.SR.query_data_source, sr, "size") == bad
    assert failure(x.SR.record_data_source, sr, "size") == bad
    assert failure(x.SR.forget_data_source_archives, sr, "size") == bad
