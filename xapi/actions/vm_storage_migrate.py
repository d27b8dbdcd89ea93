"""Storage motion inside the pool: VDI.pool_migrate, VM.migrate_send, VM.assert_can_migrate and
host.migrate_receive (xapi_vm_migrate.ml, xapi_host.ml migrate_receive).

`host.migrate_receive(host, network, options)` answers xapi's token map, which clients pass back
untouched as `dest`: ``SM`` and ``xenops`` (``http://<ip>/services/SM|xenops?session_id=<s>``, ip the
host's PIF on `network`), ``host`` (the host's ref), ``session_id`` (a new session as the caller's)
and ``master`` (``http://<coordinator>/``).

`VM.migrate_send(vm, dest, live, vdi_map, vif_map, options)` within the pool: every disk of the VM
whose VDI is mapped to another SR is moved while the VM runs. A new VDI is made on the target SR and
the host whose storage holds the VM's datapath (where its domain was built) mirrors every guest
write into it while the base copies (xapi.sm.mirror, xapi.sm.mirror_calls): the new VDI is opened
on that host when it sees the SR, else on the destination host (writes then go there over the
mirror's stream, xapi.sm.mirror_stream). A new VDI the datapath's host sees is switched to there (the datapath's
writes go to it, the VBD points at it, the domain's backend params follow). Then, when `dest` names
another host, the VM's memory goes there as VM.pool_migrate does; a new VDI on the destination
host is attached there before the memory moves, the source's datapath is released after (which
ends its mirror) and the new one activated there. The source VDIs are destroyed at the end. A
failure or a cancel before a switch stops the mirrors and destroys the new VDIs: the VM stays on its
disks; once a datapath switched, the migration runs to its end. The disks of a halted or suspended
VM (and its suspend image, when the destination can't see it) are copied (VDI.copy) and the copies
take their place.

`VDI.pool_migrate(vdi, sr, options)` is a migrate_send of the VM using the VDI with only that VDI
moving, to the host it runs on when that host sees the new SR, else to a host that does (as xapi);
it returns the new VDI's ref, as xapi.

Checks, in xapi's words: VDI_NEEDS_VM_FOR_MIGRATE [vdi] (no VBD of a running VM), VM_HAS_CHECKPOINT
[vm], VM_HAS_TOO_MANY_SNAPSHOTS [vm], VDI_NOT_IN_MAP [vdi] (every disk of the VM must be in the map;
one mapped to its own SR stays), VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION [vdi] (on_boot=reset),
SR_DOES_NOT_SUPPORT_MIGRATION [sr] (source or target SR without VDI_SNAPSHOT), VM_REQUIRES_SR [vm, sr]
(a target SR the destination host can't see), OPERATION_NOT_ALLOWED (options copy=true within a
pool), TOO_MANY_STORAGE_MIGRATES ["3"]. A destination in another pool is not reached: CANNOT_CONTACT_HOST.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF
from xapi.sm import rows

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


def _check_map(app, vm: str, host: str, vdi_map: dict, options: dict | None = None) -> list[tuple]:
    """The moves (vbd, vdi, sr) once xapi's checks pass (xapi_vm_migrate.ml migrate_send'): every
    disk of the VM is in the map (VDI_NOT_IN_MAP); a suspend image the destination can't see goes
    where the map says, else to the pool's suspend SR, the host's, or the default SR."""
    db = app.db
    vms, vdis, srs = db.table("VM"), db.table("VDI"), db.table("SR")
    rec = vms.get(vm)
    if str((options or {}).get("copy", "")).lower() == "true":
        raise XapiError("OPERATION_NOT_ALLOWED", "Copy mode is disallowed on intra pool storage migration, "
                        "try efficient alternatives e.g. VM.copy/clone.")
    snaps = [s for s in rec.get("snapshots") or [] if s in vms]
    if len(snaps) == 1 and vms.get_field(snaps[0], "power_state") == "Suspended":
        raise XapiError("VM_HAS_CHECKPOINT", vm)
    if len(snaps) > 1:
        raise XapiError("VM_HAS_TOO_MANY_SNAPSHOTS", vm)
    if not isinstance(vdi_map, dict):
        raise XapiError("INTERNAL_ERROR", "vdi_map is not a map")
    for vdi, sr in vdi_map.items():
        if vdi not in vdis:
            raise XapiError("HANDLE_INVALID", "VDI", vdi)
        if sr not in srs:
            raise XapiError("HANDLE_INVALID", "SR", sr)
    disks = _disks(db, vm)
    for _, vdi in disks:
        if vdi not in vdi_map:
            raise XapiError("VDI_NOT_IN_MAP", vdi)
    for _, vdi in disks:
        if vdis.get_field(vdi, "on_boot") == "reset":
            raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", vdi)
    targets = [(vbd, vdi, vdi_map[vdi]) for vbd, vdi in disks]
    suspend_vdi = rec.get("suspend_VDI")
    if rec["power_state"] == "Suspended" and suspend_vdi in vdis \
            and not _sr_sees(db, vdis.get_field(suspend_vdi, "SR"), host):
        target = vdi_map.get(suspend_vdi) or _suspend_sr(db, host)
        if target is None:
            raise XapiError("VDI_NOT_IN_MAP", suspend_vdi)
        targets.append((None, suspend_vdi, target))      # the memory image goes along (vbd None)
    moves = []
    for vbd, vdi, target in targets:
        if not _sr_sees(db, target, host):
            raise XapiError("VM_REQUIRES_SR", vm, target)
        src_sr = vdis.get_field(vdi, "SR")
        if target == src_sr:
            continue                    # within the pool, a VDI mapped to its own SR stays
        for sr in (src_sr, target):
            if not _supports(app, sr):
                raise XapiError("SR_DOES_NOT_SUPPORT_MIGRATION", sr)
        moves.append((vbd, vdi, target))
    return moves


def _suspend_sr(db, host: str) -> str | None:
    pools = db.table("pool")
    pool = next(iter(pools.refs()), None)
    candidates = [pools.get_field(pool, "suspend_image_SR") if pool else None,
                  db.table("host").get_field(host, "suspend_image_sr"),
                  pools.get_field(pool, "default_SR") if pool else None]
    return next((sr for sr in candidates if sr and sr in db.table("SR")), None)


def assert_can_migrate(ctx, session, vm, dest, live, vdi_map, vif_map, options=None, vgpu_map=None,
                       vdi_format_map=None):
    from xapi.actions import vm as vm_actions
    app = ctx.app
    rec = vm_actions._rec(app.db, vm)
    host = _dest_host(app, dest)
    err = vm_actions.check_operation({**rec, "current_operations": {}}, vm, "migrate_send")
    if err is not None:
        raise XapiError(*err)
    _check_map(app, vm, host, vdi_map or {}, options)
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
async def _on(app, host: str, name: str, *params):
    """An internal method (xapi.sm.mirror_calls) on `host`: here, or through the pool."""
    from xapi.pool import internal
    if host in (None, "", NULL_REF, app.host_ref):
        return await internal.METHODS[name](app, *params)
    return await app.pool.call(host, name, *params, app.db.generation)


class _Moves:
    """The disks of one migration: new VDIs made, mirrors running, VBDs switched."""

    def __init__(self, ctx, session, vm: str, dest: str) -> None:
        from xapi.actions import vm as vm_actions
        self.ctx, self.session, self.app, self.vm, self.dest = ctx, session, ctx.app, vm, dest
        self.resident = vm_actions.home(self.app, self.app.db.table("VM").get(vm))
        self.source = self.resident         # the host of the VM's datapaths (see _locate)
        self.mirrors: list[tuple[str, str, str, str | None]] = []   # (dp, vdi, new vdi, vbd)
        self.remote: set[str] = set()       # new VDIs opened on the destination host (not the source)
        self.attached: list[tuple[str, str]] = []   # (dp, new vdi) attached on the destination host
        self.done: dict[str, str] = {}      # vdi -> new vdi, switched (its source is to be destroyed)

    async def _create(self, src: dict, sr: str) -> str:
        from xapi.actions import vdi as vdi_actions
        creating = asyncio.ensure_future(vdi_actions.create(self.ctx, self.session, {
            "name_label": src["name_label"], "name_description": src["name_description"], "SR": sr,
            "virtual_size": src["virtual_size"], "type": src["type"], "sharable": src["sharable"],
            "read_only": False, "other_config": dict(src["other_config"]),
            "xenstore_data": dict(src["xenstore_data"]), "sm_config": {},
            "tags": list(src.get("tags") or [])}))
        try:
            dst = await asyncio.shield(creating)
        except asyncio.CancelledError:
            from xapi.sm.wait_out import wait_out
            await wait_out(creating)                    # however often cancelled: never left running
            if not creating.cancelled() and creating.exception() is None:
                with contextlib.suppress(Exception):    # created meanwhile: it goes again
                    await asyncio.shield(_delete(self.app, creating.result()))
            raise
        self.app.db.table("VDI").update(dst, {"allow_caching": src["allow_caching"], "on_boot": src["on_boot"]})
        return dst

    async def mirror(self, vbd: str, vdi: str, sr: str, progress) -> str:
        """A new VDI on `sr` that the running VM's writes reach from now on, its base copied."""
        from xapi.actions import vm_devices
        from xapi.sm import mirror_calls
        app = self.app
        db = app.db
        vm_rec = db.table("VM").get(self.vm)
        dp = vm_devices.datapath(vm_rec["uuid"], db.table("VBD").get_field(vbd, "userdevice"))
        src = db.table("VDI").get(vdi)
        await self._locate(dp, vdi)
        # the new VDI is opened where the datapath is when that host sees the SR, else at the
        # destination
        dst_host = self.source if _sr_sees(db, sr, self.source) else self.dest
        dst = await self._create(src, sr)
        self.mirrors.append((dp, vdi, dst, vbd))
        if dst_host != self.source:
            self.remote.add(dst)
        if self.source == app.host_ref:
            await mirror_calls.start(app, dp, vdi, dst_host, dst, progress)
        else:
            from xapi.actions import vm as vm_actions
            await app.pool.call(self.source, "mirror.start", dp, vdi, dst_host, dst,
                                vm_actions._current_task(app) or "", progress.span, app.db.generation)
            progress(1.0)
        return dst

    async def _locate(self, dp: str, vdi: str) -> None:
        """The host whose storage holds the VM's datapath: where it runs, else another (a VM that
        was migrated keeps its datapaths where it started)."""
        hosts = self.app.db.table("host")
        others = [self.app.host_ref] + sorted(h for h in hosts.refs() if h != self.app.host_ref)
        for host in [self.resident] + [h for h in others if h != self.resident]:
            try:
                if await _on(self.app, host, "mirror.holds", dp, vdi):
                    self.source = host
                    return
            except XapiError as e:
                log.info("host %s: datapath %s not checked: %s", host, dp, e.description)
        raise XapiError("VDI_NEEDS_VM_FOR_MIGRATE", vdi)

    async def switch_here(self) -> None:
        """The VM stays on its host: each mirrored datapath switches to its new VDI there. Once a
        datapath switched, the rest of the migration runs to its end, cancelled or not."""
        from xapi.actions import vm_devices
        db = self.app.db
        vbds = db.table("VBD")
        vm_rec = db.table("VM").get(self.vm)
        for dp, vdi, dst, vbd in [m for m in self.mirrors if m[2] not in self.remote]:
            vbd_rec = vbds.get(vbd)
            device = vm_devices.linux_device(vbd_rec["userdevice"], vm_devices.is_hvm(vm_rec)) \
                if str(vbd_rec["userdevice"]).isdigit() else vbd_rec["userdevice"]
            call = asyncio.ensure_future(_on(self.app, self.source, "mirror.switch", dp, vdi, dst,
                                             vbd_rec["mode"] == "RW", vm_rec["uuid"], device))
            while True:
                try:
                    await asyncio.shield(call)
                    break
                except asyncio.CancelledError:
                    if call.done():
                        raise
                    asyncio.current_task().uncancel()   # each cancel, however many: the switch ends
            self._switched(dp, vdi, dst, vbd)

    def _switched(self, dp, vdi, dst, vbd) -> None:
        self.mirrors.remove((dp, vdi, dst, vbd))
        self.app.db.table("VBD").set_field(vbd, "VDI", dst)
        self.done[vdi] = dst
        rows.refresh_vdi(self.app, dst)

    async def before_move(self) -> None:
        """The VM goes to the destination host, where the new VDIs its source host can't see are:
        the VBDs name them and they are attached there for the VM's datapaths (writes still go to the
        source's disks and their mirrors until the memory has moved)."""
        vbds = self.app.db.table("VBD")
        for dp, vdi, _, _ in self.mirrors:      # each still mirrored, every write on its destination
            await _on(self.app, self.source, "mirror.check", dp, vdi)
        for dp, _, dst, vbd in self.mirrors:
            vbds.set_field(vbd, "VDI", dst)
            await _on(self.app, self.dest, "mirror.attach", dp, dst, vbds.get_field(vbd, "mode") == "RW")
            self.attached.append((dp, dst))

    async def after_move(self) -> None:
        """The memory moved: the source's datapaths released (which ends their mirrors), the new
        VDIs activated on the destination, where the guest's writes go on."""
        for dp, vdi, dst, vbd in list(self.mirrors):
            # the domain runs on the destination already: a failure here is reported, not undone
            try:
                await _on(self.app, self.source, "mirror.release", dp, vdi)
            except Exception as e:  # noqa: BLE001
                log.error("releasing %s of %s on the source failed: %s", dp, vdi, e)
            try:
                await _on(self.app, self.dest, "mirror.activate", dp, dst)
            except Exception as e:  # noqa: BLE001
                log.error("activating %s of %s on the destination failed: %s", dp, dst, e)
            self._switched(dp, vdi, dst, vbd)
        if self.attached:
            from xapi.actions import vm_devices
            vm_devices._holders(self.app)[self.vm] = self.dest   # its disks are released there now
        self.attached.clear()

    async def undo(self) -> None:
        """Mirrors stopped, VBDs back on their VDIs, the new VDIs removed."""
        vbds = self.app.db.table("VBD")
        for dp, dst in self.attached:
            with contextlib.suppress(Exception):
                await _on(self.app, self.dest, "mirror.release", dp, dst)
        self.attached.clear()
        for dp, vdi, dst, vbd in reversed(self.mirrors):
            if vbd in vbds and vbds.get_field(vbd, "VDI") == dst:
                vbds.set_field(vbd, "VDI", vdi)
            try:
                await _on(self.app, self.source, "mirror.stop", dp)
            except Exception as e:  # noqa: BLE001 - its datapath goes with the VM's
                log.warning("stopping the mirror of %s failed: %s", dp, e)
            await _delete(self.app, dst)
        self.mirrors.clear()

    async def destroy_sources(self) -> None:
        from xapi.actions import vdi as vdi_actions
        for vdi in self.done:                # no longer used by anyone
            try:
                await vdi_actions.destroy(self.ctx, self.session, vdi)
            except Exception as e:  # noqa: BLE001 - the moved disk is what matters
                log.warning("source VDI %s of a storage migration not destroyed: %s", vdi, e)


async def _delete(app, vdi: str) -> None:
    if vdi not in app.db.table("VDI") or app.storage.access.closed:
        return
    sr = app.db.table("VDI").get_field(vdi, "SR")
    try:
        await app.storage.vdi_command(vdi, "vdi_delete")
        rows.destroy_vdi_row(app.db, vdi)
        rows.refresh_sr(app, sr)
    except Exception as e:  # noqa: BLE001 - the original error matters more
        log.warning("could not remove the mirror's VDI %s: %s", vdi, e)


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


async def _migrate(ctx, session, vm: str, host: str, vdi_map: dict, options, live: bool) -> dict[str, str]:
    """migrate_send within the pool: the disks move (mirrored while the VM runs, copied otherwise),
    then the VM goes to `host` if it runs elsewhere. vdi -> new vdi."""
    from xapi.actions import vm as vm_actions, vm_migrate
    app = ctx.app
    if _running[0] >= MAX_MIGRATES:
        raise XapiError("TOO_MANY_STORAGE_MIGRATES", str(MAX_MIGRATES))
    _running[0] += 1
    moves = _Moves(ctx, session, vm, host)
    to_move = [False]
    try:
        async def body(rec, progress):
            work = _check_map(app, vm, host, vdi_map, options)
            _check_host(app, vm, rec, host)
            for i, (vbd, vdi, sr) in enumerate(work):
                def part(p, i=i):
                    progress(min(0.99, (i + p) / len(work)))
                part.span = (i / len(work), 1 / len(work))    # for a mirror on another host
                if rec["power_state"] != "Running":
                    moves.done[vdi] = await _copy_disk(ctx, session, vm, vbd, vdi, sr)
                else:
                    await moves.mirror(vbd, vdi, sr, part)
            if rec["power_state"] == "Running":
                await moves.switch_here()       # the new VDIs the VM's host sees
                to_move[0] = host != moves.resident
        try:
            await vm_actions._operation(ctx, vm, "migrate_send", body)
            if to_move[0] or moves.mirrors:     # (the mirrors left are into the destination host)
                await moves.before_move()
                if to_move[0]:
                    await vm_migrate.pool_migrate(ctx, session, vm, host, {"live": "true" if live else "false"})
                await asyncio.shield(moves.after_move())
        except BaseException:
            await asyncio.shield(moves.undo())
            raise
        finally:
            await asyncio.shield(moves.destroy_sources())
    finally:
        _running[0] -= 1
    return moves.done


# -- the messages ---------------------------------------------------------------------------------------
async def migrate_send(ctx, session, vm, dest, live, vdi_map, vif_map, options=None, vgpu_map=None,
                       vdi_format_map=None):
    from xapi.actions import vm as vm_actions
    app = ctx.app
    vm_actions._rec(app.db, vm)
    host = _dest_host(app, dest)
    await app.storage.ready()
    await _migrate(ctx, session, vm, host, vdi_map or {}, options, bool(live))
    return vm


async def vdi_pool_migrate(ctx, session, vdi, sr, options=None):
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
    # the map is complete: the VM's other disks stay where they are
    full = {v: vdis.get_field(v, "SR") for _, v in _disks(db, vm)}
    full[vdi] = sr
    done = await _migrate(ctx, session, vm, host, full, {}, True)
    return done.get(vdi, vbds.get_field(vbd, "VDI") if vbd in vbds else vdi)


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


# its messages of other classes (xapi.actions.EXTRA_MODULES); the VM's are found by name
HOST_MESSAGES = {"migrate_receive": migrate_receive}
VDI_MESSAGES = {"pool_migrate": vdi_pool_migrate}
