"""One-to-many links xapi's database keeps by itself (xen-api datamodel's relations): a row of the
first class pointing with its ref field at an object puts itself in that object's set field, which
clients read and never write (VBD.VM <-> VM.VBDs and so on). `xapi.db.schema` declares them to the
database, which keeps the sets."""
from __future__ import annotations

from . import CLASSES

# (class, ref field) -> (class pointed at, its set field)
RELATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("VBD", "VM"): ("VM", "VBDs"),
    ("VBD", "VDI"): ("VDI", "VBDs"),
    ("VIF", "VM"): ("VM", "VIFs"),
    ("VIF", "network"): ("network", "VIFs"),
    ("PIF", "host"): ("host", "PIFs"),
    ("PIF", "network"): ("network", "PIFs"),
    ("PBD", "host"): ("host", "PBDs"),
    ("PBD", "SR"): ("SR", "PBDs"),
    ("VDI", "SR"): ("SR", "VDIs"),
    ("VDI", "snapshot_of"): ("VDI", "snapshots"),
    ("console", "VM"): ("VM", "consoles"),
    ("host_cpu", "host"): ("host", "host_CPUs"),
    ("VM", "resident_on"): ("host", "resident_VMs"),
    ("VM", "snapshot_of"): ("VM", "snapshots"),
    ("VM", "parent"): ("VM", "children"),
    ("VM", "appliance"): ("VM_appliance", "VMs"),
    ("VM", "protection_policy"): ("VMPP", "VMs"),
    ("VM", "snapshot_schedule"): ("VMSS", "VMs"),
    ("PVS_cache_storage", "site"): ("PVS_site", "cache_storage"),
}


def _check() -> None:
    for (c, field), (other, many) in RELATIONS.items():
        assert CLASSES[c].fields[field].type.name == other, (c, field)
        assert CLASSES[other].fields[many].type.elem.name == c, (other, many)


_check()
