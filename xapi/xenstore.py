"""xenstore client: the compiled shim (``xapi._xenstore_py`` over
csrc/xenstore_shim.c) or, with ``XAPI_PURE=1``, its pure-Python reference
``xapi.xenstore_ref``.

    with xenstore.connect() as xs:           # $XENSTORED_PATH or /var/run/xenstored/socket
        xs.write("/vm/x/name", b"demo")
        xs.read("/vm/x/name")                # b"demo"
        xs.directory("/vm")                  # ["x"]
        tx = xs.transaction_start()
        xs.write("/vm/x/state", b"on", tx)
        xs.transaction_end(tx)               # XenstoreError(EAGAIN) on conflict: retry
        xs.set_perms("/vm/x", ["n0", "r5"])  # owner dom0, domain 5 may read
        xs.get_perms("/vm/x")                # ["n0", "r5"]
        xs.watch("/vm/x", "token")
        xs.read_watch(timeout=1.0)           # ("/vm/x", "token"), or None after the timeout

Backends: "wire" (the default: the built-in client of the wire protocol, to
any socket path) and "xs" (libxenstore's xs_open, compiled only when
libxen-dev was present at build time; it takes its socket from
XENSTORED_PATH or uses /dev/xen/xenbus).  Every failure raises
XenstoreError(errno, message).
"""
from xapi.compiled import load
from xapi.xenstore_errors import XenstoreError

_impl = load("xapi._xenstore_py", "xapi.xenstore_ref")

Client = _impl.Client
connect = _impl.connect
default_path = _impl.default_path
HAVE_LIBXENSTORE = _impl.HAVE_LIBXENSTORE
IMPLEMENTATION = _impl.__name__

__all__ = ["HAVE_LIBXENSTORE", "IMPLEMENTATION", "Client", "XenstoreError", "connect", "default_path"]
