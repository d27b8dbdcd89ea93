"""VM.provision against a real daemon with the XenAPI SDK: the disks of a template's other_config:disks
made in the named SR or the pool's default one, VBDs as xapi makes them, the template turned into a VM,
the request removed, and failures cleaned up."""
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, needs_domains, new_vm

pytestmark = needs_domains
GIB = 1 << 30
NULL = "OpaqueRef:NULL"


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


def install(x, template_name, name):
    """What xe vm-install and XenCenter do: clone the template, then provision the clone."""
    template = x.VM.get_by_name_label(template_name)[0]
    vm = x.VM.clone(template, name)
    x.VM.provision(vm)
    return vm


def test_provision_from_the_debian_template(x, sr):
    vm = install(x, "Debian Bookworm 12", "deb")
    rec = x.VM.get_record(vm)
    assert rec["is_a_template"] is False and "disks" not in rec["other_config"]
    assert rec["other_config"]["base_template_name"] == "Debian Bookworm 12"
    [vbd] = rec["VBDs"]
    b = x.VBD.get_record(vbd)
    assert (b["userdevice"], b["mode"], b["type"], b["bootable"], b["unpluggable"], b["empty"]) == \
        ("0", "RW", "Disk", True, False, False)
    assert b["other_config"] == {"owner": ""}
    v = x.VDI.get_record(b["VDI"])
    assert (v["SR"], v["virtual_size"], v["type"], v["name_label"]) == (sr, str(10 * GIB), "system", "0")
    assert v["name_description"] == "Created by template provisioner"
    assert v["sm_config"]["vmhint"] == rec["uuid"]
    # provisioned once: it is no template any more
    assert failure(x.VM.provision, vm) == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(vbd) is True
    x.VM.hard_shutdown(vm)


def test_provision_into_a_named_sr_with_several_disks(x, sr):
    template = new_vm(x, "tmpl")
    x.VM.set_is_a_template(template, True)
    uuid = x.SR.get_uuid(sr)
    x.VM.set_other_config(template, {"disks": (
        f'<provision><disk device="0" size="{GIB}" sr="{uuid}" bootable="true" type="system"/>'
        f'<disk device="1" size="{2 * GIB}" sr="" bootable="false" type="user"/></provision>'),
        "postinstall": "", "other": "kept"})
    x.VM.provision(template)
    rec = x.VM.get_record(template)
    assert rec["other_config"] == {"other": "kept"} and rec["is_a_template"] is False
    vbds = sorted((x.VBD.get_record(v) for v in rec["VBDs"]), key=lambda b: b["userdevice"])
    assert [(b["userdevice"], b["bootable"], b["unpluggable"]) for b in vbds] == \
        [("0", True, False), ("1", False, True)]
    assert [x.VDI.get_virtual_size(b["VDI"]) for b in vbds] == [str(GIB), str(2 * GIB)]
    assert x.VDI.get_type(vbds[1]["VDI"]) == "user"


def test_bad_requests_leave_nothing_behind(x, sr):
    vdis = set(x.VDI.get_all())
    template = new_vm(x, "bad")
    x.VM.set_is_a_template(template, True)
    x.VM.set_other_config(template, {"disks": (
        f'<provision><disk device="0" size="{GIB}" sr="" bootable="true" type="system"/>'
        '<disk device="1" size="1" sr="00000000-0000-0000-0000-000000000000" bootable="true"/></provision>')})
    assert failure(x.VM.provision, template) == ["UUID_INVALID", "sr", "00000000-0000-0000-0000-000000000000"]
    assert set(x.VDI.get_all()) == vdis and x.VM.get_VBDs(template) == []
    x.VM.set_is_a_template(template, True)
    x.VM.set_other_config(template, {"disks": "<provision><disk device='0'/>"})
    assert failure(x.VM.provision, template)[0] == "INTERNAL_ERROR"
    plain = new_vm(x, "plain")
    assert failure(x.VM.provision, plain) == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    x.VM.start(plain, False, False)
    assert failure(x.VM.provision, plain)[0] == "VM_BAD_POWER_STATE"
    x.VM.hard_shutdown(plain)


def test_other_install_media_has_nothing_to_provision(x):
    vm = install(x, "Other install media", "blank")
    assert x.VM.get_VBDs(vm) == [] and x.VM.get_is_a_template(vm) is False
