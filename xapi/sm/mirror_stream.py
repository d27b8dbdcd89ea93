"""A mirror's data stream to its destination disk on another host: one long-lived connection per
mirror, as xapi's storage motion hands tapdisk one socket to the remote host's NBD server.

The source opens ``CONNECT /services/SM/mirror?dp=<mirror datapath>`` on the destination host's TLS
port, its certificate pinned and the pool secret in X-Pool-Secret (as the pool's internal calls,
xapi.pool.internal), once ``mirror.dst_open`` opened the disk there. After the 200 the connection
carries, source to destination, records ``offset (u64) length (u32) data``; destination to source,
``b"A" count (u64)`` once the first `count` records are on the disk (records are written and
acknowledged in their order), or ``b"E" length (u64) JSON [code, params...]`` when the disk fails
(VDI_IO_ERROR [reason]), after which the destination reads nothing more. A CONNECT tunnel has no
idle timeout: a mirror waiting for its switch may be quiet for long.

`StreamDst` is the source's end, called from the mirror's pool threads (xapi.sm.mirror): `write`
returns once the destination acknowledged it (a guest's write is mirrored synchronously, as
tapdisk's), `write_behind` (the base copy) once sent, with at most WINDOW bytes unacknowledged;
`flush` waits for every acknowledgement; `close` flushes (unless the stream failed), ends the
connection and closes the destination (``mirror.dst_close``). Any failure is the mirror's: the
next call raises it.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import ssl
import struct
from urllib.parse import quote

import orjson

from xapi.datamodel.errors import XapiError
from xapi.server.handlers import HttpError
from xapi.sm import mirror

log = logging.getLogger("xapi.sm.mirror")

PATH = "/services/SM/mirror"
RECORD = struct.Struct(">QI")       # offset, length
REPLY = struct.Struct(">cQ")        # b"A" count | b"E" length of the JSON error that follows
MAX_RECORD = 8 << 20
WINDOW = 16 << 20                   # base-copy bytes sent and not yet acknowledged
TIMEOUT = 60.0                      # a call waiting for the destination


# -- the destination's end ----------------------------------------------------------------------------
async def _fill(request, view) -> int:
    got = 0
    while got < len(view):
        n = await request.readinto(view[got:])
        if n == 0:
            break
        got += n
    return got


async def _handle(request, response) -> None:
    from xapi.pool import internal
    internal.authenticate(request)
    mdp = request.query.get("dp", "")
    entry = mirror.of(request.app).dsts.get(mdp)
    if entry is None:
        raise HttpError(404, f"no mirror destination {mdp}", close=True)
    disk = entry[0]
    response.start(200, [("Content-Type", "application/octet-stream")])
    await response.write(b"")                   # the head: the source starts sending
    # records are read while the previous ones are written: one write at a time, in their order,
    # each acknowledged once on the disk
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)
    writes = asyncio.ensure_future(_write_all(response, disk, mdp, queue))
    head = bytearray(RECORD.size)
    try:
        while not writes.done():
            n = await _fill(request, memoryview(head))
            if n == 0:
                break                               # the source ended the stream
            if n < len(head):
                raise ConnectionResetError("the stream ended inside a record")
            offset, length = RECORD.unpack(head)
            if length > MAX_RECORD:
                await _offer(queue, ["VDI_IO_ERROR", f"mirror record of {length} bytes"], writes)
                break
            data = bytearray(length)
            if await _fill(request, memoryview(data)) < length:
                raise ConnectionResetError("the stream ended inside a record")
            await _offer(queue, (offset, data), writes)
    except ConnectionError as e:            # the source went away (a cancel, a failure there)
        log.info("mirror stream %s ended: %s", mdp, e)
    finally:
        await _offer(queue, None, writes)
        try:
            await writes                    # the write in flight finishes, cancelled or not
        except ConnectionError as e:
            log.info("mirror stream %s ended: %s", mdp, e)


async def _offer(queue: asyncio.Queue, item, writes: asyncio.Future) -> None:
    """Queues `item` for the writer, unless it ended first (a disk error: nothing more is written)."""
    if writes.done():
        return
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait([put, writes], return_when=asyncio.FIRST_COMPLETED)
    put.cancel()


async def _write_all(response, disk, mdp: str, queue: asyncio.Queue) -> None:
    from xapi.sm.vhd import VHDError
    count = 0
    while True:
        item = await queue.get()
        if item is None:
            return
        if isinstance(item, list):          # the reader's own error
            await _error(response, item)
            return
        offset, data = item
        if data:
            try:
                await mirror.run(disk.write, offset, data)
            except (OSError, VHDError) as e:
                log.error("mirror destination %s: %s", mdp, e)
                await _error(response, ["VDI_IO_ERROR", str(e) or type(e).__name__])
                return
        count += 1
        await response.write(REPLY.pack(b"A", count))


async def _error(response, error: list) -> None:
    body = orjson.dumps([str(x) for x in error])
    await response.write(REPLY.pack(b"E", len(body)) + body)


def register(routes) -> None:
    routes.add("CONNECT", PATH, _handle, auth=False)


# -- the source's end ---------------------------------------------------------------------------------
class StreamDst:
    """The destination disk of a mirror on another host (see the module doc)."""

    def __init__(self, app, loop, host: str, mdp: str) -> None:
        self.app, self.loop, self.host, self.mdp = app, loop, host, mdp
        self.reader = self.writer = None
        self.acks: asyncio.Task | None = None
        self.sent = 0                   # records sent
        self.acked = 0                  # records the destination has on its disk
        self.inflight: collections.deque = collections.deque()     # (record number, bytes)
        self.unacked = 0                # bytes sent and not acknowledged
        self.waiters: list = []         # (record number, future)
        self.error: Exception | None = None
        self.closed = False

    # -- on the event loop --
    async def open(self) -> None:
        peer = self.app.pool.peer_of(self.host)
        try:
            self.reader, self.writer = await peer._connect()   # TLS, the host's certificate pinned
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            raise XapiError("HOST_OFFLINE", self.host) from e
        try:
            self.writer.write((f"CONNECT {PATH}?dp={quote(self.mdp, safe='')} HTTP/1.1\r\n"
                               f"Host: {peer.address}\r\nUser-Agent: xapi-mirror\r\n"
                               f"X-Pool-Secret: {peer.secret}\r\n\r\n").encode())
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            status = head.split(b" ", 2)[1]
            if status != b"200":
                text = head.decode("latin-1").split("\r\n", 1)[0]
                raise XapiError("VDI_IO_ERROR", f"mirror stream to {self.host}: {text}")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ssl.SSLError, IndexError) as e:
            self.writer.close()
            raise XapiError("VDI_IO_ERROR", f"mirror stream to {self.host}: {type(e).__name__}: {e}") from None
        except BaseException:
            self.writer.close()
            raise
        self.acks = self.loop.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        try:
            while True:
                kind, value = REPLY.unpack(await self.reader.readexactly(REPLY.size))
                if kind == b"A" and self.sent >= value >= self.acked:
                    self._acked(value)
                    continue
                if kind == b"E" and value <= 65536:
                    self._fail(XapiError(*orjson.loads(await self.reader.readexactly(value))))
                else:
                    self._fail(XapiError("VDI_IO_ERROR", f"mirror stream to {self.host}: bad reply"))
                return
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, orjson.JSONDecodeError, TypeError) as e:
            self._fail(XapiError("VDI_IO_ERROR", f"mirror stream to {self.host} ended: {type(e).__name__}"))

    def _acked(self, count: int) -> None:
        self.acked = count
        while self.inflight and self.inflight[0][0] <= count:
            self.unacked -= self.inflight.popleft()[1]
        self._wake(lambda n: n <= count)

    def _fail(self, e: Exception) -> None:
        if self.error is None:
            self.error = e
        self._wake(lambda n: True)
        if self.writer is not None:
            self.writer.close()

    def _wake(self, which) -> None:
        keep = []
        for n, fut in self.waiters:
            if which(n):
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((n, fut))
        self.waiters = keep

    async def _until(self, n: int) -> None:
        """Until record n is acknowledged; the stream's failure if it fails first."""
        while self.acked < n:
            if self.error is not None:
                raise self.error
            fut = self.loop.create_future()
            self.waiters.append((n, fut))
            await fut

    async def _send(self, offset: int, data, wait: bool) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise OSError("the mirror's destination is closed")
        self.sent += 1
        n = self.sent
        self.writer.write(RECORD.pack(offset, len(data)))
        self.writer.write(data)
        self.inflight.append((n, len(data)))
        self.unacked += len(data)
        try:
            await self.writer.drain()
        except (OSError, ssl.SSLError) as e:
            self._fail(XapiError("VDI_IO_ERROR", f"mirror stream to {self.host}: {e}"))
            raise self.error from None
        if wait:
            await self._until(n)
        while self.unacked > WINDOW:
            await self._until(self.inflight[0][0])

    async def _close(self) -> None:
        try:
            if not self.closed and self.error is None:
                await self._until(self.sent)
        finally:
            self.closed = True
            if self.writer is not None:
                self.writer.close()
            if self.acks is not None:
                self.acks.cancel()
            await self.app.pool.call(self.host, "mirror.dst_close", self.mdp)

    # -- from the mirror's pool threads --
    def _run(self, coro):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise XapiError("VDI_IO_ERROR", f"mirror stream to {self.host}: no answer in {TIMEOUT:.0f}s") from None

    def write(self, offset: int, data) -> None:
        self._run(self._send(offset, data, True))

    def write_behind(self, offset: int, data) -> None:
        self._run(self._send(offset, data, False))

    def flush(self) -> None:
        self._run(self._until(self.sent))

    def close(self) -> None:
        self._run(self._close())
