"""A VM's objects as ova.xml (export.ml): which objects go in, their ids, and their records as xapi
rewrites them.

The VM, then for each VIF the VIF and its network, for each VBD the VBD and (unless empty) its VDI
and the VDI's SR, the suspend VDI (when the power state is preserved), the guest metrics, the host
it is resident on and its affinity host get ids `Ref:0`, `Ref:1`, ... in that order. References to
objects outside the archive become OpaqueRef:NULL (lists drop them). The objects are listed by class:
hosts, VMs, guest metrics, VBDs, VIFs, networks, VDIs, SRs. The fields xapi resets are reset: on
the VM power_state (Halted unless preserved), suspend_VDI, snapshot fields, current/allowed
operations, crash_dumps, consoles, metrics, blobs...; on VBDs and VIFs currently_attached and
metrics; on SRs PBDs; on networks PIFs; on hosts most of their local state.
"""
from __future__ import annotations

import socket

from xapi import datamodel as dm
from xapi.datamodel.types import DateTime
from xapi.xva.ovaxml import EXPORT_VSN, Header, Obj, Version

NULL = "OpaqueRef:NULL"
_ORDER = ("host", "VM", "VM_guest_metrics", "VBD", "VIF", "network", "VDI", "SR")
_EPOCH = "19700101T00:00:00Z"
# xapi writes (and checks imports against) its own version, not the API's: ours is that of the xapi
# release whose API (2.21) the datamodel carries, so archives of that xapi and older ones import
XAPI_VERSION = (24, 10)


class Table:
    """Database refs to archive ids."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.cls: dict[str, str] = {}

    def add(self, cls: str, ref: str) -> None:
        if ref and ref != NULL and ref not in self.ids:
            self.ids[ref] = f"Ref:{len(self.ids)}"
            self.cls[ref] = cls

    def lookup(self, ref: str) -> str:
        return self.ids.get(ref, NULL)


def _valid(db, cls: str, ref: str) -> bool:
    return ref != NULL and ref in db.table(cls)


def collect(db, vm: str, preserve_power_state: bool) -> Table:
    """update_table: the objects of the VM's archive."""
    t = Table()
    rec = db.table("VM").get(vm)
    t.add("VM", vm)

    def add_vdi(vdi):
        t.add("VDI", vdi)
        t.add("SR", db.table("VDI").get_field(vdi, "SR"))
    for vif in rec["VIFs"]:
        if _valid(db, "VIF", vif):
            t.add("VIF", vif)
            net = db.table("VIF").get_field(vif, "network")
            if _valid(db, "network", net):
                t.add("network", net)
    for vbd in rec["VBDs"]:
        if _valid(db, "VBD", vbd):
            t.add("VBD", vbd)
            v = db.table("VBD").get(vbd)
            if not v["empty"] and _valid(db, "VDI", v["VDI"]):
                add_vdi(v["VDI"])
    if preserve_power_state and rec["power_state"] == "Suspended" and _valid(db, "VDI", rec["suspend_VDI"]):
        add_vdi(rec["suspend_VDI"])
    for cls, field in (("VM_guest_metrics", "guest_metrics"), ("host", "resident_on"), ("host", "affinity")):
        if _valid(db, cls, rec[field]):
            t.add(cls, rec[field])
    return t


def _rewrite(t: Table, value, typ):
    k = typ.kind
    if k == "ref":
        return t.lookup(value)
    if k == "set" and typ.elem is not None and typ.elem.kind == "ref":
        return [t.lookup(r) for r in value if t.lookup(r) != NULL]
    if k == "map" and ((typ.key and typ.key.kind == "ref") or (typ.elem and typ.elem.kind == "ref")):
        out = {}
        for a, b in value.items():
            if typ.key.kind == "ref":
                a = t.lookup(a)
            if typ.elem.kind == "ref":
                b = t.lookup(b)
            if a != NULL:
                out[a] = b
        return out
    return value


def _reset(cls: str, rec: dict, preserve_power_state: bool, t: Table) -> None:
    for name in ("current_operations", "allowed_operations"):
        if name in rec:
            rec[name] = {} if isinstance(rec[name], dict) else []
    if cls == "VM":
        if not preserve_power_state:
            rec["power_state"] = "Halted"
            rec["suspend_VDI"] = NULL
        rec.update(is_a_snapshot=False, snapshot_of=NULL, snapshots=[], transportable_snapshot_id="",
                   parent=NULL, crash_dumps=[], consoles=[], metrics=NULL, protection_policy=NULL,
                   blobs={})
        if "snapshot_time" in rec:
            rec["snapshot_time"] = DateTime(_EPOCH)
    elif cls in ("VBD", "VIF"):
        if not preserve_power_state:
            rec["currently_attached"] = False
        rec["metrics"] = NULL
    elif cls == "VDI":
        rec["crash_dumps"] = []
    elif cls == "SR":
        rec["PBDs"] = []
    elif cls == "network":
        rec["PIFs"] = []
    elif cls == "host":
        for name in ("PIFs", "PBDs", "PGPUs", "PCIs", "host_CPUs", "patches", "crashdumps",
                     "supported_bootloaders", "ha_statefiles", "ha_network_peers", "tags", "capabilities"):
            if name in rec:
                rec[name] = []
        for name in ("license_params", "blobs", "external_auth_configuration", "logging", "cpu_configuration",
                     "other_config", "software_version"):
            if name in rec:
                rec[name] = {}
        for name in ("external_auth_type", "external_auth_service_name", "sched_policy"):
            if name in rec:
                rec[name] = ""
        rec["metrics"] = NULL


def snapshot(db, cls: str, ref: str, t: Table, preserve_power_state: bool) -> dict:
    fields = dm.CLASSES[cls].fields
    rec = dict(db.table(cls).get(ref))
    out = {}
    for name, value in rec.items():
        f = fields.get(name)
        if f is None:
            continue
        out[name] = _rewrite(t, value, f.type)
    _reset(cls, out, preserve_power_state, t)
    return out


def version(db, host: str) -> Version:
    h = db.table("host").get(host) if host in db.table("host") else {}
    sv = h.get("software_version") or {}
    return Version(hostname=sv.get("hostname") or socket.gethostname(), date=sv.get("date", ""),
                   product_version=sv.get("product_version", ""), product_brand=sv.get("product_brand", ""),
                   build_number=sv.get("build_number", ""), xapi_major=XAPI_VERSION[0],
                   xapi_minor=XAPI_VERSION[1], export_vsn=EXPORT_VSN)


def vm_metadata(db, vm: str, host: str, preserve_power_state: bool = False) -> tuple[Table, Header]:
    t = collect(db, vm, preserve_power_state)
    objects = []
    for cls in _ORDER:
        for ref, rcls in t.cls.items():
            if rcls == cls:
                objects.append(Obj(cls, t.ids[ref], snapshot(db, cls, ref, t, preserve_power_state)))
    return t, Header(version(db, host), objects)


def disks(db, vm: str, t: Table, preserve_power_state: bool) -> list:
    """The VDIs whose data the archive carries: [(prefix, vdi, virtual size)] in xapi's order (sorted by
    prefix): the VM's non-CD VBDs' VDIs (and the suspend VDI), none from ISO SRs."""
    rec = db.table("VM").get(vm)
    vdis = []
    for vbd in rec["VBDs"]:
        if not _valid(db, "VBD", vbd):
            continue
        v = db.table("VBD").get(vbd)
        if v["type"] == "CD" or v["empty"]:
            continue
        vdis.append(v["VDI"])
    if preserve_power_state and rec["power_state"] == "Suspended":
        vdis.insert(0, rec["suspend_VDI"])
    out, seen = [], set()
    for vdi in vdis:
        if not _valid(db, "VDI", vdi) or vdi in seen or vdi not in t.ids:
            continue
        seen.add(vdi)
        sr = db.table("VDI").get_field(vdi, "SR")
        if _valid(db, "SR", sr) and db.table("SR").get_field(sr, "content_type") == "iso":
            continue
        out.append((t.ids[vdi], vdi, int(db.table("VDI").get_field(vdi, "virtual_size"))))
    return sorted(out, key=lambda x: x[0])
