"""xe's snapshot-* and template-uninstall commands with the real `xe` on a live daemon: they take one
snapshot (or template) by uuid, refuse other VMs with cli_operations' texts, and leave the rows the
XenAPI SDK then reads."""
from __future__ import annotations

import pytest

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import new_vdi, new_vm, vbd_record

host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


@pytest.fixture
def vm_with_disk(x, sr):
    vm = new_vm(x, "xe-snap-src")
    vdi = new_vdi(x, sr, name="xe-snap-disk")
    x.VBD.create(vbd_record(vm, vdi))
    yield vm, vdi
    for s in x.VM.get_snapshots(vm):
        for vbd in x.VM.get_VBDs(s):
            v = x.VBD.get_VDI(vbd)
            x.VM.destroy(s) if s in x.VM.get_all() else None
            if v in x.VDI.get_all():
                x.VDI.destroy(v)
    if vm in x.VM.get_all():
        x.VM.destroy(vm)
    if vdi in x.VDI.get_all():
        x.VDI.destroy(vdi)


def test_snapshot_clone_copy_destroy(host, x, sr, vm_with_disk):
    vm, _ = vm_with_disk
    snap = x.VM.snapshot(vm, "xe-snap", [])
    su = x.VM.get_uuid(snap)
    not_snap = xe(host, "snapshot-clone", f"uuid={x.VM.get_uuid(vm)}", "new-name-label=t")
    assert not_snap.stderr == (f"Error: This operation can only be performed on a VM snapshot. "
                               f"{x.VM.get_uuid(vm)} is not a VM snapshot.\n")
    missing = xe(host, "snapshot-destroy")
    assert missing.stderr == "Error: Required parameter not found: snapshot-uuid or uuid.\n"
    t1 = x.VM.get_by_uuid(ok(xe(host, "snapshot-clone", f"uuid={su}", "new-name-label=from-snap",
                                "new-name-description=cloned")))
    assert x.VM.get_is_a_template(t1) is True and x.VM.get_name_description(t1) == "cloned"
    assert len(x.VM.get_VBDs(t1)) == 1
    t2 = x.VM.get_by_uuid(ok(xe(host, "snapshot-copy", f"uuid={su}", "new-name-label=copied",
                                f"sr-uuid={x.SR.get_uuid(sr)}")))
    assert x.VM.get_name_label(t2) == "copied" and x.VM.get_is_a_template(t2) is True
    for t in (t1, t2):
        ok(xe(host, "template-uninstall", f"template-uuid={x.VM.get_uuid(t)}", "--force"))
        assert t not in x.VM.get_all()
    vdis = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(snap)]
    ok(xe(host, "snapshot-destroy", f"snapshot-uuid={su}"))
    assert snap not in x.VM.get_all() and all(v in x.VDI.get_all() for v in vdis)   # the disks stay
    for v in vdis:
        x.VDI.destroy(v)


def test_snapshot_uninstall_and_reset(host, x, vm_with_disk):
    vm, _ = vm_with_disk
    snap = x.VM.snapshot(vm, "xe-snap-un", [])
    su = x.VM.get_uuid(snap)
    refused = xe(host, "snapshot-reset-powerstate", f"uuid={su}")
    assert refused.stderr == ("Error: This operation is dangerous and may cause data loss. This operation "
                              "must be forced (use --force).\n")
    ok(xe(host, "snapshot-reset-powerstate", f"uuid={su}", "--force"))
    assert x.VM.get_power_state(snap) == "Halted"
    vdis = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(snap)]
    out = ok(xe(host, "snapshot-uninstall", f"uuid={su}", "--force"))
    assert out.splitlines()[0] == "The following items are about to be destroyed"
    assert f"VM : {su} (xe-snap-un)" in out and out.splitlines()[-1] == "All objects destroyed"
    assert snap not in x.VM.get_all() and not any(v in x.VDI.get_all() for v in vdis)
    not_template = xe(host, "template-uninstall", f"template-uuid={x.VM.get_uuid(vm)}", "--force")
    assert not_template.stderr == (f"Error: This operation can only be performed on a VM template. "
                                   f"{x.VM.get_uuid(vm)} is not a VM template.\n")
