"""host.* and pool.* settings (xapi.actions.host_settings, xapi.actions.pool_settings) with the XenAPI SDK
against a real daemon: fields changed, boot settings kept in the simulated host's boot command line,
guest agent features reaching xenstore, xapi's errors for what it refuses."""
import os

import pytest

from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, needs_xs, new_vm, xs_read

host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


@pytest.fixture(scope="module")
def h(x):
    return x.host.get_all()[0]


@pytest.fixture(scope="module")
def pool(x):
    return x.pool.get_all()[0]


def test_declare_dead_refuses_a_live_host(x, h):
    assert failure(x.host.declare_dead, h) == ["HOST_IS_LIVE", h]
    assert x.host.get_enabled(h) is True


def test_power_on_mode_drops_old_secrets(x, h):
    s = x.secret.create({"value": "hunter2", "other_config": {}})
    uuid = x.secret.get_uuid(s)
    x.host.set_power_on_mode(h, "iLO", {"power_on_ip": "192.0.2.9", "power_on_password_secret": uuid})
    assert x.host.get_power_on_mode(h) == "iLO"
    assert x.host.get_power_on_config(h)["power_on_password_secret"] == uuid
    x.host.set_power_on_mode(h, "", {})
    assert (x.host.get_power_on_mode(h), x.host.get_power_on_config(h)) == ("", {})
    assert failure(x.secret.get_by_uuid, uuid)[0] == "UUID_INVALID"


def test_sched_gran_is_a_boot_setting(x, host, h):
    assert x.host.get_sched_gran(h) == "cpu"
    x.host.set_sched_gran(h, "core")
    assert x.host.get_sched_gran(h) == "core"
    with open(os.path.join(host.data_dir, "xen-cmdline")) as f:
        assert "sched-gran=core\n" in f.read()
    assert failure(x.host.set_sched_gran, h, "thread")[0] in ("INVALID_VALUE", "FIELD_TYPE_ERROR")
    x.host.set_sched_gran(h, "cpu")


def test_display_takes_effect_at_reboot(x, h):
    assert x.host.get_display(h) == "enabled"
    assert x.host.disable_display(h) == "disable_on_reboot"
    assert x.host.get_display(h) == "disable_on_reboot"
    assert x.host.enable_display(h) == "enabled"
    assert x.host.get_display(h) == "enabled"


def test_storage_initiator_settings(x, h):
    x.host.set_multipathing(h, True)
    assert x.host.get_multipathing(h) is True and x.host.get_other_config(h)["multipathing"] == "true"
    x.host.set_multipathing(h, False)
    assert x.host.get_other_config(h)["multipathing"] == "false"
    x.host.set_iscsi_iqn(h, "iqn.2026-11.org.example:host1")
    assert x.host.get_iscsi_iqn(h) == "iqn.2026-11.org.example:host1"
    assert x.host.get_other_config(h)["iscsi_iqn"] == "iqn.2026-11.org.example:host1"
    assert failure(x.host.set_iscsi_iqn, h, "") == ["INVALID_VALUE", "value", ""]


def test_ssl_and_https(x, h, pool):
    assert failure(x.host.set_ssl_legacy, h, True) == [
        "VALUE_NOT_SUPPORTED", "value", "true", "Legacy SSL support has been removed"]
    x.host.set_ssl_legacy(h, False)
    x.pool.disable_ssl_legacy(pool)
    assert x.host.get_ssl_legacy(h) is False
    assert failure(x.pool.enable_ssl_legacy, pool) == ["MESSAGE_REMOVED"]
    x.pool.set_https_only(pool, True)
    assert x.host.get_https_only(h) is True
    x.host.set_https_only(h, False)
    assert x.host.get_https_only(h) is False


def test_licensing_as_xcp_ng(x, h, pool):
    assert x.pool.get_license_state(pool) == {"edition": x.host.get_edition(h), "expiry": "never"}
    x.host.apply_edition(h, "xcp-ng", False)
    x.pool.apply_edition(pool, "xcp-ng")
    assert failure(x.host.apply_edition, h, "enterprise-per-socket", False) == ["INVALID_EDITION",
                                                                                "enterprise-per-socket"]
    assert failure(x.pool.apply_edition, pool, "premium") == ["INVALID_EDITION", "premium"]
    assert x.host.get_edition(h) == "xcp-ng"
    assert x.pool.has_extension(pool, "Host.anything") is False


def test_igmp_snooping_on_openvswitch(x, pool):
    # the simulated host runs openvswitch, XCP-ng's default (a bridge host's refusal:
    # test_vlan_bond_tunnel.test_bridge_backend_refuses_tunnels_and_igmp_snooping)
    x.pool.set_igmp_snooping_enabled(pool, True)
    assert x.pool.get_igmp_snooping_enabled(pool) is True
    x.pool.set_igmp_snooping_enabled(pool, False)
    assert x.pool.get_igmp_snooping_enabled(pool) is False


@needs_xs
def test_guest_agent_config_reaches_xenstore(x, host, pool):
    x.pool.add_to_guest_agent_config(pool, "auto_update_enabled", "false")
    x.pool.add_to_guest_agent_config(pool, "auto_update_url", "https://updates.example.org/")
    assert x.pool.get_guest_agent_config(pool) == {"auto_update_enabled": "false",
                                                   "auto_update_url": "https://updates.example.org/"}
    base = "/guest_agent_features/Guest_agent_auto_update"
    assert xs_read(host, f"{base}/enabled") == "0"
    assert xs_read(host, f"{base}/parameters/update_url") == "https://updates.example.org/"
    x.pool.remove_from_guest_agent_config(pool, "auto_update_enabled")
    assert x.pool.get_guest_agent_config(pool) == {"auto_update_url": "https://updates.example.org/"}
    assert xs_read(host, f"{base}/enabled") == "1"


def test_rotate_secret_on_a_standalone_host(x, host):
    path = os.path.join(host.data_dir, "ptoken")
    before = open(path).read()
    x.pool.rotate_secret()
    after = open(path).read()
    assert after != before and len(after.strip()) >= 32
    # the daemon works on with it: a VM round trip through xenopsd and the database
    vm = new_vm(x, "after-rotate")
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
