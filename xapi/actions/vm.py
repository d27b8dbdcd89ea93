"""VM lifecycle: start, start_on, clean/hard shutdown and reboot, shutdown, pause, unpause,
power_state_reset, assert_can_boot_here (xapi_vm.ml, xapi_vm_lifecycle.ml, xapi_xenops.ml).

Checks come in xapi's order: power state (VM_BAD_POWER_STATE [vm, expected, actual], lowercase), other
operations in progress (OTHER_OPERATION_IN_PROGRESS [VM, ref, op, task]), templates (VM_IS_TEMPLATE
[vm, op]), the control domain (OPERATION_NOT_ALLOWED). An operation sits in current_operations while
it runs, and allowed_operations is recomputed after every change. The work is done by xenopsd
(xapi.xenops) on this host: an Async call's task follows the xenopsd task's progress, and cancelling
it cancels the xenopsd task. `watch(app)` follows xenopsd's updates, so guests that shut down, reboot
or crash by themselves reach the database.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib

from xapi import alerts as _alerts
from xapi import datamodel as dm
from xapi import guest_metrics
from xapi.actions import vm_devices
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, insert
from xapi.forwarding import locks
from xapi.pool import placement
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.vm")

_ALL = ("Halted", "Paused", "Running", "Suspended")
_POWER = {
    "start": ("Halted",), "start_on": ("Halted",), "clone": ("Halted",), "copy": ("Halted",),
    "export": ("Halted", "Suspended"), "provision": ("Halted",), "make_into_template": ("Halted",),
    "destroy": ("Halted", "Suspended"), "changing_static_range": ("Halted",),
    "changing_shadow_memory": ("Halted",), "changing_dynamic_range": ("Halted", "Running"),
    "resume": ("Suspended",), "resume_on": ("Suspended",), "unpause": ("Paused",),
    "clean_shutdown": ("Running",), "clean_reboot": ("Running",), "pause": ("Running",),
    "suspend": ("Running",), "pool_migrate": ("Running",), "checkpoint": ("Running",),
    "snapshot_with_quiesce": ("Running",), "changing_VCPUs_live": ("Running",),
    "migrate_send": ("Halted", "Suspended", "Running"),
    "hard_reboot": ("Paused", "Running"), "hard_shutdown": ("Paused", "Suspended", "Running"),
    "snapshot": _ALL, "revert": _ALL, "power_state_reset": _ALL,
}
# the operations update_allowed_operations considers (xapi_vm_lifecycle.ml)
_CANDIDATES = ("snapshot", "copy", "clone", "revert", "checkpoint", "start", "start_on", "pause", "unpause",
               "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot", "suspend", "resume",
               "resume_on", "export", "destroy", "provision", "changing_VCPUs_live", "pool_migrate",
               "migrate_send", "make_into_template", "changing_static_range", "changing_shadow_memory",
               "changing_dynamic_range")
_TEMPLATE_OK = ("changing_dynamic_range", "changing_static_range", "changing_memory_limits",
                "changing_shadow_memory", "changing_VCPUs", "clone", "copy", "export", "metadata_export",
                "provision")
_SNAPSHOT_OK = ("revert", "clone", "copy", "export", "destroy", "hard_shutdown", "metadata_export")
_DOM0_OK = ("data_source_op", "changing_memory_live", "awaiting_memory_live", "metadata_export",
            "changing_dynamic_range", "start")
# the ops our lifecycle implements; the rest are offered once their actions exist
_IMPLEMENTED = ("start", "start_on", "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot",
                "pause", "unpause", "destroy", "suspend", "resume", "resume_on", "pool_migrate",
                "clone", "copy", "snapshot", "checkpoint", "revert", "provision", "migrate_send",
                "changing_VCPUs_live", "export")


def _rec(db, ref) -> dict:
    try:
        return db.table("VM").get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "VM", ref) from None


# xapi_vm_lifecycle.is_allowed_concurrently: ops of one of these sets run alongside each other...
_CONCURRENT_SETS = (("clone", "copy", "export"), ("snapshot", "checkpoint"), ("get_boot_record",))
# ...an op may join exactly this set of running ops...
_CONCURRENT_AFTER = {("snapshot_with_quiesce",): ("snapshot",),
                     ("migrate_send",): ("metadata_export", "clean_shutdown", "clean_reboot", "start", "start_on")}


def allowed_concurrently(op: str, running: list) -> bool:
    """...and hard_shutdown runs alongside anything but another hard_shutdown, hard_reboot alongside
    anything but a hard_shutdown or hard_reboot (they cancel what they interrupt: hard_stop)."""
    if op == "hard_shutdown":
        return "hard_shutdown" not in running
    if op == "hard_reboot":
        return not any(o in ("hard_shutdown", "hard_reboot") for o in running)
    if any(op in ops and all(o in ops for o in running) for ops in _CONCURRENT_SETS):
        return True
    return op in _CONCURRENT_AFTER.get(tuple(running), ())


def check_operation(rec: dict, ref: str, op: str):
    """The error xapi would raise for `op` on this record, or None."""
    blocked = rec.get("blocked_operations") or {}
    if op in blocked:
        return ["OPERATION_BLOCKED", ref, blocked[op]]
    power = rec["power_state"]
    allowed = _POWER.get(op, _ALL)
    if op in ("clone", "copy") and rec.get("is_a_snapshot"):
        allowed = ("Halted", "Suspended")       # a checkpoint is suspended (xapi_vm_lifecycle.ml)
    if power not in allowed:
        return ["VM_BAD_POWER_STATE", ref, ", ".join(p.lower() for p in allowed), power.lower()]
    current = rec.get("current_operations") or {}
    if current and not allowed_concurrently(op, list(current.values())):
        task, cop = next(iter(current.items()))
        return ["OTHER_OPERATION_IN_PROGRESS", "VM", ref, cop, task]
    if rec["is_a_template"] and not rec.get("is_a_snapshot"):
        default = (rec.get("other_config") or {}).get("default_template") == "true"
        if not (op in _TEMPLATE_OK or (op == "destroy" and not default)):
            return ["VM_IS_TEMPLATE", ref, op]
    if op == "provision" and not rec["is_a_template"]:
        return ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    if op == "revert" and not rec.get("is_a_snapshot"):
        return ["REVERT_ONLY_ALLOWED_ON_SNAPSHOT"]
    if rec.get("is_a_snapshot") and op not in _SNAPSHOT_OK:
        return ["VM_IS_SNAPSHOT", ref, op]
    if rec.get("is_control_domain") and op not in _DOM0_OK:
        return ["OPERATION_NOT_ALLOWED", "Operations on domain 0 are not allowed"]
    return None


def refresh_allowed_operations(db, ref: str) -> None:
    if ref not in db.table("VM"):
        return
    rec = db.table("VM").get(ref)
    locks.store_allowed(db, "VM", ref, [op for op in _CANDIDATES if op in _IMPLEMENTED
                                        and check_operation(rec, ref, op) is None
                                        and not _lacks_feature(db, rec, op)])


# ops a running HVM guest offers only once its agent says it can (xapi_vm_lifecycle.check_op_for_feature
# with strict: allowed_operations only; the calls themselves are not refused)
_FEATURES = {"clean_shutdown": ("feature-shutdown", "feature-poweroff"),
             "clean_reboot": ("feature-shutdown", "feature-reboot"),
             "suspend": ("feature-suspend",), "checkpoint": ("feature-suspend",),
             "pool_migrate": ("feature-suspend",), "migrate_send": ("feature-suspend",)}


def _lacks_feature(db, rec: dict, op: str) -> bool:
    """Running, not known to have booted PV (VM_metrics.hvm), no PV drivers reported (a major and a
    minor version in VM_guest_metrics.PV_drivers_version), and none of the op's features in
    VM_guest_metrics.other set to "1"."""
    features = _FEATURES.get(op)
    if features is None or rec["power_state"] != "Running":
        return False
    mt = db.table("VM_metrics")
    if rec.get("metrics") in mt and not mt.get_field(rec["metrics"], "hvm"):
        return False
    gt = db.table("VM_guest_metrics")
    gm = gt.get(rec["guest_metrics"]) if rec.get("guest_metrics") in gt else None
    if gm is None:
        return True
    pv = gm.get("PV_drivers_version") or {}
    if str(pv.get("major", "")).isdigit() and str(pv.get("minor", "")).isdigit():
        return False
    other = gm.get("other") or {}
    return not any(other.get(f) == "1" for f in features)


_generic: dict = {}


def _accessor(ctx, name: str):
    """The generic implicit VM.<name>, built once per database."""
    key = (id(ctx.app.db), name)
    fn = _generic.get(key)
    if fn is None:
        from xapi import datamodel as dm
        from xapi.actions import accessors
        fn = _generic[key] = accessors.accessor(dm.CLASSES["VM"].messages[name], ctx.app.db)
    return fn


# What Xapi_vm.create stores whatever the record says: a new VM is halted, on no host, no snapshot,
# with no suspend image, boot record, protection or schedule, nothing blocked (xapi_vm.ml create).
_CREATE_RESETS = ("power_state", "suspend_VDI", "last_boot_CPU_flags", "last_booted_record",
                  "blocked_operations", "protection_policy", "is_snapshot_from_vmpp", "snapshot_schedule",
                  "is_vmss_snapshot")


def create(ctx, session, args):
    """The generic create once the memory limits pass xapi's check, then what xapi's create forces:
    the reset fields, domid -1, a mac_seed in other_config unless given, the domain type derived from
    HVM_boot_policy when unspecified, fresh VM_metrics, the memory overhead, allowed_operations."""
    from xapi.actions import vm_settings     # it imports this module
    if isinstance(args, dict):
        vm_memory.check_create(args)
    ref = _accessor(ctx, "create")(ctx, session, args)
    db = ctx.app.db
    vms = db.table("VM")
    rec = vms.get(ref)
    fields = dm.CLASSES["VM"].fields
    values = {name: fields[name].initial() for name in _CREATE_RESETS}
    values["domid"] = -1
    other = rec["other_config"]
    if "mac_seed" not in other:
        values["other_config"] = {**other, "mac_seed": str(uuidlib.uuid4())}
    if rec["domain_type"] == "unspecified":
        values["domain_type"] = "hvm" if rec["HVM_boot_policy"] else "pv"
    values["metrics"] = insert(db, "VM_metrics", VCPUs_utilisation={0: 0.0})
    vms.update(ref, values)
    vm_settings._update_overhead(ctx, ref)
    refresh_allowed_operations(db, ref)
    return ref


def destroy(ctx, session, self):
    """The generic destroy, once xapi's checks pass: Halted or Suspended, no other operation, not
    a default template, not the control domain. As Xapi_vm_helpers.destroy, its VBDs, VIFs and
    metrics go with it (its disks stay); its children take its parent (xapi_vm.ml)."""
    db = ctx.app.db
    rec = _assert(db, self, "destroy")
    vms = db.table("VM")
    for child in rec.get("children") or []:
        if child in vms:
            vms.set_field(child, "parent", rec["parent"] if rec["parent"] in vms else NULL_REF)
    for cls, refs in (("VBD", rec["VBDs"]), ("VIF", rec["VIFs"])):
        table = db.table(cls)
        for ref in refs or []:
            if ref in table:
                metrics = table.get_field(ref, "metrics")
                table.remove(ref)
                if metrics in db.table(f"{cls}_metrics"):
                    db.table(f"{cls}_metrics").remove(metrics)
    result = _accessor(ctx, "destroy")(ctx, session, self)
    for cls in ("VM_metrics", "VM_guest_metrics"):
        ref = rec["metrics" if cls == "VM_metrics" else "guest_metrics"]
        if ref in db.table(cls):
            db.table(cls).remove(ref)
    return result


def update_allowed_operations(ctx, session, self):
    _rec(ctx.app.db, self)
    refresh_allowed_operations(ctx.app.db, self)
    return ""


def assert_operation_valid(ctx, session, self, op):
    _assert(ctx.app.db, self, op)
    return ""


def _assert(db, ref: str, op: str) -> dict:
    rec = _rec(db, ref)
    err = check_operation(rec, ref, op)
    if err is not None:
        raise XapiError(*err)
    return rec


_current_task = locks.current_task


def _xapi_error(e: XenopsError, task_ref) -> XapiError:
    if e.code == "TASK_CANCELLED":
        return XapiError("TASK_CANCELLED", task_ref or (e.params[0] if e.params else ""))
    return XapiError(e.code, *e.params)


async def _operation(ctx, ref: str, op: str, body):
    """Runs `body(rec, on_progress)` with `op` in the VM's current_operations."""
    app = ctx.app
    task_ref = locks.current_task(app)

    def on_progress(p: float) -> None:
        if task_ref is not None and task_ref in app.db.table("task"):
            tasks = app.db.table("task")
            if tasks.get_field(task_ref, "progress") != p and tasks.get_field(task_ref, "status") == "pending":
                tasks.set_field(task_ref, "progress", float(p))

    async with locks.operation(app, "VM", ref, op, check=_assert, refresh=refresh_allowed_operations) as rec:
        try:
            return await body(rec, on_progress)
        except XenopsError as e:
            raise _xapi_error(e, task_ref) from None
        finally:
            # still holding the op, as xapi's body waits for xenopsd's events: a caller that sees
            # current_operations empty sees the power state and released disks too
            with _quiet():
                await sync(app, ref)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if et is not None and not issubclass(et, asyncio.CancelledError):
            log.exception("VM sync failed")
            return True
        return False


def _config(rec: dict) -> dict:
    hvm = rec.get("domain_type") == "hvm" or (rec.get("domain_type") in ("", "unspecified", None)
                                               and bool(rec.get("HVM_boot_policy")))
    return {"id": rec["uuid"], "name": rec["name_label"], "hvm": hvm,
            "memory_kib": int(rec["memory_static_max"]) // 1024,
            "vcpus": int(rec["VCPUs_at_startup"]), "vcpus_max": int(rec["VCPUs_max"]),
            "on_shutdown": rec["actions_after_shutdown"], "on_reboot": rec["actions_after_reboot"],
            "on_crash": rec["actions_after_crash"]}


def xenops_of(app, host=None):
    """The xenopsd of `host` (default: this host); a member's is reached through its internal endpoint."""
    if host in (None, "", NULL_REF, app.host_ref) or getattr(app, "pool", None) is None:
        return app.xenops
    return app.xenops_for(host)


def home(app, rec: dict) -> str:
    """The host whose xenopsd knows the VM's domain: where it is resident, else this host."""
    where = rec.get("resident_on")
    return where if where not in (None, "", NULL_REF) and where in app.db.table("host") else app.host_ref


async def sync(app, ref: str, host: str | None = None, memory: bool = True) -> None:
    """The VM's power state, domid, residence and metrics from the xenopsd of `host` (default: the
    host it is resident on); that host's free memory (unless the caller refreshes it once for many).
    One at a time per VM: an operation's own sync waits for one that xenopsd's update started, so the
    operation returns only once a gone domain's disks are released."""
    locks = app.__dict__.setdefault("_vm_sync_locks", {})
    entry = locks.get(ref)
    if entry is None:
        entry = locks[ref] = [asyncio.Lock(), 0]
    entry[1] += 1
    try:
        async with entry[0]:
            await _sync(app, ref, host, memory)
    finally:
        entry[1] -= 1
        if entry[1] == 0 and locks.get(ref) is entry:
            del locks[ref]


async def _sync(app, ref: str, host: str | None, memory: bool) -> None:
    db = app.db
    vms = db.table("VM")
    if ref not in vms:
        return
    rec = vms.get(ref)
    host = host or home(app, rec)
    try:
        st = await xenops_of(app, host).call("VM.stat", rec["uuid"])
    except XenopsError:
        st = {"power_state": "Halted", "domid": -1, "memory": 0, "vcpus": 0}
    power = st["power_state"]
    if power == "Halted" and rec["power_state"] == "Suspended":
        power = "Suspended"
    values = {"power_state": power, "domid": int(st["domid"]),
              "resident_on": host if power in ("Running", "Paused") else NULL_REF}
    if power in ("Halted", "Suspended"):
        values["domid"] = -1
    changed = {k: v for k, v in values.items() if rec.get(k) != v}
    if changed:
        vms.update(ref, changed)
    metrics = rec.get("metrics")
    live = {"memory_actual": int(st.get("memory", 0)), "VCPUs_number": int(st.get("vcpus", 0))}
    if power in ("Running", "Paused") and "hvm" in st:
        live["hvm"] = bool(st["hvm"])           # how the domain booted (has_definitely_booted_pv)
    if power in ("Running", "Paused") and rec["power_state"] not in ("Running", "Paused"):
        live["start_time"] = datetime_now()
    mt = db.table("VM_metrics")
    if metrics in mt:
        old = mt.get(metrics)
        live = {k: v for k, v in live.items() if old.get(k) != v}
        if live:
            mt.update(metrics, live)
    else:
        live.setdefault("start_time", datetime_now())
        vms.set_field(ref, "metrics", insert(db, "VM_metrics", **live))
    guest_metrics.update(db, ref, power, st.get("guest_agent"))
    if power in ("Halted", "Suspended") and vm_devices.holds_devices(db, ref):
        await vm_devices.release_vbds(app, ref, host)   # the domain is gone: so are its devices (there)
    if memory:
        await sync_host_memory(app, host)


async def sync_host_memory(app, host: str | None = None) -> None:
    host = host or app.host_ref
    h = await xenops_of(app, host).call("HOST.stat")
    hm = app.db.table("host").get_field(host, "metrics")
    t = app.db.table("host_metrics")
    if hm in t and t.get_field(hm, "memory_free") != h["free_memory"]:
        t.set_field(hm, "memory_free", int(h["free_memory"]))


async def _check_memory(app, rec: dict) -> None:
    h = await app.xenops.call("HOST.stat")
    need = int(rec["memory_static_max"])
    if need > int(h["free_memory"]):
        raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(need), str(h["free_memory"]))


# -- the calls ---------------------------------------------------------------------------------------
async def _build(app, vm: str, rec: dict, paused: bool, progress, host: str | None = None) -> None:
    """Disks attached, the domain built with its disks and VIFs (on `host`, default this one); a
    failed build releases the disks."""
    config = {**_config(rec), "vbds": await vm_devices.attach_vbds(app, vm, host),
              "vifs": vm_devices.vif_devices(app.db, vm)}
    xenops = xenops_of(app, host)
    try:
        await xenops.call("VM.add", config)
        await xenops.run("VM.start", rec["uuid"], paused, on_progress=progress)
    except BaseException:
        await asyncio.shield(vm_devices.release_vbds(app, vm, host))
        raise
    vm_devices.mark_plugged(app.db, vm)


async def _start(ctx, vm: str, op: str, host: str | None, paused: bool) -> None:
    """Builds the VM on `host`, or on the host placement chooses (xapi.pool.placement), with its
    memory reserved there and scheduled_to_be_resident_on set until the domain runs."""
    app = ctx.app
    held = contextlib.ExitStack()   # the reservation lasts until _operation's closing sync read the host's memory

    async def body(rec, progress):
        validate_actions_after_crash(rec, rec["actions_after_crash"])
        if host is None:
            target = placement.choose(app, vm, rec)
        else:
            placement.assert_can_boot_here(app, vm, rec, host)
            target = host
        vms = app.db.table("VM")
        held.enter_context(placement.reserve(app, target, placement.vm_memory(rec)))
        vms.set_field(vm, "scheduled_to_be_resident_on", target)
        try:
            await _build(app, vm, rec, paused, progress, target)
            vms.set_field(vm, "resident_on", target)   # the closing sync asks that host's xenopsd
        finally:
            if vm in vms:
                vms.set_field(vm, "scheduled_to_be_resident_on", NULL_REF)
    with held:
        await _operation(ctx, vm, op, body)
    _alerts.vm_done(app, vm, op)


async def start(ctx, session, vm, start_paused=False, force=False):
    await _start(ctx, vm, "start", None, bool(start_paused))
    return ""


async def start_on(ctx, session, vm, host, start_paused=False, force=False):
    _rec(ctx.app.db, vm)
    if type(host) is not str or host not in ctx.app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    await _start(ctx, vm, "start_on", host, bool(start_paused))
    return ""


# what a hard shutdown / hard reboot cancels first (message_forwarding.ml's VM.hard_shutdown/hard_reboot)
_INTERRUPTS = {"hard_shutdown": ("clean_shutdown", "clean_reboot", "hard_reboot", "pool_migrate", "call_plugin",
                                 "suspend"),
               "hard_reboot": ("clean_shutdown", "clean_reboot", "pool_migrate", "call_plugin", "suspend")}


async def _cancel_interrupted(app, session, vm: str, op: str) -> bool:
    """Cancels the VM's running tasks that `op` interrupts and waits (bounded) until they ended;
    whether there were any."""
    ops = _INTERRUPTS.get(op, ())
    victims = []
    for task, cop in list((app.db.table("VM").get_field(vm, "current_operations") or {}).items()):
        running = app.tasks.running.get(task)
        if cop in ops and running is not None and running is not asyncio.current_task():
            with contextlib.suppress(XapiError):
                app.tasks.cancel(task, getattr(session, "ref", ""))
            victims.append(running)
    if victims:
        await asyncio.wait(victims, timeout=60.0)
    return bool(victims)


def _simple(op: str, method: str, *extra):
    async def call(ctx, session, vm):
        app = ctx.app

        async def body(rec, progress):
            if await _cancel_interrupted(app, session, vm, op):
                rec = app.db.table("VM").get(vm)     # where the interrupted op left it
            xenops = xenops_of(app, home(app, rec))
            await xenops.call("VM.add", _config(rec))
            await xenops.run(method, rec["uuid"], *extra, on_progress=progress)
        await _operation(ctx, vm, op, body)
        _alerts.vm_done(app, vm, op)
        return ""
    call.__name__ = op
    return call


clean_shutdown = _simple("clean_shutdown", "VM.shutdown", 60.0)
_hard_shutdown_domain = _simple("hard_shutdown", "VM.hard_shutdown")


async def hard_shutdown(ctx, session, vm):
    """A running or paused VM's domain is destroyed; a suspended VM loses its image."""
    if _rec(ctx.app.db, vm)["power_state"] == "Suspended":
        await vm_suspend.hard_shutdown_suspended(ctx, vm)
        return ""
    return await _hard_shutdown_domain(ctx, session, vm)


clean_reboot = _simple("clean_reboot", "VM.reboot", 60.0)
hard_reboot = _simple("hard_reboot", "VM.hard_reboot")
pause = _simple("pause", "VM.pause")
unpause = _simple("unpause", "VM.unpause")


async def shutdown(ctx, session, vm):
    """clean_shutdown when the VM runs, hard_shutdown otherwise (xapi_vm.ml)."""
    rec = _rec(ctx.app.db, vm)
    if rec["power_state"] == "Running":
        try:
            return await clean_shutdown(ctx, session, vm)
        except XapiError as e:
            if e.code not in ("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT",):
                raise
    return await hard_shutdown(ctx, session, vm)


async def power_state_reset(ctx, session, vm):
    app = ctx.app
    rec = _rec(app.db, vm)
    if rec.get("is_control_domain"):
        raise XapiError("OPERATION_NOT_ALLOWED", "Operations on domain 0 are not allowed")
    try:
        st = await xenops_of(app, home(app, rec)).call("VM.stat", rec["uuid"])
    except (XenopsError, XapiError):
        st = {"power_state": "Halted"}
    if st["power_state"] != "Halted":
        raise XapiError("VM_BAD_POWER_STATE", vm, "halted", st["power_state"].lower())
    app.db.table("VM").update(vm, {"power_state": "Halted", "domid": -1, "resident_on": NULL_REF,
                                   "current_operations": {}})
    guest_metrics.update(app.db, vm, "Halted", None)
    refresh_allowed_operations(app.db, vm)
    return ""


async def assert_can_boot_here(ctx, session, self, host):
    app = ctx.app
    rec = _rec(app.db, self)
    if host not in app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    if rec["is_a_template"]:
        raise XapiError("VM_IS_TEMPLATE", self, "start")
    validate_actions_after_crash(rec, rec["actions_after_crash"])
    placement.assert_can_boot_here(app, self, rec, host)
    return ""


def get_possible_hosts(ctx, session, vm):
    app = ctx.app
    return placement.possible_hosts(app, vm, _rec(app.db, vm))


# -- updates from xenopsd ------------------------------------------------------------------------------
async def watch(app) -> None:
    """On the coordinator: follows the xenopsd updates of every host of the pool (a member's through
    its internal endpoint), so VMs that changed by themselves reach the database. Hosts that join
    are picked up within a second; a member does nothing (the coordinator writes for it)."""
    from xapi import metrics
    from xapi.actions import host_operations
    metrics.start(app)          # this host's live VM/host metrics, for as long as the watcher runs
    storage = getattr(app, "storage", None)
    if storage is not None:     # the resync releases the disks of domains gone: it needs the drivers
        await storage.ready()
    watchers: dict[str, asyncio.Task] = {}
    loop = asyncio.get_running_loop()
    try:
        while True:
            hosts = set(app.db.table("host").refs()) if app.is_coordinator else set()
            for h in list(watchers):
                if h not in hosts or watchers[h].done():
                    watchers.pop(h).cancel()
            for h in hosts - watchers.keys():
                host_operations.refresh(app.db, h)     # a host this coordinator sees anew
                watchers[h] = loop.create_task(_watch_host(app, h))
            await asyncio.sleep(1.0)
    finally:
        for t in watchers.values():
            t.cancel()


async def _watch_host(app, host: str) -> None:
    last = 0
    by_uuid = app.db.table("VM")
    local = host == app.host_ref
    mine = (host, NULL_REF) if local else (host,)

    async def resync() -> bool:
        """After a restart: domains that are gone leave their VMs Halted. Whether all were synced."""
        done = True
        for ref in by_uuid.refs():
            rec = by_uuid.get(ref)
            if rec["power_state"] in ("Running", "Paused") and not rec["is_control_domain"] \
                    and rec["resident_on"] in mine and not rec["current_operations"]:
                try:
                    await sync(app, ref, host)
                    refresh_allowed_operations(app.db, ref)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - the host is not reachable yet: later
                    log.info("resync of VM %s on host %s: %s", ref, host, e)
                    done = False
        return done
    lost = not await resync()
    while True:
        try:
            # after a break, ask without waiting: a new xenopsd may have nothing to say for long
            got = await xenops_of(app, host).call("UPDATES.get", last, 0.0 if lost else 30.0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - xenopsd restarting, member unreachable: try again
            last, lost = 0, True        # it may come back as a new xenopsd, its sequence begun again
            await asyncio.sleep(0.5 if local else 1.0)
            continue
        if lost or got["last"] < last:  # back after a break (the host rebooted, the daemon was
            last = min(last, got["last"])   # killed): domains may be gone
            lost = not await resync()
            if lost:
                await asyncio.sleep(1.0)
            continue
        last = got["last"]
        synced = False
        for kind, vm_uuid in got["updates"]:
            if kind != "VM":
                continue
            refs = by_uuid.find("uuid", vm_uuid)
            if not refs or by_uuid.get_field(refs[0], "current_operations") \
                    or by_uuid.get_field(refs[0], "resident_on") not in mine:
                continue                # the running operation syncs when it ends; another host's VM
            with _quiet():
                await sync(app, refs[0], host, memory=False)
                refresh_allowed_operations(app.db, refs[0])
                synced = True
        if synced:
            with _quiet():
                await sync_host_memory(app, host)   # once for the whole batch


def set_actions_after_crash(ctx, session, self, value):
    rec = _rec(ctx.app.db, self)
    if value not in ("destroy", "coredump_and_destroy", "restart", "coredump_and_restart", "preserve",
                     "rename_restart"):
        raise XapiError("INVALID_VALUE", "actions_after_crash", value)
    validate_actions_after_crash(rec, value)
    ctx.app.db.table("VM").set_field(self, "actions_after_crash", value)
    return ""


def validate_actions_after_crash(rec: dict, value: str) -> None:
    """As xapi_vm_helpers.ml, on set and before every start: rename_restart is refused (it would leak
    a domain), and so are core dumps of a domain that is not PV."""
    field = "VM.actions_after_crash"
    if value == "rename_restart":
        raise XapiError("VALUE_NOT_SUPPORTED", field, value,
                        "option would leak a domain; VMs and not domains are managed by this API")
    if value in ("coredump_and_destroy", "coredump_and_restart"):
        kind = rec.get("domain_type")
        if kind in ("", "unspecified", None):
            kind = "hvm" if rec.get("HVM_boot_policy") else "pv"
        if kind in ("hvm", "pv_in_pvh"):
            raise XapiError("VALUE_NOT_SUPPORTED", field, value,
                            "cannot invoke a coredump of an HVM or PV-in-PVH domain")


# modules this one calls at run time (they import this one: module imports, so any order works)
from xapi.actions import vm_memory, vm_suspend  # noqa: E402
