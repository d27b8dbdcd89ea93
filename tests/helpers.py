"""Helpers the contract and system tests share: the XenAPI failure a call raises, waiting for a
condition, objects made through the SDK (VMs, VDIs, VBD and VIF records), and calls straight to a
daemon's xenopsd socket and, with Debian's xenstore-utils, its xenstored."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import XenAPI

from xapi import xenctrl

MIB = 1 << 20
NULL = "OpaqueRef:NULL"

# the simulated hypervisor's xenctrl shim builds domains; without it no VM can start
needs_domains = pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                                   reason="the xenctrl shim has no domain operations yet")


def failure(fn, *args) -> list:
    """The error details (code first) of a call that must fail."""
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def login(d, originator: str | None = None) -> XenAPI.Session:
    """A root session on a test daemon; with an originator, as a client that names itself."""
    s = XenAPI.Session(d.url)
    extra = ("2.3", originator) if originator is not None else ()
    s.xenapi.login_with_password("root", d.password, *extra)
    return s


def wait_for(pred, timeout: float = 5.0) -> bool:
    """Whether `pred` holds within `timeout` (asked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def eventually(fn, timeout: float = 10.0, interval: float = 0.05, ignore: tuple = ()):
    """fn()'s first true value within `timeout`, else its last one; errors in `ignore` count as None."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except ignore:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """Whether process `pid` has exited: no longer there, or a zombie its parent reaps later."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def rss_kib(pid: int) -> int:
    """A process's resident memory in KiB (VmRSS), 0 when it has none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def new_vm(x, name="vm", memory=256 * MIB, vcpus=1, **fields):
    """A halted HVM VM without devices; `fields` override the record's."""
    rec = {
        "name_label": name, "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": str(memory), "memory_dynamic_max": str(memory),
        "memory_dynamic_min": str(memory), "memory_static_min": str(memory), "VCPUs_params": {},
        "VCPUs_max": str(vcpus), "VCPUs_at_startup": str(vcpus), "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "destroy", "PV_bootloader": "",
        "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"}, "platform": {}, "PCI_bus": "",
        "other_config": {}, "recommendations": "",
    }
    return x.VM.create({**rec, **fields})


def destroy_vm(x, vm) -> None:
    """Destroys a VM a test made, halting it first if it still runs."""
    if x.VM.get_power_state(vm) != "Halted":
        x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def new_vdi(x, sr, size=8 * MIB, name="disk", read_only=False, sharable=False, **fields):
    """A user VDI on `sr`; `fields` override the record's."""
    rec = {"name_label": name, "name_description": "", "SR": sr, "virtual_size": str(size), "type": "user",
           "sharable": sharable, "read_only": read_only, "other_config": {}}
    return x.VDI.create({**rec, **fields})


def vbd_record(vm, vdi, userdevice="0", mode="RW", type_="Disk", empty=False):
    return {"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": userdevice == "0", "mode": mode,
            "type": type_, "empty": empty, "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}}


def vif_record(vm, network, device="0", mac=""):
    return {"device": device, "network": network, "VM": vm, "MAC": mac, "MTU": "1500", "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {}}


def management_network(x):
    return next(n for n, r in x.network.get_all_records().items() if r["bridge"] == "xenbr0")


def raw_vdi(d, session, method, vdi, body=None, timeout=60) -> bytes:
    """GET /export_raw_vdi, or PUT /import_raw_vdi with `body`, of a VDI in raw format on the daemon or
    pool host `d`, in `session` (a XenAPI.Session or a session ref): the reply's body."""
    sid = getattr(session, "_session", session)
    c = http.client.HTTPConnection(d.address, d.http_port, timeout=timeout)
    try:
        path = f"/{method}?session_id={sid}&vdi={vdi}&format=raw"
        c.request("PUT" if body is not None else "GET", path, body=body)
        r = c.getresponse()
        data = r.read()
        assert r.status == 200, (r.status, data[:200])
        return data
    finally:
        c.close()


def xenopsd_reply(d, method, *params) -> dict:
    """One call on a daemon's (or pool host's) xenopsd socket: the reply, {"result"} or {"error"}."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(d.data_dir, "xenopsd"))
        s.sendall(json.dumps({"id": 1, "method": method, "params": list(params)}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def xenopsd(d, method, *params):
    """A call straight to xenopsd that must succeed (test hooks: DEBUG.trigger, DEBUG.set): its result."""
    reply = xenopsd_reply(d, method, *params)
    assert "error" not in reply, reply
    return reply["result"]


def datapaths(d) -> set:
    """The storage access layer's datapaths of every VDI it has attached on the daemon."""
    with open(os.path.join(d.data_dir, "storage-access.json")) as f:
        return {dp for e in json.load(f)["vdis"].values() for dp in e["dps"]}


needs_xs = pytest.mark.skipif(not shutil.which("xenstore-ls"), reason="Debian xenstore-utils not installed")


def xs(d, *argv, check=True):
    """Debian's xenstore-utils against the daemon's xenstored."""
    env = dict(os.environ, XENSTORED_PATH=os.path.join(d.data_dir, "xenstored", "socket"))
    env.pop("XENSTORED_RUNDIR", None)
    p = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=20)
    if check:
        assert p.returncode == 0, (argv, p.stderr)
    return p


def xs_read(d, path):
    p = xs(d, "xenstore-read", path, check=False)
    return p.stdout.rstrip("\n") if p.returncode == 0 else None
