"""PIF.scan/introduce/forget, VLAN, Bond and tunnel through the XenAPI SDK on a real daemon: the rows
xapi makes and links both ways, its checks and errors, event.from seeing the new rows, xe pif-scan,
and a bond carrying the management interface across a restart."""
import os

import pytest

from tests import daemon as _daemon
from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import NULL, failure, login, new_vm, vif_record

host = own_daemon("--request-timeout", "10")
x = root_xenapi("host")


def net(x, name, mtu="1500"):
    return x.network.create({"name_label": name, "name_description": "", "MTU": mtu, "other_config": {},
                             "bridge": "", "tags": []})


def pif_of(x, device):
    """The host's physical PIF of `device`."""
    me = x.host.get_all()[0]
    return next(p for p in x.host.get_PIFs(me)
                if x.PIF.get_device(p) == device and x.PIF.get_physical(p))


def _inventory(d) -> dict:
    """The daemon's inventory file (KEY='value' lines, as /etc/xensource-inventory)."""
    inv = {}
    with open(os.path.join(d.data_dir, "inventory")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            inv[k] = v.strip("'")
    return inv


def changes(x, classes, token):
    """(class, operation, ref) of what event.from reports after `token` (class names in lower case, as xapi)."""
    batch = x.event_from(classes, token, 1.0)
    return {(e["class"], e["operation"], e["ref"]) for e in batch["events"]}


@pytest.fixture(scope="module")
def nics(x):
    """The simulated host's NICs, scanned once for the module."""
    me = x.host.get_all()[0]
    x.PIF.scan(me)
    return {d: pif_of(x, d) for d in ("eth0", "eth1", "eth2", "eth3")}


def test_scan_finds_the_simulated_nics(x):
    me = x.host.get_all()[0]
    token = x.event_from(["PIF", "network"], "", 0.0)["token"]
    eth0 = pif_of(x, "eth0")
    mac0 = x.PIF.get_MAC(eth0)
    x.PIF.scan(me)
    recs = {r["device"]: (ref, r) for ref, r in x.PIF.get_all_records().items() if r["physical"]}
    assert sorted(recs) == ["eth0", "eth1", "eth2", "eth3"]
    assert recs["eth0"][0] == eth0 and x.PIF.get_MAC(eth0) == mac0     # the first boot's PIF is the scan's eth0
    ref, eth1 = recs["eth1"]
    assert eth1["host"] == me and eth1["VLAN"] == "-1" and eth1["MTU"] == "1500" and eth1["managed"] is True
    assert eth1["currently_attached"] is False and eth1["management"] is False
    assert eth1["ip_configuration_mode"] == "None" and eth1["properties"] == {"gro": "on"}
    assert len({r["MAC"] for _, r in recs.values()}) == 4
    network = x.network.get_record(eth1["network"])
    assert network["bridge"] == "xenbr1" and network["name_label"] == "Pool-wide network associated with eth1"
    assert ref in network["PIFs"] and ref in x.host.get_PIFs(me)
    assert x.PIF_metrics.get_carrier(eth1["metrics"]) is True
    # the first boot scanned every NIC already: this scan added nothing
    assert not [e for e in changes(x, ["PIF", "network"], token) if e[1] == "add"]
    x.PIF.forget(ref)
    token = x.event_from(["PIF", "network"], "", 0.0)["token"]
    x.PIF.scan(me)                                          # the forgotten NIC comes back
    again = pif_of(x, "eth1")
    assert again != ref and x.PIF.get_network(again) == eth1["network"] and x.PIF.get_MAC(again) == eth1["MAC"]
    assert ("pif", "add", again) in changes(x, ["PIF", "network"], token)
    assert len([r for r in x.PIF.get_all_records().values() if r["physical"]]) == 4
    assert failure(x.PIF.scan, "OpaqueRef:nope") == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_forget_and_introduce(x, nics):
    me = x.host.get_all()[0]
    eth3 = nics["eth3"]
    mac, network = x.PIF.get_MAC(eth3), x.PIF.get_network(eth3)
    x.PIF.forget(eth3)
    assert failure(x.PIF.get_record, eth3)[0] == "HANDLE_INVALID"
    assert failure(x.PIF.forget, nics["eth0"]) == ["PIF_IS_MANAGEMENT_INTERFACE", nics["eth0"]]
    assert failure(x.PIF.introduce, me, "nonsense", "eth3", True) == ["MAC_INVALID", "nonsense"]
    assert failure(x.PIF.introduce, me, "02:00:00:00:00:01", "eth3", True) == \
        ["COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS", "eth3", "02:00:00:00:00:01"]
    assert failure(x.PIF.introduce, me, "", "eth1", True) == ["DUPLICATE_PIF_DEVICE_NAME", "eth1"]
    assert failure(x.PIF.introduce, me, "", "eth7", True) == ["MAC_INVALID", ""]
    again = x.PIF.introduce(me, mac.upper(), "eth3")        # managed left out: xapi's default, true
    rec = x.PIF.get_record(again)
    assert rec["MAC"] == mac and rec["network"] == network and rec["managed"] is True and rec["physical"] is True
    nics["eth3"] = again


def test_vlan_create_links_and_destroy(x, nics):
    me = x.host.get_all()[0]
    eth1 = nics["eth1"]
    n100 = net(x, "vlan100")
    token = x.event_from(["VLAN", "PIF"], "", 0.0)["token"]
    vlan = x.VLAN.create(eth1, "100", n100)
    rec = x.VLAN.get_record(vlan)
    untagged = rec["untagged_PIF"]
    assert rec["tagged_PIF"] == eth1 and rec["tag"] == "100"
    assert x.PIF.get_VLAN_slave_of(eth1) == [vlan]
    u = x.PIF.get_record(untagged)
    assert u["VLAN_master_of"] == vlan and u["VLAN"] == "100" and u["device"] == "eth1"
    assert u["MAC"] == "fe:ff:ff:ff:ff:ff" and u["host"] == me and u["network"] == n100
    assert u["physical"] is False and u["currently_attached"] is True and u["management"] is False
    assert u["metrics"] == x.PIF.get_metrics(eth1) and u["MTU"] == x.PIF.get_MTU(eth1)
    assert x.network.get_PIFs(n100) == [untagged]
    seen = changes(x, ["VLAN", "PIF"], token)
    assert ("vlan", "add", vlan) in seen and ("pif", "add", untagged) in seen and ("pif", "mod", eth1) in seen

    other = net(x, "other")
    assert failure(x.VLAN.create, eth1, "4095", other) == ["VLAN_TAG_INVALID", "4095"]
    assert failure(x.VLAN.create, eth1, "-1", other) == ["VLAN_TAG_INVALID", "-1"]
    assert failure(x.VLAN.create, eth1, "100", other) == ["PIF_VLAN_EXISTS", "eth1"]
    assert failure(x.VLAN.create, eth1, "101", n100) == ["NETWORK_ALREADY_CONNECTED", me, untagged]
    assert failure(x.VLAN.create, untagged, "5", other) == ["PIF_IS_VLAN", untagged]
    assert failure(x.VLAN.create, "OpaqueRef:nope", "5", other) == ["HANDLE_INVALID", "PIF", "OpaqueRef:nope"]
    assert failure(x.PIF.destroy, eth1) == ["PIF_IS_PHYSICAL"]
    assert failure(x.PIF.forget, eth1) == ["PIF_VLAN_STILL_EXISTS", eth1]

    token = x.event_from(["VLAN", "PIF"], "", 0.0)["token"]
    x.VLAN.destroy(vlan)
    assert failure(x.VLAN.get_record, vlan)[0] == "HANDLE_INVALID"
    assert failure(x.PIF.get_record, untagged)[0] == "HANDLE_INVALID"
    assert x.PIF.get_VLAN_slave_of(eth1) == [] and x.network.get_PIFs(n100) == []
    seen = changes(x, ["VLAN", "PIF"], token)
    assert ("vlan", "del", vlan) in seen and ("pif", "del", untagged) in seen
    assert failure(x.VLAN.destroy, vlan) == ["HANDLE_INVALID", "VLAN", vlan]


def test_deprecated_pif_vlan_calls(x, nics):
    me = x.host.get_all()[0]
    n = net(x, "vlan7")
    assert failure(x.PIF.create_VLAN, "eth9", n, me, "7") == ["INVALID_VALUE", "device", "eth9"]
    untagged = x.PIF.create_VLAN("eth2", n, me, "7")
    vlan = x.PIF.get_VLAN_master_of(untagged)
    assert x.VLAN.get_tagged_PIF(vlan) == nics["eth2"] and x.VLAN.get_tag(vlan) == "7"
    assert x.PIF.get_VLAN_slave_of(nics["eth2"]) == [vlan]
    x.PIF.destroy(untagged)
    assert failure(x.VLAN.get_record, vlan)[0] == "HANDLE_INVALID"
    assert x.PIF.get_VLAN_slave_of(nics["eth2"]) == []


def test_bond_create_links_moves_and_destroy(x, nics, host):
    me = x.host.get_all()[0]
    eth1, eth2 = nics["eth1"], nics["eth2"]
    bonded = net(x, "bonded")
    n20 = net(x, "vlan20")
    vlan = x.VLAN.create(eth1, "20", n20)                   # moves up onto the bond, and down again
    vm = new_vm(x, "on-eth2")                               # a VM that can start only here: its VIF moves too
    vif = x.VIF.create(vif_record(vm, x.PIF.get_network(eth2)))
    token = x.event_from(["Bond", "PIF"], "", 0.0)["token"]
    bond = x.Bond.create(bonded, [eth1, eth2, eth1], "", "active-backup")   # Xen Orchestra's four arguments
    rec = x.Bond.get_record(bond)
    master = rec["master"]
    assert sorted(rec["slaves"]) == sorted([eth1, eth2]) and rec["primary_slave"] == eth1
    assert rec["mode"] == "active-backup" and rec["properties"] == {} and rec["auto_update_mac"] is True
    assert rec["links_up"] == "2"                            # both simulated NICs have a carrier
    m = x.PIF.get_record(master)
    assert m["bond_master_of"] == [bond] and m["device"] == "bond0" and m["host"] == me
    assert m["network"] == bonded and m["MAC"] == x.PIF.get_MAC(eth1) and m["physical"] is False
    assert m["currently_attached"] is True and m["MTU"] == "1500" and m["properties"] == {"gro": "on"}
    for member in (eth1, eth2):
        assert x.PIF.get_bond_slave_of(member) == bond and x.PIF.get_currently_attached(member) is False
    seen = changes(x, ["Bond", "PIF"], token)
    assert ("bond", "add", bond) in seen and ("pif", "add", master) in seen and ("pif", "mod", eth2) in seen
    moved = x.PIF.get_VLAN_slave_of(master)                 # the VLAN is remade on the bond
    assert len(moved) == 1 and x.VLAN.get_tag(moved[0]) == "20" and x.PIF.get_VLAN_slave_of(eth1) == []
    assert failure(x.VLAN.get_record, vlan)[0] == "HANDLE_INVALID"
    assert x.PIF.get_device(x.VLAN.get_untagged_PIF(moved[0])) == "bond0"
    assert x.PIF.get_network(x.VLAN.get_untagged_PIF(moved[0])) == n20
    assert x.VIF.get_network(vif) == bonded and x.network.get_VIFs(bonded) == [vif]
    listed = ok(xe(host, "bond-list", "params=uuid,master,slaves"))   # xe's generic lists see the rows
    assert x.Bond.get_uuid(bond) in listed and x.PIF.get_uuid(master) in listed and x.PIF.get_uuid(eth2) in listed
    listed = ok(xe(host, "vlan-list", f"tagged-PIF={x.PIF.get_uuid(master)}", "params=uuid,tag"))
    assert x.VLAN.get_uuid(moved[0]) in listed and "20" in listed

    other = net(x, "other-bond")
    assert failure(x.Bond.create, other, [eth1, nics["eth3"]], "", "balance-slb", {}) == ["PIF_ALREADY_BONDED", eth1]
    assert failure(x.Bond.create, bonded, [nics["eth3"]], "", "balance-slb", {}) == \
        ["NETWORK_ALREADY_CONNECTED", me, master]
    assert failure(x.Bond.create, other, [], "", "balance-slb", {}) == ["PIF_BOND_NEEDS_MORE_MEMBERS"]
    assert failure(x.Bond.create, other, [nics["eth3"]], "zz", "balance-slb", {}) == ["MAC_INVALID", "zz"]
    assert failure(x.Bond.create, other, [nics["eth3"]], "", "balance-slb", {"lacp-time": "fast"}) == \
        ["INVALID_VALUE", "properties", "lacp-time = fast"]
    untagged = x.VLAN.get_untagged_PIF(moved[0])
    assert failure(x.Bond.create, other, [untagged], "", "balance-slb", {}) == ["PIF_VLAN_EXISTS", "bond0"]
    assert failure(x.VLAN.create, eth1, "30", other) == ["CANNOT_ADD_VLAN_TO_BOND_SLAVE", eth1]
    assert failure(x.PIF.forget, eth2) == ["PIF_ALREADY_BONDED", eth2]
    assert failure(x.PIF.plug, eth2) == ["CANNOT_PLUG_BOND_SLAVE", eth2]

    x.Bond.set_mode(bond, "lacp")
    assert x.Bond.get_properties(bond) == {"hashing_algorithm": "tcpudp_ports", "lacp-time": "slow",
                                           "lacp-fallback-ab": "true"}
    x.Bond.set_property(bond, "hashing_algorithm", "src_mac")
    assert x.Bond.get_properties(bond)["hashing_algorithm"] == "src_mac"
    assert failure(x.Bond.set_property, bond, "hashing_algorithm", "md5") == \
        ["INVALID_VALUE", "properties", "hashing_algorithm = md5"]
    x.Bond.set_mode(bond, "balance-slb")
    assert x.Bond.get_mode(bond) == "balance-slb" and x.Bond.get_properties(bond) == {}

    x.Bond.destroy(bond)
    assert failure(x.Bond.get_record, bond)[0] == "HANDLE_INVALID"
    assert failure(x.PIF.get_record, master)[0] == "HANDLE_INVALID"
    for member in (eth1, eth2):
        assert x.PIF.get_bond_slave_of(member) == NULL and x.PIF.get_currently_attached(member) is True
    back = x.PIF.get_VLAN_slave_of(eth1)                    # the VLAN came down to the primary member
    assert len(back) == 1 and x.VLAN.get_tag(back[0]) == "20" and x.PIF.get_network(
        x.VLAN.get_untagged_PIF(back[0])) == n20
    assert x.network.get_PIFs(bonded) == []
    assert x.VIF.get_network(vif) == x.PIF.get_network(eth1)   # down onto the primary member's network
    x.VLAN.destroy(back[0])
    x.VM.destroy(vm)
    assert failure(x.Bond.destroy, bond) == ["HANDLE_INVALID", "Bond", bond]


def test_bond_takes_the_management_interface(x, nics):
    me = x.host.get_all()[0]
    eth0, eth3 = nics["eth0"], nics["eth3"]
    ip = x.PIF.get_IP(eth0)
    n = net(x, "management-bond")
    bond = x.Bond.create(n, [eth3, eth0], "", "balance-slb", {})
    master = x.Bond.get_master(bond)
    assert x.Bond.get_primary_slave(bond) == eth0 and x.PIF.get_MAC(master) == x.PIF.get_MAC(eth0)
    assert x.host.get_management_interface(me) == master
    m = x.PIF.get_record(master)
    assert m["management"] is True and m["currently_attached"] is True
    assert m["ip_configuration_mode"] == "Static" and m["IP"] == ip
    assert x.PIF.get_management(eth0) is False and x.PIF.get_ip_configuration_mode(eth0) == "None"
    assert failure(x.PIF.unplug, master) == ["PIF_IS_MANAGEMENT_INTERFACE", master]
    x.Bond.destroy(bond)
    assert x.host.get_management_interface(me) == eth0
    assert x.PIF.get_management(eth0) is True and x.PIF.get_IP(eth0) == ip
    assert x.PIF.get_ip_configuration_mode(eth0) == "Static" and x.PIF.get_currently_attached(eth0) is True


def test_tunnel_checks(x, nics):
    n = net(x, "tunnelled")
    eth1, eth2 = nics["eth1"], nics["eth2"]
    bond = x.Bond.create(net(x, "tunnel-bond"), [eth1, eth2], "02:11:22:33:44:55", "balance-slb", {})
    assert x.PIF.get_MAC(x.Bond.get_master(bond)) == "02:11:22:33:44:55"   # a MAC given is kept
    assert x.Bond.get_auto_update_mac(bond) is False
    assert failure(x.tunnel.create, eth1, n, "gre") == ["CANNOT_ADD_TUNNEL_TO_BOND_SLAVE", eth1]
    x.Bond.destroy(bond)
    # an unconfigured transport: TRANSPORT_PIF_NOT_CONFIGURED from the plug, and nothing stays
    assert failure(x.tunnel.create, eth2, n, "gre") == ["TRANSPORT_PIF_NOT_CONFIGURED", eth2]
    assert failure(x.tunnel.create, "OpaqueRef:nope", n) == ["HANDLE_INVALID", "PIF", "OpaqueRef:nope"]
    assert failure(x.tunnel.destroy, "OpaqueRef:nope") == ["HANDLE_INVALID", "tunnel", "OpaqueRef:nope"]
    assert x.tunnel.get_all() == [] and x.PIF.get_tunnel_transport_PIF_of(nics["eth0"]) == []


def test_xe_pif_scan_finds_a_forgotten_nic(x, nics, host):
    me = x.host.get_all()[0]
    eth3 = nics["eth3"]
    mac, network = x.PIF.get_MAC(eth3), x.PIF.get_network(eth3)
    x.PIF.forget(eth3)
    ok(xe(host, "pif-scan", f"host-uuid={x.host.get_uuid(me)}"))
    again = pif_of(x, "eth3")
    assert again != eth3 and x.PIF.get_MAC(again) == mac and x.PIF.get_network(again) == network
    r = xe(host, "pif-scan", "host-uuid=00000000-0000-0000-0000-000000000000")
    assert r.returncode != 0 and "The uuid you supplied was invalid." in r.stdout + r.stderr


def test_bond_and_vlan_survive_a_restart():
    d = _daemon.start()
    try:
        s = login(d)
        x = s.xenapi
        me = x.host.get_all()[0]
        x.PIF.scan(me)
        eth0, eth1 = pif_of(x, "eth0"), pif_of(x, "eth1")
        eth0_bridge = x.network.get_bridge(x.PIF.get_network(eth0))
        bond_net = net(x, "management-bond")
        bond = x.Bond.create(bond_net, [eth0, eth1], "", "active-backup", {})
        master = x.Bond.get_master(bond)
        # as xapi's move_management: the inventory, which the next start follows, names the bond's bridge
        assert _inventory(d)["MANAGEMENT_INTERFACE"] == x.network.get_bridge(bond_net)
        assert _inventory(d)["MANAGEMENT_ADDRESS_TYPE"] == "ipv4"
        vlan = x.VLAN.create(master, "42", net(x, "vlan42"))
        s.xenapi.session.logout()
        assert d.stop() == 0
        d = _daemon.start(data_dir=d.data_dir)
        s = login(d)
        x = s.xenapi
        assert x.host.get_management_interface(me) == master and x.PIF.get_currently_attached(master) is True
        assert sorted(x.Bond.get_slaves(bond)) == sorted([eth0, eth1]) and x.PIF.get_bond_master_of(master) == [bond]
        assert x.PIF.get_bond_slave_of(eth0) == bond and x.PIF.get_management(eth0) is False
        assert x.PIF.get_VLAN_slave_of(master) == [vlan] and x.VLAN.get_tag(vlan) == "42"
        x.VLAN.destroy(vlan)
        x.Bond.destroy(bond)
        assert x.host.get_management_interface(me) == eth0
        assert _inventory(d)["MANAGEMENT_INTERFACE"] == eth0_bridge
        s.xenapi.session.logout()
        assert d.stop() == 0
        d = _daemon.start(data_dir=d.data_dir)        # the inventory names eth0's bridge: management stays back
        s = login(d)
        x = s.xenapi
        assert x.host.get_management_interface(me) == eth0 and x.PIF.get_management(eth1) is False
        assert x.PIF.get_currently_attached(eth0) is True and x.PIF.get_IP(eth0) == "127.0.0.1"
        s.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)


def test_tunnel_create_and_destroy(x, nics):
    """The simulated host runs openvswitch (XCP-ng's default network backend), so tunnels work."""
    me = x.host.get_all()[0]
    assert x.host.get_software_version(me)["network_backend"] == "openvswitch"
    eth1 = nics["eth1"]
    x.PIF.reconfigure_ip(eth1, "Static", "192.0.2.41", "255.255.255.0", "", "")
    n = net(x, "overlay")
    try:
        tunnel = x.tunnel.create(eth1, n, "vxlan")
        access = x.tunnel.get_access_PIF(tunnel)
        rec = x.PIF.get_record(access)
        assert rec["device"] == "tunnel0" and rec["host"] == me and rec["network"] == n
        assert rec["currently_attached"] is True and rec["physical"] is False and rec["MTU"] == "1500"  # its bridge's
        assert rec["tunnel_access_PIF_of"] == [tunnel] and x.PIF.get_tunnel_transport_PIF_of(eth1) == [tunnel]
        assert x.tunnel.get_transport_PIF(tunnel) == eth1 and x.tunnel.get_protocol(tunnel) == "vxlan"
        assert x.tunnel.get_status(tunnel) == {"active": "false"}
        assert x.network.get_PIFs(n) == [access]
        assert failure(x.tunnel.create, eth1, n, "gre") == ["NETWORK_ALREADY_CONNECTED", me, access]
        assert failure(x.tunnel.create, access, net(x, "inner"), "gre") == ["IS_TUNNEL_ACCESS_PIF", access]
        # the transport going down takes the tunnel with it
        x.PIF.unplug(eth1)
        assert x.PIF.get_currently_attached(access) is False
        x.tunnel.destroy(tunnel)
        assert x.tunnel.get_all() == [] and access not in x.PIF.get_all()
        assert x.PIF.get_tunnel_transport_PIF_of(eth1) == [] and x.network.get_PIFs(n) == []
    finally:
        x.PIF.reconfigure_ip(eth1, "None", "", "", "", "")


def test_bridge_backend_refuses_tunnels_and_igmp_snooping():
    """A host whose network.conf says bridge reports network_backend=bridge, as xapi without
    openvswitch: tunnel.create and enabling IGMP snooping are refused (OPENVSWITCH_NOT_ACTIVE)."""
    data_dir = _daemon.data_folder()
    with open(f"{data_dir}/network.conf", "w") as f:
        f.write("bridge\n")
    d = _daemon.start(data_dir=data_dir)
    try:
        s = login(d)
        x = s.xenapi
        me = x.host.get_all()[0]
        pool = x.pool.get_all()[0]
        assert x.host.get_software_version(me)["network_backend"] == "bridge"
        eth0 = pif_of(x, "eth0")
        assert failure(x.tunnel.create, eth0, net(x, "no-ovs")) == ["OPENVSWITCH_NOT_ACTIVE"]
        assert failure(x.pool.set_igmp_snooping_enabled, pool, True) == ["OPENVSWITCH_NOT_ACTIVE"]
        assert x.tunnel.get_all() == [] and x.pool.get_igmp_snooping_enabled(pool) is False
        s.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)
