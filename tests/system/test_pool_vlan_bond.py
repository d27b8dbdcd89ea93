"""PIF.scan, VLAN.create and Bond.create on a member of a 2-host `xapi sim` pool through the XenAPI SDK:
the rows are the member's (its NICs, on the pool-wide networks of their bridges), a bond cannot span
hosts, and the member's replica holds what the coordinator made. pool.join as xapi's: a joining host
with bonds, tunnels, non-management VLANs or another network backend is refused; once in, it carries
the coordinator's bonds, VLANs and tunnels on its own NICs."""
from __future__ import annotations

import os
import signal
import subprocess

import XenAPI

from tests import daemon as _daemon
from tests.fixtures import own_pool
from tests.helpers import eventually, failure, login, process_gone
from tests.system.pool_vms import hosts_by_address

sim = own_pool(2)


def _physical(x, host):
    return {x.PIF.get_device(p): p for p in x.host.get_PIFs(host) if x.PIF.get_physical(p)}


def _net(x, name):
    return x.network.create({"name_label": name, "name_description": "", "MTU": "1500", "other_config": {},
                             "bridge": "", "tags": []})


def test_member_networking(sim, x):
    coordinator, member = hosts_by_address(x)[:2]
    x.PIF.scan(coordinator)
    x.PIF.scan(member)
    mine, theirs = _physical(x, coordinator), _physical(x, member)
    assert sorted(theirs) == ["eth0", "eth1", "eth2", "eth3"]
    assert all(x.PIF.get_host(p) == member for p in theirs.values())
    assert not {x.PIF.get_MAC(p) for p in theirs.values()} & {x.PIF.get_MAC(p) for p in mine.values()}
    for device in ("eth1", "eth2", "eth3"):                 # one pool-wide network per bridge
        assert x.PIF.get_network(theirs[device]) == x.PIF.get_network(mine[device])

    n = _net(x, "vlan5")
    on_coordinator = x.VLAN.create(mine["eth1"], "5", n)
    on_member = x.VLAN.create(theirs["eth1"], "5", n)      # the same network on another host is fine
    untagged = x.VLAN.get_untagged_PIF(on_member)
    assert x.PIF.get_host(untagged) == member and x.PIF.get_VLAN_slave_of(theirs["eth1"]) == [on_member]
    assert sorted(x.network.get_PIFs(n)) == sorted([untagged, x.VLAN.get_untagged_PIF(on_coordinator)])
    assert failure(x.VLAN.create, theirs["eth2"], "6", n) == ["NETWORK_ALREADY_CONNECTED", member, untagged]

    bonded = _net(x, "bonded")
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


def _standalone(host):
    def attempt():
        try:
            return host.session()
        except XenAPI.Failure:
            return None
    return eventually(attempt)


def test_join_refusals_then_the_pools_networking_on_the_new_member(sim, x):
    coordinator, member = hosts_by_address(x)[:2]
    mine = _physical(x, coordinator)
    # the pool's networking: a bond, a VLAN on a NIC, a VLAN on the bond, a tunnel over management
    bonded, tagged, tagged_bond, overlay = (_net(x, n) for n in ("j-bond", "j-vlan", "j-vlan-bond", "j-tun"))
    bond = x.Bond.create(bonded, [mine["eth2"], mine["eth3"]], "", "active-backup", {})
    vlan = x.VLAN.create(mine["eth1"], "7", tagged)
    vlan_on_bond = x.VLAN.create(x.Bond.get_master(bond), "8", tagged_bond)
    tunnel = x.tunnel.create(mine["eth0"], overlay, "vxlan")
    x.PIF.reconfigure_ip(mine["eth1"], "Static", "192.0.2.51", "255.255.255.0", "", "")
    overlay2 = _net(x, "j-tun2")
    tunnel2 = x.tunnel.create(mine["eth1"], overlay2, "gre")       # the member's eth1 has no IP

    x.pool.eject(member)
    h2 = sim.hosts[1]
    alone = _standalone(h2)
    assert alone is not None
    y = alone.xenapi
    me = y.host.get_all()[0]
    theirs = _physical(y, me)
    assert sorted(theirs) == ["eth0", "eth1", "eth2", "eth3"]          # its first boot again
    own = y.Bond.create(_net(y, "own-bond"), [theirs["eth2"], theirs["eth3"]], "", "balance-slb", {})
    assert failure(y.pool.join, "127.0.0.2", "root", h2.password) == ["POOL_JOINING_HOST_HAS_BONDS"]
    y.Bond.destroy(own)
    own = y.tunnel.create(theirs["eth0"], _net(y, "own-tunnel"), "gre")
    assert failure(y.pool.join, "127.0.0.2", "root", h2.password) == ["POOL_JOINING_HOST_HAS_TUNNELS"]
    y.tunnel.destroy(own)
    own = y.VLAN.create(theirs["eth1"], "9", _net(y, "own-vlan"))
    assert failure(y.pool.join, "127.0.0.2", "root", h2.password) == ["POOL_JOINING_HOST_HAS_NON_MANAGEMENT_VLANS"]
    y.VLAN.destroy(own)
    assert len(x.host.get_all()) == 1

    y.pool.join("127.0.0.2", "root", h2.password)
    coordinator, member = hosts_by_address(x)[:2]                  # its host row is a new one
    theirs = _physical(x, member)
    # the bond: the member's eth2 and eth3, the coordinator's mode, the MAC of the same NIC (eth2)
    (copy,) = [b for b in x.Bond.get_all() if b != bond]
    copy_master = x.Bond.get_master(copy)
    assert x.PIF.get_host(copy_master) == member and x.PIF.get_network(copy_master) == bonded
    assert sorted(x.Bond.get_slaves(copy)) == sorted([theirs["eth2"], theirs["eth3"]])
    assert x.Bond.get_mode(copy) == "active-backup" and x.PIF.get_device(copy_master) == "bond0"
    assert x.PIF.get_MAC(copy_master) == x.PIF.get_MAC(theirs["eth2"])
    # the VLANs: on the member's eth1, and on its bond's master
    vlans = {x.VLAN.get_tag(v): v for v in x.VLAN.get_all() if v not in (vlan, vlan_on_bond)}
    assert sorted(vlans) == ["7", "8"]
    assert x.VLAN.get_tagged_PIF(vlans["7"]) == theirs["eth1"]
    assert x.VLAN.get_tagged_PIF(vlans["8"]) == copy_master
    assert x.PIF.get_network(x.VLAN.get_untagged_PIF(vlans["7"])) == tagged
    assert x.PIF.get_network(x.VLAN.get_untagged_PIF(vlans["8"])) == tagged_bond
    # the tunnel: over the member's management NIC, plugged (it has an IP), the same protocol
    copied = {x.PIF.get_network(x.tunnel.get_access_PIF(t)): t for t in x.tunnel.get_all()
              if t not in (tunnel, tunnel2)}
    assert sorted(copied) == sorted([overlay, overlay2])
    assert x.tunnel.get_transport_PIF(copied[overlay]) == theirs["eth0"]
    assert x.tunnel.get_protocol(copied[overlay]) == "vxlan"
    assert x.PIF.get_currently_attached(x.tunnel.get_access_PIF(copied[overlay])) is True
    # over a transport without an IP the tunnel is there, unplugged, as xapi leaves it
    assert x.tunnel.get_transport_PIF(copied[overlay2]) == theirs["eth1"]
    assert x.tunnel.get_protocol(copied[overlay2]) == "gre"
    assert x.PIF.get_currently_attached(x.tunnel.get_access_PIF(copied[overlay2])) is False
    for n in (bonded, tagged, tagged_bond, overlay, overlay2):       # one PIF of each host on each
        assert sorted(x.PIF.get_host(p) for p in x.network.get_PIFs(n)) == sorted([coordinator, member])

    for t in x.tunnel.get_all():
        x.tunnel.destroy(t)
    for v in x.VLAN.get_all():
        x.VLAN.destroy(v)
    for b in x.Bond.get_all():
        x.Bond.destroy(b)
    x.PIF.reconfigure_ip(_physical(x, coordinator)["eth1"], "None", "", "", "", "")


def test_join_refused_across_network_backends(sim):
    """A host on the bridge backend cannot join an openvswitch pool (OPERATION_NOT_ALLOWED, as xapi)."""
    data_dir = _daemon.data_folder()
    with open(f"{data_dir}/network.conf", "w") as f:
        f.write("bridge\n")
    # the join reaches the coordinator on the joining host's own HTTPS port: the pool's
    d = _daemon.start("--https-port", str(sim.coordinator.https_port), data_dir=data_dir)
    try:
        s = login(d)
        assert failure(s.xenapi.pool.join, "127.0.0.2", "root", sim.coordinator.password) == \
            ["OPERATION_NOT_ALLOWED", "Network backends differ"]
        assert len(s.xenapi.host.get_all()) == 1
        s.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)


def test_restarted_member_gets_what_the_pool_made_meanwhile(sim, x):
    """A member's start copies the coordinator's networking too (xapi's sync_networking): a VLAN made
    while it was down is on its NIC once it is back."""
    coordinator, member = hosts_by_address(x)[:2]
    host = sim.hosts[1]
    pid = host.pid
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    host.kill(signal.SIGTERM)
    assert eventually(lambda: process_gone(pid), 20)
    tagged = _net(x, "made-meanwhile")
    vlan = x.VLAN.create(_physical(x, coordinator)["eth1"], "11", tagged)
    env = dict(os.environ, XAPI_ROOT_PASSWORD=host.password)
    with open(os.path.join(host.data_dir, "daemon.log"), "ab") as log:
        sim.restarted.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
    eth1 = _physical(x, member)["eth1"]

    def copied():
        return [v for v in x.PIF.get_VLAN_slave_of(eth1) if x.VLAN.get_tag(v) == "11"]
    (theirs,) = eventually(copied, 30)
    assert x.PIF.get_network(x.VLAN.get_untagged_PIF(theirs)) == tagged
    x.VLAN.destroy(theirs)
    x.VLAN.destroy(vlan)
