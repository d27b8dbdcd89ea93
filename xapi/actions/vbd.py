"""VBD: create with xapi's checks, plug/unplug into a running VM, insert/eject of CDs, destroy
(xapi_vbd.ml, xapi_vbd_helpers.ml).

allowed_operations follows xapi's valid_operations table: one operation at a time, plug/unplug only
while the VM runs (and, for an HVM guest, once it has PV drivers; never for its CD drives),
insert/eject only on CD drives of a VM that is not suspended.  Hotplug goes through xenopsd on this
host; the disk itself through the storage access layer (xapi.actions.vm_devices).
"""
from __future__ import annotations

import asyncio
import re

from xapi.actions import records, vm_devices
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert as db_insert
from xapi.forwarding import locks

ALL_OPS = ("attach", "eject", "unplug", "unplug_force", "insert", "plug", "pause", "unpause")
_VDI_TYPES = ("system", "user", "ephemeral", "suspend", "crashdump", "metadata")
_NAMED = re.compile(r"^(sd[a-p]|xvd[a-p]|hd[a-p]|fd[ab])(\d*)$")


def _rec(db, ref) -> dict:
    try:
        return db.table("VBD").get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "VBD", ref) from None


# -- allowed operations ----------------------------------------------------------------------------
def valid_operations(db, ref: str, sharing_checks: bool = True) -> locks.Verdicts:
    """op -> the error xapi would raise for it (a list), or None."""
    rec = db.table("VBD").get(ref)
    table = locks.Verdicts(ALL_OPS)
    block = table.block
    current = list((rec.get("current_operations") or {}).values())
    if current:
        block(["OTHER_OPERATION_IN_PROGRESS", "VBD", ref, current[0]],
              [op for op in ALL_OPS if op not in ("pause", "unpause")])
    if not rec["unpluggable"]:
        block(["VBD_NOT_UNPLUGGABLE", ref], ("unplug", "unplug_force"))
    if rec["type"] != "CD":
        block(["VBD_NOT_REMOVABLE_MEDIA", ref], ("insert", "eject"))
    if rec["empty"]:
        block(["VBD_IS_EMPTY", ref], ("eject",))
    else:
        block(["VBD_NOT_EMPTY", ref], ("insert",))
    vm_ref = rec["VM"]
    vms = db.table("VM")
    vm = vms.get(vm_ref) if vm_ref in vms else None
    power = vm["power_state"] if vm else "Halted"
    if power == "Running":
        if rec["currently_attached"]:
            block(["DEVICE_ALREADY_ATTACHED", ref], ("plug",))
        else:
            block(["DEVICE_ALREADY_DETACHED", ref], ("unplug", "unplug_force"))
    else:
        ops = ("plug", "unplug", "unplug_force") + (() if power == "Paused" else ("pause", "unpause"))
        block(["VM_BAD_POWER_STATE", vm_ref, "Running", power], ops)
    for op in (vm or {}).get("current_operations", {}).values():
        if op in ("clean_shutdown", "hard_shutdown", "suspend", "pause"):
            block(["OPERATION_NOT_ALLOWED", f"Current operation on VM:{vm_ref} is {op}"], ("plug", "unplug"))
    if vm and power == "Running" and vm_devices.is_hvm(vm):
        plug_ops = ("plug", "unplug", "unplug_force")
        gm = vm.get("guest_metrics")
        gms = db.table("VM_guest_metrics")
        if gm not in gms or not gms.get_field(gm, "PV_drivers_detected"):
            block(["VM_MISSING_PV_DRIVERS", vm_ref], plug_ops)
        if rec["type"] == "CD":
            block(["OPERATION_NOT_ALLOWED", "HVM CDROMs cannot be hotplugged/unplugged, only inserted or ejected"],
                  plug_ops)
    if rec["type"] == "CD" and power == "Suspended":
        block(["VM_BAD_POWER_STATE", vm_ref, "Halted, Running", "Suspended"], ("insert", "eject"))
    vdis = db.table("VDI")
    if not rec["empty"] and rec["VDI"] in vdis:
        vdi = vdis.get(rec["VDI"])
        if not vdi.get("managed", True):
            block(["VDI_NOT_MANAGED", ref], ALL_OPS)
        vdi_ops = [op for op in (vdi.get("current_operations") or {}).values() if op not in ("mirror", "copy")]
        if vdi_ops:
            block(["OTHER_OPERATION_IN_PROGRESS", "VDI", rec["VDI"], vdi_ops[0]], ("attach", "plug", "insert"))
        if not rec["currently_attached"] and sharing_checks:
            _sharing(db, ref, rec, vdi, block)
    return table


def _sharing(db, ref: str, rec: dict, vdi: dict, block) -> None:
    vbds, vms = db.table("VBD"), db.table("VM")
    others = []
    for o in vdi.get("VBDs") or []:
        if o == ref or o not in vbds:
            continue
        orec = vbds.get(o)
        if orec["VM"] in vms and vms.get_field(orec["VM"], "power_state") == "Suspended":
            continue
        if orec["currently_attached"] or orec.get("current_operations"):
            others.append(orec)
    need_write = rec["mode"] == "RW"
    if not vdi["sharable"] and (any(o["mode"] == "RW" for o in others) or (need_write and others)):
        block(["VDI_IN_USE", rec["VDI"]], ("attach", "insert", "plug"))
    if need_write and vdi["read_only"]:
        block(["VDI_READONLY", rec["VDI"]], ("attach", "insert", "plug"))


def refresh_allowed_operations(db, ref: str) -> None:
    if ref in db.table("VBD"):
        locks.store_allowed(db, "VBD", ref, valid_operations(db, ref, sharing_checks=False).allowed())


def _assert(db, ref: str, op: str) -> dict:
    rec = _rec(db, ref)
    valid_operations(db, ref).check(op)
    return rec


def assert_attachable(ctx, session, self):
    _assert(ctx.app.db, self, "attach")
    return ""


# -- create / destroy ------------------------------------------------------------------------------
def valid_device(dev: str, type_: str) -> bool:
    if dev == "autodetect" or _NAMED.match(dev):
        return True
    if type_ == "Floppy":
        return False
    try:
        int(dev)
        return True
    except ValueError:
        return False


def disk_number(dev: str) -> int | None:
    """The disk a userdevice names: "1", "hdb", "xvdb" and "sdb" are all disk 1."""
    if str(dev).isdigit():
        return int(dev)
    m = _NAMED.match(str(dev))
    return ord(m.group(1)[-1]) - ord("a") if m else None


def _allowed_devices(vm: dict) -> list[int]:
    # xapi: the 4 IDE positions for HVM, then xvde.. ; a PV guest gets xvda..xvdp
    return list(range(16))


def _used(db, vm_ref: str) -> set:
    vbds = db.table("VBD")
    return {disk_number(vbds.get_field(r, "userdevice")) for r in db.table("VM").get_field(vm_ref, "VBDs") or []
            if r in vbds}


def create(ctx, session, args):
    db = ctx.app.db
    args = records.unmarshal("VBD", args)
    vm_ref, vdi_ref = args["VM"], args["VDI"]
    empty, type_, mode, userdevice = args["empty"], args["type"], args["mode"], args["userdevice"]
    vms, vdis = db.table("VM"), db.table("VDI")
    if type(vm_ref) is not str or vm_ref not in vms:
        raise XapiError("HANDLE_INVALID", "VM", vm_ref)
    if not empty:
        if vdi_ref not in vdis:
            raise XapiError("HANDLE_INVALID", "VDI", vdi_ref)
        vtype = vdis.get_field(vdi_ref, "type")
        if vtype not in _VDI_TYPES:
            raise XapiError("VDI_INCOMPATIBLE_TYPE", vdi_ref, vtype)
    if type_ == "CD" and mode != "RO":
        raise XapiError("VBD_CDS_MUST_BE_READONLY")
    if type_ != "CD" and empty:
        raise XapiError("VBD_NOT_REMOVABLE_MEDIA", "in constructor")
    if type_ == "CD" and not empty:
        _assert_iso(db, vdi_ref)
    if mode == "RW" and vdi_ref in vdis and vdis.get_field(vdi_ref, "read_only"):
        raise XapiError("VDI_READONLY", vdi_ref)
    for op in (vms.get_field(vm_ref, "current_operations") or {}).values():
        if op in ("migrate_send", "pool_migrate"):
            raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref, op)
    used = _used(db, vm_ref)
    free = [n for n in _allowed_devices(vms.get(vm_ref)) if n not in used]
    if not valid_device(userdevice, type_) or (userdevice == "autodetect" and not free):
        raise XapiError("INVALID_DEVICE", userdevice)
    if userdevice == "autodetect":
        userdevice = str(free[0])
    if disk_number(userdevice) in used:
        raise XapiError("DEVICE_ALREADY_EXISTS", userdevice)
    from xapi import datamodel as dm
    from xapi.actions import accessors
    generic = accessors.accessor(dm.CLASSES["VBD"].messages["create"], db)
    ref = generic(ctx, session, {**args, "userdevice": userdevice, "type": type_, "mode": mode, "empty": empty,
                                 "VDI": NULL_REF if empty else vdi_ref, "currently_attached": False,
                                 "device": ""})
    metrics = db_insert(db, "VBD_metrics", io_read_kbs=0.0, io_write_kbs=0.0)
    db.table("VBD").set_field(ref, "metrics", metrics)
    refresh_allowed_operations(db, ref)
    return ref


def _assert_iso(db, vdi_ref: str) -> None:
    sr = db.table("VDI").get_field(vdi_ref, "SR")
    ct = db.table("SR").get_field(sr, "content_type") if sr in db.table("SR") else ""
    if ct != "iso":
        raise XapiError("VDI_IS_NOT_ISO", vdi_ref, ct)


def destroy(ctx, session, self):
    db = ctx.app.db
    rec = _rec(db, self)
    if rec["currently_attached"]:
        vm_uuid = db.table("VM").get_field(rec["VM"], "uuid") if rec["VM"] in db.table("VM") else ""
        raise XapiError("OPERATION_NOT_ALLOWED", f"VBD '{rec['uuid']}' still attached to '{vm_uuid}'")
    metrics = db.table("VBD_metrics")
    if rec.get("metrics") in metrics:
        metrics.remove(rec["metrics"])
    db.table("VBD").remove(self)
    return ""


def set_mode(ctx, session, self, value):
    db = ctx.app.db
    rec = _rec(db, self)
    power = db.table("VM").get_field(rec["VM"], "power_state")
    if power != "Halted":
        raise XapiError("VM_BAD_POWER_STATE", rec["VM"], "Halted", power)
    value = {"ro": "RO", "rw": "RW"}.get(str(value).lower())
    if value is None:
        raise XapiError("FIELD_TYPE_ERROR", "value")
    db.table("VBD").set_field(self, "mode", value)
    refresh_allowed_operations(db, self)
    return ""


# -- the operations on a VM's drive -----------------------------------------------------------------
def _operation(ctx, ref: str, op: str, body):
    return vm_devices.device_operation(ctx, "VBD", ref, op, body, _assert, refresh_allowed_operations)


def _vm(db, rec: dict) -> dict:
    return db.table("VM").get(rec["VM"])


async def plug(ctx, session, self):
    app = ctx.app

    async def body(rec):
        vm = _vm(app.db, rec)
        device = await vm_devices.attach_vbd(app, vm, self)
        try:
            await vm_devices.xenops_for_vm(app, rec["VM"]).call("VBD.plug", vm["uuid"], device)
        except BaseException:
            await asyncio.shield(vm_devices.release_vbd(app, vm["uuid"], self))
            raise
        app.db.table("VBD").update(self, {"currently_attached": True, "device": device["device"]})
    await _operation(ctx, self, "plug", body)
    return ""


def _unplug(op: str, force: bool):
    async def call(ctx, session, self):
        app = ctx.app

        async def body(rec):
            vm = _vm(app.db, rec)
            device = vm_devices.linux_device(rec["userdevice"], vm_devices.is_hvm(vm)) \
                if str(rec["userdevice"]).isdigit() else rec["device"]
            await vm_devices.xenops_for_vm(app, rec["VM"]).call("VBD.unplug", vm["uuid"], device, force)
            await vm_devices.release_vbd(app, vm["uuid"], self)
        await _operation(ctx, self, op, body)
        return ""
    call.__name__ = op
    return call


unplug = _unplug("unplug", False)
unplug_force = _unplug("unplug_force", True)


async def insert(ctx, session, vbd, vdi):
    app = ctx.app
    db = app.db
    rec = _rec(db, vbd)
    if vdi not in db.table("VDI"):
        raise XapiError("HANDLE_INVALID", "VDI", vdi)
    power = db.table("VM").get_field(rec["VM"], "power_state")
    if power == "Suspended":
        raise XapiError("VM_BAD_POWER_STATE", rec["VM"], "Halted, Running", "Suspended")
    if rec["type"] != "CD":
        raise XapiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    if not rec["empty"]:
        raise XapiError("VBD_NOT_EMPTY", vbd)
    _assert_iso(db, vdi)
    if not db.table("VDI").get_field(vdi, "managed"):
        raise XapiError("VDI_NOT_MANAGED", vdi)

    async def body(rec):
        table = db.table("VBD")
        table.update(vbd, {"VDI": vdi, "empty": False})
        if power != "Running" or not rec["currently_attached"]:
            return
        vm = _vm(db, rec)
        try:
            device = await vm_devices.attach_vbd(app, vm, vbd)
            await vm_devices.xenops_for_vm(app, rec["VM"]).call("VBD.set_media", vm["uuid"], device)
        except BaseException:
            await asyncio.shield(vm_devices.release_vbd(app, vm["uuid"], vbd))
            if vbd in table:
                table.update(vbd, {"VDI": NULL_REF, "empty": True, "currently_attached": True})
            raise
    await _operation(ctx, vbd, "insert", body)
    return ""


async def eject(ctx, session, vbd):
    app = ctx.app
    db = app.db
    rec = _rec(db, vbd)
    if rec["type"] != "CD":
        raise XapiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    if rec["empty"]:
        raise XapiError("VBD_IS_EMPTY", vbd)
    power = db.table("VM").get_field(rec["VM"], "power_state")
    if power == "Suspended":
        raise XapiError("VM_BAD_POWER_STATE", rec["VM"], "Halted, Running", "Suspended")

    async def body(rec):
        vm = _vm(db, rec)
        if power == "Running" and rec["currently_attached"]:
            device = vm_devices.linux_device(rec["userdevice"], vm_devices.is_hvm(vm))
            xenops = vm_devices.xenops_for_vm(app, rec["VM"])
            await xenops.call("VBD.set_media", vm["uuid"], {"device": device, "params": ""})
            await vm_devices.release_vbd(app, vm["uuid"], vbd)
            db.table("VBD").set_field(vbd, "currently_attached", True)     # the drive stays, empty
        db.table("VBD").update(vbd, {"VDI": NULL_REF, "empty": True})
    await _operation(ctx, vbd, "eject", body)
    return ""
