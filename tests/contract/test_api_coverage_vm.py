"""VM setters and queries (xapi.actions.vm_settings) with the XenAPI SDK against a real daemon: values
stored, xapi's checks and errors, the power states they need, memory overhead as xapi computes it."""
import pytest

from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, new_vm

MIB = 1 << 20
VCPU_RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup \u2264 VCPUs_max"


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


@pytest.fixture
def vm(x):
    ref = new_vm(x, "settings", vcpus=2)
    yield ref
    if x.VM.get_power_state(ref) != "Halted":
        x.VM.hard_shutdown(ref)
    x.VM.destroy(ref)


def test_vcpus(x, vm):
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.set_VCPUs_at_startup(vm, "3")
    assert (x.VM.get_VCPUs_max(vm), x.VM.get_VCPUs_at_startup(vm)) == ("4", "3")
    assert failure(x.VM.set_VCPUs_at_startup, vm, "5") == ["INVALID_VALUE", VCPU_RULE, "5"]
    assert failure(x.VM.set_VCPUs_at_startup, vm, "0") == ["INVALID_VALUE", VCPU_RULE, "0"]
    assert failure(x.VM.set_VCPUs_max, vm, "2") == ["INVALID_VALUE", VCPU_RULE, "2"]
    x.VM.start(vm, False, False)
    assert failure(x.VM.set_VCPUs_max, vm, "8") == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    assert failure(x.VM.set_VCPUs_at_startup, vm, "1") == ["VM_BAD_POWER_STATE", vm, "halted", "running"]


def test_memory_overhead_as_xapi(x, vm):
    # HVM, 256 MiB static max, 2 vCPUs, multiplier 1: 1 + 1 + ceil((512 + 256 + 256) / 256) MiB
    assert x.VM.get_domain_type(vm) in ("hvm", "unspecified")
    assert int(x.VM.compute_memory_overhead(vm)) == 6 * MIB
    x.VM.set_HVM_shadow_multiplier(vm, 2.0)
    assert x.VM.get_HVM_shadow_multiplier(vm) == 2.0
    assert int(x.VM.compute_memory_overhead(vm)) == 10 * MIB
    assert int(x.VM.get_memory_overhead(vm)) == 10 * MIB      # kept up to date by the setters
    assert failure(x.VM.set_HVM_shadow_multiplier, vm, 0.5) == ["INVALID_VALUE", "multiplier", "0.5"]
    x.VM.set_domain_type(vm, "pv")
    assert x.VM.get_HVM_boot_policy(vm) == ""
    # PV: 0 + 1 + shadow 4 (multiplier 2)... with the multiplier still 2
    assert int(x.VM.compute_memory_overhead(vm)) == 9 * MIB
    # the largest static max that fits in 1 GiB, to the MiB below
    best = int(x.VM.maximise_memory(vm, str(1024 * MIB), False))
    assert best % MIB == 0 and 1000 * MIB < best < 1024 * MIB
    assert int(x.VM.maximise_memory(vm, str(1024 * MIB), True)) <= best


def test_domain_type_and_boot_policy_follow_each_other(x, vm):
    x.VM.set_HVM_boot_policy(vm, "")
    assert x.VM.get_domain_type(vm) == "pv"
    x.VM.set_HVM_boot_policy(vm, "BIOS order")
    assert x.VM.get_domain_type(vm) == "hvm"
    x.VM.set_domain_type(vm, "pv_in_pvh")
    assert x.VM.get_HVM_boot_policy(vm) == ""
    assert failure(x.VM.set_domain_type, vm, "unspecified") == ["INVALID_VALUE", "domain_type", "unspecified"]
    assert failure(x.VM.set_domain_type, vm, "bogus")[0] == "FIELD_TYPE_ERROR"


def test_ordering_and_ha(x, vm):
    x.VM.set_order(vm, "3")
    x.VM.set_start_delay(vm, "10")
    x.VM.set_shutdown_delay(vm, "20")
    assert (x.VM.get_order(vm), x.VM.get_start_delay(vm), x.VM.get_shutdown_delay(vm)) == ("3", "10", "20")
    assert failure(x.VM.set_order, vm, "-1") == ["INVALID_VALUE", "order must be non-negative", "-1"]
    assert failure(x.VM.set_start_delay, vm, "-2") == ["INVALID_VALUE", "start_delay must be non-negative", "-2"]
    x.VM.set_ha_restart_priority(vm, "best-effort")
    assert x.VM.get_ha_restart_priority(vm) == "best-effort" and x.VM.get_ha_always_run(vm) is False
    assert failure(x.VM.set_ha_restart_priority, vm, "always") == ["INVALID_VALUE", "ha_restart_priority", "always"]
    x.VM.start(vm, False, False)
    x.VM.set_ha_always_run(vm, True)              # deprecated: the priority becomes "restart"
    assert x.VM.get_ha_restart_priority(vm) == "restart" and x.VM.get_ha_always_run(vm) is True
    x.VM.set_ha_always_run(vm, False)
    assert x.VM.get_ha_restart_priority(vm) == "" and x.VM.get_ha_always_run(vm) is False


def test_bios_strings_nvram_vendor_device(x, vm):
    x.VM.set_bios_strings(vm, {"system-serial-number": "SN-42"})
    strings = x.VM.get_bios_strings(vm)
    assert strings["system-serial-number"] == "SN-42" and strings["bios-vendor"] == "Xen"
    assert strings["oem-1"] == "Xen" and strings["system-product-name"] == "HVM domU"
    assert failure(x.VM.set_bios_strings, vm, {"bios-vendor": "x"}) == ["VM_BIOS_STRINGS_ALREADY_SET"]
    other = new_vm(x, "bios")
    try:
        assert failure(x.VM.set_bios_strings, other, {"nonsense": "x"}) == ["INVALID_VALUE", "nonsense", "Unknown key"]
        assert failure(x.VM.set_bios_strings, other, {"bios-vendor": ""}) == \
            ["INVALID_VALUE", "bios-vendor", "Value provided is empty"]
        assert failure(x.VM.set_bios_strings, other, {"bios-vendor": "caf\u00e9"}) == \
            ["INVALID_VALUE", "bios-vendor", "caf\u00e9 has non-printable ASCII characters"]
        h = x.host.get_all()[0]
        x.VM.copy_bios_strings(other, h)
        assert x.VM.get_affinity(other) == h
        assert x.VM.get_bios_strings(other) == x.host.get_bios_strings(h)
    finally:
        x.VM.destroy(other)
    x.VM.set_NVRAM(vm, {"EFI-variables": "AAAA"})
    x.VM.add_to_NVRAM(vm, "x", "1")
    assert failure(x.VM.add_to_NVRAM, vm, "x", "2")[0] == "MAP_DUPLICATE_KEY"
    x.VM.remove_from_NVRAM(vm, "EFI-variables")
    assert x.VM.get_NVRAM(vm) == {"x": "1"}
    x.VM.set_has_vendor_device(vm, True)
    assert x.VM.get_has_vendor_device(vm) is True and int(x.VM.get_hardware_platform_version(vm)) >= 2
    x.VM.start(vm, False, False)
    assert failure(x.VM.set_has_vendor_device, vm, False) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]


def test_allowed_devices(x, vm):
    net = x.network.create({"name_label": "cov-net", "name_description": "", "MTU": "1500", "other_config": {}})
    try:
        assert x.VM.get_allowed_VIF_devices(vm) == [str(i) for i in range(7)]
        vif = x.VIF.create({"device": "2", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                            "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
        assert "2" not in x.VM.get_allowed_VIF_devices(vm) and len(x.VM.get_allowed_VIF_devices(vm)) == 6
        x.VIF.destroy(vif)
    finally:
        x.network.destroy(net)
    vbds = x.VM.get_allowed_VBD_devices(vm)
    assert vbds[:3] == ["0", "1", "2"] and vbds[-1] == "254"


def test_queries_and_what_xapi_leaves_out(x, vm):
    assert x.VM.get_cooperative(vm) is True
    assert failure(x.VM.get_boot_record, vm) == ["VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted"]
    assert failure(x.VM.send_sysrq, vm, "b") == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert failure(x.VM.set_memory_target_live, vm, str(256 * MIB)) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start(vm, False, False)
    assert x.VM.get_boot_record(vm)["uuid"] == x.VM.get_uuid(vm)
    assert failure(x.VM.send_sysrq, vm, "b") == ["NOT_IMPLEMENTED", "send_sysrq"]
    assert failure(x.VM.send_trigger, vm, "reset") == ["NOT_IMPLEMENTED", "send_trigger"]
    assert failure(x.VM.query_services, vm) == ["NOT_IMPLEMENTED", "query_services"]
    x.VM.set_memory_target_live(vm, str(256 * MIB))
    assert failure(x.VM.get_cooperative, "OpaqueRef:nope") == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]


def test_agility_and_recovery(x, vm):
    x.VM.assert_agile(vm)                         # no disks, no VIFs: nothing ties it to a host
    local = next(sr for sr, r in x.SR.get_all_records().items() if r["type"] == "ext" and not r["shared"])
    vdi = x.VDI.create({"name_label": "d", "name_description": "", "SR": local, "virtual_size": str(4 * MIB),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {}})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                        "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    try:
        assert failure(x.VM.assert_agile, vm) == ["HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", local]
        assert "0" not in x.VM.get_allowed_VBD_devices(vm)
        # its SR has an attached PBD here: nothing is missing to recover it into this pool
        assert x.VM.get_SRs_required_for_recovery(vm, "OpaqueRef:NULL") == []
    finally:
        x.VBD.destroy(vbd)
        x.VDI.destroy(vdi)


def test_appliance(x, vm):
    assert failure(x.VM.set_appliance, vm, "OpaqueRef:nope") == ["HANDLE_INVALID", "VM_appliance", "OpaqueRef:nope"]
    template = next(r for r, rec in x.VM.get_all_records().items() if rec["is_a_template"])
    assert failure(x.VM.set_appliance, template, "OpaqueRef:NULL") == \
        ["OPERATION_NOT_ALLOWED", "Control domains, templates and snapshots cannot be assigned to appliances."]
    x.VM.set_appliance(vm, "OpaqueRef:NULL")
    assert x.VM.get_appliance(vm) == "OpaqueRef:NULL"
