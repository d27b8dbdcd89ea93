"""VM.set_suspend_VDI (xapi.actions.vm_settings) with the XenAPI SDK against a real daemon: a suspended
VM's image moves to a copy holding the same bytes (MD5 through the VHD chain) and the VM resumes from
it; a VDI with other bytes, a halted VM or a cbt_metadata VDI are refused as xapi refuses them."""
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import NULL, failure, needs_domains, new_vdi, new_vm, wait_for

pytestmark = needs_domains

host = own_daemon("--request-timeout", "20", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                  "XAPI_GUEST_AGENT_DELAY": "0.1"})
x = root_xenapi("host")


def test_suspend_vdi_replaced_by_an_identical_copy(x, sr):
    vm = new_vm(x, "sus-vdi")
    assert failure(x.VM.set_suspend_VDI, vm, NULL) == ["VM_BAD_POWER_STATE", vm, "suspended", "halted"]
    x.VM.start(vm, False, False)
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != NULL)
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    other = new_vdi(x, sr, size=int(x.VDI.get_virtual_size(image)), name="not-the-image")
    try:
        err = failure(x.VM.set_suspend_VDI, vm, other)
        assert err[0] == "SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL"
        assert err[1].startswith(x.VDI.get_uuid(image) + " : ") and err[2].startswith(x.VDI.get_uuid(other) + " : ")
        assert err[1].split(" : ")[1] != err[2].split(" : ")[1]
        assert x.VM.get_suspend_VDI(vm) == image
        assert failure(x.VM.set_suspend_VDI, vm, "OpaqueRef:nope") == ["HANDLE_INVALID", "VDI", "OpaqueRef:nope"]
    finally:
        x.VDI.destroy(other)
    copy = x.VDI.copy(image, sr)
    x.VM.set_suspend_VDI(vm, copy)
    assert x.VM.get_suspend_VDI(vm) == copy
    x.VDI.destroy(image)                      # the old image is no longer needed
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_suspend_VDI(vm) == NULL
    assert copy not in x.VDI.get_all()        # resume consumed the image it was given
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
