"""The thin CLI protocol on the wire, both ways, against xapi's own definition of it
(ocaml/xapi-cli-protocol/cli_protocol.ml, ocaml/xe-cli/newcli.ml, ocaml/xapi-cli-server/xapi_cli.ml).

Server side: the bytes the stock OCaml `xe` sends (request line, headers and body exactly as
newcli writes them, `username=root` / `password=null` when none is given) replayed on a raw
socket to a live daemon, over the local socket and TCP; the answer must start with the handshake
(no HTTP status line), and its messages decode with cli_protocol's tags. Also the body a
forwarding xapi member sends (`session_id=` first, lines joined with CRLF).

Client side: our `xe` against a peer written from xapi_cli.ml's side of the protocol (a replay,
not our server): the exact request it sends, and how it treats each command (Print, PrintStderr,
Debug, Error, Load, Prompt, HttpConnect, Exit)."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import xmlrpc.client

import pytest

from tests import daemon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = b"XenSource thin CLI protocol"


# -- cli_protocol.ml's encoding, written out independently of xapi.cli.xe -----------------------------
def i32(n: int) -> bytes:
    return struct.pack("<i", n)


def s(text) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return i32(len(b)) + b


def msg(*parts: bytes) -> bytes:
    payload = b"".join(parts)
    return i32(len(payload)) + payload


HANDSHAKE = PREFIX + i32(0) + i32(2)


def stock_request(args: list[str], user: str = "root", password: str = "null") -> bytes:
    """newcli.ml main: the request exactly as the OCaml xe writes it."""
    body = "\n".join(args + [f"username={user}", f"password={password}"])
    return (b"POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/0.2\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode() + body.encode())


def recv_exact(sock, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(out)
        out += chunk
    return out


def read_message(sock):
    """One message decoded as cli_protocol.unmarshal_message does."""
    (n,) = struct.unpack("<i", recv_exact(sock, 4))
    body = recv_exact(sock, n)
    pos = 0

    def integer():
        nonlocal pos
        (v,) = struct.unpack_from("<i", body, pos)
        pos += 4
        return v

    def string():
        nonlocal pos
        k = integer()
        v = body[pos:pos + k].decode()
        pos += k
        return v

    kind = integer()
    assert kind == 9, f"the server sends only Command messages, got tag {kind}"
    tag = integer()
    decoded = {0: lambda: ("Print", string()), 15: lambda: ("Debug", string()),
               1: lambda: ("Load", string()), 12: lambda: ("HttpGet", string(), string()),
               13: lambda: ("HttpPut", string(), string()), 17: lambda: ("HttpConnect", string()),
               3: lambda: ("Prompt",), 4: lambda: ("Exit", integer()),
               14: lambda: ("Error", string(), [string() for _ in range(integer())]),
               16: lambda: ("PrintStderr", string())}[tag]()
    assert pos == n, "the whole message is consumed"
    return decoded


def converse(connect, request: bytes, answers=()):
    """Sends a stock request, checks the handshake comes first, answers each Prompt from
    `answers` (as newcli: Blob Chunk, the bytes, Blob End), returns the messages up to Exit."""
    answers = list(answers)
    sock = connect()
    try:
        sock.sendall(request)
        assert recv_exact(sock, len(HANDSHAKE)) == HANDSHAKE     # no HTTP status line before it
        sock.sendall(HANDSHAKE)
        out = []
        while True:
            m = read_message(sock)
            out.append(m)
            if m[0] == "Prompt":
                line = answers.pop(0).encode()
                sock.sendall(msg(i32(11), i32(7), i32(len(line))) + line + msg(i32(11), i32(8)))
            if m[0] == "Exit":
                return out
    finally:
        sock.close()


def shown(out) -> tuple[str, str, int]:
    """What the stock client shows for these messages (newcli main_loop): stdout, stderr, exit
    code. (xapi splits an error into one PrintStderr per line; the terminal sees the same.)"""
    stdout = stderr = ""
    for m in out:
        if m[0] == "Print":
            stdout += m[1] + "\n"
        elif m[0] == "PrintStderr":
            stderr += m[1]
        elif m[0] == "Error":
            stderr += f"Error code: {m[1]}\nError parameters: {', '.join(m[2])}\n"
    assert out[-1][0] == "Exit"
    return stdout, stderr, out[-1][1]


@pytest.fixture(scope="module")
def d():
    dm = daemon.start()
    yield dm
    daemon.cleanup(dm)


def unix(d):
    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(d.socket_path)
        sock.settimeout(30)
        return sock
    return connect


def tcp(d):
    def connect():
        sock = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
        return sock
    return connect


def sdk(d):
    proxy = xmlrpc.client.ServerProxy(d.url, allow_none=True)
    r = proxy.session.login_with_password("root", d.password, "1.0", "test")
    assert r["Status"] == "Success"
    return proxy, r["Value"]


def control_domain_uuid(d) -> str:
    proxy, session = sdk(d)
    vms = proxy.VM.get_all_records(session)["Value"]
    return next(r["uuid"] for r in vms.values() if r["is_control_domain"])


def test_stock_request_on_the_local_socket(d):
    """The OCaml xe on dom0 sends root/null on the socket: the socket's root needs no password."""
    uuid = control_domain_uuid(d)
    out = converse(unix(d), stock_request(["vm-list", "params=uuid", "is-control-domain=true"]))
    # cli_printer.multi_line_record: key padded to 4 + the longest key, then ': ', a newline per
    # field; the printer adds one more newline, and the client's print_endline a third
    assert out == [("Print", f"uuid ( RO)    : {uuid}\n\n"), ("Exit", 0)]


def test_stock_minimal_and_record_alignment(d):
    uuid = control_domain_uuid(d)
    out = converse(unix(d), stock_request(["vm-list", "is-control-domain=true", "--minimal"]))
    assert out == [("Print", uuid), ("Exit", 0)]
    out = converse(unix(d), stock_request(["vm-list", "is-control-domain=true",
                                           "params=uuid,name-label,power-state"]))
    assert out[-1] == ("Exit", 0)
    text = out[0][1]
    lines = text.split("\n")
    assert lines[0] == f"uuid ( RO)           : {uuid}"
    assert lines[1].startswith("     name-label ( RW): ")
    assert lines[2] == "    power-state ( RO): running"
    assert text.endswith("running\n\n")


def test_stock_credentials_over_tcp(d):
    uuid = control_domain_uuid(d)
    out = converse(tcp(d), stock_request(["vm-list", "is-control-domain=true", "--minimal"],
                                         password=d.password))
    assert out == [("Print", uuid), ("Exit", 0)]
    # the stock client's defaults (root / "null") over TCP: xapi_cli's param_error
    for request in (stock_request(["vm-list"]), stock_request(["vm-list"], password="wrong")):
        out = converse(tcp(d), request)
        assert shown(out) == ("", "Authentication failed\nFor usage run: 'xe help'\n", 1)


def test_stock_unknown_command_and_missing_parameter(d):
    out = converse(unix(d), stock_request(["no-such-command"]))
    assert shown(out) == ("", "Unknown command: no-such-command\nFor usage run: 'xe help'\n", 1)
    out = converse(unix(d), stock_request(["vm-param-get", "uuid=" + control_domain_uuid(d)]))
    assert shown(out) == ("", "Required parameter not found: param-name\nFor usage run: 'xe help'\n", 1)


def test_stock_error_for_a_bad_uuid(d):
    """An object that is not there: xapi's server_error prints the error's doc and parameters
    to stderr, one PrintStderr each."""
    out = converse(unix(d), stock_request(["vm-param-get", "uuid=00000000-0000-0000-0000-000000000000",
                                           "param-name=name-label"]))
    assert all(m[0] in ("PrintStderr", "Error") for m in out[:-1])
    # cli_util.server_error: the error's doc, then its parameters as `name: value`
    assert shown(out) == ("", "The uuid you supplied was invalid.\ntype: VM\n"
                              "uuid: 00000000-0000-0000-0000-000000000000\n", 1)


def test_prompt_answered_as_newcli_does(d):
    proxy, session = sdk(d)
    vm = proxy.VM.create(session, {
        "name_label": "wire-prompt", "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "", "memory_target": "268435456", "memory_static_max": "268435456",
        "memory_dynamic_max": "268435456", "memory_dynamic_min": "134217728",
        "memory_static_min": "134217728", "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": "",
        "xenstore_data": {}, "ha_always_run": False, "ha_restart_priority": "", "tags": [],
        "blocked_operations": {}, "protection_policy": "", "is_snapshot_from_vmpp": False,
        "appliance": "", "start_delay": "0", "shutdown_delay": "0", "order": "0",
        "suspend_SR": "", "version": "0", "generation_id": "", "hardware_platform_version": "0",
        "has_vendor_device": False, "reference_label": "", "domain_type": "hvm", "NVRAM": {}})["Value"]
    uuid = proxy.VM.get_uuid(session, vm)["Value"]
    out = converse(unix(d), stock_request(["vm-uninstall", f"uuid={uuid}"]), answers=["no"])
    assert ("Print", "Type 'yes' to continue") in out and ("Prompt",) in out
    assert out[-2:] == [("Print", "Aborted (you typed: 'no')"), ("Exit", 0)]
    assert proxy.VM.get_uuid(session, vm)["Status"] == "Success"
    out = converse(unix(d), stock_request(["vm-uninstall", f"uuid={uuid}"]), answers=["yes"])
    assert out[-1] == ("Exit", 0)
    assert proxy.VM.get_uuid(session, vm)["ErrorDescription"][0] == "HANDLE_INVALID"


def test_forwarded_request_with_session_and_crlf(d):
    """What a pool member's xapi sends to the coordinator (xapi_cli.forward): `session_id=` first,
    arguments joined with CRLF; xapi's zap_cr takes the CRs off."""
    proxy, session = sdk(d)
    uuid = control_domain_uuid(d)
    body = "\r\n".join([f"session_id={session}", "vm-list", "is-control-domain=true", "--minimal"])
    request = (b"POST /cli HTTP/1.0\r\nUser-Agent: xapi/2.21\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body.encode())
    out = converse(tcp(d), request)
    assert out == [("Print", uuid), ("Exit", 0)]


def test_version_mismatch_is_refused(d):
    """xapi_cli.handler: a client of another major version gets nothing more."""
    sock = unix(d)()
    try:
        sock.sendall(stock_request(["vm-list"]))
        assert recv_exact(sock, len(HANDSHAKE)) == HANDSHAKE
        sock.sendall(PREFIX + i32(1) + i32(0))
        assert sock.recv(4096) == b""
    finally:
        sock.close()


# -- our xe against a replay of xapi's server side -----------------------------------------------------
def fake_server(path: str, script):
    """Listens on a Unix socket; for one connection: reads the request, sends the handshake,
    reads the client's, then runs script(conn) and records the request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    seen = {}

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(30)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1)
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            seen["head"], seen["body"] = head, recv_exact(conn, length)
            conn.sendall(HANDSHAKE)
            seen["handshake"] = recv_exact(conn, len(HANDSHAKE))
            script(conn, seen)
        except Exception as e:      # reported by the test through `seen`
            seen["error"] = repr(e)
        finally:
            conn.close()
            listener.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, seen


def run_xe(path: str, *args, stdin: str = ""):
    env = dict(os.environ, XAPI_SOCKET=path, PYTHONPATH=ROOT, HOME=os.path.dirname(path))
    env.pop("XE_EXTRA_ARGS", None)
    return subprocess.run([sys.executable, "-m", "xapi.cli.xe", *args], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=30)


def command(tag: int, *parts: bytes) -> bytes:
    return msg(i32(9), i32(tag), *parts)


def test_our_xe_request_and_commands_as_newcli(tmp_path):
    path = str(tmp_path / "sock")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"0123456789" * 1000)

    def script(conn, seen):
        conn.sendall(command(0, s("printed")) + command(16, s("to stderr\n")) + command(15, s("debug\n"))
                     + command(14, s("SOME_CODE"), i32(2), s("a"), s("b")))
        conn.sendall(command(1, s(str(upload))))              # Load: OK, Chunk len, bytes, End
        assert read_ints(conn) == (10, 5)
        _, _, n = read_ints(conn)
        seen["load"] = recv_exact(conn, n)
        assert read_ints(conn) == (11, 8)
        conn.sendall(command(3))                               # Prompt: Chunk, line, End
        _, _, n = read_ints(conn)
        seen["prompt"] = recv_exact(conn, n)
        assert read_ints(conn) == (11, 8)
        conn.sendall(command(1, s(str(tmp_path / "not-named.bin"))))
        seen["after_block"] = conn.recv(4096)
    t, seen = fake_server(path, script)
    r = run_xe(path, "some-command", f"file-name={upload}", "--flag", stdin="yes please\n")
    t.join(10)
    assert "error" not in seen, seen
    # the request exactly as newcli: no extra headers, root/null appended
    body = f"some-command\nfile-name={upload}\n--flag\nusername=root\npassword=null".encode()
    assert seen["head"] == (b"POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/0.2\r\n"
                            + f"content-length: {len(body)}\r\n\r\n".encode())
    assert seen["body"] == body and seen["handshake"] == HANDSHAKE
    assert seen["load"] == upload.read_bytes() and seen["prompt"] == b"yes please"
    assert r.stdout == "printed\n"
    assert r.stderr.startswith("to stderr\nError code: SOME_CODE\nError parameters: a, b\n")
    assert "debug" not in r.stderr
    # a file the command line did not name is refused, and the client stops (newcli's
    # Filename_not_permitted)
    assert "File not permitted: Blocked upload/download of the file" in r.stderr
    assert r.returncode == 1 and seen["after_block"] == b""


def read_ints(conn):
    """A client message (Response or Blob header): its int32s."""
    (n,) = struct.unpack("<i", recv_exact(conn, 4))
    return struct.unpack(f"<{n // 4}i", recv_exact(conn, n))


def test_our_xe_exit_code_and_unexpected_command(tmp_path):
    path = str(tmp_path / "sock")
    t, seen = fake_server(path, lambda conn, seen: conn.sendall(command(0, s("x")) + command(4, i32(3))))
    r = run_xe(path, "vm-list", "-u", "admin", "-pw", "secret")
    t.join(10)
    assert seen["body"] == b"vm-list\nusername=admin\npassword=secret"
    assert (r.returncode, r.stdout) == (3, "x\n")

    path2 = str(tmp_path / "sock2")
    t, seen = fake_server(path2, lambda conn, seen: conn.sendall(command(17, s("/console?ref=x"))))
    r = run_xe(path2, "console")
    t.join(10)
    assert r.returncode == 1
    assert r.stderr == "Unexpected message from server: Command HttpConnect /console?ref=x"


def test_our_xe_against_no_cli_server(tmp_path):
    """newcli: an HTTP answer is a server error, silence is no server, no command is usage (0)."""
    path = str(tmp_path / "http")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(2)

    def answer(reply: bytes):
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(reply)
        conn.close()

    t = threading.Thread(target=answer, args=(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",))
    t.start()
    r = run_xe(path, "vm-list")
    t.join(10)
    assert (r.returncode, r.stderr) == (1, "Server internal error.\n")
    t = threading.Thread(target=answer, args=(b"",))
    t.start()
    r = run_xe(path, "vm-list")
    t.join(10)
    listener.close()
    assert (r.returncode, r.stderr) == (1, "Unable to contact server. Please check server and port settings.\n")
    r = run_xe(path)
    assert r.returncode == 0 and r.stderr.startswith("Usage: xe <cmd>")
    r = run_xe(str(tmp_path / "nothing-here"), "vm-list")
    assert (r.returncode, r.stderr) == (1, "Error: No such file or directory (calling connect )\n")


def test_param_get_as_cli_operations(d):
    """p_get: param-key on a map gives the key's value (a missing key is cli_operations' failwith,
    a Cli_failure xe prints as `Error: ...`), on another field it is ignored; an unknown field is
    CLI_failed_to_find_param, shown as the raw error `Missing parameter` (param-set's get_field_type
    says `Unknown field`); maps and sets render as `k: v; k2: v2` and `a; b` (tags `a, b`)."""
    proxy, session = sdk(d)
    host = proxy.host.get_all(session)["Value"][0]
    uuid = proxy.host.get_uuid(session, host)["Value"]
    proxy.host.set_other_config(session, host, {"a": "1", "b": "x,y"})
    proxy.host.set_tags(session, host, ["t1", "t2"])

    def get(*args):
        return shown(converse(unix(d), stock_request(["host-param-get", f"uuid={uuid}", *args])))

    assert get("param-name=other-config", "param-key=b") == ("x,y\n", "", 0)
    assert get("param-name=other-config") == ("a: 1; b: x,y\n", "", 0)
    assert get("param-name=tags") == ("t1, t2\n", "", 0)
    assert get("param-name=capabilities") == ("; ".join(proxy.host.get_capabilities(session, host)["Value"])
                                              + "\n", "", 0)
    assert get("param-name=name-label", "param-key=whatever") == (
        proxy.host.get_name_label(session, host)["Value"] + "\n", "", 0)
    assert get("param-name=other-config", "param-key=nokey") == ("", "Error: Key nokey not found in map\n", 1)
    assert get("param-name=nofield") == ("", "Error code: Missing parameter\nError parameters: nofield\n", 1)
    out = converse(unix(d), stock_request(["host-param-set", f"uuid={uuid}", "nofield=1"]))
    assert shown(out) == ("", "Error: Unknown field 'nofield'\n", 1)
    # --minimal escapes commas inside values (cli_printer.escape_commas)
    out = converse(unix(d), stock_request(["host-param-get", f"uuid={uuid}", "param-name=other-config",
                                           "param-key=b", "--minimal"]))
    assert shown(out) == ("x\\,y\n", "", 0)


def test_list_columns_as_gen_cmds(d):
    """<class>-list shows cli_operations.gen_cmds' default fields under records.ml's names (derived
    `sr-uuid`, `network-uuid`..., the SR's `host`), in the record's order whatever order params=
    names them in, so --minimal gives the uuid."""
    proxy, session = sdk(d)
    host = proxy.host.get_all(session)["Value"][0]
    hostname = proxy.host.get_name_label(session, host)["Value"]
    pbd = proxy.host.get_PBDs(session, host)["Value"][0]
    sr = proxy.SR.get_uuid(session, proxy.PBD.get_SR(session, pbd)["Value"])["Value"]
    pbd_uuid = proxy.PBD.get_uuid(session, pbd)["Value"]
    host_uuid = proxy.host.get_uuid(session, host)["Value"]

    def listing(*args):
        stdout, stderr, code = shown(converse(unix(d), stock_request(list(args))))
        assert (stderr, code) == ("", 0)
        return stdout

    out = listing("sr-list", f"uuid={sr}")
    assert [ln.split(":")[0] for ln in out.split("\n") if ln] == [
        "uuid ( RO)                ", "          name-label ( RW)", "    name-description ( RW)",
        "                host ( RO)", "                type ( RO)", "        content-type ( RO)"]
    assert f"                host ( RO): {hostname}\n" in out
    out = listing("pbd-list", f"uuid={pbd_uuid}")
    assert out.split("\n")[:3] == [f"uuid ( RO)                  : {pbd_uuid}",
                                   f"             host-uuid ( RO): {host_uuid}",
                                   f"               sr-uuid ( RO): {sr}"]
    assert "currently-attached ( RO): " in out.split("\n")[4]
    out = listing("pif-list")
    assert [ln.split(":")[0].strip() for ln in out.split("\n")[:5]] == [
        "uuid ( RO)", "device ( RO)", "currently-attached ( RO)", "VLAN ( RO)", "network-uuid ( RO)"]
    vm = control_domain_uuid(d)
    out = listing("vm-list", f"uuid={vm}", "params=power-state,name-label,uuid")
    assert [ln.split("(")[0].strip() for ln in out.split("\n") if ln] == ["uuid", "name-label", "power-state"]
    assert listing("vm-list", f"uuid={vm}", "params=name-label,uuid", "--minimal") == vm + "\n"


def test_enum_spellings_as_records_ml(d):
    """VBD type/mode as the datamodel spells them (Disk, RW), VDI type as record_util's (User),
    power-state lowercased; filters take any case."""
    proxy, session = sdk(d)
    host = proxy.host.get_all(session)["Value"][0]
    sr = proxy.PBD.get_SR(session, proxy.host.get_PBDs(session, host)["Value"][0])["Value"]
    sr_uuid = proxy.SR.get_uuid(session, sr)["Value"]

    def run(*args):
        stdout, stderr, code = shown(converse(unix(d), stock_request(list(args))))
        assert (stderr, code) == ("", 0)
        return stdout.strip()

    vdi = run("vdi-create", f"sr-uuid={sr_uuid}", "name-label=enum-disk", "virtual-size=4MiB")
    vm = run("vm-create", "name-label=enum-vm")
    vbd = run("vbd-create", f"vm-uuid={vm}", f"vdi-uuid={vdi}", "device=0")
    assert run("vdi-param-get", f"uuid={vdi}", "param-name=type") == "User"
    assert run("vbd-param-get", f"uuid={vbd}", "param-name=type") == "Disk"
    assert run("vbd-param-get", f"uuid={vbd}", "param-name=mode") == "RW"
    assert run("vm-param-get", f"uuid={vm}", "param-name=power-state") == "halted"
    assert vbd in run("vbd-list", "type=disk", "--minimal").split(",")
    assert vdi in run("vdi-list", "type=user", "--minimal").split(",")
    assert vm in run("vm-list", "power-state=Halted", "--minimal").split(",")
