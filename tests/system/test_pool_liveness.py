"""host_metrics.live on a 3-host `xapi sim` pool with fast heartbeats: every host live, host.disable /
host.enable on a member, and a member killed with -9 goes not live while the others stay live."""
from __future__ import annotations

import time

import pytest

from tests.fixtures import own_pool
from tests.helpers import eventually

FAST = {"XAPI_HOST_HEARTBEAT_INTERVAL": "0.2", "XAPI_HOST_ASSUMED_DEAD": "1.5"}


sim = own_pool(3, env=FAST)


def _live(x) -> dict:
    return {r["address"]: x.host_metrics.get_live(r["metrics"]) for r in x.host.get_all_records().values()}


def test_all_live_and_disable_enable(sim):
    x = sim.coordinator.session().xenapi
    time.sleep(2.0)                           # longer than the dead interval: the heartbeats keep them live
    assert _live(x) == {"127.0.0.2": True, "127.0.0.3": True, "127.0.0.4": True}
    member = next(h for h, r in x.host.get_all_records().items() if r["address"] == "127.0.0.3")
    x.host.disable(member)
    assert x.host.get_enabled(member) is False
    local = sim.hosts[1].local_session()      # the member's replica sees it too
    assert eventually(lambda: local.xenapi.host.get_enabled(member) is False)
    x.host.enable(member)
    assert x.host.get_enabled(member) is True


def test_killed_member_goes_not_live(sim):
    x = sim.coordinator.session().xenapi
    sim.hosts[2].kill()
    assert eventually(lambda: _live(x) == {"127.0.0.2": True, "127.0.0.3": True, "127.0.0.4": False})
    time.sleep(0.5)
    assert _live(x)["127.0.0.3"] is True


def test_host_destroy_of_the_dead_member(sim):
    import XenAPI
    x = sim.coordinator.session().xenapi
    refs = {r["address"]: h for h, r in x.host.get_all_records().items()}
    for live in (refs["127.0.0.2"], refs["127.0.0.3"]):     # xapi asks the host first: itself included
        with pytest.raises(XenAPI.Failure) as e:
            x.host.destroy(live)
        assert e.value.details == ["HOST_IS_LIVE", live]
    dead = refs["127.0.0.4"]
    x.host.destroy(dead)
    assert sorted(r["address"] for r in x.host.get_all_records().values()) == ["127.0.0.2", "127.0.0.3"]
    assert all(x.PBD.get_host(p) != dead for p in x.PBD.get_all())
    assert all(x.PIF.get_host(p) != dead for p in x.PIF.get_all())
