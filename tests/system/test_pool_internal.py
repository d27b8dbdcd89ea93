"""Internal calls between pool hosts against a real daemon: pinned TLS, the pool secret, kept-alive
connections, xenopsd through the internal endpoint, and session.slave_login with the SDK."""
from __future__ import annotations

import asyncio
import http.client
import os
import xmlrpc.client

import XenAPI

from tests.fixtures import own_daemon
from xapi.datamodel.errors import XapiError
from xapi.pool.calls import Peer
from xapi.pool.xenops import RemoteXenops
from xapi.server import tls


host = own_daemon()


def _secret(d) -> str:
    return open(os.path.join(d.data_dir, "ptoken")).read().strip()


def _fingerprint(d) -> str:
    return tls.certificate_info(open(os.path.join(d.data_dir, "xapi-ssl.pem"), "rb").read()).fingerprint


def _host_ref(d) -> str:
    s = XenAPI.Session(d.url)
    s.xenapi.login_with_password("root", d.password, "1.0", "test")
    try:
        return s.xenapi.host.get_all()[0]
    finally:
        s.xenapi.session.logout()


def test_call_pinned_and_kept_alive(host):
    async def main():
        peer = Peer("127.0.0.1", host.https_port, _fingerprint(host), _secret(host))
        first = await peer.call("host.ping")
        second = await peer.call("host.ping")
        assert len(peer.idle) == 1           # both calls on one kept-alive connection
        many = await asyncio.gather(*(peer.call("host.ping") for _ in range(20)))
        peer.close()
        return first, second, many
    first, second, many = asyncio.run(main())
    assert first == second == _host_ref(host)
    assert set(many) == {first}


def test_wrong_fingerprint_secret_or_method(host):
    async def main():
        errors = []
        for fp, secret, method in ((("00:" * 32)[:-1], _secret(host), "host.ping"),
                                   (_fingerprint(host), "not-the-secret", "host.ping"),
                                   (_fingerprint(host), _secret(host), "no.such")):
            try:
                await Peer("127.0.0.1", host.https_port, fp, secret).call(method)
            except XapiError as e:
                errors.append(e.description)
        return errors
    bad_cert, bad_secret, unknown = asyncio.run(main())
    assert bad_cert[0] == "SSL_VERIFY_ERROR"
    assert bad_secret[0] == "INTERNAL_ERROR" and "403" in bad_secret[1]
    assert unknown[0] == "MESSAGE_METHOD_UNKNOWN"


def test_plain_http_refused(host):
    c = http.client.HTTPConnection("127.0.0.1", host.http_port, timeout=5)
    c.request("POST", "/internal", body=b'{"method":"host.ping","params":[]}',
              headers={"X-Pool-Secret": _secret(host), "Content-Type": "application/json"})
    assert c.getresponse().status == 403


def test_xenops_through_internal_endpoint(host):
    async def main():
        peer = Peer("127.0.0.1", host.https_port, _fingerprint(host), _secret(host))
        xenops = RemoteXenops(peer)
        stat = await xenops.call("HOST.stat")
        try:
            await xenops.call("VM.stat", "00000000-0000-0000-0000-00000000dead")
        except Exception as e:             # xenopsd's own error class comes back
            err = e
        peer.close()
        return stat, err
    stat, err = asyncio.run(main())
    assert isinstance(stat, dict) and stat
    assert type(err).__name__ == "XenopsError"


def test_slave_login(host):
    # The SDK would put a session in front of slave_login's parameters: call it on the wire directly.
    proxy = xmlrpc.client.ServerProxy(host.url)
    me = _host_ref(host)
    bad = proxy.session.slave_login(me, "wrong")
    assert bad["Status"] == "Failure" and bad["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"
    bad = proxy.session.slave_login("OpaqueRef:nope", _secret(host))
    assert bad["ErrorDescription"][:2] == ["HANDLE_INVALID", "host"]
    ok = proxy.session.slave_login(me, _secret(host))
    assert ok["Status"] == "Success"
    s = XenAPI.Session(host.url)
    s._session = ok["Value"]
    assert s.xenapi.session.get_pool(ok["Value"]) is True
    assert s.xenapi.pool.get_all()
