"""The HTTP handler framework's pieces (xapi.server.handlers): parsing, routes, the body stream, response
framing, authentication's 401/403 paths and the task a request names."""
import asyncio
import base64
import socket
import struct
from types import SimpleNamespace

import pytest

from xapi.auth import rbac
from xapi.auth.sessions import Sessions
from xapi.db.schema import new_database
from xapi.server import handlers as h
from xapi.tasks import Tasks


# -- parsing -----------------------------------------------------------------------------------------
def test_split_target():
    assert h.split_target(b"/blob?ref=OpaqueRef:1&uuid=&x=a%20b+c") == (
        "/blob", {"ref": "OpaqueRef:1", "uuid": "", "x": "a b+c"}, "ref=OpaqueRef:1&uuid=&x=a%20b+c")
    assert h.split_target(b"/a%2Fb") == ("/a/b", {}, "")
    assert h.split_target(b"http://host:80/blob?ref=r")[:2] == ("/blob", {"ref": "r"})
    assert h.split_target(b"/x?a=1&a=2&flag")[1] == {"a": "1", "flag": ""}       # the first one wins


def test_parse_cookies():
    assert h.parse_cookies('session_id=OpaqueRef:abc; other="q v" ;bad; x=1=2') == {
        "session_id": "OpaqueRef:abc", "other": "q v", "x": "1=2"}
    assert h.parse_cookies("") == {}


def test_parse_basic():
    token = base64.b64encode("root:pa:ss wörd".encode()).decode()
    assert h.parse_basic(f"Basic {token}") == ("root", "pa:ss wörd")
    assert h.parse_basic(f"basic  {token} ") == ("root", "pa:ss wörd")
    assert h.parse_basic("Bearer abc") is None
    assert h.parse_basic("Basic !!!") is None
    assert h.parse_basic("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert h.parse_basic(None) is None


def test_header_dict():
    d = h.header_dict([(b"Content-Type", b" text/plain "), (b"X-A", b"1"), (b"x-a", b"2"),
                       (b"Cookie", b"a=1"), (b"cookie", b"b=2")])
    assert d == {"content-type": "text/plain", "x-a": "1, 2", "cookie": "a=1; b=2"}


def test_body_offset():
    line = b"PUT /blob?ref=r HTTP/1.0\r\n"
    head = line + b"Host: x\r\n\r\n"
    assert h.body_offset(head + b"BODY", None, line) == len(head)
    # earlier pipelined requests in the same chunk, a body holding a blank line
    earlier = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r\n\r\n"
    assert h.body_offset(earlier + head + b"BODY", None, line) == len(earlier + head)
    # the head began in the chunk before
    assert h.body_offset(b"st: x\r\n\r\nBODY", b"PUT /blob?ref=r HTTP/1.0\r\nHo", line) == 9
    # the blank line straddles the two chunks
    assert h.body_offset(b"\nBODY", b"...Host: x\r\n\r", line) == 1
    assert h.body_offset(b"\r\nBODY", b"...Host: x\r\n", line) == 2


# -- routes ------------------------------------------------------------------------------------------
async def _noop(request, response):
    pass


def test_routes():
    r = h.Routes()
    get = r.add("GET", "/blob", _noop, action="get_blob")
    put = r.add("put", "/blob", _noop, action="put_blob")
    svc = r.add("GET", "/services/", _noop, prefix=True)
    deep = r.add("GET", "/services/xenops", _noop, prefix=True)
    assert r.lookup("GET", "/blob") is get
    assert r.lookup("PUT", "/blob") is put
    assert r.lookup("HEAD", "/blob") is get                  # HEAD falls back to GET
    assert r.lookup("GET", "/blobs") is None                 # exact unless prefix=True
    assert r.lookup("GET", "/services/SM/x") is svc
    assert r.lookup("GET", "/services/xenops/y") is deep     # the longest prefix
    assert r.lookup("POST", "/blob") is None
    assert not r.post
    r.add("POST", "/cli", _noop, action="post_cli")
    assert r.post
    with pytest.raises(ValueError):
        r.add("GET", "/x", _noop, action="no_such_action")
    with pytest.raises(ValueError):
        r.add("PATCH", "/x", _noop)


# -- the body stream -----------------------------------------------------------------------------------
class FakeTransport:
    def __init__(self):
        self.reading = True
        self.out = []
        self.closed = False

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def write(self, data):
        self.out.append(bytes(data))

    def writelines(self, items):
        for d in items:
            self.write(d)

    def close(self):
        self.closed = True


def fake_proto():
    transport = FakeTransport()
    return SimpleNamespace(transport=transport, reader=transport, closing=False, paused=False,
                           body_paused=False, waiters=[])


def test_body_stream_reads_and_flow_control():
    async def main():
        proto = fake_proto()
        s = h.BodyStream(proto)
        s.feed(b"abc")
        s.feed(b"defg")
        assert await s.read(2) == b"ab"
        assert await s.read(3) == b"cde"
        assert await s.read(100) == b"fg"
        # above the high-water mark reading pauses; it resumes once the handler has drained it
        for _ in range(5):
            s.feed(b"x" * (300 << 10))
        assert not proto.transport.reading and proto.body_paused
        got = 0
        while got < 5 * (300 << 10) - h.LOW_WATER:
            got += len(await s.read(64 << 10))
        assert proto.transport.reading and not proto.body_paused
        # a reader waits for bytes, then sees the end
        task = asyncio.ensure_future(s.read(-1))
        await asyncio.sleep(0)
        s.feed(b"tail")
        s.end()
        rest = await task
        assert rest.endswith(b"tail") and len(rest) == 5 * (300 << 10) - got + 4
        assert await s.read(10) == b""

    asyncio.run(main())


def test_body_stream_abort_and_resume_paused_by_writer():
    async def main():
        proto = fake_proto()
        s = h.BodyStream(proto)
        s.feed(b"y" * (2 << 20))
        proto.paused = True                                  # the client isn't reading our writes
        while s.size:
            await s.read(1 << 20)
        assert not proto.transport.reading                   # still paused: writing is
        task = asyncio.ensure_future(s.read(10))
        await asyncio.sleep(0)
        s.abort(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await task

    asyncio.run(main())


# -- responses ---------------------------------------------------------------------------------------
def fake_exchange(method="GET", version="1.1", keep_alive=True, upgrade=False, raw=False):
    loop = asyncio.get_running_loop()
    proto = fake_proto()
    ex = SimpleNamespace(proto=proto, raw=raw, upgrade=upgrade, turn=loop.create_future(),
                         request=SimpleNamespace(method=method, version=version, keep_alive=keep_alive))
    ex.turn.set_result(None)
    return ex


def wire(ex):
    return b"".join(ex.proto.transport.out)


def test_response_framing():
    async def main():
        ex = fake_exchange()
        r = h.Response(ex)
        r.start(200, {"Content-Type": "text/plain", "Transfer-Encoding": "gzip"}, length=5)
        await r.write(b"hello")
        await r.end()
        assert wire(ex) == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        assert not r.close

        ex = fake_exchange()
        r = h.Response(ex)
        r.start(200)
        await r.write(b"abc")
        await r.end()
        assert wire(ex) == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

        ex = fake_exchange(version="1.0", keep_alive=False)
        r = h.Response(ex)
        r.start(200)
        await r.end(b"abc")                                  # a length is known at end() only if unstarted
        assert wire(ex) == b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nabc" and r.close

        ex = fake_exchange(method="HEAD")
        r = h.Response(ex)
        r.start(200, [("Content-Type", "x/y")], length=10)
        await r.write(b"0123456789")
        await r.end()
        assert wire(ex) == b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\nContent-Length: 10\r\n\r\n"
        assert not r.close

        ex = fake_exchange()
        r = h.Response(ex)
        r.redirect("https://elsewhere/blob?ref=x")
        await r.end()
        assert wire(ex) == (b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere/blob?ref=x\r\n"
                            b"Content-Length: 0\r\n\r\n")

        ex = fake_exchange(method="CONNECT", upgrade=True, raw=True, keep_alive=False)
        r = h.Response(ex)
        r.start(200)
        await r.write(b"RFB 003.008\n")
        assert wire(ex) == b"HTTP/1.1 200 OK\r\n\r\nRFB 003.008\n" and r.framing == "raw"

        ex = fake_exchange()
        r = h.Response(ex)
        r.start(200, [("Content-Type", "text/plain\r\nSet-Cookie: evil=1")], length=0)
        await r.end()
        assert b"\r\nSet-Cookie" not in wire(ex) and b"Content-Type: text/plain  Set-Cookie" in wire(ex)

        ex = fake_exchange()
        r = h.Response(ex)
        r.start(200, length=4)
        with pytest.raises(ValueError):
            await r.write(b"too long")
        await r.write(b"ab")
        await r.end()
        assert r.close                                       # short of its Content-Length

    asyncio.run(main())


def test_response_waits_for_its_turn_and_for_drain():
    async def main():
        ex = fake_exchange()
        ex.turn = asyncio.get_running_loop().create_future()
        r = h.Response(ex)
        task = asyncio.ensure_future(r.end(b"x"))
        await asyncio.sleep(0.01)
        assert wire(ex) == b""                               # earlier replies go first
        ex.turn.set_result(None)
        await task
        assert wire(ex).endswith(b"\r\n\r\nx")

        ex = fake_exchange()
        ex.proto.paused = True
        r = h.Response(ex)
        r.start(200, length=2)
        task = asyncio.ensure_future(r.write(b"ab"))
        await asyncio.sleep(0.01)
        assert not task.done() and wire(ex).endswith(b"ab")
        ex.proto.paused = False
        h.wake_writers(ex.proto)
        await task

    asyncio.run(main())


# -- authentication: 401, 403 and the request's task ---------------------------------------------------
def fake_app():
    db = new_database()
    app = SimpleNamespace(db=db, host_ref="OpaqueRef:NULL", hub=SimpleNamespace(poke=lambda: None))
    app.tasks = Tasks(app)
    app.sessions = Sessions(db, app.host_ref)
    return app


def make_request(app, query, action="put_blob", local=False, headers=None):
    proto = SimpleNamespace(app=app, local=local, peer="192.0.2.1")
    route = h.Route("PUT", "/blob", _noop, action, True, None, False)
    ex = SimpleNamespace(proto=proto, route=route, runner=None)
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return h.Request(ex, "PUT", "/blob?" + qs, "/blob", dict(query), qs, headers or {}, "1.1", True)


def test_rbac_refusal_is_403_and_fails_the_task():
    app = fake_app()
    ro = app.sessions.create("alice", superuser=False, roles=frozenset({"read-only"}),
                             permissions=rbac.ROLE_PERMISSIONS["read-only"] | {"read-only"})
    task = app.tasks.create("upload")
    req = make_request(app, {"session_id": ro.ref, "task_id": task})
    req._find_task()
    with pytest.raises(h.HttpError) as e:
        asyncio.run(req.authenticate())
    assert e.value.status == 403
    row = app.db.table("task").get(task)
    assert row["status"] == "failure"
    assert row["error_info"][0] == "RBAC_PERMISSION_DENIED" and row["error_info"][1] == "http/put_blob"
    # get_blob checks no RBAC: the same session passes
    req = make_request(app, {"session_id": ro.ref}, action="get_blob")
    assert asyncio.run(req.authenticate()) is ro
    # vm-power-admin holds http/put_blob
    vpa = app.sessions.create("bob", superuser=False, roles=frozenset({"vm-power-admin"}),
                              permissions=rbac.ROLE_PERMISSIONS["vm-power-admin"])
    assert asyncio.run(make_request(app, {"session_id": vpa.ref}).authenticate()) is vpa


def test_bad_or_missing_session_is_401_and_fails_the_task():
    app = fake_app()
    task = app.tasks.create("upload")
    req = make_request(app, {"session_id": "OpaqueRef:nope", "task_id": task})
    req._find_task()
    with pytest.raises(h.HttpError) as e:
        asyncio.run(req.authenticate())
    assert e.value.status == 401
    assert ("WWW-Authenticate", 'Basic realm="xapi"') in e.value.headers
    assert app.db.table("task").get(task)["error_info"] == ["SESSION_AUTHENTICATION_FAILED"]
    with pytest.raises(h.HttpError) as e:
        asyncio.run(make_request(app, {}).authenticate())
    assert e.value.status == 401
    with pytest.raises(h.HttpError):             # not Basic: 401 too
        asyncio.run(make_request(app, {}, headers={"authorization": "Bearer x"}).authenticate())


def test_cookie_wins_over_query_and_unix_socket_is_root():
    app = fake_app()
    s = app.sessions.create("root", superuser=True)
    req = make_request(app, {"session_id": "OpaqueRef:nope"}, headers={"cookie": f"session_id={s.ref}"})
    assert asyncio.run(req.authenticate()) is s
    req = make_request(app, {}, local=True)
    session = asyncio.run(req.authenticate())
    assert session.superuser and session.ref in app.sessions.by_ref
    req._cleanup()                                # the temporary session goes afterwards
    assert session.ref not in app.sessions.by_ref


# -- the protocol in process: tunnels, raw bodies, POST handlers --------------------------------------------
def serve_stub(routes, test, ssl=None):
    """Runs `await test(port)` against HttpProtocol with a stub app on uvloop: RPC replies are fixed.
    ssl: a server SSLContext for a TLS listener."""
    import uvloop

    from xapi.server.http import HttpProtocol

    class Endpoints:
        def xml(self, ctx, body):
            return b"xml:" + body

        def json(self, ctx, body):
            return b"json:" + body

    server = fake_app()
    server.config = SimpleNamespace(max_request_size=1 << 20, request_timeout=30, idle_timeout=30)
    server.endpoints, server.handlers, server.connections = Endpoints(), routes, set()
    server.app = server

    async def main():
        srv = await asyncio.get_running_loop().create_server(lambda: HttpProtocol(server), "127.0.0.1", 0,
                                                               ssl=ssl)
        try:
            await asyncio.wait_for(test(srv.sockets[0].getsockname()[1]), 20)
        finally:
            srv.close()
            for c in list(server.connections):
                c.transport.close()
    uvloop.run(main())


async def _read_all(reader):
    out = b""
    while chunk := await reader.read(65536):
        out += chunk
    return out


def test_connect_tunnel_and_upgrade_carry_raw_bytes():
    routes = h.Routes()

    async def echo(request, response):
        response.start(101 if request.method == "GET" else 200, [("Upgrade", "x")] if request.method == "GET"
                       else [])
        await response.write(b"")
        async for chunk in request.body():
            await response.write(chunk.upper())
    routes.add("CONNECT", "/console", echo, auth=False)
    routes.add("GET", "/ws", echo, auth=False)

    async def test(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"CONNECT /console?ref=x HTTP/1.0\r\n\r\nhello ")    # raw bytes right after the head
        await asyncio.sleep(0.05)
        w.write(b"world")
        w.write_eof()
        assert await _read_all(r) == b"HTTP/1.0 200 OK\r\n\r\nHELLO WORLD"
        w.close()

        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe")
        w.write_eof()
        assert await _read_all(r) == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nFRAME"
        w.close()
    serve_stub(routes, test)


def test_http10_body_until_close_across_reads_and_post_routes():
    routes = h.Routes()

    async def upload(request, response):
        data = await request.read()
        await response.end(b"%d:%s" % (len(data), data[:12]))
    routes.add("POST", "/upload", upload, auth=False)

    async def test(port):
        # the blank line ending the head straddles two reads; the body starts in the second
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /upload HTTP/1.0\r\nHost: x\r\n\r")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"\nbody bytes..." + b"z" * 100000)
        await w.drain()
        w.write_eof()
        reply = await _read_all(r)
        assert reply.endswith(b"\r\n\r\n100013:body bytes..") and reply.startswith(b"HTTP/1.0 200 OK")
        w.close()

        # other POSTs are still RPC, on the same connection as a POST handler
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\n<")
        reply = await _read_all(r)
        assert reply.count(b"HTTP/1.1 200 OK") == 3
        assert reply.index(b"3:abc") < reply.index(b"json:{}") < reply.index(b"xml:<")
        w.close()
    serve_stub(routes, test)


def test_a_failing_handler_after_its_head_closes_the_connection():
    routes = h.Routes()

    async def broken(request, response):
        response.start(200, length=10)
        await response.write(b"12345")
        raise RuntimeError("disk on fire")

    async def fine(request, response):
        await response.end(b"ok")
    routes.add("GET", "/broken", broken, auth=False)
    routes.add("GET", "/fine", fine, auth=False)

    async def test(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\nGET /broken HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await _read_all(r)                      # ends: the second reply was cut short
        assert reply.count(b"HTTP/1.1 200 OK") == 2 and reply.endswith(b"12345")
        w.close()
    serve_stub(routes, test)


def test_handler_starts_with_the_head_and_may_answer_before_the_body():
    """A PUT handler runs once the head is in, before any body byte: it answers first (as xapi's
    imports do; xe waits for that answer before it sends the body), then reads the body."""
    routes = h.Routes()
    started = []

    async def upload(request, response):
        started.append(request.path)
        response.start(200, [("Task-Id", "t")], close=True)
        await response.write(b"")
        data = await request.read()
        await response.write(b"%d" % len(data))
    routes.add("PUT", "/upload", upload, auth=False)

    async def test(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"PUT /upload HTTP/1.0\r\nContent-Length: 5\r\n\r\n")
        status = await asyncio.wait_for(r.readline(), 5)         # no body yet: the answer comes
        assert status == b"HTTP/1.0 200 OK\r\n" and started == ["/upload"]
        assert await r.readuntil(b"\r\n\r\n") == b"Task-Id: t\r\nConnection: close\r\n\r\n"
        w.write(b"hello")
        assert await _read_all(r) == b"5"
        w.close()

        # a PUT no handler takes is answered at once too (its body, if it comes, is dropped)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"PUT /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"HTTP/1.1 404")
        w.close()
    serve_stub(routes, test)


def test_tls_body_cut_without_close_notify_reaches_the_handler(tmp_path):
    """A TLS client sends its body and drops the TCP connection without a TLS close_notify (Xen
    Orchestra's uploads of unknown length) while the handler is behind (reading paused): every byte
    still reaches the handler. Reading is paused beneath TLS: paused above it, uvloop drops the records
    waiting in its buffer when the connection ends (the end of an import was silently lost)."""
    import socket
    import ssl

    from xapi.server import tls
    pem = str(tmp_path / "c.pem")
    tls.ensure_certificate(pem, "127.0.0.1")
    routes = h.Routes()
    closed: dict = {}
    got: list = []

    async def upload(request, response):
        response.start(200, close=True)
        await response.write(b"")
        await closed[request.query["n"]].wait()     # the client is gone before the body is read
        await asyncio.sleep(0.2)                    # and the server had time to see the close
        n = 0
        try:
            async for chunk in request.body():
                n += len(chunk)
        except ConnectionError:
            pass                                    # the body ends with the connection
        got.append((int(request.query["n"]), n))
    routes.add("PUT", "/up", upload, auth=False)

    def client(port, size, done):
        ctx = ssl._create_unverified_context()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            s = ctx.wrap_socket(raw)
            s.sendall(b"PUT /up?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1125899906842624\r\n\r\n" % size)
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            s.sendall(bytes(size))
            s.close()                               # the TCP close alone, no close_notify
        done()

    async def test(port):
        loop = asyncio.get_running_loop()
        for size in (h.HIGH_WATER + (64 << 10), h.HIGH_WATER + (160 << 10), h.HIGH_WATER + (1000 << 10)):
            ev = closed[str(size)] = asyncio.Event()
            await loop.run_in_executor(None, client, port, size, lambda: loop.call_soon_threadsafe(ev.set))
        while len(got) < 3:
            await asyncio.sleep(0.01)
        assert sorted(got) == [(n, n) for n, _ in sorted(got)], got     # sent, received
    serve_stub(routes, test, ssl=tls.server_context(pem))


def test_body_end_by_close_or_by_reset():
    """A body that stops at the client's orderly close ends with handlers.ConnectionEnded (the end of
    a body that ends with the connection); a reset (bytes the client sent may be lost) with another
    ConnectionResetError, which an import reports as a failure."""
    import socket
    import struct
    routes = h.Routes()
    seen: dict = {}

    async def upload(request, response):
        n = 0
        try:
            async for chunk in request.body():
                n += len(chunk)
        except ConnectionError as e:
            seen[request.query["how"]] = (n, type(e))
        await response.end(b"")
    routes.add("PUT", "/up", upload, auth=False)

    def client(port, how):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"PUT /up?how=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1125899906842624\r\n\r\n"
                      % how.encode() + b"x" * 1000)
            if how == "reset":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def test(port):
        loop = asyncio.get_running_loop()
        for how in ("close", "reset"):
            await loop.run_in_executor(None, client, port, how)
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        assert seen["close"] == (1000, h.ConnectionEnded)
        assert seen["reset"][1] is not h.ConnectionEnded and issubclass(seen["reset"][1], ConnectionResetError)
    serve_stub(routes, test)


def test_a_fixed_length_reply_all_sent_is_complete_when_the_client_closes_after_its_last_byte():
    """xe vdi-export closes as soon as it has every byte: end() after that is a complete reply; one
    whose bytes are not all out is still a lost connection."""
    routes = h.Routes()
    outcome = {}

    def handler(send: int):
        async def run(request, response):
            response.start(200, length=10)
            await response.write(b"0123456789"[:send])
            while not response.connection_closed:       # the client's close seen before the end
                await asyncio.sleep(0.001)
            try:
                await response.end()
                outcome[send] = ("ended", response.finished)
            except ConnectionError as e:
                outcome[send] = ("failed", str(e))
        return run
    routes.add("GET", "/all", handler(10), auth=False)
    routes.add("GET", "/part", handler(5), auth=False)

    async def test(port):
        for path, n in (("/all", 10), ("/part", 5)):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await r.readuntil(b"\r\n\r\n")
            assert len(await r.readexactly(n)) == n
            # closed at once, unread replies or not (a reset: the server sees the connection closed)
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.close()
            for _ in range(1000):
                if n in outcome:
                    break
                await asyncio.sleep(0.005)
    serve_stub(routes, test)
    assert outcome[10] == ("ended", True)
    assert outcome[5][0] == "failed"
