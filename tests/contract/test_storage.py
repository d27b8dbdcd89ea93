"""Storage through the official SDK against a real daemon: SRs (ext, nfs as a folder, iso), VDIs and their
files, the SMAPIv1 drivers (garbage, crashes, hangs, a driver dropped in), the fresh host's local SR, and
the access layer's state across a restart."""
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

import pytest
import XenAPI

from tests import daemon as _daemon
from tests import helpers
from tests.fixtures import root_xenapi
from tests.helpers import MIB, failure, login, raw_vdi
from xapi.sm import vhd
from xapi.sm.exec import DRIVERS_DIR, Call

QEMU_IMG = shutil.which("qemu-img")

# A driver that answers sr_get_driver_info and then misbehaves as device-config "mode" says.
BAD_DRIVER = '''#!/usr/bin/env python3
import os, sys, time, xmlrpc.client
params, method = xmlrpc.client.loads(sys.argv[1])
if method == "sr_get_driver_info":
    sys.stdout.write(xmlrpc.client.dumps(({"name": "bad", "description": "misbehaves", "vendor": "tests",
        "copyright": "", "driver_version": "1.0", "required_api_version": "1.0", "capabilities": ["SR_PROBE"],
        "configuration": []},), methodresponse=True))
    sys.exit(0)
mode = params[0]["device_config"].get("mode", "")
sys.stderr.write("bad driver: " + mode + "\\n")
if mode == "garbage":
    print("Traceback? no: just garbage")
elif mode == "crash":
    sys.exit(3)
elif mode == "signal":
    os.kill(os.getpid(), 9)
elif mode == "hang":
    time.sleep(300)
elif mode == "fault":
    sys.stdout.write(xmlrpc.client.dumps(xmlrpc.client.Fault(44, "There is insufficient space"), methodresponse=True))
'''

# The ext driver, logging every command to device-config "log" and holding RW activations while the file
# device-config "block" exists.
SLOW_DRIVER = '''#!/usr/bin/env python3
import os, sys, time
from xapi.sm import driverlib
from xapi.sm.filesr import EXTSR

class Slow(EXTSR):
    def dispatch(self):
        log = self.dconf.get("log")
        if log and self.req.command != "sr_get_driver_info":
            with open(log, "a") as f:
                f.write(" ".join([self.req.command, self.req.vdi_location or "-"] + self.req.args) + "\\n")
        block = self.dconf.get("block")
        if self.req.command == "vdi_activate" and self.req.args == ["true"] and block:
            while os.path.exists(block):
                time.sleep(0.05)
        return super().dispatch()

sys.exit(driverlib.run(Slow))
'''


def _install(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _drivers_folder() -> str:
    folder = tempfile.mkdtemp(prefix="xapi-sm-")
    for name in os.listdir(DRIVERS_DIR):
        if name.endswith("SR"):
            shutil.copy2(os.path.join(DRIVERS_DIR, name), folder)
    _install(folder, "badSR", BAD_DRIVER)
    _install(folder, "slowSR", SLOW_DRIVER)
    return folder


@pytest.fixture(scope="module")
def storage_daemon():
    folder = _drivers_folder()
    d = _daemon.start(env={"XAPI_SM_DIR": folder, "XAPI_SM_TIMEOUT": "4"})
    d.sm_dir = folder
    yield d
    _daemon.cleanup(d)
    shutil.rmtree(folder, ignore_errors=True)


x = root_xenapi("storage_daemon", originator="pyxapi-tests")


@pytest.fixture(scope="module")
def host(x):
    return x.host.get_all()[0]


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


def new_vdi(x, sr, size, name="disk", read_only=False):
    return helpers.new_vdi(x, sr, size, name, read_only, name_description="a test disk",
                           other_config={"owner": "tests"})


def qemu_info(path) -> str:
    if QEMU_IMG is None:
        return ""
    p = subprocess.run([QEMU_IMG, "info", "-f", "vpc", path], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def destroy_sr(x, sr):
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    x.SR.destroy(sr)


def forget_sr(x, sr):
    """An SR that still lists VDIs (an ISO library): destroy is refused, forget leaves the files."""
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    assert failure(x.SR.destroy, sr) == ["SR_NOT_EMPTY"]
    assert "destroy" not in x.SR.get_allowed_operations(sr) and "forget" in x.SR.get_allowed_operations(sr)
    x.SR.forget(sr)


# -- the fresh host --------------------------------------------------------------------------------
def test_fresh_host_has_a_local_sr_as_pool_default(storage_daemon, x, host):
    pool = x.pool.get_all()[0]
    sr = x.pool.get_default_SR(pool)
    assert x.pool.get_suspend_image_SR(pool) == sr and x.pool.get_crash_dump_SR(pool) == sr
    assert x.host.get_suspend_image_sr(host) == sr and x.host.get_crash_dump_sr(host) == sr
    rec = x.SR.get_record(sr)
    assert rec["name_label"] == "Local storage" and rec["type"] == "ext" and rec["shared"] is False
    assert rec["content_type"] == "user" and rec["other_config"]["i18n-key"] == "local-storage"
    (pbd,) = rec["PBDs"]
    assert x.PBD.get_host(pbd) == host and x.PBD.get_currently_attached(pbd) is True
    assert int(rec["physical_size"]) > 0 and int(rec["physical_utilisation"]) >= 0
    assert os.path.isdir(os.path.join(storage_daemon.data_dir, "sr", rec["uuid"]))
    assert "vdi_create" in rec["allowed_operations"] and "destroy" not in rec["allowed_operations"]


def test_supported_types_and_sm_rows(storage_daemon, x):
    types = x.SR.get_supported_types()
    assert {"ext", "nfs", "iso", "udev", "bad", "slow"} <= set(types)
    sms = {r["type"]: r for r in x.SM.get_all_records().values()}
    assert sms["ext"]["driver_filename"] == os.path.join(storage_daemon.sm_dir, "extSR")
    assert "VDI_SNAPSHOT" in sms["ext"]["capabilities"] and sms["ext"]["features"]["VDI_RESET_ON_BOOT"] == "2"
    assert sms["bad"]["name_label"] == "bad" and sms["bad"]["capabilities"] == ["SR_PROBE"]
    assert "path" in sms["ext"]["configuration"]


def test_unknown_type(x, host, tmp):
    assert failure(x.SR.create, host, {"path": tmp}, "0", "n", "", "nosuch", "user", False, {}) == \
        ["SR_UNKNOWN_DRIVER", "nosuch"]
    assert failure(x.SR.probe, host, {}, "nosuch", {}) == ["SR_UNKNOWN_DRIVER", "nosuch"]


# -- ext -----------------------------------------------------------------------------------------------
def test_ext_sr_and_vdi_lifecycle(x, host, tmp):
    folder = os.path.join(tmp, "ext")
    sr = x.SR.create(host, {"path": folder}, "0", "ext test", "an ext SR", "ext", "user", False, {})
    rec = x.SR.get_record(sr)
    assert rec["type"] == "ext" and rec["name_description"] == "an ext SR" and int(rec["physical_size"]) > 0
    assert x.PBD.get_currently_attached(rec["PBDs"][0]) is True
    assert f"<UUID>{rec['uuid']}</UUID>" in x.SR.probe(host, {"path": folder}, "ext", {})

    v = new_vdi(x, sr, 10 * MIB + 1)                 # rounded up to a 2 MiB block
    vrec = x.VDI.get_record(v)
    assert vrec["virtual_size"] == str(12 * MIB) and vrec["location"] == vrec["uuid"]
    assert vrec["name_label"] == "disk" and vrec["other_config"] == {"owner": "tests"}
    path = os.path.join(folder, vrec["location"] + ".vhd")
    assert int(vrec["physical_utilisation"]) == os.path.getsize(path)
    assert x.SR.get_virtual_allocation(sr) == str(12 * MIB)
    if QEMU_IMG:
        assert "virtual size: 12 MiB" in qemu_info(path)

    with vhd.open(path) as h:                         # some data, as a guest would write it
        h.write(0, b"x" * (3 * MIB))
    x.VDI.update(v)
    assert int(x.VDI.get_physical_utilisation(v)) == os.path.getsize(path) > 3 * MIB

    x.VDI.resize(v, str(20 * MIB))
    assert x.VDI.get_virtual_size(v) == str(20 * MIB)
    assert failure(x.VDI.resize, v, str(4 * MIB))[0] == "SR_BACKEND_FAILURE_79"     # no shrinking

    snap = x.VDI.snapshot(v)
    srec = x.VDI.get_record(snap)
    assert srec["is_a_snapshot"] is True and srec["snapshot_of"] == v and x.VDI.get_snapshots(v) == [snap]
    assert srec["name_label"] == "disk" and srec["other_config"]["owner"] == "tests"
    assert srec["other_config"]["content_id"] and srec["virtual_size"] == str(20 * MIB)
    assert str(srec["snapshot_time"]) > "2000"
    clone = x.VDI.clone(v)
    crec = x.VDI.get_record(clone)
    assert crec["is_a_snapshot"] is False and crec["snapshot_of"] == "OpaqueRef:NULL"
    assert crec["virtual_size"] == str(20 * MIB) and crec["name_label"] == "disk"
    bases = [r for r in x.VDI.get_all_records_where(f'field "SR" = "{sr}"').values() if not r["managed"]]
    assert len(bases) == 2 and all(b["read_only"] and b["name_label"] == "base copy" for b in bases)
    base_ref = x.VDI.get_by_uuid(bases[0]["uuid"])
    assert failure(x.VDI.destroy, base_ref) == ["VDI_NOT_MANAGED", base_ref]
    files = sorted(os.listdir(folder))
    assert len([f for f in files if f.endswith(".vhd")]) == 5
    for f in files:
        if f.endswith(".vhd"):
            assert vhd.check(os.path.join(folder, f)) == []
            if QEMU_IMG:
                qemu_info(os.path.join(folder, f))
    # the snapshot and the clone read what the disk held when they were taken
    for ref in (snap, clone):
        with vhd.open(os.path.join(folder, x.VDI.get_location(ref) + ".vhd"), readonly=True) as h:
            assert h.read(0, 4096) == b"x" * 4096 and h.read(4 * MIB, 16) == bytes(16)

    copy = x.VDI.copy(v, sr)
    cp = x.VDI.get_record(copy)
    assert cp["virtual_size"] == str(20 * MIB) and cp["name_label"] == "disk" and cp["read_only"] is False
    with vhd.open(os.path.join(folder, cp["location"] + ".vhd"), readonly=True) as h:
        assert h.parent is None and h.read(3 * MIB - 8, 16) == b"x" * 8 + bytes(8)

    assert failure(x.SR.destroy, sr) == ["SR_HAS_PBD", sr]
    x.PBD.unplug(rec["PBDs"][0])
    assert failure(x.SR.destroy, sr) == ["SR_NOT_EMPTY"]
    x.PBD.plug(rec["PBDs"][0])
    for ref in (copy, clone, snap, v):
        x.VDI.destroy(ref)
    assert failure(x.VDI.get_record, v) == ["HANDLE_INVALID", "VDI", v]
    assert [f for f in os.listdir(folder) if f.endswith(".vhd")] == []       # base copies went with them
    assert x.SR.get_VDIs(sr) == [] and x.SR.get_virtual_allocation(sr) == "0"
    destroy_sr(x, sr)
    assert failure(x.SR.get_record, sr) == ["HANDLE_INVALID", "SR", sr]
    assert not os.path.exists(folder)


# -- vdi_compose (SMAPIv1), as xapi's storage layer calls it during storage migration ----------------
def _compose(d, x, vdi1, vdi2):
    """Runs the SR's driver with a vdi_compose request, as xapi's Sm.vdi_compose does (vdi_ref: VDI2,
    args: [VDI1]), with a session of the local superuser (the driver calls internal messages)."""
    local = XenAPI.Session("http://" + d.socket_path.replace("/", "_") + "/", transport=XenAPI.UDSTransport())
    local.xenapi.login_with_password("root", "", "2.3", "sm")
    try:
        sr = x.VDI.get_SR(vdi2)
        pbd = x.SR.get_PBDs(sr)[0]
        rec = x.VDI.get_record(vdi2)
        call = Call("vdi_compose", [vdi1], dict(x.PBD.get_device_config(pbd), SRmaster="true"),
                    host_ref=x.PBD.get_host(pbd), sr_ref=sr, sr_uuid=x.SR.get_uuid(sr), vdi_ref=vdi2,
                    vdi_uuid=rec["uuid"], vdi_location=rec["location"], session_ref=local._session)
        driver = os.path.join(DRIVERS_DIR, x.SR.get_type(sr) + "SR")
        env = dict(os.environ, XAPI_SOCKET=d.socket_path, XAPI_DATA_DIR=d.data_dir,
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        p = subprocess.run([sys.executable, driver, call.request()], capture_output=True, text=True, env=env,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout, p.stderr
    finally:
        local.xenapi.session.logout()


def test_vdi_compose(storage_daemon, x, host, tmp):
    """VDI1 (a parent layer) composed onto VDI2 (a differencing leaf with its own layer): VDI2 then
    reads its own blocks over VDI1's, through the daemon's export; VDI1 is a hidden, unmanaged base
    copy; the files check clean. Errors are faults, not tracebacks."""
    d = storage_daemon
    folder = os.path.join(tmp, "ext")
    sr = x.SR.create(host, {"path": folder}, "0", "compose", "", "ext", "user", False, {})
    size = 8 * 2 * MIB
    blk = 2 * MIB
    s = login(d, "compose")
    try:
        vdi1 = new_vdi(x, sr, size, "parent layer")
        parent_layer = b"".join(bytes([0xA0 + b]) * blk for b in range(4)) + bytes(4 * blk)
        raw_vdi(d, s, "import_raw_vdi", vdi1, parent_layer)
        empty = new_vdi(x, sr, size, "empty")
        vdi2 = x.VDI.clone(empty)                        # a differencing leaf over an empty base
        child_layer = bytearray(size)
        child_layer[2 * blk:3 * blk] = b"\xc2" * blk
        child_layer[5 * blk:6 * blk] = b"\xc5" * blk
        raw_vdi(d, s, "import_raw_vdi", vdi2, bytes(child_layer))
        out, _ = _compose(d, x, vdi1, vdi2)
        assert "methodResponse" in out and "<fault>" not in out, out
        expected = bytearray(parent_layer)
        expected[2 * blk:3 * blk] = b"\xc2" * blk
        expected[5 * blk:6 * blk] = b"\xc5" * blk
        assert raw_vdi(d, s, "export_raw_vdi", vdi2) == expected
        assert raw_vdi(d, s, "export_raw_vdi", vdi1) == parent_layer    # VDI1 itself is unchanged
        rec1, rec2 = x.VDI.get_record(vdi1), x.VDI.get_record(vdi2)
        assert rec1["managed"] is False and rec2["sm_config"]["vhd-parent"] == rec1["location"]
        p1, p2 = (os.path.join(folder, r["location"] + ".vhd") for r in (rec1, rec2))
        with vhd.open(p2, readonly=True) as v:
            assert v.parent == os.path.realpath(p1)
        with vhd.open(p1, readonly=True) as v:
            assert v.hidden
        assert vhd.check(p1) == [] and vhd.check(p2) == []
        # onto a VDI that isn't there, or with no VDI to compose onto: faults from the driver
        out, _ = _compose(d, x, "OpaqueRef:nope", vdi2)
        assert "<fault>" in out and "HANDLE_INVALID" in out
        other = new_vdi(x, sr, size, "dynamic")            # not differencing: SM's general error
        out, err = _compose(d, x, vdi1, other)
        assert "<fault>" in out and "not a differencing VHD" in out and "Traceback" not in err
        assert raw_vdi(d, s, "export_raw_vdi", vdi2) == expected
    finally:
        s.xenapi.session.logout()


def test_vdi_errors(x, host, tmp):
    sr = x.SR.create(host, {"path": os.path.join(tmp, "a")}, "0", "a", "", "ext", "user", False, {})
    small = x.SR.create(host, {"path": os.path.join(tmp, "small")}, str(4 * MIB), "small", "", "ext", "user",
                        False, {})
    assert x.SR.get_physical_size(small) == str(4 * MIB)
    v = new_vdi(x, sr, 64 * MIB)
    with vhd.open(os.path.join(tmp, "a", x.VDI.get_location(v) + ".vhd")) as h:
        h.write(0, b"y" * (8 * MIB))
    x.VDI.update(v)
    need = x.VDI.get_physical_utilisation(v)
    assert failure(x.VDI.copy, v, small) == ["SR_FULL", need, x.SR.get_physical_size(small)]
    ro = new_vdi(x, sr, 2 * MIB, "ro", read_only=True)
    assert failure(x.VDI.resize, ro, str(4 * MIB)) == ["VDI_READONLY", ro]
    assert failure(x.VDI.copy, v, sr, "OpaqueRef:NULL", ro) == ["VDI_READONLY", ro]
    tiny = new_vdi(x, sr, 2 * MIB, "tiny")
    assert failure(x.VDI.copy, v, sr, "OpaqueRef:NULL", tiny) == ["VDI_TOO_SMALL", tiny, str(64 * MIB)]
    # a VDI another host holds read-write cannot be activated here
    x.VDI.add_to_sm_config(v, "host_OpaqueRef:another-host", "RW")
    assert failure(x.VDI.copy, v, sr) == ["VDI_IN_USE", v, "activate"]
    x.VDI.remove_from_sm_config(v, "host_OpaqueRef:another-host")
    into = new_vdi(x, sr, 64 * MIB, "into")
    assert x.VDI.copy(v, sr, "OpaqueRef:NULL", into) == into
    assert int(x.VDI.get_physical_utilisation(into)) > 8 * MIB
    assert x.VDI.get_sm_config(v).get("host_" + host) is None             # deactivated again
    x.PBD.unplug(x.SR.get_PBDs(sr)[0])
    assert failure(new_vdi, x, sr, MIB) == ["SR_HAS_NO_PBDS", sr]
    assert failure(x.VDI.destroy, v) == ["SR_HAS_NO_PBDS", sr]
    x.PBD.plug(x.SR.get_PBDs(sr)[0])
    for ref in (v, ro, tiny, into):
        x.VDI.destroy(ref)
    destroy_sr(x, sr)
    destroy_sr(x, small)


def test_copy_across_srs(x, host, tmp):
    a = x.SR.create(host, {"path": os.path.join(tmp, "a")}, "0", "a", "", "ext", "user", False, {})
    os.makedirs(os.path.join(tmp, "nfs"))            # the export exists; the SR is a folder in it
    b = x.SR.create(host, {"path": os.path.join(tmp, "nfs")}, "0", "b", "", "nfs", "user", True, {})
    v = new_vdi(x, a, 30 * MIB)
    src = os.path.join(tmp, "a", x.VDI.get_location(v) + ".vhd")
    with vhd.open(src) as h:
        h.write(MIB, b"z" * MIB)
        h.write(25 * MIB, b"w" * 512)
    snap = x.VDI.snapshot(v)                         # the copy reads through the chain
    c = x.VDI.copy(v, b)
    dst = os.path.join(tmp, "nfs", x.SR.get_uuid(b), x.VDI.get_location(c) + ".vhd")
    assert x.VDI.get_SR(c) == b and x.VDI.get_virtual_size(c) == str(30 * MIB)
    assert int(x.VDI.get_physical_utilisation(c)) == os.path.getsize(dst) < 8 * MIB   # thin: data blocks only
    with vhd.open(dst, readonly=True) as h:
        assert h.parent is None and h.read(MIB, MIB) == b"z" * MIB and h.read(25 * MIB, 512) == b"w" * 512
    if QEMU_IMG:
        # qemu reads no differencing VHDs: compare with the base copy, which holds the data now
        base = os.path.join(tmp, "a", x.VDI.get_sm_config(v)["vhd-parent"] + ".vhd")
        p = subprocess.run([QEMU_IMG, "compare", "-f", "vpc", "-F", "vpc", base, dst], capture_output=True,
                           text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    for ref in (c, snap, v):
        x.VDI.destroy(ref)
    destroy_sr(x, a)
    destroy_sr(x, b)


def test_vdi_forget_introduce_and_setters(x, host, tmp):
    """VDI.forget drops the record only (xapi's Db.VDI.destroy: the file stays); VDI.introduce is
    refused where the driver lacks VDI_INTRODUCE, and a scan brings the file back with its sizes under
    its uuid; the setters write what they name, set_on_boot only where the SR has VDI_RESET_ON_BOOT."""
    folder = os.path.join(tmp, "ext")
    sr = x.SR.create(host, {"path": folder}, "0", "ext", "", "ext", "user", False, {})
    v = new_vdi(x, sr, 6 * MIB)
    rec = x.VDI.get_record(v)
    path = os.path.join(folder, rec["location"] + ".vhd")
    with vhd.open(path) as h:
        h.write(2 * MIB, b"q" * MIB)
    x.VDI.update(v)
    rec = x.VDI.get_record(v)
    x.VDI.forget(v)
    assert failure(x.VDI.get_record, v) == ["HANDLE_INVALID", "VDI", v]
    assert v not in x.SR.get_VDIs(sr) and os.path.exists(path)

    # ext lacks VDI_INTRODUCE: xapi_sr_operations refuses vdi_introduce; a scan finds the file again
    assert failure(x.VDI.introduce, rec["uuid"], "back", "introduced", sr, "user", False, False, {"k": "v"},
                   rec["location"], {}, {}, True, "0", "0", "OpaqueRef:NULL", False,
                   xmlrpc.client.DateTime("19700101T00:00:00Z"), "OpaqueRef:NULL") == ["SR_OPERATION_NOT_SUPPORTED", sr]
    assert "vdi_introduce" not in x.SR.get_allowed_operations(sr)
    x.SR.scan(sr)
    back = x.VDI.get_by_uuid(rec["uuid"])
    brec = x.VDI.get_record(back)
    assert (brec["uuid"], brec["location"], brec["SR"]) == (rec["uuid"], rec["location"], sr)
    assert brec["virtual_size"] == str(6 * MIB) and int(brec["physical_utilisation"]) == os.path.getsize(path)
    assert back in x.SR.get_VDIs(sr)
    with vhd.open(path, readonly=True) as h:
        assert h.read(2 * MIB, MIB) == b"q" * MIB          # the same disk

    x.VDI.set_name_label(back, "renamed")
    x.VDI.set_name_description(back, "described")
    x.VDI.set_sharable(back, True)
    x.VDI.set_allow_caching(back, True)
    x.VDI.set_on_boot(back, "reset")
    x.VDI.set_read_only(back, True)
    brec = x.VDI.get_record(back)
    assert (brec["name_label"], brec["name_description"], brec["sharable"], brec["allow_caching"],
            brec["on_boot"], brec["read_only"]) == ("renamed", "described", True, True, "reset", True)
    assert failure(x.VDI.set_on_boot, "OpaqueRef:nope", "reset")[0] == "HANDLE_INVALID"
    x.VDI.set_read_only(back, False)
    x.VDI.set_on_boot(back, "persist")
    x.VDI.destroy(back)
    assert not os.path.exists(path)

    lib = os.path.join(tmp, "isos")                   # no VDI_RESET_ON_BOOT on an ISO SR
    os.makedirs(lib)
    with open(os.path.join(lib, "a.iso"), "wb") as f:
        f.write(b"\1" * 4096)
    iso = x.SR.create(host, {"location": lib}, "0", "isos", "", "iso", "iso", False, {})
    x.SR.scan(iso)
    (cd,) = x.SR.get_VDIs(iso)
    assert failure(x.VDI.set_on_boot, cd, "reset") == ["SR_OPERATION_NOT_SUPPORTED", iso]
    destroy_sr(x, sr)
    forget_sr(x, iso)


# -- nfs (a folder every host sees) --------------------------------------------------------------------
def test_nfs_folder_sr_forget_and_introduce_again(x, host, tmp):
    export = os.path.join(tmp, "export")
    os.makedirs(export)
    sr = x.SR.create(host, {"path": export}, "0", "shared", "", "nfs", "user", True, {})
    uuid = x.SR.get_uuid(sr)
    assert os.listdir(export) == [uuid] and x.SR.get_shared(sr) is True
    assert f"<UUID>{uuid}</UUID>" in x.SR.probe(host, {"path": export}, "nfs", {})
    v = new_vdi(x, sr, 6 * MIB, "kept")
    vuuid = x.VDI.get_uuid(v)
    assert os.path.exists(os.path.join(export, uuid, vuuid + ".vhd"))
    # forget it (records only), then introduce it again: a scan finds the disk
    pbd = x.SR.get_PBDs(sr)[0]
    assert failure(x.SR.forget, sr) == ["SR_HAS_PBD", sr]
    x.PBD.unplug(pbd)
    x.SR.forget(sr)
    assert failure(x.VDI.get_record, v)[0] == "HANDLE_INVALID"
    sr2 = x.SR.introduce(uuid, "shared again", "", "nfs", "user", True, {})
    assert failure(x.SR.introduce, uuid, "twice", "", "nfs", "user", True, {}) == ["SR_UUID_EXISTS", uuid]
    assert x.SR.get_physical_size(sr2) == "-1"
    pbd2 = x.PBD.create({"host": host, "SR": sr2, "device_config": {"path": export}, "other_config": {}})
    assert failure(x.PBD.create, {"host": host, "SR": sr2, "device_config": {}, "other_config": {}}) == \
        ["PBD_EXISTS", sr2, host, pbd2]
    x.PBD.plug(pbd2)
    (v2,) = x.SR.get_VDIs(sr2)
    assert x.VDI.get_uuid(v2) == vuuid and x.VDI.get_virtual_size(v2) == str(6 * MIB)
    assert int(x.SR.get_physical_size(sr2)) > 0
    # a VHD copied into the folder behind our back appears at the next scan; a removed one goes
    extra = "11111111-2222-3333-4444-555555555555"
    vhd.create(os.path.join(export, uuid, extra + ".vhd"), 4 * MIB)
    os.unlink(os.path.join(export, uuid, vuuid + ".vhd"))
    x.SR.scan(sr2)
    (v3,) = x.SR.get_VDIs(sr2)
    assert x.VDI.get_uuid(v3) == extra and x.VDI.get_virtual_size(v3) == str(4 * MIB)
    x.VDI.destroy(v3)
    destroy_sr(x, sr2)
    assert os.listdir(export) == []


# -- iso -------------------------------------------------------------------------------------------------
def _kernel_has_nfs() -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] in ("nfs", "nfs4") for line in f if line.strip())


@contextlib.contextmanager
def nfs_port_listener():
    """Something answering on 127.0.0.1:2049, so the driver gets past SM's port test (NFSTarget) to
    mount.nfs; it speaks no NFS. Skips when the port is taken."""
    try:
        ls = socket.create_server(("127.0.0.1", 2049))
    except OSError as e:
        pytest.skip(f"port 2049 is in use here: {e}")
    with ls:
        yield


def test_nfs_sr_on_an_export_that_cannot_be_mounted(storage_daemon, x, host):
    """device-config server/serverpath: the driver first tries the NFS port, as SM's _testHost (nothing
    there: NFSTarget, 108), then mounts the export with the system's mount.nfs (or, where the kernel has
    no NFS, xapi-nfs-mount). Where that fails (what answers on the port is no NFS server; given 2 s:
    timeo=10,retrans=1) SR.create and SR.probe fail with SM's NFSMount error (73) carrying the mount
    program's words, nothing is left behind, and the daemon goes on."""
    if shutil.which("mount.nfs") is None:
        pytest.skip("mount.nfs (Debian nfs-common) is not installed: tools/system-deps.sh installs it")
    before = set(x.SR.get_all())
    mounts = os.path.join(storage_daemon.data_dir, "sr-mount")
    # NFSv4: no rpc.statd needed (for v3 mount.nfs spends 10 s trying to start one first)
    nobody = {"server": "127.0.0.2", "serverpath": "/srv/export", "nfsversion": "4"}
    for call in (lambda: x.SR.create(host, nobody, "0", "nfs", "", "nfs", "user", True, {}),
                 lambda: x.SR.probe(host, nobody, "nfs", {})):
        details = failure(call)
        assert details[0] == "SR_BACKEND_FAILURE_108" and "2049" in details[2], details
    dconf = {"server": "127.0.0.1", "serverpath": "/srv/no-such-export", "nfsversion": "4",
             "options": "timeo=10,retrans=1"}
    with nfs_port_listener():
        for call in (lambda: x.SR.create(host, dconf, "0", "nfs", "", "nfs", "user", True, {}),
                     lambda: x.SR.probe(host, dconf, "nfs", {})):
            details = failure(call)
            assert details[0].startswith("SR_BACKEND_FAILURE"), details
            if not _kernel_has_nfs():        # "No such device", or the FUSE client's timeout: NFSMount (73)
                assert details[0] == "SR_BACKEND_FAILURE_73", details
                assert "mount.nfs" in details[2] or "xapi-nfs-mount" in details[2], details
    assert set(x.SR.get_all()) == before
    assert not os.path.isdir(mounts) or os.listdir(mounts) == []        # no mount point left
    assert storage_daemon.alive()


FAKE_MOUNT = """#!/bin/sh
# A TEST OF THE ARGUMENTS ONLY: records how the driver runs mount.nfs and fails; it mounts nothing.
printf '%s\\n' "$*" >> LOG
echo "fake mount.nfs: not mounting (this test checks the arguments only)" >&2
exit 32
"""
FAKE_SHOWMOUNT = """#!/bin/sh
# A TEST OF THE ARGUMENTS ONLY: the export list a server would give to showmount --no-headers -e.
[ "$1 $2 $3" = "--no-headers -e 127.0.0.1" ] || exit 1
printf '/srv/vms *\\n/srv/isos 10.0.0.0/8\\n'
"""


def test_nfs_mount_arguments_as_sm_builds_them(tmp_path):
    """ONLY A TEST OF OUR ARGUMENT BUILDING: mount.nfs, showmount and modprobe are fakes put first on
    the daemon's PATH; the fake mount.nfs records its arguments and fails, so every call here ends in
    NFSMount (73) and no SR is claimed to work. What is checked is that the arguments are SM's
    (nfs.py soft_mount): soft, proto, vers, acdirmin=0, acdirmax=0, then timeo/retrans from the SR's
    other-config nfs-timeout/nfs-retrans (default 200 and 4) for the SR's own mount but not for a
    probe, then device-config options; the export's <sr-uuid> sub-folder mounted at sr-mount/<uuid>;
    useUDP; a bad nfsversion refused (NFSVersion, 72) before any mount; a missing serverpath answered
    with ConfigServerPathMissing (101) and the server's exports listed, as SM's scan_exports does."""
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "mount.log"         # drivers run with SM's environment: the path is in the script
    # modprobe nfs "succeeds": the driver takes the kernel's way (mount.nfs), not the FUSE client's
    for name, text in (("mount.nfs", FAKE_MOUNT.replace("LOG", f"'{log}'")), ("showmount", FAKE_SHOWMOUNT),
                       ("modprobe", "#!/bin/sh\nexit 0\n")):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    d = _daemon.start(env={"PATH": f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    try:
        s = login(d, "pyxapi-tests")
        x = s.xenapi
        host = x.host.get_all()[0]
        mounts = os.path.join(d.data_dir, "sr-mount")
        calls = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
        dconf = {"server": "127.0.0.1", "serverpath": "/srv/vms", "nfsversion": "4.1", "options": "nconnect=4"}
        with nfs_port_listener():
            details = failure(x.SR.create, host, dconf, "0", "nfs", "", "nfs", "user", True, {})
            assert details[0] == "SR_BACKEND_FAILURE_73" and "fake mount.nfs" in details[2], details
            mount = calls()[-1].split()
            assert mount[0] == "127.0.0.1:/srv/vms" and mount[1].startswith(mounts + "/") and mount[2] == "-o"
            assert mount[3] == "soft,proto=tcp,vers=4.1,acdirmin=0,acdirmax=0,timeo=200,retrans=4,nconnect=4"

            details = failure(x.SR.probe, host, {**dconf, "useUDP": "true"}, "nfs", {})
            assert details[0] == "SR_BACKEND_FAILURE_73", details
            assert calls()[-1].split() == ["127.0.0.1:/srv/vms", os.path.join(mounts, "probe"), "-o",
                                           "soft,proto=udp,vers=4.1,acdirmin=0,acdirmax=0,nconnect=4"]

            # an SR's own mount (PBD.plug): its other-config's timeo and retrans, its sub-folder
            sr = x.SR.introduce("", "nfs", "", "nfs", "user", True, {})
            uuid = x.SR.get_uuid(sr)
            x.SR.add_to_other_config(sr, "nfs-timeout", "50")
            x.SR.add_to_other_config(sr, "nfs-retrans", "2")
            pbd = x.PBD.create({"host": host, "SR": sr, "device_config": {**dconf, "nfsversion": "3"},
                                "other_config": {}})
            details = failure(x.PBD.plug, pbd)
            assert details[0] == "SR_BACKEND_FAILURE_73", details
            assert calls()[-1].split() == [f"127.0.0.1:/srv/vms/{uuid}", os.path.join(mounts, uuid), "-o",
                                           "soft,proto=tcp,vers=3,acdirmin=0,acdirmax=0,timeo=50,retrans=2,nconnect=4"]
            assert x.PBD.get_currently_attached(pbd) is False

            n = len(calls())
            details = failure(x.SR.probe, host, {**dconf, "nfsversion": "2"}, "nfs", {})
            assert details[0] == "SR_BACKEND_FAILURE_72" and "nfsversion" in details[2], details
            details = failure(x.SR.probe, host, {"server": "127.0.0.1"}, "nfs", {})
            assert details[0] == "SR_BACKEND_FAILURE_101", details
            assert "<Path>/srv/vms</Path><Accesslist>*</Accesslist>" in details[3], details
            assert "<Path>/srv/isos</Path><Accesslist>10.0.0.0/8</Accesslist>" in details[3], details
            assert len(calls()) == n                            # neither ran mount.nfs
        assert not os.path.isdir(mounts) or os.listdir(mounts) == []
        assert d.alive()
    finally:
        _daemon.cleanup(d)


def test_iso_sr(x, host, tmp):
    lib = os.path.join(tmp, "isos")
    os.makedirs(lib)
    with open(os.path.join(lib, "debian.iso"), "wb") as f:
        f.write(b"\1" * 8192)
    named = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee.img"
    with open(os.path.join(lib, named), "wb") as f:
        f.write(b"\2" * 4096)
    with open(os.path.join(lib, "README.txt"), "w") as f:
        f.write("not an image")
    sr = x.SR.create(host, {"location": lib}, "0", "ISOs", "", "iso", "iso", True, {})
    assert "<Count>2</Count>" in x.SR.probe(host, {"location": lib}, "iso", {})
    x.SR.scan(sr)
    vdis = {r["location"]: r for r in x.VDI.get_all_records_where(f'field "SR" = "{sr}"').values()}
    assert sorted(vdis) == [named, "debian.iso"]
    deb = vdis["debian.iso"]
    assert deb["read_only"] is True and deb["virtual_size"] == "8192" and deb["name_label"] == "debian.iso"
    assert vdis[named]["uuid"] == named[:36]
    # an upload target: an empty writable file
    up = x.VDI.create({"name_label": "upload.iso", "SR": sr, "virtual_size": "4096", "type": "user",
                       "sharable": False, "read_only": False, "other_config": {},
                       "sm_config": {"path": "upload.iso"}})
    assert x.VDI.get_read_only(up) is False and os.path.getsize(os.path.join(lib, "upload.iso")) == 4096
    copy = x.VDI.copy(x.VDI.get_by_uuid(deb["uuid"]), x.pool.get_default_SR(x.pool.get_all()[0]))
    assert x.VDI.get_virtual_size(copy) == str(2 * MIB)     # a VHD rounds up to a block
    x.VDI.destroy(copy)
    os.unlink(os.path.join(lib, "debian.iso"))
    x.SR.scan(sr)
    assert sorted(x.VDI.get_location(v) for v in x.SR.get_VDIs(sr)) == [named, "upload.iso"]
    x.VDI.destroy(up)
    assert not os.path.exists(os.path.join(lib, "upload.iso"))
    forget_sr(x, sr)                # SR_NOT_EMPTY for destroy while it lists images (xapi_sr_operations)
    assert sorted(os.listdir(lib)) == ["README.txt", named]                # the images stay


# -- drivers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,status", [("garbage", None), ("crash", "non-zero exit"),
                                         ("signal", "received signal: sigkill"), ("hang", "timed out after 4s")])
def test_misbehaving_driver_is_a_backend_failure(x, host, mode, status):
    t0 = time.monotonic()
    err = failure(x.SR.probe, host, {"mode": mode}, "bad", {})
    assert time.monotonic() - t0 < 10
    assert err[0] == "SR_BACKEND_FAILURE" and len(err) == 4
    if status:
        assert err[1] == status
    assert f"bad driver: {mode}" in err[3]
    if mode == "garbage":
        assert "just garbage" in err[2]


def test_driver_fault_is_sr_backend_failure_n(x, host):
    assert failure(x.SR.probe, host, {"mode": "fault"}, "bad", {}) == \
        ["SR_BACKEND_FAILURE_44", "", "There is insufficient space", "bad driver: fault\n"]


def test_a_driver_dropped_into_the_folder(storage_daemon, x, host, tmp):
    shutil.copy2(os.path.join(storage_daemon.sm_dir, "extSR"), os.path.join(storage_daemon.sm_dir, "dropinSR"))
    assert "dropin" in x.SR.get_supported_types()
    (sm,) = x.SM.get_all_records_where('field "type" = "dropin"').values()
    assert sm["driver_filename"] == os.path.join(storage_daemon.sm_dir, "dropinSR")
    # SR.create with a type not seen yet looks at the folder again
    shutil.copy2(os.path.join(storage_daemon.sm_dir, "extSR"), os.path.join(storage_daemon.sm_dir, "laterSR"))
    sr = x.SR.create(host, {"path": os.path.join(tmp, "later")}, "0", "later", "", "later", "user", False, {})
    assert x.SR.get_type(sr) == "later"
    destroy_sr(x, sr)
    os.unlink(os.path.join(storage_daemon.sm_dir, "dropinSR"))
    os.unlink(os.path.join(storage_daemon.sm_dir, "laterSR"))
    assert "dropin" not in x.SR.get_supported_types()
    assert x.SM.get_all_records_where('field "type" = "dropin"') == {}


# -- the access layer across a restart ----------------------------------------------------------------------
def _log(path):
    return open(path).read().split("\n") if os.path.exists(path) else []


def test_access_state_survives_a_restart(fresh_daemon, tmp):
    folder = _drivers_folder()
    env = {"XAPI_SM_DIR": folder}
    try:
        d = fresh_daemon(env=env)
        s = login(d)
        x = s.xenapi
        host = x.host.get_all()[0]
        log, block = os.path.join(tmp, "driver.log"), os.path.join(tmp, "block")
        sr = x.SR.create(host, {"path": os.path.join(tmp, "slow"), "log": log, "block": block}, "0", "slow", "",
                         "slow", "user", False, {})
        v = new_vdi(x, sr, 4 * MIB)
        src = x.VDI.get_location(v)
        open(block, "w").close()
        task = x.Async.VDI.copy(v, sr)                  # blocks activating the destination RW
        deadline = time.monotonic() + 15
        while not any(line.startswith("vdi_activate") and line.endswith(" true") for line in _log(log)):
            assert time.monotonic() < deadline, _log(log)
            time.sleep(0.05)
        # the source is in use meanwhile
        assert failure(x.VDI.destroy, v) == ["VDI_IN_USE", v, "destroy"]
        assert x.VDI.get_sm_config(v)["host_" + host] == "RO"
        (dst,) = [line.split()[1] for line in _log(log) if line.startswith("vdi_attach") and line.endswith("true")]
        state = open(os.path.join(d.data_dir, "storage-access.json")).read()
        assert src in state and dst in state
        d.stop()                                       # SIGTERM, mid-copy
        os.unlink(block)
        before = _log(log)
        d2 = _daemon.start(data_dir=d.data_dir, env=env)
        try:
            s2 = login(d2)
            s2.xenapi.SR.get_supported_types()          # waits for the storage start-up (and its clean-up)
            after = _log(log)[len(before) - 1:]
            calls = [line.split()[:2] for line in after if line]
            assert sorted(calls) == sorted([["vdi_deactivate", src], ["vdi_detach", dst], ["vdi_detach", src]]), after
            assert not any(c[0] in ("vdi_attach", "vdi_activate") for c in calls)
            assert "host_" + host not in s2.xenapi.VDI.get_sm_config(v)
            s2.xenapi.VDI.destroy(v)                   # free again
            s2.xenapi.session.logout()
        finally:
            d2.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
