"""The xe CLI (xapi.cli.xe) against a running daemon over /cli: the local Unix socket (root without a
password) and TCP with credentials; generated commands, errors and exit codes as xe has them."""
from __future__ import annotations

import os
import subprocess
import sys
import xmlrpc.client

import pytest

from tests import daemon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def d():
    dm = daemon.start()
    yield dm
    daemon.cleanup(dm)


def xe(d, *args, tcp=False, password=None):
    env = dict(os.environ, XAPI_SOCKET=d.socket_path, PYTHONPATH=ROOT)
    extra = []
    if tcp:
        extra = ["-s", "127.0.0.1", "-p", str(d.http_port), "--nossl", "-u", "root",
                 "-pw", d.password if password is None else password]
    return subprocess.run([sys.executable, "-m", "xapi.cli.xe", *extra, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def sdk(d):
    proxy = xmlrpc.client.ServerProxy(d.url, allow_none=True)
    r = proxy.session.login_with_password("root", d.password, "1.0", "test")
    assert r["Status"] == "Success"
    return proxy, r["Value"]


def value(r):
    assert r["Status"] == "Success", r
    return r["Value"]


def control_domain(d) -> str:
    r = xe(d, "vm-list", "--minimal")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(",")[0]


@pytest.mark.parametrize("tcp", [False, True])
def test_vm_list(d, tcp):
    r = xe(d, "vm-list", tcp=tcp)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("uuid ( RO)") and ": " in lines[0]
    # names after the first are right-aligned on the colon of the first
    col = lines[0].index(": ")
    assert lines[1].index(": ") == col and lines[1].strip().startswith("name-label ( RW)")
    assert any(ln.strip().startswith("power-state ( RO)") and ln.endswith("running") for ln in lines)


def test_vm_list_minimal_and_params(d):
    uuid = control_domain(d)
    assert len(uuid) == 36
    r = xe(d, "vm-list", "params=name-label,power-state")
    assert r.returncode == 0, r.stderr
    names = [ln.split("(")[0].strip() for ln in r.stdout.splitlines() if ln.strip()]
    assert names[:2] == ["name-label", "power-state"] and "uuid" not in names
    r = xe(d, "vm-list", "power-state=halted", "--minimal")
    assert r.returncode == 0 and uuid not in r.stdout


def test_host_list_tcp(d):
    r = xe(d, "host-list", tcp=True)
    assert r.returncode == 0, r.stderr
    assert "name-label ( RW)" in r.stdout


def test_param_get_set(d):
    uuid = control_domain(d)
    r = xe(d, "vm-param-get", f"uuid={uuid}", "param-name=name-label")
    assert r.returncode == 0, r.stderr
    old = r.stdout.strip()
    assert old
    r = xe(d, "vm-param-set", f"uuid={uuid}", "name-label=renamed by xe", tcp=True)
    assert r.returncode == 0, r.stderr
    proxy, s = sdk(d)
    ref = value(proxy.VM.get_by_uuid(s, uuid))
    assert value(proxy.VM.get_name_label(s, ref)) == "renamed by xe"
    xe(d, "vm-param-set", f"uuid={uuid}", f"name-label={old}")
    assert value(proxy.VM.get_name_label(s, ref)) == old


def test_map_set_and_remove(d):
    uuid = control_domain(d)
    proxy, s = sdk(d)
    ref = value(proxy.VM.get_by_uuid(s, uuid))
    r = xe(d, "vm-param-set", f"uuid={uuid}", "other-config:xe-test=v1")
    assert r.returncode == 0, r.stderr
    assert value(proxy.VM.get_other_config(s, ref)).get("xe-test") == "v1"
    r = xe(d, "vm-param-get", f"uuid={uuid}", "param-name=other-config", "param-key=xe-test")
    assert r.returncode == 0 and r.stdout.strip() == "v1"
    r = xe(d, "vm-param-list", f"uuid={uuid}")
    assert r.returncode == 0 and "other-config (MRW)" in r.stdout and "xe-test: v1" in r.stdout
    r = xe(d, "vm-param-remove", f"uuid={uuid}", "param-name=other-config", "param-key=xe-test")
    assert r.returncode == 0, r.stderr
    assert "xe-test" not in value(proxy.VM.get_other_config(s, ref))


def test_help_all(d):
    r = xe(d, "help", "--all", "--minimal")
    assert r.returncode == 0
    names = r.stdout.strip().split(",")
    assert len(names) >= 100 and "vm-list" in names and "host-param-set" in names
    r = xe(d, "help", "vm-list")
    assert r.returncode == 0 and "vm-list" in r.stdout


def test_bad_uuid(d):
    r = xe(d, "vm-param-get", "uuid=not-a-uuid", "param-name=name-label")
    assert r.returncode == 1
    assert "The uuid you supplied was invalid." in r.stderr and "uuid: not-a-uuid" in r.stderr


def test_wrong_password(d):
    r = xe(d, "vm-list", tcp=True, password="wrong")
    assert r.returncode == 1
    assert r.stderr == "Authentication failed\nFor usage run: 'xe help'\n"
    assert r.stdout == ""


def test_unknown_command(d):
    r = xe(d, "no-such-command")
    assert r.returncode == 1 and "Unknown command" in r.stderr


def test_read_only_field(d):
    uuid = control_domain(d)
    r = xe(d, "vm-param-set", f"uuid={uuid}", "power-state=halted")
    assert r.returncode == 1 and "read-only" in r.stderr


def test_storage_and_pool_commands(d):
    r = xe(d, "sr-list", "--minimal")
    assert r.returncode == 0, r.stderr
    sr = r.stdout.strip().split(",")[0]
    r = xe(d, "vdi-create", f"sr-uuid={sr}", "name-label=xe-disk", "virtual-size=10MiB")
    assert r.returncode == 0, r.stderr
    vdi = r.stdout.strip()
    r = xe(d, "vdi-list", "name-label=xe-disk", "params=uuid,virtual-size,sr-uuid")
    assert r.returncode == 0 and vdi in r.stdout and "10485760" in r.stdout and sr in r.stdout
    r = xe(d, "vdi-list", "name-label=xe-disk", "params=uuid,SR")       # a name not in xe's record: not shown
    assert r.returncode == 0 and r.stdout.strip() == f"uuid ( RO)    : {vdi}"
    pool = xe(d, "pool-list", "--minimal").stdout.strip()
    r = xe(d, "pool-param-set", f"uuid={pool}", "name-label=xe-pool", tcp=True)
    assert r.returncode == 0, r.stderr
    r = xe(d, "pool-param-get", f"uuid={pool}", "param-name=name-label")
    assert r.stdout.strip() == "xe-pool"
    r = xe(d, "sr-list", "params=name-label")
    assert "name-label ( RW)" in r.stdout
    r = xe(d, "vm-shutdown", "vm=no-such-vm")
    assert r.returncode == 1 and "No matching VMs found" in r.stderr


def test_param_add_and_clear(d):
    """-param-add on a set (param-key=) and on a map (key=value pairs), -param-clear, and xapi's
    errors for a field that is no set or map and for a read-only one."""
    uuid = control_domain(d)
    proxy, s = sdk(d)
    ref = value(proxy.VM.get_by_uuid(s, uuid))
    for tag in ("t1", "t2"):
        r = xe(d, "vm-param-add", f"uuid={uuid}", "param-name=tags", f"param-key={tag}")
        assert r.returncode == 0, r.stderr
    assert sorted(value(proxy.VM.get_tags(s, ref))) == ["t1", "t2"]
    r = xe(d, "vm-param-get", f"uuid={uuid}", "param-name=tags")
    assert r.stdout in ("t1, t2\n", "t2, t1\n")        # records.ml joins tags with ", "
    r = xe(d, "vm-param-add", f"uuid={uuid}", "param-name=other-config", "k1=v1", "k2=v2")
    assert r.returncode == 0, r.stderr
    oc = value(proxy.VM.get_other_config(s, ref))
    assert oc.get("k1") == "v1" and oc.get("k2") == "v2"
    r = xe(d, "vm-param-clear", f"uuid={uuid}", "param-name=tags")
    assert r.returncode == 0, r.stderr
    assert value(proxy.VM.get_tags(s, ref)) == []
    r = xe(d, "vm-param-add", f"uuid={uuid}", "param-name=name-label", "param-key=x")
    assert (r.returncode, r.stderr) == (1, "Error: Can only add to parameters of type Set or Map\n")
    r = xe(d, "vm-param-clear", f"uuid={uuid}", "param-name=resident-on")
    assert (r.returncode, r.stderr) == (1, "Error: Can only clear RW parameters\n")
    r = xe(d, "vm-param-add", f"uuid={uuid}", "param-name=no-such-field", "param-key=x")
    assert (r.returncode, r.stderr) == (1, "Error code: Missing parameter\nError parameters: no-such-field\n")
