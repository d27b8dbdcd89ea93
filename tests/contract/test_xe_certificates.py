"""xe's TLS trust, redo-log and database-replication commands (xapi.cli.ops_certificates) with the real
`xe` on a live daemon: the files travel from the client through the CLI protocol's Load, the effects
are checked through the XenAPI SDK. Also host-all-editions listing host.editions."""
from __future__ import annotations

import datetime
import os
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from xapi.server import tls

host = own_daemon()
x = root_xenapi("host")

NOW = datetime.datetime.now(datetime.timezone.utc)


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(key, name, ca=False, signer=None, signer_key=None):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(signer.subject if signer is not None else subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer_key or key, hashes.SHA256()))


def _write(folder, name, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _presented(port) -> str:
    return tls.certificate_info(ssl.get_server_certificate(("127.0.0.1", port)).encode()).fingerprint


def _fails(r, text):
    assert r.returncode == 1 and text in r.stderr, (r.returncode, r.stdout, r.stderr)


def test_ca_certificates_and_crls(x, host, tmp_path):
    ca_key = _key()
    ca = _cert(ca_key, "xe CA", ca=True)
    path = _write(tmp_path, "xeca.pem", _pem(ca))
    ok(xe(host, "pool-install-ca-certificate", f"filename={path}"))
    assert "xeca.pem" in x.pool.certificate_list()
    rows = [r for r in x.Certificate.get_all_records().values() if r["type"] == "ca"]
    assert [(r["name"], r["fingerprint"]) for r in rows] == [("xeca.pem", tls.fingerprint(ca))]
    ok(xe(host, "pool-certificate-install", f"filename={_write(tmp_path, 'old.pem', _pem(ca))}"))
    assert sorted(ok(xe(host, "pool-certificate-list")).split()) == ["old.pem", "xeca.pem"]
    _fails(xe(host, "pool-install-ca-certificate", f"filename={path}"), "CERTIFICATE_ALREADY_EXISTS")
    _fails(xe(host, "pool-install-ca-certificate", f"filename={tmp_path}/missing.pem"), "Failed to read certificate")
    ok(xe(host, "pool-certificate-sync"))
    ok(xe(host, "pool-uninstall-ca-certificate", "name=xeca.pem"))
    ok(xe(host, "pool-certificate-uninstall", "name=old.pem"))
    assert x.pool.certificate_list() == [] and ok(xe(host, "pool-certificate-list")) == ""
    r = xe(host, "pool-uninstall-ca-certificate", "name=xeca.pem")
    assert r.returncode == 1 and "CERTIFICATE_DOES_NOT_EXIST" in r.stderr + r.stdout

    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(NOW)
           .next_update(NOW + datetime.timedelta(days=7)).sign(ca_key, hashes.SHA256()))
    crl_path = _write(tmp_path, "revoked.pem", crl.public_bytes(serialization.Encoding.PEM))
    ok(xe(host, "pool-crl-install", f"filename={crl_path}"))
    assert x.pool.crl_list() == ["revoked.pem"] and ok(xe(host, "pool-crl-list")) == "revoked.pem"
    _fails(xe(host, "pool-crl-install", f"filename={tmp_path}/none.pem"), "Failed to read CRL")
    r = xe(host, "pool-crl-install", f"filename={_write(tmp_path, 'bad.pem', b'garbage')}")
    assert r.returncode == 1 and "CRL_CORRUPT" in r.stderr + r.stdout
    ok(xe(host, "pool-crl-uninstall", "name=revoked.pem"))
    assert x.pool.crl_list() == []


def test_server_certificate_install_refresh_reset(x, host, tmp_path):
    me = x.host.get_all()[0]
    uuid = x.host.get_uuid(me)
    ca_key, key = _key(), _key()
    ca = _cert(ca_key, "xe chain CA", ca=True)
    leaf = _cert(key, "xe server", signer=ca, signer_key=ca_key)
    cert_path = _write(tmp_path, "server.pem", _pem(leaf))
    key_path = _write(tmp_path, "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    chain_path = _write(tmp_path, "chain.pem", _pem(ca))
    _fails(xe(host, "host-server-certificate-install", f"certificate={cert_path}",
              f"private-key={tmp_path}/nokey", f"uuid={uuid}"), "Failed to read private key")
    other = _write(tmp_path, "other.key", _key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    r = xe(host, "host-server-certificate-install", f"certificate={cert_path}", f"private-key={other}")
    assert r.returncode == 1 and "SERVER_CERTIFICATE_KEY_MISMATCH" in r.stderr + r.stdout
    ok(xe(host, "host-server-certificate-install", f"certificate={cert_path}", f"private-key={key_path}",
          f"certificate-chain={chain_path}", f"uuid={uuid}"))
    assert _presented(host.https_port) == tls.fingerprint(leaf)
    ok(xe(host, "host-refresh-server-certificate", f"uuid={uuid}"))
    refreshed = _presented(host.https_port)
    assert refreshed != tls.fingerprint(leaf)
    ok(xe(host, "host-reset-server-certificate", f"uuid={uuid}"))
    reset = _presented(host.https_port)
    ok(xe(host, "host-emergency-reset-server-certificate"))
    emergency = _presented(host.https_port)
    assert len({refreshed, reset, emergency}) == 3
    cert = x509.load_pem_x509_certificate(x.host.get_server_certificate(me).encode())
    assert cert.issuer == cert.subject and tls.fingerprint(cert) == emergency


def test_tls_verification(x, host):
    me, pool = x.host.get_all()[0], x.pool.get_all()[0]
    ok(xe(host, "pool-enable-tls-verification"))
    assert x.pool.get_tls_verification_enabled(pool) and x.host.get_tls_verification_enabled(me)
    ok(xe(host, "host-emergency-disable-tls-verification"))
    assert not x.host.get_tls_verification_enabled(me)
    ok(xe(host, "host-emergency-reenable-tls-verification"))
    assert x.host.get_tls_verification_enabled(me)


@pytest.fixture(scope="module")
def nfs(x, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("xe-nfs"))
    sr = x.SR.create(x.host.get_all()[0], {"path": folder}, "0", "xe-dr", "", "nfs", "user", True, {})
    yield sr
    for v in x.SR.get_VDIs(sr):
        x.VDI.destroy(v)
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    x.SR.destroy(sr)


def test_redo_log_and_database_replication(x, host, nfs):
    pool = x.pool.get_all()[0]
    uuid = x.SR.get_uuid(nfs)
    r = xe(host, "pool-enable-redo-log", "sr-uuid=00000000-0000-0000-0000-000000000000")
    _fails(r, "The uuid you supplied was invalid.\ntype: SR\n")      # xe's text of UUID_INVALID
    ok(xe(host, "pool-enable-redo-log", f"sr-uuid={uuid}"))
    vdi = x.pool.get_redo_log_vdi(pool)
    assert x.pool.get_redo_log_enabled(pool) and x.VDI.get_SR(vdi) == nfs
    ok(xe(host, "pool-disable-redo-log"))
    assert not x.pool.get_redo_log_enabled(pool)

    ok(xe(host, "sr-enable-database-replication", f"uuid={uuid}"))
    meta = [v for v in x.SR.get_VDIs(nfs) if x.VDI.get_type(v) == "metadata"]
    assert len(meta) == 1 and x.VDI.get_metadata_of_pool(meta[0]) == pool
    ok(xe(host, "sr-disable-database-replication", f"uuid={uuid}"))
    assert not [v for v in x.SR.get_VDIs(nfs) if x.VDI.get_type(v) == "metadata"]


def test_host_all_editions(x, host):
    me = x.host.get_all()[0]
    editions = x.host.get_editions(me)
    assert editions and x.host.get_edition(me) in editions
    assert ok(xe(host, "host-all-editions")).split() == editions
    for e in editions:
        x.host.apply_edition(me, e, False)


def test_emergency_management_reconfigure_outside_emergency_mode(host):
    # this host is the coordinator, not a member cut off from it: xapi's POOL_NOT_IN_EMERGENCY_MODE
    _fails(xe(host, "host-emergency-management-reconfigure", "interface=xenbr0"), "This pool is not in emergency mode.")
    _fails(xe(host, "host-emergency-management-reconfigure"), "interface")


ADDED = ["pool-install-ca-certificate", "pool-certificate-install", "pool-uninstall-ca-certificate",
         "pool-certificate-uninstall", "pool-certificate-list", "pool-crl-install", "pool-crl-uninstall",
         "pool-crl-list", "pool-certificate-sync", "pool-enable-tls-verification", "host-server-certificate-install",
         "host-refresh-server-certificate", "host-reset-server-certificate", "host-emergency-reset-server-certificate",
         "host-emergency-disable-tls-verification", "host-emergency-reenable-tls-verification",
         "pool-enable-redo-log", "pool-disable-redo-log", "sr-enable-database-replication",
         "sr-disable-database-replication", "host-emergency-management-reconfigure"]


def test_listed_in_help(host):
    listed = ok(xe(host, "help", "--all", "--minimal")).split(",")
    assert [c for c in ADDED if c not in listed] == []
    text = ok(xe(host, "help", "host-server-certificate-install"))
    assert "reqd params     : certificate, private-key" in text and "certificate-chain" in text


def test_completion_offers_local_files_for_the_certificate_files(host, tmp_path):
    from tests.system.test_xe_completion import complete
    (tmp_path / "server-cert.pem").write_bytes(b"")
    for param in ("certificate", "private-key", "certificate-chain"):
        got = complete(host, ["xe", "host-server-certificate-install", param, "=", str(tmp_path / "server-")])
        assert got == [str(tmp_path / "server-cert.pem")], param
    assert "private-key=" in complete(host, ["xe", "host-server-certificate-install", "pri"])
