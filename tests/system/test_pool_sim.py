"""`xapi sim` itself: it describes the pool it formed and stops every daemon on SIGINT."""
from __future__ import annotations

import json
import os
import signal

from tests import pool as _pool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sim_describes_and_stops_its_pool():
    p = _pool.start(2)
    try:
        info = json.load(open(os.path.join(p.data_dir, "sim.json")))
        assert info["coordinator"] == "127.0.0.2"
        assert [h["address"] for h in info["hosts"]] == ["127.0.0.2", "127.0.0.3"]
        assert [h["data_dir"] for h in info["hosts"]] == [os.path.join(p.data_dir, "host1"),
                                                         os.path.join(p.data_dir, "host2")]
        assert [h.pid for h in p.hosts] == [h["pid"] for h in info["hosts"]]
        assert os.path.isdir(info["nfs"])
        os.kill(p.proc.pid, signal.SIGINT)
        assert p.proc.wait(20) == 0
        assert not any(_alive(h["pid"]) for h in info["hosts"])    # reaped by the supervisor: gone
        assert not os.path.exists(os.path.join(p.data_dir, "sim.json"))
    finally:
        _pool.cleanup(p)
