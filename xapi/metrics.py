"""Periodic live metrics of this host and its VMs (what xapi gets from xcp-rrdd every few seconds):
VM_metrics (VCPUs_utilisation, VCPUs_number, memory_actual, state, last_updated, current_domain_type),
host_metrics (memory_free, memory_total, last_updated) and host_cpu.utilisation.

One xenopsd call per period (HOST.stats: every domain's CPU time, memory and state at once), so the
cost does not depend on the number of requests, and rows are written only for running VMs; a
utilisation is the CPU time a domain used over the period, per vCPU (or, for the host, over all
physical CPUs).  The period is XAPI_METRICS_INTERVAL seconds (default 5).
"""
from __future__ import annotations

import asyncio
import logging
import os

from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, insert

log = logging.getLogger("xapi.metrics")


def interval() -> float:
    try:
        return max(0.05, float(os.environ.get("XAPI_METRICS_INTERVAL", "5")))
    except ValueError:
        return 5.0


def start(app) -> asyncio.Task:
    """Runs the updates for as long as the task that calls this one (the daemon's VM watcher) runs."""
    task = asyncio.get_running_loop().create_task(run(app, interval()))
    parent = asyncio.current_task()
    if parent is not None:
        parent.add_done_callback(lambda _: task.cancel())
    return task


async def run(app, period: float) -> None:
    prev = None
    while True:
        await asyncio.sleep(period)
        try:
            now = await app.xenops.call("HOST.stats")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - xenopsd restarting: next period
            log.debug("metrics: xenopsd unavailable: %s", e)
            continue
        try:
            update(app.db, app.host_ref, now, prev)
        except Exception:  # noqa: BLE001 - a bad row must not stop the metrics
            log.exception("metrics update failed")
        prev = now


def _set(table, ref: str, values: dict) -> None:
    old = table.get(ref)
    changed = {k: v for k, v in values.items() if old.get(k) != v}
    if changed:
        table.update(ref, changed)


def update(db, host_ref: str, now: dict, prev: dict | None) -> None:
    stamp = datetime_now()
    elapsed = (now["time_ns"] - prev["time_ns"]) if prev else 0
    hosts = db.table("host")
    if host_ref in hosts:
        hm = hosts.get_field(host_ref, "metrics")
        t = db.table("host_metrics")
        if hm in t:
            _set(t, hm, {"memory_free": int(now["free_memory"]), "memory_total": int(now["total_memory"]),
                         "last_updated": stamp, "live": True})
        if elapsed > 0:
            busy = max(0, now["cpu_time"] - prev["cpu_time"]) / (elapsed * max(1, now["cpus"]))
            cpus = db.table("host_cpu")
            for ref in hosts.get_field(host_ref, "host_CPUs") or []:
                if ref in cpus:
                    _set(cpus, ref, {"utilisation": round(min(1.0, busy), 4)})
    vms, mt = db.table("VM"), db.table("VM_metrics")
    before = (prev or {}).get("vms", {})
    for vm_uuid, st in now["vms"].items():
        refs = vms.find("uuid", vm_uuid)
        if not refs:
            continue
        ref = refs[0]
        metrics = vms.get_field(ref, "metrics")
        old = before.get(vm_uuid)
        vcpus = max(1, int(st["vcpus"]))
        values = {"memory_actual": int(st["memory"]), "VCPUs_number": vcpus, "last_updated": stamp,
                  "state": ["paused"] if st["paused"] else (["blocked"] if st["blocked"] else ["running"])}
        if old is not None and old["domid"] == st["domid"] and elapsed > 0:
            used = max(0, st["cpu_time"] - old["cpu_time"]) / (elapsed * vcpus)
            values["VCPUs_utilisation"] = {i: round(min(1.0, used), 4) for i in range(vcpus)}
        if metrics in mt:
            _set(mt, metrics, values)
        elif metrics in (NULL_REF, "", None):
            vms.set_field(ref, "metrics", insert(db, "VM_metrics", **values))
    for vm_uuid in before.keys() - now["vms"].keys():       # domains gone since the last period
        refs = vms.find("uuid", vm_uuid)
        if refs and vms.get_field(refs[0], "metrics") in mt:
            _set(mt, vms.get_field(refs[0], "metrics"), {"state": [], "VCPUs_utilisation": {},
                                                          "last_updated": stamp})
