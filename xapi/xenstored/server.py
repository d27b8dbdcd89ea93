"""xenstored's wire protocol on a Unix socket, over a Store.

Every socket connection is dom0 (privileged), as on a Xen host where only
root in dom0 reaches /var/run/xenstored/socket.  Requests are answered in
order; a request's reply keeps its req_id and tx_id; failures are XS_ERROR
with the errno name.  A header announcing more than 4096 bytes of payload
closes the connection, as C xenstored does (the stream cannot be trusted after
it).  A client that stops reading stops being read (and is dropped once 64 MiB
of replies and events are queued for it).
"""
import asyncio
import errno
import logging
import os
import socket
import stat
import threading

from xapi.xenstore_errors import XenstoreError
from xapi.xenstored import protocol as P
from xapi.xenstored.store import Connection, Store, format_perms

log = logging.getLogger("xapi.xenstored")

OUTPUT_LIMIT = 64 * 1024 * 1024
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def socket_path(data_dir: str) -> str:
    """Where the simulator's xenstored listens for a host with data folder
    `data_dir`: <data_dir>/xenstored/socket, so that clients find it with
    XENSTORED_RUNDIR=<data_dir>/xenstored or XENSTORED_PATH=<that path>."""
    return os.path.join(data_dir, "xenstored", "socket")


# -- requests -------------------------------------------------------------------


def _einval():
    raise XenstoreError(errno.EINVAL, "malformed request")


def _path_arg(payload):
    arg = P.onearg(payload)
    return arg  # None -> canonicalize answers EINVAL


def _h_directory(store, conn, tx, payload):
    node = store.op_directory(conn, tx, _path_arg(payload))
    return "".join(name + "\0" for name in node.children).encode("latin-1")


def _h_directory_part(store, conn, tx, payload):
    if payload.count(b"\0") != 2:
        _einval()
    path, offset = P.strings(payload)[:2]
    node = store.op_directory(conn, tx, path)
    children = "".join(name + "\0" for name in node.children).encode("latin-1")
    off = P.atoi(offset)
    gen = str(node.generation).encode("ascii") + b"\0"
    if off < 0 or off >= len(children):
        return gen + b"\0"
    maxlen = P.PAYLOAD_MAX - len(gen) - 1
    end = off
    while True:
        nul = children.find(b"\0", end)
        if nul < 0:  # an offset inside the last name: take the rest
            nul = len(children) - 1
        if (end - off) + (nul - end) >= maxlen:
            break
        end = nul + 1
        if end == len(children):
            break
    part = children[off:end]
    return gen + part + (b"\0" if end == len(children) else b"")


def _h_read(store, conn, tx, payload):
    return store.op_read(conn, tx, _path_arg(payload))


def _h_get_perms(store, conn, tx, payload):
    perms = store.op_get_perms(conn, tx, _path_arg(payload))
    return "".join(p + "\0" for p in format_perms(perms)).encode("ascii")


def _h_watch(store, conn, tx, payload):
    args = P.strings(payload)
    if len(args) != 2:
        _einval()
    store.op_watch(conn, args[0], args[1])
    return b"OK\0"


def _h_unwatch(store, conn, tx, payload):
    args = P.strings(payload)
    if len(args) != 2:
        _einval()
    store.op_unwatch(conn, args[0], args[1])
    return b"OK\0"


def _h_transaction_start(store, conn, tx, payload):
    return str(store.op_transaction_start(conn, tx)).encode("ascii") + b"\0"


def _h_transaction_end(store, conn, tx, payload):
    arg = P.onearg(payload)
    if arg not in ("T", "F"):
        _einval()
    store.op_transaction_end(conn, tx, arg == "T")
    return b"OK\0"


def _h_introduce(store, conn, tx, payload):
    args = P.strings(payload)
    if len(args) < 3:
        _einval()
    domid = P.atoi(args[0]) & 0xFFFFFFFF
    store.op_introduce(domid, P.atoi(args[1]), P.atoi(args[2]))
    return b"OK\0"


def _domid_arg(payload) -> int:
    arg = P.onearg(payload)
    if arg is None:
        _einval()
    return P.atoi(arg) & 0xFFFFFFFF


def _h_release(store, conn, tx, payload):
    store.op_release(_domid_arg(payload))
    return b"OK\0"


def _h_resume(store, conn, tx, payload):
    store.op_resume(_domid_arg(payload))
    return b"OK\0"


def _h_get_domain_path(store, conn, tx, payload):
    return f"/local/domain/{_domid_arg(payload)}\0".encode("ascii")


def _h_is_domain_introduced(store, conn, tx, payload):
    return b"T\0" if store.is_domain_introduced(_domid_arg(payload)) else b"F\0"


def _h_set_target(store, conn, tx, payload):
    args = P.strings(payload)
    if len(args) < 2:
        _einval()
    store.op_set_target(P.atoi(args[0]) & 0xFFFFFFFF, P.atoi(args[1]) & 0xFFFFFFFF)
    return b"OK\0"


def _h_write(store, conn, tx, payload):
    nul = payload.find(b"\0")
    if nul < 0:
        _einval()
    store.op_write(conn, tx, payload[:nul].decode("latin-1"), payload[nul + 1:])
    return b"OK\0"


def _h_mkdir(store, conn, tx, payload):
    store.op_mkdir(conn, tx, _path_arg(payload))
    return b"OK\0"


def _h_rm(store, conn, tx, payload):
    store.op_rm(conn, tx, _path_arg(payload))
    return b"OK\0"


def _h_set_perms(store, conn, tx, payload):
    args = P.strings(payload)
    if len(args) < 2:
        _einval()
    store.op_set_perms(conn, tx, args[0], args[1:])
    return b"OK\0"


def _h_reset_watches(store, conn, tx, payload):
    conn.reset()
    return b"OK\0"


_CONTROL_HELP = (
    ("check", ""),
    ("log", "[on|off]"),
    ("logfile", "<file>"),
    ("memreport", "[<file>]"),
    ("print", "<string>"),
    ("help", ""),
)


def _h_control(store, conn, tx, payload):
    args = P.strings(payload)
    if not args:
        _einval()
    cmd, params = args[0], args[1:]
    text = None
    if cmd == "check" and not params:
        pass
    elif cmd == "log" and not params:
        text = "Log switch settings:\n"
    elif cmd == "log" and len(params) == 1 and params[0] in ("on", "off"):
        pass
    elif cmd == "logfile" and len(params) == 1:
        pass
    elif cmd == "memreport" and len(params) <= 1:
        pass
    elif cmd == "print" and len(params) == 1:
        log.info("xenstored: control: %s", params[0])
    elif cmd == "help" and not params:
        text = "".join(f"{c:<15} {p}\n" for c, p in _CONTROL_HELP)
    else:
        _einval()
    return b"OK\0" if text is None else text.encode("utf-8") + b"\0"


# type -> (handler, privileged only, transaction id ignored)
_HANDLERS = {
    P.XS_CONTROL: (_h_control, True, False),
    P.XS_DIRECTORY: (_h_directory, False, False),
    P.XS_READ: (_h_read, False, False),
    P.XS_GET_PERMS: (_h_get_perms, False, False),
    P.XS_WATCH: (_h_watch, False, True),
    P.XS_UNWATCH: (_h_unwatch, False, True),
    P.XS_TRANSACTION_START: (_h_transaction_start, False, False),
    P.XS_TRANSACTION_END: (_h_transaction_end, False, False),
    P.XS_INTRODUCE: (_h_introduce, True, False),
    P.XS_RELEASE: (_h_release, True, False),
    P.XS_GET_DOMAIN_PATH: (_h_get_domain_path, False, False),
    P.XS_WRITE: (_h_write, False, False),
    P.XS_MKDIR: (_h_mkdir, False, False),
    P.XS_RM: (_h_rm, False, False),
    P.XS_SET_PERMS: (_h_set_perms, False, False),
    P.XS_IS_DOMAIN_INTRODUCED: (_h_is_domain_introduced, True, False),
    P.XS_RESUME: (_h_resume, True, False),
    P.XS_SET_TARGET: (_h_set_target, True, False),
    P.XS_RESET_WATCHES: (_h_reset_watches, False, False),
    P.XS_DIRECTORY_PART: (_h_directory_part, False, False),
}


def dispatch(store: Store, conn: Connection, mtype: int, tx_id: int, payload: bytes):
    """Handle one request: (reply type, reply payload).  Never raises."""
    entry = _HANDLERS.get(mtype)
    try:
        if entry is None:
            raise XenstoreError(errno.ENOSYS, f"unknown message type {mtype}")
        handler, priv, notid = entry
        if priv and not conn.privileged:
            raise XenstoreError(errno.EACCES, f"{P.NAMES[mtype]} needs a privileged domain")
        tx = None
        if tx_id and not notid:
            tx = conn.transactions.get(tx_id)
            if tx is None:
                raise XenstoreError(errno.ENOENT, f"no transaction {tx_id}")
        body = handler(store, conn, tx, payload)
        if len(body) > P.PAYLOAD_MAX:
            raise XenstoreError(errno.E2BIG, f"{P.NAMES[mtype]}: reply of {len(body)} bytes")
        return mtype, body
    except XenstoreError as e:
        conn.after_reply.clear()
        return P.XS_ERROR, P.error_payload(e.errno or errno.EINVAL)
    except Exception:
        conn.after_reply.clear()
        log.exception("xenstored: %s request failed", P.NAMES.get(mtype, mtype))
        return P.XS_ERROR, P.error_payload(errno.EIO)


# -- the socket -------------------------------------------------------------------


class _WireProtocol(asyncio.Protocol):
    def __init__(self, server: "XenstoredServer"):
        self.server = server
        self.store = server.store
        self.transport = None
        self.conn = None
        self.buf = bytearray()

    def connection_made(self, transport):
        self.transport = transport
        self.conn = Connection(self.store, 0, self._event)
        self.server._protocols.add(self)

    def connection_lost(self, exc):
        if self.conn is not None:
            self.conn.close()
        self.server._protocols.discard(self)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _send(self, data: bytes):
        t = self.transport
        if t.is_closing():
            return
        t.write(data)
        if t.get_write_buffer_size() > OUTPUT_LIMIT:
            log.warning("xenstored: dropping a client that does not read its replies")
            t.abort()
            self.conn.close()

    def _event(self, path: str, token: str):
        body = path.encode("latin-1") + b"\0" + token.encode("latin-1") + b"\0"
        if len(body) <= P.PAYLOAD_MAX:  # over-long events are not sent, as in C xenstored
            self._send(P.frame(P.XS_WATCH_EVENT, 0, 0, body))

    def data_received(self, data):
        buf = self.buf
        buf += data
        off = 0
        hsize = P.HEADER.size
        while len(buf) - off >= hsize:
            mtype, req_id, tx_id, length = P.HEADER.unpack_from(buf, off)
            if length > P.PAYLOAD_MAX:
                log.warning("xenstored: client sent a %d-byte payload: closing its connection", length)
                self.conn.close()
                self.transport.abort()
                buf.clear()
                return
            if len(buf) - off - hsize < length:
                break
            payload = bytes(buf[off + hsize:off + hsize + length])
            off += hsize + length
            rtype, body = dispatch(self.store, self.conn, mtype, tx_id, payload)
            self._send(P.frame(rtype, req_id, tx_id, body))
            self.conn.flush_after_reply()
            if self.transport.is_closing():
                buf.clear()
                return
        if off:
            del buf[:off]


class XenstoredServer:
    """xenstored on a Unix socket, inside an asyncio loop:

        server = await XenstoredServer.start("/data/xenstored/socket")
        server.store.populate_domain(...)
        ...
        await server.close()
    """

    def __init__(self, path: str, store: Store = None):
        self.path = path
        self.store = store if store is not None else Store()
        self._server = None
        self._protocols = set()

    @classmethod
    async def start(cls, path: str, store: Store = None) -> "XenstoredServer":
        self = cls(path, store)
        await self._listen()
        return self

    async def _listen(self):
        path = self.path
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, f"xenstored socket path too long for AF_UNIX: {path}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _remove_stale_socket(path)
        loop = asyncio.get_running_loop()
        old = os.umask(0o077)
        try:
            self._server = await loop.create_unix_server(lambda: _WireProtocol(self), path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        log.info("xenstored: listening on %s", path)

    async def close(self):
        if self._server is None:
            return
        self._server.close()
        for proto in list(self._protocols):
            if proto.transport is not None:
                proto.transport.abort()
            if proto.conn is not None:
                proto.conn.close()
        self._protocols.clear()
        await self._server.wait_closed()
        self._server = None
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def _remove_stale_socket(path: str):
    """Unlink a socket file nobody listens on; refuse to steal a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a xenstored already listens on {path}")


class ThreadedXenstored:
    """xenstored in a thread of its own with its own event loop, for tests
    and tools that are not asyncio programs.  ``call(fn, *args)`` runs
    ``fn(*args)`` in that loop's thread (where the Store must be used) and
    returns its result.

        with ThreadedXenstored(path) as xsd:
            xsd.call(xsd.store.write, "/a", b"1")
    """

    def __init__(self, path: str, store: Store = None):
        self.path = path
        self.store = store if store is not None else Store()
        self.server = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xenstored", daemon=True)
        self._thread.start()
        try:
            self.server = self._run(XenstoredServer.start(path, self.store))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn, *args, **kw):
        async def run():
            return fn(*args, **kw)
        return self._run(run())

    def _stop_loop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close(self):
        if self.server is not None:
            self._run(self.server.close())
            self.server = None
            self._stop_loop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
