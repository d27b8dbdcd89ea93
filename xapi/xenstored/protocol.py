"""The xenstore wire protocol (xen/include/public/io/xs_wire.h): message types,
the 16-byte header, payload helpers and the errno names sent in XS_ERROR."""
import errno
import struct

XS_CONTROL = 0
XS_DIRECTORY = 1
XS_READ = 2
XS_GET_PERMS = 3
XS_WATCH = 4
XS_UNWATCH = 5
XS_TRANSACTION_START = 6
XS_TRANSACTION_END = 7
XS_INTRODUCE = 8
XS_RELEASE = 9
XS_GET_DOMAIN_PATH = 10
XS_WRITE = 11
XS_MKDIR = 12
XS_RM = 13
XS_SET_PERMS = 14
XS_WATCH_EVENT = 15
XS_ERROR = 16
XS_IS_DOMAIN_INTRODUCED = 17
XS_RESUME = 18
XS_SET_TARGET = 19
# 20 was XS_RESTRICT, removed from the protocol
XS_RESET_WATCHES = 21
XS_DIRECTORY_PART = 22
XS_TYPE_COUNT = 23

NAMES = {
    XS_CONTROL: "CONTROL", XS_DIRECTORY: "DIRECTORY", XS_READ: "READ", XS_GET_PERMS: "GET_PERMS",
    XS_WATCH: "WATCH", XS_UNWATCH: "UNWATCH", XS_TRANSACTION_START: "TRANSACTION_START",
    XS_TRANSACTION_END: "TRANSACTION_END", XS_INTRODUCE: "INTRODUCE", XS_RELEASE: "RELEASE",
    XS_GET_DOMAIN_PATH: "GET_DOMAIN_PATH", XS_WRITE: "WRITE", XS_MKDIR: "MKDIR", XS_RM: "RM",
    XS_SET_PERMS: "SET_PERMS", XS_WATCH_EVENT: "WATCH_EVENT", XS_ERROR: "ERROR",
    XS_IS_DOMAIN_INTRODUCED: "IS_DOMAIN_INTRODUCED", XS_RESUME: "RESUME", XS_SET_TARGET: "SET_TARGET",
    XS_RESET_WATCHES: "RESET_WATCHES", XS_DIRECTORY_PART: "DIRECTORY_PART",
}

HEADER = struct.Struct("<IIII")  # type, req_id, tx_id, len
PAYLOAD_MAX = 4096               # XENSTORE_PAYLOAD_MAX, both directions
ABS_PATH_MAX = 3072              # XENSTORE_ABS_PATH_MAX
REL_PATH_MAX = 2048              # XENSTORE_REL_PATH_MAX

DOMID_SELF = 0x7FF0
DOMID_FIRST_RESERVED = 0x7FF0

# The errno values xenstored can name in XS_ERROR, in xs_wire.h's order: the
# first (EINVAL) stands in for any other.
ERROR_NAMES = ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
               "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM")
_NAME_OF = {getattr(errno, n): n for n in ERROR_NAMES}


def error_name(code: int) -> str:
    """The name sent for errno `code` (EINVAL for one xs_wire.h does not list)."""
    return _NAME_OF.get(code, "EINVAL")


def error_payload(code: int) -> bytes:
    return error_name(code).encode("ascii") + b"\0"


def frame(mtype: int, req_id: int, tx_id: int, body: bytes) -> bytes:
    return HEADER.pack(mtype, req_id, tx_id, len(body)) + body


def onearg(payload: bytes):
    """The single NUL-terminated string a request carries, or None when the
    payload is empty or holds anything but exactly one NUL, at its end."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    return payload[:-1].decode("latin-1")


def strings(payload: bytes) -> list:
    """The NUL-terminated strings at the start of a payload (bytes after the
    last NUL are ignored, as xenstored's get_strings does)."""
    parts = payload.split(b"\0")
    return [p.decode("latin-1") for p in parts[:-1]]


def atoi(text: str) -> int:
    """C atoi(): optional blanks and sign, then digits; 0 when there are none."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    n = 0
    for ch in s:
        if not "0" <= ch <= "9":
            break
        n = n * 10 + (ord(ch) - 48)
        if n > 0x7FFFFFFF:
            n = 0x7FFFFFFF
    return sign * n
