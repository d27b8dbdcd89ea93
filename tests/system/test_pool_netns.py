"""`xapi sim --netns` (root only): each host in its own network namespace on a bridge. A member cut off
(its link on the bridge down) goes not live on the coordinator, calls the coordinator sends it fail with
HOST_OFFLINE instead of hanging, it still serves its local login inside its namespace, and once its link
is back it is live again and answers forwarded calls. The sim removes its namespaces when it stops."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import XenAPI

from tests import pool as _pool
from tests.helpers import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

FAST = {"XAPI_HOST_HEARTBEAT_INTERVAL": "0.2", "XAPI_HOST_ASSUMED_DEAD": "1.5"}


def _eventually(fn, timeout: float = 15.0):
    return eventually(fn, timeout, interval=0.1)


def _live(x) -> dict:
    return {r["address"]: x.host_metrics.get_live(r["metrics"]) for r in x.host.get_all_records().values()}


def _inside(host, script: str) -> str:
    """`script` run by a Python inside the host's namespace (only the namespace reaches it then)."""
    r = subprocess.run(["ip", "netns", "exec", host.namespace, sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=30, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _running(pid: int) -> bool:
    """Alive and not a zombie (the killed sim's daemons are reaped by whoever inherits them)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_member_cut_off_and_back():
    p = _pool.start(3, env=FAST, netns=True)
    try:
        h1, h2, h3 = p.hosts
        info = json.load(open(os.path.join(p.data_dir, "sim.json")))
        assert [h["address"] for h in info["hosts"]] == ["198.51.100.2", "198.51.100.3", "198.51.100.4"]
        assert all(h.namespace in _namespaces() for h in p.hosts)
        x = h1.session().xenapi
        refs = {r["address"]: h for h, r in x.host.get_all_records().items()}
        assert _eventually(lambda: all(_live(x).values()))
        assert x.host.get_servertime(refs[h3.address])            # forwarded to the member: it answers
        p.cut(h3)
        assert _eventually(lambda: _live(x) == {h1.address: True, h2.address: True, h3.address: False})
        t = time.monotonic()
        with pytest.raises(XenAPI.Failure) as e:
            x.host.get_servertime(refs[h3.address])
        assert e.value.details[0] == "HOST_OFFLINE" and time.monotonic() - t < 20   # calls.DEAD_PEER
        # the member itself, seen from inside its namespace: local login works without its coordinator
        out = _inside(h3, f"""
import XenAPI
s = XenAPI.Session({h3.url!r})
try:
    s.xenapi.login_with_password("root", {h3.password!r}, "1.0", "t")
except XenAPI.Failure as e:
    print(e.details)
s.slave_local_login_with_password("root", {h3.password!r})
print(s.xenapi.host.get_address(s.xenapi.session.get_this_host(s._session)))
""")
        assert out.splitlines() == [str(["HOST_IS_SLAVE", h1.address]), h3.address]
        # nothing in the caller's namespace reaches it now
        assert not _probe(h3)
        p.mend(h3)
        assert _eventually(lambda: all(_live(x).values()))
        assert _eventually(lambda: _servertime(x, refs[h3.address]))
        assert _live(x)[h2.address] is True
    finally:
        _pool.cleanup(p)
    assert not any(h.namespace in _namespaces() for h in p.hosts)   # the sim removed them


def _probe(host) -> bool:
    import socket
    try:
        socket.create_connection((host.address, host.http_port), timeout=1).close()
        return True
    except OSError:
        return False


def _servertime(x, host) -> bool:
    try:
        return bool(x.host.get_servertime(host))
    except XenAPI.Failure:
        return False


def test_a_crashed_sim_leaves_nothing_after_the_next_start():
    """kill -9 of `xapi sim --netns` leaves its namespaces, bridge and daemons; the next start on the same
    folder removes them (the old daemon ends) before making its own, and its stop removes those."""
    import signal
    first = _pool.start(1, netns=True)
    try:
        old = first.hosts[0]
        old_pid = old.pid
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        assert old.namespace in _namespaces() and _running(old_pid)
        second = _pool.start(1, netns=True, data_dir=first.data_dir)
        first.proc = second.proc                   # cleanup stops it if an assertion fails
        assert not _running(old_pid)
        new = second.hosts[0]
        assert new.namespace == old.namespace and new.pid != old_pid
        assert len(new.session().xenapi.host.get_all()) == 1
        assert second.stop() == 0
        assert old.namespace not in _namespaces()
        assert subprocess.run(["ip", "link", "show", new.link], capture_output=True).returncode != 0
    finally:
        first.pids = []
        _pool.cleanup(first)
