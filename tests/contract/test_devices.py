"""A VM's disks and network interfaces through the XenAPI SDK on a real daemon: VBDs attached through
the storage access layer at start and released at shutdown, their xenstore entries read back with
Debian's xenstore-ls, VBD/VIF create, plug/unplug, insert/eject, destroy with xapi's errors."""
import json
import os
import shutil
import time

import pytest

from tests import daemon as _daemon
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import (datapaths, failure, login, management_network, needs_domains, needs_xs, new_vdi, new_vm,
                           vbd_record, vif_record, wait_for, xenopsd, xs, xs_read)

pytestmark = needs_domains

NULL = "OpaqueRef:NULL"

host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05",
                                                 "XAPI_GUEST_AGENT_DELAY": "0.1"})
x = root_xenapi("host")


@needs_xs
def test_start_attaches_disks_and_writes_their_xenstore_entries(host, x, sr):
    vm = new_vm(x, "disks")
    disk = new_vdi(x, sr)
    vbd = x.VBD.create(vbd_record(vm, disk))
    vif = x.VIF.create(vif_record(vm, management_network(x), mac="00:16:3e:11:22:33"))
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    rec = x.VBD.get_record(vbd)
    assert rec["currently_attached"] is True and rec["device"] == "hda"      # HVM: the IDE bus
    assert x.VIF.get_currently_attached(vif) is True
    uuid = x.VM.get_uuid(vm)
    assert f"vbd/{uuid}/0" in datapaths(host)
    devid = 768                                                             # hda: 3:0
    be = f"/local/domain/0/backend/vbd/{domid}/{devid}"
    assert xs_read(host, f"{be}/mode") == "w" and xs_read(host, f"{be}/state") == "4"
    assert xs_read(host, f"{be}/params").endswith(x.VDI.get_uuid(disk) + ".vhd")
    assert xs_read(host, f"/local/domain/{domid}/device/vbd/{devid}/backend") == be
    vbe = f"/local/domain/0/backend/vif/{domid}/0"
    assert xs_read(host, f"{vbe}/mac") == "00:16:3e:11:22:33" and xs_read(host, f"{vbe}/bridge") == "xenbr0"
    listing = xs(host, "xenstore-ls", "-f", f"/local/domain/{domid}/device").stdout
    assert f"/local/domain/{domid}/device/vif/0/mac = \"00:16:3e:11:22:33\"" in listing
    x.VM.hard_shutdown(vm)
    assert x.VBD.get_currently_attached(vbd) is False and x.VIF.get_currently_attached(vif) is False
    assert f"vbd/{uuid}/0" not in datapaths(host)
    assert xs_read(host, be) is None


def test_a_guest_that_halts_itself_releases_its_disks(host, x, sr):
    vm = new_vm(x, "self-halt")
    vbd = x.VBD.create(vbd_record(vm, new_vdi(x, sr)))
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(vbd) is True
    xenopsd(host, "DEBUG.trigger", x.VM.get_uuid(vm), "poweroff")
    assert wait_for(lambda: x.VM.get_power_state(vm) == "Halted")
    assert wait_for(lambda: x.VBD.get_currently_attached(vbd) is False)
    assert f"vbd/{x.VM.get_uuid(vm)}/0" not in datapaths(host)


def test_rw_disk_in_use_by_another_vm(host, x, sr):
    disk = new_vdi(x, sr)
    a, b = new_vm(x, "a"), new_vm(x, "b")
    x.VBD.create(vbd_record(a, disk))
    vbd_b = x.VBD.create(vbd_record(b, disk))
    x.VM.start(a, False, False)
    assert failure(x.VM.start, b, False, False) == ["VDI_IN_USE", disk]
    assert x.VM.get_power_state(b) == "Halted" and x.VBD.get_currently_attached(vbd_b) is False
    assert not any(dp.startswith(f"vbd/{x.VM.get_uuid(b)}/") for dp in datapaths(host))
    x.VM.hard_shutdown(a)
    x.VM.start(b, False, False)
    x.VM.hard_shutdown(b)


def test_a_failed_start_releases_what_it_attached(host, x, sr):
    busy = new_vdi(x, sr)
    holder = new_vm(x, "holder")
    x.VBD.create(vbd_record(holder, busy))
    x.VM.start(holder, False, False)
    vm = new_vm(x, "fails")
    first = x.VBD.create(vbd_record(vm, new_vdi(x, sr)))                 # attached, then given back
    x.VBD.create(vbd_record(vm, busy, userdevice="1"))
    assert failure(x.VM.start, vm, False, False) == ["VDI_IN_USE", busy]
    assert x.VBD.get_currently_attached(first) is False
    assert not any(dp.startswith(f"vbd/{x.VM.get_uuid(vm)}/") for dp in datapaths(host))
    x.VM.hard_shutdown(holder)


# -- VBD -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iso(x, tmp_path_factory):
    lib = str(tmp_path_factory.mktemp("isos"))
    with open(os.path.join(lib, "install.iso"), "wb") as f:
        f.write(b"\1" * 8192)
    host_ref = x.host.get_all()[0]
    sr = x.SR.create(host_ref, {"location": lib}, "0", "ISOs", "", "iso", "iso", True, {})
    x.SR.scan(sr)
    (vdi,) = x.SR.get_VDIs(sr)
    return vdi


def test_vbd_create_checks(host, x, sr, iso):
    vm = new_vm(x, "checks")
    disk = new_vdi(x, sr)
    assert failure(x.VBD.create, vbd_record("OpaqueRef:nope", disk)) == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert failure(x.VBD.create, vbd_record(vm, "OpaqueRef:nope")) == ["HANDLE_INVALID", "VDI", "OpaqueRef:nope"]
    assert failure(x.VBD.create, vbd_record(vm, iso, type_="CD", mode="RW")) == ["VBD_CDS_MUST_BE_READONLY"]
    assert failure(x.VBD.create, vbd_record(vm, NULL, empty=True)) == \
        ["VBD_NOT_REMOVABLE_MEDIA", "in constructor"]
    assert failure(x.VBD.create, vbd_record(vm, disk, type_="CD", mode="RO")) == ["VDI_IS_NOT_ISO", disk, "user"]
    assert failure(x.VBD.create, vbd_record(vm, new_vdi(x, sr, read_only=True))) [0] == "VDI_READONLY"
    assert failure(x.VBD.create, vbd_record(vm, disk, userdevice="zz")) == ["INVALID_DEVICE", "zz"]
    first = x.VBD.create(vbd_record(vm, disk, userdevice="autodetect"))
    assert x.VBD.get_userdevice(first) == "0"
    assert failure(x.VBD.create, vbd_record(vm, new_vdi(x, sr), userdevice="hda")) == \
        ["DEVICE_ALREADY_EXISTS", "hda"]
    cd = x.VBD.create(vbd_record(vm, NULL, userdevice="autodetect", mode="RO", type_="CD", empty=True))
    rec = x.VBD.get_record(cd)
    assert rec["userdevice"] == "1" and rec["empty"] is True and rec["currently_attached"] is False
    assert x.VBD_metrics.get_io_read_kbs(rec["metrics"]) == 0.0
    # malformed records: as xapi's dispatcher unmarshals them
    assert failure(x.VBD.create, {}) == ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("VM")']
    assert failure(x.VBD.create, {**vbd_record(vm, disk), "userdevice": 7}) == ["FIELD_TYPE_ERROR", "userdevice"]
    assert failure(x.VBD.create, {**vbd_record(vm, disk), "type": "Tape"}) == ["FIELD_TYPE_ERROR", "type"]
    assert failure(x.VIF.create, {**vif_record(vm, management_network(x)), "MTU": "big"}) == \
        ["FIELD_TYPE_ERROR", "MTU"]
    assert sorted(rec["allowed_operations"]) == ["attach", "insert"]
    assert sorted(x.VBD.get_allowed_operations(first)) == ["attach"]


def test_cd_insert_and_eject(host, x, sr, iso):
    vm = new_vm(x, "cd")
    disk = x.VBD.create(vbd_record(vm, new_vdi(x, sr)))
    cd = x.VBD.create(vbd_record(vm, NULL, userdevice="3", mode="RO", type_="CD", empty=True))
    assert failure(x.VBD.eject, cd) == ["VBD_IS_EMPTY", cd]
    assert failure(x.VBD.insert, disk, iso) == ["VBD_NOT_REMOVABLE_MEDIA", disk]
    assert failure(x.VBD.eject, disk) == ["VBD_NOT_REMOVABLE_MEDIA", disk]
    x.VBD.insert(cd, iso)                                          # halted: the database only
    assert x.VBD.get_VDI(cd) == iso and x.VBD.get_empty(cd) is False
    assert failure(x.VBD.insert, cd, iso) == ["VBD_NOT_EMPTY", cd]
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    be = f"/local/domain/0/backend/vbd/{domid}/{(22 << 8) | 64}"   # hdd: 22:64
    assert x.VBD.get_currently_attached(cd) is True and x.VBD.get_device(cd) == "hdd"
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"{be}/params").endswith("install.iso")
        assert xs_read(host, f"{be}/device-type") == "cdrom" and xs_read(host, f"{be}/mode") == "r"
    uuid = x.VM.get_uuid(vm)
    assert f"vbd/{uuid}/3" in datapaths(host)
    x.VBD.eject(cd)                                                # running: the drive stays, empty
    assert x.VBD.get_empty(cd) is True and x.VBD.get_VDI(cd) == NULL and x.VBD.get_currently_attached(cd)
    assert f"vbd/{uuid}/3" not in datapaths(host)
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"{be}/params") == ""
    x.VBD.insert(cd, iso)
    assert f"vbd/{uuid}/3" in datapaths(host)
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"{be}/params").endswith("install.iso")
    assert failure(x.VBD.destroy, cd)[0] == "OPERATION_NOT_ALLOWED"
    x.VM.hard_shutdown(vm)
    assert f"vbd/{uuid}/3" not in datapaths(host)
    x.VBD.destroy(cd)
    assert failure(x.VBD.get_record, cd)[0] == "HANDLE_INVALID"


@needs_xs
def test_hotplug_of_a_disk_and_a_vif(host, x, sr):
    vm = new_vm(x, "hotplug")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    vbd = x.VBD.create(vbd_record(vm, new_vdi(x, sr), userdevice="4"))
    vif = x.VIF.create(vif_record(vm, management_network(x), device="2"))
    assert x.VBD.get_currently_attached(vbd) is False
    # an HVM guest hotplugs once its PV drivers are up (the simulated agent reports them)
    assert wait_for(lambda: "plug" in x.VBD.get_allowed_operations(vbd))
    assert failure(x.VBD.unplug, vbd) == ["DEVICE_ALREADY_DETACHED", vbd]
    x.VBD.plug(vbd)
    assert failure(x.VBD.plug, vbd) == ["DEVICE_ALREADY_ATTACHED", vbd]
    rec = x.VBD.get_record(vbd)
    assert rec["currently_attached"] is True and rec["device"] == "xvde"
    devid = (202 << 8) | (4 << 4)
    be = f"/local/domain/0/backend/vbd/{domid}/{devid}"
    assert xs_read(host, f"{be}/state") == "4" and xs_read(host, f"{be}/mode") == "w"
    assert xs_read(host, f"/local/domain/{domid}/device/vbd/{devid}/backend") == be
    assert f"vbd/{x.VM.get_uuid(vm)}/4" in datapaths(host)
    assert sorted(x.VBD.get_allowed_operations(vbd)) == ["attach", "pause", "unpause", "unplug", "unplug_force"]
    x.VBD.unplug(vbd)
    assert x.VBD.get_currently_attached(vbd) is False and xs_read(host, be) is None
    assert f"vbd/{x.VM.get_uuid(vm)}/4" not in datapaths(host)
    x.VBD.plug(vbd)
    x.VBD.unplug_force(vbd)
    assert x.VBD.get_currently_attached(vbd) is False
    # the VIF
    x.VIF.plug(vif)
    vbe = f"/local/domain/0/backend/vif/{domid}/2"
    assert x.VIF.get_currently_attached(vif) is True
    assert xs_read(host, f"{vbe}/mac") == x.VIF.get_MAC(vif) and xs_read(host, f"{vbe}/bridge") == "xenbr0"
    assert failure(x.VIF.plug, vif) == ["DEVICE_ALREADY_ATTACHED", vif]
    assert failure(x.VIF.destroy, vif) == ["OPERATION_NOT_ALLOWED", "VIF currently attached to a running VM"]
    x.VIF.unplug(vif)
    assert x.VIF.get_currently_attached(vif) is False and xs_read(host, vbe) is None
    assert failure(x.VIF.unplug, vif) == ["DEVICE_ALREADY_DETACHED", vif]
    x.VM.hard_shutdown(vm)
    assert failure(x.VBD.plug, vbd) == ["VM_BAD_POWER_STATE", vm, "Running", "Halted"]
    assert failure(x.VIF.plug, vif) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VIF.destroy(vif)
    x.VBD.destroy(vbd)


def test_a_rebooted_guest_keeps_its_hotplugged_disk(host, x, sr):
    vm = new_vm(x, "reboot")
    x.VM.start(vm, False, False)
    vbd = x.VBD.create(vbd_record(vm, new_vdi(x, sr), userdevice="5"))
    assert wait_for(lambda: "plug" in x.VBD.get_allowed_operations(vbd))
    x.VBD.plug(vbd)
    x.VM.hard_reboot(vm)
    domid = x.VM.get_domid(vm)
    assert x.VBD.get_currently_attached(vbd) is True
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"/local/domain/0/backend/vbd/{domid}/{(202 << 8) | (5 << 4)}/state") == "4"
    x.VM.hard_shutdown(vm)
    assert x.VBD.get_currently_attached(vbd) is False


# -- VIF -------------------------------------------------------------------------------------------
def test_vif_create_checks_and_mac_generation(host, x):
    vm = new_vm(x, "vifs")
    net = management_network(x)
    assert failure(x.VIF.create, vif_record("OpaqueRef:nope", net)) == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert failure(x.VIF.create, vif_record(vm, "OpaqueRef:nope")) == \
        ["HANDLE_INVALID", "network", "OpaqueRef:nope"]
    assert failure(x.VIF.create, vif_record(vm, net, device="eth0")) == ["INVALID_DEVICE", "eth0"]
    assert failure(x.VIF.create, vif_record(vm, net, mac="00:16:3e:zz:00:00")) == \
        ["MAC_INVALID", "00:16:3e:zz:00:00"]
    a = x.VIF.create(vif_record(vm, net))
    b = x.VIF.create(vif_record(vm, net, device="1"))
    mac_a, mac_b = x.VIF.get_MAC(a), x.VIF.get_MAC(b)
    assert mac_a != mac_b and x.VIF.get_MAC_autogenerated(a) is True
    first = int(mac_a.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01                      # locally administered, unicast
    # xapi's gen_mac: MD5 of the VM's mac_seed chained 2*device+1 times
    import hashlib
    seed = x.VM.get_other_config(vm)["mac_seed"]
    h = hashlib.md5(seed.encode()).digest()
    h2 = hashlib.md5(h).digest()
    expect = [(h[0] | 2) & 0xFE, h[1], h[2], h[3], h2[1], h2[2]]
    assert mac_a == ":".join(f"{v:02x}" for v in expect)
    assert failure(x.VIF.create, vif_record(vm, net, device="1")) == ["DEVICE_ALREADY_EXISTS", "1"]
    given = x.VIF.create(vif_record(vm, net, device="2", mac="00:16:3e:00:00:01"))
    assert x.VIF.get_MAC(given) == "00:16:3e:00:00:01" and x.VIF.get_MAC_autogenerated(given) is False
    assert x.VIF.get_allowed_operations(given) == ["attach"]
    for v in (a, b, given):
        x.VIF.destroy(v)
    assert x.VM.get_VIFs(vm) == []


def test_vif_move_between_networks(host, x):
    vm = new_vm(x, "mover")
    vif = x.VIF.create(vif_record(vm, management_network(x)))
    other = x.network.create({"name_label": "other", "name_description": "", "MTU": "1500", "other_config": {},
                              "bridge": "", "tags": []})
    x.VIF.move(vif, other)                                  # halted: the database only
    assert x.VIF.get_network(vif) == other and x.network.get_VIFs(other) == [vif]
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    bridge = x.network.get_bridge(other)
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"/local/domain/0/backend/vif/{domid}/0/bridge") == bridge
    x.VIF.move(vif, management_network(x))                  # running: the backend moves
    assert x.VIF.get_network(vif) == management_network(x) and x.VIF.get_currently_attached(vif)
    if shutil.which("xenstore-read"):
        assert xs_read(host, f"/local/domain/0/backend/vif/{domid}/0/bridge") == "xenbr0"
    assert failure(x.VIF.move, vif, "OpaqueRef:nope") == ["HANDLE_INVALID", "network", "OpaqueRef:nope"]
    x.VM.hard_shutdown(vm)
    x.network.destroy(other)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_restart_with_a_running_vm_neither_leaks_nor_repeats_attaches(how):
    """The domains go with the daemon (simulated hypervisor). The restarted daemon finds the VM's
    datapath in the storage access layer's record (named vbd/<vm uuid>/<userdevice>: a halted VM's
    old domid is not known any more) and releases it once: the VDI ends detached and no longer held
    by this host; the next start attaches it again, once."""
    d = _daemon.start("--db-flush-interval", "0.2", env={"XAPI_GUEST_AGENT_DELAY": "0.1"})
    try:
        s = login(d)
        x = s.xenapi
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        vm = new_vm(x, "restart-disk")
        disk = new_vdi(x, sr)
        vbd = x.VBD.create(vbd_record(vm, disk))
        x.VM.start(vm, False, False)
        uuid, vdi_uuid = x.VM.get_uuid(vm), x.VDI.get_uuid(disk)
        me = x.host.get_all()[0]
        assert datapaths(d) == {f"vbd/{uuid}/0"}
        assert x.VDI.get_sm_config(disk).get(f"host_{me}") == "RW"
        if how == "stop":
            d.stop()
        else:                   # once state.db has the running VM
            time.sleep(0.6)
            os.kill(d.pid, 9)
            d.proc.wait(10)
        d2 = _daemon.start(data_dir=d.data_dir)
        try:
            s = login(d2)
            x = s.xenapi
            assert wait_for(lambda: x.VM.get_power_state(vm) == "Halted", 10)
            assert wait_for(lambda: not x.VBD.get_currently_attached(vbd), 5)
            assert wait_for(lambda: datapaths(d2) == set(), 5)
            with open(os.path.join(d2.data_dir, "storage-access.json")) as f:
                assert vdi_uuid not in json.load(f)["vdis"]                 # detached at the driver
            assert f"host_{me}" not in x.VDI.get_sm_config(disk)
            x.VM.start(vm, False, False)
            with open(os.path.join(d2.data_dir, "storage-access.json")) as f:
                entry = json.load(f)["vdis"][vdi_uuid]
            assert entry["dps"] == {f"vbd/{uuid}/0": "activated RW"} and entry["state"] == "activated RW"
            assert not entry.get("leaked")
            x.VM.hard_shutdown(vm)
            assert datapaths(d2) == set()
        finally:
            d2.stop()
    finally:
        _daemon.cleanup(d)
