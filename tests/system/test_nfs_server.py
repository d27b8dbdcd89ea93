"""nfs and iso SRs on a real NFS server: NFS-Ganesha (userspace, VFS FSAL) exporting a temporary folder
on 127.0.0.1, driven through the XenAPI SDK against a real daemon. The SR mounts the export with the
kernel's client where there is one, else with xapi-nfs-mount (FUSE over libnfs): either way a real
NFS mount in /proc/mounts, whose files appear in the exported folder.

Needs root, ganesha.nfsd with its VFS FSAL, rpcbind (NFSv3's MOUNT protocol and showmount) and,
without kernel NFS, /dev/fuse and the built xapi-nfs-mount: tools/system-deps.sh installs them.
rpcbind is started only when none answers, and stopped after; ganesha is always this module's own
(config, pid file, log and recovery folder in a temporary folder), stopped by pid."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import XenAPI

from tests import daemon as _daemon
from tests.fixtures import root_session, xenapi_of
from tests.helpers import MIB, failure, new_vdi, raw_vdi
from xapi.sm import vhd
from xapi.sm.filesr import META, kernel_has_nfs, nfs_fuse_client

SERVER = "127.0.0.1"     # rpcbind answers a wildcard registration with the address of the interface
                         # the caller came in on: another 127.x address would be sent to eth0's

GANESHA_CONF = """
NFS_CORE_PARAM {{
    Bind_addr = {addr};
    NFS_Port = 2049;
    MNT_Port = {mnt_port};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Protocols = 3, 4;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = {recovery};
    Only_Numeric_Owners = true;    # uids as numbers, as a Linux server does for sec=sys
}}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {export};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


def _answers(addr: str, port: int) -> bool:
    try:
        socket.create_connection((addr, port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _mounts() -> list[list[str]]:
    """(source, mount point, type) of every mount."""
    with open("/proc/self/mounts") as f:
        return [[re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), v) for v in line.split()[:3]]
                for line in f]


def _mount_of(path: str) -> list[str] | None:
    return next((m for m in _mounts() if m[1] == path), None)


@pytest.fixture(scope="module")
def nfs_server():
    """(export folder, ganesha's log) of a running ganesha; skips with the reason where it cannot run."""
    if os.geteuid() != 0:
        pytest.skip("an NFS server and mounts need root")
    for tool in ("ganesha.nfsd", "rpcbind", "showmount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (tools/system-deps.sh installs nfs-ganesha, "
                        "nfs-ganesha-vfs, rpcbind, nfs-common)")
    if not kernel_has_nfs():
        if nfs_fuse_client() is None:
            pytest.skip("the kernel has no NFS client and xapi-nfs-mount is not built "
                        "(make build, with libnfs-dev and libfuse3-dev)")
        if not os.path.exists("/dev/fuse"):
            pytest.skip("the kernel has neither NFS nor FUSE (/dev/fuse)")
    if _answers(SERVER, 2049):
        pytest.skip(f"something already listens on {SERVER}:2049")
    folder = tempfile.mkdtemp(prefix="nfs-ganesha-")
    export, recovery = os.path.join(folder, "export"), os.path.join(folder, "recovery")
    os.makedirs(export)
    os.makedirs(recovery)
    rpcbind = None
    # rpcbind leaves its warm-start state in /run/rpcbind when it ends: ours is removed after
    warm = [p for p in ("/run/rpcbind/rpcbind.xdr", "/run/rpcbind/portmap.xdr") if not os.path.exists(p)]
    if not _answers("127.0.0.1", 111):
        rpcbind = subprocess.Popen(["rpcbind", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", 111) and time.monotonic() < deadline:
            time.sleep(0.05)
    conf, log = os.path.join(folder, "ganesha.conf"), os.path.join(folder, "ganesha.log")
    with open(conf, "w") as f:
        f.write(GANESHA_CONF.format(addr=SERVER, mnt_port=_free_port(SERVER), recovery=recovery,
                                    export=export))
    ganesha = subprocess.Popen(["ganesha.nfsd", "-F", "-f", conf, "-p", os.path.join(folder, "ganesha.pid"),
                                "-L", log, "-N", "NIV_EVENT"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while ganesha.poll() is None and time.monotonic() < deadline:
            with open(log, errors="replace") if os.path.exists(log) else open(os.devnull) as f:
                if "NFS SERVER INITIALIZED" in f.read() and _answers(SERVER, 2049):
                    break
            time.sleep(0.1)
        else:
            text = open(log, errors="replace").read() if os.path.exists(log) else ""
            pytest.fail(f"ganesha did not start (exit {ganesha.poll()}):\n{text[-3000:]}")
        yield export, log
    finally:
        _daemon.terminate(ganesha, 10)
        if rpcbind is not None:
            _daemon.terminate(rpcbind, 10)
            for p in warm:
                if os.path.exists(p):
                    os.unlink(p)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def d(nfs_server):
    daemon = _daemon.start()
    try:
        yield daemon
    finally:
        # an SR a failed test left plugged: unmounted first, or the cleanup would delete through it
        for source, point, kind in _mounts():
            if point.startswith(daemon.data_dir + "/"):
                subprocess.run(["umount", "-l", point], check=False)
        _daemon.cleanup(daemon)


session = root_session("d", originator="pyxapi-tests")
x = xenapi_of("session")


@pytest.fixture(scope="module")
def host(x):
    return x.host.get_all()[0]


def _unplug(x, pbd) -> None:
    """PBD.unplug once the last transfer has let go of its disk: the raw handlers detach it after the
    response has gone (VDI_IN_USE until then)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            x.PBD.unplug(pbd)
            return
        except XenAPI.Failure as e:
            if e.details[0] != "VDI_IN_USE" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _client_kind() -> set[str]:
    return {"nfs", "nfs4"} if kernel_has_nfs() else {"fuse.nfs"}


def test_nfs_sr_on_a_real_server(nfs_server, d, session, x, host):
    """NFSv3: the exports listed (showmount through rpcbind), SR.create mounts <export>/<sr-uuid>,
    a VDI's VHD written through the mount is the file in the exported folder, raw import and export,
    snapshot, PBD.unplug unmounts, PBD.plug mounts again, SR.probe finds the SR, SR.destroy removes
    its folder from the export."""
    export, _ = nfs_server
    # no serverpath: ConfigServerPathMissing (101) with the server's exports, as SM's scan_exports
    details = failure(x.SR.probe, host, {"server": SERVER}, "nfs", {})
    assert details[0] == "SR_BACKEND_FAILURE_101", details
    assert f"<Target>{SERVER}</Target><Path>{export}</Path>" in details[3], details

    dconf = {"server": SERVER, "serverpath": export, "nfsversion": "3"}
    sr = x.SR.create(host, dconf, "0", "nfs on ganesha", "", "nfs", "user", True, {})
    uuid = x.SR.get_uuid(sr)
    point = os.path.join(d.data_dir, "sr-mount", uuid)
    mount = _mount_of(point)
    assert mount is not None and mount[0] == f"{SERVER}:{export}/{uuid}" and mount[2] in _client_kind(), mount
    folder = os.path.join(export, uuid)
    assert os.path.isfile(os.path.join(folder, META))              # written by the SR, seen by the server
    if not kernel_has_nfs():
        with open(os.path.join(d.data_dir, "nfs-client")) as f:
            assert f.read() == nfs_fuse_client()
    # the sizes are the export's file system's, as the server reports them
    st = os.statvfs(export)
    assert int(x.SR.get_physical_size(sr)) == st.f_blocks * st.f_frsize

    vdi = new_vdi(x, sr, 4 * MIB)
    location = x.VDI.get_location(vdi)
    path = os.path.join(folder, location + ".vhd")
    with vhd.open(path, readonly=True) as v:                        # the server's copy, read directly
        assert v.virtual_size == 4 * MIB
    if shutil.which("qemu-img"):
        info = subprocess.run(["qemu-img", "info", "-f", "vpc", path], capture_output=True, text=True)
        assert info.returncode == 0 and "virtual size: 4 MiB" in info.stdout, info
    data = os.urandom(MIB) + b"\xa5" * MIB + os.urandom(123_457)
    raw_vdi(d, session, "import_raw_vdi", vdi, data)
    assert raw_vdi(d, session, "export_raw_vdi", vdi) == data.ljust(4 * MIB, b"\0")

    snap = x.VDI.snapshot(vdi, {})
    assert x.VDI.get_snapshot_of(snap) == vdi
    names = sorted(n for n in os.listdir(folder) if n.endswith(".vhd"))
    assert len(names) == 3 and location + ".vhd" in names           # base copy, the VDI's leaf, the snapshot
    raw_vdi(d, session, "import_raw_vdi", vdi, b"after the snapshot".ljust(MIB, b"\0"))
    assert raw_vdi(d, session, "export_raw_vdi", snap) == data.ljust(4 * MIB, b"\0")

    (pbd,) = x.SR.get_PBDs(sr)
    _unplug(x, pbd)
    assert _mount_of(point) is None and not os.path.exists(point)
    assert os.path.isfile(os.path.join(folder, META))               # the data stays on the server
    x.PBD.plug(pbd)
    assert _mount_of(point) is not None
    got = raw_vdi(d, session, "export_raw_vdi", vdi)
    assert got[:MIB] == b"after the snapshot".ljust(MIB, b"\0") and got[MIB:2 * MIB] == data[MIB:2 * MIB]
    assert f"<UUID>{uuid}</UUID>" in x.SR.probe(host, dconf, "nfs", {})

    for v in (snap, vdi):
        x.VDI.destroy(v)
    _unplug(x, pbd)
    x.SR.destroy(sr)
    assert not os.path.exists(folder) and os.listdir(export) == []
    assert [m for m in _mounts() if m[1].startswith(d.data_dir + "/")] == []


def test_nfs_sr_nfsv4(nfs_server, d, session, x, host):
    """nfsversion=4 mounts over NFSv4 (no MOUNT protocol): the SR works the same (the FUSE client
    writes in pieces there, a VHD's blocks included)."""
    export, _ = nfs_server
    sr = x.SR.create(host, {"server": SERVER, "serverpath": export, "nfsversion": "4"}, "0", "nfs4", "",
                     "nfs", "user", True, {})
    uuid = x.SR.get_uuid(sr)
    mount = _mount_of(os.path.join(d.data_dir, "sr-mount", uuid))
    assert mount is not None and mount[0] == f"{SERVER}:{export}/{uuid}", mount
    vdi = new_vdi(x, sr, 4 * MIB)
    data = os.urandom(2 * MIB + 4321)
    raw_vdi(d, session, "import_raw_vdi", vdi, data)
    assert raw_vdi(d, session, "export_raw_vdi", vdi) == data.ljust(4 * MIB, b"\0")
    assert os.path.isfile(os.path.join(export, uuid, x.VDI.get_location(vdi) + ".vhd"))
    x.VDI.destroy(vdi)
    for pbd in x.SR.get_PBDs(sr):
        _unplug(x, pbd)
    x.SR.destroy(sr)
    assert os.listdir(export) == [], [(r, f) for r, _, f in os.walk(export)]


def test_nfs_sr_on_a_path_the_server_does_not_export(nfs_server, d, x, host):
    """A serverpath the server refuses: SM's NFSMount (73) with the client's words, no SR, no mount
    point left, the daemon goes on."""
    export, _ = nfs_server
    before = set(x.SR.get_all())
    for version in ("3", "4"):
        dconf = {"server": SERVER, "serverpath": export + "-not-exported", "nfsversion": version}
        details = failure(x.SR.create, host, dconf, "0", "bad", "", "nfs", "user", True, {})
        assert details[0] == "SR_BACKEND_FAILURE_73", details
        assert export + "-not-exported" in details[2], details
    assert set(x.SR.get_all()) == before
    mounts = os.path.join(d.data_dir, "sr-mount")
    assert not os.path.isdir(mounts) or os.listdir(mounts) == []
    assert d.alive()


def test_iso_sr_on_a_real_server(nfs_server, d, session, x, host):
    """An iso SR whose location is server:/path mounts it the same way; its images are VDIs."""
    export, _ = nfs_server
    isos = os.path.join(export, "isos")
    os.makedirs(isos)
    try:
        with open(os.path.join(isos, "tools.iso"), "wb") as f:
            f.write(b"\x42" * 8192)
        sr = x.SR.create(host, {"location": f"{SERVER}:{isos}"}, "0", "ISOs", "", "iso", "iso", True, {})
        uuid = x.SR.get_uuid(sr)
        point = os.path.join(d.data_dir, "sr-mount", uuid)
        mount = _mount_of(point)
        assert mount is not None and mount[0] == f"{SERVER}:{isos}" and mount[2] in _client_kind(), mount
        x.SR.scan(sr)
        (vdi,) = x.SR.get_VDIs(sr)
        assert x.VDI.get_location(vdi) == "tools.iso" and x.VDI.get_virtual_size(vdi) == "8192"
        assert raw_vdi(d, session, "export_raw_vdi", vdi) == b"\x42" * 8192
        for pbd in x.SR.get_PBDs(sr):
            _unplug(x, pbd)
        assert _mount_of(point) is None
        x.SR.forget(sr)
    finally:
        shutil.rmtree(isos, ignore_errors=True)


def _client_pid(point: str) -> int | None:
    """The xapi-nfs-mount process serving the mount at `point`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"xapi-nfs-mount") and point.encode() in argv:
            return int(pid)
    return None


def test_nfs_sr_whose_fuse_client_died(nfs_server, d, session, x, host):
    """The FUSE client ends (killed): its mount stays in the table but answers ENOTCONN; a scan fails
    with SM's SRUnavailable (47) instead of hanging, PBD.unplug unmounts it, PBD.plug mounts afresh and
    the data is there."""
    if kernel_has_nfs():
        pytest.skip("the kernel's NFS client is used here: no FUSE client to lose")
    export, _ = nfs_server
    sr = x.SR.create(host, {"server": SERVER, "serverpath": export}, "0", "nfs", "", "nfs", "user", True, {})
    uuid = x.SR.get_uuid(sr)
    point = os.path.join(d.data_dir, "sr-mount", uuid)
    vdi = new_vdi(x, sr, MIB)
    raw_vdi(d, session, "import_raw_vdi", vdi, b"kept" * 1024)
    pid = _client_pid(point)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _mount_of(point) is not None                             # still in the table, dead
    details = failure(x.SR.scan, sr)
    assert details[0] == "SR_BACKEND_FAILURE_47", details
    (pbd,) = x.SR.get_PBDs(sr)
    _unplug(x, pbd)
    assert _mount_of(point) is None
    x.PBD.plug(pbd)
    assert _client_pid(point) not in (None, pid)
    assert raw_vdi(d, session, "export_raw_vdi", vdi)[:4096] == b"kept" * 1024
    x.VDI.destroy(vdi)
    _unplug(x, pbd)
    x.SR.destroy(sr)
    assert os.listdir(export) == []
