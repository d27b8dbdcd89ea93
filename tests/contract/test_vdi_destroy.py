"""VDI.destroy with VBDs of the VDI still in the database, as xapi_vdi.ml's destroy: a VBD that is
attached holds the VDI (VDI_IN_USE [vdi, "destroy"]); the others are destroyed with it."""
import pytest
import XenAPI

from tests import daemon as _daemon
from xapi import xenctrl

MIB = 1 << 20


@pytest.fixture(scope="module")
def d():
    daemon = _daemon.start(env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
    yield daemon
    _daemon.cleanup(daemon)


@pytest.fixture(scope="module")
def x(d):
    s = XenAPI.Session(d.url)
    s.xenapi.login_with_password("root", d.password)
    yield s.xenapi
    s.xenapi.session.logout()


def new_vm(x):
    mem = str(64 * MIB)
    return x.VM.create({
        "name_label": "vdi-destroy", "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": mem, "memory_dynamic_max": mem,
        "memory_dynamic_min": mem, "memory_static_min": mem, "VCPUs_params": {}, "VCPUs_max": "1",
        "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
        "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "c"}, "platform": {}, "PCI_bus": "", "other_config": {},
        "recommendations": ""})


def new_disk(x, vm):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"name_label": "d", "name_description": "", "SR": sr, "virtual_size": str(4 * MIB),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {}})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                        "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return vdi, vbd


def test_a_detached_vbd_goes_with_the_vdi(x):
    vm = new_vm(x)
    vdi, vbd = new_disk(x, vm)
    x.VDI.destroy(vdi)
    assert vdi not in x.VDI.get_all() and vbd not in x.VBD.get_all() and x.VM.get_VBDs(vm) == []
    x.VM.destroy(vm)


@pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                    reason="the xenctrl shim has no domain operations")
def test_an_attached_vbd_holds_the_vdi(x):
    vm = new_vm(x)
    vdi, vbd = new_disk(x, vm)
    x.VM.start(vm, False, False)
    try:
        assert x.VBD.get_currently_attached(vbd)
        with pytest.raises(XenAPI.Failure) as e:
            x.VDI.destroy(vdi)
        assert e.value.details == ["VDI_IN_USE", vdi, "destroy"]
    finally:
        x.VM.hard_shutdown(vm)
    x.VDI.destroy(vdi)
    assert vbd not in x.VBD.get_all()
    x.VM.destroy(vm)
