"""A host's allowed_operations and current_operations (xapi_host_helpers.ml valid_operations,
with_host_operation).

The rules, first blocking one wins (OTHER_OPERATION_IN_PROGRESS [host, ref, op]):
- ops that bring VMs in (provision, vm_resume, vm_migrate) and ops that take them away (evacuate,
  reboot, shutdown) exclude each other; two of one group may run together (two evacuates may);
- reboot, shutdown and apply_updates exclude each other, apply_updates excludes enable too;
- one provision at a time;
- reboot, shutdown and apply_updates need the host disabled (HOST_NOT_DISABLED);
- power_on needs the host not live (HOST_IS_LIVE [host]), a power_on_mode (HOST_POWER_ON_MODE_DISABLED)
  and an executable power-on-host plugin in this host's plugin folders (XENAPI_MISSING_PLUGIN
  [power-on-host]; xapi looks in its own plugins root: power_on runs the plugin where it is computed).
Held here: evacuate, shutdown and reboot, as message_forwarding.ml's Host.* do.
"""
from __future__ import annotations

import os

from xapi.actions import lookup
from xapi.forwarding import locks

ALL_OPS = ("provision", "evacuate", "shutdown", "reboot", "power_on", "vm_start", "vm_resume", "vm_migrate",
           "apply_updates", "enable")
_CREATING = ("provision", "vm_resume", "vm_migrate")
_REMOVING = ("evacuate", "reboot", "shutdown")
_EXCLUSIVE = {"reboot": ("shutdown", "apply_updates"), "shutdown": ("reboot", "apply_updates"),
              "apply_updates": ("reboot", "shutdown", "enable"), "provision": ("provision",)}
POWER_ON_PLUGIN = "power-on-host"
# this daemon's plugin folders (configure, at start): the ones host.power_on runs the plugin from
_data_dir = ""


def configure(data_dir: str) -> None:
    global _data_dir
    _data_dir = data_dir


def power_on_plugin_present() -> bool:
    from xapi.actions import host_plugins      # not at import: it imports xapi.pool
    folders = host_plugins.folders(_data_dir, "plugins") if _data_dir else ["/etc/xapi.d/plugins"]
    path = host_plugins.find_in(folders, POWER_ON_PLUGIN)
    return path is not None and os.access(path, os.X_OK)


def _rec(db, ref) -> dict:
    return lookup.record(db, "host", ref)


def valid_operations(db, ref: str) -> locks.Verdicts:
    rec = _rec(db, ref)
    current = list((rec.get("current_operations") or {}).values())
    table = locks.Verdicts(ALL_OPS)
    if current:
        busy = ["OTHER_OPERATION_IN_PROGRESS", "host", ref, current[0]]
        creating = any(op in _CREATING for op in current)
        removing = any(op in _REMOVING for op in current)
        table.block(busy, [op for op in ALL_OPS if op != "power_on"
                           and ((op in _CREATING and removing) or (op in _REMOVING and creating))])
        for running, excluded in _EXCLUSIVE.items():
            if running in current:
                table.block(["OTHER_OPERATION_IN_PROGRESS", "host", ref, running], excluded)
    if rec["enabled"]:
        table.block(["HOST_NOT_DISABLED"], ("reboot", "shutdown", "apply_updates"))
    metrics = db.table("host_metrics")
    if rec["metrics"] in metrics and metrics.get_field(rec["metrics"], "live"):
        table.block(["HOST_IS_LIVE", ref], ("power_on",))
    if not rec.get("power_on_mode"):
        table.block(["HOST_POWER_ON_MODE_DISABLED"], ("power_on",))
    if not power_on_plugin_present():
        table.block(["XENAPI_MISSING_PLUGIN", POWER_ON_PLUGIN], ("power_on",))
    return table


def refresh(db, ref: str) -> None:
    if ref in db.table("host"):
        locks.store_allowed(db, "host", ref, valid_operations(db, ref).allowed())


def assert_valid(db, ref: str, op: str) -> dict:
    valid_operations(db, ref).check(op)
    return db.table("host").get(ref)


def operation(app, host: str, op: str):
    """`async with operation(app, host, op):` holds `op` in the host's current_operations."""
    return locks.operation(app, "host", host, op, check=assert_valid, refresh=refresh)
