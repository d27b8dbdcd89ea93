"""xe's VLAN, tunnel, bond and PIF commands with the real `xe` on a live daemon, each checked against
the API's rows (through the XenAPI SDK) and its failures as xe prints them."""
from __future__ import annotations

import pytest

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi

host = own_daemon("--request-timeout", "10")
x = root_xenapi("host")


@pytest.fixture(scope="module")
def nics(host, x):
    me = x.host.get_all()[0]
    ok(xe(host, "pif-scan", f"host-uuid={x.host.get_uuid(me)}"))
    return {x.PIF.get_device(p): p for p in x.host.get_PIFs(me) if x.PIF.get_physical(p)}


def network(host, name) -> str:
    return ok(xe(host, "network-create", f"name-label={name}"))


def test_vlan_create_and_destroy(host, x, nics):
    net = network(host, "xe-vlan-net")
    eth1 = nics["eth1"]
    out = ok(xe(host, "vlan-create", f"pif-uuid={x.PIF.get_uuid(eth1)}", "vlan=42", f"network-uuid={net}"))
    untagged = x.PIF.get_by_uuid(out)                  # xe prints the untagged PIF's uuid
    vlan = x.PIF.get_VLAN_master_of(untagged)
    rec = x.VLAN.get_record(vlan)
    assert rec["tag"] == "42" and rec["tagged_PIF"] == eth1 and rec["untagged_PIF"] == untagged
    assert x.PIF.get_VLAN(untagged) == "42" and x.PIF.get_network(untagged) == x.network.get_by_uuid(net)
    assert vlan in x.PIF.get_VLAN_slave_of(eth1)
    listed = ok(xe(host, "vlan-list", f"tagged-PIF={x.PIF.get_uuid(eth1)}", "params=tag", "--minimal"))
    assert listed == "42"
    # the same tag twice is the API's failure, printed as xe prints it
    again = xe(host, "vlan-create", f"pif-uuid={x.PIF.get_uuid(eth1)}", "vlan=42",
               f"network-uuid={network(host, 'xe-vlan-net2')}")
    assert again.returncode != 0 and "PIF_VLAN_EXISTS" in again.stderr + again.stdout
    bad = xe(host, "vlan-create", f"pif-uuid={x.PIF.get_uuid(eth1)}", "vlan=x", f"network-uuid={net}")
    assert bad.returncode != 0 and "Failed to parse parameter 'vlan': expecting an integer" in bad.stderr
    ok(xe(host, "vlan-destroy", f"uuid={x.VLAN.get_uuid(vlan)}"))
    assert vlan not in x.VLAN.get_all() and untagged not in x.PIF.get_all()
    assert x.PIF.get_VLAN_slave_of(eth1) == []


def test_vlan_destroy_by_untagged_pif_uuid(host, x, nics):
    """Rio's way, which cli_operations keeps: the untagged PIF's uuid in place of the VLAN's."""
    net = network(host, "xe-vlan-rio")
    out = ok(xe(host, "vlan-create", f"pif-uuid={x.PIF.get_uuid(nics['eth2'])}", "vlan=7", f"network-uuid={net}"))
    vlan = x.PIF.get_VLAN_master_of(x.PIF.get_by_uuid(out))
    ok(xe(host, "vlan-destroy", f"uuid={out}"))
    assert vlan not in x.VLAN.get_all() and out not in [x.PIF.get_uuid(p) for p in x.PIF.get_all()]
    gone = xe(host, "vlan-destroy", "uuid=00000000-0000-0000-0000-000000000000")
    # neither a VLAN nor a PIF: the VLAN lookup's failure, as cli_operations re-raises it
    assert gone.returncode == 1
    assert gone.stderr == "The uuid you supplied was invalid.\ntype: VLAN\nuuid: 00000000-0000-0000-0000-000000000000\n"


def test_tunnel_create_and_destroy(host, x, nics):
    net = network(host, "xe-tunnel-net")
    eth3 = x.PIF.get_uuid(nics["eth3"])
    bare = xe(host, "tunnel-create", f"pif-uuid={eth3}", f"network-uuid={net}")
    assert bare.returncode == 1 and bare.stderr == ("Error code: TRANSPORT_PIF_NOT_CONFIGURED\n"
                                                    f"Error parameters: {eth3}\n")
    ok(xe(host, "pif-reconfigure-ip", f"uuid={eth3}", "mode=static", "IP=192.0.2.10", "netmask=255.255.255.0"))
    out = ok(xe(host, "tunnel-create", f"pif-uuid={x.PIF.get_uuid(nics['eth3'])}", f"network-uuid={net}",
                "protocol=vxlan"))
    access = x.PIF.get_by_uuid(out)                    # xe prints the access PIF's uuid
    tunnel = x.PIF.get_tunnel_access_PIF_of(access)[0]
    rec = x.tunnel.get_record(tunnel)
    assert rec["transport_PIF"] == nics["eth3"] and rec["access_PIF"] == access and rec["protocol"] == "vxlan"
    bad = xe(host, "tunnel-create", f"pif-uuid={x.PIF.get_uuid(nics['eth3'])}", f"network-uuid={net}",
             "protocol=ipip")
    assert bad.returncode != 0 and "Expected 'gre','vxlan', got ipip" in bad.stderr
    ok(xe(host, "tunnel-destroy", f"uuid={rec['uuid']}"))
    assert tunnel not in x.tunnel.get_all() and access not in x.PIF.get_all()


def test_bond_create_set_mode_destroy(host, x, nics):
    net = network(host, "xe-bond-net")
    members = [nics["eth2"], nics["eth3"]]
    bad = xe(host, "bond-create", f"network-uuid={net}",
             "pif-uuids=" + ",".join(x.PIF.get_uuid(p) for p in members), "mode=round-robin")
    assert bad.returncode != 0 and "Invalid bond mode. Got round-robin" in bad.stderr
    out = ok(xe(host, "bond-create", f"network-uuid={net}",
                "pif-uuids=" + ",".join(x.PIF.get_uuid(p) for p in members), "mode=active-backup"))
    bond = x.Bond.get_by_uuid(out)
    rec = x.Bond.get_record(bond)
    assert sorted(rec["slaves"]) == sorted(members) and rec["mode"] == "active-backup"
    assert x.PIF.get_network(rec["master"]) == x.network.get_by_uuid(net)
    ok(xe(host, "bond-set-mode", f"uuid={out}", "mode=lacp"))
    assert x.Bond.get_mode(bond) == "lacp"
    assert ok(xe(host, "bond-param-get", f"uuid={out}", "param-name=mode")) == "lacp"
    ok(xe(host, "bond-destroy", f"uuid={out}"))
    assert bond not in x.Bond.get_all() and rec["master"] not in x.PIF.get_all()
    assert all(x.PIF.get_bond_slave_of(p) == "OpaqueRef:NULL" for p in members)


def test_pif_introduce_and_forget(host, x, nics):
    me = x.host.get_all()[0]
    eth3 = nics["eth3"]
    mac, device = x.PIF.get_MAC(eth3), x.PIF.get_device(eth3)
    ok(xe(host, "pif-forget", f"uuid={x.PIF.get_uuid(eth3)}"))
    assert eth3 not in x.PIF.get_all()
    out = ok(xe(host, "pif-introduce", f"host-uuid={x.host.get_uuid(me)}", f"device={device}", f"mac={mac}"))
    pif = x.PIF.get_by_uuid(out)
    assert x.PIF.get_device(pif) == device and x.PIF.get_MAC(pif) == mac and x.PIF.get_managed(pif) is True
    assert pif in x.host.get_PIFs(me)
    nics["eth3"] = pif
    missing = xe(host, "pif-introduce", f"host-uuid={x.host.get_uuid(me)}")
    assert missing.returncode != 0 and "device" in missing.stderr + missing.stdout


def test_help_lists_the_commands(host):
    names = ok(xe(host, "help", "--all", "--minimal")).split(",")
    for cmd in ("vlan-create", "vlan-destroy", "pool-vlan-create", "tunnel-create", "tunnel-destroy",
                "bond-create", "bond-destroy", "bond-set-mode", "pif-introduce", "pif-forget"):
        assert cmd in names
    text = ok(xe(host, "help", "bond-create"))
    assert "reqd params     : network-uuid, pif-uuids" in text and "mac, mode, properties:" in text


def test_pif_db_forget_then_scan(host, x, nics):
    me = x.host.get_all()[0]
    pif = nics["eth3"]
    mac = x.PIF.get_MAC(pif)
    ok(xe(host, "pif-db-forget", f"uuid={x.PIF.get_uuid(pif)}"))
    assert pif not in x.PIF.get_all() and pif not in x.host.get_PIFs(me)
    ok(xe(host, "pif-scan", f"host-uuid={x.host.get_uuid(me)}"))      # the NIC is found again
    again = [p for p in x.host.get_PIFs(me) if x.PIF.get_device(p) == "eth3"]
    assert len(again) == 1 and x.PIF.get_MAC(again[0]) == mac
    nics["eth3"] = again[0]


def test_pool_vlan_create(host, x, nics):
    net = network(host, "xe-pool-vlan")
    out = ok(xe(host, "pool-vlan-create", f"pif-uuid={x.PIF.get_uuid(nics['eth1'])}", "vlan=99",
                f"network-uuid={net}"))
    pifs = [x.PIF.get_by_uuid(u) for u in out.split("\n")]       # one untagged PIF per host: one host here
    assert len(pifs) == 1 and x.PIF.get_VLAN(pifs[0]) == "99"
    assert x.PIF.get_network(pifs[0]) == x.network.get_by_uuid(net)
    ok(xe(host, "vlan-destroy", f"uuid={out}"))
    assert pifs[0] not in x.PIF.get_all()


def test_management_reconfigure_onto_the_same_pif(host, x):
    me = x.host.get_all()[0]
    mgmt = next(p for p in x.host.get_PIFs(me) if x.PIF.get_management(p))
    ok(xe(host, "host-management-reconfigure", f"pif-uuid={x.PIF.get_uuid(mgmt)}"))
    assert x.PIF.get_management(mgmt) is True
    ok(xe(host, "pool-management-reconfigure", f"network-uuid={x.network.get_uuid(x.PIF.get_network(mgmt))}"))
    assert x.PIF.get_management(mgmt) is True
    bad = xe(host, "host-management-reconfigure", "pif-uuid=nope")
    assert bad.returncode == 1 and "nope" in bad.stderr
