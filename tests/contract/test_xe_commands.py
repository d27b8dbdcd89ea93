"""The hand-written xe commands against a live daemon, with the real `xe` over the local socket, plain
HTTP and TLS: VM lifecycle with vm selectors and --multiple, xe's error text, disks and CDs, networks,
storage, tasks, event-wait, help. VMs are made with the XenAPI SDK, checked with both."""
from __future__ import annotations

import os
import subprocess
import time

import pytest
import XenAPI

from tests import daemon
from tests.contract.xe_client import XE, connection_args, ok, xe
from xapi import xenctrl

pytestmark = pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                                reason="the xenctrl shim has no domain operations yet")

MIB = 1 << 20


@pytest.fixture(scope="module")
def d():
    dm = daemon.start("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
    yield dm
    daemon.cleanup(dm)


@pytest.fixture(scope="module")
def x(d):
    s = XenAPI.Session(d.url)
    s.xenapi.login_with_password("root", d.password)
    yield s.xenapi
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def sr(d):
    return ok(xe(d, "sr-list", "type=ext", "--minimal")).split(",")[0]


def new_vm(x, name, description=""):
    mem = str(64 * MIB)
    return x.VM.create({
        "name_label": name, "name_description": description, "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": mem, "memory_dynamic_max": mem,
        "memory_dynamic_min": mem, "memory_static_min": mem, "VCPUs_params": {}, "VCPUs_max": "1",
        "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cd"}, "platform": {}, "PCI_bus": "", "other_config": {},
        "recommendations": ""})


def power(d, name) -> str:
    return ok(xe(d, "vm-list", f"name-label={name}", "params=power-state", "--minimal"))


@pytest.mark.parametrize("mode", ["socket", "http", "tls"])
def test_lifecycle(d, x, mode):
    name = f"xe-life-{mode}"
    ref = new_vm(x, name)
    uuid = x.VM.get_uuid(ref)
    ok(xe(d, "vm-start", f"vm={name}", mode=mode))
    assert x.VM.get_power_state(ref) == "Running" and power(d, name) == "running"
    ok(xe(d, "vm-reboot", f"uuid={uuid}", mode=mode))
    ok(xe(d, "vm-shutdown", f"vm={uuid}", mode=mode))         # vm= takes a uuid as well as a name
    assert power(d, name) == "halted"
    host = ok(xe(d, "host-list", "params=name-label", "--minimal"))
    ok(xe(d, "vm-start", f"vm={name}", f"on={host}", mode=mode))
    assert x.VM.get_resident_on(ref) == x.host.get_all()[0]
    ok(xe(d, "vm-shutdown", f"vm={name}", "--force", mode=mode))
    assert x.VM.get_power_state(ref) == "Halted"
    ok(xe(d, "vm-destroy", f"uuid={uuid}", mode=mode))
    assert ok(xe(d, "vm-list", f"uuid={uuid}", "--minimal")) == ""


def test_vm_create(d, x):
    uuid = ok(xe(d, "vm-create", "name-label=xe-created", "name-description=empty", mode="http"))
    rec = x.VM.get_record(x.VM.get_by_uuid(uuid))
    assert (rec["name_label"], rec["name_description"], rec["power_state"]) == ("xe-created", "empty", "Halted")
    assert rec["memory_static_max"] == str(256 * MIB) and rec["memory_dynamic_min"] == str(128 * MIB)
    assert rec["VCPUs_max"] == "1" and rec["VBDs"] == []
    ok(xe(d, "vm-destroy", f"uuid={uuid}"))


def test_power_state_error_as_xe_prints_it(d, x):
    ref = new_vm(x, "xe-twice")
    uuid = x.VM.get_uuid(ref)
    ok(xe(d, "vm-start", "vm=xe-twice"))
    r = xe(d, "vm-start", "vm=xe-twice", mode="tls")
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith("You attempted an operation on a VM that was not in an appropriate power state")
    assert lines[1:] == [f"vm: {uuid} (xe-twice)", "expected: halted", "actual: running"]
    ok(xe(d, "vm-shutdown", "vm=xe-twice", "--force"))


def test_selectors_and_multiple(d, x):
    refs = [new_vm(x, f"xe-multi-{i}", description="xe-multi") for i in range(2)]
    r = xe(d, "vm-start", "name-description=xe-multi")
    assert r.returncode == 1 and "--multiple required" in r.stderr
    assert all(x.VM.get_power_state(v) == "Halted" for v in refs)
    ok(xe(d, "vm-start", "name-description=xe-multi", "--multiple", mode="http"))
    assert all(x.VM.get_power_state(v) == "Running" for v in refs)
    ok(xe(d, "vm-shutdown", "name-description=xe-multi", "power-state=running", "--multiple", "--force"))
    assert all(x.VM.get_power_state(v) == "Halted" for v in refs)
    # with --multiple every VM is tried; the failures are listed at the end
    ok(xe(d, "vm-start", f"uuid={x.VM.get_uuid(refs[0])}"))
    r = xe(d, "vm-start", "name-description=xe-multi", "--multiple")
    assert r.returncode == 1
    assert r.stdout.startswith(f"operation failed on {x.VM.get_uuid(refs[0])}: You attempted an operation on a VM")
    assert all(x.VM.get_power_state(v) == "Running" for v in refs)
    ok(xe(d, "vm-shutdown", "name-description=xe-multi", "--multiple", "--force"))
    # a selection that finds nothing is cli_operations' failwith, a Cli_failure: `Error: ...`
    r = xe(d, "vm-start", "vm=no-such-vm")
    assert (r.returncode, r.stderr) == (1, "Error: No matching VMs found\n")
    dom0 = ok(xe(d, "vm-list", "is-control-domain=true", "params=uuid", "--minimal"))
    r = xe(d, "vm-destroy", f"uuid={dom0}")
    assert r.returncode == 1
    assert r.stderr.splitlines()[1:] == ["reason: You cannot destroy a control domain via the CLI"]
    # the control domain and templates are never selected by default
    r = xe(d, "vm-shutdown", "name-label=Control domain on host: vm")
    assert r.returncode == 1 and "No matching VMs found" in r.stderr


def test_suspend_and_resume(d, x):
    ref = new_vm(x, "xe-suspend")
    ok(xe(d, "vm-start", "vm=xe-suspend"))
    ok(xe(d, "vm-suspend", "vm=xe-suspend", mode="tls"))
    assert power(d, "xe-suspend") == "suspended"
    assert x.VM.get_suspend_VDI(ref) != "OpaqueRef:NULL"
    ok(xe(d, "vm-resume", "vm=xe-suspend", mode="tls"))
    assert power(d, "xe-suspend") == "running"
    ok(xe(d, "vm-shutdown", "vm=xe-suspend", "--force"))


def test_disks_cds_and_uninstall(d, x, sr, tmp_path):
    ref = new_vm(x, "xe-disks")
    uuid = x.VM.get_uuid(ref)
    vdi = ok(xe(d, "vdi-create", f"sr-uuid={sr}", "name-label=xe-disks-0", "virtual-size=8MiB"))
    vbd = ok(xe(d, "vbd-create", f"vm-uuid={uuid}", f"vdi-uuid={vdi}", "device=0", "bootable=true"))
    cd = ok(xe(d, "vbd-create", f"vm-uuid={uuid}", "device=3", "type=CD", "mode=RO"))
    assert x.VBD.get_VDI(x.VBD.get_by_uuid(vbd)) == x.VDI.get_by_uuid(vdi)
    assert x.VBD.get_empty(x.VBD.get_by_uuid(cd))
    out = ok(xe(d, "vm-disk-list", "vm=xe-disks"))
    assert "Disk 0 VBD:" in out and vbd in out and "Disk 0 VDI:" in out and vdi in out and cd not in out
    assert "vm-name-label ( RO): xe-disks" in out and "sr-name-label ( RO): " in out
    out = ok(xe(d, "vm-disk-list", "vm=xe-disks", "vbd-params=userdevice", "vdi-params=name-label"))
    assert out.split("\n")[1].startswith("userdevice ( RW)") and "xe-disks-0" in out.split("\n")[-1]
    assert vbd not in out and vdi not in out
    # derived fields: the VBDs of a VM by its uuid, with the VDI's uuid
    out = ok(xe(d, "vbd-list", f"vm-uuid={uuid}", "type=Disk", "params=uuid,vdi-uuid,vm-name-label"))
    assert f"vdi-uuid ( RO): {vdi}" in out and "vm-name-label ( RO): xe-disks" in out
    assert ok(xe(d, "vbd-list", f"vm-uuid={uuid}", "--minimal")).count(",") == 1
    # a CD from an ISO library
    isos = tmp_path / "isos"
    isos.mkdir()
    (isos / "xe-test.iso").write_bytes(b"\0" * 2048)
    iso_sr = ok(xe(d, "sr-create", "name-label=xe-isos", "type=iso", "content-type=iso",
                   f"device-config:location={isos}"))
    ok(xe(d, "sr-scan", f"uuid={iso_sr}"))
    ok(xe(d, "vm-cd-insert", "vm=xe-disks", "cd-name=xe-test.iso", mode="http"))
    assert not x.VBD.get_empty(x.VBD.get_by_uuid(cd))
    assert "xe-test.iso" in ok(xe(d, "vm-cd-list", "vm=xe-disks"))
    assert "xe-test.iso" in ok(xe(d, "cd-list", "params=name-label", "--minimal")).split(",")
    ok(xe(d, "vm-cd-eject", "vm=xe-disks"))
    assert x.VBD.get_empty(x.VBD.get_by_uuid(cd))
    r = xe(d, "vm-cd-insert", "vm=xe-disks", "cd-name=no-such.iso")
    assert r.returncode == 1 and "not found" in r.stderr
    # uninstall asks first: anything but yes keeps everything
    r = xe(d, "vm-uninstall", "vm=xe-disks", input="no\n")
    assert r.returncode == 0
    assert "The following items are about to be destroyed" in r.stdout
    assert f"VM : {uuid} (xe-disks)" in r.stdout and f"VDI: {vdi} (xe-disks-0)" in r.stdout
    assert "Aborted (you typed: 'no')" in r.stdout
    assert ok(xe(d, "vm-list", f"uuid={uuid}", "--minimal")) == uuid
    r = xe(d, "vm-uninstall", "vm=xe-disks", input="yes\n", mode="tls")
    assert ok(r).endswith("All objects destroyed")
    assert ok(xe(d, "vm-list", f"uuid={uuid}", "--minimal")) == ""
    assert ok(xe(d, "vdi-list", f"uuid={vdi}", "--minimal")) == ""


def test_install_clone_copy(d, x, sr):
    templates = ok(xe(d, "template-list", "params=name-label", "--minimal")).split(",")
    assert "Debian Bookworm 12" in templates
    assert "Debian Bookworm 12" not in ok(xe(d, "vm-list", "params=name-label", "--minimal")).split(",")
    vm = ok(xe(d, "vm-install", "template=Debian Bookworm 12", "new-name-label=xe-installed", mode="http"))
    ref = x.VM.get_by_uuid(vm)
    assert not x.VM.get_is_a_template(ref)
    disks = ok(xe(d, "vbd-list", f"vm-uuid={vm}", "type=Disk", "params=vdi-uuid", "--minimal")).split(",")
    assert len(disks) == 1                   # the template's provisioning made its disk, on the default SR
    pool = x.pool.get_all()[0]
    assert x.VDI.get_SR(x.VDI.get_by_uuid(disks[0])) == x.pool.get_default_SR(pool)
    clone = ok(xe(d, "vm-clone", "vm=xe-installed", "new-name-label=xe-clone", "new-name-description=cloned"))
    assert x.VM.get_name_description(x.VM.get_by_uuid(clone)) == "cloned"
    copy = ok(xe(d, "vm-copy", "vm=xe-installed", "new-name-label=xe-copy", f"sr-uuid={sr}", mode="tls"))
    copied = ok(xe(d, "vbd-list", f"vm-uuid={copy}", "type=Disk", "params=vdi-uuid", "--minimal"))
    assert copied and copied != disks[0]
    r = xe(d, "vm-install", "template=no-such-template", "new-name-label=x")
    assert r.returncode == 1 and "Template 'no-such-template' not found" in r.stderr
    r = xe(d, "vm-install", "template=Debian Bookworm 12")
    assert r.returncode == 1 and "Required parameter not found: new-name-label" in r.stderr
    for uuid in (vm, clone, copy):
        ok(xe(d, "vm-uninstall", f"uuid={uuid}", "--force"))
    assert ok(xe(d, "vm-list", "name-label=xe-installed", "--minimal")) == ""


def test_snapshot_and_revert(d, x, sr, tmp_path):
    ref = new_vm(x, "xe-snap")
    uuid = x.VM.get_uuid(ref)
    vdi = ok(xe(d, "vdi-create", f"sr-uuid={sr}", "name-label=xe-snap-disk", "virtual-size=4MiB"))
    ok(xe(d, "vbd-create", f"vm-uuid={uuid}", f"vdi-uuid={vdi}", "device=0"))
    before, after = tmp_path / "before.raw", tmp_path / "after.raw"
    before.write_bytes(os.urandom(4 * MIB))
    after.write_bytes(os.urandom(4 * MIB))
    ok(xe(d, "vdi-import", f"uuid={vdi}", f"filename={before}"))
    snap = ok(xe(d, "vm-snapshot", "vm=xe-snap", "new-name-label=xe-snap-1"))
    out = ok(xe(d, "snapshot-list", f"uuid={snap}", "params=name-label,snapshot-of"))
    assert "xe-snap-1" in out and f"snapshot-of ( RO): {uuid}" in out
    assert ok(xe(d, "vm-list", f"uuid={snap}", "--minimal")) == ""     # not among the VMs
    ok(xe(d, "vdi-import", f"uuid={vdi}", f"filename={after}"))
    ok(xe(d, "snapshot-revert", f"snapshot-uuid={snap}"))
    disk = ok(xe(d, "vbd-list", f"vm-uuid={uuid}", "type=Disk", "params=vdi-uuid", "--minimal"))
    back = tmp_path / "back.raw"
    ok(xe(d, "vdi-export", f"uuid={disk}", f"filename={back}"))
    assert back.read_bytes() == before.read_bytes()
    r = xe(d, "vm-checkpoint", "vm=xe-snap", "new-name-label=cp")
    assert r.returncode == 1 and "expected: running" in r.stderr and "actual: halted" in r.stderr


def test_host_maintenance(d, x):
    host = x.host.get_all()[0]
    ok(xe(d, "host-disable", mode="tls"))
    assert not x.host.get_enabled(host)
    assert ok(xe(d, "host-list", "params=enabled", "--minimal")) == "false"
    ok(xe(d, "host-evacuate", f"uuid={x.host.get_uuid(host)}"))          # nothing running to move
    ok(xe(d, "host-enable", f"host={x.host.get_name_label(host)}"))
    assert x.host.get_enabled(host)
    assert ok(xe(d, "host-is-in-emergency-mode")) == "false"
    r = xe(d, "host-enable", "host=no-such-host")
    assert r.returncode == 1 and "No matching hosts found" in r.stderr
    r = xe(d, "host-reboot")                 # an enabled host is not rebooted
    assert r.returncode == 1
    assert r.stderr.startswith("This operation cannot be performed because the host is not disabled.")


def test_storage_commands(d, x, sr, tmp_path):
    path = tmp_path / "ext-sr"
    path.mkdir()
    new_sr = ok(xe(d, "sr-create", "name-label=xe-ext", "type=ext", f"device-config:path={path}"))
    assert x.SR.get_type(x.SR.get_by_uuid(new_sr)) == "ext"
    assert "<SRlist>" in ok(xe(d, "sr-probe", "type=ext", f"device-config:path={path}"))
    pbd = ok(xe(d, "pbd-list", f"sr-uuid={new_sr}", "--minimal"))
    ok(xe(d, "pbd-unplug", f"uuid={pbd}"))
    assert ok(xe(d, "pbd-param-get", f"uuid={pbd}", "param-name=currently-attached")) == "false"
    ok(xe(d, "pbd-plug", f"uuid={pbd}", mode="tls"))
    assert ok(xe(d, "pbd-param-get", f"uuid={pbd}", "param-name=currently-attached")) == "true"
    vdi = ok(xe(d, "vdi-create", f"sr-uuid={new_sr}", "name-label=xe-resize", "virtual-size=4MiB"))
    ok(xe(d, "vdi-resize", f"uuid={vdi}", "disk-size=8MiB"))
    assert x.VDI.get_virtual_size(x.VDI.get_by_uuid(vdi)) == str(8 * MIB)
    snap = ok(xe(d, "vdi-snapshot", f"uuid={vdi}"))
    assert x.VDI.get_is_a_snapshot(x.VDI.get_by_uuid(snap))
    assert x.VDI.get_snapshot_of(x.VDI.get_by_uuid(snap)) == x.VDI.get_by_uuid(vdi)
    r = xe(d, "vdi-resize", f"uuid={vdi}", "disk-size=lots")
    assert r.returncode == 1 and "Failed to parse size 'lots'" in r.stderr
    ok(xe(d, "vdi-destroy", f"uuid={snap}"))
    ok(xe(d, "vdi-destroy", f"uuid={vdi}"))
    assert ok(xe(d, "vdi-list", f"sr-uuid={new_sr}", "--minimal")) == ""
    r = xe(d, "sr-create", "name-label=bad", "type=no-such-type")
    assert r.returncode == 1 and "The SR could not be connected because the driver was not recognised." in r.stderr


def test_network_commands(d, x):
    ref = new_vm(x, "xe-net")
    uuid = x.VM.get_uuid(ref)
    net = ok(xe(d, "network-create", "name-label=xe-net-1", "MTU=9000", mode="http"))
    assert x.network.get_MTU(x.network.get_by_uuid(net)) == "9000"
    vif = ok(xe(d, "vif-create", f"vm-uuid={uuid}", f"network-uuid={net}", "device=0"))
    out = ok(xe(d, "vif-list", f"vm-uuid={uuid}", "params=uuid,device,network-uuid,MAC"))
    assert vif in out and f"network-uuid ( RO): {net}" in out
    mac = x.VIF.get_MAC(x.VIF.get_by_uuid(vif))
    assert len(mac.split(":")) == 6 and f"MAC ( RO): {mac}" in out
    r = xe(d, "vif-create", f"vm-uuid={uuid}", f"network-uuid={net}", "device=0")
    assert r.returncode == 1
    pif = ok(xe(d, "pif-list", "--minimal")).split(",")[0]
    r = xe(d, "pif-reconfigure-ip", f"uuid={pif}", "mode=bogus")
    assert r.returncode == 1 and "expecting dhcp, static or none, got 'bogus'" in r.stderr
    out = ok(xe(d, "vm-vif-list", "vm=xe-net"))
    assert out.startswith("uuid ( RO)") and vif in out and "network-name-label ( RO): xe-net-1" in out
    ok(xe(d, "vif-destroy", f"uuid={vif}"))
    assert ok(xe(d, "vif-list", f"vm-uuid={uuid}", "--minimal")) == ""


def test_task_cancel(d, x):
    task = x.task.create("xe-cancel-me", "")
    ok(xe(d, "task-cancel", f"uuid={x.task.get_uuid(task)}"))
    assert x.task.get_status(task) in ("cancelling", "cancelled")
    r = xe(d, "task-cancel", "uuid=00000000-0000-0000-0000-000000000000")
    assert r.returncode == 1 and "The uuid you supplied was invalid." in r.stderr


def test_event_wait(d, x):
    ref = new_vm(x, "xe-wait")
    uuid = x.VM.get_uuid(ref)
    env = dict(os.environ, XAPI_SOCKET=d.socket_path)
    waiter = subprocess.Popen([XE, *connection_args(d, "http"), "event-wait", "class=vm", f"uuid={uuid}",
                               "power-state=running"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert waiter.poll() is None            # still waiting: the VM is halted
        x.VM.start(ref, False, False)
        assert waiter.wait(timeout=20) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.communicate()
    # an already-true condition returns at once; /= negates
    ok(xe(d, "event-wait", "class=vm", f"uuid={uuid}", "power-state=/=halted"))
    x.VM.hard_shutdown(ref)


def test_help(d):
    names = ok(xe(d, "help", "--all", "--minimal")).split(",")
    assert len(names) >= 100
    for cmd in ("vm-start", "vm-shutdown", "vm-install", "vm-export", "vm-import", "vdi-export", "vdi-import",
                "pool-join", "pool-eject", "sr-create", "event-wait", "template-list", "vm-disk-list",
                "host-is-in-emergency-mode", "pif-reconfigure-ip", "task-cancel", "message-list"):
        assert cmd in names, cmd
    common = ok(xe(d, "help", "--minimal")).split(",")
    assert "vm-start" in common and len(common) < len(names)
    out = ok(xe(d, "help", "vdi-export", mode="tls")).splitlines()
    assert out[0].split(":", 1) == ["command name            ", " vdi-export"]
    assert out[1].strip() == "reqd params     : uuid, filename"
    assert out[2].strip().startswith("optional params : format")
    assert "<vm-selectors>" in ok(xe(d, "help", "vm-start"))
    # help needs no credentials
    r = xe(d, "help", "vm-start", "-s", "127.0.0.1", "-p", str(d.http_port), "--nossl", "-u", "root", "-pw", "wrong")
    assert ok(r).startswith("command name            : vm-start")
    r = xe(d, "help", "no-such-command")
    assert r.returncode == 1 and "Unknown command: no-such-command" in r.stderr


def test_missing_required_parameter(d):
    r = xe(d, "vdi-create", "name-label=x")
    assert r.returncode == 1
    assert r.stderr == "Required parameter not found: sr-uuid\nFor usage run: 'xe help'\n"


def test_client_options(d):
    env = dict(os.environ, XAPI_SOCKET=os.path.join(d.data_dir, "no-such-socket"))
    r = subprocess.run([XE, "-version"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "ThinCLI protocol: 0.2\n"
    r = subprocess.run([XE, "vm-list", "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr.startswith("Usage: xe <cmd>")
    r = subprocess.run([XE, "vm-list"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and r.stdout == ""
    r = xe(d, "vm-list", "params=uuid", "-pw", "wrong", "-u", "root", "-s", "127.0.0.1", "-p", str(d.http_port),
           "--nossl")
    assert r.returncode == 1 and r.stderr.startswith("Authentication failed")


def test_client_settings_from_rc_file_env_and_arguments(d, tmp_path):
    """As xe: ~/.xe, then XE_EXTRA_ARGS, then the command line (server=, port=, username=, password=,
    nossl= are client settings wherever they appear)."""
    env = dict(os.environ, XAPI_SOCKET=os.path.join(d.data_dir, "no-such-socket"), HOME=str(tmp_path))
    env.pop("XE_EXTRA_ARGS", None)
    (tmp_path / ".xe").write_text(f"server=127.0.0.1\nport={d.https_port}\nusername=root\npassword={d.password}\n")

    def run(*args, **more_env):
        return subprocess.run([XE, *args], env=dict(env, **more_env), capture_output=True, text=True, timeout=30)

    sel = ("vm-list", "is-control-domain=true", "params=uuid", "--minimal")
    dom0 = ok(run(*sel))                                          # TLS from ~/.xe
    assert len(dom0) == 36
    r = run(*sel, XE_EXTRA_ARGS="password=wrong")                 # the environment beats the file
    assert r.returncode == 1 and r.stderr.startswith("Authentication failed")
    r = run(*sel, f"password={d.password}", XE_EXTRA_ARGS="password=wrong")
    assert ok(r) == dom0                                          # the command line beats both
    assert ok(run(*sel, f"port={d.http_port}", "nossl=true")) == dom0
    r = run("vm-list", "port=99999")
    assert r.returncode == 1 and "Port number must be an integer (0-65535)" in r.stderr
    (tmp_path / "one-line").write_text("root\n")
    r = run("vm-list", "-pwf", str(tmp_path / "one-line"))
    assert r.returncode == 1 and "expecting username on the first line, password on the second line" in r.stderr


def test_memory_commands(d, x):
    ref = new_vm(x, "xe-memory")
    ok(xe(d, "vm-memory-limits-set", "vm=xe-memory", "static-min=32MiB", "static-max=256MiB",
          "dynamic-min=64MiB", "dynamic-max=128MiB"))
    rec = x.VM.get_record(ref)
    assert [rec[k] for k in ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max",
                             "memory_static_max")] == [str(32 * MIB), str(64 * MIB), str(128 * MIB), str(256 * MIB)]
    ok(xe(d, "vm-memory-dynamic-range-set", "vm=xe-memory", "min=96MiB", "max=192MiB"))
    assert x.VM.get_memory_dynamic_max(ref) == str(192 * MIB)
    ok(xe(d, "vm-memory-static-range-set", "vm=xe-memory", "min=64MiB", "max=512MiB"))
    assert x.VM.get_memory_static_max(ref) == str(512 * MIB)
    ok(xe(d, "vm-memory-set", "vm=xe-memory", "memory=300MiB"))
    assert x.VM.get_memory_dynamic_min(ref) == str(300 * MIB) == x.VM.get_memory_static_max(ref)
    r = xe(d, "vm-memory-limits-set", "vm=xe-memory", "static-min=1GiB", "static-max=256MiB",
           "dynamic-min=64MiB", "dynamic-max=128MiB")
    assert r.returncode == 1 and r.stderr.startswith("The dynamic memory range does not satisfy")
    ok(xe(d, "vm-destroy", f"uuid={x.VM.get_uuid(ref)}"))


def test_pool_emergency_reset_master_on_a_coordinator(d, x):
    """xe pool-emergency-reset-master needs master-address; a name that does not resolve is refused
    (xapi resolves it, it does not contact it) and the coordinator stays what it was."""
    pool = x.pool.get_all()[0]
    me = x.host.get_uuid(x.pool.get_master(pool))
    r = xe(d, "pool-emergency-reset-master")
    assert r.returncode == 1
    assert r.stderr == "Required parameter not found: master-address\nFor usage run: 'xe help'\n"
    r = xe(d, "pool-emergency-reset-master", "master-address=127.0.0.1:1")
    assert (r.returncode, r.stderr) == (1, "The server failed to handle your request, due to an internal error. "
                                           "The given message may give details useful for debugging the problem."
                                           "\nmessage: Couldn't resolve hostname: 127.0.0.1:1\n")
    assert ok(xe(d, "pool-list", "params=master", "--minimal")) == me
    assert ok(xe(d, "host-is-in-emergency-mode")) == "false"
