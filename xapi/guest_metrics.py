"""VM_guest_metrics from what the guest agent wrote into xenstore (reported by xenopsd's VM.stat).

The key mapping follows xapi's guest agent handling: attr/PVAddons/* -> PV_drivers_version,
data/os_* -> os_version, data/meminfo_* -> memory, attr/ethN/ip and attr/vif/N/ipv4|ipv6/M ->
networks, control/* -> other.  The data counts only once the agent has written data/updated.
"""
from __future__ import annotations

from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, insert

_PV_DRIVERS = {"attr/PVAddons/MajorVersion": "major", "attr/PVAddons/MinorVersion": "minor",
               "attr/PVAddons/MicroVersion": "micro", "attr/PVAddons/BuildVersion": "build",
               "attr/PVAddons/Application": "application"}
_OS = {"data/os_name": "name", "data/os_uname": "uname", "data/os_distro": "distro",
       "data/os_majorver": "major", "data/os_minorver": "minor",
       "attr/os/spmajor": "spmajor", "attr/os/spminor": "spminor"}
_MEMORY = {"data/meminfo_free": "free", "data/meminfo_total": "total"}


def _pick(ga: dict, keys: dict) -> dict:
    return {name: ga[k] for k, name in keys.items() if k in ga}


def _networks(ga: dict) -> dict:
    out: dict = {}
    for k, v in ga.items():
        p = k.split("/")
        if p[0] != "attr" or len(p) < 3:
            continue
        if p[1] == "vif" and len(p) == 5 and p[3] in ("ipv4", "ipv6"):       # attr/vif/0/ipv4/0
            out[f"{p[2]}/{p[3]}/{p[4]}"] = v
        elif p[1].startswith("eth") and p[1][3:].isdigit():                   # attr/eth0/ip
            if len(p) == 3 and p[2] == "ip":
                out[f"{p[1][3:]}/ip"] = v
            elif len(p) == 5 and p[2] == "ipv6" and p[4] == "addr":
                out[f"{p[1][3:]}/ipv6/{p[3]}"] = v
    for k, v in list(out.items()):                  # newer agents only: N/ip from N/ipv4/0
        dev, kind, idx = (k.split("/") + ["", ""])[:3]
        if kind == "ipv4" and idx == "0":
            out.setdefault(f"{dev}/ip", v)
    return out


def _destroy(db, vm_ref: str, gm: str) -> None:
    db.table("VM").set_field(vm_ref, "guest_metrics", NULL_REF)
    t = db.table("VM_guest_metrics")
    if gm in t:
        t.remove(gm)
    _drivers_changed(db, vm_ref)


def update(db, vm_ref: str, power: str, guest_agent: dict | None) -> None:
    """Creates/updates the VM's VM_guest_metrics row; destroys it when the VM is not running."""
    gm = db.table("VM").get_field(vm_ref, "guest_metrics")
    table = db.table("VM_guest_metrics")
    if power not in ("Running", "Paused"):
        if gm != NULL_REF:
            _destroy(db, vm_ref, gm)
        return
    ga = guest_agent or {}
    if "data/updated" not in ga:
        return
    pv = _pick(ga, _PV_DRIVERS)
    pv.setdefault("micro", "-1")
    values = {"os_version": _pick(ga, _OS), "PV_drivers_version": pv, "memory": _pick(ga, _MEMORY),
              "networks": _networks(ga),
              "other": {k.split("/", 1)[1]: v for k, v in ga.items() if k.startswith("control/")},
              "PV_drivers_up_to_date": True, "PV_drivers_detected": True, "live": True}
    if gm in table:
        old = table.get(gm)
        changed = {k: v for k, v in values.items() if old.get(k) != v}
        if changed:
            changed["last_updated"] = datetime_now()
            table.update(gm, changed)
    else:
        gm = insert(db, "VM_guest_metrics", last_updated=datetime_now(), **values)
        db.table("VM").set_field(vm_ref, "guest_metrics", gm)
        _drivers_changed(db, vm_ref)


def _drivers_changed(db, vm_ref: str) -> None:
    """PV drivers came or went: an HVM guest's VBD/VIF hotplug depends on them."""
    from xapi.actions import vm_devices
    vm_devices.refresh_operations(db, vm_ref)
