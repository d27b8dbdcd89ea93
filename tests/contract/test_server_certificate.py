"""A host's TLS certificates over the real XenAPI SDK on a real daemon: install_server_certificate
checks the key, certificate and chain as xapi does and swaps the listener's certificate without a
restart (a connection opened before keeps its handshake, a new one sees the new certificate), the
Certificate rows follow, refresh/emergency_reset make new self-signed ones, CA certificates and CRLs
land in the trust folder with their Certificate row, TLS verification flags."""
from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat

import pytest
import XenAPI
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.fixtures import own_daemon, root_xenapi
from xapi.server import tls

host = own_daemon()
x = root_xenapi("host")

NOW = datetime.datetime.now(datetime.timezone.utc)


def _key(bits=2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert(key, name="pyxapi test", signer=None, signer_key=None, before=None, after=None,
          algorithm=None, ca=False) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = signer.subject if signer is not None else subject
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(before or NOW - datetime.timedelta(days=1))
            .not_valid_after(after or NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer_key or key, algorithm or hashes.SHA256()))


def _pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _presented(port) -> str:
    return tls.certificate_info(ssl.get_server_certificate(("127.0.0.1", port)).encode()).fingerprint


def _host_rows(x, ref):
    return [x.Certificate.get_record(c) for c in x.host.get_certificates(ref)]


def _fails(code, fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    assert e.value.details[0] == code, e.value.details
    return e.value.details


def test_install_checks_key_certificate_and_chain(x, host):
    me = x.host.get_all()[0]
    key = _key()
    good = _pem(_cert(key))
    before = _presented(host.https_port)
    _fails("SERVER_CERTIFICATE_KEY_INVALID", x.host.install_server_certificate, me, good, "not a key", "")
    _fails("SERVER_CERTIFICATE_KEY_ALGORITHM_NOT_SUPPORTED", x.host.install_server_certificate, me, good,
           _pem_key(ec.generate_private_key(ec.SECP256R1())), "")
    assert _fails("SERVER_CERTIFICATE_KEY_RSA_LENGTH_NOT_SUPPORTED", x.host.install_server_certificate, me, good,
                  _pem_key(_key(1024)), "")[1:] == ["1024"]
    _fails("SERVER_CERTIFICATE_INVALID", x.host.install_server_certificate, me, "garbage", _pem_key(key), "")
    _fails("SERVER_CERTIFICATE_KEY_MISMATCH", x.host.install_server_certificate, me, good, _pem_key(_key()), "")
    later = NOW + datetime.timedelta(days=2)
    details = _fails("SERVER_CERTIFICATE_NOT_VALID_YET", x.host.install_server_certificate, me,
                     _pem(_cert(key, before=later)), _pem_key(key), "")
    assert details[2] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
    _fails("SERVER_CERTIFICATE_EXPIRED", x.host.install_server_certificate, me,
           _pem(_cert(key, before=NOW - datetime.timedelta(days=9), after=NOW - datetime.timedelta(days=2))),
           _pem_key(key), "")
    _fails("SERVER_CERTIFICATE_SIGNATURE_NOT_SUPPORTED", x.host.install_server_certificate, me,
           _pem(_cert(key, algorithm=hashes.SHA384())), _pem_key(key), "")
    _fails("SERVER_CERTIFICATE_CHAIN_INVALID", x.host.install_server_certificate, me, good, _pem_key(key),
           "not a chain")
    _fails("HANDLE_INVALID", x.host.install_server_certificate, "OpaqueRef:nope", good, _pem_key(key), "")
    assert _presented(host.https_port) == before            # nothing changed on any failure


def test_install_swaps_the_listener_without_a_restart(x, host):
    me = x.host.get_all()[0]
    ca_key = _key()
    ca = _cert(ca_key, name="pyxapi test CA", ca=True)
    key = _key()
    leaf = _cert(key, name="xapi.example", signer=ca, signer_key=ca_key)
    pid = host.pid
    # a connection open before the change: a TLS client that keeps talking over it
    raw = socket.create_connection(("127.0.0.1", host.https_port), timeout=10)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    old = ctx.wrap_socket(raw)
    old_der = old.getpeercert(binary_form=True)

    x.host.install_server_certificate(me, _pem(leaf), _pem_key(key), _pem(ca))

    new_fp = tls.fingerprint(leaf)
    assert _presented(host.https_port) == new_fp and host.pid == pid
    # verified by a client that trusts the CA: the listener sends the chain it was given
    trusting = ssl.create_default_context(cadata=_pem(ca))
    trusting.check_hostname = False
    with socket.create_connection(("127.0.0.1", host.https_port), timeout=10) as s, \
            trusting.wrap_socket(s) as t:
        assert t.getpeercert(binary_form=True) == leaf.public_bytes(serialization.Encoding.DER)
    # the old connection goes on with its own handshake
    body = b'{"jsonrpc":"2.0","id":1,"method":"host.get_all","params":[]}'
    old.sendall(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert old.recv(4096).startswith(b"HTTP/1.1 200")
    assert old.getpeercert(binary_form=True) == old_der
    old.close()
    rows = [r for r in _host_rows(x, me) if r["type"] == "host"]
    assert len(rows) == 1 and rows[0]["fingerprint"] == new_fp and rows[0]["host"] == me
    assert tls.certificate_info(x.host.get_server_certificate(me).encode()).fingerprint == new_fp


def test_refresh_and_emergency_reset_make_new_self_signed_ones(x, host):
    me = x.host.get_all()[0]
    first = _presented(host.https_port)
    x.host.refresh_server_certificate(me)
    second = _presented(host.https_port)
    assert second != first
    assert [r["fingerprint"] for r in _host_rows(x, me) if r["type"] == "host"] == [second]
    x.host.emergency_reset_server_certificate()
    third = _presented(host.https_port)
    assert third not in (first, second)
    assert [r["fingerprint"] for r in _host_rows(x, me) if r["type"] == "host"] == [third]
    cert = x509.load_pem_x509_certificate(x.host.get_server_certificate(me).encode())
    assert cert.issuer == cert.subject                                         # self-signed


def test_ca_certificates_pool_wide(x, host):
    ca_key = _key()
    ca = _cert(ca_key, name="pool CA", ca=True)
    _fails("CERTIFICATE_NAME_INVALID", x.pool.install_ca_certificate, "../evil.pem", _pem(ca))
    _fails("CERTIFICATE_NAME_INVALID", x.pool.install_ca_certificate, "noext", _pem(ca))
    _fails("INVALID_VALUE", x.pool.install_ca_certificate, "bad.pem", "garbage")
    x.pool.install_ca_certificate("ca1.pem", _pem(ca))
    _fails("CERTIFICATE_ALREADY_EXISTS", x.pool.install_ca_certificate, "ca1.pem", _pem(ca))
    assert "ca1.pem" in x.pool.certificate_list()
    with open(os.path.join(host.data_dir, "trust", "certs", "ca1.pem")) as f:
        assert x509.load_pem_x509_certificate(f.read().encode()) == ca
    for folder in ("trust", "trust/certs"):                 # no one else may add a trusted CA
        assert stat.S_IMODE(os.stat(os.path.join(host.data_dir, folder)).st_mode) == 0o700, folder
    assert stat.S_IMODE(os.stat(os.path.join(host.data_dir, "xapi-ssl.pem")).st_mode) == 0o600  # its key
    rows = [r for r in x.Certificate.get_all_records().values() if r["type"] == "ca"]
    assert [(r["name"], r["fingerprint"], r["host"]) for r in rows] == \
        [("ca1.pem", tls.fingerprint(ca), "OpaqueRef:NULL")]
    x.pool.certificate_install("ca2.pem", _pem(ca))                            # the older name
    x.pool.certificate_sync()
    x.pool.uninstall_ca_certificate("ca1.pem")
    x.pool.certificate_uninstall("ca2.pem")
    _fails("CERTIFICATE_DOES_NOT_EXIST", x.pool.uninstall_ca_certificate, "ca1.pem")
    assert x.pool.certificate_list() == []
    assert not [r for r in x.Certificate.get_all_records().values() if r["type"] == "ca"]


def test_crls(x, host):
    ca_key = _key()
    ca = _cert(ca_key, name="CRL CA", ca=True)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(NOW)
           .next_update(NOW + datetime.timedelta(days=7)).sign(ca_key, hashes.SHA256()))
    pem = crl.public_bytes(serialization.Encoding.PEM).decode()
    _fails("CRL_NAME_INVALID", x.pool.crl_install, ".hidden.pem", pem)
    _fails("CRL_CORRUPT", x.pool.crl_install, "bad.pem", "garbage")
    x.pool.crl_install("revoked.pem", pem)
    _fails("CRL_ALREADY_EXISTS", x.pool.crl_install, "revoked.pem", pem)
    assert x.pool.crl_list() == ["revoked.pem"]
    x.pool.crl_uninstall("revoked.pem")
    _fails("CRL_DOES_NOT_EXIST", x.pool.crl_uninstall, "revoked.pem")
    assert x.pool.crl_list() == []


def test_tls_verification_flags(x, host):
    me = x.host.get_all()[0]
    pool = x.pool.get_all()[0]
    flag = os.path.join(host.data_dir, "verify-certificates")
    x.pool.enable_tls_verification()
    assert x.pool.get_tls_verification_enabled(pool) and x.host.get_tls_verification_enabled(me)
    assert os.path.exists(flag)
    uuid = x.host.get_uuid(me)

    def alerts():
        return [m for m in x.message.get_all_records().values()
                if m["name"] == "TLS_VERIFICATION_EMERGENCY_DISABLED" and m["obj_uuid"] == uuid]
    x.host.emergency_disable_tls_verification()
    assert not x.host.get_tls_verification_enabled(me) and not os.path.exists(flag)
    assert [(m["priority"], m["cls"]) for m in alerts()] == [("3", "Host")]
    x.host.emergency_reenable_tls_verification()
    assert x.host.get_tls_verification_enabled(me) and os.path.exists(flag)
    assert alerts() == []
