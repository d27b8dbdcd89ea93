"""Host maintenance: enable, disable, evacuate, get_vms_which_prevent_evacuation, assert_can_evacuate,
shutdown, reboot (xapi_host.ml, xapi_host_helpers.ml).

The evacuation plan (compute_evacuation_plan_no_wlb): the targets are the other enabled hosts; each
VM resident on the host (not the control domain) gets either a target or the error that stops it:
NO_HOSTS_AVAILABLE [vm] without targets, the first error of assert_can_boot_here (memory left aside)
on any target, the error pool_migrate itself would give, and HOST_NOT_ENOUGH_FREE_MEMORY [vm] when
the memory binpack (largest VMs first, each on the target with the most memory left) finds no room.
`evacuate` raises the first error of the plan, else migrates the VMs live (at most `batch` at once,
evacuation-batch-size 10 as xapi.conf when 0 is given), skipping VMs that stopped meanwhile, with the
host's current_operations holding `evacuate` (placement avoids it; xapi.actions.host_operations has
the rules) and progress on the task.

shutdown and reboot (held in current_operations as well) need the host disabled (HOST_NOT_DISABLED)
and without running guests
(HOST_IN_USE [host, "vm", vm]: xapi's "bacon mode"). The host's daemon then stops (shutdown: its
host_metrics say not live) or restarts in place (reboot: the same process image again, as a host
comes back from a reboot, enabled).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal

from xapi.datamodel.errors import XapiError
from xapi.pool import internal, placement

log = logging.getLogger("xapi.host")

BATCH = 10


def _host(app, host) -> dict:
    hosts = app.db.table("host")
    if type(host) is not str or host not in hosts:
        raise XapiError("HANDLE_INVALID", "host", host)
    return hosts.get(host)


def enable(ctx, session, host):
    from xapi.actions import host_operations    # not at import: xapi.pool.api imports this module
    _host(ctx.app, host)
    host_operations.assert_valid(ctx.app.db, host, "enable")
    ctx.app.db.table("host").set_field(host, "enabled", True)
    host_operations.refresh(ctx.app.db, host)
    return ""


def disable(ctx, session, host):
    from xapi.actions import host_operations
    _host(ctx.app, host)
    ctx.app.db.table("host").set_field(host, "enabled", False)
    host_operations.refresh(ctx.app.db, host)
    return ""


def _guests(app, host: str) -> list[str]:
    vms = app.db.table("VM")
    return [v for v in vms.find("resident_on", host) if not vms.get_field(v, "is_control_domain")]


def compute_plan(app, host: str) -> dict:
    """{vm: ("migrate", host) | ("error", [code, params...])}."""
    from xapi.actions import vm as vm_actions
    db = app.db
    hosts, vms = db.table("host"), db.table("VM")
    targets = [h for h in hosts.refs() if h != host and hosts.get_field(h, "enabled")]
    guests = [(v, vms.get(v)) for v in _guests(app, host)]
    plan: dict = {}
    if not targets:
        return {v: ("error", ["NO_HOSTS_AVAILABLE", v]) for v, _ in guests}
    movable = []
    for v, rec in guests:
        try:
            for t in targets:
                placement.assert_can_boot_here(app, v, rec, t, memory=False)
            movable.append((v, rec))
        except XapiError as e:
            plan[v] = ("error", e.description)
    for v, rec in guests:
        err = vm_actions.check_operation(rec, v, "pool_migrate")
        if err is not None:
            plan[v] = ("error", err)
    room = {t: placement.free_memory(app, t) for t in targets}
    for v, rec in sorted(movable, key=lambda vr: -placement.vm_memory(vr[1])):
        if v in plan:
            continue
        need = placement.vm_memory(rec)
        best = max(targets, key=lambda t: room[t])
        if room[best] < need:
            plan[v] = ("error", ["HOST_NOT_ENOUGH_FREE_MEMORY", v])
            continue
        room[best] -= need
        plan[v] = ("migrate", best)
    return plan


def get_vms_which_prevent_evacuation(ctx, session, self):
    _host(ctx.app, self)
    return {v: [str(x) for x in p[1]] for v, p in compute_plan(ctx.app, self).items() if p[0] == "error"}


def assert_can_evacuate(ctx, session, host):
    _host(ctx.app, host)
    errors = [",".join(str(x) for x in p[1]) for p in compute_plan(ctx.app, host).values() if p[0] == "error"]
    if errors:
        raise XapiError("CANNOT_EVACUATE_HOST", "|".join(errors))
    return ""


async def evacuate(ctx, session, host, network="", evacuate_batch_size=0):
    from xapi.actions import host_operations, vm_migrate
    from xapi.forwarding import locks       # not at import: xapi.pool.api imports this module
    app = ctx.app
    _host(app, host)
    host_operations.assert_valid(app.db, host, "evacuate")
    plan = compute_plan(app, host)
    for kind, detail in plan.values():
        if kind == "error":
            raise XapiError(*detail)
    task = locks.current_task(app)
    done = [0]
    gate = asyncio.Semaphore(int(evacuate_batch_size) if int(evacuate_batch_size or 0) > 0 else BATCH)

    async def move(vm: str, target: str) -> None:
        async with gate:
            try:
                await vm_migrate.pool_migrate(ctx, session, vm, target, {"live": "true"})
            except XapiError as e:
                if e.code != "VM_BAD_POWER_STATE":      # it stopped meanwhile: nothing to move
                    raise
            done[0] += 1
            if task is not None and task in app.db.table("task"):
                app.db.table("task").set_field(task, "progress", done[0] / max(1, len(plan)))

    async with host_operations.operation(app, host, "evacuate"):
        moves = [asyncio.ensure_future(move(v, t)) for v, (_, t) in plan.items()]
        if moves:
            results = await asyncio.gather(*moves, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
    left = [v for v in _guests(app, host)
            if app.db.table("VM").get_field(v, "power_state") in ("Running", "Paused")]
    if left:
        raise XapiError("INTERNAL_ERROR", f"evacuate: {len(left)} VMs are still resident on {host}")
    return ""


def _assert_maintenance(app, host: str) -> None:
    """xapi's assert_bacon_mode: disabled, and no guest running there."""
    if _host(app, host)["enabled"]:
        raise XapiError("HOST_NOT_DISABLED")
    vms = app.db.table("VM")
    for v in _guests(app, host):
        if vms.get_field(v, "power_state") == "Running":
            raise XapiError("HOST_IN_USE", host, "vm", v)


async def _power(ctx, host: str, action: str) -> None:
    from xapi.actions import host_operations
    app = ctx.app
    _host(app, host)
    async with host_operations.operation(app, host, action):
        _assert_maintenance(app, host)
        if action == "shutdown":
            hm = app.db.table("host").get_field(host, "metrics")
            if hm in app.db.table("host_metrics"):
                app.db.table("host_metrics").set_field(hm, "live", False)
        else:
            app.db.table("host").set_field(host, "enabled", True)    # it comes back enabled
        await app.pool.call(host, "host.power", action)


async def shutdown(ctx, session, host):
    await _power(ctx, host, "shutdown")
    return ""


async def reboot(ctx, session, host):
    await _power(ctx, host, "reboot")
    return ""


@internal.method("host.power")
def _host_power(app, action: str) -> str:
    """On the host itself: stop the daemon (shutdown), or stop and start it again (reboot), once
    this answer is out."""
    if action not in ("shutdown", "reboot"):
        raise XapiError("INVALID_VALUE", "action", action)
    app.restart_after_stop = action == "reboot"
    log.info("host %s: %s requested", app.host_ref, action)
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    return ""

