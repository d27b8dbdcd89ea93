"""How xapi names things in its database (state.db), where that differs from the wire.

xapi's datamodel groups some fields into namespaces (``namespace ~name:"memory" ~contents:...``).
On the wire a field's path is joined with ``_`` (``memory_static_max``); in the database, with
``__`` (``memory__static_max``).  The published datamodel (xenapi.json, our ``generated.py``) only
has the wire names, so the namespaces are listed here, per class: namespace -> member fields.
Fields not listed keep their wire name as their column (``other_config``, ``power_state``...).
Note that not every class with ``name_label`` uses the ``name`` namespace: ``pool`` (and the
records-only ``sr_stat``) declare ``name_label`` as a plain field.

Also here, the facts about which classes xapi keeps in the database at all (``~in_db``) and which
of those it writes rows for (``~persist:PersistEverything``).

Facts from xapi-project/xen-api ``ocaml/idl/datamodel*.ml``; the joining rule is its
``Escaping.escape_id`` (``String.concat "__"``).
"""
from __future__ import annotations

from functools import lru_cache

_NAME = ("label", "description")

# class -> namespace -> members (field names inside the namespace)
NAMESPACES: dict[str, dict[str, tuple[str, ...]]] = {
    "VM": {
        "name": _NAME,
        "memory": ("overhead", "target", "static_max", "dynamic_max", "dynamic_min", "static_min"),
        "VCPUs": ("params", "max", "at_startup"),
        "actions": ("after_shutdown", "after_reboot", "after_softreboot", "after_crash"),
        "PV": ("bootloader", "kernel", "ramdisk", "args", "bootloader_args", "legacy_args"),
        "HVM": ("boot_policy", "boot_params", "shadow_multiplier"),
    },
    "VM_metrics": {
        "memory": ("actual",),
        "VCPUs": ("number", "utilisation", "CPU", "params", "flags"),
    },
    "host": {
        "name": _NAME,
        "memory": ("overhead",),
        "API_version": ("major", "minor", "vendor", "vendor_implementation"),
    },
    "host_metrics": {"memory": ("total", "free")},
    "VIF": {"qos": ("algorithm_type", "algorithm_params", "supported_algorithms")},
    "VBD": {"qos": ("algorithm_type", "algorithm_params", "supported_algorithms")},
    "VIF_metrics": {"io": ("read_kbs", "write_kbs")},
    "VBD_metrics": {"io": ("read_kbs", "write_kbs")},
    "PIF_metrics": {"io": ("read_kbs", "write_kbs")},
}

# Classes whose name_label / name_description live in the "name" namespace.
for _cls in ("role", "task", "pool_patch", "pool_update", "VMPP", "VMSS", "VM_appliance",
             "host_patch", "network", "SM", "SR", "VDI", "data_source", "blob", "GPU_group",
             "PVS_site", "Feature", "USB_group", "Repository", "Observer"):
    NAMESPACES.setdefault(_cls, {})["name"] = _NAME
del _cls

# Classes xapi does not keep in its database (records that only travel on the wire).
NOT_IN_DB = frozenset({"auth", "event", "message", "data_source", "sr_stat", "probe_result",
                       "vdi_nbd_server_info"})

# Classes in the database whose rows are never written to state.db (their tables are, empty).
NOT_PERSISTED = frozenset({"session", "task", "VIF_metrics", "VBD_metrics"})

# Fields declared ~persist:false: written like the others, but reset to their empty value when
# the database is loaded (xapi's blow_away_non_persistent_fields).  "*": in every class that has them.
NOT_PERSISTED_FIELDS: dict[str, frozenset] = {
    "*": frozenset({"allowed_operations", "current_operations"}),
    "host_cpu": frozenset({"utilisation"}),
    "VM_metrics": frozenset({"memory_actual", "VCPUs_utilisation", "VCPUs_CPU", "VCPUs_params", "VCPUs_flags",
                             "state", "last_updated", "other_config", "hvm", "nested_virt", "nomigrate"}),
}


def reset_on_load(cls: str, field: str) -> bool:
    """True if xapi does not keep `field` of `cls` across a restart."""
    return field in NOT_PERSISTED_FIELDS["*"] or field in NOT_PERSISTED_FIELDS.get(cls, ())


# The reference is also stored as a column of every row ("_ref"), as xapi does.
REF_COLUMN = "_ref"


@lru_cache(maxsize=None)
def columns(cls: str) -> dict[str, str]:
    """wire field name -> database column name, for the namespaced fields of `cls` only."""
    out: dict[str, str] = {}
    for ns, members in NAMESPACES.get(cls, {}).items():
        for m in members:
            out[f"{ns}_{m}"] = f"{ns}__{m}"
    return out


def db_column(cls: str, field: str) -> str:
    """The state.db column of wire field `field` of class `cls`."""
    return columns(cls).get(field, field)


@lru_cache(maxsize=None)
def _wire_by_column(cls: str) -> dict[str, str]:
    return {col: wire for wire, col in columns(cls).items()}


def wire_field(cls: str, column: str) -> str:
    """The wire field name of state.db column `column` of class `cls` (the inverse of db_column)."""
    return _wire_by_column(cls).get(column, column)
