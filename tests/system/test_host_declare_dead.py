"""host.declare_dead of a member that died, in a 2-host `xapi sim` pool through the XenAPI SDK, as
xapi_host.ml: its VMs are reset to Halted (resident_on cleared, VBDs and VIFs detached) and their disks
are no longer held for it (a shared disk it ran RW starts at once on the coordinator); the host is
disabled and its allowed_operations follow: power_on once a power_on_mode is set and the coordinator
has an executable power-on-host plugin (XENAPI_MISSING_PLUGIN before, as xapi_host_helpers.ml)."""
from __future__ import annotations

import os

from tests.fixtures import own_pool
from tests.helpers import MIB, eventually, failure, management_network, vif_record
from tests.system.pool_vms import hosts_by_address, new_vm

sim = own_pool(2, env={"XAPI_HOST_HEARTBEAT_INTERVAL": "0.2", "XAPI_HOST_ASSUMED_DEAD": "2"})


def _disk(x, sr):
    return x.VDI.create({"name_label": "on-dead", "name_description": "", "SR": sr, "virtual_size": str(4 * MIB),
                         "type": "user", "sharable": False, "read_only": False, "other_config": {},
                         "xenstore_data": {}, "sm_config": {}, "tags": []})


def _vbd(x, vm, vdi):
    return x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                         "type": "Disk", "unpluggable": False, "empty": False, "other_config": {},
                         "qos_algorithm_type": "", "qos_algorithm_params": {}})


def _plugin(folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "power-on-host")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho '<methodResponse><params><param><value>True</value></param></params>"
                "</methodResponse>'\n")
    os.chmod(path, 0o755)
    return path


def test_declare_dead_halts_its_vms_and_frees_their_disks(sim, x):
    coordinator, member = hosts_by_address(x)
    shared = next(s for s in x.SR.get_all() if x.SR.get_shared(s) and x.SR.get_type(s) == "nfs")
    vdi = _disk(x, shared)
    vm = new_vm(x, "on-dead", memory=64 * MIB)
    vbd = _vbd(x, vm, vdi)
    vif = x.VIF.create(vif_record(vm, management_network(x)))
    x.VM.start_on(vm, member, False, False)
    assert x.VDI.get_sm_config(vdi).get(f"host_{member}") == "RW" and x.VBD.get_currently_attached(vbd)
    x.host.set_power_on_mode(member, "wake-on-lan", {})
    sim.hosts[1].kill()
    hm = x.host.get_metrics(member)
    assert eventually(lambda: x.host_metrics.get_live(hm) is False or None, 15)

    x.host.declare_dead(member)
    assert x.host.get_enabled(member) is False
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    assert x.VBD.get_currently_attached(vbd) is False and x.VIF.get_currently_attached(vif) is False
    assert f"host_{member}" not in x.VDI.get_sm_config(vdi)
    # refreshed at once: disabled and not live, so reboot/shutdown offered; no power-on plugin yet
    allowed = set(x.host.get_allowed_operations(member))
    assert {"reboot", "shutdown"} <= allowed and "power_on" not in allowed
    assert failure(x.host.power_on, member) == ["XENAPI_MISSING_PLUGIN", "power-on-host"]

    plugin = _plugin(os.path.join(sim.coordinator.data_dir, "plugins"))
    try:
        x.host.set_power_on_mode(member, "wake-on-lan", {})
        assert "power_on" in x.host.get_allowed_operations(member)
        x.host.power_on(member)                  # the plugin's "main" answered "True"
        x.host.set_power_on_mode(member, "", {})
        assert failure(x.host.power_on, member) == ["HOST_POWER_ON_MODE_DISABLED"]
        assert "power_on" not in x.host.get_allowed_operations(member)
    finally:
        os.unlink(plugin)

    # the shared disk the dead host ran RW is free for the coordinator
    x.VM.start_on(vm, coordinator, False, False)
    assert x.VDI.get_sm_config(vdi).get(f"host_{coordinator}") == "RW"
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
