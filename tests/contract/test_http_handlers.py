"""HTTP handlers on a real daemon: authentication as xapi's (session_id cookie or query, Basic auth, the
Unix socket; 401/403), blobs through GET/PUT /blob streamed both ways, the body framings (Content-Length,
chunked, HTTP/1.0 until the close), keep-alive and pipelining with RPC calls on the same connection."""
import base64
import glob
import hashlib
import http.client
import json
import os
import socket
import ssl
import time
import xmlrpc.client

import pytest

from tests.fixtures import own_daemon


d = own_daemon()


@pytest.fixture(scope="module")
def x(d):
    return xmlrpc.client.ServerProxy(d.url)


@pytest.fixture(scope="module")
def session(d, x):
    return ok(x.session.login_with_password("root", d.password, "2.3", "handler-tests"))


def ok(r):
    assert r["Status"] == "Success", r
    return r["Value"]


@pytest.fixture
def blob(x, session):
    vm = ok(x.VM.get_all(session))[0]
    name = "b-" + os.urandom(4).hex()
    ref = ok(x.VM.create_new_blob(session, vm, name, "application/x-test", False))
    yield ref
    x.blob.destroy(session, ref)


def conn(d, timeout=20):
    return http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=timeout)


def request(d, method, path, body=None, headers=None):
    c = conn(d)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def rpc_body(method, *params):
    return xmlrpc.client.dumps(params, method).encode()


def read_response(f, head=False):
    """(status, headers, body) of one response read from a buffered socket file."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1."), status_line
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if head:
        return status, headers, b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            n = int(f.readline().strip(), 16)
            if n == 0:
                f.readline()
                break
            parts.append(f.read(n))
            f.readline()
        body = b"".join(parts)
    else:
        body = f.read()
    return status, headers, body


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def blob_files(d):
    return os.listdir(os.path.join(d.data_dir, "blobs")) if os.path.isdir(os.path.join(d.data_dir, "blobs")) \
        else []


def put(d, blob, session, data, **headers):
    return request(d, "PUT", f"/blob?ref={blob}&session_id={session}", data, headers)


# -- paths and methods ------------------------------------------------------------------------------------
def test_unknown_path_is_404_and_the_connection_goes_on(d, session):
    c = conn(d)
    c.request("GET", "/no/such/handler")
    r = c.getresponse()
    assert r.status == 404 and r.read()
    for method in ("HEAD", "DELETE", "OPTIONS", "PUT"):     # the handlers answer every method
        c.request(method, "/no/such/handler", body=b"abc" if method == "PUT" else None)
        r = c.getresponse()
        assert r.status == 404 and (r.read() == b"") == (method == "HEAD"), method
    c.request("PATCH", "/no/such/handler")                  # a method the server doesn't know
    r = c.getresponse()
    assert r.status == 405 and r.read()
    c.request("POST", "/", body=rpc_body("session.get_this_host", session, session))
    r = c.getresponse()
    assert r.status == 200 and b"Success" in r.read()
    c.close()


def test_missing_ref_is_400_and_unknown_blob_404(d, session):
    assert request(d, "GET", f"/blob?session_id={session}")[0] == 400
    assert request(d, "GET", f"/blob?ref=OpaqueRef:nope&session_id={session}")[0] == 404
    assert request(d, "GET", f"/blob?uuid=nope&session_id={session}")[0] == 404


# -- authentication --------------------------------------------------------------------------------------
def test_no_session_is_401(d, blob):
    status, headers, _ = request(d, "GET", f"/blob?ref={blob}")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="xapi"'
    assert request(d, "PUT", f"/blob?ref={blob}", b"data")[0] == 401


def test_bad_session_is_401_and_fails_the_task(d, x, session, blob):
    task = ok(x.task.create(session, "upload", ""))
    status, _, _ = request(d, "PUT", f"/blob?ref={blob}&session_id=OpaqueRef:bad&task_id={task}", b"data")
    assert status == 401
    rec = ok(x.task.get_record(session, task))
    assert rec["status"] == "failure" and rec["error_info"] == ["SESSION_AUTHENTICATION_FAILED"]


def test_bad_basic_auth_is_401(d, blob):
    for creds in ("root:wrong-password", "nobody-such:x"):
        auth = "Basic " + base64.b64encode(creds.encode()).decode()
        status, headers, _ = request(d, "GET", f"/blob?ref={blob}", headers={"Authorization": auth})
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="xapi"'


def test_basic_auth_with_roots_password(d, x, session, blob):
    auth = {"Authorization": "Basic " + base64.b64encode(f"root:{d.password}".encode()).decode()}
    assert request(d, "PUT", f"/blob?ref={blob}", b"via basic", auth)[0] == 200
    status, headers, body = request(d, "GET", f"/blob?ref={blob}", headers=auth)
    assert (status, body, headers["Content-Type"]) == (200, b"via basic", "application/x-test")


def test_session_cookie(d, session, blob):
    cookie = {"Cookie": f"other=1; session_id={session}"}
    assert request(d, "PUT", f"/blob?ref={blob}", b"via cookie", cookie)[0] == 200
    assert request(d, "GET", f"/blob?ref={blob}", headers=cookie)[2] == b"via cookie"


def test_public_blob_needs_no_session_to_read(d, x, session):
    pool = ok(x.pool.get_all(session))[0]
    ref = ok(x.pool.create_new_blob(session, pool, "public-" + os.urandom(3).hex(), "", True))
    try:
        assert put(d, ref, session, b"for all")[0] == 200
        status, headers, body = request(d, "GET", f"/blob?ref={ref}")
        assert (status, body, headers["Content-Type"]) == (200, b"for all", "application/octet-stream")
        assert request(d, "PUT", f"/blob?ref={ref}", b"not without a session")[0] == 401
    finally:
        x.blob.destroy(session, ref)


def test_unix_socket_callers_are_root(d, blob):
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket_path)
    s.sendall(f"PUT /blob?ref={blob} HTTP/1.1\r\nHost: local\r\nContent-Length: 5\r\n\r\nlocal".encode()
              + f"GET /blob?ref={blob} HTTP/1.1\r\nHost: local\r\n\r\n".encode())
    f = s.makefile("rb")
    assert read_response(f)[0] == 200
    assert read_response(f)[::2] == (200, b"local")
    s.close()


def test_403_for_a_user_without_the_permission(d, x, session, blob):
    """A read-only subject (an existing system account with a password in the local password file and
    external auth "PAM" on) may GET blobs but not PUT them; the named task fails as xapi's does."""
    from xapi.auth.passwords import PasswordFile
    import pwd
    user = next((u for u in ("daemon", "bin", "sys", "nobody") if _usable(pwd, u)), None)
    if user is None:
        pytest.skip("no usable system account for a read-only subject")
    password = "ro-" + os.urandom(6).hex()
    PasswordFile(d.data_dir).set(user, password)
    pool = ok(x.pool.get_all(session))[0]
    ok(x.pool.enable_external_auth(session, pool, {}, "xapi", "PAM"))
    subject = ok(x.subject.create(session, {"subject_identifier": f"u{pwd.getpwnam(user).pw_uid}",
                                            "other_config": {}}))
    try:
        read_only = [r for r in ok(x.role.get_by_name_label(session, "read-only"))][0]
        ok(x.subject.add_to_roles(session, subject, read_only))
        ro = ok(x.session.login_with_password(user, password, "2.3", "ro"))
        task = ok(x.task.create(session, "upload", ""))
        assert put(d, blob, session, b"root's")[0] == 200
        status, _, _ = request(d, "PUT", f"/blob?ref={blob}&session_id={ro}&task_id={task}", b"ro's")
        assert status == 403
        rec = ok(x.task.get_record(session, task))
        assert rec["status"] == "failure" and rec["error_info"][:2] == ["RBAC_PERMISSION_DENIED", "http/put_blob"]
        assert request(d, "GET", f"/blob?ref={blob}&session_id={ro}")[::2] == (200, b"root's")
        auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        assert request(d, "PUT", f"/blob?ref={blob}", b"ro's", auth)[0] == 403
    finally:
        x.subject.destroy(session, subject)
        x.pool.disable_external_auth(session, pool, {})


def _usable(pwd, user):
    try:
        p = pwd.getpwnam(user)
    except KeyError:
        return False
    return bool(p.pw_passwd) and p.pw_passwd[0] not in "*!"


# -- bodies ----------------------------------------------------------------------------------------------
def test_50_mib_blob_streams_both_ways(d, x, session, blob):
    size = 50 << 20
    block = hashlib.sha256(b"seed").digest() * 32768          # 1 MiB
    put(d, blob, session, b"warm-up")
    request(d, "GET", f"/blob?ref={blob}&session_id={session}")
    rss0 = vm_rss_kib(d.pid)

    def body():
        for _ in range(size // len(block)):
            yield block
    c = conn(d, timeout=60)
    c.request("PUT", f"/blob?ref={blob}&session_id={session}", body=body(),
              headers={"Content-Length": str(size)})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Access-Control-Allow-Origin") == "*"
    r.read()
    rss1 = vm_rss_kib(d.pid)
    assert int(ok(x.blob.get_size(session, blob))) == size

    c.request("GET", f"/blob?ref={blob}&session_id={session}")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) == size
    digest, got = hashlib.sha256(), 0
    while chunk := r.read(1 << 20):
        digest.update(chunk)
        got += len(chunk)
    rss2 = vm_rss_kib(d.pid)
    c.close()
    assert got == size
    assert digest.digest() == hashlib.sha256(block * (size // len(block))).digest()
    # the daemon never held the blob: its memory grew by far less than the blob's size
    assert rss1 - rss0 < 20 << 10, (rss0, rss1)
    assert rss2 - rss0 < 20 << 10, (rss0, rss2)


def test_chunked_put(d, session, blob):
    def body():
        yield b"chunk one, "
        yield b""                                             # skipped by http.client
        yield b"x" * 70000
        yield b", the end"
    c = conn(d)
    c.request("PUT", f"/blob?ref={blob}&session_id={session}", body=body(), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 200
    r.read()
    c.request("GET", f"/blob?ref={blob}&session_id={session}")
    assert c.getresponse().read() == b"chunk one, " + b"x" * 70000 + b", the end"
    c.close()


def test_http10_put_without_length_ends_at_close(d, session, blob):
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=20)
    s.sendall(f"PUT /blob?ref={blob}&session_id={session} HTTP/1.0\r\nHost: x\r\n\r\nfirst bytes, ".encode())
    time.sleep(0.05)
    s.sendall(b"more bytes" * 10000)
    s.shutdown(socket.SHUT_WR)
    status, headers, _ = read_response(s.makefile("rb"))
    s.close()
    assert status == 200
    got = request(d, "GET", f"/blob?ref={blob}&session_id={session}")[2]
    assert got == b"first bytes, " + b"more bytes" * 10000


def test_client_gone_mid_upload_leaves_no_temp_file(d, x, session, blob):
    assert put(d, blob, session, b"old contents")[0] == 200
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=20)
    s.sendall(f"PUT /blob?ref={blob}&session_id={session} HTTP/1.1\r\nHost: x\r\n"
              f"Content-Length: {10 << 20}\r\n\r\n".encode())
    s.sendall(b"z" * (2 << 20))
    deadline = time.monotonic() + 10
    while not any(n.endswith(".tmp") for n in blob_files(d)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(n.endswith(".tmp") for n in blob_files(d))    # the upload was under way
    s.close()
    deadline = time.monotonic() + 10
    while any(n.endswith(".tmp") for n in blob_files(d)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(n.endswith(".tmp") for n in blob_files(d))
    assert d.alive()
    assert request(d, "GET", f"/blob?ref={blob}&session_id={session}")[2] == b"old contents"


def test_put_settles_the_named_task(d, x, session, blob):
    task = ok(x.task.create(session, "upload", ""))
    assert request(d, "PUT", f"/blob?ref={blob}&session_id={session}&task_id={task}", b"tracked")[0] == 200
    rec = ok(x.task.get_record(session, task))
    assert rec["status"] == "success" and float(rec["progress"]) == 1.0


def test_over_tls(d, session, blob):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", d.https_port, timeout=20, context=ctx)
    c.request("PUT", f"/blob?ref={blob}&session_id={session}", body=b"s" * 300000)
    assert c.getresponse().read() == b""
    c.request("GET", f"/blob?ref={blob}&session_id={session}")
    assert c.getresponse().read() == b"s" * 300000
    c.close()


# -- connections -----------------------------------------------------------------------------------------
def test_keep_alive_rpc_after_a_get(d, session, blob):
    put(d, blob, session, b"kept")
    c = conn(d)
    c.request("GET", f"/blob?ref={blob}&session_id={session}")
    r = c.getresponse()
    assert r.read() == b"kept" and not r.will_close
    sock = c.sock
    for _ in range(3):
        c.request("POST", "/jsonrpc", body=json.dumps({"jsonrpc": "2.0", "method": "blob.get_size",
                                                        "params": [session, blob], "id": 7}).encode(),
                  headers={"Content-Type": "application/json"})
        assert json.loads(c.getresponse().read())["result"] == 4
    assert c.sock is sock                                   # one connection all along
    c.close()


def test_head(d, session, blob):
    put(d, blob, session, b"twelve bytes")
    c = conn(d)
    c.request("HEAD", f"/blob?ref={blob}&session_id={session}")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "12" and r.read() == b""
    c.request("HEAD", "/nothing/here")
    r = c.getresponse()
    assert r.status == 404 and r.read() == b""
    c.request("GET", f"/blob?ref={blob}&session_id={session}")    # the connection is still in step
    assert c.getresponse().read() == b"twelve bytes"
    c.close()


def test_pipelined_rpc_after_handlers(d, session, blob):
    put(d, blob, session, b"pipelined")
    call = rpc_body("blob.get_size", session, blob)
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=20)
    s.sendall(f"GET /blob?ref={blob}&session_id={session} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
              + f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(call)}\r\n\r\n".encode() + call
              + f"PUT /blob?ref={blob}&session_id={session} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nnew"
              .encode()
              + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
              + f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(call)}\r\n\r\n".encode() + call)
    f = s.makefile("rb")
    assert read_response(f)[::2] == (200, b"pipelined")
    status, _, body = read_response(f)
    assert status == 200 and xmlrpc.client.loads(body)[0][0]["Value"] == "9"
    assert read_response(f)[0] == 200
    assert read_response(f)[0] == 404
    status, _, body = read_response(f)
    assert xmlrpc.client.loads(body)[0][0]["Value"] == "3"
    s.close()


def test_connect_to_an_unknown_path_is_404_and_closes(d):
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=20)
    s.sendall(b"CONNECT /console?ref=nothing HTTP/1.0\r\n\r\nRFB bytes")
    f = s.makefile("rb")
    assert read_response(f)[0] == 404
    assert f.read() == b""
    s.close()


# -- blob messages ---------------------------------------------------------------------------------------
def test_create_new_blob_on_each_class_and_destroy(d, x, session):
    for cls in ("VM", "host", "pool", "SR", "network"):
        api = getattr(x, cls)
        obj = ok(api.get_all(session))[0]
        ref = ok(api.create_new_blob(session, obj, "notes", "text/plain", False))
        try:
            assert ok(api.get_blobs(session, obj))["notes"] == ref
            rec = ok(x.blob.get_record(session, ref))
            assert (rec["mime_type"], rec["public"], rec["size"], rec["name_label"]) == \
                ("text/plain", False, "0", "")
            failure = api.create_new_blob(session, obj, "notes", "", False)
            assert failure["ErrorDescription"][0] == "MAP_DUPLICATE_KEY"
            assert put(d, ref, session, b"x")[0] == 200
            assert rec["uuid"] in blob_files(d)
        finally:
            ok(x.blob.destroy(session, ref))
        assert "notes" not in ok(api.get_blobs(session, obj))
        assert rec["uuid"] not in blob_files(d)
    r = x.VM.create_new_blob(session, "OpaqueRef:nope", "n", "", False)
    assert r["ErrorDescription"][:2] == ["HANDLE_INVALID", "VM"]
    assert not glob.glob(os.path.join(d.data_dir, "blobs", "*.tmp"))
