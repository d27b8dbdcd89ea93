"""Copies a disk's bytes from one attached VDI to another, off the event loop.

The source and destination come from the access layer's attach information (``params`` the local
path, ``format`` "vhd" or "raw"); VHDs are read through their chain and written through
``xapi.sm.vhd``, so a thin destination only gets the blocks that hold data. With a base (VDI.copy's
``base_vdi``) only the blocks that differ from the base are written. At most ``WORKERS`` copies run
at a time, each in a thread of this module's own pool, which alone opens and closes the copy's
files. A disk that fails to read or write fails the copy with VDI_COPY_FAILED [reason], as xapi's
sparse_dd failure.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from xapi.datamodel.errors import XapiError
from xapi.sm.wait_out import wait_out

CHUNK = 2 << 20
WORKERS = 2
_pool: ThreadPoolExecutor | None = None


class Cancelled(Exception):
    pass


class _Raw:
    def __init__(self, path: str, writable: bool) -> None:
        self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self.writable = writable

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        return data + bytes(length - len(data)) if len(data) < length else data

    def write(self, offset: int, data) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self) -> None:
        fd, self.fd = self.fd, -1       # twice would close whatever file got the number since
        if fd < 0:
            return
        try:
            if self.writable:
                os.fsync(fd)
        finally:
            os.close(fd)


class _Vhd:
    def __init__(self, path: str, writable: bool) -> None:
        from xapi.sm import vhd
        self.v = vhd.open(path, readonly=not writable)
        self.writable = writable

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.v.virtual_size)
        data = self.v.read(offset, end - offset) if end > offset else b""
        return data + bytes(length - len(data)) if len(data) < length else data

    def write(self, offset: int, data) -> None:
        self.v.write(offset, data)

    def close(self) -> None:
        if self.writable:
            self.v.flush()
        self.v.close()


def open_disk(info: dict, writable: bool):
    path = info["params"]
    if info.get("format") == "vhd" or (info.get("format") is None and path.endswith(".vhd")):
        return _Vhd(path, writable)
    return _Raw(path, writable)


def copy_disk(src: dict, dst: dict, size: int, *, base: dict | None = None, dst_is_empty: bool = True,
              cancel: threading.Event | None = None, progress=None) -> int:
    """Copies `size` bytes; returns the number of bytes written."""
    s = open_disk(src, False)
    try:
        d = open_disk(dst, True)
        try:
            b = open_disk(base, False) if base else None
            try:
                written = 0
                zero = bytes(CHUNK)
                for off in range(0, size, CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    n = min(CHUNK, size - off)
                    data = s.read(off, n)
                    if b is not None and b.read(off, n) == data:
                        continue
                    if dst_is_empty and b is None and data == (zero if n == CHUNK else bytes(n)):
                        continue
                    d.write(off, data)
                    written += n
                    if progress is not None:
                        progress(off + n, size)
                return written
            finally:
                if b is not None:
                    b.close()
        finally:
            d.close()
    finally:
        s.close()


async def copy(src: dict, dst: dict, size: int, **kw) -> int:
    """copy_disk in the bounded pool; cancelling the caller stops the copy and waits for it."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="vdi-copy")
    cancel = threading.Event()
    fut = asyncio.get_running_loop().run_in_executor(_pool, lambda: copy_disk(src, dst, size, cancel=cancel, **kw))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel.set()
        await wait_out(fut)         # the caller's cleanup releases the disks the thread still has open
        raise
    except Exception as e:
        from xapi.sm.vhd import VHDError
        if isinstance(e, (OSError, VHDError)):
            raise XapiError("VDI_COPY_FAILED", str(e) or type(e).__name__) from e
        raise
