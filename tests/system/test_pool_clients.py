"""Real clients pointed at a pool member: the Python SDK gets HOST_IS_SLAVE with the coordinator's
address (it does not follow it by itself) and logs in there; Xen Orchestra's npm `xen-api` follows
HOST_IS_SLAVE to the coordinator on its own."""
from __future__ import annotations

import pytest
import XenAPI

from tests import pool as _pool
from tests.contract.test_xen_orchestra import JS, NODE, XoClient


@pytest.fixture(scope="module")
def sim():
    p = _pool.start(2)
    yield p
    _pool.cleanup(p)


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


@pytest.mark.skipif(NODE is None or not (JS / "node_modules" / "xen-api").is_dir(),
                    reason="needs node and tests/js/node_modules (make test runs tools/node-deps.sh)")
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
