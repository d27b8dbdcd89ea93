"""xe's create/destroy commands of standalone objects, messages, login subjects and sessions, VIF IP
settings, SR/VDI introduction and per-VM/host computations, with the real `xe` on a live daemon,
checked against the API's rows through the XenAPI SDK."""
from __future__ import annotations

import uuid as uuidlib

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import management_network, new_vm, vif_record

host = own_daemon("--request-timeout", "10")
x = root_xenapi("host")


def test_secret_and_appliance(host, x):
    s = ok(xe(host, "secret-create", "value=hunter2"))
    assert x.secret.get_value(x.secret.get_by_uuid(s)) == "hunter2"
    ok(xe(host, "secret-destroy", f"uuid={s}"))
    assert s not in [x.secret.get_uuid(r) for r in x.secret.get_all()]
    a = ok(xe(host, "appliance-create", "name-label=xe-app", "name-description=two VMs"))
    ref = x.VM_appliance.get_by_uuid(a)
    assert (x.VM_appliance.get_name_label(ref), x.VM_appliance.get_name_description(ref)) == ("xe-app", "two VMs")
    assert ok(xe(host, "appliance-list", "params=uuid", "--minimal")) == a
    ok(xe(host, "appliance-destroy", f"uuid={a}"))
    assert ref not in x.VM_appliance.get_all()
    gone = xe(host, "appliance-destroy", f"uuid={a}")
    assert gone.returncode == 1 and a in gone.stderr


def test_message_create(host, x):
    vm = new_vm(x, "xe-msg")
    vm_uuid = x.VM.get_uuid(vm)
    try:
        ok(xe(host, "message-create", "name=XE_NOTE", "priority=3", "body=hello", f"vm-uuid={vm_uuid}"))
        msgs = [m for m in x.message.get_all_records().values() if m["name"] == "XE_NOTE"]
        assert len(msgs) == 1 and msgs[0]["obj_uuid"] == vm_uuid and msgs[0]["cls"] == "VM"
        assert msgs[0]["priority"] == "3" and msgs[0]["body"] == "hello"
        bad = xe(host, "message-create", "name=XE_NOTE", "priority=high", "body=x", f"vm-uuid={vm_uuid}")
        assert bad.stderr == "Error: Priority field should be an integer\n"
        none = xe(host, "message-create", "name=XE_NOTE", "priority=1", "body=x")
        assert none.stderr == "Error: Need one of: vm-uuid, host-uuid, sr-uuid or pool-uuid\n"
        ok(xe(host, "message-create", "name=XE_NOTE", "priority=4", "body=again", f"vm-uuid={vm_uuid}"))
        notes = [r for r, m in x.message.get_all_records().items() if m["name"] == "XE_NOTE"]
        uuids = [x.message.get_record(r)["uuid"] for r in notes]
        both = xe(host, "message-destroy", f"uuid={uuids[0]}", f"uuids={uuids[1]}")
        assert both.stderr == "Error: Ambiguous arguments; need one of uuid, uuids\n"
        assert xe(host, "message-destroy").stderr == "Error: Need one of uuid, uuids\n"
        ok(xe(host, "message-destroy", "uuids=" + ",".join(uuids)))
        assert not [m for m in x.message.get_all_records().values() if m["name"] == "XE_NOTE"]
    finally:
        x.VM.destroy(vm)


def test_subjects_and_sessions(host, x):
    assert ok(xe(host, "session-subject-identifier-list")) == ""        # root's session is local
    ok(xe(host, "session-subject-identifier-logout-all"))
    both = xe(host, "subject-role-add", "uuid=whatever", "role-name=pool-admin", "role-uuid=x")
    assert both.stderr == "Error: Parameters role-uuid and role-name cannot be used together\n"
    neither = xe(host, "subject-role-remove", "uuid=whatever")
    assert neither.stderr == "Error: Required parameter not found: role-uuid or role-name\n"
    unknown = xe(host, "subject-remove", "subject-uuid=00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and "uuid you supplied was invalid" in unknown.stderr


def test_vif_ip_configuration(host, x):
    vm = new_vm(x, "xe-vif-ip")
    vif = x.VIF.create(vif_record(vm, management_network(x)))
    uuid = x.VIF.get_uuid(vif)
    try:
        # the API asks the guest for static IP support, which this VM's (absent) agent lacks
        r = xe(host, "vif-configure-ipv4", f"uuid={uuid}", "mode=static", "address=192.0.2.5/24",
               "gateway=192.0.2.1")
        assert r.returncode == 1
        assert r.stderr == f"Error code: VM_LACKS_FEATURE\nError parameters: {x.VM.get_uuid(vm)} (xe-vif-ip)\n"
        assert x.VIF.get_ipv4_configuration_mode(vif) == "None"
        bad = xe(host, "vif-configure-ipv6", f"uuid={uuid}", "mode=dhcp")
        assert bad.stderr == "Error: Expected 'none' or 'static', got dhcp\n"
    finally:
        x.VIF.destroy(vif)
        x.VM.destroy(vm)


def test_sr_introduce_and_forget(host, x):
    new = str(uuidlib.uuid4())
    assert ok(xe(host, "sr-introduce", "name-label=xe-introduced", "type=ext", f"uuid={new}",
                 "content-type=user")) == new
    sr = x.SR.get_by_uuid(new)
    assert (x.SR.get_name_label(sr), x.SR.get_type(sr), x.SR.get_PBDs(sr)) == ("xe-introduced", "ext", [])
    ok(xe(host, "sr-forget", f"uuid={new}"))
    bad = xe(host, "sr-introduce", "name-label=x", "type=ext", "uuid=not-a-uuid")
    assert bad.returncode == 1 and "not-a-uuid" in bad.stderr


def test_vdi_introduce_checks_the_sr(host, x):
    # an SR without a plugged PBD cannot look for the disk: the API's failure, as xe prints it
    new = str(uuidlib.uuid4())
    ok(xe(host, "sr-introduce", "name-label=xe-unplugged", "type=ext", f"uuid={new}"))
    try:
        r = xe(host, "vdi-introduce", f"uuid={uuidlib.uuid4()}", f"sr-uuid={new}", "type=user", "location=x")
        assert r.returncode == 1 and r.stderr and "Traceback" not in r.stderr
        bad = xe(host, "vdi-introduce", f"uuid={uuidlib.uuid4()}", f"sr-uuid={new}", "type=odd", "location=x")
        assert bad.stderr == "Error: Unknown vdi type: odd\n"
    finally:
        ok(xe(host, "sr-forget", f"uuid={new}"))


def test_memory_computations_and_certificate(host, x):
    vm = new_vm(x, "xe-maxmem")
    uuid = x.VM.get_uuid(vm)
    try:
        got = ok(xe(host, "vm-compute-maximum-memory", f"uuid={uuid}", "total=1GiB"))
        assert got == x.VM.maximise_memory(vm, str(1 << 30), False)
        assert ok(xe(host, "vm-compute-memory-overhead", f"uuid={uuid}")) == x.VM.compute_memory_overhead(vm)
    finally:
        x.VM.destroy(vm)
    h = x.host.get_all()[0]
    before = x.host.get_server_certificate(h)
    ok(xe(host, "host-reset-server-certificate", f"uuid={x.host.get_uuid(h)}"))
    after = ok(xe(host, "host-get-server-certificate", f"uuid={x.host.get_uuid(h)}"))
    assert after.strip() == x.host.get_server_certificate(h).strip() and after.strip() != before.strip()


def test_vmss_create_and_destroy(host, x):
    uuid = ok(xe(host, "vmss-create", "name-label=nightly", "type=snapshot", "frequency=daily",
                 "schedule:hour=2", "schedule:min=30", "retained-snapshots=3"))
    ref = x.VMSS.get_by_uuid(uuid)
    rec = x.VMSS.get_record(ref)
    assert (rec["name_label"], rec["name_description"], rec["enabled"], rec["type"], rec["frequency"],
            rec["schedule"], rec["retained_snapshots"]) == ("nightly", "", True, "snapshot", "daily",
                                                           {"hour": "2", "min": "30"}, "3")
    assert uuid in ok(xe(host, "vmss-list", "params=uuid", "--minimal")).split(",")
    ok(xe(host, "vmss-destroy", f"uuid={uuid}"))
    assert ref not in x.VMSS.get_all()
    defaults = ok(xe(host, "vmss-create", "name-label=d", "type=checkpoint", "frequency=hourly", "enabled=false"))
    rec = x.VMSS.get_record(x.VMSS.get_by_uuid(defaults))
    assert (rec["enabled"], rec["retained_snapshots"], rec["schedule"]) == (False, "7", {})
    ok(xe(host, "vmss-destroy", f"uuid={defaults}"))
    bad = xe(host, "vmss-create", "name-label=b", "type=weekly", "frequency=daily")
    assert bad.returncode == 1 and bad.stderr == "The value specified is of the wrong type\nfield: type\n"
    bad = xe(host, "vmss-create", "name-label=b", "type=snapshot", "frequency=daily", "retained-snapshots=x")
    assert bad.returncode == 1 and "retained-snapshots" in bad.stderr
    assert not [r for r in x.VMSS.get_all_records().values() if r["name_label"] == "b"]
