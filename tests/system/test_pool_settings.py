"""Pool-wide settings in a 2-host `xapi sim` pool through the XenAPI SDK: pool.rotate_secret gives every
host the new secret and the pool keeps working over its internal calls; host.declare_dead of a member
that died resets its VMs and disables it, and is refused while the member is live."""
from __future__ import annotations

import os
import time

from tests.fixtures import own_pool
from tests.helpers import eventually, failure
from tests.system.pool_vms import hosts_by_address, new_vm

sim = own_pool(2, env={"XAPI_HOST_HEARTBEAT_INTERVAL": "0.2", "XAPI_HOST_ASSUMED_DEAD": "2"})


def _secret(host) -> str:
    with open(os.path.join(host.data_dir, "ptoken")) as f:
        return f.read().strip()


def test_rotate_secret_reaches_every_host(sim, x):
    before = [_secret(h) for h in sim.hosts]
    assert before[0] == before[1]
    x.pool.rotate_secret()
    after = [_secret(h) for h in sim.hosts]
    assert after[0] == after[1] != before[0]
    # coordinator -> member (xenopsd there) and member -> coordinator (its writes) both still work
    member = hosts_by_address(x)[1]
    vm = new_vm(x, "after-rotate")
    x.VM.start_on(vm, member, False, False)
    assert x.VM.get_resident_on(vm) == member
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    # the member's heartbeats (member -> coordinator) pass with the new secret: still live after more
    # than XAPI_HOST_ASSUMED_DEAD
    time.sleep(2.5)
    assert x.host_metrics.get_live(x.host.get_metrics(member)) is True


def test_declare_dead(sim, x):
    coordinator, member = hosts_by_address(x)
    assert failure(x.host.declare_dead, member) == ["HOST_IS_LIVE", member]
    assert failure(x.host.declare_dead, coordinator) == ["HOST_IS_LIVE", coordinator]
    vm = new_vm(x, "on-dead")
    x.VM.start_on(vm, member, False, False)
    sim.hosts[1].kill()
    hm = x.host.get_metrics(member)
    assert eventually(lambda: x.host_metrics.get_live(hm) is False or None, 15)
    x.host.declare_dead(member)
    assert x.host.get_enabled(member) is False
    assert x.VM.get_power_state(vm) == "Halted" and x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    x.VM.destroy(vm)
