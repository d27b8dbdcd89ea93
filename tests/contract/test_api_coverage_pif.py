"""PIF.* (xapi.actions.pif) with the XenAPI SDK against a real daemon: IP configuration with xapi's
checks, plug/unplug and what blocks an unplug, properties, forget, db_introduce/db_forget."""
import pytest

from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, new_vm


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


@pytest.fixture
def pif(x):
    """A second NIC's record on the host, on a network of its own, as a pool join introduces it."""
    h = x.host.get_all()[0]
    net = x.network.create({"name_label": "pif-net", "name_description": "", "MTU": "1500", "other_config": {}})
    ref = x.PIF.db_introduce("eth7", net, h, "aa:bb:cc:00:11:22", "1500", "-1", True, "None", "", "", "", "",
                             "OpaqueRef:NULL", "OpaqueRef:NULL", False, {}, False, "None", [], "", "IPv4", True,
                             {"gro": "on"})
    yield ref
    if ref in x.PIF.get_all():
        x.PIF.set_disallow_unplug(ref, False)
        x.PIF.db_forget(ref)
    x.network.destroy(net)


def test_db_introduce_makes_an_unplugged_record(x, pif):
    rec = x.PIF.get_record(pif)
    assert (rec["device"], rec["currently_attached"], rec["management"], rec["VLAN"]) == ("eth7", False, False, "-1")
    assert rec["metrics"] in x.PIF_metrics.get_all()
    assert pif in x.network.get_PIFs(rec["network"])


def test_reconfigure_ip(x, pif):
    x.PIF.reconfigure_ip(pif, "Static", "192.0.2.10", "255.255.255.0", "192.0.2.1", "192.0.2.53,192.0.2.54")
    rec = x.PIF.get_record(pif)
    assert (rec["ip_configuration_mode"], rec["IP"], rec["netmask"], rec["gateway"], rec["DNS"]) == \
        ("Static", "192.0.2.10", "255.255.255.0", "192.0.2.1", "192.0.2.53,192.0.2.54")
    assert failure(x.PIF.reconfigure_ip, pif, "Static", "", "255.255.255.0", "", "") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "IP"]
    assert failure(x.PIF.reconfigure_ip, pif, "Static", "192.0.2.10", "nonsense", "", "") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "netmask"]
    assert failure(x.PIF.reconfigure_ip, pif, "DHCP", "", "", "2001:db8::1", "") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "gateway"]
    assert failure(x.PIF.reconfigure_ip, pif, "DHCP", "", "", "", "192.0.2.53,bad") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "DNS"]
    x.PIF.reconfigure_ip(pif, "DHCP", "", "", "", "")
    assert x.PIF.get_ip_configuration_mode(pif) == "DHCP" and x.PIF.get_DNS(pif) == ""
    mgmt = x.host.get_management_interface(x.host.get_all()[0])
    assert failure(x.PIF.reconfigure_ip, mgmt, "None", "", "", "", "") == ["PIF_IS_MANAGEMENT_INTERFACE", mgmt]
    assert failure(x.PIF.reconfigure_ip, pif, "Bogus", "", "", "", "")[0] == "FIELD_TYPE_ERROR"


def test_reconfigure_ipv6_and_primary_address_type(x, pif):
    x.PIF.reconfigure_ipv6(pif, "Static", "2001:db8::10/64", "2001:db8::1", "")
    rec = x.PIF.get_record(pif)
    assert (rec["ipv6_configuration_mode"], rec["IPv6"], rec["ipv6_gateway"]) == \
        ("Static", ["2001:db8::10/64"], "2001:db8::1")
    assert failure(x.PIF.reconfigure_ipv6, pif, "Static", "2001:db8::10", "", "") == \
        ["INVALID_CIDR_ADDRESS_SPECIFIED", "IPv6"]
    assert failure(x.PIF.reconfigure_ipv6, pif, "Static", "2001:db8::10/64", "192.0.2.1", "") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "gateway"]
    x.PIF.set_primary_address_type(pif, "IPv6")
    assert x.PIF.get_primary_address_type(pif) == "IPv6"
    mgmt = x.host.get_management_interface(x.host.get_all()[0])
    assert failure(x.PIF.set_primary_address_type, mgmt, "IPv6") == ["PIF_IS_MANAGEMENT_INTERFACE", mgmt]


def test_plug_unplug_and_what_blocks_it(x, pif):
    x.PIF.plug(pif)
    assert x.PIF.get_currently_attached(pif) is True
    x.PIF.set_disallow_unplug(pif, True)
    assert failure(x.PIF.unplug, pif) == ["PIF_DOES_NOT_ALLOW_UNPLUG", pif]
    x.PIF.set_disallow_unplug(pif, False)
    net = x.PIF.get_network(pif)
    vm = new_vm(x, "on-pif-net")
    vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500", "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    try:
        assert x.VIF.get_currently_attached(vif) is True
        assert failure(x.PIF.unplug, pif) == ["VIF_IN_USE", net, vif]
    finally:
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    x.PIF.unplug(pif)
    assert x.PIF.get_currently_attached(pif) is False
    mgmt = x.host.get_management_interface(x.host.get_all()[0])
    assert failure(x.PIF.unplug, mgmt) == ["PIF_IS_MANAGEMENT_INTERFACE", mgmt]


def test_properties(x, pif):
    x.PIF.set_property(pif, "gro", "off")
    assert x.PIF.get_properties(pif) == {"gro": "off"}
    assert failure(x.PIF.set_property, pif, "gro", "maybe") == ["INVALID_VALUE", "properties", "gro = maybe"]
    assert failure(x.PIF.set_property, pif, "mtu", "9000") == ["INVALID_VALUE", "properties", "mtu = 9000"]


def test_forget(x, pif):
    metrics = x.PIF.get_metrics(pif)
    mgmt = x.host.get_management_interface(x.host.get_all()[0])
    assert failure(x.PIF.forget, mgmt) == ["PIF_IS_MANAGEMENT_INTERFACE", mgmt]
    x.PIF.forget(pif)
    assert pif not in x.PIF.get_all() and metrics not in x.PIF_metrics.get_all()
    assert failure(x.PIF.plug, pif) == ["HANDLE_INVALID", "PIF", pif]
