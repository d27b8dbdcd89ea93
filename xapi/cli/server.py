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

from xapi.cli import commands, records, xe
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

    async def load(self, name: str, limit: int) -> bytes | None:
        """The client's file `name` (its Load command): None when it can't read it or the file is
        larger than limit bytes (read and dropped, so that the protocol stays in step)."""
        await self.write(xe.command(xe.LOAD, name))
        if await self.response() != xe.OK:
            return None
        data, size = bytearray(), 0
        while True:
            r = await self.message()
            if r.int() != xe.MSG_BLOB:
                raise ConnectionResetError("protocol error: a blob was expected")
            if r.int() == xe.END:
                return bytes(data) if size <= limit else None
            n = r.int()
            while n > 0:                    # in pieces: a chunk may be the whole file
                piece = await self.read_exact(min(n, 1 << 16))
                n -= len(piece)
                size += len(piece)
                if size <= limit:
                    data += piece

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
    stream, proto = request.take_connection()
    ch = Channel(proto, stream)
    await ch.write(xe.handshake())
    prefix = await ch.read_exact(len(xe.PREFIX))
    major = struct.unpack("<i", await ch.read_exact(4))[0]
    await ch.read_exact(4)
    if prefix != xe.PREFIX or major != xe.MAJOR:
        return
    lines = body.decode("utf-8", "replace").split("\n")
    given_session = None
    if lines and lines[0].startswith("session_id="):     # a member forwarding its CLI request to us
        given_session = lines.pop(0)[len("session_id="):].strip()
    app = request.app
    cmd = commands.parse_args(lines)[0] or "help"
    if not app.is_coordinator and cmd not in NEVER_FORWARD and given_session is None:
        if not request.local:
            # xapi forwards only its own host's (Unix socket) CLI requests to the coordinator
            code = await report(ch, XapiError("HOST_IS_SLAVE", app.coordinator_address))
            await ch.write(xe.command(xe.EXIT, code))
            return
        code = await forward(app, ch, lines)
        if code is not None:
            await ch.write(xe.command(xe.EXIT, code))
        return
    code = await serve(request, ch, lines, given_session)
    await ch.write(xe.command(xe.EXIT, code))


# Commands a pool member runs itself (xapi's Neverforward flag): those about its own state, and
# those that must work when the coordinator is gone.
NEVER_FORWARD = frozenset({"help", "host-is-in-emergency-mode", "pool-emergency-transition-to-master",
                           "pool-emergency-reset-master", "host-emergency-reset-server-certificate",
                           "host-emergency-disable-tls-verification", "host-emergency-reenable-tls-verification",
                           "host-emergency-management-reconfigure"})


async def report(ch: Channel, e: XapiError, names: dict | None = None) -> int:
    """Prints a XenAPI failure as xe does; the exit code."""
    text, raw = commands.describe_error(e, names)
    if text is not None:
        await ch.out("stderr", text)
    else:
        await ch.write(xe.command(xe.ERROR, raw[0], raw[1:]))
    return 1


async def forward(app, ch: Channel, lines: list[str]) -> int | None:
    """Relays a member's CLI request to the coordinator (as xapi_cli.ml's forward): a session made
    there with the pool secret (session.slave_login) heads the request body, then the two protocol
    streams are joined until the coordinator ends. Returns an exit code when the relay failed before
    the coordinator took over, else None (the coordinator has sent its own Exit)."""
    import asyncio
    import ssl

    from xapi.pool.calls import _CONTEXT, fingerprint_of
    from xapi.pool.remote import Remote

    role = app.role
    address, port = role.address, app.config.https_port
    remote = Remote(address, port, role.fingerprint or None)
    session = None
    writer = None
    try:
        try:
            session = await remote.call("session.slave_login", app.host_ref, app.pool_secret)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port, ssl=_CONTEXT), 30)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
            if role.fingerprint and fingerprint_of(der) != role.fingerprint:
                raise XapiError("SSL_VERIFY_ERROR", f"{address}: certificate fingerprint mismatch")
            kept = [ln for ln in lines if not ln.startswith(("username=", "password=", "session_id="))]
            body = "\n".join([f"session_id={session}", *kept]).encode()
            writer.write(f"POST /cli HTTP/1.0\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
            hello = await asyncio.wait_for(reader.readexactly(len(xe.PREFIX) + 8), 30)
            if not hello.startswith(xe.PREFIX):
                raise XapiError("CANNOT_CONTACT_HOST", address)
            writer.write(xe.handshake())
        except XapiError as e:
            if e.code in ("JOINING_HOST_CONNECTION_FAILED", "JOINING_HOST_SERVICE_FAILED"):
                e = XapiError("CANNOT_CONTACT_HOST", address)
            return await report(ch, e)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            return await report(ch, XapiError("CANNOT_CONTACT_HOST", address))

        async def up():             # the client's answers (prompts, transfer results) to the coordinator
            if ch.buf:
                writer.write(ch.buf)
                ch.buf = b""
            while chunk := await ch.body.read(65536):
                writer.write(chunk)
                await writer.drain()

        async def down():           # the coordinator's commands to the client
            while chunk := await reader.read(65536):
                await ch.write(chunk)

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait([tasks[1]])
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return None
    finally:
        if writer is not None:
            writer.close()
        if session is not None:
            try:
                await remote.call("session.logout", session)
            except (XapiError, OSError):
                pass
        remote.close()


async def serve(request, ch: Channel, lines: list[str], given_session: str | None = None) -> int:
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
    own = given_session is None      # a session we make is ours to end; a forwarded one is not
    try:
        if cmd in (None, "help"):           # xapi answers help before any login
            await commands.Run(request, None, ch.out, args, flags, channel=ch).run("help")
            return 0
        if given_session is not None:
            if given_session not in app.sessions.by_ref:
                raise XapiError("SESSION_INVALID", given_session)
            session = given_session
        elif request.local:
            session = app.sessions.create("root", superuser=True, originator=ORIGINATOR).ref
        else:
            from xapi.actions import session as session_actions
            session = await session_actions.login_with_password(request, None, user or "", password or "",
                                                                "", ORIGINATOR)
        run = commands.Run(request, session, ch.out, args, flags, channel=ch)
        run.forwarded = not own
        await run.run(cmd)
        return 0
    except commands.Unknown as e:
        await ch.out("stderr", f"Unknown command: {e}\nFor usage run: 'xe help'\n")
        return 1
    except commands.ParamNotFound as e:
        await ch.out("stderr", f"Required parameter not found: {e}\nFor usage run: 'xe help'\n")
        return 1
    except (commands.CliError, records.RecordFailure) as e:
        # cli_operations' failwith is Cli_failure, records' Record_failure: both `Error: <message>`
        await ch.out("stderr", f"Error: {e}\n")
        return 1
    except commands.MultipleFailure as e:
        for uuid, message in e.failures:
            await ch.out("print", f"operation failed on {uuid}: {message}")
        return 1
    except commands.ExitWithError as e:
        return e.code
    except XapiError as e:
        if e.code == "SESSION_AUTHENTICATION_FAILED":        # xe says no more than this (xapi_cli.ml)
            who = e.params[0] if e.params else ""
            what = "Username/password must be specified" if not who else "Authentication failed"
            await ch.out("stderr", f"{what}\nFor usage run: 'xe help'\n")
            return 1
        return await report(ch, e, commands.ref_names(app, e.params))
    except ConnectionError:
        raise
    except Exception as e:  # noqa: BLE001 - a command's bug is an error for the client, not a crash
        log.exception("xe command %s failed", cmd)
        return await report(ch, XapiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}"))
    finally:
        if own and session is not None and session in app.sessions.by_ref:
            app.sessions.destroy(session)


def register(routes) -> None:
    routes.add("POST", "/cli", cli, auth=False)
