"""VM, host and SR data sources (xapi_vm.ml / xapi_host.ml / xapi_sr.ml over xcp-rrdd), from what the
periodic metrics (xapi.metrics) sample from each host's xenopsd and write into the database, so any
pool member answers the same:

* VM (running or paused): cpu<i> (VCPUs_utilisation), memory (memory_actual) and memory_target (the
  domain's target, from the latest xenopsd sample on the coordinator, else the dynamic maximum);
* host: cpu<i> (host_cpu.utilisation, by its number), cpu_avg, memory_total_kib, memory_free_kib, and
  on the coordinator pool_session_count and pool_task_count (xapi_stats.ml's master-only sources);
* SR: ext, nfs and iso SRs have no SR-level RRDs in xapi either: no data sources.

A data_source record is rrdd's: name_label, name_description, enabled, standard, units, min, max, value.
All of ours are rrdd "default" sources, always recorded: record_data_source of one is a no-op and
forget_data_source_archives drops its history, which this daemon does not keep (only the latest value).
A name that is not among the sources, or an object without an RRD (a halted VM), is an INTERNAL_ERROR
carrying rrdd's exception, as xapi reports it.
"""
from __future__ import annotations

import math

from xapi.datamodel.errors import XapiError

_FRACTION = "(fraction)"


def _ds(name: str, description: str, units: str, value: float, lo: float = 0.0, hi: float = math.inf) -> dict:
    return {"name_label": name, "name_description": description, "enabled": True, "standard": True,
            "units": units, "min": lo, "max": hi, "value": float(value)}


def _row(db, cls: str, ref) -> dict:
    try:
        return db.table(cls).get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", cls, ref) from None


def _unknown(name: str) -> XapiError:
    return XapiError("INTERNAL_ERROR", f'Rrd.Invalid_data_source("{name}")')


def _pick(sources: list[dict], name: str) -> dict:
    for ds in sources:
        if ds["name_label"] == name:
            return ds
    raise _unknown(name)


# -- VM --------------------------------------------------------------------------------------------
def _vm_sources(app, vm: str, rec: dict, *, require: bool) -> list[dict]:
    if rec["power_state"] not in ("Running", "Paused"):
        if require:
            raise XapiError("INTERNAL_ERROR", "Not_found")       # rrdd holds no RRD for it
        return []
    mt = app.db.table("VM_metrics")
    m = mt.get(rec["metrics"]) if rec.get("metrics") in mt else {}
    util = m.get("VCPUs_utilisation") or {}
    out = [_ds(f"cpu{i}", f"CPU{i} usage", _FRACTION, float(util.get(i, util.get(str(i), 0.0))), 0.0, 1.0)
           for i in range(int(m.get("VCPUs_number") or rec["VCPUs_at_startup"]))]
    out.append(_ds("memory", "Memory currently allocated to VM", "B", int(m.get("memory_actual") or 0)))
    sample = (getattr(app, "metrics_samples", {}).get(rec.get("resident_on")) or {}).get("vms", {}).get(rec["uuid"])
    target = int(sample["memory_target"]) if sample and "memory_target" in sample else int(rec["memory_dynamic_max"])
    out.append(_ds("memory_target", "Target of VM balloon driver", "B", target))
    return out


def vm_get_data_sources(ctx, session, self):
    rec = _row(ctx.app.db, "VM", self)
    return _vm_sources(ctx.app, self, rec, require=False)


def vm_query_data_source(ctx, session, self, data_source):
    rec = _row(ctx.app.db, "VM", self)
    return _pick(_vm_sources(ctx.app, self, rec, require=True), data_source)["value"]


def vm_record_data_source(ctx, session, self, data_source):
    rec = _row(ctx.app.db, "VM", self)
    _pick(_vm_sources(ctx.app, self, rec, require=True), data_source)
    return ""


def vm_forget_data_source_archives(ctx, session, self, data_source):
    return vm_record_data_source(ctx, session, self, data_source)


# -- host ------------------------------------------------------------------------------------------
def _host_sources(app, host: str, rec: dict) -> list[dict]:
    db = app.db
    cpus = db.table("host_cpu")
    rows = sorted((cpus.get(c) for c in rec.get("host_CPUs") or [] if c in cpus), key=lambda r: int(r["number"]))
    out = [_ds(f"cpu{int(r['number'])}", f"Physical cpu usage for cpu {int(r['number'])}", _FRACTION,
               float(r["utilisation"]), 0.0, 1.0) for r in rows]
    if rows:
        out.append(_ds("cpu_avg", "Average physical CPU usage", _FRACTION,
                       sum(float(r["utilisation"]) for r in rows) / len(rows), 0.0, 1.0))
    hm = db.table("host_metrics")
    if rec.get("metrics") in hm:
        m = hm.get(rec["metrics"])
        out.append(_ds("memory_total_kib", "Total amount of memory in use", "KiB", int(m["memory_total"]) // 1024))
        out.append(_ds("memory_free_kib", "Total amount of free memory", "KiB", int(m["memory_free"]) // 1024))
    if any(db.table("pool").get_field(p, "master") == host for p in db.table("pool").refs()):
        out.append(_ds("pool_session_count", "Number of sessions", "sessions", len(db.table("session"))))
        out.append(_ds("pool_task_count", "Number of tasks", "tasks", len(db.table("task"))))
    return out


def host_get_data_sources(ctx, session, host):
    return _host_sources(ctx.app, host, _row(ctx.app.db, "host", host))


def host_query_data_source(ctx, session, host, data_source):
    return _pick(_host_sources(ctx.app, host, _row(ctx.app.db, "host", host)), data_source)["value"]


def host_record_data_source(ctx, session, host, data_source):
    _pick(_host_sources(ctx.app, host, _row(ctx.app.db, "host", host)), data_source)
    return ""


def host_forget_data_source_archives(ctx, session, host, data_source):
    return host_record_data_source(ctx, session, host, data_source)


# -- SR --------------------------------------------------------------------------------------------
def sr_get_data_sources(ctx, session, sr):
    _row(ctx.app.db, "SR", sr)
    return []


def sr_query_data_source(ctx, session, sr, data_source):
    _row(ctx.app.db, "SR", sr)
    raise _unknown(data_source)


def sr_record_data_source(ctx, session, sr, data_source):
    return sr_query_data_source(ctx, session, sr, data_source)


def sr_forget_data_source_archives(ctx, session, sr, data_source):
    return sr_query_data_source(ctx, session, sr, data_source)


# the messages of each class (xapi.actions.EXTRA_MODULES)
VM_MESSAGES = {"get_data_sources": vm_get_data_sources, "query_data_source": vm_query_data_source,
               "record_data_source": vm_record_data_source,
               "forget_data_source_archives": vm_forget_data_source_archives}
HOST_MESSAGES = {"get_data_sources": host_get_data_sources, "query_data_source": host_query_data_source,
                 "record_data_source": host_record_data_source,
                 "forget_data_source_archives": host_forget_data_source_archives}
SR_MESSAGES = {"get_data_sources": sr_get_data_sources, "query_data_source": sr_query_data_source,
               "record_data_source": sr_record_data_source,
               "forget_data_source_archives": sr_forget_data_source_archives}
