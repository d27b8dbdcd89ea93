"""xe vm-export / vm-import against a live daemon: the VM goes out as an XVA through the thin CLI
protocol's HttpGet to /export and comes back through HttpPut to /import, disks and all, over the local
socket, plain HTTP and TLS, compressed or not, through files and through a pipe."""
from __future__ import annotations

import os
import subprocess

import pytest
import XenAPI

from tests import daemon
from tests.contract.xe_client import XE, connection_args, ok, xe

MIB = 1 << 20


@pytest.fixture(scope="module")
def d():
    dm = daemon.start()
    yield dm
    daemon.cleanup(dm)


@pytest.fixture(scope="module")
def source(d, tmp_path_factory):
    """A halted VM with one 4 MiB disk holding known bytes: (vm uuid, disk bytes)."""
    s = XenAPI.Session(d.url)
    s.xenapi.login_with_password("root", d.password)
    x = s.xenapi
    mem = str(64 * MIB)
    vm = x.VM.create({
        "name_label": "xe-export", "name_description": "exported by xe", "user_version": "1",
        "is_a_template": False, "affinity": "OpaqueRef:NULL", "memory_static_max": mem,
        "memory_dynamic_max": mem, "memory_dynamic_min": mem, "memory_static_min": mem, "VCPUs_params": {},
        "VCPUs_max": "1", "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "destroy", "PV_bootloader": "",
        "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"}, "platform": {}, "PCI_bus": "",
        "other_config": {}, "recommendations": ""})
    uuid = x.VM.get_uuid(vm)
    s.xenapi.session.logout()
    sr = ok(xe(d, "sr-list", "type=ext", "--minimal")).split(",")[0]
    vdi = ok(xe(d, "vdi-create", f"sr-uuid={sr}", "name-label=xe-export-disk", "virtual-size=4MiB"))
    ok(xe(d, "vbd-create", f"vm-uuid={uuid}", f"vdi-uuid={vdi}", "device=0", "bootable=true"))
    data = os.urandom(MIB) + b"\0" * (2 * MIB) + os.urandom(MIB)
    raw = tmp_path_factory.mktemp("xe-export") / "disk.raw"
    raw.write_bytes(data)
    ok(xe(d, "vdi-import", f"uuid={vdi}", f"filename={raw}"))
    return uuid, data


def disk_of(d, vm_uuid, tmp_path) -> bytes:
    vdi = ok(xe(d, "vbd-list", f"vm-uuid={vm_uuid}", "type=Disk", "params=vdi-uuid", "--minimal"))
    out = tmp_path / f"{vm_uuid}.raw"
    ok(xe(d, "vdi-export", f"uuid={vdi}", f"filename={out}"))
    return out.read_bytes()


@pytest.mark.parametrize("mode,compress", [("socket", None), ("http", "true"), ("tls", "zstd")])
def test_export_then_import(d, source, tmp_path, mode, compress):
    uuid, data = source
    xva = tmp_path / "vm.xva"
    args = [f"compress={compress}"] if compress else []
    r = xe(d, "vm-export", f"uuid={uuid}", f"filename={xva}", *args, mode=mode)
    assert ok(r) == "Export succeeded"
    assert xva.stat().st_size > 0
    r = xe(d, "vm-import", f"filename={xva}", mode=mode)
    new = ok(r)
    assert len(new) == 36 and new != uuid
    assert ok(xe(d, "vm-param-get", f"uuid={new}", "param-name=name-label")) == "xe-export"
    assert ok(xe(d, "vm-param-get", f"uuid={new}", "param-name=power-state")) == "halted"
    assert disk_of(d, new, tmp_path) == data
    ok(xe(d, "vm-uninstall", f"uuid={new}", "--force"))


def test_export_to_stdout_import_from_a_pipe(d, source, tmp_path):
    uuid, data = source
    env = dict(os.environ, XAPI_SOCKET=d.socket_path)
    exporter = subprocess.Popen([XE, "vm-export", f"uuid={uuid}", "filename="], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    importer = subprocess.run([XE, *connection_args(d, "http"), "vm-import", "filename=/dev/stdin"],
                              env=env, stdin=exporter.stdout, capture_output=True, text=True, timeout=60)
    exporter.stdout.close()
    assert exporter.wait(timeout=60) == 0, exporter.stderr.read()
    exporter.stderr.close()
    new = ok(importer)
    assert disk_of(d, new, tmp_path) == data
    ok(xe(d, "vm-uninstall", f"uuid={new}", "--force"))


def test_import_of_something_else(d, tmp_path):
    junk = tmp_path / "junk.xva"
    junk.write_bytes(os.urandom(64 * 1024))
    r = xe(d, "vm-import", f"filename={junk}")
    assert r.returncode == 1 and "The VM could not be imported." in r.stderr
    assert ok(xe(d, "task-list", "name-label=VM import", "--minimal")) == ""


def test_export_errors(d, source, tmp_path):
    uuid, _ = source
    r = xe(d, "vm-export", "vm=no-such-vm", f"filename={tmp_path / 'x.xva'}")
    assert r.returncode == 1 and "No matching VMs found" in r.stderr
    existing = tmp_path / "exists.xva"
    existing.write_bytes(b"keep")
    r = xe(d, "vm-export", f"uuid={uuid}", f"filename={existing}")
    assert r.returncode == 1 and "Operation failed. Error:" in r.stderr and existing.read_bytes() == b"keep"
    # xe exits on that failure without waiting for the server: no export may still hold the VM
    assert ok(xe(d, "vm-param-get", f"uuid={uuid}", "param-name=current-operations")) == ""
    r = xe(d, "vm-import", f"filename={tmp_path / 'missing.xva'}")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = xe(d, "vm-import", f"filename={tmp_path / 'x.xva'}", "--dry-run")
    assert r.returncode == 1 and "Only metadata import function support dry-run" in r.stderr


def test_template_export(d, source, tmp_path):
    uuid, data = source
    template = ok(xe(d, "vm-clone", f"uuid={uuid}", "new-name-label=xe-export-template"))
    ok(xe(d, "vm-param-set", f"uuid={template}", "is-a-template=true"))
    xva = tmp_path / "template.xva"
    assert ok(xe(d, "template-export", f"template-uuid={template}", f"filename={xva}")) == "Export succeeded"
    new = ok(xe(d, "vm-import", f"filename={xva}"))
    assert ok(xe(d, "vm-param-get", f"uuid={new}", "param-name=is-a-template")) == "true"
    assert disk_of(d, new, tmp_path) == data
    r = xe(d, "template-export", f"template-uuid={uuid}", f"filename={tmp_path / 'not.xva'}")
    assert r.returncode == 1 and f"{uuid} is not a VM template" in r.stderr
    for t in (new, template):
        ok(xe(d, "vm-param-set", f"uuid={t}", "is-a-template=false"))
        ok(xe(d, "vm-uninstall", f"uuid={t}", "--force"))
