"""Debian's xenstore-utils (libxenstore 4.17) against xapi.xenstored, through
XENSTORED_PATH: write, read, exists, ls, list, rm, chmod and watch, a
populated domain under /local/domain, and a directory too big for one reply
(libxenstore falls back to XS_DIRECTORY_PART)."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from xapi.xenstored import ThreadedXenstored

pytestmark = pytest.mark.skipif(not shutil.which("xenstore-write"),
                                reason="Debian xenstore-utils not installed (tools/system-deps.sh installs it)")

UUID = "0e9d6c2a-1111-4222-8333-444455556666"


@pytest.fixture
def xsd():
    d = tempfile.mkdtemp(prefix="xsu-")
    server = ThreadedXenstored(os.path.join(d, "socket"))
    server.env = dict(os.environ, XENSTORED_PATH=server.path)
    server.env.pop("XENSTORED_RUNDIR", None)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(d, ignore_errors=True)


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def tool(xsd, *argv, check=True):
    p = subprocess.run(list(argv), env=xsd.env, capture_output=True, text=True, timeout=20)
    if check:
        assert p.returncode == 0, (argv, p.returncode, p.stderr)
    return p


def test_write_read_exists_rm(xsd):
    tool(xsd, "xenstore-write", "/utils/a", "one", "/utils/b/c", "two words")
    assert tool(xsd, "xenstore-read", "/utils/a", "/utils/b/c").stdout == "one\ntwo words\n"
    assert tool(xsd, "xenstore-read", "-p", "/utils/a").stdout == "/utils/a: one\n"
    assert xsd.call(xsd.store.read, "/utils/b/c") == b"two words"
    assert tool(xsd, "xenstore-exists", "/utils/a").returncode == 0
    assert tool(xsd, "xenstore-exists", "/utils/nope", check=False).returncode != 0
    p = tool(xsd, "xenstore-read", "/utils/nope", check=False)
    assert p.returncode != 0 and "/utils/nope" in p.stderr
    tool(xsd, "xenstore-rm", "/utils/b")
    assert xsd.call(xsd.store.directory, "/utils") == ["a"]
    tool(xsd, "xenstore-rm", "-t", "/utils/a")  # tidy: the empty parent goes too
    assert not xsd.call(xsd.store.exists, "/utils")


def test_ls_and_list(xsd):
    xsd.call(xsd.store.write, "/ls/x", "1")
    xsd.call(xsd.store.write, "/ls/y/z", 'quote " and \\ backslash')
    out = tool(xsd, "xenstore-ls", "/ls").stdout
    assert out.splitlines()[0] == 'x = "1"'
    # xenstore-ls doubles backslashes and leaves quotes alone
    assert out.splitlines()[1:] == ['y = ""', ' z = "quote " and \\\\ backslash"']
    full = tool(xsd, "xenstore-ls", "-f", "/").stdout.splitlines()
    assert '/tool/xenstored = ""' in full and '/ls/y/z = "quote " and \\\\ backslash"' in full
    assert tool(xsd, "xenstore-list", "/ls").stdout == "x\ny\n"
    assert tool(xsd, "xenstore-list", "-p", "/ls").stdout == "/ls/x\n/ls/y\n"


def test_chmod(xsd):
    xsd.call(xsd.store.write, "/perm/a/b", "v")
    tool(xsd, "xenstore-chmod", "/perm/a", "n0", "r5", "b7")
    assert xsd.call(xsd.store.get_perms, "/perm/a") == ["n0", "r5", "b7"]
    assert xsd.call(xsd.store.get_perms, "/perm/a/b") == ["n0"]
    tool(xsd, "xenstore-chmod", "-r", "/perm", "n3", "r0")
    assert xsd.call(xsd.store.get_perms, "/perm/a/b") == ["n3", "r0"]
    out = tool(xsd, "xenstore-ls", "-p", "/perm").stdout
    assert "(n3,r0)" in out
    p = tool(xsd, "xenstore-chmod", "/perm/missing", "n0", check=False)
    assert p.returncode != 0 and "No such file" in p.stderr  # ENOENT from the daemon


def test_watch(xsd):
    proc = subprocess.Popen(["xenstore-watch", "/watched"], env=xsd.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "/watched"  # the first event, on registration
        tool(xsd, "xenstore-write", "/watched/k", "1")
        assert proc.stdout.readline().strip() == "/watched/k"
        xsd.call(xsd.store.write, "/watched/from-python", "2")
        assert proc.stdout.readline().strip() == "/watched/from-python"
        tool(xsd, "xenstore-rm", "/watched")
        assert proc.stdout.readline().strip() == "/watched"
    finally:
        stop(proc)
    # -n: exit after that many events
    p = subprocess.Popen(["xenstore-watch", "-n", "2", "/counted"], env=xsd.env, stdout=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.monotonic() + 10
        while not xsd.call(lambda: any(w.path == "/counted" for c in xsd.store.connections
                                       for w in c.watches)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        xsd.call(xsd.store.write, "/counted", "1")
        assert p.wait(10) == 0
        assert p.stdout.read().split() == ["/counted", "/counted"]
    finally:
        stop(p)


def test_special_watch_sees_domains_come_and_go(xsd):
    proc = subprocess.Popen(["xenstore-watch", "@releaseDomain"], env=xsd.env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "@releaseDomain"
        xsd.call(xsd.store.populate_domain, 6, "vm6", UUID, 524288, 1)
        xsd.call(xsd.store.release_domain, 6)
        assert proc.stdout.readline().strip() == "@releaseDomain"
    finally:
        stop(proc)


def test_populated_domain_shows_in_xenstore_ls(xsd):
    xsd.call(xsd.store.populate_domain, 5, "demo-vm", UUID, memory_kb=1048576, vcpus=2,
             vbds=[{"device": "xvda", "params": "/srv/sr/disk.vhd"}],
             vifs=[{"devid": 0, "mac": "00:16:3e:aa:bb:cc", "bridge": "xenbr0"}])
    out = tool(xsd, "xenstore-ls", "/local/domain").stdout
    lines = out.splitlines()
    assert "5 = \"\"" in lines
    assert ' name = "demo-vm"' in lines
    assert f' vm = "/vm/{UUID}"' in lines
    assert '  target = "1048576"' in lines
    assert '  vbd = ""' in lines and '   51712 = ""' in lines
    full = tool(xsd, "xenstore-ls", "-f", "-p", "/local/domain").stdout
    assert '/local/domain/0/backend/vbd/5/51712/params = "/srv/sr/disk.vhd"' in full
    assert '/local/domain/5/device/vif/0/mac = "00:16:3e:aa:bb:cc"' in full
    assert '/local/domain/5/console/type = "xenconsoled"' in full
    perms = [ln for ln in full.splitlines() if ln.startswith("/local/domain/5/data ")]
    assert perms and perms[0].endswith("(n5)")
    assert tool(xsd, "xenstore-read", "/local/domain/5/memory/static-max").stdout == "1048576\n"
    assert tool(xsd, "xenstore-read", f"/vm/{UUID}/name").stdout == "demo-vm\n"


def test_directory_too_big_for_one_reply(xsd):
    names = [f"entry-{i:04d}-{'x' * 30}" for i in range(200)]  # ~8 KiB of names

    def fill():
        for n in names:
            xsd.store.mkdir(f"/huge/{n}")
    xsd.call(fill)
    assert tool(xsd, "xenstore-list", "/huge").stdout.split() == names
    assert len(tool(xsd, "xenstore-ls", "/huge").stdout.splitlines()) == 200


def test_a_running_vm_of_the_daemon_as_xenstore_utils_see_it():
    """A VM started through the XenAPI SDK on a real daemon: its domain under /local/domain/<domid>
    as on a Xen host (name, vm, memory, vbd and vif frontends with their backends under dom0,
    console), read with xenstore-ls/-read and followed with xenstore-watch through XENSTORED_PATH;
    at shutdown it goes, and @releaseDomain fires."""
    import XenAPI

    from tests import daemon as _daemon
    from tests.contract.test_devices import management_network, new_vdi, vbd_record, vif_record
    from tests.contract.test_vm_lifecycle import new_vm, wait_for
    d = _daemon.start(env={"XAPI_GUEST_AGENT_DELAY": "0.1"})
    env = dict(os.environ, XENSTORED_PATH=os.path.join(d.data_dir, "xenstored", "socket"))
    env.pop("XENSTORED_RUNDIR", None)

    def run(*argv):
        p = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, (argv, p.stderr)
        return p.stdout
    watch = None
    try:
        s = XenAPI.Session(d.url)
        s.xenapi.login_with_password("root", d.password)
        x = s.xenapi
        vm = new_vm(x, "seen-by-xenstore-ls", memory=512 << 20, vcpus=2)
        x.VBD.create(vbd_record(vm, new_vdi(x, x.pool.get_default_SR(x.pool.get_all()[0]))))
        x.VIF.create(vif_record(vm, management_network(x), mac="00:16:3e:01:02:03"))
        watch = subprocess.Popen(["xenstore-watch", "/local/domain"], env=env, stdout=subprocess.PIPE, text=True)
        assert watch.stdout.readline().strip() == "/local/domain"
        x.VM.start(vm, False, False)
        domid, uuid = x.VM.get_domid(vm), x.VM.get_uuid(vm)
        assert watch.stdout.readline().strip().startswith(f"/local/domain/{domid}")
        dom = f"/local/domain/{domid}"
        assert run("xenstore-read", f"{dom}/name", f"{dom}/vm", f"{dom}/domid").split("\n")[:3] == [
            "seen-by-xenstore-ls", f"/vm/{uuid}", domid]
        assert run("xenstore-read", f"{dom}/memory/static-max", f"{dom}/memory/target").split() == [
            str(512 << 10), str(512 << 10)]
        full = run("xenstore-ls", "-f", dom).splitlines()
        assert f'{dom}/cpu/1/availability = "online"' in full
        assert f'{dom}/console/type = "xenconsoled"' in full and any(ln.startswith(f"{dom}/console/ring-ref")
                                                                    for ln in full)
        assert f'{dom}/device/vif/0/mac = "00:16:3e:01:02:03"' in full
        assert f'{dom}/device/vif/0/backend = "/local/domain/0/backend/vif/{domid}/0"' in full
        vbd_front = [ln for ln in full if ln.startswith(f"{dom}/device/vbd/") and "/backend =" in ln]
        assert len(vbd_front) == 1
        devid = vbd_front[0].split(" = ")[0].split("/")[-2]
        backends = run("xenstore-ls", "-f", "/local/domain/0/backend").splitlines()
        assert f'/local/domain/0/backend/vbd/{domid}/{devid}/frontend = "{dom}/device/vbd/{devid}"' in backends
        assert f'/local/domain/0/backend/vbd/{domid}/{devid}/state = "4"' in backends
        assert f'/local/domain/0/backend/vif/{domid}/0/bridge = "xenbr0"' in backends
        assert run("xenstore-read", f"/vm/{uuid}/name").strip() == "seen-by-xenstore-ls"
        assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
        assert run("xenstore-read", f"{dom}/data/os_distro").strip() == "debian"    # the agent's report
        release = subprocess.Popen(["xenstore-watch", "-n", "2", "@releaseDomain"], env=env,
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert release.stdout.readline().strip() == "@releaseDomain"
            x.VM.hard_shutdown(vm)
            assert release.wait(10) == 0
        finally:
            stop(release)
        assert subprocess.run(["xenstore-exists", dom], env=env).returncode != 0
        assert f"/local/domain/0/backend/vbd/{domid}" not in run("xenstore-ls", "-f", "/local/domain/0/backend")
    finally:
        if watch is not None:
            stop(watch)
        _daemon.cleanup(d)
