"""The compressed forms of an XVA stream: what xapi's export writes for use_compression (gzip, zstd) and
its import reads, told apart by the first bytes.

Out (sinks taking what the export writes): Plain; Gzip, each write a gzip member of its own (RFC 1952
allows several; gzip -d, zlib and xapi's import read them all) compressed in the transfer pool, two
at once, sent in order; Zstd, the `zstd` program in a subprocess (no zstd binding among our
dependencies; the program is a small Debian package). In (sources giving the tar stream piece by
piece): Source (plain), GunzipSource (zlib in the pool, output bounded per call, members one after the
other), UnzstdSource (`zstd -d` fed by a task). A stream that ends inside a member raises
tar.PrematureEof.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import zlib

from xapi.datamodel.errors import XapiError
from xapi.sm import transfer
from xapi.xva import tar

PIECE = 1 << 20                     # body pieces read (and decompressed output bounded) at a time
GZIP_LEVEL = 1                      # fast: an export is bound by CPU otherwise
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_run = transfer._run


# -- out ----------------------------------------------------------------------------------------------
class Plain:
    def __init__(self, response) -> None:
        self.response = response

    async def write(self, data) -> None:
        await self.response.write(data)

    async def close(self) -> None:
        pass


def gzip_member(data) -> bytes:
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


class Gzip(Plain):
    """Each write becomes a gzip member of its own (a gzip file may hold several, RFC 1952; gzip -d,
    zlib's readers and xapi's import read them all), so that two compress at once in the pool; they
    go out in order."""

    DEPTH = 2

    def __init__(self, response) -> None:
        super().__init__(response)
        self.queue: collections.deque = collections.deque()

    async def write(self, data) -> None:
        self.queue.append(asyncio.ensure_future(_run(gzip_member, data)))
        while len(self.queue) > self.DEPTH:
            await self.response.write(await self.queue.popleft())

    async def close(self) -> None:
        while self.queue:
            await self.response.write(await self.queue.popleft())

    def kill(self) -> None:
        while self.queue:
            fut = self.queue.popleft()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class Zstd(Plain):
    """zstd in a subprocess: what we write goes to its stdin; its stdout goes to the client."""

    def __init__(self, response) -> None:
        super().__init__(response)
        self.proc = None
        self.pump = None

    async def open(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            zstd_program(), "-q", "-c", "-3", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        while True:
            data = await self.proc.stdout.read(PIECE)
            if not data:
                return
            await self.response.write(data)

    async def write(self, data) -> None:
        if self.pump.done():
            self.pump.result()
            raise OSError("zstd stopped")
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close(self) -> None:
        self.proc.stdin.close()
        await self.pump
        if await self.proc.wait() != 0:
            raise OSError(f"zstd exited with {self.proc.returncode}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        if self.pump is not None:
            self.pump.cancel()


def zstd_program() -> str:
    path = shutil.which("zstd")
    if path is None:
        raise XapiError("INTERNAL_ERROR", "zstd compression needs the zstd program")
    return path


# -- in -----------------------------------------------------------------------------------------------
async def read_at_least(request, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        data = await request.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class Source:
    """The body as the tar stream: read() gives the next piece (b"" at the end)."""

    def __init__(self, request, first: bytes) -> None:
        self.request = request
        self.first = first

    async def read(self) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        return await self.request.read(PIECE)

    def close(self) -> None:
        pass


class GunzipSource(Source):
    def __init__(self, request, first: bytes) -> None:
        super().__init__(request, first)
        self.z = zlib.decompressobj(32 + zlib.MAX_WBITS)   # gzip or zlib header
        self.ended = False

    async def read(self) -> bytes:
        while True:
            z = self.z
            if z.eof:                                   # a member ended: another may follow
                rest = z.unused_data + z.unconsumed_tail
                if not rest:
                    if self.ended:
                        return b""
                    rest = await super().read()
                    if not rest:
                        self.ended = True
                        return b""
                self.z = zlib.decompressobj(32 + zlib.MAX_WBITS)
                data = rest
            elif z.unconsumed_tail:
                data = z.unconsumed_tail
            else:
                data = await super().read()
                if not data:
                    self.ended = True
                    raise tar.PrematureEof("the compressed stream ended early")
            out = await self._inflate(data)
            if out:
                return out

    async def _inflate(self, data) -> bytes:
        try:
            return await _run(self.z.decompress, data, PIECE)
        except zlib.error as e:
            raise XapiError("IMPORT_ERROR_GENERIC", f"Gzip: {e}") from None


class UnzstdSource(Source):
    """zstd -d in a subprocess, fed from the body by a task."""

    def __init__(self, request, first: bytes) -> None:
        super().__init__(request, first)
        self.proc = None
        self.feeder = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            zstd_program(), "-q", "-d", "-c", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        self.feeder = asyncio.ensure_future(self._feed())

    async def _feed(self) -> None:
        try:
            while True:
                data = await Source.read(self)
                if not data:
                    break
                self.proc.stdin.write(data)
                await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()

    async def read(self) -> bytes:
        data = await self.proc.stdout.read(PIECE)
        if data:
            return data
        if self.feeder.done() and not self.feeder.cancelled() and self.feeder.exception() is not None:
            raise self.feeder.exception()
        if await self.proc.wait() != 0:
            raise tar.PrematureEof("zstd could not decompress the stream")
        return b""

    def close(self) -> None:
        if self.feeder is not None:
            self.feeder.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
