"""The management interface and the host's own calls with the XenAPI SDK against a real daemon:
host/pool.management_reconfigure (onto another NIC, onto a VLAN, and back) with xapi's refusals,
management_disable, the emergency-only local_management_reconfigure, pool.create_VLAN(_from_PIF),
dmesg and debug keys, status report capabilities, licensing, bug report upload without a network,
syslog, RRD backup, power_on's checks, and restart_agent/shutdown_agent of the daemon itself."""
import json
import os
import xml.etree.ElementTree as ET
import xmlrpc.client

import pytest

from tests import daemon as _daemon
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import eventually, failure, login

host = own_daemon()
x = root_xenapi("host")


@pytest.fixture(scope="module")
def h(x):
    return x.host.get_all()[0]


def _pif(x, h, device, vlan=-1):
    return next(p for p in x.host.get_PIFs(h)
                if x.PIF.get_device(p) == device and int(x.PIF.get_VLAN(p)) == vlan)


def _inventory(d) -> dict:
    inv = {}
    for line in open(os.path.join(d.data_dir, "inventory")):
        k, _, v = line.strip().partition("=")
        inv[k] = v.strip("'")
    return inv


def _management(x, h):
    return [p for p in x.host.get_PIFs(h) if x.PIF.get_management(p)]


def test_management_reconfigure_moves_the_interface(x, host, h):
    eth0, eth1 = _pif(x, h, "eth0"), _pif(x, h, "eth1")
    assert _management(x, h) == [eth0] and x.host.get_address(h) == "127.0.0.1"
    assert failure(x.host.management_reconfigure, eth1) == ["PIF_HAS_NO_NETWORK_CONFIGURATION", eth1]
    x.PIF.reconfigure_ip(eth1, "Static", "192.0.2.10", "255.255.255.0", "", "")
    x.host.management_reconfigure(eth1)
    assert _management(x, h) == [eth1] and x.host.get_management_interface(h) == eth1
    assert x.PIF.get_currently_attached(eth1) is True
    assert x.host.get_address(h) == "192.0.2.10"
    bridge = x.network.get_bridge(x.PIF.get_network(eth1))
    assert _inventory(host)["MANAGEMENT_INTERFACE"] == bridge
    # the old one may now go down; the new one may not
    assert failure(x.PIF.unplug, eth1) == ["PIF_IS_MANAGEMENT_INTERFACE", eth1]
    x.host.management_reconfigure(eth1)          # already the management PIF: nothing to do
    x.host.management_reconfigure(eth0)
    assert _management(x, h) == [eth0] and x.host.get_address(h) == "127.0.0.1"
    assert failure(x.host.management_reconfigure, "OpaqueRef:nope") == ["HANDLE_INVALID", "PIF", "OpaqueRef:nope"]


def test_management_reconfigure_refusals(x, h):
    eth2, eth3 = _pif(x, h, "eth2"), _pif(x, h, "eth3")
    net = x.network.create({"name_label": "bond net", "name_description": "", "MTU": 1500, "other_config": {}})
    bond = x.Bond.create(net, [eth2, eth3], "", "active-backup", {})
    try:
        assert failure(x.host.management_reconfigure, eth2) == ["CANNOT_PLUG_BOND_SLAVE", eth2]
    finally:
        x.Bond.destroy(bond)
        x.network.destroy(net)
    x.PIF.set_primary_address_type(eth3, "IPv6")
    try:
        assert failure(x.host.management_reconfigure, eth3) == ["PIF_HAS_NO_V6_NETWORK_CONFIGURATION", eth3]
        x.PIF.reconfigure_ipv6(eth3, "Static", "2001:db8::5/64", "", "")
        assert failure(x.host.management_reconfigure, eth3) == ["PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE"]
    finally:
        x.PIF.reconfigure_ipv6(eth3, "None", "", "", "")
        x.PIF.set_primary_address_type(eth3, "IPv4")
    assert _management(x, h) == [_pif(x, h, "eth0")]


def test_management_on_a_vlan(x, h):
    eth0 = _pif(x, h, "eth0")
    net = x.network.create({"name_label": "mgmt vlan", "name_description": "", "MTU": 1500, "other_config": {}})
    vlan = x.VLAN.create(eth0, 99, net)
    untagged = x.VLAN.get_untagged_PIF(vlan)
    x.PIF.reconfigure_ip(untagged, "Static", "127.0.0.1", "255.0.0.0", "", "")
    x.host.management_reconfigure(untagged)
    assert _management(x, h) == [untagged] and int(x.PIF.get_VLAN(untagged)) == 99
    assert failure(x.VLAN.destroy, vlan) == ["PIF_IS_MANAGEMENT_INTERFACE", untagged]
    assert x.pool.get_all()                      # still answering on its address
    x.host.management_reconfigure(eth0)
    x.VLAN.destroy(vlan)
    x.network.destroy(net)
    assert _management(x, h) == [eth0]


def test_pool_management_reconfigure(x, h):
    eth0, eth1 = _pif(x, h, "eth0"), _pif(x, h, "eth1")
    empty = x.network.create({"name_label": "no PIFs", "name_description": "", "MTU": 1500, "other_config": {}})
    try:
        assert failure(x.pool.management_reconfigure, empty) == ["PIF_NOT_PRESENT", h, empty]
    finally:
        x.network.destroy(empty)
    x.pool.management_reconfigure(x.PIF.get_network(eth1))
    assert _management(x, h) == [eth1]
    x.pool.management_reconfigure(x.PIF.get_network(eth0))
    assert _management(x, h) == [eth0] and x.host.get_address(h) == "127.0.0.1"


def test_management_disable_and_emergency_reconfigure(x, host, h):
    assert failure(x.host.local_management_reconfigure, "xenbr0") == ["POOL_NOT_IN_EMERGENCY_MODE"]
    x.host.management_disable()
    try:
        assert _management(x, h) == []
        assert _inventory(host)["MANAGEMENT_INTERFACE"] == ""
    finally:
        x.host.management_reconfigure(_pif(x, h, "eth0"))
    assert _management(x, h) == [_pif(x, h, "eth0")]


def test_pool_create_vlan(x, h):
    net = x.network.create({"name_label": "v7", "name_description": "", "MTU": 1500, "other_config": {}})
    pifs = x.pool.create_VLAN("eth1", net, 7)
    assert len(pifs) == 1 and int(x.PIF.get_VLAN(pifs[0])) == 7 and x.PIF.get_host(pifs[0]) == h
    assert x.PIF.get_currently_attached(pifs[0]) is True and x.PIF.get_network(pifs[0]) == net
    assert failure(x.pool.create_VLAN, "eth9", net, 8) == ["INVALID_VALUE", "device", "eth9"]
    x.PIF.destroy(pifs[0])
    net2 = x.network.create({"name_label": "v8", "name_description": "", "MTU": 1500, "other_config": {}})
    eth0 = _pif(x, h, "eth0")
    assert failure(x.pool.create_VLAN_from_PIF, eth0, net2, 5000) == ["VLAN_TAG_INVALID", "5000"]
    pifs = x.pool.create_VLAN_from_PIF(eth0, net2, 8)
    assert [int(x.PIF.get_VLAN(p)) for p in pifs] == [8] and x.PIF.get_device(pifs[0]) == "eth0"
    assert x.VLAN.get_tagged_PIF(x.PIF.get_VLAN_master_of(pifs[0])) == eth0
    x.VLAN.destroy(x.PIF.get_VLAN_master_of(pifs[0]))
    x.network.destroy(net)
    x.network.destroy(net2)


def test_dmesg_shows_debug_keys(x, h):
    before = x.host.dmesg(h)
    assert "Xen version" in before
    x.host.send_debug_keys(h, "q")
    after = x.host.dmesg(h)
    assert "'q' pressed -> dump domain (and guest debug) info" in after
    assert after.startswith(before.rstrip("\n"))
    assert failure(x.host.dmesg, "OpaqueRef:nope") == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_system_status_capabilities(x, h):
    doc = ET.fromstring(x.host.get_system_status_capabilities(h))
    assert doc.tag == "system-status-capabilities"
    keys = {c.get("key") for c in doc}
    assert {"xenserver-logs", "system-logs", "xen-info"} <= keys
    assert all(c.get("default-checked") in ("yes", "no") and c.get("content-type") for c in doc)


def test_licensing(x, h):
    edition = x.host.get_edition(h)
    assert failure(x.host.license_add, h, "not base64!") == ["LICENSE_PROCESSING_ERROR"]
    assert failure(x.host.license_apply, h, "bGljZW5zZQ==") == ["LICENSE_PROCESSING_ERROR"]
    x.host.license_remove(h)
    assert x.host.get_edition(h) == edition


def test_bugreport_upload_without_a_network(x, h):
    # nothing listens on port 1: curl's exit 7, as xapi words it
    assert failure(x.host.bugreport_upload, h, "http://127.0.0.1:1/upload", {}) == \
        ["INTERNAL_ERROR", "Failed to connect to host"]


def test_syslog_and_rrd_backup(x, host, h):
    x.host.set_logging(h, {"syslog_destination": "logs.example.org", "syslog_destination_only": "true"})
    x.host.syslog_reconfigure(h)
    with open(os.path.join(host.data_dir, "syslog.conf")) as f:
        assert f.read() == 'SYSLOG_HOST="logs.example.org"\nSYSLOG_REMOTE_ONLY="1"\n'
    x.host.set_logging(h, {})
    x.host.syslog_reconfigure(h)
    assert os.path.getsize(os.path.join(host.data_dir, "syslog.conf")) == 0
    path = os.path.join(host.data_dir, "rrd-backup.json")
    x.host.backup_rrds(h, 0.2)
    assert eventually(lambda: os.path.exists(path), 5)
    with open(path) as f:
        assert json.load(f)["host"] == h
    x.host.sync_data(h)                          # the coordinator itself: nothing to copy


def test_power_on_a_live_host(x, h):
    assert failure(x.host.power_on, h) == ["HOST_IS_LIVE", h]


def test_restart_agent(x, host, h):
    name = x.host.get_name_label(h)
    x.host.set_name_label(h, "kept across the restart")
    pid = host.pid
    old = login(host)._session
    x.host.restart_agent(h)
    # the daemon stops, then the same process starts it again (exec): sessions are gone, data kept
    # (a raw call: the SDK would log in again by itself on SESSION_INVALID)
    raw = xmlrpc.client.ServerProxy(host.url)
    assert eventually(lambda: raw.pool.get_all(old).get("ErrorDescription") == ["SESSION_INVALID", old],
                      30, 0.2, ignore=(OSError, xmlrpc.client.ProtocolError))
    assert host.proc.poll() is None
    assert eventually(lambda: host.pid == pid, 10, ignore=(OSError, ValueError))   # written once it is up
    s = login(host)
    try:
        assert s.xenapi.host.get_name_label(h) == "kept across the restart"
        s.xenapi.host.set_name_label(h, name)
    finally:
        s.xenapi.session.logout()


def test_shutdown_agent():
    d = _daemon.start()
    try:
        s = login(d)
        s.xenapi.host.shutdown_agent()
        d.proc.wait(20)
        assert d.proc.returncode == 0
    finally:
        _daemon.cleanup(d)


def test_a_restart_follows_the_inventory():
    """As xapi's dbsync: the inventory's MANAGEMENT_INTERFACE decides the management PIF at start (none
    after management_disable; eth1's bridge, with eth1's own address, after a reconfigure onto it)."""
    d = _daemon.start()
    folder = d.data_dir
    try:
        def session():
            s = login(d)
            return s, s.xenapi, s.xenapi.host.get_all()[0]

        s, x, h = session()
        x.host.management_disable()
        s.xenapi.session.logout()
        d.stop()
        d = _daemon.start(data_dir=folder)
        s, x, h = session()
        assert _management(x, h) == [] and _inventory(d)["MANAGEMENT_INTERFACE"] == ""
        eth0, eth1 = _pif(x, h, "eth0"), _pif(x, h, "eth1")
        x.PIF.reconfigure_ip(eth1, "Static", "192.0.2.10", "255.255.255.0", "", "")
        x.host.management_reconfigure(eth1)
        s.xenapi.session.logout()
        d.stop()
        d = _daemon.start(data_dir=folder)
        s, x, h = session()
        assert _management(x, h) == [eth1] and x.PIF.get_IP(eth1) == "192.0.2.10"
        assert x.PIF.get_management(eth0) is False
        x.host.management_reconfigure(eth0)
        s.xenapi.session.logout()
        d.stop()
        d = _daemon.start(data_dir=folder)
        s, x, h = session()
        assert _management(x, h) == [eth0] and x.PIF.get_IP(eth0) == "127.0.0.1"
        assert x.PIF.get_IP(eth1) == "192.0.2.10" and x.host.get_address(h) == "127.0.0.1"
        s.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)
