"""Which function answers a message (xapi.actions.action): a class's module first, then its
EXTRA_MODULES in order; checked where two modules once answered the same message."""
import inspect

from xapi import actions, datamodel as dm
from xapi.actions import host_plugins, pool_settings


def _action(cls: str, name: str):
    return actions.action(dm.CLASSES[cls].messages[name], None)


def test_has_extension_asks_the_hosts_themselves():
    # host.has_extension runs on the host it names (an internal call for a member); pool.has_extension
    # asks every host that way, so no synchronous this-host-only variant is left to shadow them
    assert _action("host", "has_extension") is host_plugins.has_extension
    assert _action("pool", "has_extension") is pool_settings.has_extension
    assert inspect.iscoroutinefunction(host_plugins.has_extension)
    assert [m for m in actions.EXTRA_MODULES["host"]
            if getattr(__import__(m, fromlist=["_"]), "has_extension", None) is not None] \
        == ["xapi.actions.host_plugins"]
