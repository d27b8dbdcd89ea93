"""Real clients pointed at a pool member: the Python SDK gets HOST_IS_SLAVE with the coordinator's
address (it does not follow it by itself) and logs in there; Xen Orchestra's npm `xen-api` follows
HOST_IS_SLAVE to the coordinator on its own."""
from __future__ import annotations

import pytest
import XenAPI

from tests import pool as _pool
from tests.contract.xo_client import HAVE_XO, WHY_NOT, XoClient
from tests.fixtures import own_pool


sim = own_pool(2)


def test_sdk_gets_host_is_slave_then_logs_in_at_the_coordinator(sim):
    member = sim.hosts[1]
    s = XenAPI.Session(member.url)
    with pytest.raises(XenAPI.Failure) as e:
        s.xenapi.login_with_password("root", member.password, "1.0", "sdk")
    assert e.value.details == ["HOST_IS_SLAVE", sim.coordinator.address]
    coordinator = XenAPI.Session(member.url.replace(member.address, e.value.details[1]))
    coordinator.xenapi.login_with_password("root", member.password, "1.0", "sdk")
    assert len(coordinator.xenapi.host.get_all()) == 2
    coordinator.xenapi.session.logout()


@pytest.mark.skipif(not HAVE_XO, reason=WHY_NOT)
def test_xen_orchestra_follows_host_is_slave(sim):
    member = sim.hosts[1]
    x = sim.coordinator.session().xenapi
    pool = x.pool.get_all()[0]
    c = XoClient(member, "json-rpc", mode="nowatch")
    try:
        _, msg = c.expect("connected", 15)
        assert msg["pool"] == pool
        _, loaded = c.expect("loaded", 15)
        assert loaded["counts"]["host"] == 2
    finally:
        c.close()


@pytest.mark.skipif(not HAVE_XO, reason=WHY_NOT)
def test_xen_orchestra_follows_designate_new_master():
    """Xen Orchestra watching the coordinator: after pool.designate_new_master its session is gone
    (xapi's old coordinator restarts; sessions are not persisted), so its event loop logs in again,
    meets HOST_IS_SLAVE and goes on at the new coordinator: a write there reaches it."""
    p = _pool.start(2)
    try:
        h1, h2 = p.hosts
        session = h1.session()
        x, s1 = session.xenapi, session._session
        pool = x.pool.get_all()[0]
        c = XoClient(h1, "json-rpc", mode="watch", max_seconds=60)
        try:
            c.expect("connected", 15)
            c.expect("loaded", 15)
            target = next(h for h, r in x.host.get_all_records().items() if r["address"] == h2.address)
            x.pool.designate_new_master(target)
            import xmlrpc.client
            raw = xmlrpc.client.ServerProxy(h1.url).pool.get_name_label(s1, pool)
            assert raw["ErrorDescription"][0] == "SESSION_INVALID"
            h2.session().xenapi.pool.set_name_label(pool, "written at the new coordinator")
            c.expect("update", 20, where=lambda m: m.get("type") == "pool"
                     and m.get("name_label") == "written at the new coordinator")
        finally:
            c.close()
    finally:
        _pool.cleanup(p)
