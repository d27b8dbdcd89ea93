"""xe's pool commands on a 3-host `xapi sim` pool: pool-eject and pool-join, pool-designate-new-master,
then after kill -9 of the coordinator host-is-in-emergency-mode, pool-emergency-transition-to-master
and pool-recover-slaves on a member through its local socket (root, no password, as on a real host).
The tests run in order on one pool."""
from __future__ import annotations

import os
import subprocess

from tests import helpers
from tests.contract.xe_client import XE
from tests.fixtures import own_pool


sim = own_pool(3)


def xe(host, *args, local: bool = False, tls: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, XAPI_SOCKET=os.path.join(host.data_dir, "xapi"))
    conn = [] if local else ["-s", host.address, "-u", "root", "-pw", host.password]
    if not local:
        conn += ["-p", str(host.https_port)] if tls else ["-p", str(host.http_port), "--nossl"]
    return subprocess.run([XE, *conn, *args], env=env, capture_output=True, text=True, timeout=60)


def ok(r) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout.strip()


def eventually(fn, timeout: float = 20.0):
    return helpers.eventually(fn, timeout, interval=0.1)


def host_uuid(via, address: str) -> str:
    return ok(xe(via, "host-list", f"address={address}", "--minimal"))


def test_eject_and_join(sim):
    h1, _, h3 = sim.hosts
    third = host_uuid(h1, h3.address)
    ok(xe(h1, "pool-eject", f"host-uuid={third}", "--force", tls=True))
    assert len(ok(xe(h1, "host-list", "--minimal")).split(",")) == 2
    # the ejected host is a pool of its own: its root password works there again
    assert eventually(lambda: xe(h3, "host-list", "--minimal").returncode == 0)
    r = xe(h3, "pool-join", f"master-address={h1.address}", "master-username=root", "master-password=wrong")
    assert r.returncode == 1 and r.stderr.startswith("Authentication failed\n")
    ok(xe(h3, "pool-join", f"master-address={h1.address}", "master-username=root",
          f"master-password={h1.password}", local=True))
    assert len(ok(xe(h1, "host-list", "--minimal")).split(",")) == 3
    # once it is a member, CLI requests over the network are refused with the coordinator's address
    r = eventually(lambda: (lambda r: r if r.returncode == 1 else None)(xe(h3, "host-list", tls=True)))
    assert r is not None and "You cannot make regular API calls directly on a slave." in r.stderr
    assert f"Master IP address: {h1.address}" in r.stderr


def test_member_forwards_its_local_requests(sim, tmp_path):
    h1, _, h3 = sim.hosts
    # on the member's own socket the request goes to the coordinator, writes included
    assert len(ok(xe(h3, "host-list", "--minimal", local=True)).split(",")) == 3
    pool = ok(xe(h1, "pool-list", "--minimal"))
    ok(xe(h3, "pool-param-set", f"uuid={pool}", "name-label=set via a member", local=True))
    assert ok(xe(h1, "pool-param-get", f"uuid={pool}", "param-name=name-label")) == "set via a member"
    r = xe(h3, "vm-start", "vm=no-such-vm", local=True)
    assert r.returncode == 1 and "No matching VMs found" in r.stderr
    # a file transfer: the coordinator sends the client to itself, over TLS
    shared = ok(xe(h1, "sr-list", "shared=true", "--minimal"))
    vdi = ok(xe(h3, "vdi-create", f"sr-uuid={shared}", "name-label=via-member", "virtual-size=2MiB", local=True))
    data = os.urandom(1 << 20) + b"\0" * (1 << 20)
    (tmp_path / "in.raw").write_bytes(data)
    ok(xe(h3, "vdi-import", f"uuid={vdi}", f"filename={tmp_path / 'in.raw'}", local=True))
    ok(xe(h1, "vdi-export", f"uuid={vdi}", f"filename={tmp_path / 'out.raw'}"))
    assert (tmp_path / "out.raw").read_bytes() == data
    ok(xe(h1, "vdi-destroy", f"uuid={vdi}"))


def test_vm_start_on_and_migrate(sim):
    h1, h2, _ = sim.hosts
    s = h1.session()
    x = s.xenapi
    mem = str(64 << 20)
    vm = x.VM.create({
        "name_label": "xe-mover", "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": mem, "memory_dynamic_max": mem,
        "memory_dynamic_min": mem, "memory_static_min": mem, "VCPUs_params": {}, "VCPUs_max": "1",
        "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cd"}, "platform": {}, "PCI_bus": "", "other_config": {},
        "recommendations": ""})
    first, second = host_uuid(h1, h1.address), host_uuid(h1, h2.address)
    ok(xe(h1, "vm-start", "vm=xe-mover", f"on={first}"))
    assert ok(xe(h1, "vm-param-get", "uuid=" + x.VM.get_uuid(vm), "param-name=resident-on")) == first
    ok(xe(h1, "vm-migrate", "vm=xe-mover", f"host-uuid={second}", "--live", tls=True))
    assert ok(xe(h1, "vm-param-get", "uuid=" + x.VM.get_uuid(vm), "param-name=resident-on")) == second
    assert x.VM.get_power_state(vm) == "Running"
    ok(xe(h1, "vm-shutdown", "vm=xe-mover", "--force"))
    ok(xe(h1, "vm-destroy", "uuid=" + x.VM.get_uuid(vm)))
    s.xenapi.session.logout()


def test_designate_new_master(sim):
    h1, h2, _ = sim.hosts
    second = host_uuid(h1, h2.address)
    ok(xe(h1, "pool-designate-new-master", f"host-uuid={second}"))
    assert eventually(lambda: xe(h2, "pool-list", "params=master", "--minimal").stdout.strip() == second)


def test_emergency_mode_on_a_member(sim):
    h1, h2, h3 = sim.hosts
    # (after the handover the member may take a moment to reach its new coordinator)
    assert eventually(lambda: xe(h3, "host-is-in-emergency-mode", local=True).stdout.strip() == "false")
    h2.kill()                                                   # kill -9 the coordinator
    assert eventually(lambda: xe(h3, "host-is-in-emergency-mode", local=True).stdout.strip() == "true")
    ok(xe(h3, "pool-emergency-transition-to-master", local=True))
    me = host_uuid(h3, h3.address)
    assert ok(xe(h3, "pool-list", "params=master", "--minimal")) == me
    recovered = ok(xe(h3, "pool-recover-slaves"))
    assert recovered == host_uuid(h3, h1.address)              # the dead old coordinator is not among them
    assert eventually(lambda: "Master IP address: " + h3.address in xe(h1, "host-list").stderr)
