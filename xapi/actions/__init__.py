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
    "auth": "xapi.actions.auth",
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


# More modules of a class's explicit messages. In each, the messages are its `<CLASS>_MESSAGES` table
# (message name -> function) when it has one for the class, else the functions it defines under the
# messages' names (those in its __all__, where it has one). The class's module doesn't re-export them: a module of messages imports the class's
# module, so re-exporting would make the import order matter.
EXTRA_MODULES = {
    "VM": ("xapi.actions.vm_suspend", "xapi.actions.vm_clone", "xapi.actions.vm_provision",
           "xapi.actions.vm_memory", "xapi.actions.vm_migrate", "xapi.actions.vm_storage_migrate",
           "xapi.actions.vm_settings", "xapi.actions.vm_live", "xapi.actions.data_sources"),
    "host": ("xapi.actions.host_evacuate", "xapi.actions.host_info", "xapi.actions.host_settings",
             "xapi.actions.host_mgmt", "xapi.actions.host_agent", "xapi.actions.host_console",
             "xapi.actions.host_plugins", "xapi.actions.vm_storage_migrate", "xapi.actions.data_sources",
             "xapi.actions.certificates"),
    "pool": ("xapi.actions.host_mgmt", "xapi.actions.pool_vlan", "xapi.actions.pool_redo_log",
             "xapi.actions.certificates"),
    "SR": ("xapi.actions.data_sources", "xapi.actions.dr", "xapi.actions.sr_ha"),
    "VDI": ("xapi.actions.vm_storage_migrate", "xapi.actions.vdi_cbt", "xapi.actions.dr"),
}


def _extra(message: dm.Message):
    for module in EXTRA_MODULES.get(message.cls, ()):
        mod = importlib.import_module(module)
        table = getattr(mod, message.cls.upper() + "_MESSAGES", None)
        if table is not None:
            fn = table.get(message.name)
        else:
            fn = getattr(mod, message.name, None)
            public = getattr(mod, "__all__", None)
            if getattr(fn, "__module__", None) != module or (public is not None and message.name not in public):
                fn = None                                       # imported there, or kept for its own use
        if fn is not None:
            return fn
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
