"""Changes of coordinator on a 3-host `xapi sim` pool: an orderly pool.designate_new_master, then
kill -9 of the coordinator, pool.emergency_transition_to_master on a member (its replica promoted,
nothing committed lost) and pool.recover_slaves. The tests run in order on one pool."""
from __future__ import annotations

import time

import XenAPI

from tests import pool as _pool
from tests.fixtures import own_pool
from tests.helpers import eventually, failure


sim = own_pool(3)


def _eventually(fn, timeout: float = 15.0):
    return eventually(fn, timeout, ignore=(XenAPI.Failure, OSError))     # hosts come and go meanwhile


def _login_error(host) -> list | None:
    try:
        host.session().xenapi.session.logout()
        return None
    except XenAPI.Failure as e:
        return e.details


def test_designate_new_master(sim):
    h1, h2, h3 = sim.hosts
    s = h1.session()
    x = s.xenapi
    target = next(h for h, r in x.host.get_all_records().items() if r["address"] == h2.address)
    pool = x.pool.get_all()[0]
    x.pool.set_name_label(pool, "before handover")
    assert failure(x.pool.designate_new_master, "OpaqueRef:nope")[:2] == ["HANDLE_INVALID", "host"]
    x.pool.designate_new_master(target)
    # the old coordinator's sessions are gone (xapi restarts it): the SDK logs in again on
    # SESSION_INVALID and gets HOST_IS_SLAVE naming the new one, and so does the other member
    assert failure(x.pool.set_name_label, pool, "too late") == ["HOST_IS_SLAVE", h2.address]
    assert _eventually(lambda: _login_error(h3) == ["HOST_IS_SLAVE", h2.address])
    assert _login_error(h1) == ["HOST_IS_SLAVE", h2.address]
    y = h2.session().xenapi
    assert y.pool.get_master(pool) == target
    assert y.pool.get_name_label(pool) == "before handover"      # nothing committed was lost
    assert len(y.host.get_all()) == 3
    y.pool.set_name_label(pool, "after handover")
    for old in (h1, h3):                                           # both replicas follow the new one
        local = old.local_session()
        assert _eventually(lambda: local.xenapi.pool.get_name_label(pool) == "after handover")
        local.xenapi.session.local_logout()


def test_coordinator_killed_member_promoted(sim):
    h1, h2, h3 = sim.hosts
    y = h2.session().xenapi
    pool = y.pool.get_all()[0]
    y.pool.set_name_description(pool, "written before the crash")
    local = h3.local_session()
    assert _eventually(lambda: local.xenapi.pool.get_name_description(pool) == "written before the crash")
    h2.kill()                                                      # kill -9 the coordinator
    assert _eventually(lambda: local.xenapi.host.is_in_emergency_mode())
    local.xenapi.pool.emergency_transition_to_master()
    z = h3.session().xenapi                                        # password logins work: coordinator
    assert z.pool.get_name_description(pool) == "written before the crash"
    me = next(h for h, r in z.host.get_all_records().items() if r["address"] == h3.address)
    assert z.pool.get_master(pool) == me
    h1_ref = next(h for h, r in z.host.get_all_records().items() if r["address"] == h1.address)
    assert z.pool.recover_slaves() == [h1_ref]                     # the dead host is not recovered
    assert _eventually(lambda: _login_error(h1) == ["HOST_IS_SLAVE", h3.address])
    z.pool.set_name_label(pool, "after the crash")
    l1 = h1.local_session()
    assert _eventually(lambda: l1.xenapi.pool.get_name_label(pool) == "after the crash")


def test_emergency_reset_master_does_not_contact_the_address(sim):
    """As xapi_pool.ml: the name is resolved, then the member follows that address without asking it
    (here the dead old coordinator), and back to the live one."""
    h1, h2, h3 = sim.hosts
    local = h1.local_session()
    x = local.xenapi
    assert failure(x.pool.emergency_reset_master, "no-such-host.invalid") == [
        "INTERNAL_ERROR", "Couldn't resolve hostname: no-such-host.invalid"]
    x.pool.emergency_reset_master(h2.address)                     # h2 was killed: no HOST_OFFLINE
    assert _login_error(h1) == ["HOST_IS_SLAVE", h2.address]
    x.pool.emergency_reset_master(h3.address)
    assert _eventually(lambda: _login_error(h1) == ["HOST_IS_SLAVE", h3.address])
    z = h3.session().xenapi
    pool = z.pool.get_all()[0]
    z.pool.set_name_label(pool, "after the reset")
    assert _eventually(lambda: x.pool.get_name_label(pool) == "after the reset")
    x.session.local_logout()


def test_redo_log_recovers_writes_the_replica_missed():
    """A member frozen (SIGSTOP) while the coordinator takes two writes, then the coordinator killed:
    its replica can have at most the first (one long-poll answer was in flight), the redo-log on the
    shared folder has both."""
    import signal
    p = _pool.start(3, redo_log=True)
    try:
        h1, h2, h3 = p.hosts
        x = h1.session().xenapi
        pool = x.pool.get_all()[0]
        local = h3.local_session()
        assert _eventually(lambda: len(local.xenapi.host.get_all()) == 3)
        h3.kill(signal.SIGSTOP)
        x.pool.set_name_label(pool, "first")
        time.sleep(0.3)
        x.pool.set_name_description(pool, "second, never sent to the frozen member")
        x.pool.set_other_config(pool, {"third": "write"})
        h1.kill()
        h3.kill(signal.SIGCONT)
        assert _eventually(lambda: local.xenapi.host.is_in_emergency_mode())
        local.xenapi.pool.emergency_transition_to_master()
        z = h3.session().xenapi
        assert z.pool.get_name_label(pool) == "first"
        assert z.pool.get_name_description(pool) == "second, never sent to the frozen member"
        assert z.pool.get_other_config(pool) == {"third": "write"}
        assert "redo-log: " in h3.log() and " 0 entries replayed" not in h3.log()
    finally:
        _pool.cleanup(p)
