"""XML-RPC for driver processes, light to import: a driver runs once per operation, four times per
VDI transfer, and ``xmlrpc.client`` (through ``http.client``, ``email`` and ``ssl``) was two thirds
of its start-up. Decoding is expat's, encoding is string building, and the XenAPI calls back to
the daemon are plain HTTP/1.1 over its Unix socket.

Values as ``xmlrpc.client`` has them, except that ``dateTime.iso8601`` stays its text (drivers
only pass such values on) and ``base64`` is ``bytes``. Ints beyond 32 bits are refused when
encoding, as ``xmlrpc.client`` refuses them (the API passes sizes as strings).
"""
from __future__ import annotations

import base64
import socket
from xml.parsers import expat

MAXINT, MININT = 2 ** 31 - 1, -2 ** 31
_SCALARS = frozenset({"string", "int", "i4", "i8", "boolean", "double", "nil", "base64", "dateTime.iso8601"})


class Fault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.faultCode, self.faultString = code, message


# -- decoding -------------------------------------------------------------------------------------
def _scalar(tag: str, text: str):
    if tag == "string" or tag == "dateTime.iso8601":
        return text
    if tag in ("int", "i4", "i8"):
        return int(text.strip())
    if tag == "boolean":
        v = text.strip()
        if v not in ("0", "1"):
            raise ValueError(f"bad boolean value {v!r}")
        return v == "1"
    if tag == "double":
        return float(text.strip())
    if tag == "nil":
        return None
    return base64.b64decode(text.encode("ascii"))


class _Struct:
    __slots__ = ("d", "name")

    def __init__(self) -> None:
        self.d: dict = {}
        self.name: str | None = None


class _Decoder:
    def __init__(self) -> None:
        self.params: list = []
        self.method: str | None = None
        self.fault = False
        self.frames: list = []          # open arrays (lists) and structs (_Struct)
        self.values: list = []          # per open <value>: whether a typed element came in it
        self.text: list = []

    def start(self, tag: str, _attrs) -> None:
        tag = tag.rpartition(":")[2]
        if tag == "value":
            self.values.append(False)
            self.text = []
        elif tag in _SCALARS or tag == "name" or tag == "methodName":
            if tag != "name" and tag != "methodName":
                self._typed()
            self.text = []
        elif tag == "struct":
            self._typed()
            self.frames.append(_Struct())
        elif tag == "array":
            self._typed()
            self.frames.append([])
        elif tag == "fault":
            self.fault = True

    def _typed(self) -> None:
        if not self.values:
            raise ValueError("a value outside <value>")
        self.values[-1] = True

    def end(self, tag: str) -> None:
        tag = tag.rpartition(":")[2]
        if tag in _SCALARS:
            self._add(_scalar(tag, "".join(self.text)))
        elif tag == "value":
            if not self.values.pop():
                self._add("".join(self.text))       # a bare value is a string
        elif tag == "name":
            if not self.frames or type(self.frames[-1]) is not _Struct:
                raise ValueError("<name> outside a struct")
            self.frames[-1].name = "".join(self.text)
        elif tag == "methodName":
            self.method = "".join(self.text)
        elif tag in ("struct", "array"):
            frame = self.frames.pop()
            self._add(frame.d if type(frame) is _Struct else frame)

    def data(self, text: str) -> None:
        self.text.append(text)

    def _add(self, v) -> None:
        if not self.frames:
            self.params.append(v)
        elif type(self.frames[-1]) is list:
            self.frames[-1].append(v)
        else:
            frame = self.frames[-1]
            if frame.name is None:
                raise ValueError("a struct member without a name")
            frame.d[frame.name] = v
            frame.name = None


def loads(data) -> tuple[tuple, str | None]:
    """(params, method name) of a methodCall or methodResponse, as xmlrpc.client.loads; a fault
    raises Fault; anything malformed ValueError."""
    d = _Decoder()
    p = expat.ParserCreate("utf-8")
    p.buffer_text = True
    p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = d.start, d.end, d.data
    try:
        p.Parse(data.encode("utf-8") if isinstance(data, str) else data, True)
    except expat.ExpatError as e:
        raise ValueError(f"not XML: {e}") from None
    if d.frames or d.values:
        raise ValueError("unfinished value")
    if d.fault:
        f = d.params[0] if d.params and isinstance(d.params[0], dict) else {}
        raise Fault(f.get("faultCode", 0), f.get("faultString", ""))
    return tuple(d.params), d.method


# -- encoding -------------------------------------------------------------------------------------
def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _enc(v, out: list, allow_none: bool) -> None:
    if v is None:
        if not allow_none:
            raise TypeError("cannot marshal None unless allow_none is enabled")
        out.append("<value><nil/></value>")
    elif v is True or v is False:
        out.append(f"<value><boolean>{int(v)}</boolean></value>")
    elif isinstance(v, int):
        if not MININT <= v <= MAXINT:
            raise OverflowError("int exceeds XML-RPC limits")
        out.append(f"<value><int>{int(v)}</int></value>")
    elif isinstance(v, float):
        out.append(f"<value><double>{v!r}</double></value>")
    elif isinstance(v, str):
        out.append(f"<value><string>{_esc(v)}</string></value>")
    elif isinstance(v, (bytes, bytearray)):
        out.append(f"<value><base64>{base64.b64encode(bytes(v)).decode('ascii')}</base64></value>")
    elif isinstance(v, dict):
        out.append("<value><struct>")
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError("dictionary key must be string")
            out.append(f"<member><name>{_esc(k)}</name>")
            _enc(x, out, allow_none)
            out.append("</member>")
        out.append("</struct></value>")
    elif isinstance(v, (list, tuple)):
        out.append("<value><array><data>")
        for x in v:
            _enc(x, out, allow_none)
        out.append("</data></array></value>")
    else:
        raise TypeError(f"cannot marshal {type(v)} objects")


def dumps_call(method: str, params: tuple, allow_none: bool = False) -> str:
    out = ["<?xml version='1.0'?>\n<methodCall>\n<methodName>", _esc(method), "</methodName>\n<params>\n"]
    for p in params:
        out.append("<param>")
        _enc(p, out, allow_none)
        out.append("</param>\n")
    out.append("</params>\n</methodCall>\n")
    return "".join(out)


def dumps_response(value, allow_none: bool = True) -> str:
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>"]
    _enc(value, out, allow_none)
    out.append("</param>\n</params>\n</methodResponse>\n")
    return "".join(out)


def dumps_fault(code: int, message: str) -> str:
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<fault>\n"]
    _enc({"faultCode": code, "faultString": message}, out, False)
    out.append("\n</fault>\n</methodResponse>\n")
    return "".join(out)


# -- HTTP over the daemon's Unix socket -----------------------------------------------------------
class UnixHTTP:
    """POSTs on one keep-alive connection to a Unix socket; reconnects once if the daemon closed
    it in between."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, body: bytes, headers: str = "") -> bytes:
        head = (f"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode()
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(self.timeout)
                    s.connect(self.path)
                    self.sock = s
                self.sock.sendall(head + body)
                return self._reply()
            except OSError:
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _reply(self) -> bytes:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the daemon closed the connection")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = self._chunked(body)
        else:
            length = int(fields.get("content-length", "-1"))
            if length < 0:                  # the body ends with the connection
                while True:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.close()
                return body
            while len(body) < length:
                chunk = self.sock.recv(max(65536, length - len(body)))
                if not chunk:
                    raise ConnectionResetError("the daemon closed the connection in a reply")
                body += chunk
            body = body[:length]
        if fields.get("connection", "").lower() == "close":
            self.close()
        return body

    def _chunked(self, buf: bytes) -> bytes:
        out = []
        while True:
            while b"\r\n" not in buf:
                buf += self._more()
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += self._more()
            if size == 0:
                return b"".join(out)
            out.append(buf[:size])
            buf = buf[size + 2:]

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection in a reply")
        return chunk
