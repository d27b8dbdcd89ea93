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

from tests import daemon as _daemon
from xapi.sm import vhd

MiB = 1 << 20
SIZE = 64 * MiB
QEMU_IMG = shutil.which("qemu-img")


@pytest.fixture(scope="module")
def d():
    daemon = _daemon.start()
    yield daemon
    _daemon.cleanup(daemon)


@pytest.fixture(scope="module")
def api(d):
    s = XenAPI.Session(d.url)
    s.xenapi.login_with_password("root", d.password, "2.3", "raw-vdi-tests")
    yield s
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def x(api):
    return api.xenapi


@pytest.fixture(scope="module")
def sid(api):
    return api._session


@pytest.fixture(scope="module")
def sr(x):
    return x.pool.get_default_SR(x.pool.get_all()[0])


@pytest.fixture
def vdi(x, sr):
    ref = x.VDI.create({"name_label": "raw", "name_description": "", "SR": sr, "virtual_size": str(SIZE),
                        "type": "user", "sharable": False, "read_only": False, "other_config": {}})
    yield ref
    try:
        x.VDI.destroy(ref)
    except XenAPI.Failure:
        pass


def vhd_path(d, x, vdi):
    sr_uuid = x.SR.get_uuid(x.VDI.get_SR(vdi))
    return os.path.join(d.data_dir, "sr", sr_uuid, x.VDI.get_location(vdi) + ".vhd")


def data_of(n, seed=0):
    block = os.urandom(MiB)
    return b"".join(bytes([seed]) + block[1:] for _ in range(n // MiB))


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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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


def test_import_then_more_requests_on_the_connection(d, x, sid, vdi):
    """A body with a length is moved kernel-side; the connection then goes on: the next requests on
    it (a pipelined one among them) are answered, and what was imported reads back."""
    data = data_of(12 * MiB, 4) + b"\x05" * 1000         # a short end: not a whole block
    task = x.task.create("import", "")
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
    try:
        c.request("PUT", f"/import_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task}", body=data,
                  headers={"Content-Length": str(len(data))})
        r = c.getresponse()
        assert r.status == 200, r.read()
        r.read()
        assert x.task.get_status(task) == "success" and x.task.get_progress(task) == 1.0
        c.request("GET", f"/export_raw_vdi?session_id={sid}&vdi={vdi}")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and body[:len(data)] == data and body[len(data):].count(0) == SIZE - len(data)
    finally:
        c.close()
    # a PUT and a GET sent together: the GET is answered after the PUT, with its data
    more = data_of(6 * MiB, 6)
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=60)
    try:
        s.sendall(f"PUT /import_raw_vdi?session_id={sid}&vdi={vdi} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {len(more)}\r\n\r\n".encode() + more +
                  f"GET /export_raw_vdi?session_id={sid}&vdi={vdi} HTTP/1.1\r\nHost: x\r\n"
                  f"Connection: close\r\n\r\n".encode())
        parts = []
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            parts.append(chunk)
    finally:
        s.close()
    reply = b"".join(parts)
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), first
    head, _, body = rest[rest.index(b"HTTP/1.1"):].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == SIZE
    assert body[:len(more)] == more and body[len(more):len(data)] == data[len(more):]


def test_import_and_export_over_tls(d, x, sid, vdi):
    """On TLS the bytes go through the TLS layer (no splice, no sendfile) and read back the same."""
    import ssl
    data = data_of(12 * MiB, 3)
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
                  f"Host: x\r\nContent-Length: {SIZE}\r\n\r\n".encode() + data_of(9 * MiB, 2))
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
    data = data_of(8 * MiB, 7)
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


def test_http10_import_until_close(d, x, sid, vdi):
    data = data_of(4 * MiB, 3)
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
    try:
        s.sendall(f"PUT /import_raw_vdi?session_id={sid}&vdi={vdi} HTTP/1.0\r\n\r\n".encode() + data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        s.close()
    assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data


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


def test_http10_import_until_close_large(d, x, sid, vdi):
    """Larger bodies that end with the connection are taken off it too: a short last block, and a
    body larger than the disk (VDI_IO_ERROR on the task, nothing past the end written)."""
    data = data_of(10 * MiB, 8) + b"\x07" * 1000
    reply = _put10(d, f"session_id={sid}&vdi={vdi}", data)
    assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[:len(data)] == data and body[len(data):].count(0) == SIZE - len(data)
    task = x.task.create("too much", "")
    try:
        reply = _put10(d, f"session_id={sid}&vdi={vdi}&task_id={task}", b"\x09" * (SIZE + 2 * MiB))
        assert reply.startswith(b"HTTP/1.0 500"), reply[:200]
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
    data[10 * MiB:10 * MiB + 5] = b"hello"
    data[SIZE - 3:] = b"end"
    status, _ = put(d, f"session_id={sid}&vdi={vdi}", bytes(data), {"Content-Length": str(SIZE)})
    assert status == 200
    path = vhd_path(d, x, vdi)
    assert os.path.getsize(path) < 6 * MiB
    assert int(x.VDI.get_physical_utilisation(vdi)) == os.path.getsize(path)
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body == data


def test_vhd_import_and_export(d, x, sid, vdi, tmp_path):
    src = str(tmp_path / "in.vhd")
    vhd.create(src, 16 * MiB)
    payload = data_of(3 * MiB, 9)
    with vhd.open(src) as v:
        v.write(5 * MiB, payload)
    with open(src, "rb") as f:
        raw = f.read()
    status, _ = put(d, f"session_id={sid}&vdi={vdi}&format=vhd", raw, {"Content-Length": str(len(raw))})
    assert status == 200
    _, _, body = get(d, f"session_id={sid}&vdi={vdi}")
    assert body[5 * MiB:8 * MiB] == payload and body[:5 * MiB].count(0) == 5 * MiB
    status, headers, stream = get(d, f"session_id={sid}&vdi={vdi}&format=vhd")
    assert status == 200, stream
    assert int(headers["Content-Length"]) == len(stream)
    out = str(tmp_path / "out.vhd")
    with open(out, "wb") as f:
        f.write(stream)
    assert vhd.check(out) == []
    with vhd.open(out, readonly=True) as v:
        assert v.virtual_size == SIZE and v.read(5 * MiB, 3 * MiB) == payload
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
    big = SIZE + 4 * MiB

    def pieces():
        block = b"\1" * MiB
        for _ in range(big // MiB):
            yield block
    try:
        status, _ = put(d, f"session_id={sid}&vdi={vdi}&task_id={task}", pieces(), {"Transfer-Encoding": "chunked"})
        assert status == 500
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
