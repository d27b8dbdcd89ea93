"""xe's data-source, live VM, CBT and host/pool settings commands with the real `xe` on a live daemon,
checked against what the XenAPI SDK reads back; and the record fields fed by data sources and the
licence state (memory-target, VCPUs-utilisation, license-state) showing real values."""
from __future__ import annotations

import base64

import pytest

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import new_vdi, new_vm, raw_vdi

MIB = 1 << 20

host = own_daemon("--request-timeout", "20", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                  "XAPI_METRICS_INTERVAL": "0.1"})
session = root_session("host")
x = xenapi_of("session")


@pytest.fixture
def vm(x):
    ref = new_vm(x, "xe-live", vcpus=4, VCPUs_at_startup="2")
    yield ref
    if x.VM.get_power_state(ref) != "Halted":
        x.VM.hard_shutdown(ref)
    x.VM.destroy(ref)


def records(text: str) -> list[dict]:
    out = []
    for block in text.strip().split("\n\n"):
        rec = {}
        for line in block.strip().splitlines():
            k, _, v = line.partition(": ")
            rec[k.strip()] = v
        out.append(rec)
    return out


def test_vm_data_sources(host, x, vm):
    uuid = x.VM.get_uuid(vm)
    x.VM.start(vm, False, False)
    listed = records(ok(xe(host, "vm-data-source-list", f"uuid={uuid}")))
    by_name = {r["name_label"]: r for r in listed}
    api = {ds["name_label"]: ds for ds in x.VM.get_data_sources(vm)}
    assert set(by_name) == set(api) and {"cpu0", "cpu1", "memory", "memory_target"} <= set(by_name)
    # data_source_to_kvs: OCaml's string_of_float for min and max
    assert by_name["cpu0"]["min"] == "0." and by_name["cpu0"]["max"] == "1." and by_name["memory"]["max"] == "inf"
    assert by_name["cpu0"]["enabled"] == "true" and by_name["memory"]["units"] == "B"
    got = ok(xe(host, "vm-data-source-query", f"uuid={uuid}", "data-source=memory_target"))
    assert got == "%f" % x.VM.query_data_source(vm, "memory_target")
    ok(xe(host, "vm-data-source-record", f"vm={uuid}", "data-source=cpu0"))
    ok(xe(host, "vm-data-source-forget", f"vm={uuid}", "data-source=cpu0"))
    bad = xe(host, "vm-data-source-query", f"uuid={uuid}", "data-source=nope")
    assert bad.returncode == 1 and "nope" in bad.stderr
    # record fields fed by the data sources show values for the running VM
    assert ok(xe(host, "vm-param-get", f"uuid={uuid}", "param-name=memory-target")) == \
        str(int(x.VM.query_data_source(vm, "memory_target")))
    util = ok(xe(host, "vm-param-get", f"uuid={uuid}", "param-name=VCPUs-utilisation"))
    assert [part.split(": ")[0] for part in util.split("; ")] == ["0", "1"]
    none = xe(host, "vm-data-source-list", "vm=no-such-vm")
    assert none.returncode == 1 and none.stderr == "Error: No matching VMs found\n"


def test_host_and_sr_data_sources(host, x, sr):
    h = x.host.get_all()[0]
    listed = {r["name_label"] for r in records(ok(xe(host, "host-data-source-list", f"uuid={x.host.get_uuid(h)}")))}
    assert listed == {ds["name_label"] for ds in x.host.get_data_sources(h)} and "memory_total_kib" in listed
    got = ok(xe(host, "host-data-source-query", f"host={x.host.get_uuid(h)}", "data-source=memory_total_kib"))
    assert got == "%f" % x.host.query_data_source(h, "memory_total_kib")
    sr_uuid = x.SR.get_uuid(sr)
    sr_names = {ds["name_label"] for ds in x.SR.get_data_sources(sr)}
    listed = {r["name_label"] for r in records(ok(xe(host, "sr-data-source-list", f"uuid={sr_uuid}")))} \
        if sr_names else set()
    assert listed == sr_names


def test_live_vm_commands(host, x, vm):
    uuid = x.VM.get_uuid(vm)
    halted = xe(host, "vm-vcpu-hotplug", f"uuid={uuid}", "new-vcpus=3")
    assert halted.returncode == 1 and "halted" in halted.stderr and x.VM.get_VCPUs_at_startup(vm) == "2"
    x.VM.start(vm, False, False)
    ok(xe(host, "vm-vcpu-hotplug", f"uuid={uuid}", "new-vcpus=3"))
    assert x.VM.get_VCPUs_at_startup(vm) == "3"
    bad = xe(host, "vm-vcpu-hotplug", f"uuid={uuid}", "new-vcpus=three")
    assert bad.stderr == "Error: Failed to parse parameter 'new-vcpus': expecting an integer\n"
    ok(xe(host, "vm-memory-shadow-multiplier-set", f"vm={uuid}", "multiplier=2.0"))
    assert x.VM.get_HVM_shadow_multiplier(vm) == 2.0
    bad = xe(host, "vm-memory-shadow-multiplier-set", f"vm={uuid}", "multiplier=lots")
    assert bad.stderr == "Error: Failed to parse parameter 'multiplier': expecting a float\n"
    # the target sets both ends of the dynamic range, so it must lie in the static one (256 MiB here)
    low = xe(host, "vm-memory-target-set", f"uuid={uuid}", "target=128MiB")
    assert low.returncode == 1 and low.stderr.startswith("The dynamic memory range does not satisfy")
    ok(xe(host, "vm-memory-target-set", f"uuid={uuid}", "target=256MiB"))
    assert (x.VM.get_memory_dynamic_min(vm), x.VM.get_memory_dynamic_max(vm)) == (str(256 * MIB), str(256 * MIB))
    overhead = ok(xe(host, "vm-compute-memory-overhead", f"uuid={uuid}"))
    assert overhead == x.VM.compute_memory_overhead(vm)
    missing = xe(host, "vm-call-plugin", f"vm-uuid={uuid}", "plugin=nope", "fn=fn")
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_cbt_commands(host, x, session, sr):
    disk = new_vdi(x, sr, size=8 * MIB, name="xe-cbt")
    uuid = x.VDI.get_uuid(disk)
    try:
        ok(xe(host, "vdi-enable-cbt", f"uuid={uuid}"))
        assert x.VDI.get_cbt_enabled(disk) is True
        assert ok(xe(host, "vdi-param-get", f"uuid={uuid}", "param-name=cbt-enabled")) == "true"
        snap = x.VDI.snapshot(disk, {})
        raw_vdi(host, session, "import_raw_vdi", disk, bytes(2 * MIB) + b"\x22" * (2 * MIB))
        bitmap = ok(xe(host, "vdi-list-changed-blocks", f"vdi-from-uuid={x.VDI.get_uuid(snap)}",
                       f"vdi-to-uuid={uuid}"))
        assert bitmap == x.VDI.list_changed_blocks(snap, disk) and base64.b64decode(bitmap)[4] == 0xFF
        not_snap = xe(host, "vdi-data-destroy", f"uuid={uuid}")
        assert not_snap.returncode == 1 and "VDI is not a snapshot" in not_snap.stderr + not_snap.stdout
        ok(xe(host, "vdi-data-destroy", f"uuid={x.VDI.get_uuid(snap)}"))
        assert x.VDI.get_type(snap) == "cbt_metadata"
        ok(xe(host, "vdi-disable-cbt", f"uuid={uuid}"))
        assert x.VDI.get_cbt_enabled(disk) is False
    finally:
        for s in x.VDI.get_snapshots(disk):
            x.VDI.destroy(s)
        x.VDI.destroy(disk)


def test_host_and_pool_settings(host, x):
    h = x.host.get_all()[0]
    uuid = x.host.get_uuid(h)
    ok(xe(host, "host-set-power-on-mode", f"host={uuid}", "power-on-mode=wake-on-lan"))
    assert x.host.get_power_on_mode(h) == "wake-on-lan"
    assert ok(xe(host, "host-param-get", f"uuid={uuid}", "param-name=power-on-mode")) == "wake-on-lan"
    ok(xe(host, "host-set-power-on-mode", f"uuid={uuid}", "power-on-mode="))
    assert x.host.get_power_on_mode(h) == ""
    assert ok(xe(host, "host-disable-display", f"uuid={uuid}")) == "disable_on_reboot"
    assert x.host.get_display(h) == "disable_on_reboot"
    assert ok(xe(host, "host-enable-display", f"uuid={uuid}")) == "enabled"
    live = xe(host, "host-declare-dead", f"uuid={uuid}", "--force")
    assert live.returncode == 1 and uuid in live.stderr
    assert x.host.get_enabled(h) is True
    assert ok(xe(host, "host-compute-free-memory", f"uuid={uuid}")) == x.host.compute_free_memory(h)
    ok(xe(host, "pool-sync-database"))
    # license-state: the pool's licence state as pool.get_license_state gives it
    pool = x.pool.get_all()[0]
    state = x.pool.get_license_state(pool)
    shown = ok(xe(host, "pool-param-get", f"uuid={x.pool.get_uuid(pool)}", "param-name=license-state"))
    assert shown == "; ".join(f"{k}: {v}" for k, v in state.items()) and state["edition"] in shown


def test_host_diagnostics_and_plugins(host, x):
    h = x.host.get_all()[0]
    uuid = x.host.get_uuid(h)
    assert ok(xe(host, "host-dmesg", f"uuid={uuid}")) == x.host.dmesg(h).strip()
    ok(xe(host, "host-sync-data", f"host={uuid}"))
    ok(xe(host, "host-syslog-reconfigure", f"host-uuid={uuid}"))
    ok(xe(host, "host-send-debug-keys", f"host-uuid={uuid}", "keys=q"))
    missing = xe(host, "host-call-plugin", f"host-uuid={uuid}", "plugin=no-such-plugin", "fn=f")
    assert missing.returncode == 1 and "no-such-plugin" in missing.stderr
    live = xe(host, "host-power-on", f"uuid={uuid}")
    assert live.returncode == 1 and uuid in live.stderr            # the API's HOST_IS_LIVE
