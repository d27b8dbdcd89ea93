"""Storage motion inside the pool: VDI.pool_migrate, VM.migrate_send, VM.assert_can_migrate and
host.migrate_receive (xapi_vm_migrate.ml, xapi_host.ml migrate_receive).

`host.migrate_receive(host, network, options)` answers xapi's token map, which clients pass back
untouched as `dest`: ``SM`` and ``xenops`` (``http://<ip>/services/SM|xenops?session_id=<s>``, ip the
host's PIF on `network`), ``host`` (the host's ref), ``session_id`` (a new session as the caller's)
and ``master`` (``http://<coordinator>/``).

`VM.migrate_send(vm, dest, live, vdi_map, vif_map, options)` within the pool: every disk of the VM
whose VDI is mapped to another SR is moved while the VM runs (xapi.sm.mirror): a new VDI on the
target SR, every write mirrored to it while the base copies, then the VBD's datapath switches to it
(the VBD points at it, the domain's backend params follow) and the source VDI is destroyed. Then,
when `dest` names another host, the VM's memory goes there as VM.pool_migrate does. A failure or a
cancel before the switch stops the mirror and destroys the new VDI: the VM stays on its disks. The
disks of a halted or suspended VM (and its suspend image, when the destination can't see it) are
copied (VDI.copy) and the copies take their place.

`VDI.pool_migrate(vdi, sr, options)` is a migrate_send of the VM using the VDI with only that VDI
moving, to the host it runs on when that host sees the new SR, else to a host that does (as xapi);
it returns the new VDI's ref, as xapi.

Checks, in xapi's words: VDI_NEEDS_VM_FOR_MIGRATE [vdi] (no VBD of a running VM), VM_HAS_CHECKPOINT
[vm], VM_HAS_TOO_MANY_SNAPSHOTS [vm], VDI_NOT_IN_MAP [vdi] (a disk whose SR the destination can't
see and that the map doesn't move), VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION [vdi] (on_boot=reset),
SR_DOES_NOT_SUPPORT_MIGRATION [sr] (source or target SR without VDI_SNAPSHOT), VM_REQUIRES_SR,
TOO_MANY_STORAGE_MIGRATES ["3"].
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from xapi.datamodel.errors import XapiError
from xapi.sm import mirror as sm_mirror, rows

log = logging.getLogger("xapi.storage_migrate")

MAX_MIGRATES = 3                 # xapi's with_migrate
_running = [0]


# -- host.migrate_receive -----------------------------------------------------------------------------
def migrate_receive(ctx, session, host, network, options=None):
    app = ctx.app
    db = app.db
    if type(host) is not str or host not in db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    if type(network) is not str or network not in db.table("network"):
        raise XapiError("HANDLE_INVALID", "network", network)
    pifs = db.table("PIF")
    pif = next((p for p in db.table("network").get_field(network, "PIFs") or []
                if p in pifs and pifs.get_field(p, "host") == host), None)
    if pif is None:
        raise XapiError("HOST_CANNOT_ATTACH_NETWORK", host, network)
    ip = pifs.get_field(pif, "IP")
    if not ip:
        mode = pifs.get_field(pif, "ip_configuration_mode")
        if mode == "None":
            raise XapiError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)
        if mode == "DHCP":
            raise XapiError("INTERFACE_HAS_NO_IP", pif)
        raise XapiError("INTERNAL_ERROR", "No IP address on PIF")
    # a session as the caller's (xapi's login_no_password with the caller's subject and rights)
    if session is None:
        new = app.sessions.create("root", superuser=True, originator="migrate_receive")
    else:
        new = app.sessions.create(session.user, superuser=session.superuser, roles=session.roles,
                                  permissions=session.permissions, subject=session.subject,
                                  auth_user_sid=session.auth_user_sid, pool=session.pool,
                                  originator=session.originator)
    master = db.table("host").get_field(_coordinator(app), "address")
    return {"SM": f"http://{ip}/services/SM?session_id={new.ref}", "host": host,
            "xenops": f"http://{ip}/services/xenops?session_id={new.ref}", "session_id": new.ref,
            "master": f"http://{master}/"}


def _coordinator(app) -> str:
    pools = app.db.table("pool")
    for p in pools.refs():
        return pools.get_field(p, "master")
    return app.host_ref


# -- the checks -------------------------------------------------------------------------------------------
def _dest_host(app, dest) -> str:
    if not isinstance(dest, dict) or "host" not in dest:
        raise XapiError("INTERNAL_ERROR", "the destination map names no host")
    host = dest["host"]
    if host not in app.db.table("host"):
        # another pool's host: cross-pool storage motion isn't done here
        master = str(dest.get("master", ""))
        raise XapiError("VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED") if not master else \
            XapiError("CANNOT_CONTACT_HOST", master)
    return host


def _sr_sees(db, sr: str, host: str) -> bool:
    pbds = db.table("PBD")
    return any(pbds.get_field(p, "host") == host and pbds.get_field(p, "currently_attached")
               for p in pbds.find("SR", sr))


def _supports(app, sr: str) -> bool:
    return app.storage.has_capability(sr, "VDI_SNAPSHOT")


def _disks(db, vm: str) -> list[tuple[str, str]]:
    """(vbd, vdi) of the VM's non-empty disk VBDs (CDs are not moved)."""
    vbds, vdis = db.table("VBD"), db.table("VDI")
    out = []
    for vbd in db.table("VM").get_field(vm, "VBDs") or []:
        if vbd not in vbds:
            continue
        r = vbds.get(vbd)
        if r["empty"] or r["type"] == "CD" or r["VDI"] not in vdis:
            continue
        out.append((vbd, r["VDI"]))
    return out


def _check_map(app, vm: str, host: str, vdi_map: dict) -> list[tuple[str, str, str]]:
    """The moves (vbd, vdi, sr) once xapi's checks pass."""
    db = app.db
    vms = db.table("VM")
    rec = vms.get(vm)
    snaps = [s for s in rec.get("snapshots") or [] if s in vms]
    if len(snaps) == 1 and vms.get_field(snaps[0], "power_state") == "Suspended":
        raise XapiError("VM_HAS_CHECKPOINT", vm)
    if len(snaps) > 1:
        raise XapiError("VM_HAS_TOO_MANY_SNAPSHOTS", vm)
    if not isinstance(vdi_map, dict):
        raise XapiError("INTERNAL_ERROR", "vdi_map is not a map")
    srs = db.table("SR")
    for vdi, sr in vdi_map.items():
        if vdi not in db.table("VDI"):
            raise XapiError("HANDLE_INVALID", "VDI", vdi)
        if sr not in srs:
            raise XapiError("HANDLE_INVALID", "SR", sr)
    moves = []
    disks = _disks(db, vm)
    suspend_vdi = rec.get("suspend_VDI")
    if rec["power_state"] == "Suspended" and suspend_vdi in db.table("VDI"):
        disks.append((None, suspend_vdi))     # the memory image goes along (vbd None)
    for vbd, vdi in disks:
        src_sr = db.table("VDI").get_field(vdi, "SR")
        target = vdi_map.get(vdi, src_sr)
        if not _sr_sees(db, target, host):
            if vdi not in vdi_map:
                raise XapiError("VDI_NOT_IN_MAP", vdi)
            raise XapiError("VM_REQUIRES_SR", vm, target)
        if target == src_sr:
            continue
        if db.table("VDI").get_field(vdi, "on_boot") == "reset":
            raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", vdi)
        for sr in (src_sr, target):
            if not _supports(app, sr):
                raise XapiError("SR_DOES_NOT_SUPPORT_MIGRATION", sr)
        moves.append((vbd, vdi, target))
    return moves


def assert_can_migrate(ctx, session, vm, dest, live, vdi_map, vif_map, options=None, vgpu_map=None,
                       vdi_format_map=None):
    from xapi.actions import vm as vm_actions
    app = ctx.app
    rec = vm_actions._rec(app.db, vm)
    host = _dest_host(app, dest)
    err = vm_actions.check_operation({**rec, "current_operations": {}}, vm, "migrate_send")
    if err is not None:
        raise XapiError(*err)
    _check_map(app, vm, host, vdi_map or {})
    _check_host(app, vm, rec, host)
    return ""


def _check_host(app, vm: str, rec: dict, host: str) -> None:
    """assert_can_boot_here without its SR check (the map's check replaces it), as xapi's
    do_sr_check:false."""
    from xapi.pool import placement
    if rec["power_state"] != "Running" or rec["resident_on"] == host:
        return
    placement.assert_can_boot_here(app, vm, {**rec, "VBDs": []}, host)


# -- the move --------------------------------------------------------------------------------------------
async def _move_disk(ctx, session, vm_rec: dict, vbd: str, vdi: str, sr: str, progress) -> str:
    """Mirrors one running VBD's VDI onto a new VDI on `sr` and switches the VBD to it; the new VDI."""
    from xapi.actions import vdi as vdi_actions, vm_devices
    app = ctx.app
    db = app.db
    access = app.storage.access
    datapaths = sm_mirror.of(app)
    vbd_rec = db.table("VBD").get(vbd)
    src = db.table("VDI").get(vdi)
    dp = vm_devices.datapath(vm_rec["uuid"], vbd_rec["userdevice"])
    tap = datapaths.ensure(dp, vdi)
    if tap is None or tap.vdi_uuid != src["uuid"]:
        raise XapiError("VDI_NEEDS_VM_FOR_MIGRATE", vdi)
    app.storage.assert_plugged(sr)
    creating = asyncio.ensure_future(vdi_actions.create(ctx, session, {
        "name_label": src["name_label"], "name_description": src["name_description"], "SR": sr,
        "virtual_size": src["virtual_size"], "type": src["type"], "sharable": src["sharable"],
        "read_only": False, "other_config": dict(src["other_config"]),
        "xenstore_data": dict(src["xenstore_data"]), "sm_config": {}, "tags": list(src.get("tags") or [])}))
    mdp = f"mirror/{dp}"
    try:
        dst = await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):        # created meanwhile: it goes again
            await _undo(app, dp, mdp, await creating)
        raise
    db.table("VDI").update(dst, {"allow_caching": src["allow_caching"], "on_boot": src["on_boot"]})
    switched: list[bool] = []          # set by _switch once the datapath writes to the new VDI
    try:
        await access.attach(mdp, dst, True)
        info = await access.activate(mdp, dst)
        m = sm_mirror.Mirror(tap, info)
        await m.run(progress)
        # the VBD's datapath holds the new VDI too, ready for the switch
        await access.attach(dp, dst, vbd_rec["mode"] == "RW")
        new_info = await access.activate(dp, dst) or {}
        # the switch: once the datapath switched, this disk's migration runs to its end, a cancel
        # or not
        switch = asyncio.ensure_future(_switch(app, vm_rec, vbd, vbd_rec, src, dst, mdp, new_info, m, switched))
        try:
            await asyncio.shield(switch)
        except asyncio.CancelledError:
            await switch
            asyncio.current_task().uncancel()
    except sm_mirror.MirrorFailed as e:
        log.error("storage migration of VDI %s: the mirror failed: %s", vdi, e)
        await _undo(app, dp, mdp, dst)
        raise XapiError("MIRROR_FAILED", vdi) from None
    except BaseException:
        if not switched:
            await _undo(app, dp, mdp, dst)
        raise
    rows.refresh_vdi(app, dst)
    rows.refresh_sr(app, sr)
    return dst


async def _switch(app, vm_rec: dict, vbd: str, vbd_rec: dict, src: dict, dst: str, mdp: str, info: dict,
                  m, switched: list) -> None:
    """The VBD's writes go to the new VDI, the VBD points at it, the domain's backend too; the old
    VDI and the mirror's datapath are released."""
    from xapi.actions import vm_devices
    db = app.db
    access = app.storage.access
    dp = vm_devices.datapath(vm_rec["uuid"], vbd_rec["userdevice"])
    dst_uuid = db.table("VDI").get_field(dst, "uuid")
    await sm_mirror.of(app).switch(dp, dst_uuid, m)
    switched.append(True)
    db.table("VBD").set_field(vbd, "VDI", dst)
    log.info("VBD %s of VM %s: VDI %s -> %s (%d writes mirrored)", vbd, vm_rec["uuid"], src["uuid"],
             dst_uuid, m.mirrored_writes)
    await _set_backend(app, vbd_rec["VM"], vm_rec, vbd_rec, str(info.get("params", "")))
    old = db.table("VDI").find("uuid", src["uuid"])
    for d, ref in ((dp, old[0] if old else None), (mdp, dst)):
        if ref is None:
            continue
        try:
            await access.release(d, ref)
        except Exception as e:  # noqa: BLE001 - the VM runs on the new disk whatever happens here
            log.error("releasing %s of %s after the switch failed: %s", d, ref, e)


async def _undo(app, dp: str, mdp: str, dst: str) -> None:
    """Stops the mirror (if it runs) and removes the new VDI; the VM keeps its disk."""
    access = app.storage.access
    datapaths = sm_mirror.of(app)
    tap = datapaths.tap(dp)
    if tap is not None and tap.mirror is not None:
        await tap.mirror.stop()
    with contextlib.suppress(Exception):
        await access.destroy_dp(mdp, allow_leak=True)
    if dst in app.db.table("VDI"):
        with contextlib.suppress(Exception):
            await access.release(dp, dst)       # the VBD's datapath may hold it already
    if dst in app.db.table("VDI") and not access.closed:
        sr = app.db.table("VDI").get_field(dst, "SR")
        try:
            await app.storage.vdi_command(dst, "vdi_delete")
            rows.destroy_vdi_row(app.db, dst)
            rows.refresh_sr(app, sr)
        except Exception as e:  # noqa: BLE001 - the original error matters more
            log.warning("could not remove the mirror's VDI %s: %s", dst, e)


async def _set_backend(app, vm: str, vm_rec: dict, vbd_rec: dict, params: str) -> None:
    """The domain's disk backend points at the new disk (xenopsd's VBD params)."""
    from xapi.actions import vm_devices
    from xapi.xenops.server import XenopsError
    device = vm_devices.linux_device(vbd_rec["userdevice"], vm_devices.is_hvm(vm_rec)) \
        if str(vbd_rec["userdevice"]).isdigit() else vbd_rec["userdevice"]
    try:
        await vm_devices.xenops_for_vm(app, vm).call("VBD.set_media", vm_rec["uuid"],
                                                     {"device": device, "params": params})
    except XenopsError as e:
        log.warning("VM %s: backend of %s not updated: %s", vm_rec["uuid"], device, e)


async def _copy_disk(ctx, session, vm: str, vbd: str | None, vdi: str, sr: str) -> str:
    """A disk of a VM that doesn't run: a copy on `sr` takes its place (VBD.VDI, or suspend_VDI)."""
    from xapi.actions import vdi as vdi_actions
    db = ctx.app.db
    dst = await vdi_actions.copy(ctx, session, vdi, sr)
    if vbd is None:
        db.table("VM").set_field(vm, "suspend_VDI", dst)
    else:
        db.table("VBD").set_field(vbd, "VDI", dst)
    return dst


async def _move(ctx, session, vm: str, moves, on_progress) -> dict[str, str]:
    """Moves the disks one after the other (mirrored while the VM runs, copied otherwise); the
    source VDIs of the moved ones are destroyed at the end. vdi -> new vdi."""
    from xapi.actions import vdi as vdi_actions
    if _running[0] >= MAX_MIGRATES:
        raise XapiError("TOO_MANY_STORAGE_MIGRATES", str(MAX_MIGRATES))
    _running[0] += 1
    app = ctx.app
    done: dict[str, str] = {}
    try:
        for i, (vbd, vdi, sr) in enumerate(moves):
            def progress(p, i=i):
                on_progress(min(0.99, (i + p) / len(moves)))
            rec = app.db.table("VM").get(vm)
            if rec["power_state"] == "Running":
                done[vdi] = await _move_disk(ctx, session, rec, vbd, vdi, sr, progress)
            else:
                done[vdi] = await _copy_disk(ctx, session, vm, vbd, vdi, sr)
                progress(1.0)
    finally:
        _running[0] -= 1
        for vdi in done:                # no longer used by anyone
            try:
                await vdi_actions.destroy(ctx, session, vdi)
            except Exception as e:  # noqa: BLE001 - the moved disk is what matters
                log.warning("source VDI %s of a storage migration not destroyed: %s", vdi, e)
    return done


# -- the messages ---------------------------------------------------------------------------------------
async def migrate_send(ctx, session, vm, dest, live, vdi_map, vif_map, options=None, vgpu_map=None,
                       vdi_format_map=None):
    from xapi.actions import vm as vm_actions, vm_migrate
    app = ctx.app
    db = app.db
    rec = vm_actions._rec(db, vm)
    host = _dest_host(app, dest)
    await app.storage.ready()

    async def body(rec, progress):
        moves = _check_map(app, vm, host, vdi_map or {})
        _check_host(app, vm, rec, host)
        await _move(ctx, session, vm, moves, progress)
    await vm_actions._operation(ctx, vm, "migrate_send", body)
    rec = db.table("VM").get(vm)
    if rec["power_state"] == "Running" and host != rec["resident_on"]:
        await vm_migrate.pool_migrate(ctx, session, vm, host, {"live": "true" if live else "false"})
    return vm


async def vdi_pool_migrate(ctx, session, vdi, sr, options=None):
    from xapi.actions import vm as vm_actions
    app = ctx.app
    db = app.db
    vdis = db.table("VDI")
    if type(vdi) is not str or vdi not in vdis:
        raise XapiError("HANDLE_INVALID", "VDI", vdi)
    if type(sr) is not str or sr not in db.table("SR"):
        raise XapiError("HANDLE_INVALID", "SR", sr)
    vbds, vms = db.table("VBD"), db.table("VM")
    using = [b for b in vdis.get_field(vdi, "VBDs") or [] if b in vbds and vbds.get_field(b, "VM") in vms]
    if not using:
        raise XapiError("VDI_NEEDS_VM_FOR_MIGRATE", vdi)
    vbd = using[0]
    vm = vbds.get_field(vbd, "VM")
    power = vms.get_field(vm, "power_state")
    if power != "Running":
        raise XapiError("VM_BAD_POWER_STATE", vm, "running", power.lower())
    await app.storage.ready()
    host = _host_seeing(app, vm, vdi, sr)
    result: dict[str, str] = {}

    async def body(rec, progress):
        moves = _check_map(app, vm, host, {vdi: sr})
        _check_host(app, vm, rec, host)
        result.update(await _move(ctx, session, vm, moves, progress))
    await vm_actions._operation(ctx, vm, "migrate_send", body)
    rec = vms.get(vm)
    if rec["power_state"] == "Running" and host != rec["resident_on"]:
        from xapi.actions import vm_migrate
        await vm_migrate.pool_migrate(ctx, session, vm, host, {"live": "true"})
    return result.get(vdi, vbds.get_field(vbd, "VDI") if vbd in vbds else vdi)


def _host_seeing(app, vm: str, vdi: str, sr: str) -> str:
    """Where the VM runs when it can see the VDI's new SR and the SRs of its other disks, else a
    host that can (xapi's vdi_pool_migrate: the VM then moves there); NO_HOSTS_AVAILABLE if none."""
    from xapi.actions import vm as vm_actions
    db = app.db
    vdis = db.table("VDI")
    needed = {sr} | {vdis.get_field(v, "SR") for _, v in _disks(db, vm) if v != vdi}
    here = vm_actions.home(app, db.table("VM").get(vm))
    hosts = db.table("host")
    for host in [here] + sorted(h for h in hosts.refs() if h != here):
        if all(_sr_sees(db, s, host) for s in needed) and (host == here or hosts.get_field(host, "enabled")):
            return host
    raise XapiError("NO_HOSTS_AVAILABLE")
