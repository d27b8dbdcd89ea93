"""The internal storage messages xapi serves but leaves out of its published datamodel.

Storage drivers record what they find through these, with the session they are given (SM's
``VDI.py`` and ``SR.py``): ``VDI.db_introduce``, ``VDI.db_forget``, ``VDI.set_virtual_size`` and the
other setters of read-only fields, ``SR.set_physical_utilisation`` and
``SR.set_virtual_allocation``. Like xapi's internal messages they are for the local superuser only
(no role holds them). ``register()`` adds them to the datamodel before the dispatcher is built.
"""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.datamodel.defaults import PARAM_DEFAULTS
from xapi.datamodel.types import parse

_VDI_INTRODUCE = (
    ("string", "uuid"), ("string", "name_label"), ("string", "name_description"), ("SR ref", "SR"),
    ("enum vdi_type", "type"), ("bool", "sharable"), ("bool", "read_only"),
    ("(string -> string) map", "other_config"), ("string", "location"),
    ("(string -> string) map", "xenstore_data"), ("(string -> string) map", "sm_config"), ("bool", "managed"),
    ("int", "virtual_size"), ("int", "physical_utilisation"), ("pool ref", "metadata_of_pool"),
    ("bool", "is_a_snapshot"), ("datetime", "snapshot_time"), ("VDI ref", "snapshot_of"),
    ("bool", "cbt_enabled"),
)

# class -> (name, params, result)
MESSAGES: dict[str, tuple[tuple[str, tuple[tuple[str, str], ...], str], ...]] = {
    "VDI": (
        ("db_introduce", _VDI_INTRODUCE, "VDI ref"),
        ("pool_introduce", _VDI_INTRODUCE, "VDI ref"),
        ("db_forget", (("VDI ref", "vdi"),), "void"),
        ("set_virtual_size", (("VDI ref", "self"), ("int", "value")), "void"),
        ("set_physical_utilisation", (("VDI ref", "self"), ("int", "value")), "void"),
        ("set_is_a_snapshot", (("VDI ref", "self"), ("bool", "value")), "void"),
        ("set_snapshot_of", (("VDI ref", "self"), ("VDI ref", "value")), "void"),
        ("set_snapshot_time", (("VDI ref", "self"), ("datetime", "value")), "void"),
        ("set_managed", (("VDI ref", "self"), ("bool", "value")), "void"),
        ("set_missing", (("VDI ref", "self"), ("bool", "value")), "void"),
        ("set_metadata_of_pool", (("VDI ref", "self"), ("pool ref", "value")), "void"),
        ("set_metadata_latest", (("VDI ref", "self"), ("bool", "value")), "void"),
    ),
    "SR": (
        ("set_virtual_allocation", (("SR ref", "self"), ("int", "value")), "void"),
        ("set_physical_utilisation", (("SR ref", "self"), ("int", "value")), "void"),
    ),
}

DEFAULTS = {
    "VDI.db_introduce": (("cbt_enabled", False),),
    "VDI.pool_introduce": (("cbt_enabled", False),),
}


def register() -> None:
    """Adds the internal messages to the datamodel (once)."""
    for cls, messages in MESSAGES.items():
        c = dm.CLASSES[cls]
        for name, params, result in messages:
            if name in c.messages:
                continue
            ps = tuple(dm.Param(pname, parse(ptype)) for ptype, pname in params)
            c.messages[name] = dm.Message(cls, name, ps, True, parse(result), frozenset(), (), False)
    for name, defaults in DEFAULTS.items():
        PARAM_DEFAULTS.setdefault(name, defaults)
