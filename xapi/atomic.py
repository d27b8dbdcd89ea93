"""Replacing a file so that readers, and a crash at any moment, see the old content or the new, never
a part: write a temporary file beside it, fsync, rename, fsync the folder."""
from __future__ import annotations

import os
import secrets
from typing import BinaryIO, Callable


def write_file(path: str, data: bytes, mode: int = 0o600) -> None:
    write_with(path, lambda f: f.write(data), mode)


def write_with(path: str, write: Callable[[BinaryIO], object], mode: int = 0o600, *,
               tmp: str | None = None, buffering: int = -1) -> None:
    """`write(f)` fills the open temporary file.  `tmp` names it when the caller wants one fixed
    name, truncated and reused by the next write (a large file saved again and again leaves at most
    one stale copy after a crash); by default the name is unique, so concurrent writers never meet."""
    if tmp is None:
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    else:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dirfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
