"""PUT /import_raw_vdi and GET /export_raw_vdi on a real daemon: raw bodies with a length, chunked and
HTTP/1.0 until the close, sparse imports, VHD streams both ways, the task's progress and result, errors
on the task, an oversize body, and the daemon's memory staying flat while disks go through."""
import http.client
import os
import shutil
import socket
import subprocess
import time
import xmlrpc.client

import pytest
import XenAPI

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import MIB, new_vdi, rss_kib
from xapi.sm import vhd

SIZE = 64 * MIB
QEMU_IMG = shutil.which("qemu-img")

d = own_daemon()
api = root_session("d", originator="raw-vdi-tests")
x = xenapi_of("api")


@pytest.fixture(scope="module")
def sid(api):
    return api._session


@pytest.fixture
def vdi(x, sr):
    ref = new_vdi(x, sr, SIZE, "raw")
    yield ref
    try:
        x.VDI.destroy(ref)
    except XenAPI.Failure:
        pass


def vhd_path(d, x, vdi):
    sr_uuid = x.SR.get_uuid(x.VDI.get_SR(vdi))
    return os.path.join(d.data_dir, "sr", sr_uuid, x.VDI.get_location(vdi) + ".vhd")


def data_of(n, seed=0):
    block = os.urandom(MIB)
    return b"".join(bytes([seed]) + block[1:] for _ in range(n // MIB))


def vhd_stream(tmp_path, at, data) -> bytes:
    """The bytes of a 16 MiB dynamic VHD holding `data` at offset `at`."""
    src = str(tmp_path / "in.vhd")
    vhd.create(src, 16 * MIB)
    with vhd.open(src) as v:
        v.write(at, data)
    with open(src, "rb") as f:
        return f.read()


def put(d, query, body, headers=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=timeout)
    try:
        c.request("PUT", "/import_raw_vdi?" + query, body=body, headers=headers or {},
                  encode_chunked=headers is not None and "Transfer-Encoding" in headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(d, query, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=timeout)
    try:
        c.request("GET", "/export_raw_vdi?" + query)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_raw_import_with_length_and_export(d, x, sid, vdi):
    data = data_of(SIZE)
    status, _ = put(d, f"session_id={sid}&vdi={vdi}&format=raw", data, {"Content-Length": str(len(data))})
    assert status == 200
    status, headers, body = get(d, f"session_id={sid}&vdi={x.VDI.get_uuid(vdi)}&format=raw")
    assert status == 200 and int(headers["Content-Length"]) == SIZE
    assert body == data
    path = vhd_path(d, x, vdi)
    assert vhd.check(path) == []
    if QEMU_IMG:
        out = path + ".raw"
        try:
            subprocess.run([QEMU_IMG, "convert", "-f", "vpc", "-O", "raw", path, out], check=True)
            with open(out, "rb") as f:
                assert f.read() == data
        finally:
            os.unlink(out)
    assert x.VDI.get_allowed_operations(vdi) is not None     # released: the VDI can go
    x.VDI.destroy(vdi)


def test_import_answers_first_and_closes_when_done(d, x, sid, vdi):
    """As xapi: the answer (200, Task-Id, Connection: close) comes before the body is read; the
    connection ends once the import is done, with the task settled; the data reads back."""
    data = data_of(12 * MIB, 4) + b"\x05" * 1000         # a short end: not a whole block
    task = x.task.create("import", "")
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
    try:
        c.request("PUT", f"/import_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task}", body=data,
                  headers={"Content-Length": str(len(data))})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Task-Id") == task and r.getheader("Connection") == "close"
        assert r.read() == b""                             # until the close, after the import
        assert x.task.get_status(task) == "success" and x.task.get_progress(task) == 1.0
    finally:
        c.close()
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data and body[len(data):].count(0) == SIZE - len(data)
    x.task.destroy(task)


def ocaml_xe_put(d, target, data, length=True):
    """PUT as OCaml xe's HttpPut (newcli.ml): the head (HTTP/1.0, Content-length when the file is
    regular), then it WAITS for the status line and the headers, then sends the body and closes."""
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    try:
        cl = f"\r\nContent-length: {len(data)}" if length else ""
        s.sendall(f"PUT {target} HTTP/1.0{cl}\r\n\r\n".encode())
        f = s.makefile("rb")
        status = f.readline()                       # a timeout here is the hang xe would have
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if status.split()[1:2] == [b"200"]:
            s.sendall(data)
        return status, headers
    finally:
        s.close()


def wait_task(x, task, timeout=30):
    for _ in range(int(timeout * 20)):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.05)
    return x.task.get_status(task)


@pytest.mark.parametrize("kind", ["spliced", "small", "no-length", "vhd"])
def test_ocaml_xe_style_import(d, x, sid, vdi, tmp_path, kind):
    """OCaml xe reads the answer before it sends the body: raw with a length (taken off the
    connection, spliced), a small raw body (streamed), a pipe (no length: until the close), a VHD."""
    if kind == "vhd":
        data = data_of(3 * MIB, 11)
        body = vhd_stream(tmp_path, 4 * MIB, data)
    else:
        data = body = data_of(10 * MIB if kind != "small" else MIB, 12) + b"\x0d" * 512
    task = x.task.create("xe import", "")
    fmt = "vhd" if kind == "vhd" else "raw"
    status, headers = ocaml_xe_put(d, f"/import_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task}&format={fmt}",
                                   body, length=kind != "no-length")
    assert status.startswith(b"HTTP/1.0 200") and headers.get("task-id") == task, (status, headers)
    assert wait_task(x, task) == "success", x.task.get_error_info(task)
    assert vdi in x.task.get_result(task)
    _, _, out = get(d, f"session_id={sid}&vdi={vdi}")
    at = 4 * MIB if kind == "vhd" else 0
    assert out[at:at + len(data)] == data and out[:at].count(0) == at
    x.task.destroy(task)


JS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


@pytest.mark.skipif(shutil.which("node") is None or not os.path.isdir(os.path.join(JS, "node_modules", "xen-api")),
                    reason="needs node and tests/js/node_modules (make test runs tools/node-deps.sh)")
@pytest.mark.parametrize("tls", [False, True])
def test_xen_orchestra_import_of_unknown_length(d, x, sid, vdi, tmp_path, tls):
    """Xen Orchestra's upload of a raw stream of unknown length (Content-Length 1 PiB, a probe without
    a body, then the data, the connection cut once it is sent): the data ends with the connection and
    the task succeeds with the VDI. Plain: spliced; TLS: streamed."""
    import json
    url = f"https://127.0.0.1:{d.https_port}" if tls else d.url
    data = data_of(10 * MIB, 13) + b"\x0e" * 4096
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    proc = subprocess.run(["node", os.path.join(JS, "xo_put_stream.mjs"), url, "root", d.password,
                           "/import_raw_vdi", json.dumps({"vdi": vdi, "format": "raw"}), str(path)],
                          cwd=JS, capture_output=True, text=True, timeout=90)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["event"] == "done" and "missing length" in proc.stderr, (line, proc.stderr[-2000:])
    assert line["result"] == vdi, (line, proc.stderr[-2000:])      # not a VDI_IO_ERROR XO would let pass
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data and body[len(data):].count(0) == SIZE - len(data)


@pytest.mark.parametrize("tls", [False, True])
def test_unknown_length_import_cut_by_a_reset_fails(d, x, sid, vdi, tls):
    """Xen Orchestra's 1 PiB Content-Length, but the connection is reset (not closed) after the data:
    bytes the client sent may be lost, so the task fails with VDI_IO_ERROR instead of succeeding with
    a disk whose end may be missing. Plain: spliced; TLS: streamed."""
    import ssl
    import struct
    task = x.task.create("reset", "")
    s = socket.create_connection(("127.0.0.1", d.https_port if tls else d.http_port), timeout=30)
    if tls:
        s = ssl._create_unverified_context().wrap_socket(s)
    try:
        s.sendall(f"PUT /import_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task} HTTP/1.1\r\n"
                  f"Host: x\r\nContent-Length: 1125899906842624\r\n\r\n".encode())
        assert s.recv(1000).startswith(b"HTTP/1.1 200")
        s.sendall(data_of(5 * MIB, 4))
        time.sleep(0.3)                      # the data is in; then the reset, not a close
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()                            # no TLS close_notify either
    for _ in range(100):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.1)
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task)[0] == "VDI_IO_ERROR", x.task.get_error_info(task)
    assert d.alive()
    x.VDI.destroy(vdi)                        # not left attached


def test_import_and_export_over_tls(d, x, sid, vdi):
    """On TLS the bytes go through the TLS layer (no splice, no sendfile) and read back the same."""
    import ssl
    data = data_of(12 * MIB, 3)
    c = http.client.HTTPSConnection("127.0.0.1", d.https_port, context=ssl._create_unverified_context(),
                                    timeout=60)
    try:
        c.request("PUT", f"/import_raw_vdi?session_id={sid}&vdi={vdi}", body=data,
                  headers={"Content-Length": str(len(data))})
        r = c.getresponse()
        assert r.status == 200, r.read()
        r.read()
        c.request("GET", f"/export_raw_vdi?session_id={sid}&vdi={vdi}")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and len(body) == SIZE and body[:len(data)] == data
    finally:
        c.close()


def test_import_cut_short(d, x, sid, vdi):
    """The client closes before the end of a body with a length: the task fails, the VDI is
    released, the daemon goes on."""
    task = x.task.create("cut", "")
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
    try:
        s.sendall(f"PUT /import_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task} HTTP/1.1\r\n"
                  f"Host: x\r\nContent-Length: {SIZE}\r\n\r\n".encode() + data_of(9 * MIB, 2))
    finally:
        s.close()
    for _ in range(100):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.1)
    assert x.task.get_status(task) == "failure"
    assert d.alive()
    x.VDI.destroy(vdi)                        # not left attached


def test_chunked_import_with_task(d, x, sid, vdi):
    data = data_of(8 * MIB, 7)
    task = x.task.create("import", "")

    def pieces():
        for i in range(0, len(data), 300_001):
            yield data[i:i + 300_001]
    status, _ = put(d, f"session_id={sid}&vdi={vdi}&task_id={task}", pieces(), {"Transfer-Encoding": "chunked"})
    assert status == 200
    assert x.task.get_status(task) == "success" and x.task.get_progress(task) == 1.0
    assert vdi in x.task.get_result(task)
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data and body[len(data):].count(0) == SIZE - len(data)
    x.task.destroy(task)


def _put10(d, query, data, timeout=60):
    """An HTTP/1.0 PUT whose body ends with the connection; the reply's head and body."""
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=timeout)
    try:
        s.sendall(f"PUT /import_raw_vdi?{query} HTTP/1.0\r\n\r\n".encode())
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass                                # refused before the end: the reply says why
        parts = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            parts.append(chunk)
    finally:
        s.close()
    return b"".join(parts)


def test_http10_import_until_close(d, x, sid, vdi):
    data = data_of(4 * MIB, 3)
    reply = _put10(d, f"session_id={sid}&vdi={vdi}", data, timeout=30)
    assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data


def test_http10_import_until_close_large(d, x, sid, vdi):
    """Larger bodies that end with the connection are taken off it too: a short last block, and a
    body larger than the disk (VDI_IO_ERROR on the task, nothing past the end written)."""
    data = data_of(10 * MIB, 8) + b"\x07" * 1000
    reply = _put10(d, f"session_id={sid}&vdi={vdi}", data)
    assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data and body[len(data):].count(0) == SIZE - len(data)
    task = x.task.create("too much", "")
    try:
        reply = _put10(d, f"session_id={sid}&vdi={vdi}&task_id={task}", b"\x09" * (SIZE + 2 * MIB))
        assert reply.startswith(b"HTTP/1.0 200"), reply[:200]     # answered before the body
    except ConnectionError:
        pass                                    # closed with bytes unread: the reset may beat the reply
    for _ in range(50):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.1)
    assert x.task.get_status(task) == "failure" and x.task.get_error_info(task)[0] == "VDI_IO_ERROR"
    status, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert status == 200 and len(body) == SIZE
    assert d.alive()


def test_sparse_import_stays_small(d, x, sid, vdi):
    data = bytearray(SIZE)
    data[10 * MIB:10 * MIB + 5] = b"hello"
    data[SIZE - 3:] = b"end"
    status, _ = put(d, f"session_id={sid}&vdi={vdi}", bytes(data), {"Content-Length": str(SIZE)})
    assert status == 200
    path = vhd_path(d, x, vdi)
    assert os.path.getsize(path) < 6 * MIB
    assert int(x.VDI.get_physical_utilisation(vdi)) == os.path.getsize(path)
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body == data


def test_vhd_import_and_export(d, x, sid, vdi, tmp_path):
    payload = data_of(3 * MIB, 9)
    raw = vhd_stream(tmp_path, 5 * MIB, payload)
    status, _ = put(d, f"session_id={sid}&vdi={vdi}&format=vhd", raw, {"Content-Length": str(len(raw))})
    assert status == 200
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[5 * MIB:8 * MIB] == payload and body[:5 * MIB].count(0) == 5 * MIB
    status, headers, stream = get(d, f"session_id={sid}&vdi={vdi}&format=vhd")
    assert status == 200, stream
    assert int(headers["Content-Length"]) == len(stream)
    out = str(tmp_path / "out.vhd")
    with open(out, "wb") as f:
        f.write(stream)
    assert vhd.check(out) == []
    with vhd.open(out, readonly=True) as v:
        assert v.virtual_size == SIZE and v.read(5 * MIB, 3 * MIB) == payload
        assert len(v.blocks()) == 2


def test_errors(d, x, sid, vdi):
    task = x.task.create("bad", "")
    status, _ = put(d, f"session_id={sid}&vdi=OpaqueRef:nope&task_id={task}", b"x" * 1024,
                    {"Content-Length": "1024"})
    assert status == 404
    assert x.task.get_status(task) == "failure" and x.task.get_error_info(task)[0] == "HANDLE_INVALID"
    status, _, _ = get(d, f"session_id={sid}&vdi=not-a-uuid")
    assert status == 404
    status, _, _ = get(d, f"session_id={sid}&vdi={vdi}&format=qcow9")
    assert status == 404
    status, _ = put(d, f"vdi={vdi}", b"", {"Content-Length": "0"})
    assert status == 401
    # too much data: the task fails with VDI_IO_ERROR, the daemon lives, the VDI is released
    task = x.task.create("oversize", "")
    big = SIZE + 4 * MIB

    def pieces():
        block = b"\1" * MIB
        for _ in range(big // MIB):
            yield block
    try:
        status, _ = put(d, f"session_id={sid}&vdi={vdi}&task_id={task}", pieces(), {"Transfer-Encoding": "chunked"})
        assert status == 200                  # answered before the body: the outcome is the task's
    except (ConnectionError, http.client.HTTPException):
        pass                                  # the server may close while we still send
    for _ in range(50):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.1)
    assert x.task.get_status(task) == "failure" and x.task.get_error_info(task)[0] == "VDI_IO_ERROR"
    assert d.alive()
    x.VDI.destroy(vdi)                        # not left attached


def test_memory_stays_flat(d, x, sid, vdi):
    data = data_of(SIZE, 5)
    put(d, f"session_id={sid}&vdi={vdi}", data, {"Content-Length": str(SIZE)})
    before = rss_kib(d.pid)
    for _ in range(2):
        status, reply = put(d, f"session_id={sid}&vdi={vdi}", data, {"Content-Length": str(SIZE)})
        assert status == 200, reply
        status, _, body = get(d, f"session_id={sid}&vdi={vdi}")
        assert status == 200 and len(body) == SIZE
    del body
    grown = rss_kib(d.pid) - before
    assert grown < 24 * 1024, f"RSS grew by {grown} KiB"


def export_exactly(d, query):
    """An export read as a client that stops at the Content-Length (the end of the body), not at the
    close: it may follow up while the server is still releasing the VDI."""
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=30) as s:
        s.sendall(f"GET /export_raw_vdi?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers["content-length"]))
        return status, headers, body


def test_follow_ups_right_after_an_export(d, x, sid, vdi):
    """The VDI is released after the export's last byte (as xapi's): a client's next step at once
    (an import, a resize, VDI.destroy) waits for that release instead of failing VDI_IN_USE; the
    export's task succeeds with progress 1.0."""
    data = data_of(8 * MIB, 6)
    assert put(d, f"session_id={sid}&vdi={vdi}", data, {"Content-Length": str(len(data))})[0] == 200
    for step in range(3):
        task = x.task.create("export", "")
        status, _, body = export_exactly(d, f"session_id={sid}&vdi={vdi}&task_id={task}")
        assert status == 200 and body[:len(data)] == data
        if step == 0:                         # an import of the same VDI (RW) at once
            new = data_of(8 * MIB, 7)
            assert put(d, f"session_id={sid}&vdi={vdi}", new, {"Content-Length": str(len(new))})[0] == 200
            data = new
        elif step == 1:
            x.VDI.resize(vdi, str(SIZE + 2 * MIB))
        else:
            x.VDI.destroy(vdi)
        assert wait_task(x, task) == "success" and x.task.get_progress(task) == 1.0
        x.task.destroy(task)
    assert vdi not in x.VDI.get_all()


def test_an_export_in_progress_still_holds_the_vdi(d, x, sid, vdi):
    """Only a datapath being released is waited for: while an export is still sending, VDI.destroy
    fails VDI_IN_USE at once."""
    data = data_of(SIZE, 2)
    put(d, f"session_id={sid}&vdi={vdi}", data, {"Content-Length": str(SIZE)})
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(f"GET /export_raw_vdi?session_id={sid}&vdi={vdi} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")     # attached, sending; we don't read on
        t0 = time.monotonic()
        with pytest.raises(XenAPI.Failure) as e:
            x.VDI.destroy(vdi)
        assert e.value.details[:3] == ["VDI_IN_USE", vdi, "destroy"] and time.monotonic() - t0 < 5
    finally:
        s.close()


def test_export_of_a_vhd_chain_with_snapshots(d, x, sid, vdi):
    """A VDI whose data lies in a chain (snapshots on top of each other): the export reads each
    block from the layer that holds it, parts of a block from two layers included; each snapshot
    exports its own content."""
    base = data_of(SIZE, 1)
    assert put(d, f"session_id={sid}&vdi={vdi}", base, {"Content-Length": str(SIZE)})[0] == 200
    snap1 = x.VDI.snapshot(vdi, {})
    top1 = data_of(5 * MIB, 2) + b"\x02" * (MIB // 2)    # blocks 0-1 whole, block 2 in part
    assert put(d, f"session_id={sid}&vdi={vdi}", top1, {"Content-Length": str(len(top1))})[0] == 200
    snap2 = x.VDI.snapshot(vdi, {})
    top2 = data_of(MIB, 3)                                 # block 0 in part again, on the newest layer
    assert put(d, f"session_id={sid}&vdi={vdi}", top2, {"Content-Length": str(len(top2))})[0] == 200
    want = bytearray(base)
    want[:len(top1)] = top1
    want_snap2 = bytes(want)
    want[:len(top2)] = top2
    for ref, expected in ((vdi, bytes(want)), (snap2, want_snap2), (snap1, base)):
        status, headers, body = export_exactly(d, f"session_id={sid}&vdi={ref}")
        assert status == 200 and int(headers["content-length"]) == SIZE
        assert body == expected, ref
    for snap in (snap2, snap1):
        x.VDI.destroy(snap)


def test_allowed_operations_follow_an_export_holding_the_vdi(d, x, sid, vdi):
    """While an export holds the VDI, destroy (and the other non-live ops) leave its
    allowed_operations, with an event to whoever watches; they come back once it is released."""
    assert "destroy" in x.VDI.get_allowed_operations(vdi)
    token = x.event_from(["VDI"], "", 0.0)["token"]
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(f"GET /export_raw_vdi?session_id={sid}&vdi={vdi} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")     # attached, sending; we don't read on
        held = x.VDI.get_allowed_operations(vdi)
        assert "destroy" not in held and "resize" not in held
        seen = x.event_from(["VDI"], token, 5.0)
        mods = [e for e in seen["events"] if e["ref"] == vdi and e["operation"] == "mod"]
        assert mods and "destroy" not in mods[-1]["snapshot"]["allowed_operations"]
        token = seen["token"]
    finally:
        s.close()
    deadline = time.monotonic() + 10
    while "destroy" not in x.VDI.get_allowed_operations(vdi):
        assert time.monotonic() < deadline, x.VDI.get_allowed_operations(vdi)
        x.event_from(["VDI"], token, 1.0)
    assert "resize" in x.VDI.get_allowed_operations(vdi)
