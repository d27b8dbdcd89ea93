"""xapi.xenstored: the wire protocol (raw sockets and the xapi.xenstore
clients), permissions, watches, transactions, domains, the libxl-style domain
layout and the standalone daemon."""
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xapi import xenstore, xenstore_ref
from xapi.compiled import PURE
from xapi.xenstore_errors import XenstoreError
from xapi.xenstored import ThreadedXenstored, Store, disk_devid, socket_path
from xapi.xenstored import protocol as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from xapi import _xenstore_py as compiled
except ImportError:
    if not PURE:
        raise
    compiled = None

CLIENTS = [pytest.param(xenstore_ref, id="ref"),
           pytest.param(compiled, id="compiled",
                        marks=pytest.mark.skipif(compiled is None, reason="xapi._xenstore not built"))]


def z(*parts) -> bytes:
    """NUL-terminated strings."""
    return b"".join((p if isinstance(p, bytes) else str(p).encode()) + b"\0" for p in parts)


class Raw:
    """A bare wire client: requests out, replies and watch events in."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.req = 100
        self.events = []

    def close(self):
        self.sock.close()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, mtype, payload=b"", tx=0):
        self.req += 1
        self.sock.sendall(P.frame(mtype, self.req, tx, payload))
        return self.req

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("xenstored closed the connection")
            buf += chunk
        return buf

    def recv(self):
        mtype, req, tx, length = P.HEADER.unpack(self._exact(16))
        return mtype, req, tx, self._exact(length) if length else b""

    def call(self, mtype, payload=b"", tx=0):
        """(reply type, reply body); watch events met on the way are kept."""
        req = self.send(mtype, payload, tx)
        while True:
            rtype, rreq, rtx, body = self.recv()
            if rtype == P.XS_WATCH_EVENT:
                assert (rreq, rtx) == (0, 0)
                self.events.append(tuple(body.decode().split("\0")[:2]))
                continue
            assert rreq == req and rtx == tx
            return rtype, body

    def ok(self, mtype, payload=b"", tx=0) -> bytes:
        rtype, body = self.call(mtype, payload, tx)
        assert rtype == mtype, (rtype, body)
        return body

    def err(self, mtype, payload=b"", tx=0) -> str:
        rtype, body = self.call(mtype, payload, tx)
        assert rtype == P.XS_ERROR, (rtype, body)
        assert body.endswith(b"\0")
        return body[:-1].decode()

    def event(self, timeout=2.0):
        if not self.events:
            self.sock.settimeout(timeout)
            try:
                rtype, _req, _tx, body = self.recv()
            finally:
                self.sock.settimeout(5)
            assert rtype == P.XS_WATCH_EVENT, (rtype, body)
            self.events.append(tuple(body.decode().split("\0")[:2]))
        return self.events.pop(0)

    def no_event(self, wait=0.15):
        assert not self.events, self.events
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(16)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(5)
        raise AssertionError(f"unexpected data: {data!r}")

    def write(self, path, value, tx=0):
        self.ok(P.XS_WRITE, path.encode() + b"\0" + value, tx)

    def read(self, path, tx=0):
        return self.ok(P.XS_READ, z(path), tx)


@pytest.fixture
def xsd():
    d = tempfile.mkdtemp(prefix="xsd-")
    server = ThreadedXenstored(os.path.join(d, "sock"))
    server.raws = []

    def raw():
        r = Raw(server.path)
        server.raws.append(r)
        return r
    server.raw = raw
    try:
        yield server
    finally:
        for r in server.raws:
            r.close()
        server.close()
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- the wire --


def test_initial_tree(xsd):
    r = xsd.raw()
    assert r.ok(P.XS_DIRECTORY, z("/")) == z("tool")
    assert r.ok(P.XS_DIRECTORY, z("/tool")) == z("xenstored")
    assert r.ok(P.XS_READ, z("/tool/xenstored")) == b""
    assert r.ok(P.XS_GET_PERMS, z("/")) == z("n0")
    assert r.ok(P.XS_GET_PERMS, z("@releaseDomain")) == z("n0")
    assert r.err(P.XS_READ, z("/nope")) == "ENOENT"


@pytest.mark.parametrize("impl", CLIENTS)
def test_clients_round_trip(xsd, impl):
    with impl.connect(xsd.path) as xs, impl.connect(xsd.path) as other:
        xs.write("/rt/a/b", b"\0bin\xff")
        assert xs.read("/rt/a/b") == b"\0bin\xff"
        assert xs.read("/rt/a") == b""  # made on the way
        xs.mkdir("/rt/d")
        assert xs.directory("/rt") == ["a", "d"]  # creation order
        xs.rm("/rt/a")
        xs.rm("/rt/a")  # gone already, parent exists: fine
        with pytest.raises(XenstoreError) as e:
            xs.rm("/rt/a/b")  # parent missing too
        assert e.value.errno == errno.ENOENT
        xs.write("rel/x", b"r")  # relative: below /local/domain/0
        assert other.read("/local/domain/0/rel/x") == b"r"
        tx = xs.transaction_start()
        xs.write("/rt/t", b"1", tx)
        with pytest.raises(XenstoreError) as e:
            other.read("/rt/t")
        assert e.value.errno == errno.ENOENT
        xs.transaction_end(tx)
        assert other.read("/rt/t") == b"1"
        tx = xs.transaction_start()
        xs.read("/rt/t", tx)
        other.write("/rt/t", b"2")
        with pytest.raises(XenstoreError) as e:
            xs.transaction_end(tx)
        assert e.value.errno == errno.EAGAIN
        xs.write("/big", b"x" * (4096 - len("/big") - 1))  # a full payload
        assert len(other.read("/big")) == 4091


def test_reply_header_and_errors(xsd):
    r = xsd.raw()
    req = r.send(P.XS_READ, z("/missing"))
    rtype, rreq, rtx, body = r.recv()
    assert (rtype, rreq, rtx, body) == (P.XS_ERROR, req, 0, b"ENOENT\0")
    tx = int(r.ok(P.XS_TRANSACTION_START, z("")).rstrip(b"\0"))
    req = r.send(P.XS_READ, z("/tool"), tx)
    assert r.recv() == (P.XS_READ, req, tx, b"")  # tx_id echoed
    for mtype in (20, 15, 16, 23, 999, 0xFFFF):
        assert r.err(mtype, z("/")) == "ENOSYS"
    assert r.err(P.XS_READ, z("/x"), tx=777) == "ENOENT"  # unknown transaction
    bad = [b"", b"/tool", z("/tool", "x"), b"/to\0ol\0", z("/a//b"), z("/a/"), z(""), z("/a b"),
           z("/caf\xc3\xa9"), z("@introduceDomain"), z("/" + "a" * 3100)]
    for payload in bad:
        assert r.err(P.XS_READ, payload) == "EINVAL", payload
    assert r.err(P.XS_WRITE, b"/no-nul") == "EINVAL"
    assert r.err(P.XS_RM, z("/")) == "EINVAL"
    assert r.ok(P.XS_READ, z("/tool")) == b""  # still in step


def test_oversized_payload_closes_the_connection(xsd):
    r, other = xsd.raw(), xsd.raw()
    r.write("/ok", b"1")
    r.send_raw(P.HEADER.pack(P.XS_WRITE, 1, 0, 4097) + b"/x\0" + b"y" * 4094)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        r.recv()
    assert other.read("/ok") == b"1"
    with pytest.raises(XenstoreError):
        xsd.call(xsd.store.read, "/x")


def test_big_replies_and_directory_part(xsd):
    r = xsd.raw()
    names = [f"child-{i:04d}-" + "n" * 40 for i in range(150)]  # ~7.5 KiB of names
    tx = int(r.ok(P.XS_TRANSACTION_START, z("")).rstrip(b"\0"))
    for n in names:
        r.ok(P.XS_MKDIR, z(f"/big/{n}"), tx)
    r.ok(P.XS_TRANSACTION_END, z("T"), tx)
    assert r.err(P.XS_DIRECTORY, z("/big")) == "E2BIG"
    got, off, gens = [], 0, set()
    while True:
        body = r.ok(P.XS_DIRECTORY_PART, z("/big", off))
        assert len(body) <= 4096
        gen, _, rest = body.partition(b"\0")
        gens.add(gen)
        if rest == b"\0" or rest == b"":
            break
        done = rest.endswith(b"\0\0")
        got += rest.rstrip(b"\0").decode().split("\0")
        off += len(rest) - (1 if done else 0)
        if done:
            break
    assert got == names and len(gens) == 1
    body = r.ok(P.XS_DIRECTORY_PART, z("/big", 10 ** 6))
    assert body == gens.pop() + b"\0\0"
    assert r.err(P.XS_DIRECTORY_PART, z("/big")) == "EINVAL"
    assert r.err(P.XS_DIRECTORY_PART, z("/nope", 0)) == "ENOENT"
    small = r.ok(P.XS_DIRECTORY_PART, z("/tool", 0))
    assert small.split(b"\0", 1)[1] == z("xenstored") + b"\0"


def test_perms_on_the_wire(xsd):
    r = xsd.raw()
    r.write("/p/a", b"1")
    r.ok(P.XS_SET_PERMS, z("/p", "n0", "r5", "b7"))
    assert r.ok(P.XS_GET_PERMS, z("/p")) == z("n0", "r5", "b7")
    r.write("/p/new/deep", b"x")  # new nodes inherit the parent's
    assert r.ok(P.XS_GET_PERMS, z("/p/new/deep")) == z("n0", "r5", "b7")
    assert r.ok(P.XS_GET_PERMS, z("/p/a")) == z("n0")  # existing ones keep theirs
    for bad in (z("/p"), z("/p", "x5"), z("/p", "r"), z("/p", "r5x"), z("/p", "r-1"), b"/p\0n0"):
        assert r.err(P.XS_SET_PERMS, bad) in ("EINVAL",), bad
    assert r.err(P.XS_SET_PERMS, z("/nope", "n0")) == "ENOENT"
    r.ok(P.XS_SET_PERMS, z("@releaseDomain", "n0", "r3"))
    assert r.ok(P.XS_GET_PERMS, z("@releaseDomain")) == z("n0", "r3")


def test_domain_requests(xsd):
    r = xsd.raw()
    r.ok(P.XS_WATCH, z("@introduceDomain", "intro"))
    r.ok(P.XS_WATCH, z("@releaseDomain", "rel"))
    assert r.event() == ("@introduceDomain", "intro")
    assert r.event() == ("@releaseDomain", "rel")
    assert r.ok(P.XS_GET_DOMAIN_PATH, z("7")) == z("/local/domain/7")
    assert r.err(P.XS_GET_DOMAIN_PATH, b"") == "EINVAL"
    assert r.ok(P.XS_IS_DOMAIN_INTRODUCED, z("0")) == z("T")
    assert r.ok(P.XS_IS_DOMAIN_INTRODUCED, z("7")) == z("F")
    assert r.ok(P.XS_IS_DOMAIN_INTRODUCED, z(P.DOMID_SELF)) == z("T")
    assert r.err(P.XS_INTRODUCE, z("7", "1234", "0")) == "EINVAL"  # no event channel
    assert r.err(P.XS_INTRODUCE, z("7", "1234")) == "EINVAL"
    r.ok(P.XS_INTRODUCE, z("7", "1234", "5"))
    assert r.event() == ("@introduceDomain", "intro")
    r.ok(P.XS_INTRODUCE, z("7", "1234", "6"))  # again: rebinds, no event
    r.no_event()
    assert r.ok(P.XS_IS_DOMAIN_INTRODUCED, z("7")) == z("T")
    r.ok(P.XS_INTRODUCE, z("8", "1", "1"))
    assert r.event() == ("@introduceDomain", "intro")
    r.ok(P.XS_SET_TARGET, z("8", "7"))
    assert r.err(P.XS_SET_TARGET, z("8", "9")) == "ENOENT"
    r.ok(P.XS_RESUME, z("7"))
    assert r.err(P.XS_RESUME, z("9")) == "ENOENT"
    assert r.err(P.XS_RELEASE, z("0")) == "EINVAL"
    r.ok(P.XS_RELEASE, z("7"))
    assert r.event() == ("@releaseDomain", "rel")
    assert r.err(P.XS_RELEASE, z("7")) == "ENOENT"
    assert r.ok(P.XS_IS_DOMAIN_INTRODUCED, z("7")) == z("F")


def test_control_and_reset_watches(xsd):
    r = xsd.raw()
    assert b"print" in r.ok(P.XS_CONTROL, z("help"))
    assert r.ok(P.XS_CONTROL, z("print", "hello from the test")) == z("OK")
    assert r.ok(P.XS_CONTROL, z("check")) == z("OK")
    assert r.err(P.XS_CONTROL, z("live-update", "-a")) == "EINVAL"
    assert r.err(P.XS_CONTROL, b"") == "EINVAL"
    r.ok(P.XS_WATCH, z("/rw", "t"))
    assert r.event() == ("/rw", "t")
    tx = int(r.ok(P.XS_TRANSACTION_START, z("")).rstrip(b"\0"))
    r.ok(P.XS_RESET_WATCHES, z(""))
    assert r.err(P.XS_READ, z("/tool"), tx) == "ENOENT"  # its transactions went too
    r.write("/rw/x", b"1")
    r.no_event()


# ---------------------------------------------------------------- watches --


def test_watches(xsd):
    r, w = xsd.raw(), xsd.raw()
    # the first event comes after the OK
    req = w.send(P.XS_WATCH, z("/w", "tok"))
    assert w.recv() == (P.XS_WATCH, req, 0, z("OK"))
    assert w.event() == ("/w", "tok")
    assert w.err(P.XS_WATCH, z("/w", "tok")) == "EEXIST"
    w.ok(P.XS_WATCH, z("/w", "tok2"))
    assert w.event() == ("/w", "tok2")
    w.ok(P.XS_UNWATCH, z("/w", "tok2"))
    assert w.err(P.XS_UNWATCH, z("/w", "tok2")) == "ENOENT"
    assert w.err(P.XS_WATCH, z("/w")) == "EINVAL"
    assert w.err(P.XS_WATCH, z("/w//x", "t")) == "EINVAL"

    r.write("/w/a/b", b"1")  # the node written (not the parents made for it)
    assert w.event() == ("/w/a/b", "tok")
    w.no_event()
    r.write("/elsewhere", b"1")
    w.no_event()
    r.ok(P.XS_MKDIR, z("/w/a"))  # exists: nothing
    w.no_event()
    r.ok(P.XS_MKDIR, z("/w/m"))
    assert w.event() == ("/w/m", "tok")
    r.ok(P.XS_SET_PERMS, z("/w/m", "n0", "r1"))
    assert w.event() == ("/w/m", "tok")
    r.ok(P.XS_RM, z("/w/nothing"))
    w.no_event()

    # removing a subtree: each removed node's own watches, the top one's ancestors' once
    w.ok(P.XS_WATCH, z("/w/a/b", "deep"))
    assert w.event() == ("/w/a/b", "deep")
    w.ok(P.XS_WATCH, z("/w/a/b/c/d", "missing"))
    assert w.event() == ("/w/a/b/c/d", "missing")
    r.ok(P.XS_RM, z("/w/a"))
    got = [w.event(), w.event()]
    assert sorted(got) == [("/w/a", "tok"), ("/w/a/b", "deep")]
    w.no_event()

    # a watcher's own write: the event comes before the reply, as in C xenstored
    w.write("/w/own", b"1")
    assert w.events == [("/w/own", "tok")]
    w.events.clear()

    w.ok(P.XS_UNWATCH, z("/w", "tok"))
    r.write("/w/x", b"1")
    w.no_event()


def test_relative_and_root_watches(xsd):
    r, w = xsd.raw(), xsd.raw()
    w.ok(P.XS_WATCH, z("rel", "r"))
    assert w.event() == ("rel", "r")
    r.write("/local/domain/0/rel/x", b"1")
    assert w.event() == ("rel/x", "r")
    w.ok(P.XS_UNWATCH, z("/local/domain/0/rel", "r"))  # the same watch, named absolutely
    w.ok(P.XS_WATCH, z("/", "root"))
    assert w.event() == ("/", "root")
    r.write("/anything", b"1")
    assert w.event() == ("/anything", "root")
    xsd.call(xsd.store.introduce_domain, 4)
    w.no_event()  # special events only reach watches on the special node


def test_watches_fire_at_commit(xsd):
    r, w = xsd.raw(), xsd.raw()
    w.ok(P.XS_WATCH, z("/c", "t"))
    assert w.event() == ("/c", "t")
    tx = int(r.ok(P.XS_TRANSACTION_START, z("")).rstrip(b"\0"))
    r.write("/c/a", b"1", tx)
    r.ok(P.XS_RM, z("/c/a"), tx)
    r.write("/c/b", b"1", tx)
    w.no_event()
    r.ok(P.XS_TRANSACTION_END, z("T"), tx)
    got = {w.event(), w.event()}
    assert got == {("/c/a", "t"), ("/c/b", "t")}
    tx = int(r.ok(P.XS_TRANSACTION_START, z("")).rstrip(b"\0"))
    r.write("/c/z", b"1", tx)
    r.ok(P.XS_TRANSACTION_END, z("F"), tx)
    w.no_event()
    assert r.err(P.XS_READ, z("/c/z")) == "ENOENT"


def test_in_process_writes_fire_socket_watches(xsd):
    w = xsd.raw()
    w.ok(P.XS_WATCH, z("/local/domain", "doms"))
    assert w.event() == ("/local/domain", "doms")
    xsd.call(xsd.store.write, "/local/domain/3/name", "vm3")
    assert w.event() == ("/local/domain/3/name", "doms")
    xsd.call(xsd.store.rm, "/local/domain/3")
    assert w.event() == ("/local/domain/3", "doms")  # removed descendants fire only their own watches
    w.no_event()


# ------------------------------------------------------------ transactions --


def test_transaction_semantics(xsd):
    a, b = xsd.raw(), xsd.raw()
    a.write("/t/x", b"0")
    a.write("/t/y", b"0")

    def start(c):
        return int(c.ok(P.XS_TRANSACTION_START, z("")).rstrip(b"\0"))

    # isolation: a transaction keeps what it has seen, and hides what it wrote
    tx = start(a)
    assert a.read("/t/x", tx) == b"0"
    b.write("/t/x", b"1")
    assert a.read("/t/x", tx) == b"0"
    a.write("/t/new", b"n", tx)
    assert b.err(P.XS_READ, z("/t/new")) == "ENOENT"
    assert a.ok(P.XS_DIRECTORY, z("/t"), tx) == z("x", "y", "new")
    assert a.err(P.XS_TRANSACTION_END, z("T"), tx) == "EAGAIN"  # /t/x changed
    assert a.err(P.XS_READ, z("/t/x"), tx) == "ENOENT"  # the transaction is gone

    # unrelated changes do not conflict
    tx = start(a)
    a.write("/t/x", a.read("/t/x", tx) + b"+", tx)
    b.write("/t/y", b"2")
    b.write("/elsewhere/q", b"2")
    a.ok(P.XS_TRANSACTION_END, z("T"), tx)
    assert b.read("/t/x") == b"1+"

    # creating a child changes the parent: concurrent creations conflict
    tx = start(a)
    a.write("/t/c1", b"1", tx)
    b.write("/t/c2", b"2")
    assert a.err(P.XS_TRANSACTION_END, z("T"), tx) == "EAGAIN"

    # a node read as missing and created meanwhile conflicts
    tx = start(a)
    assert a.err(P.XS_READ, z("/t/later"), tx) == "ENOENT"
    b.write("/t/later", b"1")
    assert a.err(P.XS_TRANSACTION_END, z("T"), tx) == "EAGAIN"

    # rm inside, seen outside at commit
    tx = start(a)
    a.ok(P.XS_RM, z("/t"), tx)
    assert b.read("/t/x") == b"1+"
    a.ok(P.XS_TRANSACTION_END, z("T"), tx)
    assert b.err(P.XS_READ, z("/t/x")) == "ENOENT"

    # the rules of the request
    tx = start(a)
    assert a.err(P.XS_TRANSACTION_START, z(""), tx) == "EBUSY"
    assert b.err(P.XS_READ, z("/tool"), tx) == "ENOENT"  # ids are per connection
    assert a.err(P.XS_TRANSACTION_END, z("X"), tx) == "EINVAL"
    assert a.err(P.XS_TRANSACTION_END, z("T")) == "ENOENT"  # no tx_id
    a.ok(P.XS_TRANSACTION_END, z("F"), tx)
    tx2 = start(a)
    assert tx2 != 0


# ------------------------------------------------------- robustness (fuzz) --


@pytest.fixture(scope="module")
def shared_xsd():
    d = tempfile.mkdtemp(prefix="xsd-")
    server = ThreadedXenstored(os.path.join(d, "sock"))
    yield server
    server.close()
    shutil.rmtree(d, ignore_errors=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3), st.binary(max_size=64)), max_size=6),
       tail=st.binary(max_size=40))
def test_malformed_requests_never_break_the_server(shared_xsd, frames, tail):
    r = Raw(shared_xsd.path)
    try:
        for mtype, tx, payload in frames:
            rtype, body = r.call(mtype, payload, tx)
            assert rtype in (mtype, P.XS_ERROR)
            if rtype == P.XS_ERROR:
                assert body[:-1].decode() in P.ERROR_NAMES and body.endswith(b"\0")
        r.send_raw(tail)  # garbage or half a message, then hang up
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        r.close()
    check = Raw(shared_xsd.path)
    try:
        assert check.ok(P.XS_READ, z("/tool/xenstored")) == b""
    finally:
        check.close()


# ------------------------------------------------ permissions (in process) --


def test_guest_permissions():
    s = Store()
    s.write("/local/domain/5/name", "vm5", perms="n0 r5")   # the guest reads
    s.mkdir("/local/domain/5/data", perms="n5")              # the guest owns
    s.write("/secret/key", "x")                              # n0: dom0 only
    s.mkdir("/local/domain/5/private", perms="n0")
    g = s.session(5)

    assert g.read("name") == b"vm5"                          # relative to /local/domain/5
    assert g.read("/local/domain/5/name") == b"vm5"
    for op, args, code in [
        (g.read, ("/secret/key",), errno.EACCES),
        (g.read, ("/secret/missing",), errno.EACCES),        # no ENOENT leak under an unreadable parent
        (g.read, ("name/missing",), errno.ENOENT),           # readable parent: ENOENT
        (g.write, ("name", "x"), errno.EACCES),
        (g.write, ("/secret/new", "x"), errno.EACCES),
        (g.rm, ("name",), errno.EACCES),
        (g.directory, ("private",), errno.EACCES),
        (g.set_perms, ("name", "n5"), errno.EACCES),
    ]:
        with pytest.raises(XenstoreError) as e:
            op(*args)
        assert e.value.errno == code, (op, args)

    g.write("data/ip", "10.0.0.5")                           # below its own node: allowed,
    assert s.get_perms("/local/domain/5/data/ip") == ["n5"]  # and owned by it
    g.write("data/sub/deep", "1")
    g.set_perms("data/ip", "n5 r0 r7")                       # an owner may share
    with pytest.raises(XenstoreError) as e:
        g.set_perms("data/ip", "n0")                         # but not give away
    assert e.value.errno == errno.EPERM

    other = s.session(7)
    assert other.read("/local/domain/5/data/ip") == b"10.0.0.5"
    with pytest.raises(XenstoreError) as e:
        other.read("/local/domain/5/data/sub/deep")
    assert e.value.errno == errno.EACCES

    # dom0 made a guest's node: dom0 still owns the children it makes there
    s.write("/local/domain/5/data/from-dom0", "y")
    assert s.get_perms("/local/domain/5/data/from-dom0") == ["n5"]  # inherited (dom0 does not take ownership)


def test_guest_watches_follow_permissions():
    s = Store()
    s.mkdir("/local/domain/5", perms="n0 r5")
    s.mkdir("/hidden", perms="n0")
    g = s.session(5)
    g.watch("/local/domain/5", "mine")
    g.watch("/hidden", "h")
    assert list(g.events) == [("/local/domain/5", "mine"), ("/hidden", "h")]
    g.events.clear()
    s.write("/local/domain/5/memory/target", "1024")
    s.write("/hidden/x", "1")
    assert list(g.events) == [("/local/domain/5/memory/target", "mine")]
    g.events.clear()
    g.watch("memory", "rel")
    g.events.clear()
    s.write("/local/domain/5/memory/target", "2048")
    assert sorted(g.events) == [("/local/domain/5/memory/target", "mine"), ("memory/target", "rel")]


def test_guest_may_not_use_privileged_requests():
    s = Store()
    s.introduce_domain(5)
    from xapi.xenstored.server import dispatch
    g = s.session(5)
    for mtype, payload in [(P.XS_INTRODUCE, z(6, 1, 1)), (P.XS_RELEASE, z(5)), (P.XS_CONTROL, z("help")),
                           (P.XS_IS_DOMAIN_INTRODUCED, z(5)), (P.XS_SET_TARGET, z(5, 0)), (P.XS_RESUME, z(5))]:
        assert dispatch(s, g, mtype, 0, payload) == (P.XS_ERROR, z("EACCES"))
    assert dispatch(s, g, P.XS_GET_DOMAIN_PATH, 0, z(5)) == (P.XS_GET_DOMAIN_PATH, z("/local/domain/5"))


def test_set_target_grants_the_target_s_rights():
    s = Store()
    s.introduce_domain(5)
    s.introduce_domain(9)  # a device-model stub domain for 5
    s.write("/local/domain/5/device-model/state", "running", perms="n5")
    stub = s.session(9)
    with pytest.raises(XenstoreError):
        stub.read("/local/domain/5/device-model/state")
    s.op_set_target(9, 5)
    assert stub.read("/local/domain/5/device-model/state") == b"running"
    stub.write("/local/domain/5/device-model/state", "paused")


def test_store_api_errors_and_types():
    s = Store()
    with pytest.raises(XenstoreError) as e:
        s.read("/nope")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(XenstoreError) as e:
        s.write("bad//path", "x")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        s.write("/a", 5)
    with pytest.raises(XenstoreError) as e:
        s.write("/a", "x", perms="q1")
    assert e.value.errno == errno.EINVAL
    assert not s.exists("/a/b")
    with pytest.raises(XenstoreError) as e:
        s.write("/huge", b"x" * 4097)
    assert e.value.errno == errno.E2BIG
    sess = s.session()
    sess.close()
    with pytest.raises(XenstoreError) as e:
        sess.read("/tool")
    assert e.value.errno == errno.EBADF


def test_in_process_transactions():
    s = Store()
    a, b = s.session(), s.session()
    tx = a.transaction_start()
    a.write("/q/x", "1", tx)
    assert not b.exists("/q/x")
    b.write("/q", "")
    with pytest.raises(XenstoreError) as e:
        a.transaction_end(tx)
    assert e.value.errno == errno.EAGAIN
    assert not s.exists("/q/x")


# ----------------------------------------------------------------- domains --


UUID = "5f6e7d8c-0000-4000-8000-000000000005"


def test_populate_domain_layout():
    s = Store()
    w = s.session()
    w.watch("@introduceDomain", "i")
    w.watch("@releaseDomain", "r")
    w.events.clear()
    dom = s.populate_domain(5, "vm5", UUID, memory_kb=1048576, vcpus=2,
                            vbds=[{"device": "xvda", "params": "/srv/a.vhd"},
                                  {"device": "hdc", "params": "/srv/cd.iso", "mode": "r", "device_type": "cdrom"}],
                            vifs=[{"devid": 0, "mac": "00:16:3e:00:00:05", "bridge": "xenbr0"}])
    assert dom == "/local/domain/5"
    assert list(w.events) == [("@introduceDomain", "i")]
    r = s.read
    assert r(f"{dom}/name") == b"vm5" and r(f"{dom}/domid") == b"5" and r(f"{dom}/vm") == f"/vm/{UUID}".encode()
    assert r(f"{dom}/memory/target") == b"1048576" and r(f"{dom}/memory/static-max") == b"1048576"
    assert [r(f"{dom}/cpu/{i}/availability") for i in range(2)] == [b"online", b"online"]
    assert r(f"{dom}/console/type") == b"xenconsoled" and r(f"{dom}/console/port") == b"2"
    assert r(f"{dom}/console/ring-ref").isdigit() and r(f"{dom}/store/port") == b"1"
    assert r(f"{dom}/control/platform-feature-xs_reset_watches") == b"1"
    assert r(f"/vm/{UUID}/uuid") == UUID.encode() and r(f"/vm/{UUID}/name") == b"vm5"
    assert r("/libxl/5/type") == b"pv"
    assert s.get_perms(dom) == ["n0", "r5"]
    assert s.get_perms(f"{dom}/data") == ["n5"] and s.get_perms(f"{dom}/control/shutdown") == ["n5"]
    assert s.get_perms(f"{dom}/memory/target") == ["n0", "r5"]

    assert s.directory(f"{dom}/device/vbd") == ["51712", "5632"]
    assert disk_devid("xvda") == 51712 and disk_devid("hdc") == 5632 and disk_devid("xvdb") == 51728
    fe, be = f"{dom}/device/vbd/51712", "/local/domain/0/backend/vbd/5/51712"
    assert r(f"{fe}/backend") == be.encode() and r(f"{be}/frontend") == fe.encode()
    assert r(f"{fe}/state") == b"4" and r(f"{be}/state") == b"4"
    assert r(f"{be}/params") == b"/srv/a.vhd" and r(f"{be}/mode") == b"w" and r(f"{be}/online") == b"1"
    assert r(f"{be}/frontend-id") == b"5" and r(f"{fe}/virtual-device") == b"51712"
    assert r("/local/domain/0/backend/vbd/5/5632/device-type") == b"cdrom"
    assert s.get_perms(fe) == ["n5", "r0"] and s.get_perms(be) == ["n0", "r5"]
    vfe, vbe = f"{dom}/device/vif/0", "/local/domain/0/backend/vif/5/0"
    assert r(f"{vfe}/mac") == b"00:16:3e:00:00:05" and r(f"{vbe}/bridge") == b"xenbr0"
    assert r(f"{vbe}/hotplug-status") == b"connected" and r(f"{vfe}/backend") == vbe.encode()
    assert r("/local/domain/0/backend/console/5/0/protocol") == b"vt100"

    # the guest sees its own tree and writes where libxl lets it
    g = s.session(5)
    assert g.read("name") == b"vm5"
    g.write("data/updated", "1")
    g.write("device/vif/0/state", "5")
    with pytest.raises(XenstoreError):
        g.write("memory/target", "1")

    # release: the guest's connection and nodes go, @releaseDomain fires
    s.release_domain(5)
    assert list(w.events)[-1] == ("@releaseDomain", "r")
    assert not s.exists(f"{dom}/data") and not s.exists(fe) and s.exists(f"{dom}/name")
    assert g.closed
    s.remove_domain(5)
    assert not s.exists(dom) and not s.exists(f"/vm/{UUID}") and not s.exists("/libxl/5")
    assert not s.exists("/local/domain/0/backend/vbd/5") and not s.exists("/local/domain/0/backend/vif/5")


def test_domain_shutdown_and_resume():
    s = Store()
    w = s.session()
    w.watch("@releaseDomain", "r")
    s.populate_domain(3, "vm3", UUID, memory_kb=262144, vcpus=1, connected=False, console=False)
    assert s.read("/local/domain/3/control/feature-poweroff") == b""
    w.events.clear()
    s.domain_shutdown(3)
    s.domain_shutdown(3)  # once per shutdown
    assert list(w.events) == [("@releaseDomain", "r")]
    s.op_resume(3)
    s.domain_shutdown(3)
    assert len(w.events) == 2


def test_many_domains(xsd):
    def populate():
        for d in range(1, 121):
            xsd.store.populate_domain(d, f"vm{d}", f"00000000-0000-0000-0000-{d:012d}", 131072, 1,
                                      vifs=[{"devid": 0}], console=False)
    xsd.call(populate)
    with xenstore.connect(xsd.path) as xs:
        doms = xs.directory("/local/domain")
        assert sorted(map(int, doms)) == list(range(121))  # dom0 too: it holds the backends
        assert xs.read("/local/domain/120/name") == b"vm120"


# -------------------------------------------------------------- standalone --


def test_standalone_daemon_with_dump():
    d = tempfile.mkdtemp(prefix="xsd-")
    sock, dump = os.path.join(d, "s"), os.path.join(d, "dump")
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "xapi.xenstored", "--socket", sock, "--dump", dump],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        r = Raw(sock)
        r.write("/standalone/k", b'say "hi"\n')
        r.ok(P.XS_SET_PERMS, z("/standalone/k", "n0", "r4"))
        p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not os.path.exists(dump):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # a second one on the same socket refuses to start
        q = subprocess.run([sys.executable, "-m", "xapi.xenstored", "--socket", sock], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        assert q.returncode != 0 and "already" in q.stderr
        r.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        with open(dump) as f:
            text = f.read()
        assert '/standalone/k = "say \\"hi\\"\\n"  (n0,r4)' in text
        assert '/tool/xenstored = ""  (n0)' in text
        assert not os.path.exists(sock)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stderr.close()
        shutil.rmtree(d, ignore_errors=True)


def test_socket_path_and_errors(tmp_path):
    assert socket_path("/var/lib/xapi") == "/var/lib/xapi/xenstored/socket"
    with pytest.raises(OSError) as e:
        ThreadedXenstored("/tmp/" + "x" * 200)
    assert e.value.errno == errno.ENAMETOOLONG
    notsock = tmp_path / "f"
    notsock.write_text("")
    with pytest.raises(OSError) as e:
        ThreadedXenstored(str(notsock))
    assert e.value.errno == errno.EEXIST
    # a stale socket file (nobody listening) is replaced
    stale = os.path.join(tempfile.mkdtemp(prefix="xsd-"), "s")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    with ThreadedXenstored(stale) as x:
        r = Raw(stale)
        assert r.read("/tool") == b""
        r.close()
        assert x.path == stale
    shutil.rmtree(os.path.dirname(stale), ignore_errors=True)
