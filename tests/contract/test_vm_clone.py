"""VM.clone / copy / snapshot / checkpoint / revert against a real daemon with the XenAPI SDK: disks go
through the SR (differencing VHDs for clone and snapshot, byte copies for copy, checked by reading the
data back over /export_raw_vdi), records carry what xapi copies and resets, snapshot trees link up."""
import http.client
import os
import tempfile

import pytest
import XenAPI

from tests import daemon as _daemon
from tests.contract.test_devices import management_network, new_vdi, vbd_record, vif_record
from tests.contract.test_vm_lifecycle import failure, new_vm
from xapi import xenctrl

pytestmark = pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                                reason="the xenctrl shim has no domain operations yet")
MIB = 1 << 20
NULL = "OpaqueRef:NULL"


@pytest.fixture(scope="module")
def host():
    d = _daemon.start("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                       "XAPI_GUEST_AGENT_DELAY": "0.1"})
    yield d
    _daemon.cleanup(d)


@pytest.fixture(scope="module")
def session(host):
    s = XenAPI.Session(host.url)
    s.xenapi.login_with_password("root", host.password)
    yield s
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def x(session):
    return session.xenapi


@pytest.fixture(scope="module")
def sr(x):
    return x.pool.get_default_SR(x.pool.get_all()[0])


def raw(host, session, method, vdi, body=None):
    c = http.client.HTTPConnection("127.0.0.1", host.http_port, timeout=30)
    try:
        c.request("PUT" if body is not None else "GET",
                  f"/{method}?session_id={session._session}&vdi={vdi}&format=raw", body=body)
        r = c.getresponse()
        data = r.read()
        assert r.status == 200, (r.status, data[:200])
        return data
    finally:
        c.close()


def vm_with_disk(host, session, x, sr, name, data=b"original"):
    vm = new_vm(x, name)
    x.VM.set_other_config(vm, {"keep": "me", "default_template": "true"})
    disk = new_vdi(x, sr, 4 * MIB, name="disk0")
    raw(host, session, "import_raw_vdi", disk, data.ljust(MIB, b"\0"))
    x.VBD.create(vbd_record(vm, disk))
    x.VIF.create(vif_record(vm, management_network(x), mac="00:16:3e:aa:bb:01"))
    return vm, disk


def disks_of(x, vm):
    return [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm) if x.VBD.get_type(v) == "Disk"]


def first_bytes(host, session, vdi, n=8):
    return raw(host, session, "export_raw_vdi", vdi)[:n]


def test_clone_makes_a_new_top_level_vm_on_cloned_disks(host, session, x, sr):
    vm, disk = vm_with_disk(host, session, x, sr, "orig")
    orig = x.VM.get_record(vm)
    assert "clone" in orig["allowed_operations"]
    new = x.VM.clone(vm, "the clone")
    rec = x.VM.get_record(new)
    assert rec["uuid"] != orig["uuid"] and rec["name_label"] == "the clone"
    assert (rec["power_state"], rec["is_a_template"], rec["is_a_snapshot"], rec["parent"]) == \
        ("Halted", False, False, NULL)
    for k in ("memory_static_max", "VCPUs_max", "HVM_boot_params", "platform", "name_description"):
        assert rec[k] == orig[k], k
    assert rec["other_config"]["keep"] == "me" and "default_template" not in rec["other_config"]
    assert rec["other_config"]["mac_seed"] != orig["other_config"].get("mac_seed")
    assert rec["current_operations"] == {} and "start" in rec["allowed_operations"]
    [new_disk] = disks_of(x, new)
    assert new_disk != disk and x.VDI.get_SR(new_disk) == sr
    assert x.VDI.get_sm_config(new_disk).get("vhd-parent")             # a differencing child
    assert first_bytes(host, session, new_disk) == b"original"
    vbd = x.VM.get_VBDs(new)[0]
    assert x.VBD.get_other_config(vbd)["owner"] == "" and x.VBD.get_userdevice(vbd) == "0"
    [vif] = x.VM.get_VIFs(new)
    assert x.VIF.get_MAC(vif) != "00:16:3e:aa:bb:01" and x.VIF.get_network(vif) == management_network(x)
    # the disks are independent afterwards
    raw(host, session, "import_raw_vdi", new_disk, b"changed!".ljust(MIB, b"\0"))
    assert first_bytes(host, session, disk) == b"original"
    x.VM.start(new, False, False)
    assert failure(x.VM.clone, new, "x")[0] == "VM_BAD_POWER_STATE"
    x.VM.hard_shutdown(new)


def test_clone_of_a_template_keeps_its_name_in_other_config(x):
    debian = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    new = x.VM.clone(debian, "my debian")
    rec = x.VM.get_record(new)
    assert rec["is_a_template"] is True and rec["is_default_template"] is False
    assert rec["other_config"]["base_template_name"] == "Debian Bookworm 12"
    assert "disks" in rec["other_config"] and "default_template" not in rec["other_config"]
    x.VM.destroy(new)


def test_copy_to_the_same_and_another_sr(host, session, x, sr):
    vm, disk = vm_with_disk(host, session, x, sr, "to-copy", b"copydata")
    same = x.VM.copy(vm, "copy here", "")
    [d1] = disks_of(x, same)
    assert x.VDI.get_SR(d1) == sr and not x.VDI.get_sm_config(d1).get("vhd-parent")
    assert first_bytes(host, session, d1) == b"copydata"
    me = x.host.get_all()[0]
    other = x.SR.create(me, {"path": tempfile.mkdtemp(prefix="xapi-copy-sr-")}, "0", "other", "", "ext",
                        "user", False, {})
    there = x.VM.copy(vm, "copy there", other)
    [d2] = disks_of(x, there)
    assert x.VDI.get_SR(d2) == other and first_bytes(host, session, d2) == b"copydata"
    assert x.VM.get_name_label(there) == "copy there" and x.VM.get_parent(there) == NULL
    assert failure(x.VM.copy, vm, "bad", "OpaqueRef:nope")[:2] == ["HANDLE_INVALID", "SR"]


def test_snapshot_and_revert(host, session, x, sr):
    vm, disk = vm_with_disk(host, session, x, sr, "snapme", b"before!!")
    x.VM.set_PV_args(vm, "two")
    snap = x.VM.snapshot(vm, "snap1")
    s = x.VM.get_record(snap)
    assert (s["is_a_snapshot"], s["is_a_template"], s["snapshot_of"], s["power_state"]) == \
        (True, True, vm, "Halted")
    assert s["snapshot_info"]["power-state-at-snapshot"] == "Halted" and s["snapshot_time"]
    assert snap in x.VM.get_snapshots(vm)
    assert x.VM.get_parent(vm) == snap and vm in x.VM.get_children(snap)
    [sdisk] = disks_of(x, snap)
    assert x.VDI.get_is_a_snapshot(sdisk) is True and x.VDI.get_snapshot_of(sdisk) == disk
    [svif] = s["VIFs"]
    assert x.VIF.get_MAC(svif) == "00:16:3e:aa:bb:01"                  # a snapshot keeps its MACs
    assert failure(x.VM.start, snap, False, False) == ["VM_IS_SNAPSHOT", snap, "start"]
    assert failure(x.VM.revert, vm) == ["REVERT_ONLY_ALLOWED_ON_SNAPSHOT"]

    # change the VM, run it, then go back
    raw(host, session, "import_raw_vdi", disk, b"after!!!".ljust(MIB, b"\0"))
    x.VM.set_PV_args(vm, "three")
    x.VM.set_name_description(vm, "changed")
    x.VM.start(vm, False, False)
    x.VM.revert(snap)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["PV_args"] == "two" and rec["name_description"] == ""
    assert rec["name_label"] == "snapme" and rec["is_a_template"] is False and rec["parent"] == snap
    [rdisk] = disks_of(x, vm)
    assert rdisk != disk and disk not in x.VDI.get_all()
    assert first_bytes(host, session, rdisk) == b"before!!"
    assert x.VDI.get_snapshot_of(sdisk) == rdisk                         # the snapshot follows the new disk
    assert [x.VIF.get_MAC(v) for v in rec["VIFs"]] == ["00:16:3e:aa:bb:01"]
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(snap)
    assert snap not in x.VM.get_all() and sdisk in x.VDI.get_all()


def test_checkpoint_of_a_running_vm_and_revert_to_it(host, session, x, sr):
    vm, disk = vm_with_disk(host, session, x, sr, "ckpt", b"ckptdata")
    x.VM.start(vm, False, False)
    cp = x.VM.checkpoint(vm, "cp1")
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_suspend_VDI(vm) == NULL
    c = x.VM.get_record(cp)
    assert (c["is_a_snapshot"], c["power_state"], c["snapshot_of"]) == (True, "Suspended", vm)
    assert c["snapshot_info"]["power-state-at-snapshot"] == "Running"
    image = c["suspend_VDI"]
    assert x.VDI.get_type(image) == "suspend" and x.VDI.get_is_a_snapshot(image) is True
    x.VM.revert(cp)
    assert x.VM.get_power_state(vm) == "Suspended"
    assert x.VM.get_suspend_VDI(vm) not in (NULL, image)
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
