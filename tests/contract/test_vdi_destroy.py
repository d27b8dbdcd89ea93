"""VDI.destroy with VBDs of the VDI still in the database, as xapi_vdi.ml's destroy: a VBD that is
attached holds the VDI (VDI_IN_USE [vdi, "destroy"]); the others are destroyed with it."""
import pytest
import XenAPI

from tests import helpers
from tests.fixtures import own_daemon, root_xenapi

MIB = 1 << 20


d = own_daemon(env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("d")


def new_vm(x):
    return helpers.new_vm(x, "vdi-destroy", memory=64 * MIB, HVM_boot_params={"order": "c"})


def new_disk(x, vm):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = helpers.new_vdi(x, sr, 4 * MIB, name="d")
    vbd = x.VBD.create(helpers.vbd_record(vm, vdi))
    return vdi, vbd


def test_a_detached_vbd_goes_with_the_vdi(x):
    vm = new_vm(x)
    vdi, vbd = new_disk(x, vm)
    x.VDI.destroy(vdi)
    assert vdi not in x.VDI.get_all() and vbd not in x.VBD.get_all() and x.VM.get_VBDs(vm) == []
    x.VM.destroy(vm)


@helpers.needs_domains
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
