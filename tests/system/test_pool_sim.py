"""`xapi sim` itself: it describes the pool it formed and stops every daemon on SIGINT."""
from __future__ import annotations

import json
import os
import signal

import pytest

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


def test_sim_defaults():
    """`xapi sim` without options: 3 hosts, ports 8080 and 8443 on each address, var/sim (the test runs
    its pools on free ports instead: the defaults are read from the parser, not bound)."""
    import argparse

    from xapi.sim import supervisor
    env = os.environ.pop("XAPI_DATA_DIR", None)          # the data folder's default reads it
    try:
        parser = argparse.ArgumentParser()
        supervisor.add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["sim"])
    finally:
        if env is not None:
            os.environ["XAPI_DATA_DIR"] = env
    assert (args.hosts, args.http_port, args.https_port, args.data_dir) == (3, 8080, 8443, "var/sim")
    assert not args.netns
    assert [supervisor.host_address(i) for i in range(3)] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_sim_hosts_have_their_pid_files_and_the_root_password():
    """Each host's data folder holds its xapi.pid (the daemon's pid); root's password is
    $XAPI_ROOT_PASSWORD on every host (the coordinator's login, a member's local login; its password
    login gets HOST_IS_SLAVE naming the coordinator); each host runs its own simulated hypervisor (its
    own control domain)."""
    import XenAPI
    p = _pool.start(2)
    try:
        for h in p.hosts:
            assert int(open(os.path.join(h.data_dir, "xapi.pid")).read()) == h.pid
            assert _alive(h.pid)
        x = p.coordinator.session().xenapi
        assert len(x.host.get_all()) == 2
        for h in p.hosts:
            with pytest.raises(XenAPI.Failure) as e:
                XenAPI.Session(h.url).slave_local_login_with_password("root", "wrong")
            assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
            h.local_session().xenapi.session.local_logout()
        with pytest.raises(XenAPI.Failure) as e:
            p.hosts[1].session()
        assert e.value.details == ["HOST_IS_SLAVE", "127.0.0.2"]
        doms = {r["resident_on"] for r in x.VM.get_all_records().values() if r["is_control_domain"]}
        assert doms == set(x.host.get_all())
    finally:
        _pool.cleanup(p)
