"""TLS and the audit log against a real daemon: TLS 1.2+ only, host.get_server_certificate is what
the listener presents, host.reset_server_certificate changes it in the running daemon, and the audit
log holds one masked line per write (logins included) and none for reads."""
import hashlib
import json
import os
import re
import socket
import ssl
import threading
import time
import warnings
import xmlrpc.client

import pytest

from tests.fixtures import own_daemon

LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z user=("(?:[^"\\]|\\.)*") from=(\S+) call=(\S+) '
                  r'args=(\{.*\}) result=(.+)$')


d = own_daemon()


def client_context(version=None) -> ssl.SSLContext:
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # TLSv1_1 is deprecated: that's the point
            c.minimum_version = c.maximum_version = version
        c.set_ciphers("DEFAULT:@SECLEVEL=0")                       # let this client offer old versions
    return c


def handshake(port, version=None) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with client_context(version).wrap_socket(s) as t:
            return t.version()


def presented_der(port) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def api(d):
    x = xmlrpc.client.ServerProxy(d.url)
    r = x.session.login_with_password("root", d.password, "1.0", "tls-audit-test")
    assert r["Status"] == "Success", r
    return x, r["Value"]


def value(r):
    assert r["Status"] == "Success", r
    return r["Value"]


def audit_lines(d, wait_for=None, timeout=5.0, result=None):
    """The audit log's lines, parsed; waits until one has call `wait_for` (and `result`, if given): lines
    are written by a thread."""
    path = os.path.join(d.data_dir, "audit.log")
    deadline = time.monotonic() + timeout
    while True:
        text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
        lines = []
        for raw in text.splitlines():
            m = LINE.match(raw)
            assert m, raw
            user, peer, call, args, result = m.groups()
            lines.append(dict(user=json.loads(user), peer=peer, call=call, args=json.loads(args), result=result))
        if wait_for is None or time.monotonic() > deadline or any(
                l["call"] == wait_for and result in (None, l["result"]) for l in lines):
            return lines, text
        time.sleep(0.05)


# -- TLS versions ----------------------------------------------------------------------------------
def _old_tls_server():
    """A permissive local TLS server: proves this client really can speak TLS 1.1 (so the daemon's
    refusal below is the daemon's, not the client library's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def test_tls_1_1_refused_1_2_and_1_3_accepted(d):
    ctx = _old_tls_server()
    ctx.load_cert_chain(os.path.join(d.data_dir, "xapi-ssl.pem"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one():
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass
    t = threading.Thread(target=serve_one, daemon=True)
    t.start()
    try:
        control = handshake(port, ssl.TLSVersion.TLSv1_1)
    except ssl.SSLError as e:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 at all: {e}")
    finally:
        t.join(5)
        listener.close()
    assert control == "TLSv1.1"

    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(d.https_port, ssl.TLSVersion.TLSv1_1)
    assert handshake(d.https_port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(d.https_port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert handshake(d.https_port) == "TLSv1.3"
    assert d.alive()


# -- the server certificate ------------------------------------------------------------------------
def test_get_server_certificate_is_what_the_listener_presents(d):
    x, s = api(d)
    host = value(x.host.get_all(s))[0]
    pem = value(x.host.get_server_certificate(s, host))
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" not in pem
    der = ssl.PEM_cert_to_DER_cert(pem)
    assert der == presented_der(d.https_port)
    # the database describes it: one Certificate of type host, listed in host.certificates
    certs = value(x.host.get_certificates(s, host))
    assert len(certs) == 1
    rec = value(x.Certificate.get_record(s, certs[0]))
    assert rec["type"] == "host" and rec["host"] == host and rec["name"] == ""
    assert rec["fingerprint"] == fingerprint(der)
    assert str(rec["not_before"]) < str(rec["not_after"])
    assert x.host.get_server_certificate(s, "OpaqueRef:nope")["ErrorDescription"] == \
        ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_reset_server_certificate_without_restart(d):
    x, s = api(d)
    host = value(x.host.get_all(s))[0]
    pid = d.pid
    old_der = presented_der(d.https_port)

    # a connection opened before the reset keeps working with the certificate it was given
    https = xmlrpc.client.ServerProxy(d.https_url, context=client_context())
    assert value(https.host.get_all(s)) == [host]
    conn = https("transport")._connection[1]
    assert conn.sock.getpeercert(binary_form=True) == old_der

    assert value(x.host.reset_server_certificate(s, host)) == ""

    new_der = presented_der(d.https_port)            # a new TLS connection
    assert new_der != old_der
    assert ssl.PEM_cert_to_DER_cert(value(x.host.get_server_certificate(s, host))) == new_der
    with open(os.path.join(d.data_dir, "xapi-ssl.pem"), "rb") as f:
        on_disk = f.read()
    assert b"PRIVATE KEY" in on_disk and ssl.PEM_cert_to_DER_cert(
        on_disk[on_disk.index(b"-----BEGIN CERTIFICATE-----"):].decode()) == new_der
    assert os.stat(os.path.join(d.data_dir, "xapi-ssl.pem")).st_mode & 0o077 == 0
    assert not [n for n in os.listdir(d.data_dir) if n.endswith(".tmp")]

    assert value(https.host.get_all(s)) == [host]    # same kept-alive connection, still served
    assert https("transport")._connection[1].sock.getpeercert(binary_form=True) == old_der

    # the database row follows: still one, with the new fingerprint
    certs = value(x.host.get_certificates(s, host))
    assert len(certs) == 1
    assert value(x.Certificate.get_fingerprint(s, certs[0])) == fingerprint(new_der)
    assert value(x.Certificate.get_all(s)) == certs

    assert handshake(d.https_port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert d.alive() and d.pid == pid == d.proc.pid
    https("close")()


# -- audit log -------------------------------------------------------------------------------------
def test_audit_log(d):
    x = xmlrpc.client.ServerProxy(d.url)
    bad = x.session.login_with_password("root", "not-the-password-42", "1.0", "audit-test")
    assert bad["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"
    s = value(x.session.login_with_password("root", d.password, "1.0", "audit-test"))
    vm = value(x.VM.get_all(s))[0]

    # reads: no lines
    value(x.VM.get_record(s, vm))
    value(x.VM.get_name_label(s, vm))
    value(x.VM.get_all_records_where(s, "true"))
    value(x.session.get_this_host(s, s))
    assert value(getattr(x.event, "from")(s, ["VM"], "", 0.1))["token"]
    value(x.host.get_server_certificate(s, value(x.host.get_all(s))[0]))

    # writes and failures: one line each
    value(x.VM.set_name_label(s, vm, "audited name"))
    failed = x.VM.set_name_label(s, "OpaqueRef:no-such-vm", "x")
    assert failed["ErrorDescription"][0] == "HANDLE_INVALID"
    value(x.session.logout(s))

    lines, text = audit_lines(d, wait_for="session.logout")
    # the lines after this test's own login (the audit thread writes them in order, but maybe late:
    # counting lines taken earlier could split them)
    mine = [i for i, l in enumerate(lines) if l["call"] == "session.login_with_password"
            and l["result"] == "OK" and l["args"].get("originator") == "audit-test"]
    assert mine, text
    before, new = lines[:mine[-1] + 1], lines[mine[-1] + 1:]
    assert [(l["call"], l["result"]) for l in new] == [
        ("VM.set_name_label", "OK"),
        ("VM.set_name_label", "ERROR HANDLE_INVALID"),
        ("session.logout", "OK"),
    ]
    assert all(l["user"] == "root" and l["peer"] == "127.0.0.1" for l in new)
    assert new[0]["args"] == {"self": vm, "value": "audited name"}

    logins = [l for l in before if l["call"] == "session.login_with_password"]
    assert ("root", "ERROR SESSION_AUTHENTICATION_FAILED") in [(l["user"], l["result"]) for l in logins]
    assert ("root", "OK") in [(l["user"], l["result"]) for l in logins]
    assert all(l["args"]["pwd"] == "******" and l["args"]["uname"] == "root" for l in logins)
    # no password, no session ref, anywhere in the log
    assert d.password not in text and "not-the-password-42" not in text
    assert s not in text
