"""network.create / destroy through the XenAPI SDK on a real daemon: xapi's bridge naming and checks."""
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, new_vm, vif_record


host = own_daemon("--request-timeout", "10", env={"XAPI_GUEST_AGENT_DELAY": "0.1"})
x = root_xenapi("host")


def net(name, bridge="", mtu="1500"):
    return {"name_label": name, "name_description": "", "MTU": mtu, "other_config": {}, "bridge": bridge,
            "tags": []}


def test_create_names_bridges_as_xapi(x):
    a = x.network.create(net("a"))
    b = x.network.create(net("b", mtu="0"))
    ra, rb = x.network.get_record(a), x.network.get_record(b)
    assert ra["bridge"].startswith("xapi") and rb["bridge"].startswith("xapi") and ra["bridge"] != rb["bridge"]
    assert int(ra["bridge"][4:]) < int(rb["bridge"][4:])
    assert rb["MTU"] == "1500" and ra["managed"] is True and ra["VIFs"] == [] and ra["PIFs"] == []
    given = x.network.create(net("c", bridge="br-test"))
    assert x.network.get_bridge(given) == "br-test"
    assert failure(x.network.create, net("d", bridge="br-test")) == ["BRIDGE_NAME_EXISTS", "br-test"]
    assert failure(x.network.create, net("e", bridge="xenbr9")) == ["INVALID_VALUE", "bridge", "xenbr9"]
    assert failure(x.network.create, net("f", bridge="a-very-long-bridge-name")) == \
        ["INVALID_VALUE", "bridge", "a-very-long-bridge-name"]
    for n in (a, b, given):
        x.network.destroy(n)
    assert failure(x.network.get_record, a)[0] == "HANDLE_INVALID"


def test_destroy_checks(x):
    mgmt = next(n for n, r in x.network.get_all_records().items() if r["bridge"] == "xenbr0")
    pifs = x.network.get_PIFs(mgmt)
    assert pifs and failure(x.network.destroy, mgmt) == ["NETWORK_CONTAINS_PIF", *pifs]
    n = x.network.create(net("vifs"))
    vm = new_vm(x, "on-net")
    vif = x.VIF.create(vif_record(vm, n))
    x.VM.start(vm, False, False)
    assert x.VIF.get_currently_attached(vif) is True
    assert failure(x.network.destroy, n) == ["NETWORK_CONTAINS_VIF", vif]
    x.VM.hard_shutdown(vm)
    x.network.destroy(n)                                 # the unattached VIF goes with it
    assert failure(x.VIF.get_record, vif)[0] == "HANDLE_INVALID" and x.VM.get_VIFs(vm) == []
    assert failure(x.network.destroy, "OpaqueRef:nope") == ["HANDLE_INVALID", "network", "OpaqueRef:nope"]
