"""network.add_purpose/remove_purpose/set_default_locking_mode (xapi.actions.network_extra) with the
XenAPI SDK against a real daemon."""
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, new_vm


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


def _net(x, name):
    return x.network.create({"name_label": name, "name_description": "", "MTU": "1500", "other_config": {}})


def test_purposes(x):
    a, b = _net(x, "nbd-a"), _net(x, "nbd-b")
    try:
        x.network.add_purpose(a, "nbd")
        x.network.add_purpose(a, "nbd")                  # once only
        assert x.network.get_purpose(a) == ["nbd"]
        assert failure(x.network.add_purpose, b, "insecure_nbd") == \
            ["NETWORK_INCOMPATIBLE_PURPOSES", "insecure_nbd", "nbd"]
        assert failure(x.network.add_purpose, b, "bogus")[0] == "FIELD_TYPE_ERROR"
        x.network.remove_purpose(b, "nbd")               # absent: nothing to do
        x.network.remove_purpose(a, "nbd")
        assert x.network.get_purpose(a) == []
        x.network.add_purpose(b, "insecure_nbd")
        assert x.network.get_purpose(b) == ["insecure_nbd"]
        assert failure(x.network.add_purpose, "OpaqueRef:nope", "nbd") == \
            ["HANDLE_INVALID", "network", "OpaqueRef:nope"]
    finally:
        x.network.destroy(a)
        x.network.destroy(b)


def test_default_locking_mode_not_while_a_vif_is_attached(x):
    mgmt = x.PIF.get_network(x.host.get_management_interface(x.host.get_all()[0]))
    net = _net(x, "locking")
    try:
        x.network.set_default_locking_mode(net, "disabled")
        assert x.network.get_default_locking_mode(net) == "disabled"
        x.network.set_default_locking_mode(net, "unlocked")
        vm = new_vm(x, "locking-vm")
        vif = x.VIF.create({"device": "0", "network": mgmt, "VM": vm, "MAC": "", "MTU": "1500",
                            "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
        x.VM.start(vm, False, False)
        try:
            assert x.VIF.get_currently_attached(vif) is True
            assert failure(x.network.set_default_locking_mode, mgmt, "disabled") == ["VIF_IN_USE", mgmt, vif]
        finally:
            x.VM.hard_shutdown(vm)
            x.VM.destroy(vm)
        assert x.network.get_default_locking_mode(mgmt) == "unlocked"
    finally:
        x.network.destroy(net)
