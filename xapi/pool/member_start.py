"""What a member tells its coordinator when it starts (xapi's dbsync_slave and plug of its PBDs).

At start a member refreshes its own rows from the hypervisor (xapi.startup.populate: its host
record's software version and CPU info, its memory, its control domain) in its local database, which
the replica then overwrites with the coordinator's copy. `capture` keeps those values; once the
replica runs, `resync` sends them to the coordinator (`member.started`), which also marks this host's
PBDs unplugged (a restarted host has nothing attached), then plugs each PBD through the coordinator
(`PBD.plug`), which has the member's own storage attach it. Retried until the coordinator answers.
Both are a member's writes (xapi.pool.relay): one path, each returning once the replica holds it.
"""
from __future__ import annotations

import asyncio
import logging

from xapi.datamodel.errors import XapiError
from xapi.pool import network_sync
from xapi.pool.relay import member_write

log = logging.getLogger("xapi.pool.member_start")

HOST_FIELDS = ("hostname", "API_version_major", "API_version_minor", "API_version_vendor",
               "software_version", "cpu_info", "capabilities", "sched_policy", "edition")
METRICS_FIELDS = ("memory_total", "memory_free")
DOM0_FIELDS = ("memory_static_max", "memory_dynamic_max", "memory_dynamic_min", "memory_static_min",
               "memory_target", "VCPUs_max", "VCPUs_at_startup", "domid", "power_state")
RETRY = 2.0                 # seconds before the first retry, doubling up to MAX_RETRY
MAX_RETRY = 30.0


def capture(app) -> dict:
    """This host's freshly refreshed fields, before the replica replaces them."""
    db = app.db
    host = db.table("host").get(app.host_ref)
    out = {"host": {k: host[k] for k in HOST_FIELDS if k in host}, "metrics": {}, "dom0": {}}
    metrics = db.table("host_metrics")
    if host.get("metrics") in metrics:
        row = metrics.get(host["metrics"])
        out["metrics"] = {k: row[k] for k in METRICS_FIELDS}
    vms = db.table("VM")
    dom0 = host.get("control_domain")
    if dom0 in vms:
        row = vms.get(dom0)
        out["dom0"] = {k: row[k] for k in DOM0_FIELDS}
        out["dom0_ref"] = dom0
    return out


async def resync(app, local: dict) -> None:
    """Runs in the background from the member's start until it has got through once."""
    delay = RETRY
    while True:
        if app.is_coordinator or app.replica is None:
            return                  # promoted meanwhile: its PBDs are its own business now
        try:
            await app.replica.synced.wait()
            await app.pool.coordinator_api.write("member.started", local)
            await plug_all(app)
            return
        except asyncio.CancelledError:
            raise
        except XapiError as e:
            log.warning("telling the coordinator this host started failed (%s); retrying", e.description)
        except Exception:
            log.exception("telling the coordinator this host started failed; retrying")
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY)


async def plug_all(app) -> None:
    """This host's PBDs not yet attached, plugged through the coordinator, which has this host's
    storage attach them (xapi: create_storage at a member's start, or after it joined)."""
    pbds = app.db.table("PBD")
    for pbd in pbds.find("host", app.host_ref):
        if pbd not in pbds or pbds.get_field(pbd, "currently_attached"):
            continue
        try:
            await app.pool.coordinator_api.call("PBD.plug", pbd)
        except XapiError as e:      # one SR's failure doesn't stop the others (as at a coordinator's start)
            log.warning("could not plug PBD %s: %s", pbd, e.description)


@member_write("member.started")
def started(app, host: str, local: dict) -> str:
    """Coordinator side: a member's own fields, and its PBDs unplugged."""
    db = app.db
    hosts = db.table("host")
    _update(hosts, host, local.get("host", {}), HOST_FIELDS)
    metrics = hosts.get_field(host, "metrics")
    if metrics in db.table("host_metrics"):
        _update(db.table("host_metrics"), metrics, local.get("metrics", {}), METRICS_FIELDS)
    dom0 = local.get("dom0_ref")
    vms = db.table("VM")
    if dom0 in vms and vms.get_field(dom0, "resident_on") == host and vms.get_field(dom0, "is_control_domain"):
        _update(vms, dom0, local.get("dom0", {}), DOM0_FIELDS)
    pbds = db.table("PBD")
    for pbd in pbds.find("host", host):
        if pbds.get_field(pbd, "currently_attached"):
            pbds.set_field(pbd, "currently_attached", False)
    network_sync.copy_from_coordinator(app, host)   # xapi's sync_networking at a member's start
    app.hub.poke()
    return ""


def _update(table, ref: str, values: dict, allowed) -> None:
    current = table.get(ref)
    changed = {k: v for k, v in values.items() if k in allowed and current.get(k) != v}
    if changed:
        table.update(ref, changed)
