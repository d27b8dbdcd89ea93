"""Fixture factories, so that a test module states only what differs: its own daemon or `xapi sim`
pool started with the arguments and environment it needs, and root sessions on a daemon. A factory's
fixture takes the module-level name it is assigned to:

    host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
    x = root_xenapi("host")
"""
from __future__ import annotations

import pytest

from tests import daemon as _daemon
from tests import pool as _pool
from tests.helpers import login


def own_daemon(*args: str, env: dict | None = None):
    """A module-scoped fixture: the module's own daemon, started with `args` and `env`, removed after."""
    @pytest.fixture(scope="module")
    def daemon():
        d = _daemon.start(*args, env=env)
        yield d
        _daemon.cleanup(d)
    return daemon


def own_pool(n: int, *serve_args: str, env: dict | None = None):
    """A module-scoped fixture: the module's own `xapi sim` pool of `n` hosts, removed after. A test that
    starts a member's daemon again itself appends its Popen to `restarted`: stopped by pid too."""
    @pytest.fixture(scope="module")
    def pool():
        p = _pool.start(n, *serve_args, env=env)
        p.restarted = []
        yield p
        for proc in p.restarted:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        _pool.cleanup(p)
    return pool


def _logout(s) -> None:
    # cleanup only: a test may have restarted or stopped the daemon under the session
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


def root_session(daemon: str = "host", scope: str = "module", originator: str | None = None):
    """A fixture: a XenAPI.Session logged in as root on the daemon fixture named `daemon`."""
    @pytest.fixture(scope=scope)
    def session(request):
        s = login(request.getfixturevalue(daemon), originator)
        yield s
        _logout(s)
    return session


def root_xenapi(daemon: str = "host", scope: str = "module", originator: str | None = None):
    """A fixture: the `xenapi` proxy of a root session of its own on the daemon fixture named `daemon`."""
    @pytest.fixture(scope=scope)
    def xenapi(request):
        s = login(request.getfixturevalue(daemon), originator)
        yield s.xenapi
        _logout(s)
    return xenapi


def xenapi_of(session: str = "session", scope: str = "module"):
    """A fixture: the `xenapi` proxy of the session fixture named `session`."""
    @pytest.fixture(scope=scope)
    def xenapi(request):
        return request.getfixturevalue(session).xenapi
    return xenapi
