"""xe's vm-disk-add/-remove and vm-cd-add/-remove with the real `xe` on a live daemon: the VDI and VBD
rows they leave (read with the XenAPI SDK), hot-plugging into a running VM, and their failure texts."""
from __future__ import annotations

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import MIB, new_vm

host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


def test_disk_add_and_remove(host, x, sr):
    vm = new_vm(x, "xe-dev-disks")
    uuid = x.VM.get_uuid(vm)
    try:
        ok(xe(host, "vm-disk-add", f"uuid={uuid}", "disk-size=16MiB", "device=1", f"sr-uuid={x.SR.get_uuid(sr)}"))
        vbd = x.VM.get_VBDs(vm)[0]
        rec = x.VBD.get_record(vbd)
        assert rec["userdevice"] == "1" and rec["type"] == "Disk" and rec["other_config"] == {"owner": "true"}
        vdi = x.VDI.get_record(rec["VDI"])
        assert vdi["virtual_size"] == str(16 * MIB) and vdi["name_label"] == "Created by xe"
        assert vdi["SR"] == sr and vdi["sm_config"].get("vmhint") == uuid
        # a running VM without PV drivers refuses the hot-plug: the disk stays for its next boot
        x.VM.start(vm, False, False)
        ok(xe(host, "vm-disk-add", f"uuid={uuid}", "disk-size=8MiB", "device=2", f"sr-uuid={x.SR.get_uuid(sr)}"))
        hot = next(b for b in x.VM.get_VBDs(vm) if x.VBD.get_userdevice(b) == "2")
        assert x.VBD.get_currently_attached(hot) is False
        x.VM.hard_shutdown(vm)
        ok(xe(host, "vm-disk-remove", f"uuid={uuid}", "device=1"))
        assert vbd not in x.VBD.get_all() and rec["VDI"] not in x.VDI.get_all()
        nope = xe(host, "vm-disk-remove", f"uuid={uuid}", "device=7")
        assert nope.stderr == "Error: Disk not found\n"
        ok(xe(host, "vm-disk-remove", f"uuid={uuid}", "device=2"))
        assert x.VM.get_VBDs(vm) == []
    finally:
        if x.VM.get_power_state(vm) != "Halted":
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)


def test_cd_add_and_remove(host, x, tmp_path):
    isos = tmp_path / "isos"
    isos.mkdir()
    (isos / "xe-dev.iso").write_bytes(b"\0" * 2048)
    iso_sr = ok(xe(host, "sr-create", "name-label=xe-dev-isos", "type=iso", "content-type=iso",
                   f"device-config:location={isos}"))
    ok(xe(host, "sr-scan", f"uuid={iso_sr}"))
    vm = new_vm(x, "xe-dev-cds")
    uuid = x.VM.get_uuid(vm)
    try:
        missing = xe(host, "vm-cd-add", f"uuid={uuid}", "cd-name=nope.iso", "device=3")
        assert missing.stderr == "Error: CD nope.iso not found!\n"
        ok(xe(host, "vm-cd-add", f"uuid={uuid}", "cd-name=xe-dev.iso", "device=3"))
        vbd = x.VM.get_VBDs(vm)[0]
        rec = x.VBD.get_record(vbd)
        assert (rec["type"], rec["mode"], rec["userdevice"]) == ("CD", "RO", "3")
        assert x.VDI.get_name_label(rec["VDI"]) == "xe-dev.iso"
        ok(xe(host, "vm-cd-remove", f"uuid={uuid}", "cd-name=xe-dev.iso"))
        assert vbd not in x.VBD.get_all() and rec["VDI"] in x.VDI.get_all()    # the ISO stays
        again = xe(host, "vm-cd-remove", f"uuid={uuid}", "cd-name=xe-dev.iso")
        assert again.stderr == "Error: Disk not found\n"
    finally:
        x.VM.destroy(vm)
        sr = x.SR.get_by_uuid(iso_sr)
        for pbd in x.SR.get_PBDs(sr):
            x.PBD.unplug(pbd)
        x.SR.forget(sr)
