"""VM.clone, copy, snapshot, checkpoint and revert (xapi_vm_clone.ml, xapi_vm_snapshot.ml).

The disks go first, through the SR (VDI.clone for clone, VDI.copy for copy, VDI.snapshot for snapshot
and checkpoint; CDs keep their VDI, empty drives stay empty); if any fails, the ones made so far are
destroyed. Then the new VM record: the original's settings, with what xapi resets (uuid, name,
power state, suspend_VDI, resident_on, domid, blocked operations, HA, appliance, generation id,
other_config without default_template / xensource_internal, a new mac_seed unless a snapshot, the
base template's name kept when cloning a template). A snapshot is_a_template and is_a_snapshot, with
snapshot_of, snapshot_time and snapshot_info; it takes the original's parent and becomes the
original's parent. VBDs are copied onto the new disks (Disk VBDs get other_config:owner), VIFs with
new MACs (a snapshot keeps them). Checkpoint suspends a running VM, snapshots its disks and image and
resumes it. A snapshot keeps the original's record in snapshot_metadata (an XML-RPC value, as
Helpers.vm_to_string). Revert halts the VM (re-creating it from that record if it was destroyed),
replaces its disks, suspend image and VIFs with clones of the snapshot's, copies the recorded
settings back and leaves the VM in the snapshot's power state.
"""
from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib

from xapi import datamodel as dm
from xapi import rpc
from xapi.actions import vbd as vbd_actions
from xapi.actions import vdi as vdi_actions
from xapi.actions import vif as vif_actions
from xapi.actions import vm as vm_mod
from xapi.actions import vm_suspend
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, insert
from xapi.dispatch.convert import converter

log = logging.getLogger("xapi.vm_clone")

CLONE, COPY, SNAPSHOT, CHECKPOINT = "clone", "copy", "snapshot", "checkpoint"
# fields a new VM never takes from the original
_RESET = {"power_state", "allowed_operations", "current_operations", "suspend_VDI", "resident_on",
          "scheduled_to_be_resident_on", "domid", "domarch", "metrics", "guest_metrics", "blobs",
          "blocked_operations", "is_default_template", "is_a_snapshot", "snapshot_of", "snapshot_time",
          "snapshot_info", "snapshot_metadata", "transportable_snapshot_id", "parent", "ha_always_run",
          "protection_policy", "is_snapshot_from_vmpp", "is_vmss_snapshot", "snapshot_schedule",
          "appliance", "start_delay", "shutdown_delay", "order", "suspend_SR", "version", "generation_id",
          "requires_reboot", "pending_guidances", "pending_guidances_recommended", "pending_guidances_full",
          "uuid", "name_label", "is_a_template"}
# on revert, what stays the VM's own (xapi_vm_snapshot.ml extended_do_not_copy)
_REVERT_KEEP = {"uuid", "suspend_VDI", "power_state", "parent", "current_operations", "allowed_operations",
                "guest_metrics", "resident_on", "domid", "protection_policy", "snapshot_schedule",
                "scheduled_to_be_resident_on", "snapshots", "tags", "affinity", "name_label", "is_a_snapshot",
                "is_a_template", "is_default_template", "snapshot_of", "snapshot_time",
                "transportable_snapshot_id", "metrics", "snapshot_info", "snapshot_metadata", "blobs"}


# ... when the snapshot carries the original's record (snapshot_metadata: xapi_vm_snapshot.ml do_not_copy)
_METADATA_KEEP = {"uuid", "suspend_VDI", "power_state", "parent", "current_operations", "allowed_operations",
                  "guest_metrics", "resident_on", "domid", "protection_policy", "snapshot_schedule",
                  "scheduled_to_be_resident_on", "snapshots", "tags", "affinity", "metrics", "blobs",
                  "snapshot_metadata"}


def _is_ref_set(f) -> bool:
    return str(f.type).endswith("ref set")


_COPYABLE = tuple(n for n, f in dm.CLASSES["VM"].fields.items() if not _is_ref_set(f) and n not in _RESET)
_REVERTABLE = tuple(n for n, f in dm.CLASSES["VM"].fields.items()
                    if not _is_ref_set(f) and n not in _REVERT_KEEP)
_FROM_METADATA = tuple(n for n, f in dm.CLASSES["VM"].fields.items()
                       if not _is_ref_set(f) and n not in _METADATA_KEEP)
_CONVERT = {n: converter(f.type, n) for n, f in dm.CLASSES["VM"].fields.items()}


def metadata(ctx, vm: str) -> str:
    """Helpers.vm_to_string: the VM's record as an XML-RPC <value>, as the API shows it."""
    rec = vm_mod._accessor(ctx, "get_record")(ctx, None, vm)
    text = rpc.dumps((rec,), ints_as_strings=True).decode()
    return text[text.index("<value>"):text.rindex("</param>")]


def parse_metadata(text: str) -> dict:
    """The database values of a snapshot_metadata; fields that do not parse are left out."""
    try:
        (rec,), _ = rpc.loads(('<?xml version="1.0"?><methodResponse><params><param>' + text
                               + "</param></params></methodResponse>").encode())
    except (ValueError, TypeError):
        return {}
    out = {}
    for name, value in (rec.items() if isinstance(rec, dict) else ()):
        conv = _CONVERT.get(name)
        if conv is None and name not in _CONVERT:
            continue
        try:
            out[name] = conv(value) if conv is not None else value
        except XapiError:
            continue
    return out


# -- disks ------------------------------------------------------------------------------------------
async def _disk(ctx, session, op: str, vdi: str, sr: str | None, params: dict) -> str:
    if op == CLONE:
        return await vdi_actions.clone(ctx, session, vdi, params)
    if op == COPY:
        return await vdi_actions.copy(ctx, session, vdi, sr or ctx.app.db.table("VDI").get_field(vdi, "SR"))
    return await vdi_actions.snapshot(ctx, session, vdi, params)


async def _destroy_vdis(ctx, vdis) -> None:
    for vdi in vdis:
        if vdi in ctx.app.db.table("VDI"):
            try:
                await vdi_actions.destroy(ctx, None, vdi)
            except Exception as e:  # noqa: BLE001 - the original failure matters more
                log.warning("could not destroy %s while cleaning up: %s", vdi, e)


async def _clone_disks(ctx, session, op: str, vbds: list, sr, params: dict, progress) -> list:
    """[(vbd, new vdi, made by us)] in the order of `vbds`; on failure the new disks are destroyed."""
    db = ctx.app.db
    vbd_t, vdi_t = db.table("VBD"), db.table("VDI")
    sizes = [vdi_t.get_field(vbd_t.get_field(v, "VDI"), "virtual_size")
             if vbd_t.get_field(v, "VDI") in vdi_t else 0 for v in vbds]
    total, done, out = float(sum(sizes)) or 1.0, 0, []
    try:
        for vbd, size in zip(vbds, sizes):
            r = vbd_t.get(vbd)
            if r["empty"] or r["VDI"] not in vdi_t:
                out.append((vbd, NULL_REF, False))
            elif r["type"] == "CD":
                out.append((vbd, r["VDI"], False))
            else:
                out.append((vbd, await _disk(ctx, session, op, r["VDI"], sr, params), True))
            done += size
            progress(0.9 * done / total)
    except BaseException:
        await asyncio.shield(_destroy_vdis(ctx, [v for _, v, ours in out if ours]))
        raise
    return out


def _copy_vbd(db, vbd: str, vm: str, vdi: str) -> str:
    r = db.table("VBD").get(vbd)
    other = dict(r["other_config"])
    if r["type"] == "Disk":
        other.setdefault("owner", "")
    metrics = insert(db, "VBD_metrics", io_read_kbs=0.0, io_write_kbs=0.0)
    ref = insert(db, "VBD", VM=vm, VDI=vdi, empty=r["empty"] or vdi == NULL_REF, userdevice=r["userdevice"],
                 device=r["device"], bootable=r["bootable"], mode=r["mode"], type=r["type"],
                 unpluggable=r["unpluggable"], other_config=other, qos_algorithm_type=r["qos_algorithm_type"],
                 qos_algorithm_params=dict(r["qos_algorithm_params"]), currently_attached=False,
                 metrics=metrics)
    vbd_actions.refresh_allowed_operations(db, ref)
    return ref


def _copy_vif(db, vif: str, vm: str, preserve_mac: bool) -> str:
    r = db.table("VIF").get(vif)
    seed = db.table("VM").get_field(vm, "other_config").get("mac_seed", vm)
    mac = r["MAC"] if preserve_mac else vif_actions.gen_mac(int(r["device"]), seed)
    metrics = insert(db, "VIF_metrics", io_read_kbs=0.0, io_write_kbs=0.0)
    keep = {k: r[k] for k in ("device", "network", "MTU", "other_config", "qos_algorithm_type",
                              "qos_algorithm_params", "locking_mode", "ipv4_allowed", "ipv6_allowed")
            if k in r}
    ref = insert(db, "VIF", **keep, VM=vm, MAC=mac, MAC_autogenerated=not preserve_mac or r["MAC_autogenerated"],
                 currently_attached=False, metrics=metrics)
    vif_actions.refresh_allowed_operations(db, ref)
    return ref


def _copy_row(db, cls: str, ref: str) -> str:
    if ref in (None, "", NULL_REF) or ref not in db.table(cls):
        return NULL_REF
    row = {k: v for k, v in db.table(cls).get(ref).items() if k != "uuid"}
    return insert(db, cls, **row)


# -- the new record ----------------------------------------------------------------------------------
def _new_record(ctx, vm: str, op: str, new_name: str, power: str, snapshot_info: dict | None) -> str:
    db = ctx.app.db
    orig = db.table("VM").get(vm)
    snap = op in (SNAPSHOT, CHECKPOINT)
    other = dict(orig["other_config"])
    if not snap:
        other["mac_seed"] = str(uuidlib.uuid4())
    other.pop("default_template", None)
    other.pop("xensource_internal", None)
    if orig["is_a_template"] and "base_template_name" not in other:
        other["base_template_name"] = orig["name_label"]
    fields = {k: orig[k] for k in _COPYABLE}
    fields.update(
        name_label=new_name, power_state=power, is_a_template=snap or orig["is_a_template"],
        is_a_snapshot=snap, snapshot_of=vm if snap else NULL_REF,
        snapshot_metadata=metadata(ctx, vm) if snap else "",
        snapshot_info=snapshot_info if snapshot_info is not None else (
            {"disk-snapshot-type": "crash_consistent", "power-state-at-snapshot": orig["power_state"]}
            if snap else {}),
        parent=orig["parent"] if snap else NULL_REF, other_config=other, domid=-1,
        generation_id=_fresh_genid(orig["generation_id"]),
        metrics=_copy_row(db, "VM_metrics", orig["metrics"]),
        guest_metrics=_copy_row(db, "VM_guest_metrics", orig["guest_metrics"]))
    if snap:
        fields["snapshot_time"] = datetime_now()
    ref = insert(db, "VM", **fields)
    if snap:
        db.table("VM").set_field(vm, "parent", ref)
    return ref


def _fresh_genid(current: str) -> str:
    """Xapi_vm_helpers.fresh_genid: a VM without a generation id keeps none."""
    if current in ("", None):
        return ""
    return f"{uuidlib.uuid4().int >> 64}:{uuidlib.uuid4().int >> 64}"


async def clone_vm(ctx, session, vm: str, op: str, new_name: str, *, sr=None, ignore_vdis=(),
                   snapshot_info=None, progress=lambda p: None) -> str:
    """The shared body of clone, copy, snapshot and checkpoint (the VM is locked by the caller)."""
    db = ctx.app.db
    orig = db.table("VM").get(vm)
    power = orig["power_state"]
    if op == CHECKPOINT and power in ("Running", "Suspended"):
        new_power = "Suspended"
    elif op in (CLONE, COPY) and power == "Suspended":
        new_power = "Suspended"
    else:
        new_power = "Halted"
    vbds = [v for v in orig["VBDs"] if v in db.table("VBD")]
    if op in (SNAPSHOT, CHECKPOINT):
        vbds = [v for v in vbds if db.table("VBD").get_field(v, "VDI") not in ignore_vdis]
    vbds.sort(key=lambda v: str(db.table("VBD").get_field(v, "userdevice")))
    params = {"epochhint": str(uuidlib.uuid4())}
    disks = await _clone_disks(ctx, session, op, vbds, sr, params, progress)
    made: list[str] = []
    new = None
    try:
        suspend_vdi = NULL_REF
        original_image = orig["suspend_VDI"]
        if original_image in db.table("VDI") and op != SNAPSHOT:
            suspend_vdi = await _disk(ctx, session, op, original_image, sr, params)
            made.append(suspend_vdi)
        new = _new_record(ctx, vm, op, new_name, new_power, snapshot_info)
        for vbd, vdi, _ in disks:
            _copy_vbd(db, vbd, new, vdi)
        for vif in orig["VIFs"]:
            if vif in db.table("VIF"):
                _copy_vif(db, vif, new, preserve_mac=op in (SNAPSHOT, CHECKPOINT))
        db.table("VM").set_field(new, "suspend_VDI", suspend_vdi)
    except BaseException:
        if new is not None:
            _drop_vm(db, new)
        await asyncio.shield(_destroy_vdis(ctx, made + [v for _, v, ours in disks if ours]))
        raise
    vm_mod.refresh_allowed_operations(db, new)
    progress(1.0)
    return new


def _drop_vm(db, ref: str) -> None:
    for cls, field in (("VBD", "VBDs"), ("VIF", "VIFs")):
        for r in list(db.table("VM").get_field(ref, field) or []):
            if r in db.table(cls):
                db.table(cls).remove(r)
    db.table("VM").remove(ref)


async def _run(ctx, session, vm, op, new_name, **kw):
    out = {}

    async def body(rec, progress):
        out["ref"] = await clone_vm(ctx, session, vm, op, new_name, progress=progress, **kw)
    await vm_mod._operation(ctx, vm, op, body)
    return out["ref"]


async def clone(ctx, session, vm, new_name):
    return await _run(ctx, session, vm, CLONE, new_name)


async def copy(ctx, session, vm, new_name, sr):
    db = ctx.app.db
    if sr not in ("", NULL_REF):
        if sr not in db.table("SR"):
            raise XapiError("HANDLE_INVALID", "SR", sr)
        if db.table("SR").get_field(sr, "content_type") == "iso":
            raise XapiError("OPERATION_NOT_ALLOWED", "Cannot copy a VM's disks to an ISO SR")
    new = await _run(ctx, session, vm, COPY, new_name, sr=None if sr in ("", NULL_REF) else sr)
    vms = db.table("VM")
    if vms.get_field(vm, "is_a_snapshot") and vms.get_field(new, "power_state") != "Halted":
        # a copy of a checkpoint starts out halted (xapi halts it directly, template or not)
        await _destroy_vdis(ctx, [vms.get_field(new, "suspend_VDI")])
        vms.update(new, {"suspend_VDI": NULL_REF, "power_state": "Halted"})
        vm_mod.refresh_allowed_operations(db, new)
    return new


async def snapshot(ctx, session, vm, new_name, ignore_vdis=()):
    return await _run(ctx, session, vm, SNAPSHOT, new_name, ignore_vdis=tuple(ignore_vdis or ()))


def _assert_snapshot_capable(app, vm: str, rec: dict) -> None:
    """Checkpoint needs every SR holding the VM's disks (CDs aside) to snapshot VDIs."""
    vbds, vdis = app.db.table("VBD"), app.db.table("VDI")
    for vbd in rec["VBDs"]:
        if vbd in vbds and vbds.get_field(vbd, "type") != "CD" and vbds.get_field(vbd, "VDI") in vdis:
            sr = vdis.get_field(vbds.get_field(vbd, "VDI"), "SR")
            if not app.storage.has_capability(sr, "VDI_SNAPSHOT"):
                raise XapiError("SR_OPERATION_NOT_SUPPORTED", vm)


async def checkpoint(ctx, session, vm, new_name):
    """A running VM is suspended (its disks and image snapshotted) and resumed."""
    out = {}

    async def body(rec, progress):
        info = None
        running = rec["power_state"] == "Running"
        if running:
            _assert_snapshot_capable(ctx.app, vm, rec)
            info = {"disk-snapshot-type": "crash_consistent", "power-state-at-snapshot": "Running"}
            await vm_suspend.save(ctx, session, vm, rec, lambda p: progress(0.4 * p))
        try:
            out["ref"] = await clone_vm(ctx, session, vm, CHECKPOINT, new_name, snapshot_info=info,
                                        progress=lambda p: progress(0.4 + 0.2 * p))
        finally:
            if running:
                await asyncio.shield(vm_suspend.restore(ctx, vm, ctx.app.db.table("VM").get(vm), False,
                                                        lambda p: progress(0.6 + 0.4 * p)))
    await vm_mod._operation(ctx, vm, "checkpoint", body)
    return out["ref"]


async def revert(ctx, session, snapshot):
    app = ctx.app
    db = app.db
    snap = vm_mod._rec(db, snapshot)
    if not snap["is_a_snapshot"]:
        raise XapiError("REVERT_ONLY_ALLOWED_ON_SNAPSHOT")
    vm = snap["snapshot_of"]
    if vm not in db.table("VM"):
        vm = _vm_from_snapshot(ctx, snapshot, snap)
    if db.table("VM").get_field(vm, "power_state") != "Halted":
        await vm_mod.hard_shutdown(ctx, session, vm)

    async def body(_rec, progress):
        try:
            await _revert(ctx, session, snapshot, vm, progress)
        except XapiError as e:
            db.table("VM").update(vm, {"power_state": "Halted", "suspend_VDI": NULL_REF})
            if e.code.startswith("SR_BACKEND_FAILURE") or e.code in ("VDI_INCOMPATIBLE_TYPE", "SR_FULL"):
                raise
            log.warning("revert of %s to %s failed: %s", vm, snapshot, e)
            raise XapiError("VM_REVERT_FAILED", snapshot, vm) from None
    await vm_mod._operation(ctx, snapshot, "revert", body)
    vm_mod.refresh_allowed_operations(db, vm)
    return ""


def _vm_from_snapshot(ctx, snapshot: str, snap: dict) -> str:
    """create_vm_from_snapshot: the snapshotted VM is gone, so it comes back with its uuid and
    settings from the snapshot's metadata, and its snapshots point at it again."""
    db = ctx.app.db
    vms = db.table("VM")
    meta = parse_metadata(snap["snapshot_metadata"])
    uuid = meta.get("uuid")
    if not uuid or vms.find("uuid", uuid):
        raise XapiError("VM_REVERT_FAILED", snapshot, snap["snapshot_of"])
    fields = {k: snap[k] for k in _COPYABLE}
    fields.update({k: meta[k] for k in _FROM_METADATA if k in meta})
    fields.update(uuid=uuid, power_state="Halted", domid=-1, parent=NULL_REF,
                  metrics=insert(db, "VM_metrics"))
    vm = insert(db, "VM", **fields)
    for other in vms.refs():
        if vms.get_field(other, "is_a_snapshot") and \
                parse_metadata(vms.get_field(other, "snapshot_metadata")).get("uuid") == uuid:
            vms.set_field(other, "snapshot_of", vm)
    return vm


async def _revert(ctx, session, snapshot: str, vm: str, progress) -> None:
    db = ctx.app.db
    vms, vbd_t, vdi_t = db.table("VM"), db.table("VBD"), db.table("VDI")
    snap = vms.get(snapshot)
    cur = vms.get(vm)
    snap_vbds = [v for v in snap["VBDs"] if v in vbd_t]
    snap_disks = [vbd_t.get_field(v, "VDI") for v in snap_vbds if vbd_t.get_field(v, "type") == "Disk"]
    # the snapshots of each original disk, found before the original goes
    family = {d: vdi_t.find("snapshot_of", vdi_t.get_field(d, "snapshot_of")) for d in snap_disks
              if d in vdi_t and vdi_t.get_field(d, "snapshot_of") not in (NULL_REF, "")}
    originals = {vdi_t.get_field(d, "snapshot_of") for d in family}
    vm_disks = [vbd_t.get_field(v, "VDI") for v in cur["VBDs"]
                if v in vbd_t and vbd_t.get_field(v, "type") == "Disk"]
    for v in list(cur["VBDs"]):                     # the old disks go first, to make room
        if v in vbd_t:
            vbd_t.remove(v)
    await _destroy_vdis(ctx, [cur["suspend_VDI"]] + [d for d in vm_disks if d in originals])
    progress(0.2)
    params = {"epochhint": str(uuidlib.uuid4())}
    disks = await _clone_disks(ctx, session, CLONE, snap_vbds, None, params, lambda p: progress(0.2 + 0.3 * p))
    for (vbd, new_vdi, ours) in disks:              # the disk's snapshots now hang off the clone
        for s in family.get(vbd_t.get_field(vbd, "VDI"), ()) if ours else ():
            if s in vdi_t:
                vdi_t.set_field(s, "snapshot_of", new_vdi)
    image = NULL_REF
    try:
        if snap["suspend_VDI"] in vdi_t:
            image = await vdi_actions.clone(ctx, session, snap["suspend_VDI"], params)
        progress(0.6)
        for vbd, new_vdi, _ in disks:
            _copy_vbd(db, vbd, vm, new_vdi)
        for v in list(cur["VIFs"]):
            if v in db.table("VIF"):
                db.table("VIF").remove(v)
        for v in snap["VIFs"]:
            if v in db.table("VIF"):
                _copy_vif(db, v, vm, preserve_mac=True)
    except BaseException:
        await asyncio.shield(_destroy_vdis(ctx, [image] + [v for _, v, ours in disks if ours]))
        raise
    progress(0.8)
    gm = cur["guest_metrics"]
    if gm in db.table("VM_guest_metrics"):
        db.table("VM_guest_metrics").remove(gm)
    meta = parse_metadata(snap["snapshot_metadata"])
    if meta:
        values = {k: meta[k] for k in _FROM_METADATA if k in meta}
    else:
        values = {k: snap[k] for k in _REVERTABLE}
    values.update(ha_always_run=False, suspend_VDI=image, parent=snapshot,
                  guest_metrics=_copy_row(db, "VM_guest_metrics", snap["guest_metrics"]),
                  power_state="Suspended" if image != NULL_REF else "Halted",
                  other_config=dict(values.get("other_config", snap["other_config"])))
    vms.update(vm, values)
    progress(1.0)
