"""Local work, one module per class; messages a module doesn't define fall back to the accessors."""
from __future__ import annotations

import importlib

from xapi import datamodel as dm

from .accessors import accessor

# datamodel class -> module of its explicit messages
MODULES = {"session": "xapi.actions.session"}


def action(message: dm.Message, db):
    """The local implementation of a message, or None when there is none yet."""
    module = MODULES.get(message.cls)
    if module is not None:
        fn = getattr(importlib.import_module(module), message.name, None)
        if fn is not None:
            return fn
    if message.implicit:
        return accessor(message, db)
    return None
