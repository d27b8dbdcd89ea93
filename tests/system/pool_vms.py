"""Helpers for the pool tests (test_pool_vms.py, test_migration.py, ...): PV VMs made through the SDK,
the pool's hosts in address order, waiting for a task; the generic ones are in tests/helpers.py."""
from __future__ import annotations

import time

from tests import helpers
from tests.helpers import MIB


def new_vm(x, name="vm", memory=256 * MIB, vcpus=1):
    """A halted PV VM without devices."""
    return helpers.new_vm(x, name, memory, vcpus, HVM_boot_policy="", HVM_boot_params={})


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
