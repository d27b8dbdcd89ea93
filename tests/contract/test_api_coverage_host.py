"""host queries and small settings (xapi.actions.host_info) with the XenAPI SDK against a real daemon."""
import datetime
import time

from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure


host = own_daemon("--request-timeout", "10")
x = root_xenapi("host")


def _parse(dt) -> float:
    return datetime.datetime.strptime(str(dt.value), "%Y%m%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_times(x):
    h = x.host.get_all()[0]
    assert abs(_parse(x.host.get_servertime(h)) - time.time()) < 5
    local = str(x.host.get_server_localtime(h).value)
    assert not local.endswith("Z")
    assert abs(time.mktime(time.strptime(local, "%Y%m%dT%H:%M:%S")) - time.time()) < 5
    assert failure(x.host.get_servertime, "OpaqueRef:nope") == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_memory_and_management_interface(x):
    h = x.host.get_all()[0]
    free = int(x.host.compute_free_memory(h))
    metrics = x.host.get_metrics(h)
    assert 0 < free <= int(x.host_metrics.get_memory_free(metrics))
    assert int(x.host.compute_memory_overhead(h)) == int(x.host.get_memory_overhead(h))
    pif = x.host.get_management_interface(h)
    assert x.PIF.get_management(pif) is True and x.PIF.get_host(pif) == h


def test_deprecated_and_unimplemented_as_xapi(x):
    h = x.host.get_all()[0]
    assert x.host.get_uncooperative_resident_VMs(h) == []
    assert x.host.has_extension(h, "Test.test") is False
    assert failure(x.host.dmesg_clear, h) == ["NOT_IMPLEMENTED", "dmesg_clear"]
    assert failure(x.host.get_log, h) == ["NOT_IMPLEMENTED", "get_log"]
    assert failure(x.host.list_methods) == ["NOT_IMPLEMENTED", "list_method"]


def test_set_hostname_live(x):
    h = x.host.get_all()[0]
    old = x.host.get_hostname(h)
    dom0 = next(v for v, r in x.VM.get_all_records().items() if r["is_control_domain"] and r["resident_on"] == h)
    try:
        x.host.set_hostname_live(h, "renamed-host.example")
        assert x.host.get_hostname(h) == "renamed-host.example"
        assert x.VM.get_name_label(dom0) == "Control domain on host: renamed-host.example"
        assert failure(x.host.set_hostname_live, h, "") == ["HOST_NAME_INVALID", "hostname empty"]
        assert failure(x.host.set_hostname_live, h, "a" * 256) == ["HOST_NAME_INVALID", "hostname is too long"]
        for bad in ("-lead", "trail-", "under_score", "sp ace"):
            assert failure(x.host.set_hostname_live, h, bad) == \
                ["HOST_NAME_INVALID", "hostname contains invalid characters"], bad
    finally:
        x.host.set_hostname_live(h, old)
