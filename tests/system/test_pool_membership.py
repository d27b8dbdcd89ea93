"""`xapi sim` pools: join, members' replicas and HOST_IS_SLAVE, eject and join again, xapi's join
and eject errors. One 3-host pool for the module; the tests run in order on it."""
from __future__ import annotations

import XenAPI

from tests.fixtures import own_pool
from tests.helpers import eventually, failure


sim = own_pool(3)


def test_pool_formed_with_shared_sr(sim):
    s = sim.coordinator.session()
    x = s.xenapi
    hosts = x.host.get_all_records()
    assert sorted(h["address"] for h in hosts.values()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    pool = x.pool.get_all()[0]
    master = x.pool.get_master(pool)
    assert hosts[master]["address"] == "127.0.0.2"
    shared = [r for r in x.SR.get_all_records().values() if r["shared"]]
    assert len(shared) == 1 and shared[0]["type"] == "nfs"
    pbds = [x.PBD.get_record(p) for p in shared[0]["PBDs"]]
    assert sorted(p["host"] for p in pbds) == sorted(hosts) and all(p["currently_attached"] for p in pbds)
    for h, rec in hosts.items():          # every host brought its own local SR, dom0 and management PIF
        local = [p for p in rec["PBDs"] if not x.SR.get_shared(x.PBD.get_SR(p))]
        assert len(local) == 1
        assert any(x.VM.get_is_control_domain(v) for v in rec["resident_VMs"])
        assert any(x.PIF.get_management(p) for p in rec["PIFs"])
    # every host's first boot scanned its NICs eth0..eth3: one pool-wide network per bridge, a PIF
    # of each host on each
    networks = {x.PIF.get_network(p) for rec in hosts.values() for p in rec["PIFs"]}
    assert sorted(x.network.get_bridge(n) for n in networks) == ["xenbr0", "xenbr1", "xenbr2", "xenbr3"]
    for n in networks:
        assert sorted(x.PIF.get_host(p) for p in x.network.get_PIFs(n)) == sorted(hosts)
    s.xenapi.session.logout()


def test_members_answer_host_is_slave(sim):
    for member in sim.hosts[1:]:
        s = XenAPI.Session(member.url)
        assert failure(s.xenapi.login_with_password, "root", member.password, "1.0", "t") == \
            ["HOST_IS_SLAVE", "127.0.0.2"]
        local = member.local_session()
        assert failure(local.xenapi.VM.create, {}) [:1] == ["HOST_IS_SLAVE"]
        assert local.xenapi.host.is_in_emergency_mode() is False
        local.xenapi.session.local_logout()


def test_member_replica_follows_writes(sim):
    s = sim.coordinator.session()
    pool = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.set_name_label(pool, "replicated")
    for member in sim.hosts[1:]:
        local = member.local_session()
        assert eventually(lambda: local.xenapi.pool.get_name_label(pool) == "replicated")
        assert len(local.xenapi.host.get_all()) == 3
        local.xenapi.session.local_logout()
    s.xenapi.session.logout()


def test_eject_checks(sim):
    s = sim.coordinator.session()
    x = s.xenapi
    me = x.pool.get_master(x.pool.get_all()[0])
    assert failure(x.pool.eject, me)[0] == "OPERATION_NOT_ALLOWED"
    assert failure(x.pool.eject, "OpaqueRef:nope")[:2] == ["HANDLE_INVALID", "host"]
    s.xenapi.session.logout()


def test_eject_then_join_errors_then_join(sim):
    s = sim.coordinator.session()
    x = s.xenapi
    third = next(h for h, r in x.host.get_all_records().items() if r["address"] == "127.0.0.4")
    x.pool.eject(third)
    assert len(x.host.get_all()) == 2
    assert all(x.PBD.get_host(p) != third for p in x.PBD.get_all())
    # host 3 is a standalone pool again: password logins, one host, its own local SR
    h3 = sim.hosts[2]
    alone = eventually(lambda: _try_login(h3))
    assert alone is not None
    y = alone.xenapi
    assert len(y.host.get_all()) == 1
    assert y.pool.get_master(y.pool.get_all()[0]) == y.host.get_all()[0]
    assert [r["name_label"] for r in y.SR.get_all_records().values() if not r["shared"]] == ["Local storage"]
    # xapi's join errors
    assert failure(y.pool.join, "127.0.0.2", "root", "wrong")[0] == "SESSION_AUTHENTICATION_FAILED"
    assert failure(y.pool.join, "127.0.0.3", "root", h3.password) == ["HOST_IS_SLAVE", "127.0.0.2"]
    assert failure(y.pool.join, "127.0.0.99", "root", h3.password)[0] == "JOINING_HOST_CONNECTION_FAILED"
    assert failure(x.pool.join, "127.0.0.4", "root", h3.password)[0] == \
        "JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS"
    # and in again: it gets a PBD on the pool's shared SR, plugged through the coordinator
    y.pool.join("127.0.0.2", "root", h3.password)
    assert len(x.host.get_all()) == 3
    shared = next(sr for sr, r in x.SR.get_all_records().items() if r["shared"])
    assert eventually(lambda: [x.PBD.get_currently_attached(p) for p in x.SR.get_PBDs(shared)] == [True] * 3)
    assert failure(XenAPI.Session(h3.url).xenapi.login_with_password, "root", h3.password, "1.0", "t") == \
        ["HOST_IS_SLAVE", "127.0.0.2"]
    s.xenapi.session.logout()


def test_eject_then_join_force(sim):
    """pool.join_force (the same join, xapi skips the version checks) brings an ejected host back."""
    s = sim.coordinator.session()
    x = s.xenapi
    third = next(h for h, r in x.host.get_all_records().items() if r["address"] == "127.0.0.4")
    x.pool.eject(third)
    alone = eventually(lambda: _try_login(sim.hosts[2]))
    assert alone is not None and len(alone.xenapi.host.get_all()) == 1
    assert failure(alone.xenapi.pool.join_force, "127.0.0.2", "root", "wrong")[0] == \
        "SESSION_AUTHENTICATION_FAILED"
    alone.xenapi.pool.join_force("127.0.0.2", "root", sim.hosts[2].password)
    assert len(x.host.get_all()) == 3
    assert failure(XenAPI.Session(sim.hosts[2].url).xenapi.login_with_password, "root",
                    sim.hosts[2].password, "1.0", "t") == ["HOST_IS_SLAVE", "127.0.0.2"]
    s.xenapi.session.logout()


def _try_login(host):
    try:
        return host.session()
    except XenAPI.Failure:
        return None


def _new_vm(x, memory=64 << 20):
    m = str(memory)
    return x.VM.create({
        "name_label": "guest", "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": m, "memory_dynamic_max": m, "memory_dynamic_min": m,
        "memory_static_min": m, "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart", "actions_after_crash": "destroy",
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "",
        "PV_legacy_args": "", "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"},
        "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": ""})


def test_join_refused_with_running_vm_or_shared_sr(sim, tmp_path):
    x = sim.coordinator.session().xenapi
    third = next(h for h, r in x.host.get_all_records().items() if r["address"] == "127.0.0.4")
    x.pool.eject(third)
    h3 = sim.hosts[2]
    y = eventually(lambda: _try_login(h3)).xenapi
    vm = _new_vm(y)
    y.VM.start(vm, False, False)
    assert failure(y.pool.join, "127.0.0.2", "root", h3.password) == ["JOINING_HOST_CANNOT_HAVE_RUNNING_VMS"]
    y.VM.hard_shutdown(vm)
    y.VM.destroy(vm)
    sr = y.SR.create(y.host.get_all()[0], {"path": str(tmp_path)}, "0", "other pool's shared SR", "", "nfs",
                     "user", True, {})
    assert failure(y.pool.join, "127.0.0.2", "root", h3.password) == ["JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS"]
    for pbd in y.SR.get_PBDs(sr):
        y.PBD.unplug(pbd)
    y.SR.forget(sr)
    y.pool.join("127.0.0.2", "root", h3.password)
    assert len(x.host.get_all()) == 3
