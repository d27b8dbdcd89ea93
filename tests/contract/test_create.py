"""VM.create stores what xapi's Xapi_vm.create stores, whatever the record it is given says: the new VM
is Halted on no host (domid -1), not a control domain or snapshot, with nothing blocked, no protection
policy or snapshot schedule, no suspend image or boot record, its own VM_metrics, a mac_seed and its
memory overhead; the domain type follows HVM_boot_policy when unspecified."""
import pytest
import XenAPI

from tests.fixtures import root_xenapi

NULL = "OpaqueRef:NULL"


x = root_xenapi("xapi_daemon", scope="function")


def test_create_from_a_running_vms_full_record_makes_a_halted_vm(x):
    dom0 = next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])
    rec = x.VM.get_record(dom0)
    assert rec["power_state"] == "Running" and rec["resident_on"] != NULL and rec["domid"] == "0"
    new = x.VM.create(rec)
    try:
        got = x.VM.get_record(new)
        assert got["power_state"] == "Halted" and got["resident_on"] == NULL and got["domid"] == "-1"
        assert got["is_control_domain"] is False and got["uuid"] != rec["uuid"]
        assert got["VBDs"] == [] and got["VIFs"] == [] and got["consoles"] == []
        assert got["current_operations"] == {} and "start" in got["allowed_operations"]
        assert got["metrics"] not in (NULL, rec["metrics"])
        metrics = x.VM_metrics.get_record(got["metrics"])
        assert metrics["memory_actual"] == "0" and metrics["VCPUs_number"] == "0"
        assert got["other_config"]["mac_seed"] and int(got["memory_overhead"]) > 0
        assert got["name_label"] == rec["name_label"] and got["memory_static_max"] == rec["memory_static_max"]
        assert x.VM.get_power_state(dom0) == "Running" and x.VM.get_metrics(dom0) == rec["metrics"]
    finally:
        x.VM.destroy(new)
    with pytest.raises(XenAPI.Failure) as e:
        x.VM_metrics.get_record(got["metrics"])     # destroyed with its VM
    assert e.value.details[0] == "HANDLE_INVALID"


def test_create_ignores_the_fields_xapi_sets_itself(x):
    dom0 = next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])
    vmss = x.VMSS.create({"name_label": "s", "name_description": "", "enabled": True, "type": "snapshot",
                          "retained_snapshots": 7, "frequency": "daily", "schedule": {}, "last_run_time": 0})
    rec = x.VM.get_record(dom0)
    rec.update({"name_label": "made", "is_control_domain": False, "power_state": "Paused",
                "blocked_operations": {"start": "no"}, "snapshot_schedule": vmss, "is_vmss_snapshot": True,
                "last_booted_record": "something", "last_boot_CPU_flags": {"vendor": "x"},
                "HVM_boot_policy": "BIOS order", "domain_type": "unspecified",
                "other_config": {"mac_seed": "kept-seed", "k": "v"}})
    new = x.VM.create(rec)
    try:
        got = x.VM.get_record(new)
        assert got["power_state"] == "Halted" and got["blocked_operations"] == {}
        assert got["snapshot_schedule"] == NULL and got["is_vmss_snapshot"] is False
        assert got["last_booted_record"] == "" and got["last_boot_CPU_flags"] == {}
        assert got["domain_type"] == "hvm"
        assert got["other_config"] == {"mac_seed": "kept-seed", "k": "v"}
        assert new not in x.VMSS.get_VMs(vmss)
        assert "start" in got["allowed_operations"]
    finally:
        x.VM.destroy(new)
        x.VMSS.destroy(vmss)


def test_create_with_a_missing_constructor_field_is_refused(x):
    dom0 = next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])
    rec = x.VM.get_record(dom0)
    before = set(x.VM.get_all())
    del rec["memory_static_max"]
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.create(rec)
    assert e.value.details[0] == "INTERNAL_ERROR" and "memory_static_max" in e.value.details[1]
    assert set(x.VM.get_all()) == before


def test_device_creates_keep_and_reset_what_xapi_does(x):
    """VBD.create (xapi_vbd.ml) resets the runtime fields: not attached, no device, status 0, no lock;
    VIF.create (xapi_vif_helpers.ml) resets the status but stores currently_attached as given."""
    dom0 = next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])
    vm = x.VM.create(x.VM.get_record(dom0))
    sr = x.SR.get_all()[0]
    vdi = x.VDI.create({"SR": sr, "virtual_size": 1 << 20, "type": "user", "sharable": False, "read_only": False,
                        "other_config": {}, "name_label": "create-test", "name_description": ""})
    try:
        vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "1", "bootable": False, "mode": "RW",
                            "type": "Disk", "unpluggable": True, "empty": False, "other_config": {},
                            "qos_algorithm_type": "", "qos_algorithm_params": {}, "currently_attached": True,
                            "device": "xvdq", "status_code": "5", "status_detail": "x", "storage_lock": True})
        r = x.VBD.get_record(vbd)
        assert (r["currently_attached"], r["device"], r["status_code"], r["status_detail"], r["storage_lock"]) == \
            (False, "", "0", "", False)
        assert r["metrics"] != NULL and r["userdevice"] == "1"
        vif = x.VIF.create({"device": "0", "network": x.network.get_all()[0], "VM": vm, "MAC": "", "MTU": "1500",
                            "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
                            "currently_attached": True, "status_code": "7"})
        r = x.VIF.get_record(vif)
        assert r["currently_attached"] is True and r["status_code"] == "0" and r["MAC_autogenerated"] is True
    finally:
        x.VM.destroy(vm)
        x.VDI.destroy(vdi)
