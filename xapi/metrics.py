"""Periodic live metrics of the pool's hosts and their VMs (what xapi gets from xcp-rrdd every few seconds):
VM_metrics (VCPUs_utilisation, VCPUs_number, memory_actual, state, last_updated), host_metrics
(memory_free, memory_total, last_updated) and host_cpu.utilisation; the latest sample of each host stays
in app.metrics_samples for the values the database has no field for (xapi.actions.data_sources).

One xenopsd call per host and period (HOST.stats: every domain's CPU time, memory and state at once), so the
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
    """On the coordinator (or a host on its own): every host's xenopsd once a period, a member's
    through its internal endpoint; a member writes nothing (the coordinator does it for it)."""
    prev: dict[str, dict] = {}
    while True:
        await asyncio.sleep(period)
        if not getattr(app, "is_coordinator", True):
            prev.clear()
            continue
        hosts = [h for h in app.db.table("host").refs()]
        got = await asyncio.gather(*(_stats(app, h) for h in hosts), return_exceptions=True)
        for host, now in zip(hosts, got):
            if isinstance(now, asyncio.CancelledError):
                raise now
            if isinstance(now, BaseException) or now is None:
                prev.pop(host, None)        # unreachable (restarting, or gone): next period
                continue
            try:
                update(app.db, host, now, prev.get(host))
            except Exception:  # noqa: BLE001 - a bad row must not stop the metrics
                log.exception("metrics update failed")
            prev[host] = now
        for gone in prev.keys() - set(hosts):
            del prev[gone]
        app.metrics_samples = dict(prev)      # the latest sample of each host (data sources read it)


async def _stats(app, host: str) -> dict | None:
    from xapi.actions.vm import xenops_of
    try:
        return await xenops_of(app, host).call("HOST.stats")
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - that host's xenopsd is not answering
        log.debug("metrics: xenopsd of %s unavailable: %s", host, e)
        return None


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
