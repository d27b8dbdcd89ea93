"""Local work, one module per class; messages a module doesn't define fall back to the accessors."""
from __future__ import annotations

import importlib

from xapi import datamodel as dm

from .accessors import accessor

# datamodel class -> module of its explicit messages
MODULES = {
    "session": "xapi.actions.session",
    "event": "xapi.actions.event",
    "task": "xapi.actions.task",
    "role": "xapi.actions.role",
    "subject": "xapi.actions.subject",
    "pool": "xapi.actions.pool",
    "host": "xapi.actions.host",
    "SR": "xapi.actions.sr",
    "VDI": "xapi.actions.vdi",
    "PBD": "xapi.actions.pbd",
    "blob": "xapi.actions.blob",
    "VM": "xapi.actions.vm",
    "VBD": "xapi.actions.vbd",
    "VIF": "xapi.actions.vif",
    "network": "xapi.actions.network",
    "message": "xapi.actions.message",
    "PIF": "xapi.actions.pif",
    "VLAN": "xapi.actions.vlan",
    "Bond": "xapi.actions.bond",
    "tunnel": "xapi.actions.tunnel",
}


# more modules of explicit messages for a class, each with its <CLASS>_MESSAGES table (name -> fn)
EXTRA_MODULES = {
    "host": ("xapi.actions.host_mgmt", "xapi.actions.host_agent", "xapi.actions.host_console",
             "xapi.actions.host_plugins"),
    "pool": ("xapi.actions.host_mgmt", "xapi.actions.pool_vlan"),
}


def _extra(message: dm.Message):
    for module in EXTRA_MODULES.get(message.cls, ()):
        mod = importlib.import_module(module)
        table = getattr(mod, message.cls.upper() + "_MESSAGES", None)
        if table and message.name in table:
            return table[message.name]
    return None


# Messages xapi implements by hand (messages live outside its database) that are plain reads here.
_EXPLICIT_ACCESSORS = frozenset({"get_all", "get_all_records", "get_record", "get_by_uuid"})


def action(message: dm.Message, db):
    """The local implementation of a message, or None when there is none yet."""
    if message.name == "create_new_blob":       # VM, host, pool, SR, network: one implementation
        return importlib.import_module("xapi.actions.blob").create_new_blob(message.cls)
    module = MODULES.get(message.cls)
    if module is not None:
        mod = importlib.import_module(module)
        fn = getattr(mod, message.name, None) or getattr(mod, message.name + "_", None)  # from_: a keyword
        if fn is not None:
            return fn
    fn = _extra(message)
    if fn is not None:
        return fn
    if message.implicit or message.name in _EXPLICIT_ACCESSORS:
        return accessor(message, db)
    return None
