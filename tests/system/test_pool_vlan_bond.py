"""PIF.scan, VLAN.create and Bond.create on a member of a 2-host `xapi sim` pool through the XenAPI SDK:
the rows are the member's (its NICs, on the pool-wide networks of their bridges), a bond cannot span
hosts, and the member's replica holds what the coordinator made."""
from __future__ import annotations

from tests.fixtures import own_pool
from tests.helpers import eventually, failure
from tests.system.pool_vms import hosts_by_address

sim = own_pool(2)


def _physical(x, host):
    return {x.PIF.get_device(p): p for p in x.host.get_PIFs(host) if x.PIF.get_physical(p)}


def test_member_networking(sim):
    s = sim.coordinator.session()
    x = s.xenapi
    try:
        coordinator, member = hosts_by_address(x)[:2]
        x.PIF.scan(coordinator)
        x.PIF.scan(member)
        mine, theirs = _physical(x, coordinator), _physical(x, member)
        assert sorted(theirs) == ["eth0", "eth1", "eth2", "eth3"]
        assert all(x.PIF.get_host(p) == member for p in theirs.values())
        assert not {x.PIF.get_MAC(p) for p in theirs.values()} & {x.PIF.get_MAC(p) for p in mine.values()}
        for device in ("eth1", "eth2", "eth3"):                 # one pool-wide network per bridge
            assert x.PIF.get_network(theirs[device]) == x.PIF.get_network(mine[device])

        n = x.network.create({"name_label": "vlan5", "name_description": "", "MTU": "1500",
                              "other_config": {}, "bridge": "", "tags": []})
        on_coordinator = x.VLAN.create(mine["eth1"], "5", n)
        on_member = x.VLAN.create(theirs["eth1"], "5", n)      # the same network on another host is fine
        untagged = x.VLAN.get_untagged_PIF(on_member)
        assert x.PIF.get_host(untagged) == member and x.PIF.get_VLAN_slave_of(theirs["eth1"]) == [on_member]
        assert sorted(x.network.get_PIFs(n)) == sorted([untagged, x.VLAN.get_untagged_PIF(on_coordinator)])
        assert failure(x.VLAN.create, theirs["eth2"], "6", n) == ["NETWORK_ALREADY_CONNECTED", member, untagged]

        bonded = x.network.create({"name_label": "bonded", "name_description": "", "MTU": "1500",
                                   "other_config": {}, "bridge": "", "tags": []})
        assert failure(x.Bond.create, bonded, [theirs["eth2"], mine["eth3"]], "", "balance-slb", {}) == \
            ["PIF_CANNOT_BOND_CROSS_HOST"]
        bond = x.Bond.create(bonded, [theirs["eth2"], theirs["eth3"]], "", "balance-slb", {})
        master = x.Bond.get_master(bond)
        assert x.PIF.get_host(master) == member and x.PIF.get_device(master) == "bond0"

        # the member's own replica holds the new rows (its local session reads from it)
        ls = sim.hosts[1].local_session()
        try:
            assert eventually(lambda: ls.xenapi.Bond.get_master(bond) == master, ignore=(Exception,))
            assert ls.xenapi.PIF.get_bond_slave_of(theirs["eth3"]) == bond
        finally:
            ls.xenapi.session.logout()

        x.Bond.destroy(bond)
        x.VLAN.destroy(on_member)
        x.VLAN.destroy(on_coordinator)
        assert x.network.get_PIFs(n) == [] and x.network.get_PIFs(bonded) == []
    finally:
        s.xenapi.session.logout()
