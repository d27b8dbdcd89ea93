"""A VM's disks and network interfaces through the XenAPI SDK on a real daemon: VBDs attached through
the storage access layer at start and released at shutdown, their xenstore entries read back with
Debian's xenstore-ls, VBD/VIF create, plug/unplug, insert/eject, destroy with xapi's errors."""
import os
import shutil
import subprocess

import pytest
import XenAPI

from tests import daemon as _daemon
from tests.contract.test_vm_lifecycle import failure, new_vm, wait_for, xenopsd
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
def x(host):
    s = XenAPI.Session(host.url)
    s.xenapi.login_with_password("root", host.password)
    yield s.xenapi
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def sr(x):
    return x.pool.get_default_SR(x.pool.get_all()[0])


def xs(host, *argv, check=True):
    """Debian's xenstore-utils against the daemon's xenstored."""
    env = dict(os.environ, XENSTORED_PATH=os.path.join(host.data_dir, "xenstored", "socket"))
    env.pop("XENSTORED_RUNDIR", None)
    p = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=20)
    if check:
        assert p.returncode == 0, (argv, p.stderr)
    return p


def xs_read(host, path):
    p = xs(host, "xenstore-read", path, check=False)
    return p.stdout.rstrip("\n") if p.returncode == 0 else None


needs_xs = pytest.mark.skipif(not shutil.which("xenstore-ls"), reason="Debian xenstore-utils not installed")


def new_vdi(x, sr, size=8 * MIB, name="disk", read_only=False, sharable=False):
    return x.VDI.create({"name_label": name, "name_description": "", "SR": sr, "virtual_size": str(size),
                         "type": "user", "sharable": sharable, "read_only": read_only, "other_config": {}})


def vbd_record(vm, vdi, userdevice="0", mode="RW", type_="Disk", empty=False):
    return {"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": userdevice == "0", "mode": mode,
            "type": type_, "empty": empty, "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}}


def vif_record(vm, network, device="0", mac=""):
    return {"device": device, "network": network, "VM": vm, "MAC": mac, "MTU": "1500", "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {}}


def management_network(x):
    return next(n for n, r in x.network.get_all_records().items() if r["bridge"] == "xenbr0")


def datapaths(host):
    import json
    with open(os.path.join(host.data_dir, "storage-access.json")) as f:
        return {dp for e in json.load(f)["vdis"].values() for dp in e["dps"]}


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
    assert failure(x.VM.start, b, False, False) == ["VDI_IN_USE", disk, "start"]
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
    assert failure(x.VM.start, vm, False, False) == ["VDI_IN_USE", busy, "start"]
    assert x.VBD.get_currently_attached(first) is False
    assert not any(dp.startswith(f"vbd/{x.VM.get_uuid(vm)}/") for dp in datapaths(host))
    x.VM.hard_shutdown(holder)
