"""xenstored for the simulator: the xenstore wire protocol on a Unix socket,
with permissions, watches and transactions as C xenstored has them.

(A package ``xapi.xenstore`` would shadow the client module
``xapi/xenstore.py``, hence ``xapi.xenstored``.)

In a daemon's event loop::

    from xapi import xenstored
    server = await xenstored.XenstoredServer.start(xenstored.socket_path(data_dir))
    server.store.populate_domain(5, "vm1", vm_uuid, memory_kb=1048576, vcpus=2,
                                 vbds=[{"device": "xvda", "params": path}],
                                 vifs=[{"devid": 0, "mac": mac}])
    ...
    server.store.remove_domain(5)
    await server.close()

Standalone: ``python -m xapi.xenstored --socket PATH [--dump FILE]`` (or
``--data-dir DIR``); Debian's xenstore-utils reach it with
``XENSTORED_PATH=PATH`` (or ``XENSTORED_RUNDIR=<DIR>/xenstored``).

The socket of a host with data folder DIR is ``DIR/xenstored/socket``
(``socket_path(DIR)``).  Every socket connection is dom0; in-process
``store.session(domid)`` acts as a guest (permission-checked, relative paths
below /local/domain/<domid>).  The tree is not persisted: a restart starts
empty (``/tool/xenstored`` only) and the simulator repopulates it.
"""
from xapi.xenstored.layout import Vbd, Vif, disk_devid, populate_dom0, populate_domain, remove_domain
from xapi.xenstored.server import ThreadedXenstored, XenstoredServer, dispatch, socket_path
from xapi.xenstored.store import Perm, Session, Store, parse_perms

__all__ = [
    "Perm", "Session", "Store", "ThreadedXenstored", "Vbd", "Vif", "XenstoredServer", "disk_devid",
    "dispatch", "parse_perms", "populate_dom0", "populate_domain", "remove_domain", "socket_path",
]
