"""The raw disk transfer handlers: `PUT /import_raw_vdi` and `GET /export_raw_vdi` (xapi's
import_raw_vdi.ml / export_raw_vdi.ml, which run vhd-tool on the attached VDI).

Parameters: `vdi` (a ref or a uuid; unknown: 404 and HANDLE_INVALID/UUID_INVALID on the task),
`format` = `raw` (default) or `vhd` (anything else: 404 and INTERNAL_ERROR ["Unknown format x"] on
the task, as xapi), `session_id`, `task_id` (the framework authenticates, checks the
`http/put_import_raw_vdi` / `http/get_export_raw_vdi` permission and settles the task: the result is
the VDI ref; errors fail it, and answer 500 when the answer hasn't gone out yet).

The VDI is attached and activated through the access layer on the datapath `import/<task or vdi
uuid>/<random>` (RW) or `export/<...>` (RO), and deactivated and detached afterwards whatever happens;
an export's reply ends with its last byte and the release follows it, as xapi's (the task settles
after it; a client's next step on the VDI meanwhile waits for it: Access.wait_released).
Nothing holds the disk in memory: the body is taken 8 MiB (four 2 MiB blocks) at a time, read
straight into one of two reused buffers (plus the framework's 1 MiB read buffer), and the disk I/O
runs in a small thread pool of our own (never on the event loop), one batch being written while the
next one arrives; a whole VHD block goes to disk in one write (vhd.VHD.write_block). An export reads
8 MiB at a time, straight into the buffer it sends where the VHD's top layer maps whole blocks.

Import: as xapi, once the VDI is attached the answer goes out before the body is read (200,
`Task-Id` when there is a task, `Connection: close`): xe and Xen Orchestra wait for it before they
send the body. From then on the outcome is on the task only, and the connection ends with the import.
A Content-Length larger than the import can take (Xen Orchestra's 1 PiB for a stream of unknown
length) means the body ends with the connection's orderly end; a reset (bytes the client sent may be
lost) is VDI_IO_ERROR.

Import, format=raw: the body (Content-Length, chunked, or HTTP/1.0 until the close) is written at
offset 0 onwards. A body with a Content-Length that fits the disk, or an HTTP/1.0 one that ends with
the connection, on a plain connection, is taken off the connection (Request.take_socket) and moved
kernel-side, socket -> pipe -> file by os.splice, from
one pool thread: each whole 2 MiB block straight into its place in the file (a new VHD block is
committed, bitmap and BAT entry, once its data is there); all-zero 2 MiB-aligned blocks are skipped, so a sparse image stays sparse (the VDI
is expected to be fresh, as xapi's vhd-tool assumes of a VDI it "prezeroed"). More bytes than the
VDI's virtual size: VDI_IO_ERROR ["Device I/O errors", ...] (what xapi answers when vhd-tool fails),
nothing past the end is written.

Import, format=vhd: the body is a whole VHD file (a dynamic or fixed disk, no parent). It is written
to a temporary file beside the VDI's file, opened with xapi.sm.vhd, and its non-zero blocks are
copied into the VDI (so the VDI keeps its own uuid and chain); the temporary file is removed. A VHD
whose disk is larger than the VDI, or that isn't a valid VHD: VDI_IO_ERROR.

Export, format=raw: the disk's bytes through the chain, Content-Length the virtual size. On a plain
(non-TLS) connection, the blocks held whole in one file (a raw disk; the blocks the VHD's top layer
maps whole) go out by os.sendfile from a pool thread, 8 MiB a call; the others are read and written. Export,
format=vhd: the chain flattened into one dynamic VHD, built as a temporary file beside the VDI
(non-zero blocks only) and then streamed with its Content-Length.

Task progress: bytes done / virtual size (import, export raw), rising to 1.0 at the end; a transfer
running in a pool thread reports it every TICK seconds.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket

from xapi.sm.wait_out import wait_out
from xapi.datamodel.errors import XapiError
from xapi.server.handlers import ConnectionEnded, HttpError
from xapi.sm import vhd

log = logging.getLogger("xapi.sm.transfer")

BLOCK = vhd.BLOCK_SIZE                  # 2 MiB: the unit of zero-skipping and of disk I/O
BATCH = 4 * BLOCK                       # 8 MiB: what one call into the pool writes or reads
FORMATS = ("raw", "vhd")
SNDBUF = 512 << 10                      # an export's socket send buffer (see _transport_for_sendfile)
_is_zero = vhd._core.is_zero

_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _writeback_starter():
    """sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) through libc: starts the writeback of a
    file's dirty pages without waiting for it, so that an import's closing fsync finds most of the
    data already on its way to the disk. None where there is no such call (the fsync does it all)."""
    try:
        import ctypes
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd: fn(fd, 0, 0, 2)


_start_writeback = _writeback_starter()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="xapi-transfer")
    return _pool


async def _run(fn, *args):
    """fn(*args) in the transfer pool. If the handler is cancelled meanwhile, waits for the call to
    end before letting the cancellation through (the caller may close what the thread uses)."""
    fut = asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await wait_out(fut)
        raise


def register(routes) -> None:
    routes.add("PUT", "/import_raw_vdi", import_raw_vdi, action="put_import_raw_vdi")
    routes.add("GET", "/export_raw_vdi", export_raw_vdi, action="get_export_raw_vdi")


def io_error(detail: str) -> XapiError:
    return XapiError("VDI_IO_ERROR", "Device I/O errors", detail)


# -- the request's VDI and format ---------------------------------------------------------------------
def _find_vdi(request) -> str:
    name = request.query.get("vdi")
    if not name:
        raise HttpError(400, "the request names no VDI: vdi=<ref|uuid> is needed", close=True,
                        error=["INTERNAL_ERROR", "Missing vdi query parameter"])
    table = request.app.db.table("VDI")
    if name in table:
        return name
    found = table.find("uuid", name)
    if found:
        return found[0]
    if name.startswith("OpaqueRef:"):
        raise XapiError("HANDLE_INVALID", "VDI", name)
    raise XapiError("UUID_INVALID", "VDI", name)


def _format(request) -> str:
    fmt = request.query.get("format", "raw") or "raw"
    if fmt not in FORMATS:
        raise HttpError(404, f"Unknown format {fmt}", close=True, error=["INTERNAL_ERROR", f"Unknown format {fmt}"])
    return fmt


class _Attached:
    """The VDI attached and activated on a transient datapath; released on exit."""

    def __init__(self, request, vdi: str, kind: str, rw: bool) -> None:
        self.storage = request.app.storage.access
        self.vdi = vdi
        self.rw = rw
        # unique per request: a finished request may still be releasing when the next one starts
        self.dp = (f"{kind}/{request.task}" if request.task else
                   f"{kind}/{request.app.db.table('VDI').get_field(vdi, 'uuid')}/{secrets.token_hex(4)}")
        self.info: dict = {}
        self._releasing: asyncio.Future | None = None

    async def __aenter__(self) -> dict:
        try:
            await self.storage.attach(self.dp, self.vdi, self.rw)
            self.info = await self.storage.activate(self.dp, self.vdi) or {}
        except BaseException:
            await self.release()
            raise
        return self.info

    async def __aexit__(self, *exc) -> None:
        await self.release()

    def done(self) -> None:
        """The VDI is done with (an export's last bytes are going out): from here on, a client's
        next step on the VDI waits for its release instead of failing (Access.wait_released)."""
        self.storage.releasing(self.dp, self.vdi)

    async def release(self) -> None:
        """Deactivated and detached, once; a cancellation (the connection lost) doesn't cut it in
        half."""
        if self._releasing is None:
            self.done()
            self._releasing = asyncio.ensure_future(self._release())
        try:
            await asyncio.shield(self._releasing)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.wait([self._releasing])
            raise

    async def _release(self) -> None:
        try:
            try:
                await self.storage.deactivate(self.dp, self.vdi)
            finally:
                await self.storage.detach(self.dp, self.vdi)
        finally:
            self.storage.released(self.dp, self.vdi)


class _Disk:
    """Block I/O on the attached VDI: a VHD through xapi.sm.vhd, or a raw file/device."""

    def __init__(self, info: dict, rw: bool) -> None:
        self.path = info.get("params") or ""
        self.is_vhd = info.get("format", "vhd") == "vhd"
        if self.is_vhd:
            self.v = vhd.open(self.path, readonly=not rw)
            self.size = self.v.virtual_size
            self.fd = -1
        else:
            self.v = None
            self.fd = os.open(self.path, (os.O_RDWR if rw else os.O_RDONLY) | os.O_CLOEXEC)
            self.size = os.lseek(self.fd, 0, os.SEEK_END)

    def write(self, off: int, data) -> None:
        if self.v is not None:
            self.v.write(off, data)
        else:
            mv = memoryview(data)
            while mv:
                n = os.pwrite(self.fd, mv, off)
                mv, off = mv[n:], off + n

    def read(self, off: int, n: int) -> bytes:
        if self.v is not None:
            return self.v.read(off, n)
        return os.pread(self.fd, n, off)

    def write_blocks(self, off: int, data, skip_zero: bool) -> None:
        """Writes data (a whole number of blocks from a block boundary, or up to the end of the
        disk) at off, block by block, skipping all-zero blocks when skip_zero; a VHD gets whole
        blocks in one write each (vhd.VHD.write_block)."""
        self._write_blocks(off, memoryview(data), skip_zero)
        if _start_writeback is not None:    # the final fsync (flush) still makes it durable
            _start_writeback(self.v._fd if self.v is not None else self.fd)

    def _write_blocks(self, off: int, mv: memoryview, skip_zero: bool) -> None:
        if self.v is None or off % BLOCK or self.v.header is not None and self.v.block_size != BLOCK:
            for pos in range(0, len(mv), BLOCK):
                _write_block(self, off + pos, mv[pos:pos + BLOCK], skip_zero)
            return
        for pos in range(0, len(mv), BLOCK):
            piece = mv[pos:pos + BLOCK]
            if skip_zero and _is_zero(piece):
                continue
            b = (off + pos) // BLOCK
            if len(piece) == BLOCK or off + pos + len(piece) == self.size and not len(piece) % 512:
                self.v.write_block(b, piece)
            else:                           # a short end (the body ended early): the usual way
                self.v.write(off + pos, piece)

    def read_blocks(self, off: int, n: int) -> bytearray:
        """n bytes at off (a block boundary) into a new buffer, read straight into it where the disk
        allows (a raw file, or the blocks the VHD's top layer maps whole)."""
        out = bytearray(n)
        mv = memoryview(out)
        if self.v is None:
            got = vhd._preadinto(self.fd, mv, off)
            if got < n:
                raise OSError(f"short read at {off + got}")
            return out
        if off % BLOCK or self.v.header is not None and self.v.block_size != BLOCK:
            mv[:] = self.v.read(off, n)
            return out
        for pos in range(0, n, BLOCK):
            piece = mv[pos:pos + BLOCK]
            if len(piece) == BLOCK or off + pos + len(piece) == self.size and not len(piece) % 512:
                self.v.read_block_into((off + pos) // BLOCK, piece)
            else:
                piece[:] = self.v.read(off + pos, len(piece))
        return out

    def flush(self) -> None:
        """Makes what was written durable (fsync)."""
        if self.v is not None:
            self.v.flush()
        elif self.fd >= 0:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.v is not None:
            self.v.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open(info: dict, rw: bool) -> _Disk:
    try:
        return _Disk(info, rw)
    except (vhd.VHDError, OSError) as e:
        raise io_error(f"cannot open the disk: {e}") from None


# -- import -------------------------------------------------------------------------------------------
async def _fill(request, buf: bytearray, until_close: bool = False) -> int:
    """Fills buf from the body; returns how many bytes (less than len(buf) only at the end). With
    until_close, the connection's orderly end ends the body whatever its Content-Length said; a reset
    (bytes may be missing) is still an error."""
    mv = memoryview(buf)
    got, n = 0, len(buf)
    readinto = getattr(request, "readinto", None)
    try:
        if readinto is not None:            # straight into buf, no intermediate bytes
            while got < n:
                k = await readinto(mv[got:])
                if not k:
                    break
                got += k
            return got
        while got < n:
            chunk = await request.read(n - got)
            if not chunk:
                break
            mv[got:got + len(chunk)] = chunk
            got += len(chunk)
    except ConnectionEnded:
        if not until_close:
            raise
    return got


def _write_block(disk: _Disk, off: int, data, skip_zero: bool) -> None:
    if skip_zero and _is_zero(data):
        return
    disk.write(off, data)


async def _stream_in(request, size: int, write_block, skip_zero: bool, until_close: bool = False) -> int:
    """The body in 8 MiB batches (whole 2 MiB blocks) through write_block(off, view, skip_zero) in
    the pool, one write in flight while the next batch arrives; returns the bytes taken. More than
    `size`: VDI_IO_ERROR. until_close: the body ends with the connection (see _fill)."""
    bufs = [bytearray(BATCH), bytearray(BATCH)]
    pending: asyncio.Future | None = None
    off, i = 0, 0
    try:
        while True:
            buf = bufs[i]
            n = await _fill(request, buf, until_close)
            if not n:
                break
            if off + n > size:
                raise io_error(f"the data is larger than the disk ({size} bytes)")
            if pending is not None:
                await pending
                pending = None
                request.progress(off / size if size else 1.0)
            data = memoryview(buf)[:n]
            pending = asyncio.ensure_future(_run(write_block, off, data, skip_zero))
            off += n
            i ^= 1
            if n < BATCH:
                break
        if pending is not None:
            p, pending = pending, None
            await p
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([pending])
            if pending.done() and not pending.cancelled():
                pending.exception()        # retrieved
    return off


# -- import, kernel-side ------------------------------------------------------------------------------
_F_SETPIPE_SZ = 1031                    # fcntl: a pipe's capacity
PIPE = 1 << 20                          # what one splice moves at most (the usual pipe-max-size)
_ZERO_PROBE = 64 << 10                  # a fresh block is checked for zeros this much at a time
SPLICE_MIN = 2 * BLOCK                  # smaller bodies aren't worth taking the socket for
TICK = 0.25                             # seconds between progress updates of a transfer in a thread


class _Splicer:
    """Bytes from the (non-blocking) socket straight into a file, socket -> pipe -> file by
    os.splice, never through user memory; or into a buffer where a piece isn't a whole block. Used in
    a pool thread; `stop[0]` ends a wait, as does `idle` seconds without data."""

    def __init__(self, sock_fd: int, stop: list, idle: float) -> None:
        import select
        self.sock, self.stop, self.idle = sock_fd, stop, idle
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            import fcntl
            fcntl.fcntl(self.w, _F_SETPIPE_SZ, PIPE)
        self.poller = select.poll()
        self.poller.register(sock_fd, select.POLLIN)
        self.probe = bytearray(_ZERO_PROBE)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)

    def _wait(self) -> None:
        import time
        since = time.monotonic()
        while not self.poller.poll(250):
            if self.stop[0]:
                raise ConnectionResetError("the transfer was stopped")
            if time.monotonic() - since > self.idle:
                raise TimeoutError("no data from the client")

    def to_file(self, fd: int, off: int, n: int) -> None:
        """n body bytes into fd at off."""
        if self.upto_file(fd, off, n) < n:
            raise ConnectionResetError("the client closed the connection before the end of the body")

    def upto_file(self, fd: int, off: int, n: int) -> int:
        """Up to n body bytes into fd at off; fewer only when the connection ends. How many."""
        got = 0
        while got < n:
            if self.stop[0]:
                raise ConnectionResetError("the transfer was stopped")
            try:
                k = os.splice(self.sock, self.w, min(n - got, PIPE), flags=os.SPLICE_F_MOVE)
            except BlockingIOError:
                self._wait()
                continue
            if not k:
                break
            done = 0
            while done < k:
                done += os.splice(self.r, fd, k - done, offset_dst=off + got + done, flags=os.SPLICE_F_MOVE)
            got += k
        return got

    def at_end(self) -> bool:
        """Whether the connection has ended (a byte more means the body goes on)."""
        while True:
            try:
                return not os.read(self.sock, 1)
            except BlockingIOError:
                self._wait()

    def into(self, mv: memoryview) -> None:
        """len(mv) body bytes into mv."""
        got = 0
        while got < len(mv):
            try:
                k = os.readv(self.sock, [mv[got:]])
            except BlockingIOError:
                self._wait()
                continue
            if not k:
                raise ConnectionResetError("the client closed the connection before the end of the body")
            got += k

    def zero(self, fd: int, off: int, n: int) -> bool:
        """Whether the n bytes at off in fd are all zero (read back from the page cache, a piece at a
        time: real data shows itself in the first piece)."""
        mv = memoryview(self.probe)
        pos = 0
        while pos < n:
            k = min(len(mv), n - pos)
            if vhd._preadinto(fd, mv[:k], off + pos) < k or not _is_zero(mv[:k]):
                return False
            pos += k
        return True


def _read_upto(sp: _Splicer, mv: memoryview) -> int:
    """Up to len(mv) body bytes into mv, fewer when the connection ends; how many."""
    got = 0
    while got < len(mv):
        try:
            k = os.readv(sp.sock, [mv[got:]])
        except BlockingIOError:
            sp._wait()
            continue
        if not k:
            break
        got += k
    return got


def _splice_batch(disk: _Disk, sp: _Splicer, off: int, n: int, skip_zero: bool) -> None:
    """n body bytes (whole blocks from a block boundary, or up to the end of the body) into the
    disk at off. A whole block goes kernel-side into its place in the file (a raw disk; a VHD's
    allocated block, or the place of a new one, kept only if not all zero when skip_zero); a
    short end goes through memory."""
    end = off + n
    fd = disk.fd if disk.v is None else disk.v._fd
    while off < end:
        want = min(BLOCK, end - off)
        whole = want == min(BLOCK, disk.size - off) and not want % 512
        if disk.v is None:
            sp.to_file(fd, off, want)
        elif whole:
            b = off // BLOCK
            at, new = disk.v.block_target(b)
            sp.to_file(fd, at, want)
            if not (new and skip_zero and sp.zero(fd, at, want)):
                disk.v.commit_block(b, want)
        else:
            buf = bytearray(want)
            sp.into(memoryview(buf))
            _write_block(disk, off, buf, skip_zero)
        off += want
    if _start_writeback is not None:        # the final fsync (flush) still makes it durable
        _start_writeback(fd)


def _splice_to_end(disk: _Disk, sp: _Splicer, off: int, skip_zero: bool, done: list) -> None:
    """The rest of a body that ends with the connection, from off (a block boundary), block by block
    as _splice_batch; a block the end cuts short is written again through memory (its bytes read
    back from where they went), which maps it as usual. More bytes than the disk: VDI_IO_ERROR."""
    size = disk.size
    fd = disk.fd if disk.v is None else disk.v._fd
    while off < size:
        want = min(BLOCK, size - off)
        whole = not want % 512
        b = off // BLOCK
        if disk.v is None:
            at, new = off, False
        elif whole:
            at, new = disk.v.block_target(b)
        else:                               # the disk's odd end: through memory
            buf = bytearray(want)
            got = _read_upto(sp, memoryview(buf))
            if got:
                _write_block(disk, off, memoryview(buf)[:got], skip_zero)
            done[0] = off + got
            if got < want:
                return
            off += want
            continue
        got = sp.upto_file(fd, at, want)
        if got == want:
            if disk.v is not None and not (new and skip_zero and sp.zero(fd, at, want)):
                disk.v.commit_block(b, want)
        elif got and disk.v is not None:
            _write_block(disk, off, os.pread(fd, got, at), skip_zero)
        done[0] = off + got
        if _start_writeback is not None and b % 4 == 3:
            _start_writeback(fd)
        if got < want:
            return
        off += want
    if not sp.at_end():
        raise io_error(f"the data is larger than the disk ({size} bytes)")


async def _run_stoppable(stop: list, fn, *args, tick=None):
    """As _run, for a call that waits on the client: a cancellation sets stop[0] so it ends soon.
    tick(), if given, is called every TICK seconds meanwhile (the task's progress)."""
    fut = asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)
    try:
        if tick is not None:
            while not fut.done():
                await asyncio.wait([fut], timeout=TICK)
                tick()
        return await asyncio.shield(fut)
    except BaseException:
        stop[0] = True
        await wait_out(fut)
        raise


async def _splice_in(request, disk: _Disk, skip_zero: bool) -> bool:
    """A raw body with a Content-Length, or an HTTP/1.0 one that ends with the connection, taken off
    the connection and moved kernel-side (os.splice) by one pool call, which reports its progress;
    the bytes the connection had already read and the rest of their block go through memory first.
    A Content-Length larger than the disk ends with the connection (_unknown_length). False (nothing
    read) where it can't be used: chunked, TLS, a small body, VHD blocks of another size."""
    length = request.content_length
    unknown = _unknown_length(request, disk.size)
    take = getattr(request, "take_socket", None)
    if (take is None or length is not None and not unknown and length < SPLICE_MIN
            or disk.v is not None and disk.v.header is not None and disk.v.block_size != BLOCK):
        return False
    taken = take()
    if taken is None:
        return False
    chunks, sock_fd, left = taken
    if left is None or unknown:             # the body ends with the connection
        length = None
    complete = False
    stop = [False]
    sp = None
    try:
        sp = _Splicer(sock_fd, stop, request.idle_timeout)
        have = sum(len(c) for c in chunks)
        if have > disk.size:
            raise io_error(f"the data is larger than the disk ({disk.size} bytes)")
        head = -(-have // BLOCK) * BLOCK
        head = min(length, head) if length is not None else min(disk.size, head)
        if head:                            # what the connection had read, up to a block boundary
            buf = bytearray(head)
            pos = 0
            for c in chunks:
                buf[pos:pos + len(c)] = c
                pos += len(c)
            chunks = None
            if length is not None:
                await _run_stoppable(stop, sp.into, memoryview(buf)[have:])
                got = head
            else:                           # the connection may end sooner
                got = have + await _run_stoppable(stop, _read_upto, sp, memoryview(buf)[have:])
            request.active()
            await _run(disk.write_blocks, 0, memoryview(buf)[:got], skip_zero)
            del buf
            if got < head:                  # the body ended there
                complete = True
                return True
        done = [head]                       # advanced by the thread, read by tick()

        def splice_all():
            if length is None:
                _splice_to_end(disk, sp, done[0], skip_zero, done)
                return
            while done[0] < length:
                n = min(BATCH, length - done[0])
                _splice_batch(disk, sp, done[0], n, skip_zero)
                done[0] += n

        def tick():
            request.active()
            request.progress(done[0] / disk.size)
        await _run_stoppable(stop, splice_all, tick=tick)
        tick()
        complete = True
    finally:
        if sp is not None:
            sp.close()
        os.close(sock_fd)
        request.give_back_socket(complete and not unknown)
    return True


def _unknown_length(request, limit: int) -> bool:
    """Whether the body's Content-Length can't be its length: Xen Orchestra uploads a stream of
    unknown length with a Content-Length of 1 PiB and closes the connection once the stream is sent.
    A Content-Length above what the import can take is read so: the body ends with the connection
    (more bytes than the disk takes is VDI_IO_ERROR all the same)."""
    return request.content_length is not None and request.content_length > limit


async def answer_early(request, response) -> None:
    """xapi's import answer, sent before the body is read (import_raw_vdi.ml, import.ml): 200 with
    the task, the connection ending with the import. The clients wait for it before they send the
    body (xe's HttpPut reads the status line first; Xen Orchestra's probe sends no body); from here
    on the outcome is on the task only."""
    headers = [("Content-Type", "application/octet-stream")]
    if request.task:
        headers.append(("Task-Id", request.task))
    response.start(200, headers, close=True)
    await response.write(b"")               # the head goes out now


async def import_raw_vdi(request, response):
    vdi = _find_vdi(request)
    fmt = _format(request)
    app = request.app
    async with _Attached(request, vdi, "import", True) as info:
        disk = _open(info, True)
        try:
            await answer_early(request, response)
            if fmt == "raw":
                if not await _splice_in(request, disk, disk.is_vhd):
                    await _stream_in(request, disk.size, disk.write_blocks, disk.is_vhd,
                                     _unknown_length(request, disk.size))
            else:
                await _import_vhd(request, disk)
            await _run(disk.flush)
        except (vhd.VHDError, OSError) as e:
            raise io_error(str(e)) from None
        finally:
            disk.close()
    request.progress(1.0)
    with contextlib.suppress(Exception):
        table = app.db.table("VDI")
        if disk.is_vhd and vdi in table:
            table.set_field(vdi, "physical_utilisation", os.path.getsize(disk.path))
            app.hub.poke()
    return vdi


async def _import_vhd(request, disk: _Disk) -> None:
    """A whole VHD file as the body: spooled to a temporary file beside the VDI, then its non-zero
    blocks copied in."""
    folder = os.path.dirname(disk.path) or "."
    tmp = os.path.join(folder, f".import-{secrets.token_hex(8)}.vhd.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        # the file may be larger than the disk (metadata, bitmaps): bound it generously
        limit = disk.size + disk.size // 64 + (64 << 20)

        def spool(off, data, _z):
            mv = memoryview(data)
            while mv:
                n = os.pwrite(fd, mv, off)
                mv, off = mv[n:], off + n
        await _stream_in(request, limit, spool, False, _unknown_length(request, limit))
        os.close(fd)
        fd = -1
        try:
            src = vhd.open(tmp, readonly=True)
        except (vhd.VHDError, OSError) as e:
            raise io_error(f"not a VHD: {e}") from None
        try:
            if src.parent_uuid is not None or src.type_name == "differencing":
                raise io_error("a differencing VHD can't be imported alone")
            if src.virtual_size > disk.size:
                raise io_error(f"the VHD's disk ({src.virtual_size} bytes) is larger than the VDI "
                               f"({disk.size} bytes)")
            bs = src.block_size if src.header is not None else BLOCK
            blocks = [b for b in src.blocks() if b * bs < src.virtual_size]

            def copy(b):
                off = b * bs
                data = src.read(off, min(bs, src.virtual_size - off))
                if not _is_zero(data):
                    disk.write(off, data)
            for k, b in enumerate(blocks):
                await _run(copy, b)
                request.progress((k + 1) / (len(blocks) + 1))
        finally:
            src.close()
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# -- export -------------------------------------------------------------------------------------------
async def _stream_out(request, response, size: int, read, before_last=None) -> None:
    """read(off, n) in the pool, 8 MiB at a time, the next batch read while this one is sent;
    `before_last()` is called before the last batch goes out. Each batch is a new buffer: the
    transport may hold on to what it hasn't sent yet."""
    off = 0
    nxt = asyncio.ensure_future(_run(read, 0, min(BATCH, size))) if size else None
    try:
        while nxt is not None:
            data = await nxt
            nxt = None
            n = len(data)
            if not n:
                break
            after = off + n
            if after < size:
                nxt = asyncio.ensure_future(_run(read, after, min(BATCH, size - after)))
            elif before_last is not None:
                before_last()
            await response.write(data)
            off = after
            request.progress(off / size)
    finally:
        if nxt is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([nxt])
            if nxt.done() and not nxt.cancelled():
                nxt.exception()


def _sendfile_blocking(sock_fd: int, ranges: list, stop: list, sent: list) -> None:
    """os.sendfile of the (fd, offset, bytes) ranges, in order, to a non-blocking socket, waiting
    (poll) while it is full; ends early when stop[0] is set; sent[0] counts the bytes out. Runs in
    the pool (disk reads stay off the event loop)."""
    import select
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    for fd, off, n in ranges:
        while n > 0:
            if stop[0]:
                raise ConnectionResetError("the transfer was stopped")
            try:
                k = os.sendfile(sock_fd, fd, off, min(n, BATCH))
            except BlockingIOError:
                poller.poll(500)
                continue
            if not k:
                raise OSError("sendfile: the disk ended early")
            off += k
            n -= k
            sent[0] += k


async def _transport_for_sendfile(response):
    """The plain TCP/Unix transport of the response, emptied of what it had buffered, and our own
    descriptor of its socket, when the body can go out by sendfile (Response.own_transport); else
    None."""
    transport = await response.own_transport()
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # a fixed 1 MiB send buffer (the kernel doubles what is asked): sendfile then moves more a
        # call than the autotuned buffer lets it on loopback (about 1.5x the rate measured in S1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        await _emptied(transport)
    # our own descriptor of the socket: the thread's stays valid whatever the transport does
    return transport, os.dup(sock.fileno())


async def _emptied(transport) -> None:
    """Waits until the transport has sent all it buffered (sendfile must not overtake it)."""
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.0005)


def _sources(disk: _Disk, nblocks: int) -> list:
    """For each of the first nblocks blocks, (fd, offset) where its bytes lie whole in one file, or
    None (read through the chain)."""
    if disk.v is None:
        return [(disk.fd, b * BLOCK) for b in range(nblocks)]
    v, out = disk.v, []
    for b in range(nblocks):
        e = v.block_offset(b)
        full = e is not None and vhd._core.bitmap_full(v.bitmap(b), BLOCK // 512)
        out.append((v._fd, (e + v.bm_secs) * 512) if full else None)
    return out


async def _sendfile_out(request, response, disk: _Disk, before_last=None) -> bool:
    """Raw export by sendfile of the ranges the disk holds whole in one file (a raw file; the VHD
    blocks its top layer maps whole), each run of such blocks in one call into the pool, other
    blocks read and written, the last block through memory (`before_last()` called before it goes
    out). False (nothing sent) where sendfile can't be used."""
    size = disk.size
    if size < 2 * BLOCK or (disk.v is not None and (disk.v.header is None or disk.v.block_size != BLOCK)):
        return False
    got = await _transport_for_sendfile(response)
    if got is None:
        return False
    transport, sock_fd = got
    stop = [False]
    nblocks = -(-size // BLOCK)
    off = 0

    async def send(ranges):
        if response.connection_closed:
            raise ConnectionResetError("the connection is closed")
        n = sum(r[2] for r in ranges)
        response.sent_outside(n)
        sent = [0]
        base = off
        await _run_stoppable(stop, _sendfile_blocking, sock_fd, ranges, stop, sent,
                             tick=lambda: request.progress((base + sent[0]) / size))
        return n
    try:
        sources = await _run(_sources, disk, nblocks - 1)
        ranges: list = []
        for src in sources + [None]:
            if src is not None:
                if ranges and ranges[-1][0] == src[0] and ranges[-1][1] + ranges[-1][2] == src[1]:
                    ranges[-1] = (*ranges[-1][:2], ranges[-1][2] + BLOCK)
                else:
                    ranges.append((src[0], src[1], BLOCK))
                continue
            if ranges:
                off += await send(ranges)
                ranges = []
                request.progress(off / size)
            if off >= (nblocks - 1) * BLOCK:
                break
            data = await _run(disk.read_blocks, off, BLOCK)
            await response.write(data)
            await _emptied(transport)
            off += BLOCK
            request.progress(off / size)
        last = await _run(disk.read_blocks, off, size - off)
        if before_last is not None:
            before_last()
        await response.write(last)
        request.progress(1.0)
    except BaseException:
        stop[0] = True
        raise
    finally:
        os.close(sock_fd)
    return True


async def export_raw_vdi(request, response):
    """The VDI is released once the last byte is out, as xapi's export: the client doesn't wait for
    the driver calls, the task settles after them. A client that follows up at once (an import of
    the same VDI, VDI.destroy) finds it still being released and waits for that (_Attached.done)."""
    vdi = _find_vdi(request)
    fmt = _format(request)
    att = _Attached(request, vdi, "export", False)
    info = await att.__aenter__()
    disk = None

    async def release():
        nonlocal disk
        if disk is not None:
            d, disk = disk, None
            d.close()
        await att.release()
    try:
        disk = _open(info, False)
        try:
            if fmt == "raw":
                response.start(200, [("Content-Type", "application/octet-stream")], length=disk.size)
                if request.method != "HEAD" and not await _sendfile_out(request, response, disk, att.done):
                    await _stream_out(request, response, disk.size, disk.read_blocks, att.done)
            else:
                await _export_vhd(request, response, disk, release)
        except (vhd.VHDError, OSError) as e:
            raise io_error(str(e)) from None
        await response.end()    # before the release: the client may close once it has every byte
    finally:
        await release()
    request.progress(1.0)
    return vdi


async def _export_vhd(request, response, disk: _Disk, release) -> None:
    """The chain flattened into one dynamic VHD (a temporary file beside the VDI), then sent."""
    folder = os.path.dirname(disk.path) or "."
    tmp = os.path.join(folder, f".export-{secrets.token_hex(8)}.vhd.tmp")
    try:
        await _run(vhd.create, tmp, disk.size)
        out = vhd.open(tmp)
        try:
            nblocks = -(-disk.size // BLOCK)
            blocks = range(nblocks)
            if disk.is_vhd:
                used = set()
                for layer in disk.v.chain():
                    bs = layer.block_size if layer.header is not None else BLOCK
                    for b in layer.blocks():
                        used.update(range(b * bs // BLOCK, -(-(b + 1) * bs // BLOCK)))
                blocks = sorted(b for b in used if b < nblocks)

            def copy(b):
                off = b * BLOCK
                data = disk.read(off, min(BLOCK, disk.size - off))
                if not _is_zero(data):
                    out.write(off, data)
            for k, b in enumerate(blocks):
                await _run(copy, b)
                request.progress(0.5 * (k + 1) / max(1, len(blocks)))
        finally:
            out.close()
        await release()                     # the VDI is done with: the temporary file is sent
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            response.start(200, [("Content-Type", "application/octet-stream")], length=size)
            if request.method != "HEAD":
                await _stream_out(request, response, size, lambda off, n: os.pread(fd, n, off))
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
