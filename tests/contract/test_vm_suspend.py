"""VM.suspend / resume / resume_on and hard_shutdown of a suspended VM against a real daemon with the
XenAPI SDK: the memory image lands in a suspend VDI (read back over /export_raw_vdi and checked),
disks are released and re-attached, damage and cancellation leave the VM as it was."""
import io
import time

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import (MIB, NULL, datapaths, failure, needs_domains, new_vdi, new_vm, raw_vdi, vbd_record,
                           wait_for, xenopsd)
from xapi.xenops import image

pytestmark = needs_domains


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                 "XAPI_GUEST_AGENT_DELAY": "0.1"})
session = root_session("host")
x = xenapi_of("session")


def running_vm_with_disk(x, sr, name):
    vm = new_vm(x, name)
    vbd = x.VBD.create(vbd_record(vm, new_vdi(x, sr)))
    x.VM.start(vm, False, False)
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != NULL)
    return vm, vbd


def test_suspend_writes_the_image_into_a_suspend_vdi_and_resume_brings_the_vm_back(host, session, x, sr):
    vm, vbd = running_vm_with_disk(x, sr, "sus")
    uuid = x.VM.get_uuid(vm)
    assert "suspend" in x.VM.get_allowed_operations(vm)
    os_version = x.VM_guest_metrics.get_os_version(x.VM.get_guest_metrics(vm))
    x.VM.suspend(vm)

    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended" and rec["domid"] == "-1" and rec["resident_on"] == NULL
    assert "resume" in rec["allowed_operations"] and "suspend" not in rec["allowed_operations"]
    vdi = rec["suspend_VDI"]
    v = x.VDI.get_record(vdi)
    assert (v["name_label"], v["type"], v["SR"], v["sm_config"].get("vmhint")) == \
        ("Suspend image", "suspend", sr, uuid)
    assert int(v["virtual_size"]) >= 256 * MIB * 1.2
    assert x.VBD.get_currently_attached(vbd) is False
    assert f"vbd/{uuid}/0" not in datapaths(host)
    info = image.read(io.BytesIO(raw_vdi(host, session, "export_raw_vdi", vdi)))
    assert (info.vm_uuid, info.memory, info.vcpus) == (uuid, 256 * MIB, 1)
    assert info.state["guest_agent"]["data/os_name"] == os_version["name"]

    x.VM.resume(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and int(rec["domid"]) > 0 and rec["suspend_VDI"] == NULL
    assert vdi not in x.VDI.get_all()
    assert x.VBD.get_currently_attached(vbd) is True
    assert x.VM_guest_metrics.get_os_version(x.VM.get_guest_metrics(vm)) == os_version
    x.VM.hard_shutdown(vm)


def test_resume_paused_and_resume_on(host, x, sr):
    vm = new_vm(x, "paused-resume")
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    x.VM.resume(vm, True, False)
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.unpause(vm)
    x.VM.suspend(vm)
    me = x.host.get_all()[0]
    assert failure(x.VM.resume_on, vm, "OpaqueRef:nope", False, False)[:2] == ["HANDLE_INVALID", "host"]
    x.VM.resume_on(vm, me, False, False)
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_resident_on(vm) == me
    x.VM.hard_shutdown(vm)


def test_hard_shutdown_of_a_suspended_vm_destroys_its_image(x, sr):
    vm = new_vm(x, "sus-halt")
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    vdi = x.VM.get_suspend_VDI(vm)
    assert failure(x.VM.clean_shutdown, vm)[0] == "VM_BAD_POWER_STATE"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_suspend_VDI(vm) == NULL
    assert vdi not in x.VDI.get_all()
    x.VM.destroy(vm)


def test_power_state_errors(x):
    vm = new_vm(x, "sus-errors")
    assert failure(x.VM.suspend, vm) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert failure(x.VM.resume, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "suspended", "halted"]
    x.VM.start(vm, False, False)
    assert failure(x.VM.resume, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "suspended", "running"]
    assert failure(x.VM.suspend, "OpaqueRef:nope")[:2] == ["HANDLE_INVALID", "VM"]
    x.VM.hard_shutdown(vm)


def test_no_suspend_sr(x, sr):
    pool = x.pool.get_all()[0]
    me = x.host.get_all()[0]
    saved = (x.pool.get_suspend_image_SR(pool), x.host.get_suspend_image_sr(me))
    vm = new_vm(x, "no-sr")
    x.VM.start(vm, False, False)
    x.pool.set_default_SR(pool, NULL)
    x.pool.set_suspend_image_SR(pool, NULL)
    x.host.set_suspend_image_sr(me, NULL)
    try:
        assert failure(x.VM.suspend, vm) == ["VM_NO_SUSPEND_SR", vm]
        assert x.VM.get_power_state(vm) == "Running"
    finally:
        x.pool.set_default_SR(pool, sr)
        x.pool.set_suspend_image_SR(pool, saved[0])
        x.host.set_suspend_image_sr(me, saved[1])
    x.VM.set_suspend_SR(vm, sr)
    x.VM.suspend(vm)
    assert x.VDI.get_SR(x.VM.get_suspend_VDI(vm)) == sr
    x.VM.hard_shutdown(vm)


def test_a_damaged_image_fails_resume_and_the_vm_stays_suspended(host, session, x):
    vm = new_vm(x, "damaged")
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    vdi = x.VM.get_suspend_VDI(vm)
    data = bytearray(raw_vdi(host, session, "export_raw_vdi", vdi)[:MIB])
    data[image.HEADER_SIZE + 1000] ^= 0xFF
    raw_vdi(host, session, "import_raw_vdi", vdi, bytes(data))
    err = failure(x.VM.resume, vm, False, False)
    assert err[0] == "INTERNAL_ERROR" and "checksum" in err[1], err
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended" and rec["suspend_VDI"] == vdi and rec["current_operations"] == {}
    assert xenopsd(host, "VM.stat", rec["uuid"])["power_state"] == "Halted"
    x.VM.hard_shutdown(vm)


def test_another_vms_image_is_refused(host, session, x):
    a, b = new_vm(x, "img-a"), new_vm(x, "img-b")
    for vm in (a, b):
        x.VM.start(vm, False, False)
        x.VM.suspend(vm)
    image_of_a = raw_vdi(host, session, "export_raw_vdi", x.VM.get_suspend_VDI(a))[:MIB]
    raw_vdi(host, session, "import_raw_vdi", x.VM.get_suspend_VDI(b), image_of_a)
    err = failure(x.VM.resume, b, False, False)
    assert err[0] == "INTERNAL_ERROR" and x.VM.get_uuid(a) in err[1] and x.VM.get_uuid(b) in err[1], err
    assert x.VM.get_power_state(b) == "Suspended"
    x.VM.resume(a, False, False)
    assert x.VM.get_power_state(a) == "Running"
    for vm in (a, b):
        x.VM.hard_shutdown(vm)


def test_cancelled_suspend_leaves_the_vm_running_without_an_image(host, x, sr):
    vm = new_vm(x, "cancel-suspend")
    x.VM.start(vm, False, False)
    vdis = set(x.VDI.get_all())
    xenopsd(host, "DEBUG.set", "build_delay", 5.0)
    try:
        task = x.Async.VM.suspend(vm)
        assert wait_for(lambda: float(x.task.get_progress(task)) > 0.0, 10)
        x.task.cancel(task)
        assert wait_for(lambda: x.task.get_status(task) not in ("pending", "cancelling"), 10)
    finally:
        xenopsd(host, "DEBUG.set", "build_delay", 0.0)
    assert x.task.get_status(task) == "cancelled"
    assert wait_for(lambda: x.VM.get_current_operations(vm) == {})
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_suspend_VDI(vm) == NULL
    assert wait_for(lambda: set(x.VDI.get_all()) == vdis)
    x.VM.hard_shutdown(vm)


def test_a_client_waiting_for_suspend_in_allowed_operations_sees_it(host, x, sr):
    """As Xen Orchestra does: every object loaded with event.from, the VM started, then event.from
    followed until the VM's cached record allows suspend, which is then called (and, in the same
    way, resume once the suspended VM's record allows it). The HVM guest offers suspend only once
    its agent has reported (a second after boot here), as in xapi."""
    xenopsd(host, "DEBUG.set", "guest_agent_delay", 1.0)
    try:
        _wait_for_suspend_as_xen_orchestra(x, sr)
    finally:
        xenopsd(host, "DEBUG.set", "guest_agent_delay", 0.1)


def _wait_for_suspend_as_xen_orchestra(x, sr):
    event_from = getattr(x.event, "from")
    vm = new_vm(x, "xo-wait")
    x.VBD.create(vbd_record(vm, new_vdi(x, sr)))
    first = event_from(["*"], "", 0.0)
    cache = {e["ref"]: e["snapshot"] for e in first["events"] if e["class"].lower() == "vm"}
    token = first["token"]

    def wait_until(pred):
        nonlocal token
        deadline = time.monotonic() + 10
        while not pred(cache[vm]):
            assert time.monotonic() < deadline, cache[vm]
            batch = event_from(["*"], token, 5.0)
            token = batch["token"]
            for e in batch["events"]:
                if e["class"].lower() == "vm" and e["operation"] != "del":
                    cache[e["ref"]] = e["snapshot"]
        return cache[vm]

    assert "suspend" not in cache[vm]["allowed_operations"]
    x.VM.start(vm, False, False)
    assert "suspend" not in x.VM.get_allowed_operations(vm)        # no agent yet
    rec = wait_until(lambda r: "suspend" in r["allowed_operations"])
    assert rec["power_state"] == "Running" and rec["current_operations"] == {}
    assert rec["guest_metrics"] != NULL
    x.VM.suspend(vm)
    rec = wait_until(lambda r: "resume" in r["allowed_operations"])
    assert rec["power_state"] == "Suspended" and "suspend" not in rec["allowed_operations"]
    x.VM.resume(vm, False, False)
    rec = wait_until(lambda r: "suspend" in r["allowed_operations"])
    assert rec["power_state"] == "Running"
    x.VM.hard_shutdown(vm)
