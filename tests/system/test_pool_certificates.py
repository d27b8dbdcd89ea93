"""New server certificates in a 2-host `xapi sim` pool: a member's (made on the member, recorded by
the coordinator, whose internal calls pin the new one) and the coordinator's (announced to the member,
whose replica keeps following)."""
from __future__ import annotations

import ssl

from tests.fixtures import own_pool
from tests.helpers import eventually
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
