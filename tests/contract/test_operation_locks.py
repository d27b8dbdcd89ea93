"""The current_operations lock (xapi.forwarding.locks) seen from a client: while an XVA export
streams, the VM holds {task ref: "export"} and refuses a start with OTHER_OPERATION_IN_PROGRESS
[VM, ref, op, task]; when the client goes away mid-stream the entry goes and start comes back. A
refused device operation leaves nothing behind."""
import contextlib
import http.client
import os
import socket

import pytest

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import MIB, failure, management_network, new_vdi, new_vm, raw_vdi, vbd_record, \
    vif_record, wait_for, xenopsd

d = own_daemon("--request-timeout", "20")
api = root_session("d", originator="lock-tests")
x = xenapi_of("api")


@pytest.fixture(scope="module")
def vm_with_disk(d, api, x, sr):
    """A halted VM whose disk holds 48 MiB of random data: more than the sockets buffer, so an
    export whose reader stops stays in progress."""
    vm = new_vm(x, "locked")
    vdi = new_vdi(x, sr, 48 * MIB, "locked-disk")
    raw_vdi(d, api, "import_raw_vdi", vdi, os.urandom(48 * MIB))
    x.VBD.create(vbd_record(vm, vdi))
    return vm


@contextlib.contextmanager
def stalled_export(d, api, vm, task):
    """GET /export whose reader takes 1 MiB and stops; leaving the block drops the connection."""
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=20)
    try:
        c.request("GET", f"/export?session_id={api._session}&ref={vm}&task_id={task}")
        with c.getresponse() as r:                     # the socket goes with its last holder
            assert r.status == 200 and r.getheader("Task-Id") == task
            assert len(r.read(MIB)) == MIB
            yield
    finally:
        c.close()


def test_export_holds_the_vm_until_the_client_goes(d, api, x, vm_with_disk):
    vm = vm_with_disk
    assert x.VM.get_current_operations(vm) == {} and "start" in x.VM.get_allowed_operations(vm)
    task = x.task.create("export", "")
    with stalled_export(d, api, vm, task):
        assert x.VM.get_current_operations(vm) == {task: "export"}
        assert "start" not in x.VM.get_allowed_operations(vm)
        assert failure(x.VM.start, vm, False, False) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "export", task]
        assert x.task.get_status(task) == "pending"
    assert wait_for(lambda: x.VM.get_current_operations(vm) == {}, 10)
    assert wait_for(lambda: "start" in x.VM.get_allowed_operations(vm), 5)
    assert wait_for(lambda: x.task.get_status(task) != "pending", 10)
    x.VM.start(vm, False, False)                        # nothing left holding it
    x.VM.hard_shutdown(vm)
    assert x.VM.get_current_operations(vm) == {}


def test_refused_device_operations_leave_nothing_behind(x, sr):
    vm = new_vm(x, "devices")
    vbd = x.VBD.create(vbd_record(vm, new_vdi(x, sr)))
    vif = x.VIF.create(vif_record(vm, management_network(x)))
    assert failure(x.VBD.plug, vbd) == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]
    assert failure(x.VIF.plug, vif) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert failure(x.VBD.insert, vbd, x.VBD.get_VDI(vbd)) == ["VBD_NOT_REMOVABLE_MEDIA", vbd]
    assert failure(x.VBD.plug, "OpaqueRef:nope") == ["HANDLE_INVALID", "VBD", "OpaqueRef:nope"]
    assert x.VBD.get_current_operations(vbd) == {} and x.VIF.get_current_operations(vif) == {}
    assert "attach" in x.VBD.get_allowed_operations(vbd) and "attach" in x.VIF.get_allowed_operations(vif)


def test_copies_of_one_vm_run_alongside_each_other(d, api, x, vm_with_disk):
    """xapi_vm_lifecycle.is_allowed_concurrently: clone, copy and export of one VM may overlap; a
    start may not."""
    vm = vm_with_disk
    task = x.task.create("export", "")
    with stalled_export(d, api, vm, task):
        allowed = set(x.VM.get_allowed_operations(vm))
        assert {"clone", "copy", "export"} <= allowed and "start" not in allowed and "destroy" not in allowed
        clone = x.VM.clone(vm, "clone-during-export")
        assert x.VM.get_current_operations(vm) == {task: "export"}
        assert failure(x.VM.destroy, vm) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "export", task]
    assert wait_for(lambda: x.VM.get_current_operations(vm) == {}, 10)
    assert x.VM.get_power_state(clone) == "Halted" and len(x.VM.get_VBDs(clone)) == 1
    x.VM.destroy(clone)


def test_hard_shutdown_interrupts_a_clean_shutdown(d, x):
    """message_forwarding.ml: hard_shutdown may run while a clean shutdown is in progress (not
    beside another hard_shutdown) and cancels it first."""
    vm = new_vm(x, "stubborn", HVM_boot_policy="", HVM_boot_params={})
    x.VM.start(vm, False, False)
    xenopsd(d, "DEBUG.set", "shutdown_delay", 5.0)
    try:
        task = x.Async.VM.clean_shutdown(vm)
        assert wait_for(lambda: x.VM.get_current_operations(vm) == {task: "clean_shutdown"}, 5)
        allowed = set(x.VM.get_allowed_operations(vm))
        assert "hard_shutdown" in allowed and "hard_reboot" in allowed and "clean_reboot" not in allowed
        assert failure(x.VM.pause, vm) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clean_shutdown", task]
        x.VM.hard_shutdown(vm)
        assert x.task.get_status(task) == "cancelled"
    finally:
        xenopsd(d, "DEBUG.set", "shutdown_delay", 0.1)
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_current_operations(vm) == {}
    assert "start" in x.VM.get_allowed_operations(vm)


def test_an_import_holds_its_new_vm_until_it_completes(d, api, x, sr, vm_with_disk):
    """The VM an XVA import creates holds {task: import} until the import ends; a client that goes
    away mid-stream leaves no VM behind."""
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
    try:
        c.request("GET", f"/export?session_id={api._session}&ref={vm_with_disk}")
        with c.getresponse() as r:
            assert r.status == 200
            archive = r.read()
    finally:
        c.close()
    task = x.task.create("import", "")
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
    try:
        s.sendall(f"PUT /import?session_id={api._session}&task_id={task}&sr_id={sr} HTTP/1.1\r\n"
                  f"Host: x\r\nContent-Length: {len(archive)}\r\n\r\n".encode() + archive[:4 * MIB])

        def importing():
            return [v for v, r in x.VM.get_all_records().items()
                    if r["other_config"].get("import_task") == task]
        assert wait_for(lambda: importing() and x.VM.get_current_operations(importing()[0]), 10)
        new = importing()[0]
        assert x.VM.get_current_operations(new) == {task: "import"}
        assert failure(x.VM.start, new, False, False) == ["OTHER_OPERATION_IN_PROGRESS", "VM", new, "import", task]
    finally:
        s.close()
    assert wait_for(lambda: new not in x.VM.get_all(), 10)
    assert wait_for(lambda: x.task.get_status(task) != "pending", 10)


def test_vdi_copy_marks_the_vdi(x, sr, vm_with_disk):
    """VDI.copy holds {task: copy} on its VDI (message_forwarding.ml's with_sr_andor_vdi): a copy
    blocks no other operation by itself but a snapshot (OPERATION_NOT_ALLOWED, xapi_vdi.ml)."""
    (vbd,) = x.VM.get_VBDs(vm_with_disk)
    vdi = x.VBD.get_VDI(vbd)
    assert x.VDI.get_current_operations(vdi) == {} and "snapshot" in x.VDI.get_allowed_operations(vdi)
    seen_vdi, refused = [], None
    task = x.Async.VDI.copy(vdi, sr)
    while x.task.get_status(task) == "pending":
        ops = x.VDI.get_current_operations(vdi)
        if ops:
            seen_vdi.append((ops, x.VDI.get_allowed_operations(vdi)))
            if refused is None:
                refused = failure(x.VDI.snapshot, vdi, {})
    assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    assert seen_vdi and all(ops == {task: "copy"} for ops, _ in seen_vdi)
    assert all("snapshot" not in allowed and {"copy", "clone"} <= set(allowed) for _, allowed in seen_vdi)
    assert refused == ["OPERATION_NOT_ALLOWED", "Snapshot operation not allowed during copy."]
    assert x.VDI.get_current_operations(vdi) == {} and "snapshot" in x.VDI.get_allowed_operations(vdi)
    assert x.SR.get_current_operations(sr) == {}
    x.VDI.destroy(x.task.get_result(task).split("<value>")[1].split("</value>")[0])


def test_sr_operations_wait_for_each_other(x, sr):
    """An SR runs one operation at a time (xapi_sr_operations.ml); a caller refused with
    OTHER_OPERATION_IN_PROGRESS waits and tries again (retry_with_global_lock), so concurrent VDI
    creations all succeed, one after the other, each holding {task: vdi_create} on the SR."""
    tasks = [x.Async.VDI.create({"name_label": f"together{i}", "SR": sr, "virtual_size": str(MIB), "type": "user",
                                 "sharable": False, "read_only": False, "other_config": {}}) for i in range(4)]
    seen = []
    while any(x.task.get_status(t) == "pending" for t in tasks):
        ops = x.SR.get_current_operations(sr)
        if ops:
            seen.append(ops)
    assert seen and all(len(ops) == 1 and list(ops.values()) == ["vdi_create"] and set(ops) <= set(tasks)
                        for ops in seen)
    assert [x.task.get_status(t) for t in tasks] == ["success"] * 4, [x.task.get_error_info(t) for t in tasks]
    made = [x.task.get_result(t).split("<value>")[1].split("</value>")[0] for t in tasks]
    assert sorted(x.VDI.get_name_label(v) for v in made) == [f"together{i}" for i in range(4)]
    assert x.SR.get_current_operations(sr) == {}
    for v in made:
        x.VDI.destroy(v)


def test_sr_and_vdi_allowed_operations(d, api, x, sr, vm_with_disk):
    """SR allowed_operations follow the driver's features and the PBDs (ext: no vdi_introduce; no
    destroy/forget while plugged); a VDI whose datapath is in use (an export streams it) refuses the
    operations that can't run live with VDI_IN_USE [vdi, op]."""
    allowed = set(x.SR.get_allowed_operations(sr))
    assert {"scan", "vdi_create", "vdi_destroy", "vdi_clone", "vdi_snapshot", "vdi_resize", "update"} <= allowed
    assert not allowed & {"vdi_introduce", "destroy", "forget"}
    (vbd,) = x.VM.get_VBDs(vm_with_disk)
    vdi = x.VBD.get_VDI(vbd)
    assert {"destroy", "resize", "snapshot", "clone", "copy"} <= set(x.VDI.get_allowed_operations(vdi))
    task = x.task.create("export", "")
    with stalled_export(d, api, vm_with_disk, task):
        assert failure(x.VDI.destroy, vdi) == ["VDI_IN_USE", vdi, "destroy"]
        assert failure(x.VDI.resize, vdi, str(64 * MIB)) == ["VDI_IN_USE", vdi, "resize"]
    assert wait_for(lambda: x.task.get_status(task) != "pending", 10)
    assert x.VDI.get_current_operations(vdi) == {}
