"""A sequential binary file over an attached disk, so a memory image can be written to and read from a
suspend VDI the way xenopsd uses a block device.

`disk` is the storage access layer's attach information ({"params": local path, "format": "vhd" or
"raw"}) or a plain path (a raw file, created when writing). VHDs go through xapi.sm.vhd, so the image
lands in the VDI's data, not in its file. Blocking: call from a worker thread.
"""
from __future__ import annotations

import os

from xapi.sm import copy as sm_copy


class DiskFile:
    def __init__(self, disk, writable: bool) -> None:
        if isinstance(disk, str):
            if writable and not os.path.exists(disk):
                with open(disk, "wb"):
                    pass
            disk = {"params": disk, "format": "raw"}
        self._disk = sm_copy.open_disk(disk, writable)
        self._size = getattr(getattr(self._disk, "v", None), "virtual_size", None)
        self.pos = 0

    def write(self, data) -> int:
        n = len(data)
        if self._size is not None and self.pos + n > self._size:
            raise OSError(f"memory image does not fit the disk ({self.pos + n} > {self._size} bytes)")
        self._disk.write(self.pos, data)
        self.pos += n
        return n

    def read(self, n: int) -> bytes:
        if self._size is not None:
            n = max(0, min(n, self._size - self.pos))
        data = self._disk.read(self.pos, n)
        self.pos += len(data)
        return data

    def close(self) -> None:
        self._disk.close()
