"""The objects of an ova.xml made into database objects (import.ml, full import).

Checked first: the archive's xapi version is not newer than ours (IMPORT_INCOMPATIBLE_VERSION).
Then, in xapi's order: every SR maps to the SR imported into; each VDI is created there through the
storage layer (VDI.create, sm_config import_task = the task); guest metrics are copied; the VM is
created from its record (VM.create's constructor fields) with a new uuid (kept with restore=true,
which replaces a halted VM with that uuid when the archive's version is newer, else
VM_TO_IMPORT_IS_NOT_NEWER_VERSION / VM_BAD_POWER_STATE), a fresh mac_seed (unless restoring),
version 0, is_default_template cleared, power_state Halted (Suspended with its suspend VDI),
other_config import_task, and `import` in current_operations until the import completes; a default
template that exists here by name is used instead of a copy. Networks are matched by name_label,
then by bridge, else created; VBDs (a CD whose VDI isn't in the archive becomes empty) and VIFs are
created on the new VM. Whatever was created is undone, newest first, when the import fails (not with
force).
"""
from __future__ import annotations

import asyncio
import logging
import uuid as _uuid

from xapi import datamodel as dm
from xapi.actions import network as network_actions
from xapi.actions import vbd as vbd_actions
from xapi.actions import vdi as vdi_actions
from xapi.actions import vif as vif_actions
from xapi.actions import vm as vm_actions
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert
from xapi.forwarding import locks
from xapi.dispatch.convert import converter
from xapi.xva.export import XAPI_VERSION
from xapi.xva.ovaxml import Header

log = logging.getLogger("xapi.xva")

NULL = "OpaqueRef:NULL"
IMPORT_TASK = "import_task"


def _convert(cls: str, name: str, value):
    f = dm.CLASSES[cls].fields[name]
    try:
        return converter(f.type, name)(value) if converter(f.type, name) is not None else value
    except XapiError:
        return f.initial()


def assert_compatible(version) -> None:
    """importexport.ml: an archive from a newer xapi than ours is refused."""
    if XAPI_VERSION < (version.xapi_major, version.xapi_minor):
        raise XapiError("IMPORT_INCOMPATIBLE_VERSION")


def non_cdrom_vdis(header: Header) -> list:
    """The archive ids of the VDIs whose data follows: those of non-CD VBDs outside ISO SRs, and
    suspend VDIs, in archive order."""
    objs = header.by_id()
    wanted = set()
    for o in header.objects:
        if o.cls == "VBD" and o.snapshot.get("type") != "CD":
            vdi = objs.get(o.snapshot.get("VDI"))
            if vdi is not None:
                sr = objs.get(vdi.snapshot.get("SR"))
                if sr is None or sr.snapshot.get("content_type") != "iso":
                    wanted.add(vdi.id)
        elif o.cls == "VM" and o.snapshot.get("power_state") == "Suspended":
            wanted.add(o.snapshot.get("suspend_VDI"))
    return [o.id for o in header.objects if o.cls == "VDI" and o.id in wanted]


class Importer:
    def __init__(self, ctx, session, sr: str, task: str | None, restore: bool, force: bool) -> None:
        self.ctx = ctx
        self.app = ctx.app
        self.db = ctx.app.db
        self.session = session
        self.sr = sr
        self.task = task or NULL
        self.restore = restore
        self.force = force
        self.table: dict[str, str] = {}          # archive id -> our ref
        self.cleanup: list = []                  # undo actions, newest last
        self.vms: list[str] = []                 # the task's result
        self.created: set[str] = set()           # the VMs made here (their VBDs and VIFs follow)
        self.held: list[tuple[str, str]] = []    # (VM, key) of the `import` entries (xapi.forwarding.locks)

    # -- helpers -------------------------------------------------------------------------------------
    def _ctor(self, cls: str, snap: dict, **override) -> dict:
        """The constructor fields of a record from a snapshot, refs mapped (NULL when unknown),
        missing fields at their defaults."""
        out = {}
        for name, f in dm.CLASSES[cls].fields.items():
            if f.qualifier not in ("RW", "RO/constructor"):
                continue
            if name in override:
                out[name] = override[name]
            elif name in snap:
                v = snap[name]
                out[name] = self._ref(v) if f.type.kind == "ref" else _convert(cls, name, v)
            else:
                out[name] = f.initial()
        return out

    def _ref(self, ext) -> str:
        return self.table.get(ext, NULL) if isinstance(ext, str) else NULL

    # -- the objects, in xapi's order ----------------------------------------------------------------
    async def run(self, header: Header) -> list:
        by_cls: dict[str, list] = {}
        for o in header.objects:
            by_cls.setdefault(o.cls, []).append(o)
        for o in by_cls.get("host", []):
            found = self.db.table("host").find("uuid", o.snapshot.get("uuid", ""))
            if found:
                self.table[o.id] = found[0]
        for o in by_cls.get("SR", []):
            self.table[o.id] = self.sr
        cd_only = self._cd_vdis(header)
        for o in by_cls.get("VDI", []):
            if o.id in cd_only:
                self._iso(o)
            else:
                await self._vdi(o)
        for o in by_cls.get("VM_guest_metrics", []):
            self._guest_metrics(o)
        for o in by_cls.get("VM", []):
            await self._vm(o)
        for o in by_cls.get("network", []):
            self._network(o)
        for o in by_cls.get("VBD", []):
            self._vbd(o)
        for o in by_cls.get("VIF", []):
            self._vif(o)
        self.app.hub.poke()
        return self.vms

    @staticmethod
    def _cd_vdis(header: Header) -> set:
        """The VDIs of ISO SRs or only in CD drives: found by location among our ISO SRs, not copied."""
        objs = header.by_id()
        disk = set()
        cd = set()
        for o in header.objects:
            if o.cls == "VBD":
                (cd if o.snapshot.get("type") == "CD" else disk).add(o.snapshot.get("VDI"))
        out = set()
        for o in header.objects:
            if o.cls != "VDI":
                continue
            sr = objs.get(o.snapshot.get("SR"))
            iso = sr is not None and sr.snapshot.get("content_type") == "iso"
            if iso or (o.id in cd and o.id not in disk):
                out.add(o.id)
        return out

    def _iso(self, o) -> None:
        location = o.snapshot.get("location")
        srs = self.db.table("SR")
        vdis = self.db.table("VDI")
        for ref in vdis.find("location", location) if location else []:
            sr = vdis.get_field(ref, "SR")
            if sr in srs and srs.get_field(sr, "content_type") == "iso":
                self.table[o.id] = ref
                return
        log.warning("no ISO VDI with location %s: the CD drive will be empty", location)

    async def _vdi(self, o) -> None:
        snap = o.snapshot
        sm_config = {k: v for k, v in (snap.get("sm_config") or {}).items() if k != IMPORT_TASK}
        sm_config[IMPORT_TASK] = self.task
        record = {name: snap[name] for name in ("name_label", "name_description", "virtual_size", "type",
                                                "sharable", "read_only", "other_config", "xenstore_data",
                                                "tags") if name in snap}
        record.setdefault("virtual_size", "0")
        record.setdefault("type", "user")
        record.setdefault("sharable", False)
        record.setdefault("read_only", False)
        record.setdefault("other_config", {})
        record.update(SR=self.sr, sm_config=sm_config)
        # a cancellation waits for the driver: the VDI it makes must be known to be undone
        fut = asyncio.ensure_future(vdi_actions.create(self.ctx, self.session, record))
        try:
            await asyncio.shield(fut)
        finally:
            if not fut.done():
                await asyncio.wait([fut])
            if not fut.cancelled() and fut.exception() is None:
                ref = fut.result()

                async def undo(ref=ref):
                    await vdi_actions.destroy(self.ctx, self.session, ref)
                self.cleanup.append(undo)
                self.table[o.id] = ref

    def _guest_metrics(self, o) -> None:
        fields = dm.CLASSES["VM_guest_metrics"].fields
        values = {n: _convert("VM_guest_metrics", n, v) for n, v in o.snapshot.items()
                  if n in fields and n != "uuid" and fields[n].type.kind != "ref"}
        ref = insert(self.db, "VM_guest_metrics", **values)
        self.cleanup.append(self._remover("VM_guest_metrics", ref))
        self.table[o.id] = ref

    def _remover(self, cls: str, ref: str):
        async def undo():
            if ref in self.db.table(cls):
                self.db.table(cls).remove(ref)
        return undo

    async def _vm(self, o) -> None:
        snap = dict(o.snapshot)
        vms = self.db.table("VM")
        other = dict(snap.get("other_config") or {})
        if snap.get("is_default_template") is True or other.get("default_template") == "true":
            same = vms.find("name_label", snap.get("name_label", ""))
            if same:
                self.table[o.id] = same[0]
                self.vms.append(same[0])
                return
        uuid = snap.get("uuid", "")
        existing = vms.find("uuid", uuid) if self.restore and uuid else []
        version = int(snap.get("version", 0) or 0)
        if existing:
            old = existing[0]
            state = vms.get_field(old, "power_state")
            if state != "Halted":
                if self.force:
                    return
                raise XapiError("VM_BAD_POWER_STATE", old, "halted", state.lower())
            if int(vms.get_field(old, "version")) >= version and not self.force:
                raise XapiError("VM_TO_IMPORT_IS_NOT_NEWER_VERSION", old, vms.get_field(old, "version"), version)
            self._replace(old)
        elif not self.force:
            snap["is_default_template"] = False
            other.pop("default_template", None)
        other.pop("grant_api_access", None)
        if not self.restore:
            other["mac_seed"] = str(_uuid.uuid4())
        other[IMPORT_TASK] = self.task
        record = self._ctor("VM", snap, other_config=other, affinity=self._ref(snap.get("affinity")),
                            appliance=NULL, protection_policy=NULL, suspend_VDI=NULL,
                            suspend_SR=NULL, power_state="Halted")
        for name in ("snapshot_of", "parent"):
            if name in record:
                record[name] = NULL
        ref = vm_actions.create(self.ctx, self.session, record)
        self.cleanup.append(self._vm_undo(ref))
        extra = {"version": version + 1 if self.restore else 0, "is_a_snapshot": False}
        fields = dm.CLASSES["VM"].fields
        for name in ("last_booted_record", "last_boot_CPU_flags", "bios_strings", "is_control_domain",
                     "is_default_template", "has_vendor_device", "domain_type", "generation_id",
                     "snapshot_info", "transportable_snapshot_id"):
            if name in snap and name in fields:
                extra[name] = _convert("VM", name, snap[name])
        if self.restore and uuid:
            extra["uuid"] = uuid
        extra["guest_metrics"] = self._ref(snap.get("guest_metrics"))
        extra["resident_on"] = NULL
        suspend = self._ref(snap.get("suspend_VDI"))
        if snap.get("power_state") == "Suspended" and suspend != NULL:
            extra.update(power_state="Suspended", suspend_VDI=suspend)
        vms.update(ref, {k: v for k, v in extra.items() if k in fields})
        if not self.force:      # `import` until complete/undo (xapi.forwarding.locks)
            key, _ = locks.hold(self.app, "VM", ref, "import", check=None,
                                refresh=vm_actions.refresh_allowed_operations,
                                key=self.task if self.task != NULL else None)
            self.held.append((ref, key))
        else:
            vm_actions.refresh_allowed_operations(self.db, ref)
        self.table[o.id] = ref
        self.vms.append(ref)
        self.created.add(ref)

    def _vm_undo(self, ref: str):
        async def undo():
            vms = self.db.table("VM")
            if ref in vms:
                for cls, field in (("VBD", "VBDs"), ("VIF", "VIFs")):
                    for r in list(vms.get_field(ref, field)):
                        self._remove_device(cls, r)
                vms.remove(ref)
        return undo

    def _replace(self, old: str) -> None:
        """restore=true over a halted VM with the same uuid: its VIFs, VBDs and itself go."""
        vms = self.db.table("VM")
        for cls, field in (("VIF", "VIFs"), ("VBD", "VBDs")):
            for r in list(vms.get_field(old, field)):
                self._remove_device(cls, r)
        vms.remove(old)

    def _remove_device(self, cls: str, ref: str) -> None:
        """A VBD or VIF of a halted VM, with its metrics row."""
        table = self.db.table(cls)
        if ref not in table:
            return
        metrics = table.get_field(ref, "metrics")
        table.remove(ref)
        if metrics in self.db.table(f"{cls}_metrics"):
            self.db.table(f"{cls}_metrics").remove(metrics)

    def _network(self, o) -> None:
        snap = o.snapshot
        nets = self.db.table("network")
        found = nets.find("name_label", snap.get("name_label", ""))
        if not found and snap.get("bridge"):
            found = nets.find("bridge", snap["bridge"])
        if found:
            self.table[o.id] = found[0]
            return
        record = self._ctor("network", snap)
        record["other_config"] = {**record.get("other_config", {}), IMPORT_TASK: self.task}
        record["bridge"] = str(snap.get("bridge") or "")
        try:
            ref = network_actions.create(self.ctx, self.session, record)
        except XapiError as e:
            if e.code != "INVALID_VALUE":
                raise
            record["bridge"] = ""           # a bridge name we can't have: a fresh one, as an empty one gets
            ref = network_actions.create(self.ctx, self.session, record)
        self.cleanup.append(self._remover("network", ref))
        self.table[o.id] = ref

    def _vbd(self, o) -> None:
        snap = o.snapshot
        vm = self._ref(snap.get("VM"))
        if vm not in self.created or vm not in self.db.table("VM"):
            return
        vdi = self._ref(snap.get("VDI"))
        empty = bool(snap.get("empty")) or vdi == NULL
        if vdi == NULL and snap.get("type") != "CD" and not snap.get("empty"):
            if not self.force:
                raise XapiError("IMPORT_ERROR_ATTACHED_DISKS_NOT_FOUND")
            return
        record = self._ctor("VBD", snap, VM=vm, VDI=vdi, empty=empty)
        ref = vbd_actions.create(self.ctx, self.session, record)
        self.db.table("VBD").update(ref, {"currently_attached": False})
        self.table[o.id] = ref

    def _vif(self, o) -> None:
        snap = o.snapshot
        vm = self._ref(snap.get("VM"))
        if vm not in self.created or vm not in self.db.table("VM"):
            return
        net = self._ref(snap.get("network"))
        if net == NULL:
            nets = self.db.table("network").refs()
            if not nets:
                return
            net = nets[0]
        record = self._ctor("VIF", snap, VM=vm, network=net)
        ref = vif_actions.create(self.ctx, self.session, record)
        self.db.table("VIF").update(ref, {"currently_attached": False})
        self.table[o.id] = ref

    # -- the end ---------------------------------------------------------------------------------------
    def complete(self) -> None:
        """complete_import: the VMs are no longer being imported."""
        self._release()
        self.app.hub.poke()

    def _release(self) -> None:
        while self.held:
            vm, key = self.held.pop()
            locks.release(self.app, "VM", vm, key, vm_actions.refresh_allowed_operations)

    async def undo(self) -> None:
        vms = self.db.table("VM")
        for vm in self.vms:
            if vm in vms:
                vms.update(vm, {"power_state": "Halted"})
        self._release()
        while self.cleanup:
            action = self.cleanup.pop()
            try:
                await action()
            except Exception:  # noqa: BLE001 - as xapi: log and go on with the rest
                log.exception("import cleanup action failed")
        self.app.hub.poke()
