"""HTTP handlers beside the RPC endpoints: GET, PUT, POST, HEAD and CONNECT by path, with streaming
bodies both ways, xapi's authentication and RBAC for handlers, and the task a handler reports to.

A handler is `async def handler(request, response)`, registered on a `Routes` table by method and path
(`routes.add("GET", "/blob", get_blob, action="get_blob")`). Paths match exactly, or by prefix for
routes added with `prefix=True` (the longest wins). HEAD falls back to the GET handler with the body
left out. Requests no handler takes answer 404 (405 for methods we don't know); POST requests no
handler takes go to the RPC endpoints.

A handler starts as soon as the request's head is in, before any body byte: it may answer first (xapi's
imports do, and xe and Xen Orchestra wait for that answer before they send the body). A lost
connection doesn't cancel it (as xapi's handler threads go on): its body ends after the bytes that
did arrive (an upload cut by the client once sent is whole) and its writes fail.

The request body streams in: `await request.read(n)` (at most n bytes, b"" at the end) or
`async for chunk in request.body()`. Reading from the socket pauses while more than HIGH_WATER bytes
wait for the handler. Content-Length and chunked bodies come through the HTTP parser; an HTTP/1.0
PUT/POST without a length has a body that ends when the client closes (llhttp would call it bodiless),
and CONNECT/Upgrade requests carry raw bytes after the head: for those the connection leaves the
parser (the transport gets a RawProtocol) and ends with the exchange. A handler may also take a
Content-Length body off the connection and read it from the socket itself (Request.take_socket, for
os.splice); the connection then goes on with a fresh parser.

The response: `response.start(status, headers, length=None)`, `await response.write(data)` (waits
while the client isn't reading), `await response.end()`, or `response.redirect(url)`. The framing
follows from what the handler says: Content-Length when it gives a length, chunked for HTTP/1.1
keep-alive clients otherwise, else the end of the connection. Replies go out in request order: a
handler's writes wait until the replies to earlier pipelined requests are out, and later replies wait
for it. Requests pipelined after a handler whose method isn't safe (PUT, POST...) only run once it
is done (RFC 7230 6.3.2), so a GET after a PUT sees what the PUT stored. The connection stays open afterwards when both sides allow it; a body the handler didn't read
is read and dropped first (up to the daemon's max_request_size, else the connection closes).

Authentication as xapi's handlers have it (xapi_http.ml): callers on the Unix socket are root; else a
`session_id` cookie or query parameter, else HTTP Basic credentials (a login as
session.login_with_password, logged out afterwards). Anything else: 401 with
`WWW-Authenticate: Basic realm="xapi"`. Then RBAC: the route's `http/<action>` permission, 403 when
the session lacks it. A `task_id` parameter names the task the handler reports to: it fails with
SESSION_AUTHENTICATION_FAILED on 401 and RBAC_PERMISSION_DENIED on 403, and is settled with the
handler's result or error. Routes with `task="label"` make a task when none is given (destroyed
once the handler is done, as xapi's contexts do).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import os
import time
from urllib.parse import unquote

from xapi.auth import rbac
from xapi.auth.sessions import CLOCK
from xapi.datamodel.errors import XapiError

log = logging.getLogger("xapi.http")

HIGH_WATER = 1 << 20            # pause reading the socket above this much unread body
LOW_WATER = 256 << 10           # and resume below this
CHUNK = 1 << 20                 # what body() yields at most
REALM = "xapi"
ORIGINATOR = "xapi-http"

_REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted",
            204: "No Content", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
            303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 400: "Bad Request",
            401: "Unauthorised", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 409: "Conflict", 411: "Length Required", 413: "Payload Too Large",
            500: "Internal Error", 501: "Method Not Implemented", 503: "Service Unavailable"}

# methods that get a 404 when no handler takes them (others: 405)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "CONNECT", "OPTIONS", "DELETE"})
# pipelined requests after a handler with any other method wait until it is done (RFC 7230 6.3.2)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HTTP_ACTIONS = frozenset(a for a, _, _ in rbac.HTTP_ACTIONS)


class HttpError(Exception):
    """Raised by handlers (and the framework): answered with `status` when nothing has been sent yet.
    `error` is what the request's task fails with (default INTERNAL_ERROR with the message)."""

    def __init__(self, status: int, message: str = "", headers=(), error: list | None = None,
                 close: bool | None = None) -> None:
        super().__init__(message or _REASONS.get(status, "Error"))
        self.status = status
        self.message = message or _REASONS.get(status, "Error")
        self.headers = list(headers)
        self.error = error
        self.close = close


# -- routes -------------------------------------------------------------------------------------------
class Route:
    __slots__ = ("method", "path", "fn", "action", "auth", "task", "prefix")

    def __init__(self, method, path, fn, action, auth, task, prefix) -> None:
        self.method, self.path, self.fn = method, path, fn
        self.action, self.auth, self.task, self.prefix = action, auth, task, prefix

    def __repr__(self) -> str:
        return f"<Route {self.method} {self.path}{'*' if self.prefix else ''} {self.fn.__qualname__}>"


class Routes:
    """Handlers by (method, path)."""

    __slots__ = ("exact", "prefixes", "post")

    def __init__(self) -> None:
        self.exact: dict[tuple[str, str], Route] = {}
        self.prefixes: list[Route] = []
        self.post = False           # whether any POST handler exists (else every POST is RPC)

    def add(self, method: str, path: str, fn, *, action: str | None = None, auth: bool = True,
            task: str | None = None, prefix: bool = False) -> Route:
        """`action`: the RBAC action (`http/<action>`; one of xapi's HTTP actions). `auth`: whether the
        framework authenticates before calling the handler (else the handler calls
        `await request.authenticate()` itself, e.g. for public blobs). `task`: a label to make a task
        with when the request names none."""
        method = method.upper()
        if method not in _KNOWN_METHODS:
            raise ValueError(f"unsupported method {method}")
        if action is not None and action not in _HTTP_ACTIONS:
            raise ValueError(f"{action} is not one of xapi's HTTP actions")
        if not path.startswith("/"):
            raise ValueError("a path starts with /")
        r = Route(method, path, fn, action, auth, task, prefix)
        if prefix:
            self.prefixes.append(r)
            self.prefixes.sort(key=lambda x: len(x.path), reverse=True)
        else:
            self.exact[(method, path)] = r
        if method == "POST":
            self.post = True
        return r

    def route(self, method: str, path: str, **options):
        """Decorator form of add()."""
        def register(fn):
            self.add(method, path, fn, **options)
            return fn
        return register

    def lookup(self, method: str, path: str) -> Route | None:
        r = self.exact.get((method, path))
        if r is None:
            for p in self.prefixes:
                if p.method == method and path.startswith(p.path):
                    return p
            if method == "HEAD":
                return self.lookup("GET", path)
        return r


# -- parsing ------------------------------------------------------------------------------------------
def split_target(url: bytes) -> tuple[str, dict[str, str], str]:
    """(path, query parameters, raw query) of a request target. Percent escapes are decoded (UTF-8);
    '+' stays '+'; a parameter given twice keeps its first value."""
    text = url.decode("latin-1")
    if text.startswith(("http://", "https://")):          # absolute form: keep the path
        text = "/" + text.split("/", 3)[3] if text.count("/") >= 3 else "/"
    path, _, query = text.partition("?")
    path = path.partition("#")[0]
    return unquote(path, errors="replace"), parse_query(query), query


def parse_query(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in query.partition("#")[0].split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        out.setdefault(unquote(name, errors="replace"), unquote(value, errors="replace"))
    return out


def parse_cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out.setdefault(name.strip(), value)
    return out


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` value; None when it isn't one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def header_dict(pairs) -> dict[str, str]:
    """The parser's (name, value) byte pairs as lowercase names to values; repeats are joined."""
    out: dict[str, str] = {}
    for name, value in pairs:
        k = name.decode("latin-1").strip().lower()
        v = value.decode("latin-1").strip()
        if k in out:
            out[k] = f"{out[k]}{'; ' if k == 'cookie' else ', '}{v}"
        else:
            out[k] = v
    return out


def body_offset(data: bytes, prev: bytes | None, request_line: bytes) -> int:
    """Where the body starts in `data`, the chunk whose bytes completed the head of the request
    `request_line` (b"PUT /x HTTP/1.0\\r\\n"); `prev` is the chunk before it. The parser says
    nothing about where it stopped for bodiless requests, so the head's end is found again: after
    the request line when this chunk holds it, else at the first blank line (which may straddle the
    two chunks)."""
    i = data.find(request_line)
    if i >= 0:
        j = data.find(b"\r\n\r\n", i + len(request_line) - 2)
        return j + 4 if j >= 0 else len(data)
    tail = prev[-3:] if prev else b""
    j = (tail + data).find(b"\r\n\r\n")
    return max(j + 4 - len(tail), 0) if j >= 0 else len(data)


# -- the request body ---------------------------------------------------------------------------------
class ConnectionEnded(ConnectionResetError):
    """The body stopped at the connection's orderly end (the client's TCP close, with or without a TLS
    close_notify), after every byte the client sent: the end of a body that ends with the connection
    (Xen Orchestra's uploads of unknown length), a body cut short otherwise. A reset or a transport
    error is a plain ConnectionResetError: bytes the client sent may be missing."""


class BodyStream:
    """Body bytes between the connection and the handler, with flow control on the transport."""

    __slots__ = ("proto", "chunks", "size", "eof", "error", "waiter", "paused", "received")

    def __init__(self, proto) -> None:
        self.proto = proto
        self.chunks: collections.deque = collections.deque()
        self.size = 0               # bytes waiting for the handler
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.paused = False         # reading paused because of us
        self.received = 0           # bytes fed in all

    def feed(self, data: bytes) -> None:
        if self.eof or self.error is not None:
            return
        self.received += len(data)
        self.chunks.append(data)
        self.size += len(data)
        self._wake()
        if self.size > HIGH_WATER and not self.paused:
            self.paused = True
            pause_body(self.proto)

    def end(self) -> None:
        self.eof = True
        self._wake()

    def abort(self, exc: BaseException) -> None:
        if not self.eof:
            self.error = exc
        self._wake()

    def drop(self) -> None:
        """Forgets what is buffered (the handler is done with the body); reading resumes."""
        self.chunks.clear()
        self.size = 0
        self._resume()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            resume_body(self.proto)

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes as soon as some are there (n < 0: everything until the end); b"" at the end."""
        if n < 0:
            parts = []
            while True:
                chunk = await self.read(CHUNK)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        if n == 0:
            return b""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.eof:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        chunks = self.chunks
        if len(chunks[0]) >= n or self.size <= n:
            if len(chunks[0]) > n:
                first = chunks[0]
                data, chunks[0] = first[:n], first[n:]
            elif self.size <= n:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
            else:
                data = chunks.popleft()
        else:
            parts, want = [], n
            while chunks and len(chunks[0]) <= want:
                piece = chunks.popleft()
                parts.append(piece)
                want -= len(piece)
            if want and chunks:
                first = chunks[0]
                parts.append(first[:want])
                chunks[0] = first[want:]
            data = b"".join(parts)
        self.size -= len(data)
        if self.paused and self.size < LOW_WATER:
            self._resume()
        return data

    async def readinto(self, buf) -> int:
        """Copies into buf (a writable buffer) the body bytes there are, up to its size, at least one
        unless at the end; returns how many (0 at the end). No intermediate bytes object is made."""
        mv = memoryview(buf).cast("B")
        n = len(mv)
        if n == 0:
            return 0
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.eof:
                return 0
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        chunks, got = self.chunks, 0
        while chunks and got < n:
            first = chunks[0]
            k = len(first)
            if k <= n - got:
                mv[got:got + k] = first
                chunks.popleft()
                got += k
            else:
                want = n - got
                mv[got:n] = memoryview(first)[:want]
                chunks[0] = first[want:]
                got = n
        self.size -= got
        if self.paused and self.size < LOW_WATER:
            self._resume()
        return got


def pause_body(proto) -> None:
    proto.body_paused = True
    if not proto.closing:
        proto.reader.pause_reading()


def resume_body(proto) -> None:
    proto.body_paused = False
    if not proto.paused and not proto.closing:
        proto.reader.resume_reading()


async def drain(proto) -> None:
    """Waits until the transport takes writes again (resume_writing) or the connection is gone."""
    if proto.closing:
        raise ConnectionResetError("the connection is closed")
    fut = asyncio.get_running_loop().create_future()
    proto.waiters.append(fut)
    await fut


def wake_writers(proto, exc: BaseException | None = None) -> None:
    waiters, proto.waiters = proto.waiters, []
    for fut in waiters:
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
                fut.exception()         # retrieved: a waiter may be gone already


# -- request and response -----------------------------------------------------------------------------
class Request:
    """What a handler sees of the request. `ctx`-like for actions: app, local, peer, session."""

    def __init__(self, exchange, method: str, url: str, path: str, query: dict, query_string: str,
                 headers: dict, version: str, keep_alive: bool) -> None:
        proto = exchange.proto
        self._exchange = exchange
        self.app = proto.app
        self.local = proto.local
        self.peer = proto.peer
        self.method = method
        self.url = url
        self.path = path
        self.query = query
        self.query_string = query_string
        self.headers = headers
        self.cookies = parse_cookies(headers.get("cookie", ""))
        self.version = version
        self.keep_alive = keep_alive
        self.route = exchange.route
        te = headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("content-length")
        self.content_length = int(cl) if cl is not None and cl.strip().isdigit() and not te else None
        self.session = None         # once authenticated
        self.task: str | None = None
        self._temp_session: str | None = None
        self._own_task = False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"

    # -- parameters -------------------------------------------------------------------------------
    def param(self, name: str, default: str | None = None) -> str | None:
        """A parameter as xapi reads session_id and task_id: cookie first, then the query."""
        v = self.cookies.get(name)
        if v is None:
            v = self.query.get(name, default)
        return v

    # -- body -------------------------------------------------------------------------------------
    async def read(self, n: int = -1) -> bytes:
        return await self._exchange.body.read(n)

    async def readinto(self, buf) -> int:
        """Body bytes copied into buf (at least one unless at the end); how many, 0 at the end."""
        return await self._exchange.body.readinto(buf)

    async def body(self, size: int = CHUNK):
        """The body in pieces of at most `size` bytes as they arrive."""
        stream = self._exchange.body
        while True:
            chunk = await stream.read(size)
            if not chunk:
                return
            yield chunk

    # -- the body, moved by the handler itself ----------------------------------------------------
    def take_socket(self):
        """For a handler that moves a Content-Length body, or an HTTP/1.0 one that ends with the
        connection, kernel-side (os.splice): stops reading the connection and returns (the body bytes
        already read, in pieces; a duplicate descriptor of the non-blocking socket, the handler's to
        close; how many body bytes are still to come on it, None: until the end of the connection).
        None when the body can't be taken so (TLS, chunked, complete already, not a socket). The
        handler calls active() as bytes come in and give_back_socket() at the end."""
        ex = self._exchange
        proto = ex.proto
        if ((self.content_length is None and not ex.raw) or ex.upgrade or ex.complete or ex.discarding
                or proto.closing or proto.exchange is not ex):
            return None
        transport = proto.transport
        if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            fd = os.dup(sock.fileno())
        except (OSError, ValueError):
            return None
        pause_body(proto)
        body = ex.body
        body.paused = False         # its own flow control must not resume reading meanwhile
        chunks = list(body.chunks)
        body.chunks.clear()
        body.size = 0
        return chunks, fd, None if ex.raw else self.content_length - body.received

    @property
    def idle_timeout(self) -> float:
        """Seconds a body may stall before the connection is dropped."""
        return float(self._exchange.proto.server.config.idle_timeout)

    def active(self) -> None:
        """Notes that body bytes came in (the idle timeout), for a handler that took the socket."""
        self._exchange.proto.last_active = time.monotonic()

    def give_back_socket(self, complete: bool) -> None:
        """After take_socket(): with the whole body read, the connection goes on with a fresh parser
        (keep-alive and pipelining as usual); else, or after a body that ended with the connection, it
        closes once the handler has answered."""
        ex = self._exchange
        proto = ex.proto
        if proto.closing:
            return
        if not complete or ex.raw:
            ex.complete = True          # nothing more is read: the connection ends with the reply
            ex.keep_alive = False
            return
        ex.body.received = self.content_length
        proto.parser = type(proto.parser)(proto)    # the old one still waits for the body's bytes
        proto.in_request = False
        proto.prev = None
        on_message_complete(proto)
        resume_body(proto)

    def take_connection(self):
        """Once the whole body has been read: the connection leaves HTTP for good (no reply is sent;
        it closes once the handler is done), for a handler speaking its own protocol on it (xe's).
        Returns (a BodyStream of the bytes that come in, the connection's protocol, whose transport
        the handler writes to)."""
        ex = self._exchange
        proto = ex.proto
        stream = BodyStream(proto)
        ex.body = stream
        ex.complete = True
        raw_mode(proto, ex, b"")
        resp = ex.response
        resp.started = resp.sent = resp.finished = True
        resp.close = True
        return stream, proto

    # -- authentication ---------------------------------------------------------------------------
    async def authenticate(self):
        """The caller's session (see the module doc); raises HttpError 401/403. RBAC uses the route's
        action. A task the request names fails with the reason."""
        if self.session is not None:
            return self.session
        app = self.app
        session = None
        if self.local:
            # xapi logs callers on the Unix socket in as the local superuser
            session = app.sessions.create("root", superuser=True, originator=ORIGINATOR)
            self._temp_session = session.ref
        else:
            sid = self.param("session_id")
            if sid:
                session = app.sessions.by_ref.get(sid)
            else:
                credentials = parse_basic(self.headers.get("authorization"))
                if credentials is not None:
                    session = await self._login(*credentials)
        if session is None:
            self.fail_task(["SESSION_AUTHENTICATION_FAILED"])
            raise HttpError(401, "Please check your credentials and retry.",
                            headers=[("WWW-Authenticate", f'Basic realm="{REALM}"')], close=True)
        session.last_active = CLOCK[0]
        action = self.route.action
        if action:
            try:
                rbac.check_http(session, action)
            except XapiError as e:
                self.fail_task(e.description)
                raise HttpError(403, "Access to the requested resource is forbidden.",
                                error=e.description, close=True) from None
        self.session = session
        if self.task is None and self.route.task:
            self.task = app.tasks.create(self.route.task)
            self._own_task = True
            self._track_task()
        return session

    async def _login(self, user: str, password: str):
        from xapi.actions import session as session_actions   # the RPC login's rules
        try:
            ref = await session_actions.login_with_password(self, None, user, password, "", ORIGINATOR)
        except XapiError:
            return None
        self._temp_session = ref
        return self.app.sessions.by_ref.get(ref)

    # -- the task ---------------------------------------------------------------------------------
    def _find_task(self) -> None:
        tid = self.param("task_id")
        if tid and type(tid) is str and tid in self.app.db.table("task"):
            self.task = tid
            self._track_task()

    def _track_task(self) -> None:
        """task.cancel on the request's task cancels the handler."""
        running = self.app.tasks.running
        if self.task not in running:
            running[self.task] = self._exchange.runner

    def _pending(self) -> bool:
        if self.task is None:
            return False
        table = self.app.db.table("task")
        return self.task in table and table.get_field(self.task, "status") in ("pending", "cancelling")

    def progress(self, value: float) -> None:
        """Sets the task's progress (0..1)."""
        if self._pending():
            self.app.db.table("task").set_field(self.task, "progress", max(0.0, min(1.0, float(value))))
            self.app.hub.poke()

    def fail_task(self, error) -> None:
        if self._pending():
            self.app.tasks._settle(self.task, "failure", error=[str(x) for x in error])
            self.app.hub.poke()

    def _task_done(self, result) -> None:
        if not self._pending():
            return
        from xapi.tasks import value_text
        if result is None:
            result = self.app.db.table("task").get_field(self.task, "result")
        else:
            result = value_text(result)
        self.app.tasks._settle(self.task, "success", result=result)
        self.app.hub.poke()

    def _task_cancelled(self) -> None:
        if self._pending():
            table = self.app.db.table("task")
            if table.get_field(self.task, "status") == "cancelling":
                self.app.tasks._settle(self.task, "cancelled", error=["TASK_CANCELLED", self.task])
            else:
                self.app.tasks._settle(self.task, "failure",
                                       error=["INTERNAL_ERROR", "the HTTP connection was closed"])
            self.app.hub.poke()

    def _cleanup(self) -> None:
        app = self.app
        if self.task is not None and app.tasks.running.get(self.task) is self._exchange.runner:
            app.tasks.running.pop(self.task, None)
        if self._own_task and self.task in app.db.table("task"):
            app.tasks.destroy(self.task)          # xapi destroys the tasks its contexts made
            app.hub.poke()
        if self._temp_session is not None and self._temp_session in app.sessions.by_ref:
            app.sessions.destroy(self._temp_session)
        self._temp_session = None


class Response:
    """The reply: start(), then write()/end(); or redirect()."""

    def __init__(self, exchange) -> None:
        self._exchange = exchange
        self.status: int | None = None
        self.started = False        # start() called
        self.sent = False           # the head is on the wire
        self.finished = False
        self.close = False          # the connection ends after this reply
        self.framing = ""           # length | chunked | close | raw | none
        self.remaining = 0          # bytes still owed with framing "length"
        self._head: bytes | None = None
        self._body = exchange.request.method != "HEAD"

    def start(self, status: int, headers=(), *, length: int | None = None, close: bool = False) -> None:
        """Sets the status and headers (a dict or (name, value) pairs). `length` (or a Content-Length
        header) makes a length-delimited body; Transfer-Encoding and Connection are ours to set."""
        if self.started:
            raise RuntimeError("the response has already started")
        ex = self._exchange
        req = ex.request
        items = list(headers.items()) if isinstance(headers, dict) else list(headers)
        kept = []
        for name, value in items:
            low = name.lower()
            if low == "content-length":
                length = int(value)
            elif low == "connection":
                close = close or str(value).strip().lower() == "close"
            elif low != "transfer-encoding":
                kept.append((_clean(name), _clean(str(value))))   # no CR/LF: no response splitting
        close = close or ex.raw or not req.keep_alive
        if ex.upgrade and (status == 101 or 200 <= status < 300):
            framing = "raw"         # the connection now carries the tunnel
            close = True
        elif status < 200 or status in (204, 304):
            framing = "none"
            length = None
        elif length is not None:
            framing = "length"
        elif not self._body:
            framing = "none"        # HEAD without a length: nothing to frame
        elif req.version == "1.1" and not close:
            framing = "chunked"
        else:
            framing = "close"
            close = True
        self.status, self.close, self.framing = status, close, framing
        self.remaining = length or 0
        lines = [f"HTTP/{'1.0' if req.version == '1.0' else '1.1'} {status} {_REASONS.get(status, 'Unknown')}"]
        lines += [f"{n}: {v}" for n, v in kept]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        if framing != "raw":
            if close:
                lines.append("Connection: close")
            elif req.version == "1.0":
                lines.append("Connection: keep-alive")
        self._head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.started = True

    def redirect(self, url: str, status: int = 302) -> None:
        """Answers with a redirection to `url` (sent when the handler returns)."""
        self.start(status, [("Location", url)], length=0)

    # -- for a handler that sends body bytes itself (os.sendfile) --------------------------------
    async def own_transport(self):
        """Sends the head and returns the plain (no TLS) transport, once it has sent all it had
        buffered, when the body may go out past write(): a Content-Length body, or one that ends
        with the connection, to a non-HEAD request. None otherwise. Bytes sent so are counted with
        sent_outside(); the transport is only to be read (its socket), not written to."""
        if self.framing not in ("length", "close") or not self._body:
            return None
        await self.write(b"")
        transport = await self._ready()
        if transport.get_extra_info("ssl_object") is not None or transport.get_extra_info("sslcontext"):
            return None
        if transport.get_extra_info("socket") is None:
            return None
        while transport.get_write_buffer_size():    # bytes sent past it must not overtake these
            await asyncio.sleep(0.0005)
        return transport

    def sent_outside(self, n: int) -> None:
        """Counts n body bytes the handler sent itself (against the Content-Length)."""
        if self.framing == "length":
            if n > self.remaining:
                raise ValueError(f"{n} bytes sent where {self.remaining} remain of Content-Length")
            self.remaining -= n

    @property
    def connection_closed(self) -> bool:
        return self._exchange.proto.closing

    async def _ready(self):
        ex = self._exchange
        if not ex.turn.done():
            await ex.turn
        proto = ex.proto
        if proto.closing:
            raise ConnectionResetError("the connection is closed")
        return proto.transport

    async def write(self, data=b"") -> None:
        """Sends body bytes (an empty write sends the head); waits while the client isn't reading."""
        if self.finished:
            raise RuntimeError("the response has ended")
        if not self.started:
            self.start(200)
        transport = await self._ready()
        if self._head is not None:
            transport.write(self._head)
            self._head = None
            self.sent = True
        n = len(data)
        if n and self._body:
            framing = self.framing
            if framing == "chunked":
                transport.writelines((b"%x\r\n" % n, data, b"\r\n"))
            elif framing == "length":
                if n > self.remaining:
                    raise ValueError(f"{n} bytes written where {self.remaining} remain of Content-Length")
                self.remaining -= n
                transport.write(data)
            elif framing in ("close", "raw"):
                transport.write(data)
        proto = self._exchange.proto
        if proto.paused:
            await drain(proto)

    async def end(self, data=b"") -> None:
        """Sends what's left (and `data`) and ends the reply."""
        if self.finished:
            return
        if not self.started:
            self.start(200, length=len(data))
        if data:
            await self.write(data)
        if self.sent and self._exchange.proto.closing and (
                self.framing in ("close", "none") or (self.framing == "length" and not (self.remaining and self._body))):
            # nothing more to send (every byte of a Content-Length out too): the reply is complete even
            # though the client closed right after the last byte (xe vdi-export does)
            self.finished = True
            return
        transport = await self._ready()
        if self._head is not None:
            transport.write(self._head)
            self._head = None
            self.sent = True
        if self.framing == "chunked" and self._body:
            transport.write(b"0\r\n\r\n")
        elif self.framing == "length" and self.remaining and self._body:
            self.close = True       # fewer bytes than announced: the connection can't go on
        self.finished = True


_CRLF = str.maketrans("\r\n", "  ")


def _clean(text: str) -> str:
    return text.translate(_CRLF)


# -- the exchange: one request and its handler --------------------------------------------------------
class Exchange:
    __slots__ = ("proto", "route", "request", "response", "body", "turn", "keep_alive", "raw", "upgrade",
                 "complete", "done", "runner", "close_after", "discarding", "discarded", "after")

    def __init__(self, proto, route: Route, method: str, url: bytes, keep_alive: bool, raw: bool,
                 upgrade: bool) -> None:
        self.proto = proto
        self.route = route
        self.keep_alive = keep_alive
        self.raw = raw              # the body ends with the connection (and so does the exchange)
        self.upgrade = upgrade      # CONNECT or Upgrade: raw bytes both ways after the head
        self.body = BodyStream(proto)
        self.turn = asyncio.get_running_loop().create_future()
        self.complete = False       # the whole request has arrived
        self.done = False           # the handler has finished
        self.runner: asyncio.Task | None = None
        self.close_after = False
        self.discarding = False
        self.discarded = 0
        self.after = proto.hold.runner if proto.hold is not None else None   # runs once that is done
        path, query, qs = split_target(url)
        parser = proto.parser
        self.request = Request(self, method, url.decode("latin-1"), path, query, qs,
                               header_dict(proto.headers), parser.get_http_version(), keep_alive)
        self.response = Response(self)

    def your_turn(self) -> None:
        if not self.turn.done():
            self.turn.set_result(None)

    # -- bytes in ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Body bytes, from the parser (or, raw, from the socket)."""
        if self.discarding:
            self.discarded += len(data)
            if self.discarded > self.proto.server.config.max_request_size:
                close(self.proto)
                raise Stop()        # only the parser feeds a body being dropped
            return
        self.body.feed(data)

    def request_complete(self) -> bool:
        """The parser has the whole request. False: stop parsing (the connection is closing)."""
        self.complete = True
        self.body.end()
        if self.done:
            self.discarding = False
            if self.close_after:
                close(self.proto)
                return False
        return True

    # -- the handler ------------------------------------------------------------------------------
    async def run(self) -> None:
        req, resp = self.request, self.response
        try:
            try:
                if self.after is not None:
                    await asyncio.wait([self.after])
                req._find_task()
                if self.route.auth:
                    await req.authenticate()
                result = await self.route.fn(req, resp)
                if not resp.finished:
                    await resp.end()
                req._task_done(result)
            except HttpError as e:
                req.fail_task(e.error or ["INTERNAL_ERROR", e.message])
                await self._error(e.status, e.message, e.headers, e.close)
            except XapiError as e:
                req.fail_task(e.description)
                status = 404 if e.code in ("HANDLE_INVALID", "UUID_INVALID") else 500
                await self._error(status, " ".join(str(x) for x in e.description))
            except ConnectionError as e:
                req.fail_task(["INTERNAL_ERROR", f"connection: {e}"])
                close(self.proto)
            except asyncio.CancelledError:
                req._task_cancelled()
                close(self.proto)
                raise
            except Exception as e:  # noqa: BLE001 - a handler's bug is a 500, never the daemon's end
                log.exception("handler %s failed", self.route.fn.__qualname__)
                req.fail_task(["INTERNAL_ERROR", f"{type(e).__name__}: {e}"])
                await self._error(500, "An unexpected error occurred.")
        except ConnectionError:
            close(self.proto)
        finally:
            try:
                req._cleanup()
            finally:
                self._finish()

    async def _error(self, status: int, message: str, headers=(), close_conn: bool | None = None) -> None:
        resp = self.response
        if resp.sent or resp.finished:
            close(self.proto)        # too late for a status: cut the reply short
            return
        if close_conn is None:
            close_conn = status >= 500
        body = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
        resp.started = False
        resp._head = None
        resp.start(status, [("Content-Type", "text/plain; charset=utf-8"), *headers], length=len(body),
                   close=close_conn)
        await resp.end(body)

    def _finish(self) -> None:
        """After the handler: keep the connection, drop the rest of the body first, or close."""
        self.done = True
        proto = self.proto
        if proto.hold is self:
            proto.hold = None
            if proto.exchange is HOLD:
                proto.exchange = None
        if proto.closing:
            return
        close_conn = self.response.close or self.raw or not self.keep_alive or not self.response.finished
        if self.complete:
            if close_conn:
                close(proto)
            return
        # the handler left part of the body unread: drop it as it comes, then go on (or close)
        self.body.drop()
        self.body.abort(ConnectionAbortedError("the handler is done"))
        limit = proto.server.config.max_request_size
        cl = self.request.content_length
        if self.upgrade or self.raw or (cl is not None and cl - self.body.received > limit):
            close(proto)
            return
        self.close_after = close_conn
        self.discarding = True


def close(proto) -> None:
    if not proto.closing:
        proto.closing = True
        proto.transport.close()


# -- hooks for the HTTP protocol (xapi.server.http) ---------------------------------------------------
PENDING = object()      # proto.exchange while a non-RPC request's head is being read
HOLD = object()         # proto.exchange while the requests that follow wait for proto.hold's handler


class Takeover(Exception):
    """Raised from a parser callback to stop the parser; `apply` then takes the connection over."""

    def apply(self, proto, data: bytes) -> None:
        pass


class GoRaw(Takeover):
    """An HTTP/1.0 body without a length: the rest of the connection is the body."""

    def apply(self, proto, data: bytes) -> None:
        ex = proto.exchange
        line = b"%s %s HTTP/1.0\r\n" % (proto.method, proto.url)
        raw_mode(proto, ex, data[body_offset(data, proto.prev, line):])


class Stop(Takeover):
    """The connection is closing: parse nothing more."""


def routed(proto) -> bool:
    """Whether a handler takes the request whose head is being read (its body may be large)."""
    path = split_target(proto.url)[0]
    return proto.routes.lookup(proto.method.decode("latin-1"), path) is not None


def begin(proto) -> Exchange | None:
    """Starts the handler for the current request, once its head is in; None for RPC."""
    method = proto.method.decode("latin-1")
    path = split_target(proto.url)[0]
    route = proto.routes.lookup(method, path)
    if route is None:
        if method == "POST":
            proto.exchange = HOLD if proto.hold is not None else None
            return None
        route = NOT_FOUND if method in _KNOWN_METHODS else NOT_ALLOWED
    parser = proto.parser
    upgrade = parser.should_upgrade()
    keep_alive = parser.should_keep_alive() and not upgrade
    raw = upgrade
    if not upgrade and method in ("PUT", "POST") and parser.get_http_version() == "1.0":
        names = {name.lower() for name, _ in proto.headers}
        raw = b"content-length" not in names and b"transfer-encoding" not in names
    if raw:
        keep_alive = False
    ex = Exchange(proto, route, method, proto.url, keep_alive, raw, upgrade)
    proto.exchange = ex
    task = ex.runner = asyncio.get_running_loop().create_task(ex.run())
    task.add_done_callback(proto._flush)
    proto.pending.append((task, ex, keep_alive))
    if len(proto.pending) == 1:
        ex.your_turn()
    return ex


def on_body(proto, body: bytes) -> bool:
    """Body bytes of a non-RPC request; False when the RPC endpoints take it (and buffer it)."""
    ex = proto.exchange
    if type(ex) is not Exchange:        # HOLD: an RPC call waiting for a handler (begin ran at the head)
        return False
    ex.feed(body)
    return True


def on_message_complete(proto) -> bool:
    """The end of a non-RPC request, or of any request while a handler holds the ones after it;
    False when the RPC endpoints take it now."""
    ex = proto.exchange
    if ex is None:
        return False
    if type(ex) is Exchange and ex.raw and not ex.complete:
        if ex.upgrade:
            return True             # the parser raises HttpParserUpgrade with the offset next
        raise GoRaw()               # llhttp calls it bodiless: the body is the rest of the connection
    if ex is HOLD:
        _rpc_after_hold(proto)
        return True
    if not ex.request_complete():
        proto.exchange = None
        raise Stop()
    if not ex.done and ex.request.method not in _SAFE_METHODS:
        proto.hold = ex
    proto.exchange = HOLD if proto.hold is not None else None
    return True


def _rpc_after_hold(proto) -> None:
    """An RPC call pipelined after a handler that isn't done: it runs once the handler is."""
    from .rpc import JSON, XML, HttpReply
    body = b"".join(proto.body)
    proto.body = []
    keep_alive = proto.parser.should_keep_alive()
    url = proto.url
    is_json = url.split(b"?", 1)[0] in (b"/jsonrpc", b"/json")
    endpoints = proto.server.endpoints
    hold = proto.hold

    async def later():
        if hold is not None:
            await asyncio.wait([hold.runner])
        reply = endpoints.json(proto, body) if is_json else endpoints.xml(proto, body)
        if type(reply) is not bytes and type(reply) is not HttpReply:
            reply = await reply
        return reply
    proto.respond(later(), JSON if is_json else XML, keep_alive)


def upgrade(proto, data: bytes, offset: int) -> bool:
    """After CONNECT or an Upgrade request: the rest of the connection belongs to the handler."""
    ex = proto.exchange
    if type(ex) is not Exchange or not ex.upgrade:
        return False
    raw_mode(proto, ex, data[offset:])
    return True


def raw_mode(proto, ex: Exchange, rest: bytes) -> None:
    proto.exchange = ex             # for idle_check and connection_lost; the parser is done
    proto.prev = None
    raw = RawProtocol(proto, ex)
    proto.transport.set_protocol(raw)
    if rest:
        ex.feed(rest)


def eof_received(proto) -> bool:
    """The client has closed its side. A body still arriving is cut short; running handlers may still
    answer (the connection closes after them)."""
    ex = proto.exchange
    if type(ex) is Exchange:
        ex.body.abort(ConnectionEnded("the client closed the connection before the end of the body"))
    running = [e for _, e, _ in proto.pending if type(e) is Exchange and not e.done]
    if not running:
        return False
    for e in running:
        e.keep_alive = False
    return True


def idle_check(proto, now: float) -> bool:
    """For connections streaming a handler's body: close when nothing came for idle_timeout (not for
    tunnels: a console may be quiet for long)."""
    ex = proto.exchange
    if type(ex) is not Exchange:
        return False
    if not ex.upgrade and not ex.complete and now - proto.last_active > proto.server.config.idle_timeout:
        close(proto)
    return True


def connection_lost(proto, exc) -> None:
    ex = proto.exchange
    if type(ex) is Exchange:
        ex.body.abort(ConnectionEnded("the connection was closed") if exc is None else
                      ConnectionResetError(f"the connection was lost: {exc}"))
    wake_writers(proto, ConnectionResetError("the connection was lost"))


class RawProtocol(asyncio.Protocol):
    """The connection after the head of a CONNECT/Upgrade request, or of an HTTP/1.0 body without a
    length: bytes go to the exchange's body; the HTTP protocol still owns the connection."""

    def __init__(self, http, exchange: Exchange) -> None:
        self.http = http
        self.exchange = exchange

    def data_received(self, data: bytes) -> None:
        self.http.last_active = time.monotonic()
        self.exchange.feed(data)

    def eof_received(self) -> bool:
        ex = self.exchange
        ex.complete = True
        ex.body.end()
        if ex.done:
            close(self.http)
            return False
        return True                 # keep the connection open for the reply

    def connection_lost(self, exc) -> None:
        self.exchange.body.abort(ConnectionResetError("the connection was lost"))
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()


# -- built-in answers ---------------------------------------------------------------------------------
async def _not_found(request, response) -> None:
    body = b"no handler for this path\n"
    response.start(404, [("Content-Type", "text/plain")], length=len(body))
    await response.end(body)


async def _not_allowed(request, response) -> None:
    body = b"method not allowed\n"
    response.start(405, [("Content-Type", "text/plain")], length=len(body))
    await response.end(body)


NOT_FOUND = Route("*", "*", _not_found, None, False, None, False)
NOT_ALLOWED = Route("*", "*", _not_allowed, None, False, None, False)
