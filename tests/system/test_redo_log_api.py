"""pool.enable_redo_log / disable_redo_log (xapi.actions.pool_redo_log) on a 3-host `xapi sim` pool
started without --redo-log: the log lives beside a redo_log VDI on the shared nfs SR, and a member
promoted after the coordinator was killed recovers from it the writes its frozen replica missed.
The tests run in order on one pool."""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import XenAPI

from tests import daemon as _daemon
from tests.fixtures import own_pool
from tests.helpers import eventually, failure, login

sim = own_pool(3)

SIZE = 256 << 20                                 # xapi's Redo_log.minimum_vdi_size


def _eventually(fn, timeout: float = 15.0):
    return eventually(fn, timeout, ignore=(XenAPI.Failure, OSError))


def _shared_sr(x):
    return next(s for s in x.SR.get_all() if x.SR.get_type(s) == "nfs" and x.SR.get_shared(s))


def _log_file(sim, x, sr, vdi, pool) -> str:
    return os.path.join(sim.data_dir, "nfs", x.SR.get_uuid(sr), x.VDI.get_uuid(vdi) + ".redo-log",
                        x.pool.get_uuid(pool) + ".log")


def test_enable_checks_and_disable(sim):
    x = sim.hosts[0].session().xenapi
    pool = x.pool.get_all()[0]
    sr = _shared_sr(x)
    assert x.pool.get_redo_log_enabled(pool) is False
    assert failure(x.pool.enable_redo_log, "OpaqueRef:nope") == ["HANDLE_INVALID", "SR", "OpaqueRef:nope"]
    local = next(s for s in x.SR.get_all() if x.SR.get_type(s) == "ext" and len(x.SR.get_PBDs(s)) == 1)
    assert failure(x.pool.enable_redo_log, local) == ["CANNOT_ENABLE_REDO_LOG", "failed to make VDI static."]
    assert x.pool.get_redo_log_enabled(pool) is False

    x.pool.enable_redo_log(sr)
    vdi = x.pool.get_redo_log_vdi(pool)
    rec = x.VDI.get_record(vdi)
    assert (rec["SR"], rec["type"], rec["virtual_size"], rec["sharable"]) == (sr, "redo_log", str(SIZE), True)
    assert x.pool.get_redo_log_enabled(pool) is True
    path = _log_file(sim, x, sr, vdi, pool)
    x.pool.set_name_label(pool, "logged")
    assert b'"logged"' in open(path, "rb").read()       # answered once it is in the log, not a second later
    s = sim.hosts[0].session()                             # the JSON-RPC transport too
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pool.add_to_other_config",
                       "params": [s._session, pool, "via", "json"]}).encode()
    req = urllib.request.Request(sim.hosts[0].url.rstrip("/") + "/jsonrpc", body, {"Content-Type": "application/json"})
    assert json.load(urllib.request.urlopen(req, timeout=10))["result"] == ""
    assert b"(('via' 'json'))" in open(path, "rb").read()    # maps are logged in xapi's s-expression form
    assert failure(x.VDI.copy, vdi, sr)[0] == "OPERATION_NOT_ALLOWED"   # the pool's VDI, not a disk

    x.pool.disable_redo_log()
    assert x.pool.get_redo_log_enabled(pool) is False
    assert not os.path.exists(os.path.dirname(path))           # the log is gone, as xapi the VDI stays
    assert x.pool.get_redo_log_vdi(pool) == vdi and x.VDI.get_type(vdi) == "redo_log"
    x.pool.enable_redo_log(sr)                                 # reuses it
    assert x.pool.get_redo_log_vdi(pool) == vdi
    assert [v for v in x.SR.get_VDIs(sr) if x.VDI.get_type(v) == "redo_log"] == [vdi]
    assert _eventually(lambda: os.path.exists(path), 5)


def test_promoted_member_replays_the_log(sim):
    """h3 frozen (SIGSTOP) while the coordinator takes writes, then the coordinator killed: h3's replica
    missed them, the redo-log VDI's log has them."""
    h1, h2, h3 = sim.hosts
    x = h1.session().xenapi
    pool = x.pool.get_all()[0]
    assert x.pool.get_redo_log_enabled(pool) is True
    local = h3.local_session()
    x.pool.set_name_label(pool, "seen by every replica")      # h3's replica follows the log's term
    assert _eventually(lambda: local.xenapi.pool.get_name_label(pool) == "seen by every replica")
    h3.kill(signal.SIGSTOP)
    try:
        x.pool.set_name_label(pool, "at most this one reaches h3")  # one long-poll answer may be in flight
        time.sleep(0.3)
        x.pool.set_name_description(pool, "never sent to the frozen member")
        x.pool.set_other_config(pool, {"after": "the freeze"})
        time.sleep(1.5)                                        # background writes reach the log within 1 s
        h1.kill()
    finally:
        h3.kill(signal.SIGCONT)
    assert _eventually(lambda: local.xenapi.host.is_in_emergency_mode())
    local.xenapi.pool.emergency_transition_to_master()
    z = h3.session().xenapi
    assert z.pool.get_name_description(pool) == "never sent to the frozen member"
    assert z.pool.get_other_config(pool) == {"after": "the freeze"}
    assert "redo-log: " in h3.log() and " 0 entries replayed" not in h3.log()
    z.pool.set_name_label(pool, "new coordinator")             # its own term in the same VDI's log
    path = _log_file(sim, z, _shared_sr(z), z.pool.get_redo_log_vdi(pool), pool)
    assert _eventually(lambda: b'"new coordinator"' in open(path, "rb").read(), 5)


def test_restarted_coordinator_reopens_the_log():
    """A one-host pool restarted (SIGTERM) with the redo-log on: it starts a new term in the same VDI's log."""
    import shutil
    folder = _daemon.data_folder()
    shared = os.path.join(folder, "shared")
    os.makedirs(shared)
    d = _daemon.start(data_dir=folder)
    try:
        x = login(d).xenapi
        pool = x.pool.get_all()[0]
        sr = x.SR.create(x.host.get_all()[0], {"path": shared}, "0", "shared", "", "nfs", "user", True, {})
        x.pool.enable_redo_log(sr)
        vdi = x.pool.get_redo_log_vdi(pool)
        path = os.path.join(shared, x.SR.get_uuid(sr), x.VDI.get_uuid(vdi) + ".redo-log", x.pool.get_uuid(pool) + ".log")
        x.pool.set_name_label(pool, "before the restart")
        assert _eventually(lambda: b'"before the restart"' in open(path, "rb").read(), 5)
        first_term = open(path, "rb").readline()[:60]
        assert d.stop() == 0
        d = _daemon.start(data_dir=folder)
        x = login(d).xenapi
        assert x.pool.get_redo_log_enabled(pool) is True
        x.pool.set_name_label(pool, "after the restart")
        assert _eventually(lambda: b'"after the restart"' in open(path, "rb").read(), 5)
        assert open(path, "rb").readline()[:60] != first_term          # a new epoch, from a snapshot
    finally:
        d.stop()
        shutil.rmtree(folder, ignore_errors=True)
