"""HTTP and envelope behaviour on the wire: content types, JSON-RPC v1/v2, keep-alive and pipelining,
and bad input of every kind answered without losing the connection or the daemon."""
import json
import os
import socket
import stat
import time
import xmlrpc.client

import pytest

# A call that fails without involving passwords (failed logins are throttled per address).
CALL = xmlrpc.client.dumps(("OpaqueRef:no-such-session",), "session.logout").encode()


def http(d, body: bytes, path="/", method="POST", headers=None, sock=None):
    """One request on `sock` (or a new connection); returns (status, headers, body, sock)."""
    s = sock or socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    return read_response(s) + (s,)


_leftover: dict = {}


def read_response(s):
    buf = _leftover.pop(s, b"")
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in body")
        rest += chunk
    if rest[n:]:
        _leftover[s] = rest[n:]
    return status, headers, rest[:n]


def login_json(d, version=2):
    req = {"method": "session.login_with_password", "params": ["root", d.password], "id": 7}
    if version == 2:
        req["jsonrpc"] = "2.0"
    status, headers, body, s = http(d, json.dumps(req).encode(), "/jsonrpc")
    s.close()
    return status, headers, json.loads(body)


def test_content_types_exact(xapi_daemon):
    status, headers, body, s = http(xapi_daemon, CALL, "/RPC2")
    assert status == 200 and headers["content-type"] == "text/xml"
    assert b"<fault>" not in body and b"ErrorDescription" in body
    s.close()
    status, headers, reply = login_json(xapi_daemon)
    assert status == 200 and headers["content-type"] == "application/json"


def test_jsonrpc_v1_and_v2(xapi_daemon):
    _, _, r2 = login_json(xapi_daemon, 2)
    assert r2["jsonrpc"] == "2.0" and r2["id"] == 7 and r2["result"].startswith("OpaqueRef:")
    _, _, r1 = login_json(xapi_daemon, 1)
    assert r1["error"] is None and r1["id"] == 7 and r1["result"].startswith("OpaqueRef:")
    sid = r2["result"]
    req = {"jsonrpc": "2.0", "method": "VM.get_record", "params": [sid, "OpaqueRef:x"], "id": "a"}
    _, _, body, s = http(xapi_daemon, json.dumps(req).encode(), "/jsonrpc")
    assert json.loads(body) == {"jsonrpc": "2.0", "id": "a",
                                "error": {"code": 1, "message": "HANDLE_INVALID", "data": ["VM", "OpaqueRef:x"]}}
    del req["jsonrpc"]
    _, _, body, _ = http(xapi_daemon, json.dumps(req).encode(), "/jsonrpc", sock=s)
    assert json.loads(body) == {"result": None, "error": ["HANDLE_INVALID", "VM", "OpaqueRef:x"], "id": "a"}
    # ints are JSON integers, not strings as over XML-RPC
    (host,) = call_json(xapi_daemon, s, "host.get_all", [sid])
    assert call_json(xapi_daemon, s, "host.get_API_version_major", [sid, host]) == 2
    s.close()


def call_json(d, s, method, params):
    _, _, body, _ = http(d, json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode(),
                         "/jsonrpc", sock=s)
    return json.loads(body)["result"]


def test_any_post_path_is_xmlrpc(xapi_daemon):
    for path in ("/", "/RPC2", "/xmlrpc", "/some/other/path"):
        status, headers, body, s = http(xapi_daemon, CALL, path)
        s.close()
        assert status == 200 and headers["content-type"] == "text/xml"
        assert xmlrpc.client.loads(body)[0][0]["ErrorDescription"][0] == "SESSION_INVALID"


@pytest.mark.parametrize("body", [
    b"", b"<", b"not xml at all", b"<methodCall><methodName>x</methodName><params>",
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
    b"<methodCall><methodName>&lol2;</methodName></methodCall>",
    b"<methodCall><methodName>\xff\xfe</methodName><params/></methodCall>",
    b"<methodCall><methodName>a</methodName><params><param><value><int>12x</int></value></param></params></methodCall>",
    b"<methodCall><methodName>a</methodName><params>" + b"<param><value><array><data>" * 1000 + b"</params></methodCall>",
    b"<methodResponse><params><param><value>x</value></param></params></methodResponse>",
])
def test_malformed_xml_gets_an_envelope_and_the_connection_lives(xapi_daemon, body):
    status, headers, reply, s = http(xapi_daemon, body)
    assert status == 500 and headers["content-type"] == "text/xml"
    (envelope,), _ = xmlrpc.client.loads(reply)
    assert envelope["Status"] == "Failure" and envelope["ErrorDescription"][0] == "INTERNAL_ERROR"
    # same connection, next request works
    status, _, reply, _ = http(xapi_daemon, CALL, sock=s)
    assert status == 200 and b"SESSION_INVALID" in reply
    s.close()


def test_deep_nesting_fails_fast(xapi_daemon):
    body = (b"<methodCall><methodName>a</methodName><params><param>" + b"<value><array><data>" * 100_000
            + b"</data></array></value>" * 100_000 + b"</param></params></methodCall>")
    t0 = time.monotonic()
    status, _, reply, s = http(xapi_daemon, body)
    assert status == 500 and time.monotonic() - t0 < 2
    s.close()


@pytest.mark.parametrize("body", [b"", b"{", b"[1,2]", b'{"method": 5, "params": [], "id": 1}',
                                  b'{"jsonrpc": "2.0", "method": "x"}', b"\xff\xfe"])
def test_malformed_json(xapi_daemon, body):
    status, headers, reply, s = http(xapi_daemon, body, "/jsonrpc")
    assert status == 500 and headers["content-type"] == "application/json"
    assert json.loads(reply)["error"]["message"] == "INTERNAL_ERROR"
    status, _, _, _ = http(xapi_daemon, CALL, sock=s)
    assert status == 200
    s.close()


def test_wrong_types(xapi_daemon):
    sid = xmlrpc.client.ServerProxy(xapi_daemon.url).session.login_with_password("root", xapi_daemon.password)["Value"]
    r = xmlrpc.client.ServerProxy(xapi_daemon.url).VM.get_record(sid, 42)
    assert r["ErrorDescription"] == ["FIELD_TYPE_ERROR", "self"]
    r = xmlrpc.client.ServerProxy(xapi_daemon.url).session.login_with_password(["root"], 1)
    assert r["ErrorDescription"] == ["FIELD_TYPE_ERROR", "uname"]


def test_pipelined_requests_answer_in_order(xapi_daemon):
    sid = xmlrpc.client.ServerProxy(xapi_daemon.url).session.login_with_password("root", xapi_daemon.password)["Value"]
    calls = [xmlrpc.client.dumps(("root", xapi_daemon.password), "session.login_with_password"),  # async action
             xmlrpc.client.dumps((sid,), "host.get_all"),
             xmlrpc.client.dumps((sid, "OpaqueRef:x"), "VM.get_record"),
             xmlrpc.client.dumps((sid,), "pool.get_all")]
    s = socket.create_connection(("127.0.0.1", xapi_daemon.http_port), timeout=10)
    s.sendall(b"".join(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(c)}\r\n\r\n{c}".encode() for c in calls))
    replies = []
    for _ in calls:
        status, _, body = read_response(s)
        replies.append(xmlrpc.client.loads(body)[0][0])
    s.close()
    assert replies[0]["Value"].startswith("OpaqueRef:")
    assert len(replies[1]["Value"]) == 1
    assert replies[2]["ErrorDescription"][0] == "HANDLE_INVALID"
    assert len(replies[3]["Value"]) == 1


def test_huge_body_refused_without_reading_it(xapi_daemon):
    s = socket.create_connection(("127.0.0.1", xapi_daemon.http_port), timeout=10)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n<methodCall>")
    status, headers, _ = read_response(s)
    assert status == 413 and headers.get("connection") == "close"
    s.close()
    assert xapi_daemon.alive()


def test_slow_client_is_timed_out(xapi_daemon):
    # the shared daemon runs with --request-timeout 2
    s = socket.create_connection(("127.0.0.1", xapi_daemon.http_port), timeout=10)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<meth")
    t0 = time.monotonic()
    status, _, _ = read_response(s)
    assert status == 408 and 1.5 < time.monotonic() - t0 < 5
    s.close()


def test_garbage_http(xapi_daemon):
    s = socket.create_connection(("127.0.0.1", xapi_daemon.http_port), timeout=10)
    s.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
    status, _, _ = read_response(s)
    assert status == 400
    s.close()
    assert xapi_daemon.alive()


def test_clean_stop_and_generated_password(fresh_daemon):
    d = fresh_daemon(password=None)
    path = os.path.join(d.data_dir, "root-password")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    password = open(path).read().strip()
    assert password and password in d.log()
    r = xmlrpc.client.ServerProxy(d.url).session.login_with_password("root", password)
    assert r["Status"] == "Success"
    assert d.pid == d.proc.pid
    assert d.stop() == 0
    assert not os.path.exists(os.path.join(d.data_dir, "xapi.pid"))
    assert not os.path.exists(d.socket_path)
    # the identity and the certificate survive a restart
    d2 = fresh_daemon(password=None, data_dir=d.data_dir)
    r = xmlrpc.client.ServerProxy(d2.url).session.login_with_password("root", password)
    assert r["Status"] == "Success"
