"""The error both xenstore implementations raise (compiled shim and pure
reference), and the argument checks they share so both reject the same input."""
import errno

_TX_MAX = 0xFFFFFFFF


class XenstoreError(OSError):
    """A failed xenstore request: ``XenstoreError(errno, message)``.

    ``.errno`` is a positive errno value: those xenstored sends (ENOENT,
    EACCES, EEXIST, EINVAL, EAGAIN for a transaction conflict, ...) and those
    of the connection (ENOENT or ECONNREFUSED for a missing daemon, ECONNRESET
    when it hangs up, EIO for a protocol violation).  ``.strerror`` is the message.
    """


def encode_path(path: str) -> bytes:
    """A xenstore path (or socket path) as bytes; NUL is refused."""
    if not isinstance(path, str):
        raise TypeError(f"path must be str, not {type(path).__name__}")
    if "\0" in path:
        raise XenstoreError(errno.EINVAL, "path must not contain NUL")
    return path.encode("utf-8", "surrogateescape")


def as_value(value) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return bytes(value)


def check_tx(tx: int) -> int:
    if not isinstance(tx, int) or isinstance(tx, bool):
        raise TypeError(f"transaction id must be int, not {type(tx).__name__}")
    if not 0 <= tx <= _TX_MAX:
        raise XenstoreError(errno.EINVAL, f"bad transaction id {tx}")
    return tx


def split_names(payload: bytes) -> list:
    """Children's names from a directory payload (each name NUL-terminated)."""
    if not payload:
        return []
    if not payload.endswith(b"\0"):
        payload += b"\0"
    return [n.decode("utf-8", "surrogateescape") for n in payload.split(b"\0")[:-1]]


_PERM = ("n", "r", "w", "b")


def encode_perms(perms) -> bytes:
    """["n0", "r5"] as the wire's NUL-separated list; each "<n|r|w|b><domid>"."""
    if isinstance(perms, str) or not perms:
        raise XenstoreError(errno.EINVAL, "permissions must be a non-empty list like ['n0', 'r5']")
    out = []
    for p in perms:
        if not isinstance(p, str) or len(p) < 2 or p[0] not in _PERM or not p[1:].isdigit() \
                or not p[1:].isascii():
            raise XenstoreError(errno.EINVAL, f"malformed permission {p!r}")
        out.append(p.encode("ascii") + b"\0")
    return b"".join(out)


def split_event(payload: bytes) -> tuple:
    """(path, token) of a watch event's payload "path\\0token\\0"."""
    parts = payload.split(b"\0")
    path = parts[0].decode("utf-8", "surrogateescape")
    token = parts[1].decode("utf-8", "surrogateescape") if len(parts) > 1 else ""
    return path, token


def check_timeout(timeout) -> int:
    """A read_watch timeout in seconds (None: no limit) as poll's milliseconds (-1: no limit)."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise TypeError("timeout must be a number of seconds or None")
    if timeout < 0:
        raise XenstoreError(errno.EINVAL, f"bad timeout {timeout}")
    return min(int(timeout * 1000), 0x7FFFFFFF)
