"""A VM's disks and network interfaces around its domain (xapi_xenops.ml's MD.of_vbd / of_vif and
the storage side of VM start and shutdown).

Before a domain is built, every non-empty VBD's VDI is attached and activated through the storage
access layer (RW for mode RW, RO otherwise), on the datapath ``vbd/<vm-uuid>/<userdevice>`` (the
domain id is not known yet when the disks are attached); what comes back is the device list that
goes to xenopsd.  When the domain is gone (shutdown, a guest that halted itself, a failed start,
suspend) `release_vbds` releases every datapath of the VM and clears VBD.currently_attached.
This is done by the storage of the host that runs the domain: this host's access layer, or a pool
member's through internal calls (``storage.attach``, ``storage.release``, ``storage.release_vm``).

A VDI is in use when another VM's VBD holds it attached and either side wants it read-write
(VDI_IN_USE [vdi], xapi's `attach` check of each VBD), unless the VDI is sharable.
"""
from __future__ import annotations

import asyncio
import logging

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF
from xapi.forwarding import locks
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.vm_devices")


def datapath(vm_uuid: str, userdevice: str) -> str:
    return f"vbd/{vm_uuid}/{userdevice}"


def is_hvm(vm: dict) -> bool:
    dt = vm.get("domain_type")
    return dt == "hvm" or (dt in ("", "unspecified", None) and bool(vm.get("HVM_boot_policy")))


def linux_device(userdevice: str, hvm: bool) -> str:
    """Device_number.of_string + to_linux_device: hdX for the first four of an HVM guest (the IDE
    bus), xvdX otherwise."""
    n = int(userdevice)
    letters = ""
    i = n
    while True:
        letters = chr(ord("a") + i % 26) + letters
        i = i // 26 - 1
        if i < 0:
            break
    return ("hd" if hvm and n < 4 else "xvd") + letters


def _vbd_refs(db, vm_ref: str) -> list[str]:
    vbds = db.table("VBD")
    refs = [r for r in (db.table("VM").get_field(vm_ref, "VBDs") or []) if r in vbds]
    return sorted(refs, key=lambda r: _order(vbds.get_field(r, "userdevice")))


def _order(userdevice: str):
    return (0, int(userdevice)) if str(userdevice).isdigit() else (1, str(userdevice))


def _storage_host(app, host) -> str | None:
    """`host` when it is another pool host (whose storage access layer holds the VM's disks: internal
    calls, xapi.pool.methods), None for this one."""
    if host in (None, "", NULL_REF, app.host_ref) or host not in app.db.table("host"):
        return None
    return host


def _vm_host(app, vm_uuid: str) -> str | None:
    vms = app.db.table("VM")
    refs = vms.find("uuid", vm_uuid)
    if not refs:
        return None
    return _holders(app).get(refs[0]) or vms.get_field(refs[0], "resident_on")


def _holders(app) -> dict:
    """VM ref -> the host whose storage holds its disks (where its domain was built or live-migrated
    to; storage motion moves them too); a VM missing here (the coordinator restarted) has them where
    it runs."""
    holders = getattr(app, "vm_disk_hosts", None)
    if holders is None:
        holders = app.vm_disk_hosts = {}
    return holders


async def attach_vbd(app, vm: dict, vbd_ref: str, host: str | None = None) -> dict:
    """Attaches and activates one VBD's VDI on `host` (default: where the VM runs); its xenopsd
    device description."""
    db = app.db
    vbd = db.table("VBD").get(vbd_ref)
    hvm = is_hvm(vm)
    device = {"device": linux_device(vbd["userdevice"], hvm), "userdevice": vbd["userdevice"],
              "mode": "w" if vbd["mode"] == "RW" else "r",
              "device_type": "cdrom" if vbd["type"] == "CD" else "disk",
              "bootable": bool(vbd["bootable"]), "removable": vbd["type"] == "CD", "params": ""}
    if vbd["empty"] or vbd["VDI"] in (NULL_REF, "") or vbd["VDI"] not in db.table("VDI"):
        return device
    rw = vbd["mode"] == "RW"
    from xapi.actions import vbd as vbd_actions
    err = vbd_actions.valid_operations(db, vbd_ref)["attach"]   # xapi marks each VBD `attach`
    if err is not None and err[0] not in ("VM_BAD_POWER_STATE", "OTHER_OPERATION_IN_PROGRESS"):
        raise XapiError(*err)
    dp = datapath(vm["uuid"], vbd["userdevice"])
    remote = _storage_host(app, host or _vm_host(app, vm["uuid"]))
    if remote is not None:
        info = await app.pool.call(remote, "storage.attach", dp, vbd["VDI"], rw, app.db.generation) or {}
    else:
        access = app.storage.access
        await access.attach(dp, vbd["VDI"], rw)
        info = await access.activate(dp, vbd["VDI"]) or {}
    device["params"] = str(info.get("params", ""))
    device["sectors"] = int(db.table("VDI").get_field(vbd["VDI"], "virtual_size")) // 512
    return device


async def attach_vbds(app, vm_ref: str, host: str | None = None) -> list[dict]:
    """Attaches and activates every non-empty VBD of the VM on `host` (default this one); the device
    list for xenopsd's VM.add ({"device", "params", "mode", "device_type", ...}), empty drives
    included.  On failure, what was attached is released again."""
    db = app.db
    refs = _vbd_refs(db, vm_ref)
    if not refs:
        return []
    vm = db.table("VM").get(vm_ref)
    devices = []
    host = host or app.host_ref
    _holders(app)[vm_ref] = host
    try:
        for ref in refs:
            devices.append(await attach_vbd(app, vm, ref, host))
    except BaseException:
        await release_vbds(app, vm_ref, host)
        raise
    return devices


def vif_devices(db, vm_ref: str) -> list[dict]:
    """The VM's VIFs as xenopsd devices: {"devid", "mac", "bridge", "mtu"}."""
    vifs, nets = db.table("VIF"), db.table("network")
    out = []
    for ref in db.table("VM").get_field(vm_ref, "VIFs") or []:
        if ref not in vifs:
            continue
        v = vifs.get(ref)
        bridge = nets.get_field(v["network"], "bridge") if v["network"] in nets else ""
        out.append(vif_device(v, bridge))
    return sorted(out, key=lambda d: d["devid"])


def vif_device(vif: dict, bridge: str) -> dict:
    return {"devid": int(vif["device"]), "mac": vif["MAC"], "bridge": bridge, "mtu": int(vif["MTU"] or 1500)}


def mark_plugged(db, vm_ref: str, domid: int | None = None) -> None:
    """After the domain was built: every VBD and VIF is attached, VBD.device set."""
    vms = db.table("VM")
    vbd_refs, vif_refs = vms.get_field(vm_ref, "VBDs") or [], vms.get_field(vm_ref, "VIFs") or []
    if not vbd_refs and not vif_refs:
        return                          # the common case of a boot storm: nothing to mark
    hvm = is_hvm({"domain_type": vms.get_field(vm_ref, "domain_type"),
                  "HVM_boot_policy": vms.get_field(vm_ref, "HVM_boot_policy")})
    vbds = db.table("VBD")
    for ref in vbd_refs:
        if ref in vbds:
            dev = linux_device(vbds.get_field(ref, "userdevice"), hvm) \
                if str(vbds.get_field(ref, "userdevice")).isdigit() else ""
            _set(vbds, ref, {"currently_attached": True, "device": dev})
    vifs = db.table("VIF")
    for ref in vif_refs:
        if ref in vifs:
            _set(vifs, ref, {"currently_attached": True})
    refresh_operations(db, vm_ref)


def _set(table, ref: str, values: dict) -> None:
    old = table.get(ref)
    changed = {k: v for k, v in values.items() if old.get(k) != v}
    if changed:
        table.update(ref, changed)


async def release_vbd(app, vm_uuid: str, vbd_ref: str, host: str | None = None) -> None:
    """Releases one VBD's datapath on `host` (default: where the VM runs)."""
    db = app.db
    vbds = db.table("VBD")
    if vbd_ref not in vbds:
        return
    dp = datapath(vm_uuid, vbds.get_field(vbd_ref, "userdevice"))
    remote = _storage_host(app, host or _vm_host(app, vm_uuid))
    if remote is not None:
        await app.pool.call(remote, "storage.release", dp)
    else:
        await app.storage.access.destroy_dp(dp, allow_leak=True)
    if vbd_ref in vbds:
        _set(vbds, vbd_ref, {"currently_attached": False})


async def release_vbds(app, vm_ref: str, host: str | None = None) -> None:
    """Releases every datapath of the VM (also one whose VBD went away) on `host` (default: where it
    runs, else this host) and marks its VBDs and VIFs detached."""
    db = app.db
    vms = db.table("VM")
    if vm_ref not in vms:
        return
    holder = _holders(app).pop(vm_ref, None)
    await release_disks(app, vm_ref, holder or host or vms.get_field(vm_ref, "resident_on"))
    vbds = db.table("VBD")
    for ref in vms.get_field(vm_ref, "VBDs") or []:
        if ref in vbds:
            _set(vbds, ref, {"currently_attached": False})
    vifs = db.table("VIF")
    for ref in vms.get_field(vm_ref, "VIFs") or []:
        if ref in vifs:
            _set(vifs, ref, {"currently_attached": False})
    refresh_operations(db, vm_ref)


def _disks(db, vm_ref: str) -> list[tuple[str, str, bool]]:
    """(datapath, VDI, read-write) of each of the VM's VBDs with a disk."""
    vm_uuid = db.table("VM").get_field(vm_ref, "uuid")
    vbds, vdis = db.table("VBD"), db.table("VDI")
    out = []
    for ref in _vbd_refs(db, vm_ref):
        vbd = vbds.get(ref)
        if not vbd["empty"] and vbd["VDI"] in vdis:
            out.append((datapath(vm_uuid, vbd["userdevice"]), vbd["VDI"], vbd["mode"] == "RW"))
    return out


def disks_holder(app, vm_ref: str) -> str:
    """The host whose storage holds the VM's disks."""
    vms = app.db.table("VM")
    return _holders(app).get(vm_ref) or vms.get_field(vm_ref, "resident_on") or app.host_ref


async def migrate_prepare(app, vm_ref: str, host: str) -> bool:
    """Live migration, before the memory moves: the VM's disks attached (not activated) by the
    destination `host`'s storage, as xapi does; False (nothing to do) when that host holds them
    already. A failure releases what was attached there."""
    disks = _disks(app.db, vm_ref)
    if not disks:
        _holders(app).pop(vm_ref, None)     # nothing held: where it runs
        return False
    if disks_holder(app, vm_ref) == host:
        return False
    try:
        for dp, vdi, rw in disks:
            remote = _storage_host(app, host)
            if remote is not None:
                await app.pool.call(remote, "storage.attach", dp, vdi, rw, app.db.generation, False)
            else:
                await app.storage.access.attach(dp, vdi, rw)
    except BaseException:
        await asyncio.shield(release_disks(app, vm_ref, host, here=False))
        raise
    return True


async def migrate_commit(app, vm_ref: str, host: str) -> None:
    """Live migration, once the domain runs on `host`: the disks deactivated and detached where they
    were, then activated on `host`, which holds them from now on."""
    await release_disks(app, vm_ref, disks_holder(app, vm_ref), here=False)
    _holders(app)[vm_ref] = host
    for dp, vdi, _ in _disks(app.db, vm_ref):
        remote = _storage_host(app, host)
        if remote is not None:
            await app.pool.call(remote, "storage.activate", dp, vdi, app.db.generation)
        else:
            await app.storage.access.activate(dp, vdi)


async def release_disks(app, vm_ref: str, host: str, here: bool = True) -> None:
    """The VM's datapaths on `host` released, and (`here`) this host's if it holds some (the VBD
    rows stay)."""
    vm_uuid = app.db.table("VM").get_field(vm_ref, "uuid")
    if here or _storage_host(app, host) is None:
        await release_datapaths(app, vm_uuid)
    remote = _storage_host(app, host)
    if remote is None:
        return
    try:
        await app.pool.call(remote, "storage.release_vm", vm_uuid)
    except XapiError as e:      # that host keeps them as leaked; released at its next start
        log.warning("releasing the disks of VM %s on host %s failed: %s", vm_uuid, remote, e.description)


async def release_datapaths(app, vm_uuid: str) -> None:
    """Releases this host's datapaths of a VM's disks."""
    prefix = f"vbd/{vm_uuid}/"
    access = app.storage.access
    dps = {key.split(" ", 1)[1] for key in access.datapaths() if key.split(" ", 1)[1].startswith(prefix)}
    for dp in sorted(dps):
        try:
            await access.destroy_dp(dp, allow_leak=True)
        except Exception:  # noqa: BLE001 - a leaked datapath is retried later; the rest go on
            log.exception("releasing %s failed", dp)


def holds_devices(db, vm_ref: str) -> bool:
    """Whether some VBD or VIF of the VM is still marked attached (cheap: no storage call)."""
    vms = db.table("VM")
    vbds, vifs = db.table("VBD"), db.table("VIF")
    return any(r in vbds and vbds.get_field(r, "currently_attached") for r in vms.get_field(vm_ref, "VBDs") or []) \
        or any(r in vifs and vifs.get_field(r, "currently_attached") for r in vms.get_field(vm_ref, "VIFs") or [])


def refresh_operations(db, vm_ref: str) -> None:
    """allowed_operations of the VM's VBDs and VIFs (they follow its power state and PV drivers)."""
    from xapi.actions import vbd, vif
    vms = db.table("VM")
    if vm_ref in vms:
        for ref in vms.get_field(vm_ref, "VBDs") or []:
            vbd.refresh_allowed_operations(db, ref)
        for ref in vms.get_field(vm_ref, "VIFs") or []:
            vif.refresh_allowed_operations(db, ref)


async def device_operation(ctx, cls: str, ref: str, op: str, body, check, refresh):
    """`body(rec)` with `op` in the VBD's or VIF's current_operations (xapi.forwarding.locks);
    xenopsd's errors come out as xapi's."""
    async with locks.operation(ctx.app, cls, ref, op, check=check, refresh=refresh):
        try:
            return await body(ctx.app.db.table(cls).get(ref))
        except XenopsError as e:
            raise XapiError(e.code, *e.params) from None


def xenops_for_vm(app, vm_ref: str):
    """The xenopsd that runs the VM's domain: the one of the host it is resident on."""
    from xapi.actions import vm as vm_actions
    vms = app.db.table("VM")
    if vm_ref not in vms:
        return app.xenops
    return vm_actions.xenops_of(app, vm_actions.home(app, {"resident_on": vms.get_field(vm_ref, "resident_on")}))
