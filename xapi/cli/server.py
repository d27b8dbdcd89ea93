"""`POST /cli`: xapi's CLI server (xapi_cli.ml) for the `xe` client.

The body is the command line, arguments joined by newlines (then `username=`/`password=`). No HTTP
reply is sent: once the body is in, the connection leaves the HTTP parser (handlers.raw_mode) and
carries the thin CLI protocol both ways (see xapi.cli.xe for the framing). Callers on the Unix socket
are root; over TCP the credentials log in as session.login_with_password would. Commands run XenAPI
calls with that session through the RPC layer's dispatch, so RBAC applies; the session is logged out
at the end. Success ends with Exit 0; failures print xe's error text, then Exit 1.
"""
from __future__ import annotations

import logging
import struct

from xapi.cli import commands, xe
from xapi.datamodel.errors import XapiError
from xapi.server import handlers

log = logging.getLogger("xapi.cli")

MAX_BODY = 1 << 20
ORIGINATOR = "cli"


class Channel:
    """The raw connection after the request: protocol messages out, the client's replies in."""

    def __init__(self, proto, body) -> None:
        self.proto = proto
        self.body = body
        self.buf = b""

    async def write(self, data: bytes) -> None:
        proto = self.proto
        if proto.closing:
            raise ConnectionResetError("the connection is closed")
        proto.transport.write(data)
        if proto.paused:
            await handlers.drain(proto)

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.body.read(65536)
            if not chunk:
                raise ConnectionResetError("the client closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def message(self) -> xe.Reader:
        (n,) = struct.unpack("<i", await self.read_exact(4))
        return xe.Reader(await self.read_exact(n))

    async def response(self) -> int:
        """The client's answer to a Load/HttpGet/HttpPut: OK or FAILED (WAIT heartbeats are skipped)."""
        while True:
            r = await self.message()
            kind = r.int()
            if kind == xe.MSG_RESPONSE:
                tag = r.int()
                if tag != xe.WAIT:
                    return tag

    async def prompt(self, text: str) -> str:
        """Print text, then the client reads a line from its terminal and sends it back as a blob."""
        await self.write(xe.command(xe.PRINT, text))
        await self.write(xe.command(xe.PROMPT))
        data = b""
        while True:
            r = await self.message()
            if r.int() != xe.MSG_BLOB:
                raise ConnectionResetError("protocol error: a blob was expected")
            if r.int() == xe.END:
                return data.decode("utf-8", "replace")
            data += await self.read_exact(r.int())

    async def out(self, kind: str, text: str) -> None:
        if kind == "stderr":
            await self.write(xe.command(xe.PRINT_STDERR, text))
        else:
            await self.write(xe.command(xe.PRINT, text))


async def cli(request, response) -> None:
    body = b""
    while True:
        chunk = await request.read(65536)
        if not chunk:
            break
        body += chunk
        if len(body) > MAX_BODY:
            raise handlers.HttpError(413, "CLI request too large", close=True)
    # take the connection over: from now on the thin CLI protocol, no HTTP reply
    ex = request._exchange
    proto = ex.proto
    stream = handlers.BodyStream(proto)
    ex.body = stream
    ex.complete = True
    handlers.raw_mode(proto, ex, b"")
    response.started = response.sent = response.finished = True
    response.close = True
    ch = Channel(proto, stream)
    await ch.write(xe.handshake())
    prefix = await ch.read_exact(len(xe.PREFIX))
    major = struct.unpack("<i", await ch.read_exact(4))[0]
    await ch.read_exact(4)
    if prefix != xe.PREFIX or major != xe.MAJOR:
        return
    code = await serve(request, ch, body.decode("utf-8", "replace").split("\n"))
    await ch.write(xe.command(xe.EXIT, code))


async def serve(request, ch: Channel, lines: list[str]) -> int:
    app = request.app
    cmd, args, flags, _ = commands.parse_args(lines)
    user = args.pop("username", None)
    password = args.pop("password", None)
    args.pop("session_id", None)
    if cmd == "help" and "_topic" not in args:
        positional = [ln for ln in lines[1:] if ln and "=" not in ln and not ln.startswith("--")]
        if positional:
            args["_topic"] = positional[0]
    session = None
    try:
        if request.local:
            session = app.sessions.create("root", superuser=True, originator=ORIGINATOR).ref
        else:
            from xapi.actions import session as session_actions
            session = await session_actions.login_with_password(request, None, user or "", password or "",
                                                                "", ORIGINATOR)
        if cmd is None:
            cmd = "help"
        await commands.Run(request, session, ch.out, args, flags, channel=ch).run(cmd)
        return 0
    except commands.Unknown as e:
        await ch.out("stderr", f"Unknown command: {e}\nFor usage run: 'xe help'\n")
        return 1
    except commands.CliError as e:
        await ch.out("stderr", f"{e}\n")
        return 1
    except commands.ExitWithError as e:
        return e.code
    except XapiError as e:
        text, raw = commands.describe_error(e, commands.ref_names(app, e.params))
        if text is not None:
            await ch.out("stderr", text)
        else:
            await ch.write(xe.command(xe.ERROR, raw[0], raw[1:]))
        return 1
    except ConnectionError:
        raise
    except Exception as e:  # noqa: BLE001 - a command's bug is an error for the client, not a crash
        log.exception("xe command %s failed", cmd)
        await ch.write(xe.command(xe.ERROR, "INTERNAL_ERROR", [f"{type(e).__name__}: {e}"]))
        return 1
    finally:
        if session is not None and session in app.sessions.by_ref:
            app.sessions.destroy(session)


def register(routes) -> None:
    routes.add("POST", "/cli", cli, auth=False)
