"""Helpers for the pool VM tests (test_pool_vms.py, test_migration.py): VMs made through the SDK,
calls straight to a host's xenopsd socket, waiting, failures."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import XenAPI

MIB = 1 << 20


def new_vm(x, name="vm", memory=256 * MIB, vcpus=1):
    rec = {
        "name_label": name, "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": str(memory), "memory_dynamic_max": str(memory),
        "memory_dynamic_min": str(memory), "memory_static_min": str(memory), "VCPUs_params": {},
        "VCPUs_max": str(vcpus), "VCPUs_at_startup": str(vcpus), "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "destroy", "PV_bootloader": "",
        "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {}, "PCI_bus": "",
        "other_config": {}, "recommendations": "",
    }
    return x.VM.create(rec)


def xenopsd(host, method, *params):
    """One call on a pool host's xenopsd socket: the reply {"result"} or {"error"}."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(host.data_dir, "xenopsd"))
        s.sendall(json.dumps({"id": 1, "method": method, "params": list(params)}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def failure(fn, *args) -> list:
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def eventually(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def wait_task(x, task, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while x.task.get_status(task) in ("pending", "cancelling"):
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task} still pending after {timeout}s")
        time.sleep(0.05)
    return x.task.get_record(task)


def hosts_by_address(x) -> list[str]:
    """The pool's hosts in address order: [coordinator 127.0.0.2, 127.0.0.3, ...]."""
    return sorted(x.host.get_all(), key=lambda h: tuple(int(p) for p in x.host.get_address(h).split(".")))
