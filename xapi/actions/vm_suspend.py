"""VM.suspend, resume, resume_on and the hard shutdown of a suspended VM (xapi_xenops.ml suspend /
resume, Helpers.choose_suspend_sr).

Suspend: the image goes into a new VDI ("Suspend image", type suspend, sm_config vmhint=<vm uuid>,
sized as xapi sizes it: static_max * 1.2 * 1.05 + 100 MiB, thin) in the first SR that exists of
VM.suspend_SR, the pool's suspend_image_SR, the host's suspend_image_sr and the pool's default SR
(else VM_NO_SUSPEND_SR [vm]). xenopsd writes the image through the storage access layer's attach
information and destroys the domain; the VM becomes Suspended with suspend_VDI set and its disks
released. Resume reads the image back (a damaged one fails the call and the VM stays Suspended),
destroys the suspend VDI and leaves the VM Running, or Paused with start_paused.

In a pool the xenopsd and the storage of the VM's host do it (internal calls to a member): suspend
on the host it runs on, with the image on an SR that host sees; resume where placement chooses
(a host that sees the VM's disks and its image: VM_REQUIRES_SR otherwise), resume_on on the host
given after the same checks.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from xapi import alerts as _alerts
from xapi.actions import vdi as vdi_actions
from xapi.actions import vm as vm_mod
from xapi.actions import vm_devices
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF
from xapi.pool import placement
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.vm_suspend")

MIB = 1 << 20


def suspend_size(rec: dict) -> int:
    return int(int(rec["memory_static_max"]) * 1.2 * 1.05) + 100 * MIB


def choose_suspend_sr(db, vm: str, rec: dict, host: str | None = None) -> str:
    """The first of xapi's candidates that `host` sees (so the host that resumes it can read it),
    else the first that exists."""
    pool = db.table("pool").refs()[0]
    host = host or rec.get("resident_on")
    hosts = db.table("host")
    candidates = [rec.get("suspend_SR"), db.table("pool").get_field(pool, "suspend_image_SR"),
                  hosts.get_field(host, "suspend_image_sr") if host in hosts else None,
                  db.table("pool").get_field(pool, "default_SR")]
    srs = db.table("SR")
    existing = [sr for sr in candidates if sr and sr != NULL_REF and sr in srs]
    if not existing:
        raise XapiError("VM_NO_SUSPEND_SR", vm)
    if host in hosts:
        return next((sr for sr in existing if placement.sr_available(db, sr, host)), existing[0])
    return existing[0]


async def _attached(app, host: str, dp: str, vdi: str, rw: bool) -> dict:
    """The image attached and activated by `host`'s storage (this host's, or a member's)."""
    if host != app.host_ref:
        return await app.pool.call(host, "storage.attach", dp, vdi, rw, app.db.generation) or {}
    await app.storage.access.attach(dp, vdi, rw)
    try:
        return await app.storage.access.activate(dp, vdi)
    except BaseException:
        await asyncio.shield(_release(app, host, dp, vdi))
        raise


async def _release(app, host: str, dp: str, vdi: str) -> None:
    if host != app.host_ref:
        try:
            await app.pool.call(host, "storage.release", dp)
        except XapiError as e:  # that host keeps it as leaked, retried at its next start
            log.error("releasing %s of %s on %s failed: %s", dp, vdi, host, e.description)
        return
    try:
        await app.storage.access.release(dp, vdi)
    except Exception as e:  # noqa: BLE001 - kept as leaked, retried at the next start
        log.error("releasing %s of %s failed: %s", dp, vdi, e)
        await app.storage.access.destroy_dp(dp, allow_leak=True)


async def _destroy_vdi(ctx, vdi: str) -> None:
    if vdi in ctx.app.db.table("VDI"):
        await vdi_actions.destroy(ctx, None, vdi)


async def save(ctx, session, vm: str, rec: dict, progress) -> None:
    """The suspend itself, inside an operation the caller holds (suspend, checkpoint), by the
    xenopsd and storage of the host the VM runs on."""
    app = ctx.app
    db = app.db
    host = vm_mod.home(app, rec)
    sr = choose_suspend_sr(db, vm, rec, host)
    await app.storage.ready()
    vdi = await vdi_actions.create(ctx, session, {
        "name_label": "Suspend image", "name_description": "Suspend image", "SR": sr,
        "virtual_size": suspend_size(rec), "type": "suspend", "sharable": False, "read_only": False,
        "other_config": {}, "xenstore_data": {}, "sm_config": {"vmhint": rec["uuid"]}, "tags": []})
    dp = f"suspend/{rec['uuid']}"
    xenops = vm_mod.xenops_of(app, host)
    try:
        disk = await _attached(app, host, dp, vdi, True)
        try:
            await xenops.call("VM.add", vm_mod._config(rec))
            await xenops.run("VM.save", rec["uuid"], disk, on_progress=progress)
        finally:
            await asyncio.shield(_release(app, host, dp, vdi))
    except BaseException:
        await asyncio.shield(_destroy_vdi(ctx, vdi))
        raise
    db.table("VM").update(vm, {"suspend_VDI": vdi, "power_state": "Suspended"})
    await vm_devices.release_vbds(app, vm, host)
    with contextlib.suppress(XapiError, XenopsError):
        await vm_mod.sync_host_memory(app, host)


async def restore(ctx, vm: str, rec: dict, start_paused: bool, progress, host: str | None = None) -> None:
    """The resume itself, inside an operation the caller holds (resume, resume_on, checkpoint): on
    `host`, else where it was suspended a moment ago (checkpoint), else where placement chooses
    (xapi.pool.placement: its disks' and its image's SRs must be seen there, memory reserved)."""
    app = ctx.app
    db = app.db
    vdi = rec["suspend_VDI"]
    if vdi not in db.table("VDI"):
        raise XapiError("VM_HAS_NO_SUSPEND_VDI", vm)
    where = rec.get("resident_on")
    if host is None and where not in (None, "", NULL_REF) and where in db.table("host"):
        host = where
    if host is None:
        host = placement.choose(app, vm, rec)
    else:
        placement.assert_can_boot_here(app, vm, rec, host)
    await app.storage.ready()
    vms = db.table("VM")
    with placement.reserve(app, host, placement.vm_memory(rec)):
        vms.set_field(vm, "scheduled_to_be_resident_on", host)
        try:
            await _restore_on(app, vm, rec, vdi, host, start_paused, progress)
        finally:
            if vm in vms:
                vms.set_field(vm, "scheduled_to_be_resident_on", NULL_REF)
    try:
        await _destroy_vdi(ctx, vdi)
    except XapiError as e:     # the VM runs: a leftover image is only space
        log.warning("could not destroy the suspend image %s of %s: %s", vdi, vm, e)


async def _restore_on(app, vm: str, rec: dict, vdi: str, host: str, start_paused: bool, progress) -> None:
    db = app.db
    dp = f"suspend/{rec['uuid']}"
    xenops = vm_mod.xenops_of(app, host)
    disk = await _attached(app, host, dp, vdi, False)
    try:
        config = {**vm_mod._config(rec), "vbds": await vm_devices.attach_vbds(app, vm, host),
                  "vifs": vm_devices.vif_devices(db, vm)}
        try:
            await xenops.call("VM.add", config)
            await xenops.run("VM.restore", rec["uuid"], disk, bool(start_paused), on_progress=progress)
        except BaseException:
            await asyncio.shield(vm_devices.release_vbds(app, vm, host))
            raise
    finally:
        await asyncio.shield(_release(app, host, dp, vdi))
    vm_devices.mark_plugged(db, vm)
    db.table("VM").update(vm, {"suspend_VDI": NULL_REF, "power_state": "Running", "resident_on": host})


async def suspend(ctx, session, vm):
    async def body(rec, progress):
        await save(ctx, session, vm, rec, progress)
    await vm_mod._operation(ctx, vm, "suspend", body)
    _alerts.vm_done(ctx.app, vm, "suspend")
    return ""


async def _resume(ctx, vm, op: str, start_paused: bool, host: str | None = None):
    async def body(rec, progress):
        await restore(ctx, vm, rec, start_paused, progress, host)
    await vm_mod._operation(ctx, vm, op, body)
    _alerts.vm_done(ctx.app, vm, op)
    return ""


async def resume(ctx, session, vm, start_paused=False, force=False):
    return await _resume(ctx, vm, "resume", bool(start_paused))


async def resume_on(ctx, session, vm, host, start_paused=False, force=False):
    if type(host) is not str or host not in ctx.app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    return await _resume(ctx, vm, "resume_on", bool(start_paused), host)


async def hard_shutdown_suspended(ctx, vm) -> None:
    """A suspended VM is halted by dropping its image (xapi: the suspend VDI is destroyed)."""
    db = ctx.app.db

    async def body(rec, progress):
        vdi = rec["suspend_VDI"]
        if vdi in db.table("VDI"):
            await _destroy_vdi(ctx, vdi)
        db.table("VM").update(vm, {"suspend_VDI": NULL_REF, "power_state": "Halted"})
    await vm_mod._operation(ctx, vm, "hard_shutdown", body)
    _alerts.vm_done(ctx.app, vm, "hard_shutdown")
