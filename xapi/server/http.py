"""HTTP/1.1 front end on httptools: keep-alive, pipelining, size limits and timeouts.

POST /jsonrpc is JSON-RPC; every other POST is XML-RPC (xapi matches the longest prefix, so
/, /RPC2 and XO's /xmlrpc all land there), unless a POST handler is registered for the path. Other
methods go to the HTTP handlers (xapi.server.handlers: /blob and the like), which start once the head
is in and stream their bodies; paths no handler takes answer 404. Replies go out in request order even when one of them waits (a
login, a long poll, a handler): later replies queue behind it.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

import httptools

from . import handlers, tls
from .rpc import JSON, XML, HttpReply

log = logging.getLogger("xapi.http")

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 413: b"Payload Too Large", 500: b"Internal Error"}


def _head(status: int, content_type: bytes, close: bool) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sContent-Length: " % (
        status, _REASONS.get(status, b"Error"), content_type, b"Connection: close\r\n" if close else b"")


_HEAD_OK = {(ct, close): _head(200, ct, close) for ct in (XML, JSON) for close in (False, True)}


class Reject(Exception):
    """Stops the parser: the request is refused with this status and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("server", "app", "local", "peer", "parser", "transport", "url", "headers", "body", "body_len",
                 "pending", "in_request", "request_started", "last_active", "closing", "paused",
                 # HTTP handlers (xapi.server.handlers)
                 "method", "routes", "rpc_method", "exchange", "hold", "prev", "body_paused", "waiters",
                 "reader")

    def __init__(self, server, local: bool = False) -> None:
        self.server = server
        self.app = server.app
        self.local = local                # on the Unix socket: callers are root
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.reader = None              # the transport paused to stop reading (tls.read_control)
        self.url = b""
        self.headers: list = []
        self.body: list = []
        self.body_len = 0
        self.pending: collections.deque = collections.deque()
        self.in_request = False
        self.request_started = 0.0
        self.last_active = time.monotonic()
        self.closing = False
        self.paused = False
        self.method = b""
        self.routes = getattr(server, "handlers", None) or handlers.Routes()
        self.rpc_method = b"" if self.routes.post else b"POST"    # requests with another go to handlers
        self.exchange = None            # handlers.PENDING or HOLD, or the Exchange whose body is coming in
        self.hold = None                # the Exchange whose handler the following requests wait for
        self.prev = None                # the last chunk read (to find where a head ended)
        self.body_paused = False        # reading paused until a handler reads its body
        self.waiters: list = []         # handlers waiting for resume_writing

    # -- asyncio ---------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.reader = tls.read_control(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "local"   # the client's address, for auth
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.closing = True
        for fut, content_type, _ in self.pending:
            if type(content_type) is bytes:
                fut.cancel()
            else:
                # a handler isn't cancelled (as xapi's handler threads aren't): its body ends after
                # what arrived and its writes fail, so an import the client left once it had sent
                # everything goes on to its end and settles its task
                content_type.your_turn()
        self.pending.clear()
        handlers.connection_lost(self, exc)

    def pause_writing(self) -> None:       # the client isn't reading: stop reading its requests too
        self.paused = True
        self.reader.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if not self.closing and not self.body_paused:
            self.reader.resume_reading()
        if self.waiters:
            handlers.wake_writers(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, Reject):
                self.refuse(cause.status, str(cause))
            elif isinstance(cause, handlers.Takeover):
                cause.apply(self, data)
            else:
                log.exception("error handling a request", exc_info=cause)
                self.refuse(500, "internal error")
        except httptools.HttpParserUpgrade as e:
            if not handlers.upgrade(self, data, e.args[0]):
                self.refuse(400, "protocol upgrade is not supported here")
        except httptools.HttpParserError as e:
            self.refuse(400, f"malformed HTTP request: {e}")
        self.prev = data

    def eof_received(self):
        return handlers.eof_received(self) if self.pending else False

    # -- httptools callbacks ---------------------------------------------------------------------
    # A request starts with its URL (httptools may deliver it in pieces); no on_message_begin saves a
    # callback per request.
    def on_url(self, url: bytes) -> None:
        if not self.in_request:
            self.in_request = True
            self.request_started = self.last_active
            self.url = url
            self.headers = []
            self.body_len = 0
            self.method = method = self.parser.get_method()
            if method != self.rpc_method:
                self.exchange = handlers.PENDING    # a handler may take it: decided once the head is in
            return
        self.url += url
        if len(self.url) > 65536:
            raise Reject(414, "URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name, value))
        if len(headers) > 256:
            raise Reject(400, "too many headers")
        # only two headers matter before the body arrives; compare lengths first, it's the hot path
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            try:
                size = int(value)
            except ValueError:
                raise Reject(400, "bad Content-Length") from None
            limit = self.server.config.max_request_size
            if size > limit and not (self.exchange is not None and handlers.routed(self)):
                raise Reject(413, f"request body of {size} bytes exceeds the limit of {limit}")
        elif n == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_headers_complete(self) -> None:
        # a handler starts with the head: it may answer before the body comes (xapi's imports do,
        # and xe and Xen Orchestra wait for that answer before they send the body)
        if self.exchange is handlers.PENDING:
            handlers.begin(self)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None and handlers.on_body(self, body):
            return
        self.body_len += len(body)
        if self.body_len > self.server.config.max_request_size:
            raise Reject(413, f"request body exceeds the limit of {self.server.config.max_request_size}")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_request = False
        if self.exchange is not None and handlers.on_message_complete(self):
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        keep_alive = self.parser.should_keep_alive()
        endpoints = self.server.endpoints
        # only POSTs no handler takes come here: every other request went to the handlers
        # (handlers.begin), which answer 404 (405 for unknown methods) where no route matches
        url = self.url
        if url == b"/jsonrpc" or url.split(b"?", 1)[0] in (b"/jsonrpc", b"/json"):
            self.respond(endpoints.json(self, body), JSON, keep_alive)
        else:
            self.respond(endpoints.xml(self, body), XML, keep_alive)

    # -- replies ---------------------------------------------------------------------------------
    def respond(self, reply, content_type: bytes, keep_alive: bool) -> None:
        if type(reply) is bytes or type(reply) is HttpReply:
            if not self.pending:
                self._write(reply, content_type, keep_alive)
                return
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(reply)
        else:
            fut = asyncio.ensure_future(reply)
            fut.add_done_callback(self._flush)
        self.pending.append((fut, content_type, keep_alive))

    def _flush(self, _=None) -> None:
        while self.pending and self.pending[0][0].done():
            fut, content_type, keep_alive = self.pending.popleft()
            if fut.cancelled():
                continue
            exc = fut.exception()
            if exc is not None:
                log.error("reply failed", exc_info=exc)
                self.refuse(500, "internal error")
                return
            if type(content_type) is not bytes:     # a handler's exchange: it wrote its own reply
                continue
            self._write(fut.result(), content_type, keep_alive)
        if self.pending and type(self.pending[0][1]) is not bytes:
            self.pending[0][1].your_turn()

    def _write(self, reply, content_type: bytes, keep_alive: bool) -> None:
        if self.closing:
            return
        close = not keep_alive
        if type(reply) is bytes:
            self.transport.write(b"%s%d\r\n\r\n%s" % (_HEAD_OK[content_type, close], len(reply), reply))
        else:
            self.transport.write(b"%s%d\r\n\r\n%s" % (_head(reply.status, reply.content_type, close),
                                                     len(reply.body), reply.body))
        if close:
            self.closing = True
            self.transport.close()

    def refuse(self, status: int, message: str) -> None:
        """Answers with an error status and closes: used when the request itself can't be read."""
        if self.closing:
            return
        body = message.encode() + b"\n"
        self.transport.write(b"%s%d\r\n\r\n%s" % (_head(status, b"text/plain", True), len(body), body))
        self.closing = True
        self.transport.close()

    def idle_check(self, now: float) -> None:
        """Called about once a second: ends requests that take too long and idle keep-alive connections."""
        cfg = self.server.config
        if self.exchange is not None and handlers.idle_check(self, now):
            return
        if self.in_request:
            if now - self.request_started > cfg.request_timeout:
                self.refuse(408, "request not received in time")
        elif not self.pending and now - self.last_active > cfg.idle_timeout:
            self.closing = True
            self.transport.close()
