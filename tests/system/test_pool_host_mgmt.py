"""host.* calls aimed at a member of a 3-host `xapi sim` pool run on that member (its plugin folder, its
console ring, its inventory, its daemon), and the pool-wide calls reach every host:
pool.create_VLAN(_from_PIF) and pool.management_reconfigure; a member keeps its management
interface (SLAVE_REQUIRES_MANAGEMENT_INTERFACE); host.power_on of a dead member runs the coordinator's
power-on-host plugin; a member cut off from its coordinator takes local_management_reconfigure."""
from __future__ import annotations

import os
import shutil
import stat


from tests.fixtures import own_pool
from tests.helpers import eventually, failure
from tests.system.pool_vms import hosts_by_address

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "plugins", "echo")

sim = own_pool(3, env={"XAPI_HOST_HEARTBEAT_INTERVAL": "0.2", "XAPI_HOST_ASSUMED_DEAD": "1.5"})


def _pif(x, host, device, vlan=-1):
    return next(p for p in x.host.get_PIFs(host)
                if x.PIF.get_device(p) == device and int(x.PIF.get_VLAN(p)) == vlan)


def _inventory(data_dir) -> dict:
    inv = {}
    for line in open(os.path.join(data_dir, "inventory")):
        k, _, v = line.strip().partition("=")
        inv[k] = v.strip("'")
    return inv


def test_plugin_runs_on_the_named_host(sim, x):
    coordinator, member = hosts_by_address(x)[:2]
    folder = os.path.join(sim.hosts[1].data_dir, "plugins")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(PLUGIN, os.path.join(folder, "echo"))
    assert x.host.call_plugin(member, "echo", "echo", {"on": "member"}) == "on=member"
    assert failure(x.host.call_plugin, coordinator, "echo", "echo", {}) == ["XENAPI_MISSING_PLUGIN", "echo"]


def test_pool_has_extension_asks_every_host(sim, x):
    """xapi_pool.ml: Host.has_extension on every host, true only if all have it."""
    pool = x.pool.get_all()[0]
    hosts = hosts_by_address(x)
    paths = []
    try:
        for i, d in enumerate(sim.hosts):
            assert x.pool.has_extension(pool, "Test.everywhere") is False
            folder = os.path.join(d.data_dir, "extensions")
            os.makedirs(folder, exist_ok=True)
            paths.append(os.path.join(folder, "Test.everywhere"))
            shutil.copy(PLUGIN, paths[-1])
            os.chmod(paths[-1], 0o755)
            assert x.host.has_extension(hosts[i], "Test.everywhere") is True
        assert x.pool.has_extension(pool, "Test.everywhere") is True
    finally:
        for p in paths:
            os.unlink(p)
    assert x.pool.has_extension(pool, "Test.everywhere") is False


def test_member_console(sim, x):
    coordinator, member = hosts_by_address(x)[:2]
    x.host.send_debug_keys(member, "r")
    assert "'r' pressed" in x.host.dmesg(member)
    assert "'r' pressed" not in x.host.dmesg(coordinator)


def test_pool_vlans_on_every_host(x):
    hosts = hosts_by_address(x)
    for h in hosts:
        x.PIF.scan(h)
    net = x.network.create({"name_label": "v11", "name_description": "", "MTU": 1500, "other_config": {}})
    pifs = x.pool.create_VLAN("eth1", net, 11)
    assert sorted(x.PIF.get_host(p) for p in pifs) == sorted(hosts)
    assert all(int(x.PIF.get_VLAN(p)) == 11 and x.PIF.get_currently_attached(p) for p in pifs)
    for p in pifs:
        x.PIF.destroy(p)
    net2 = x.network.create({"name_label": "v12", "name_description": "", "MTU": 1500, "other_config": {}})
    pifs = x.pool.create_VLAN_from_PIF(_pif(x, hosts[0], "eth2"), net2, 12)
    assert sorted(x.PIF.get_host(p) for p in pifs) == sorted(hosts)
    assert {x.PIF.get_device(p) for p in pifs} == {"eth2"}
    for p in pifs:
        x.VLAN.destroy(x.PIF.get_VLAN_master_of(p))
    x.network.destroy(net)
    x.network.destroy(net2)


def test_pool_management_reconfigure(sim, x):
    hosts = hosts_by_address(x)
    addresses = {h: x.host.get_address(h) for h in hosts}
    eth1 = {h: _pif(x, h, "eth1") for h in hosts}
    network = x.PIF.get_network(eth1[hosts[0]])
    assert failure(x.pool.management_reconfigure, network)[0] == "PIF_HAS_NO_NETWORK_CONFIGURATION"
    for h in hosts:                   # each host keeps its address, now on eth1
        x.PIF.reconfigure_ip(eth1[h], "Static", addresses[h], "255.0.0.0", "", "")
    x.pool.management_reconfigure(network)
    for h in hosts:
        assert [p for p in x.host.get_PIFs(h) if x.PIF.get_management(p)] == [eth1[h]]
        assert x.host.get_address(h) == addresses[h]
    bridge = x.network.get_bridge(network)
    assert _inventory(sim.hosts[1].data_dir)["MANAGEMENT_INTERFACE"] == bridge
    # the member still answers the coordinator
    assert "Xen version" in x.host.dmesg(hosts[1])
    x.pool.management_reconfigure(x.PIF.get_network(_pif(x, hosts[0], "eth0")))
    for h in hosts:
        assert x.PIF.get_management(_pif(x, h, "eth0")) is True
    assert _inventory(sim.hosts[1].data_dir)["MANAGEMENT_INTERFACE"] == "xenbr0"


def test_member_keeps_its_management_interface(sim):
    s = sim.hosts[1].local_session()
    try:
        assert failure(s.xenapi.host.management_disable) == ["SLAVE_REQUIRES_MANAGEMENT_INTERFACE"]
    finally:
        s.xenapi.session.logout()


def test_restart_agent_of_a_member(sim, x):
    member = hosts_by_address(x)[1]
    pid = sim.hosts[1].pid
    x.host.restart_agent(member)
    # the member goes and comes back (the same process: an exec) and answers internal calls again, its
    # console ring a new one (the debug key of test_member_console is gone with the old process)
    assert eventually(lambda: "'r' pressed" not in x.host.dmesg(member), 60, 0.3, ignore=(Exception,))
    assert "Xen version" in x.host.dmesg(member)
    assert eventually(lambda: sim.hosts[1].pid == pid, 10, ignore=(OSError, ValueError))


def _power_on_plugin(folder: str, result: str) -> str:
    """A power-on-host plugin that notes what it was asked and answers `result`."""
    os.makedirs(folder, exist_ok=True)
    path, marker = os.path.join(folder, "power-on-host"), os.path.join(folder, "asked")
    with open(path, "w") as f:
        f.write("#!/usr/bin/env python3\n"
                "import sys, xmlrpc.client\n"
                "params, fn = xmlrpc.client.loads(sys.argv[1])\n"
                f"open({marker!r}, 'w').write(fn + ' ' + params[1]['remote_host_uuid'])\n"
                f"print(xmlrpc.client.dumps(({{'Status': 'Success', 'Value': {result!r}}},), methodresponse=True))\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return marker


def test_power_on_a_dead_member(sim, x):
    member = hosts_by_address(x)[1]
    assert eventually(lambda: failure(x.host.power_on, member) == ["HOST_IS_LIVE", member], 20)
    sim.hosts[1].kill()
    metrics = x.host.get_metrics(member)
    assert eventually(lambda: x.host_metrics.get_live(metrics) is False, 20)
    assert failure(x.host.power_on, member) == ["HOST_POWER_ON_MODE_DISABLED"]
    x.host.set_power_on_mode(member, "wake-on-lan", {})
    assert failure(x.host.power_on, member) == ["XENAPI_MISSING_PLUGIN", "power-on-host"]
    folder = os.path.join(sim.coordinator.data_dir, "plugins")
    marker = _power_on_plugin(folder, "False")
    assert failure(x.host.power_on, member) == ["INTERNAL_ERROR", "The host failed to power on."]
    _power_on_plugin(folder, "True")
    x.host.power_on(member)
    with open(marker) as f:
        assert f.read() == "main " + x.host.get_uuid(member)


def test_emergency_local_management_reconfigure(sim, x):
    member = sim.hosts[2]
    local = member.local_session()
    try:
        assert failure(local.xenapi.host.local_management_reconfigure, "xenbr1") == ["POOL_NOT_IN_EMERGENCY_MODE"]
        sim.coordinator.kill()                        # the member loses its coordinator
        assert eventually(lambda: local.xenapi.host.is_in_emergency_mode(), 30, 0.2)
        local.xenapi.host.local_management_reconfigure("xenbr1")
        assert _inventory(member.data_dir)["MANAGEMENT_INTERFACE"] == "xenbr1"
        assert failure(local.xenapi.host.management_disable) == ["SLAVE_REQUIRES_MANAGEMENT_INTERFACE"]
    finally:
        local.xenapi.session.logout()
