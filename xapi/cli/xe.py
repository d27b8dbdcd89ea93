"""`xe`: the thin CLI client, speaking xapi's thin CLI protocol (ocaml/xapi-cli-protocol).

The request is `POST /cli` whose body is the arguments joined by newlines; the server answers with no
HTTP status line but the protocol's handshake (`XenSource thin CLI protocol`, int32 major, int32 minor),
which the client echoes. Then the server sends commands (Print, PrintStderr, Debug, Load, HttpGet,
HttpPut, Prompt, Error, Exit) and the client answers those that need it. Integers are int32 little-endian,
strings are a length then bytes, a message is its length then its tags and body.

The framing helpers here are shared with the server side (xapi.cli.server); this module uses only the
standard library.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import struct
import sys
import urllib.parse

PREFIX = b"XenSource thin CLI protocol"
MAJOR, MINOR = 0, 2

# message tags
MSG_COMMAND, MSG_RESPONSE, MSG_BLOB = 9, 10, 11
# commands
PRINT, LOAD, PROMPT, EXIT, DEBUG, HTTP_GET, HTTP_PUT, ERROR, PRINT_STDERR, HTTP_CONNECT = \
    0, 1, 3, 4, 15, 12, 13, 14, 16, 17
# responses
OK, FAILED, WAIT = 5, 6, 18
# blobs
CHUNK, END = 7, 8

DEFAULT_SOCKET = "/var/lib/xcp/xapi"
CLIENT_ARGS = {"-s", "-p", "-u", "-pw", "-pwf", "-h"}


# -- framing ----------------------------------------------------------------------------------------
def pack_int(n: int) -> bytes:
    return struct.pack("<i", n)


def pack_string(s) -> bytes:
    b = s.encode("utf-8", "replace") if isinstance(s, str) else bytes(s)
    return pack_int(len(b)) + b


def frame(payload: bytes) -> bytes:
    return pack_int(len(payload)) + payload


def command(tag: int, *parts) -> bytes:
    """A whole Command message: Print("x") is command(PRINT, "x"); Exit(1) is command(EXIT, 1)."""
    body = [pack_int(MSG_COMMAND), pack_int(tag)]
    for p in parts:
        if isinstance(p, int):
            body.append(pack_int(p))
        elif isinstance(p, (list, tuple)):
            body.append(pack_int(len(p)))
            body.extend(pack_string(x) for x in p)
        else:
            body.append(pack_string(p))
    return frame(b"".join(body))


def response(tag: int) -> bytes:
    return frame(pack_int(MSG_RESPONSE) + pack_int(tag))


def blob_chunk(data: bytes) -> bytes:
    return frame(pack_int(MSG_BLOB) + pack_int(CHUNK) + pack_int(len(data))) + data


def blob_end() -> bytes:
    return frame(pack_int(MSG_BLOB) + pack_int(END))


def handshake() -> bytes:
    return PREFIX + pack_int(MAJOR) + pack_int(MINOR)


class Reader:
    """Parses a message body: ints, strings, lists."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        (v,) = struct.unpack_from("<i", self.data, self.pos)
        self.pos += 4
        return v

    def string(self) -> str:
        n = self.int()
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", "replace")

    def strings(self) -> list[str]:
        return [self.string() for _ in range(self.int())]


# -- the client -------------------------------------------------------------------------------------
class Usage(Exception):
    pass


OPTION_KEYS = ("server", "port", "username", "password", "passwordfile", "nossl", "debug")
SHORT = {"-s": "server", "-p": "port", "-u": "username", "-pw": "password", "-pwf": "passwordfile",
         "-h": "server"}    # older xe spells -s as -h


def _rc_options() -> list[tuple[str, str]]:
    """~/.xe: key=value lines (server=, port=, username=, password=, passwordfile=, nossl=, debug=)."""
    try:
        with open(os.path.join(os.path.expanduser("~"), ".xe")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [tuple(ln.strip().split("=", 1)) for ln in lines if "=" in ln and not ln.lstrip().startswith("#")]


def _extra_args() -> list[str]:
    """XE_EXTRA_ARGS: comma-separated arguments (a comma inside one escaped as \\,)."""
    text = os.environ.get("XE_EXTRA_ARGS", "")
    out, cur, i = [], "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            cur += ","
            i += 2
            continue
        if text[i] == ",":
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    if cur:
        out.append(cur)
    return out


def _set(opts, key: str, value: str) -> None:
    if key == "port":
        try:
            port = int(value)
            if not 0 <= port <= 65535:
                raise ValueError(value)
        except ValueError:
            raise Usage("Port number must be an integer (0-65535)") from None
        opts["port"] = port
    elif key in ("nossl", "debug"):
        opts[key] = value.strip().lower() == "true"
    else:
        opts[{"username": "user"}.get(key, key)] = value


def _consume(opts, argv: list[str]) -> list[str]:
    """Takes the client's options out of argv (-s host, --nossl, server=host...): the rest is the
    command's."""
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in SHORT:
            if i + 1 >= len(argv):
                raise Usage(f"option {a} needs a value")
            _set(opts, SHORT[a], argv[i + 1])
            i += 2
            continue
        if a == "--nossl":
            opts["nossl"] = True
        elif a == "--debug":
            opts["debug"] = True
        elif "=" in a and a.split("=", 1)[0] in OPTION_KEYS:
            _set(opts, *a.split("=", 1))
        else:
            rest.append(a)
        i += 1
    return rest


def parse_argv(argv: list[str]):
    """The client's options and the command's arguments. As xe: the command line wins over
    XE_EXTRA_ARGS, which wins over ~/.xe; a password file (-pwf) gives the user name and password."""
    opts = {"server": None, "port": None, "user": None, "password": None, "passwordfile": None,
            "nossl": False, "debug": False}
    for key, value in _rc_options():
        if key in OPTION_KEYS:
            _set(opts, key, value)
    extra = _consume(opts, _extra_args())
    rest = _consume(opts, argv) + extra
    if opts["passwordfile"]:
        try:
            with open(opts["passwordfile"]) as f:
                lines = f.read().splitlines()
        except OSError:
            raise Usage(f"Error opening password file '{opts['passwordfile']}'") from None
        if len(lines) < 2:
            raise Usage("Error: password file format: expecting username on the first line, password on the "
                        "second line")
        opts["user"], opts["password"] = lines[0], lines[1]
    return opts, rest


def connect(opts):
    server = opts["server"]
    if server is None:
        path = os.environ.get("XAPI_SOCKET", DEFAULT_SOCKET)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s, "localhost"
    port = opts["port"] or (80 if opts["nossl"] else 443)
    s = socket.create_connection((server, port))
    if not opts["nossl"]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE      # xe doesn't verify by default either
        s = ctx.wrap_socket(s, server_hostname=server)
    return s, server


class Conn:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.buf = b""

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self) -> Reader:
        (n,) = struct.unpack("<i", self.read_exact(4))
        return Reader(self.read_exact(n))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class ClientSideError(Exception):
    """A local failure of a transfer (a missing file, one that exists already): xe reports it and
    exits 1 without waiting for the server."""


class NotPermitted(Exception):
    """The server asked for a file that the command line didn't name."""


def permitted_names(args: list[str]) -> set[str]:
    """The files the server may ask us to read or write: the values of the command's key=value
    arguments, as absolute paths (xe's guard against a server reading or writing any file)."""
    out = set()
    for a in args:
        if "=" in a:
            v = a.split("=", 1)[1]
            if v.strip():
                out.add(os.path.normpath(os.path.abspath(v)))
    return out


def check_permitted(permitted: set[str], name: str) -> None:
    if os.path.normpath(os.path.abspath(name)) not in permitted:
        raise NotPermitted(f"Blocked upload/download of the file {name}, which was requested by the server. "
                           "The file name was not present on the command line\n")


def _target(opts, url: str):
    """(options, Host header, request target) for a URL the server sent: a path on the server we are
    talking to, or an absolute https:// URL naming another host of the pool."""
    u = urllib.parse.urlsplit(url)
    target = (u.path or "/") + ("?" + u.query if u.query else "")
    if u.scheme in ("http", "https") and u.hostname:
        o = dict(opts, server=u.hostname, port=u.port or (443 if u.scheme == "https" else 80),
                 nossl=u.scheme == "http")
        return o, u.hostname, target
    return opts, opts["server"] or "localhost", target


def _read_head(f) -> tuple[int, dict[str, str]]:
    status = f.readline().split()
    if len(status) < 2 or not status[1].isdigit():
        raise OSError("bad response from the HTTP server")
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(status[1]), headers


def http_put(opts, url: str, filename: str, redirects: int = 3) -> bool:
    """Streams the file as the body of PUT url: a regular file with its Content-Length, anything else
    (a pipe, /dev/stdin) chunked. True on a 2xx answer."""
    if not os.path.exists(filename):
        raise ClientSideError(f"file '{filename}' does not exist")
    o, host, target = _target(opts, url)
    with open(filename, "rb") as f:
        st = os.fstat(f.fileno())
        regular = (st.st_mode & 0o170000) == 0o100000
        sock, _ = connect(o)
        try:
            head = f"PUT {target} HTTP/1.1\r\nHost: {host}\r\nUser-agent: xe-cli/Unix/{MAJOR}.{MINOR}\r\n"
            head += f"Content-Length: {st.st_size}\r\n" if regular else "Transfer-Encoding: chunked\r\n"
            sock.sendall((head + "Connection: close\r\n\r\n").encode("latin-1"))
            try:
                while chunk := f.read(1 << 20):
                    sock.sendall(chunk if regular else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if not regular:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass            # the server stopped reading: its answer says why
            reply = sock.makefile("rb")
            code, headers = _read_head(reply)
            if 200 <= code < 300:
                # the answer came before the body was read (as xapi's); the connection ends with the
                # import. Closing first could cut off what is still in flight (a TLS close without
                # close_notify is a broken connection to the server)
                with contextlib.suppress(OSError):
                    while reply.read(65536):
                        pass
        finally:
            sock.close()
    if code in (301, 302, 307) and "location" in headers and redirects:
        return http_put(opts, headers["location"], filename, redirects - 1)
    return 200 <= code < 300


def http_get(opts, url: str, filename: str, permitted: set[str], redirects: int = 3) -> bool:
    """GET url into a new file (xe never overwrites one), or standard output when filename is empty.
    True on a 2xx answer whose body arrived whole."""
    o, host, target = _target(opts, url)
    if filename and os.path.lexists(filename):
        # refused before the request: xe would exit on this failure without waiting for the server,
        # whose export, once started, holds the VM (current_operations) until it sees the close
        check_permitted(permitted, filename)
        raise ClientSideError(str(FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), filename)))
    sock, _ = connect(o)
    try:
        sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-agent: xe-cli/Unix/{MAJOR}.{MINOR}\r\n"
                      "Connection: close\r\n\r\n").encode("latin-1"))
        f = sock.makefile("rb")
        code, headers = _read_head(f)
        if code in (301, 302, 307) and "location" in headers and redirects:
            sock.close()
            return http_get(opts, headers["location"], filename, permitted, redirects - 1)
        if not 200 <= code < 300:
            return False
        if filename:
            check_permitted(permitted, filename)
            try:
                fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                raise ClientSideError(str(e)) from None
            out = os.fdopen(fd, "wb", buffering=0)
        else:
            out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        with out:
            return _copy_body(f, out, headers)
    finally:
        sock.close()


def _write_all(out, data) -> None:
    """An unbuffered file may take less than all of it (a pipe): write the rest too."""
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


def _copy_body(f, out, headers: dict[str, str]) -> bool:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(f.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                f.readline()
                return True
            data = f.read(size)
            if len(data) < size:
                return False
            _write_all(out, data)
            f.readline()
    left = int(headers["content-length"]) if "content-length" in headers else None
    buf = bytearray(4 << 20)            # one reused buffer, filled straight from the socket
    view = memoryview(buf)
    while left is None or left > 0:
        n = f.readinto(view if left is None else view[:min(len(buf), left)])
        if not n:
            return left is None
        _write_all(out, view[:n])
        if left is not None:
            left -= n
    return True


USAGE = ("Usage: xe <cmd> [-s server] [-p port] ([-u username] [-pw password] or [-pwf <password file>]) "
         "<other arguments>\n\nA full list of commands can be obtained by running \n\txe help -s <server> "
         "-p <port>\n")


def request_body(args: list[str], opts) -> bytes:
    """The POST body as newcli sends it: the arguments, then always username= and password=
    (root and "null" unless given), joined by newlines."""
    user = "root" if opts["user"] is None else opts["user"]
    password = "null" if opts["password"] is None else opts["password"]
    return "\n".join([*args, f"username={user}", f"password={password}"]).encode("utf-8")


def request_head(length: int) -> bytes:
    """newcli's request line and headers, byte for byte."""
    return (f"POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/{MAJOR}.{MINOR}\r\n"
            f"content-length: {length}\r\n\r\n").encode("latin-1")


def run(argv: list[str]) -> int:
    if "-version" in argv:
        sys.stdout.write(f"ThinCLI protocol: {MAJOR}.{MINOR}\n")
        return 0
    if "-help" in argv or "--help" in argv:
        sys.stderr.write(USAGE)
        return 0
    opts, args = parse_argv(argv)
    if not args:                    # newcli: no command is a usage message, exit 0
        sys.stderr.write(USAGE)
        return 0
    body = request_body(args, opts)
    permitted = permitted_names(args)
    try:
        sock, host = connect(opts)
    except OSError as e:
        sys.stderr.write(f"Error: {e.strerror or e} (calling connect )\n")
        return 1
    conn = Conn(sock)
    conn.send(request_head(len(body)) + body)
    try:
        prefix = conn.read_exact(len(PREFIX))
    except EOFError:
        prefix = conn.buf
        if not prefix:
            sys.stderr.write("Unable to contact server. Please check server and port settings.\n")
            return 1
    if prefix != PREFIX:
        # newcli: an HTTP answer (a server that is no CLI server, or an error page) is a server
        # error; anything else is no management agent at all
        if prefix[:4].upper() == b"HTTP":
            sys.stderr.write("Server internal error.\n")
        else:
            sys.stderr.write("Failed to contact a running management agent.\n"
                             "Try specifying a server name and port.\n" + USAGE)
        return 1
    major = struct.unpack("<i", conn.read_exact(4))[0]
    minor = struct.unpack("<i", conn.read_exact(4))[0]
    if major != MAJOR:
        sys.stderr.write(f"Protocol version mismatch: Server has protocol version {major}.{minor}. "
                         f"Client has {MAJOR}.{MINOR}.\nTry specifying a server name and port on the "
                         "command-line.\n" + USAGE)
        return 1
    conn.send(handshake())
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    while True:
        r = conn.message()
        kind = r.int()
        if kind != MSG_COMMAND:
            continue
        tag = r.int()
        if tag == PRINT:
            s = r.string()
            _write(sys.stdout, out, s + "\n")
        elif tag == PRINT_STDERR:
            sys.stdout.flush()
            sys.stderr.write(r.string())
            sys.stderr.flush()
        elif tag == DEBUG:
            s = r.string()
            if opts["debug"]:
                sys.stderr.write(s)
        elif tag == EXIT:
            code = r.int()
            sys.stdout.flush()
            sock.close()
            return code
        elif tag == ERROR:
            code = r.string()
            params = r.strings()
            sys.stdout.flush()
            sys.stderr.write(f"Error code: {code}\nError parameters: {', '.join(params)}\n")
        elif tag == LOAD:
            name = r.string()
            check_permitted(permitted, name)
            try:
                with open(name, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    conn.send(response(OK))
                    conn.send(frame(pack_int(MSG_BLOB) + pack_int(CHUNK) + pack_int(size)))
                    while chunk := f.read(1 << 20):
                        conn.send(chunk)
                    conn.send(blob_end())
            except OSError:
                conn.send(response(FAILED))
        elif tag == PROMPT:
            line = sys.stdin.readline().rstrip("\n").encode("utf-8")
            conn.send(blob_chunk(line) + blob_end())
        elif tag in (HTTP_GET, HTTP_PUT):
            name, url = r.string(), r.string()
            try:
                if tag == HTTP_PUT:
                    check_permitted(permitted, name)
                    ok = http_put(opts, url, name)
                else:
                    ok = http_get(opts, url, name, permitted)
            except ClientSideError as e:
                conn.send(response(FAILED))
                sys.stdout.flush()
                sys.stderr.write(f"Operation failed. Error: {e}\n")
                sock.close()
                return 1
            except OSError as e:
                if opts["debug"]:
                    sys.stderr.write(f"transfer failed: {e}\n")
                ok = False
            conn.send(response(OK if ok else FAILED))
        else:
            # newcli has no console here either: HttpConnect (and any unknown command) ends the
            # client with Unexpected_msg's text
            what = f"HttpConnect {r.string()}" if tag == HTTP_CONNECT else f"tag {tag}"
            sys.stdout.flush()
            sys.stderr.write(f"Unexpected message from server: Command {what}")
            sock.close()
            return 1


def _write(stdout, out, text: str) -> None:
    if out is not None:
        stdout.flush()
        out.write(text.encode("utf-8", "replace"))
        out.flush()
    else:
        stdout.write(text)


def main(argv: list[str] | None = None) -> int:
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except Usage as e:
        sys.stderr.write(f"{e}\n")
        code = 1
    except NotPermitted as e:
        sys.stderr.write(f"File not permitted: {e}.\n")
        code = 1
    except EOFError:
        sys.stderr.write("Lost connection to the server.\n")
        code = 1
    except OSError as e:
        sys.stderr.write(f"Error: {e.strerror or e}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
