"""The xenstore shim (csrc/xenstore_shim.c through xapi._xenstore_py) and its
pure-Python reference (xapi.xenstore_ref), against a small xenstored stand-in
started in the test: the wire protocol over a Unix socket, an in-memory tree
and snapshot transactions.  (The project's real xenstored arrives later.)
"""
import errno
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.shim_impls import compiled_or_none, impl_params, run_python
from xapi import xenstore_ref
from xapi.xenstore_errors import XenstoreError

compiled = compiled_or_none("xapi._xenstore_py")
needs_compiled, IMPLS = impl_params(xenstore_ref, compiled, "xapi._xenstore")
AVAILABLE = [xenstore_ref] + ([compiled] if compiled is not None else [])

XS_DIRECTORY, XS_READ, XS_WATCH, XS_UNWATCH = 1, 2, 4, 5
XS_TRANSACTION_START, XS_TRANSACTION_END = 6, 7
XS_WRITE, XS_MKDIR, XS_RM, XS_WATCH_EVENT, XS_ERROR = 11, 12, 13, 15, 16
HEADER = struct.Struct("<IIII")


# --------------------------------------------------------------- the peer --


class Node:
    __slots__ = ("value", "children")

    def __init__(self, value=b""):
        self.value = value
        self.children = {}

    def copy(self):
        n = Node(self.value)
        n.children = {k: c.copy() for k, c in self.children.items()}
        return n


class Refused(Exception):
    def __init__(self, name):
        self.name = name


class PeerState:
    """The tree and transactions; requests are handled under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.root = Node()
        self.generation = 0
        self.txs = {}  # id -> [root copy, generation at start]
        self.next_tx = 1
        self.requests = []  # (type, tx, payload) as received

    @staticmethod
    def parts(raw: bytes):
        path = raw.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            path = "/local/domain/0/" + path
        if path == "/":
            return []
        parts = path[1:].split("/")
        if any(p == "" for p in parts):
            raise Refused("EINVAL")
        if parts[0] == "denied":
            raise Refused("EACCES")
        return parts

    @staticmethod
    def lookup(root, parts):
        node = root
        for p in parts:
            node = node.children.get(p)
            if node is None:
                return None
        return node

    @staticmethod
    def create(root, parts):
        node = root
        for p in parts:
            node = node.children.setdefault(p, Node())
        return node

    def handle(self, type_, tx, payload):
        with self.lock:
            self.requests.append((type_, tx, payload))
            if type_ == XS_TRANSACTION_START:
                tid = self.next_tx
                self.next_tx += 1
                self.txs[tid] = [self.root.copy(), self.generation]
                return b"%d\0" % tid
            if tx and tx not in self.txs:
                raise Refused("ENOENT")
            if type_ == XS_TRANSACTION_END:
                if not tx:
                    raise Refused("EINVAL")
                root, gen = self.txs.pop(tx)
                if payload.rstrip(b"\0") == b"T":
                    if gen != self.generation:
                        raise Refused("EAGAIN")
                    self.root = root
                    self.generation += 1
                return b"OK\0"
            root = self.txs[tx][0] if tx else self.root
            raw, _, value = payload.partition(b"\0")
            parts = self.parts(raw)
            if type_ == XS_READ:
                node = self.lookup(root, parts)
                if node is None:
                    raise Refused("ENOENT")
                return node.value
            if type_ == XS_DIRECTORY:
                node = self.lookup(root, parts)
                if node is None:
                    raise Refused("ENOENT")
                return b"".join(k.encode("utf-8", "surrogateescape") + b"\0" for k in node.children)
            if type_ in (XS_WRITE, XS_MKDIR, XS_RM):
                if type_ == XS_WRITE:
                    self.create(root, parts).value = value
                elif type_ == XS_MKDIR:
                    self.create(root, parts)
                else:
                    if not parts:
                        raise Refused("EINVAL")
                    parent = self.lookup(root, parts[:-1])
                    if parent is None:
                        raise Refused("ENOENT")
                    parent.children.pop(parts[-1], None)  # absent is fine, as in xenstored
                if not tx:
                    self.generation += 1
                return b"OK\0"
            raise Refused("EINVAL")


class Handler(socketserver.BaseRequestHandler):
    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def handle(self):
        state = self.server.state
        while True:
            hdr = self.recv_exact(HEADER.size)
            if hdr is None:
                return
            type_, req_id, tx, length = HEADER.unpack(hdr)
            payload = self.recv_exact(length) if length else b""
            if payload is None:
                return
            try:
                rtype, body = type_, state.handle(type_, tx, payload)
            except Refused as r:
                rtype, body = XS_ERROR, r.name.encode() + b"\0"
            if type_ == XS_READ and payload.startswith(b"/spurious-watch"):
                # an unrelated watch event first, as xenstored may send one at any time
                ev = b"/some/path\0token\0"
                self.request.sendall(HEADER.pack(XS_WATCH_EVENT, 0, 0, len(ev)) + ev)
            self.request.sendall(HEADER.pack(rtype, req_id, tx, len(body)) + body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def peer():
    d = tempfile.mkdtemp(prefix="xs-peer-")
    path = os.path.join(d, "socket")
    server = Server(path, Handler)
    server.state = PeerState()
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(d, ignore_errors=True)


def one_shot_peer(reply: bytes):
    """A peer that reads one request, answers `reply` (raw bytes, may be
    broken), then hangs up.  `reply` may contain {req} for the request id."""
    d = tempfile.mkdtemp(prefix="xs-bad-")
    path = os.path.join(d, "socket")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)

    def run():
        conn, _ = lsock.accept()
        with conn:
            hdr = b""
            while len(hdr) < 16:
                chunk = conn.recv(16 - len(hdr))
                if not chunk:
                    return
                hdr += chunk
            _type, req_id, _tx, length = HEADER.unpack(hdr)
            left = length
            while left:
                left -= len(conn.recv(left))
            conn.sendall(reply.replace(b"{req}", struct.pack("<I", req_id)))
        lsock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return path, t, d


# ------------------------------------------------------------------ tests --


@pytest.mark.parametrize("impl", IMPLS)
def test_missing_socket(impl, tmp_path):
    with pytest.raises(XenstoreError) as e:
        impl.connect(str(tmp_path / "nope"))
    assert e.value.errno == errno.ENOENT
    assert "cannot connect to xenstored" in e.value.strerror


@pytest.mark.parametrize("impl", IMPLS)
def test_nobody_listening(impl, tmp_path):
    path = str(tmp_path / "dead")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening
    try:
        with pytest.raises(XenstoreError) as e:
            impl.connect(path)
        assert e.value.errno == errno.ECONNREFUSED
    finally:
        s.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_path_too_long(impl):
    with pytest.raises(XenstoreError) as e:
        impl.connect("/tmp/" + "x" * 200)
    assert e.value.errno == errno.ENAMETOOLONG


@pytest.mark.parametrize("impl", IMPLS)
def test_default_path_from_environment(impl, peer, monkeypatch):
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setenv("XENSTORED_RUNDIR", os.path.dirname(peer.server_address))
    assert impl.default_path() == peer.server_address
    monkeypatch.setenv("XENSTORED_PATH", peer.server_address)
    monkeypatch.setenv("XENSTORED_RUNDIR", "/nonexistent")
    assert impl.default_path() == peer.server_address
    with impl.connect() as xs:
        assert xs.backend == "wire" and xs.path == peer.server_address
        xs.write("/env-test", b"yes")
        assert xs.read("/env-test") == b"yes"
    monkeypatch.delenv("XENSTORED_PATH")
    monkeypatch.delenv("XENSTORED_RUNDIR")
    assert impl.default_path() == "/var/run/xenstored/socket"


@pytest.mark.parametrize("impl", IMPLS)
def test_round_trip(impl, peer):
    base = f"/rt/{impl.__name__}"
    with impl.connect(peer.server_address) as xs:
        xs.write(f"{base}/a", b"hello")
        xs.write(f"{base}/b/c", b"\0binary\xff\0")
        xs.write(f"{base}/empty", b"")
        xs.write(f"{base}/ba", bytearray(b"array"))
        xs.mkdir(f"{base}/dir")
        assert xs.read(f"{base}/a") == b"hello"
        assert xs.read(f"{base}/b/c") == b"\0binary\xff\0"
        assert xs.read(f"{base}/b") == b""  # created on the way
        assert xs.read(f"{base}/empty") == b""
        assert xs.read(f"{base}/ba") == b"array"
        assert sorted(xs.directory(base)) == ["a", "b", "ba", "dir", "empty"]
        assert xs.directory(f"{base}/dir") == []
        assert "rt" in xs.directory("/")
        xs.rm(f"{base}/b")
        assert sorted(xs.directory(base)) == ["a", "ba", "dir", "empty"]
        xs.rm(f"{base}/b")  # already gone, parent exists: fine
        with pytest.raises(XenstoreError) as e:
            xs.read(f"{base}/b/c")
        assert e.value.errno == errno.ENOENT
        xs.rm(base)
        with pytest.raises(XenstoreError) as e:
            xs.directory(base)
        assert e.value.errno == errno.ENOENT


@pytest.mark.parametrize("impl", IMPLS)
def test_wire_format(impl, peer):
    with impl.connect(peer.server_address) as xs:
        del peer.state.requests[:]
        xs.write("/wf/k", b"v\0w")
        xs.read("/wf/k")
        xs.mkdir("/wf/d")
        xs.directory("/wf")
        tx = xs.transaction_start()
        xs.read("/wf/k", tx)
        xs.transaction_end(tx, commit=False)
        xs.rm("/wf")
    assert peer.state.requests == [
        (XS_WRITE, 0, b"/wf/k\0v\0w"),
        (XS_READ, 0, b"/wf/k\0"),
        (XS_MKDIR, 0, b"/wf/d\0"),
        (XS_DIRECTORY, 0, b"/wf\0"),
        (XS_TRANSACTION_START, 0, b"\0"),
        (XS_READ, tx, b"/wf/k\0"),
        (XS_TRANSACTION_END, tx, b"F\0"),
        (XS_RM, 0, b"/wf\0"),
    ]


@pytest.mark.parametrize("impl", IMPLS)
def test_daemon_errors(impl, peer):
    with impl.connect(peer.server_address) as xs:
        cases = [
            (lambda: xs.read("/no/such/node"), errno.ENOENT),
            (lambda: xs.directory("/no/such/node"), errno.ENOENT),
            (lambda: xs.rm("/no/such/node"), errno.ENOENT),  # parent missing too
            (lambda: xs.read("/denied/x"), errno.EACCES),
            (lambda: xs.write("/denied/x", b"1"), errno.EACCES),
            (lambda: xs.read("/bad//path"), errno.EINVAL),
            (lambda: xs.read("/x", 12345), errno.ENOENT),  # unknown transaction
            (lambda: xs.transaction_end(9999), errno.ENOENT),
        ]
        for call, code in cases:
            with pytest.raises(XenstoreError) as e:
                call()
            assert e.value.errno == code, e.value
        # none of these break the connection
        xs.write("/still/usable", b"1")
        assert xs.read("/still/usable") == b"1"


@pytest.mark.parametrize("impl", IMPLS)
def test_client_side_checks(impl, peer):
    with impl.connect(peer.server_address) as xs:
        with pytest.raises(XenstoreError) as e:
            xs.write("/big", b"x" * 4096)
        assert e.value.errno == errno.E2BIG
        xs.write("/big", b"x" * (4096 - len("/big") - 1))  # exactly the limit
        assert len(xs.read("/big")) == 4091
        with pytest.raises(XenstoreError) as e:
            xs.read("/a\0b")
        assert e.value.errno == errno.EINVAL
        with pytest.raises(XenstoreError) as e:
            xs.read("/a", -1)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(TypeError):
            xs.write("/a", "text")
        with pytest.raises(TypeError):
            xs.read(b"/a")
        assert xs.read("/big")[:1] == b"x"  # still usable


@pytest.mark.parametrize("impl", IMPLS)
def test_transactions(impl, peer):
    with impl.connect(peer.server_address) as xs, impl.connect(peer.server_address) as other:
        xs.write("/tx/n", b"0")
        tx = xs.transaction_start()
        assert tx > 0
        xs.write("/tx/n", b"1", tx)
        xs.write("/tx/new", b"x", tx)
        assert xs.read("/tx/n", tx) == b"1"
        assert xs.read("/tx/n") == b"0"  # not visible outside before commit
        assert sorted(xs.directory("/tx", tx)) == ["n", "new"]
        xs.transaction_end(tx)
        assert other.read("/tx/n") == b"1" and other.read("/tx/new") == b"x"

        tx = xs.transaction_start()
        xs.write("/tx/n", b"2", tx)
        xs.transaction_end(tx, commit=False)
        assert xs.read("/tx/n") == b"1"

        tx = xs.transaction_start()
        xs.write("/tx/n", b"3", tx)
        other.write("/tx/n", b"conflict")
        with pytest.raises(XenstoreError) as e:
            xs.transaction_end(tx)
        assert e.value.errno == errno.EAGAIN
        assert xs.read("/tx/n") == b"conflict"

        tx = xs.transaction_start()  # the retry goes through
        xs.write("/tx/n", xs.read("/tx/n", tx) + b"+1", tx)
        xs.transaction_end(tx, commit=True)
        assert other.read("/tx/n") == b"conflict+1"
        xs.rm("/tx")


@pytest.mark.parametrize("impl", IMPLS)
def test_unrelated_watch_event_is_skipped(impl, peer):
    with impl.connect(peer.server_address) as xs:
        xs.write("/spurious-watch", b"w")
        assert xs.read("/spurious-watch") == b"w"
        assert xs.read("/spurious-watch") == b"w"


@pytest.mark.parametrize("impl", IMPLS)
def test_closed_client(impl, peer):
    xs = impl.connect(peer.server_address)
    assert isinstance(xs, impl.Client)
    xs.close()
    xs.close()
    with pytest.raises(XenstoreError) as e:
        xs.read("/x")
    assert e.value.errno == errno.EBADF


@pytest.mark.parametrize("impl", IMPLS)
def test_backends(impl, peer):
    with pytest.raises(XenstoreError) as e:
        impl.connect(peer.server_address, backend="nope")
    assert e.value.errno == errno.EINVAL
    if not impl.HAVE_LIBXENSTORE:
        with pytest.raises(XenstoreError) as e:
            impl.connect(backend="xs")
        assert e.value.errno == errno.ENOSYS and "built without libxenstore" in e.value.strerror


BAD_REPLIES = [
    (b"", errno.ECONNRESET),  # hangs up
    (HEADER.pack(XS_READ, 1, 0, 5)[:4], errno.ECONNRESET),  # half a header
    (HEADER.pack(XS_READ, 0, 0, 10)[:4] + b"{req}" + HEADER.pack(0, 0, 0, 10)[8:] + b"abc", errno.ECONNRESET),
    (HEADER.pack(XS_READ, 0, 0, 1 << 30)[:4] + b"{req}" + HEADER.pack(0, 0, 0, 1 << 30)[8:], errno.EIO),  # huge
    (HEADER.pack(XS_READ, 999999, 0, 2) + b"hi", errno.EIO),  # wrong req_id
    (HEADER.pack(XS_WRITE, 0, 0, 3)[:4] + b"{req}" + HEADER.pack(0, 0, 0, 3)[8:] + b"OK\0", errno.EIO),  # wrong type
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reply,code", BAD_REPLIES)
def test_misbehaving_daemon(impl, reply, code):
    path, t, d = one_shot_peer(reply)
    try:
        xs = impl.connect(path)
        with pytest.raises(XenstoreError) as e:
            xs.read("/x")
        assert e.value.errno == code, e.value
        with pytest.raises(XenstoreError) as e:  # the stream is out of step now
            xs.read("/x")
        assert e.value.errno == errno.EIO
        xs.close()
    finally:
        t.join(5)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_unknown_error_name_and_bad_tx_id(impl):
    body = b"EWHATEVER\0"
    path, t, d = one_shot_peer(HEADER.pack(XS_ERROR, 0, 0, len(body))[:4] + b"{req}"
                               + HEADER.pack(0, 0, 0, len(body))[8:] + body)
    try:
        with impl.connect(path) as xs:
            with pytest.raises(XenstoreError) as e:
                xs.read("/x")
            assert e.value.errno == errno.EINVAL  # as libxenstore
    finally:
        t.join(5)
        shutil.rmtree(d, ignore_errors=True)
    body = b"nope\0"
    path, t, d = one_shot_peer(HEADER.pack(XS_TRANSACTION_START, 0, 0, len(body))[:4] + b"{req}"
                               + HEADER.pack(0, 0, 0, len(body))[8:] + body)
    try:
        with impl.connect(path) as xs:
            with pytest.raises(XenstoreError) as e:
                xs.transaction_start()
            assert e.value.errno == errno.EIO
    finally:
        t.join(5)
        shutil.rmtree(d, ignore_errors=True)


@needs_compiled
def test_implementations_agree(peer):
    """The same script gives the same results and errors through both."""
    script = [
        ("write", "/agree/a", b"1"), ("read", "/agree/a"), ("read", "/agree/zz"), ("mkdir", "/agree/d"),
        ("directory", "/agree"), ("rm", "/agree/zz/q"), ("read", "/denied"), ("read", "relative/x"),
        ("write", "relative/x", b"r"), ("read", "relative/x"), ("read", "/local/domain/0/relative/x"),
        ("rm", "/agree"), ("directory", "/agree"), ("rm", "/local"),
    ]
    results = []
    for impl in (xenstore_ref, compiled):
        out = []
        with impl.connect(peer.server_address) as xs:
            for op, *args in script:
                try:
                    r = getattr(xs, op)(*args)
                    out.append(sorted(r) if isinstance(r, list) else r)
                except XenstoreError as e:
                    out.append(("error", e.errno))
        results.append(out)
    assert results[0] == results[1]


@settings(max_examples=40, deadline=None)
@given(
    name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_@", min_size=1, max_size=40),
    value=st.binary(max_size=4000),
)
def test_values_round_trip(peer, name, value):
    path = f"/prop/{name}"
    for impl in AVAILABLE:
        with impl.connect(peer.server_address) as xs:
            xs.write(path, value)
            assert xs.read(path) == value
            assert name in xs.directory("/prop")
            xs.rm(path)


@needs_compiled
@pytest.mark.skipif(compiled is None or not compiled.HAVE_LIBXENSTORE, reason="built without libxenstore")
def test_libxenstore_backend_against_peer(peer, monkeypatch):
    with pytest.raises(XenstoreError) as e:
        compiled.connect(peer.server_address, backend="xs")
    assert e.value.errno == errno.EINVAL
    monkeypatch.setenv("XENSTORED_PATH", peer.server_address)
    with compiled.connect(backend="xs") as xs:
        assert xs.backend == "xs" and xs.path is None
        xs.write("/libxs/a", b"via libxenstore")
        assert xs.read("/libxs/a") == b"via libxenstore"
        assert xs.directory("/libxs") == ["a"]
        with pytest.raises(XenstoreError) as e:
            xs.read("/libxs/missing")
        assert e.value.errno == errno.ENOENT
        tx = xs.transaction_start()
        xs.write("/libxs/a", b"tx", tx)
        xs.transaction_end(tx)
        assert xs.read("/libxs/a") == b"tx"
        xs.rm("/libxs")


@pytest.mark.skipif(not shutil.which("xenstore-write"), reason="Debian xenstore-utils not installed")
def test_xenstore_utils_talk_to_the_same_peer(peer):
    env = dict(os.environ, XENSTORED_PATH=peer.server_address)
    subprocess.run(["xenstore-write", "/utils/k", "from-tools"], env=env, check=True, timeout=10)
    impl = compiled or xenstore_ref
    with impl.connect(peer.server_address) as xs:
        assert xs.read("/utils/k") == b"from-tools"
        xs.write("/utils/k", b"from-us")
    out = subprocess.run(["xenstore-read", "/utils/k"], env=env, check=True, timeout=10,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "from-us"


SUBPROCESS = """
import errno, sys
from xapi import {mod} as impl
from xapi.xenstore_errors import XenstoreError
try:
    impl.connect({path!r})
except XenstoreError as e:
    print(e.errno)
    sys.exit(0)
sys.exit(3)
"""


@pytest.mark.parametrize("impl", IMPLS)
def test_missing_socket_in_subprocess(impl, tmp_path):
    mod = impl.__name__.rsplit(".", 1)[1]
    p = run_python(SUBPROCESS.format(mod=mod, path=str(tmp_path / "none")))
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert int(p.stdout) == errno.ENOENT


@pytest.mark.parametrize("pure", ["1", ""])
def test_facade_follows_xapi_pure(pure, peer):
    if not pure and compiled is None:
        pytest.skip("xapi._xenstore not built")
    env = dict(os.environ, XAPI_PURE=pure, XENSTORED_PATH=peer.server_address)
    code = (
        "from xapi import xenstore\n"
        "with xenstore.connect() as xs:\n"
        "    xs.write('/facade', b'ok'); assert xs.read('/facade') == b'ok'\n"
        "print(xenstore.IMPLEMENTATION)\n"
    )
    p = run_python(code, env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ("xapi.xenstore_ref" if pure else "xapi._xenstore_py")


# ----------------------------------- permissions, watches, transactions against our xenstored --


@pytest.fixture
def xsd(tmp_path):
    """The project's xenstored (xapi.xenstored) on a socket of its own."""
    from xapi.xenstored import ThreadedXenstored
    server = ThreadedXenstored(str(tmp_path / "socket"))
    try:
        yield server
    finally:
        server.close()


def _clients(xsd, monkeypatch):
    """(label, client) for every way in: the reference, the compiled wire client, libxenstore."""
    out = [("ref", xenstore_ref.connect(xsd.path))]
    if compiled is not None:
        out.append(("wire", compiled.connect(xsd.path)))
        if compiled.HAVE_LIBXENSTORE:
            monkeypatch.setenv("XENSTORED_PATH", xsd.path)
            out.append(("xs", compiled.connect(backend="xs")))
    return out


def test_permissions_on_our_xenstored(xsd, monkeypatch):
    for label, xs in _clients(xsd, monkeypatch):
        with xs:
            base = f"/perms/{label}"
            xs.write(f"{base}/node", b"v")
            assert xs.get_perms(f"{base}/node") == ["n0"], label
            xs.set_perms(f"{base}/node", ["n0", "r5", "b7"])
            assert xs.get_perms(f"{base}/node") == ["n0", "r5", "b7"], label
            assert xsd.call(xsd.store.get_perms, f"{base}/node") == ["n0", "r5", "b7"]
            tx = xs.transaction_start()                         # inside a transaction too
            xs.set_perms(f"{base}/node", ["w3"], tx)
            assert xs.get_perms(f"{base}/node", tx) == ["w3"]
            xs.transaction_end(tx)
            assert xs.get_perms(f"{base}/node") == ["w3"], label
            with pytest.raises(XenstoreError) as e:
                xs.get_perms(f"{base}/missing")
            assert e.value.errno == errno.ENOENT, label
            for bad in ([], ["x1"], ["r"], ["r-1"], "n0"):
                with pytest.raises(XenstoreError) as e:
                    xs.set_perms(f"{base}/node", bad)
                assert e.value.errno == errno.EINVAL, (label, bad)


def test_watches_on_our_xenstored(xsd, monkeypatch):
    for label, xs in _clients(xsd, monkeypatch):
        with xs, xenstore_ref.connect(xsd.path) as writer:
            base = f"/watched/{label}"
            xs.watch(base, "tok-" + label)
            assert xs.read_watch(2) == (base, "tok-" + label)      # a new watch fires once at once
            assert xs.read_watch(0) is None
            writer.write(f"{base}/a/b", b"1")                       # another connection's change
            assert xs.read_watch(2) == (f"{base}/a/b", "tok-" + label)
            xs.write(f"{base}/own", b"1")                           # an event during our own request
            assert xs.read(f"{base}/own") == b"1"
            assert xs.read_watch(2) == (f"{base}/own", "tok-" + label)
            xs.watch("@releaseDomain", "rel")
            assert xs.read_watch(2) == ("@releaseDomain", "rel")
            xs.unwatch(base, "tok-" + label)
            writer.write(f"{base}/after", b"1")
            assert xs.read_watch(0.2) is None
            xs.unwatch("@releaseDomain", "rel")
            with pytest.raises(XenstoreError) as e:
                xs.unwatch(base, "tok-" + label)
            assert e.value.errno == errno.ENOENT, label
            assert xs.fileno() >= 0
            with pytest.raises(XenstoreError):
                xs.read_watch(-1)


def test_transactions_on_our_xenstored(xsd, monkeypatch):
    for label, xs in _clients(xsd, monkeypatch):
        with xs, xenstore_ref.connect(xsd.path) as other:
            base = f"/txn/{label}"
            xs.write(f"{base}/n", b"0")
            tx = xs.transaction_start()
            xs.write(f"{base}/n", b"1", tx)
            assert other.read(f"{base}/n") == b"0"                  # not visible before the commit
            xs.transaction_end(tx)
            assert other.read(f"{base}/n") == b"1"
            tx = xs.transaction_start()
            assert xs.read(f"{base}/n", tx) == b"1"
            other.write(f"{base}/n", b"conflict")
            xs.write(f"{base}/n", b"2", tx)
            with pytest.raises(XenstoreError) as e:
                xs.transaction_end(tx)
            assert e.value.errno == errno.EAGAIN, label
            assert other.read(f"{base}/n") == b"conflict"
            tx = xs.transaction_start()
            xs.write(f"{base}/aborted", b"x", tx)
            xs.transaction_end(tx, commit=False)
            with pytest.raises(XenstoreError):
                other.read(f"{base}/aborted")


@pytest.mark.skipif(not shutil.which("xenstore-chmod"), reason="Debian xenstore-utils not installed")
def test_permissions_and_watches_agree_with_xenstore_utils(xsd):
    env = dict(os.environ, XENSTORED_PATH=xsd.path)
    env.pop("XENSTORED_RUNDIR", None)
    impl = compiled or xenstore_ref
    with impl.connect(xsd.path) as xs:
        xs.write("/utils/p", b"1")
        subprocess.run(["xenstore-chmod", "/utils/p", "n0", "r4"], env=env, check=True, timeout=10)
        assert xs.get_perms("/utils/p") == ["n0", "r4"]
        xs.set_perms("/utils/p", ["b0", "w9"])
        out = subprocess.run(["xenstore-ls", "-p", "/utils"], env=env, check=True, timeout=10,
                             capture_output=True, text=True).stdout
        assert "(b0,w9)" in out.replace(" ", "")
        xs.watch("/utils", "t")
        assert xs.read_watch(2) == ("/utils", "t")
        subprocess.run(["xenstore-write", "/utils/q", "2"], env=env, check=True, timeout=10)
        assert xs.read_watch(5) == ("/utils/q", "t")
