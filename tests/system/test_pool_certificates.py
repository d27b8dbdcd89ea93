"""New server certificates in a 2-host `xapi sim` pool: a member's (made on the member, recorded by
the coordinator, whose internal calls pin the new one) and the coordinator's (announced to the member,
whose replica keeps following)."""
from __future__ import annotations

import os
import signal
import ssl
import subprocess

import XenAPI

from tests.fixtures import own_pool
from tests.helpers import eventually, process_gone
from xapi.server import tls


sim = own_pool(2)


def _presented(host) -> str:
    return tls.certificate_info(ssl.get_server_certificate((host.address, host.https_port)).encode()).fingerprint


def _recorded(x, host_ref) -> str:
    return next(x.Certificate.get_fingerprint(c) for c in x.host.get_certificates(host_ref)
                if x.Certificate.get_type(c) == "host")


def test_member_certificate_reset_through_the_coordinator(sim):
    x = sim.coordinator.session().xenapi
    member = next(h for h, r in x.host.get_all_records().items() if r["address"] == sim.hosts[1].address)
    before = _presented(sim.hosts[1])
    assert _recorded(x, member) == before
    x.host.reset_server_certificate(member)
    after = _presented(sim.hosts[1])
    assert after != before and _recorded(x, member) == after
    pem = x.host.get_server_certificate(member)          # an internal call pinned to the new one
    assert tls.certificate_info(pem.encode()).fingerprint == after


def test_coordinator_certificate_reset_keeps_members_following(sim):
    x = sim.coordinator.session().xenapi
    me = x.pool.get_master(x.pool.get_all()[0])
    before = _presented(sim.coordinator)
    x.host.reset_server_certificate(me)
    after = _presented(sim.coordinator)
    assert after != before and _recorded(x, me) == after
    pool = x.pool.get_all()[0]
    x.pool.set_name_label(pool, "after the coordinator's new certificate")
    local = sim.hosts[1].local_session()
    assert eventually(lambda: local.xenapi.pool.get_name_label(pool) == "after the coordinator's new certificate")
    assert "fingerprint:" + after in open(f"{sim.hosts[1].data_dir}/pool.conf").read()


def _key_and_cert():
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "member.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode(),
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            tls.fingerprint(cert))


def _member(x, sim):
    return next(h for h, r in x.host.get_all_records().items() if r["address"] == sim.hosts[1].address)


def test_member_installs_a_users_certificate_through_the_coordinator(sim):
    x = sim.coordinator.session().xenapi
    member = _member(x, sim)
    key, cert, fp = _key_and_cert()
    x.host.install_server_certificate(member, cert, key, "")
    assert _presented(sim.hosts[1]) == fp and _recorded(x, member) == fp
    pem = x.host.get_server_certificate(member)          # an internal call pinned to the new one
    assert tls.certificate_info(pem.encode()).fingerprint == fp
    x.host.refresh_server_certificate(member)            # back to a self-signed one
    assert _presented(sim.hosts[1]) not in (fp, "") and _recorded(x, member) == _presented(sim.hosts[1])


def test_ca_certificates_and_crls_reach_the_members(sim):
    import os
    x = sim.coordinator.session().xenapi
    _, cert, _ = _key_and_cert()
    member_certs = os.path.join(sim.hosts[1].data_dir, "trust", "certs")
    x.pool.install_ca_certificate("pool-ca.pem", cert)
    assert os.listdir(member_certs) == ["pool-ca.pem"]
    assert open(os.path.join(member_certs, "pool-ca.pem")).read() == cert
    os.unlink(os.path.join(member_certs, "pool-ca.pem"))  # a member that lost it gets it back
    open(os.path.join(member_certs, "stray.pem"), "w").write(cert)    # and loses what the pool lacks
    x.pool.certificate_sync()
    assert os.listdir(member_certs) == ["pool-ca.pem"]
    x.pool.uninstall_ca_certificate("pool-ca.pem")
    assert os.listdir(member_certs) == []


def test_tls_verification_on_every_host(sim):
    import os
    x = sim.coordinator.session().xenapi
    x.pool.enable_tls_verification()
    assert x.pool.get_tls_verification_enabled(x.pool.get_all()[0])
    assert all(x.host.get_tls_verification_enabled(h) for h in x.host.get_all())
    assert all(os.path.exists(os.path.join(h.data_dir, "verify-certificates")) for h in sim.hosts)
    local = sim.hosts[1].local_session()                  # an emergency call, answered by the member
    local.xenapi.host.emergency_disable_tls_verification()
    assert not os.path.exists(os.path.join(sim.hosts[1].data_dir, "verify-certificates"))
    local.xenapi.host.emergency_reenable_tls_verification()
    assert os.path.exists(os.path.join(sim.hosts[1].data_dir, "verify-certificates"))


def test_member_emergency_reset_is_recorded_by_the_coordinator(sim):
    x = sim.coordinator.session().xenapi
    member = _member(x, sim)
    before = _presented(sim.hosts[1])
    sim.hosts[1].local_session().xenapi.host.emergency_reset_server_certificate()
    after = _presented(sim.hosts[1])
    assert after != before and _recorded(x, member) == after
    pem = x.host.get_server_certificate(member)          # the coordinator's calls pin the new one
    assert tls.certificate_info(pem.encode()).fingerprint == after


def _crl(key_pem: str, cert_pem: str) -> str:
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    issuer = x509.load_pem_x509_certificate(cert_pem.encode()).subject
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(issuer).last_update(now)
           .next_update(now + datetime.timedelta(days=7)).sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def test_eject_drops_the_pools_trust_and_join_exchanges_it(sim):
    """As xapi: an ejected host keeps none of the pool's CA certificates and CRLs; a joining host gets
    the pool's and the pool takes the joining host's (exchange_ca_certificates_on_join, CRLs alike)."""
    x = sim.coordinator.session().xenapi
    host = sim.hosts[1]
    key, pool_ca, _ = _key_and_cert()
    x.pool.install_ca_certificate("pool-ca.pem", pool_ca)
    x.pool.crl_install("pool-crl.pem", _crl(key, pool_ca))
    trust = os.path.join(host.data_dir, "trust")
    assert os.listdir(os.path.join(trust, "certs")) == ["pool-ca.pem"]
    assert os.listdir(os.path.join(trust, "crls")) == ["pool-crl.pem"]

    x.pool.eject(_member(x, sim))
    assert not os.path.exists(trust)
    alone = eventually(host.session, 20, 0.1, ignore=(OSError, XenAPI.Failure)).xenapi
    assert alone.pool.certificate_list() == [] and alone.pool.crl_list() == []
    _, own_ca, own_fp = _key_and_cert()
    alone.pool.install_ca_certificate("joiner-ca.pem", own_ca)

    alone.pool.join(sim.coordinator.address, "root", sim.coordinator.password)
    assert sorted(os.listdir(os.path.join(trust, "certs"))) == ["joiner-ca.pem", "pool-ca.pem"]
    assert open(os.path.join(trust, "certs", "pool-ca.pem")).read() == pool_ca
    assert os.listdir(os.path.join(trust, "crls")) == ["pool-crl.pem"]
    assert x.pool.certificate_list() == ["joiner-ca.pem", "pool-ca.pem"]
    coordinator_certs = os.path.join(sim.coordinator.data_dir, "trust", "certs")
    assert open(os.path.join(coordinator_certs, "joiner-ca.pem")).read() == own_ca
    assert [x.Certificate.get_fingerprint(c) for c in x.Certificate.get_all()
            if x.Certificate.get_name(c) == "joiner-ca.pem"] == [own_fp]
    assert len(x.host.get_all()) == 2

    x.pool.uninstall_ca_certificate("joiner-ca.pem")      # the pool's again: gone from every host
    x.pool.uninstall_ca_certificate("pool-ca.pem")
    x.pool.crl_uninstall("pool-crl.pem")
    assert os.listdir(os.path.join(trust, "certs")) == [] and os.listdir(os.path.join(trust, "crls")) == []


def _restart_stopped(sim, host, between) -> None:
    """`host`'s daemon stopped, `between()` run meanwhile, then started again as it was."""
    pid = host.pid
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    host.kill(signal.SIGTERM)
    assert eventually(lambda: process_gone(pid), 20)
    between()
    env = dict(os.environ, XAPI_ROOT_PASSWORD=host.password)
    with open(os.path.join(host.data_dir, "daemon.log"), "ab") as log:
        sim.restarted.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
    assert eventually(host.local_session, 30, 0.1, ignore=(OSError, XenAPI.Failure))


def test_emergency_disable_lets_a_member_reach_a_coordinator_with_a_new_certificate(sim):
    """The coordinator's certificate changed while the member was down (it never learnt it): the
    member's internal calls fail on the pinned fingerprint, work while host.emergency_disable_
    tls_verification is in force on the member, and fail again once it is reenabled."""
    x = sim.coordinator.session().xenapi
    me, member, pool = x.pool.get_master(x.pool.get_all()[0]), _member(x, sim), x.pool.get_all()[0]
    host = sim.hosts[1]
    _restart_stopped(sim, host, lambda: x.host.reset_server_certificate(me))
    local = host.local_session().xenapi

    def member_reset_recorded() -> bool:
        # host.member_certificate: the member's internal call telling the coordinator its new one
        local.host.emergency_reset_server_certificate()
        return _recorded(x, member) == _presented(host)

    x.pool.set_name_label(pool, "while pinned to the old certificate")
    assert not member_reset_recorded()
    assert local.host.is_in_emergency_mode() is True          # its replica cannot connect either
    assert local.pool.get_name_label(pool) != "while pinned to the old certificate"

    local.host.emergency_disable_tls_verification()
    assert os.path.exists(os.path.join(host.data_dir, "tls-verification-emergency-disabled"))
    assert member_reset_recorded()
    assert eventually(lambda: local.pool.get_name_label(pool) == "while pinned to the old certificate", 15)
    x.pool.set_name_label(pool, "reached unpinned")             # the replica's next batch, not a snapshot
    assert eventually(lambda: local.pool.get_name_label(pool) == "reached unpinned", 15)
    assert eventually(lambda: not local.host.is_in_emergency_mode(), 15)

    local.host.emergency_reenable_tls_verification()
    assert not os.path.exists(os.path.join(host.data_dir, "tls-verification-emergency-disabled"))
    assert not member_reset_recorded()
    assert eventually(lambda: local.host.is_in_emergency_mode(), 15) is True   # its unpinned stream closed


def test_member_emergency_calls_without_its_coordinator(sim):
    """Last in the module: the coordinator is killed."""
    import os
    member = sim.hosts[1]
    local = member.local_session()
    sim.coordinator.kill()
    assert eventually(lambda: local.xenapi.host.is_in_emergency_mode(), 30, 0.2)
    before = _presented(member)
    local.xenapi.host.emergency_reset_server_certificate()
    assert _presented(member) != before
    local.xenapi.host.emergency_disable_tls_verification()
    assert not os.path.exists(os.path.join(member.data_dir, "verify-certificates"))
    local.xenapi.host.emergency_reenable_tls_verification()
    assert os.path.exists(os.path.join(member.data_dir, "verify-certificates"))
