"""Where the daemon listens follows its management interface, as xapi_mgmt_iface.run: a daemon on
127.0.0.2 given host.management_disable answers only on the loopback (127.0.0.1, same ports) and its Unix
socket, also after a restart (the inventory names no interface); host.management_reconfigure puts it
back on its address. Driven with the XenAPI SDK over real HTTP."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import XenAPI

from tests import daemon as _daemon

ADDRESS = "127.0.0.2"
PASSWORD = "test-password"


def _listens(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


class _Daemon:
    """One `serve` on ADDRESS (tests/daemon.start waits on 127.0.0.1 only)."""

    def __init__(self, folder: str, http_port: int, https_port: int) -> None:
        self.folder, self.http_port, self.https_port = folder, http_port, https_port
        env = dict(os.environ, XAPI_ROOT_PASSWORD=PASSWORD)
        with open(os.path.join(folder, "daemon.log"), "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xapi.cli.main", "serve", "--data-dir", folder, "--address", ADDRESS,
                 "--http-port", str(http_port), "--https-port", str(https_port), "--auth-failure-delay", "0.1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while not any(_listens(a, http_port) for a in (ADDRESS, "127.0.0.1")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(open(os.path.join(folder, "daemon.log")).read())
            time.sleep(0.05)

    def session(self, address: str) -> XenAPI.Session:
        s = XenAPI.Session(f"http://{address}:{self.http_port}/")
        s.xenapi.login_with_password("root", PASSWORD, "1.0", "tests")
        return s

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def folder():
    path = _daemon.data_folder()
    yield path
    if not _daemon.keep_data():
        import shutil
        shutil.rmtree(path, ignore_errors=True)


def test_management_disable_leaves_the_loopback(folder):
    http_port, https_port = _daemon.free_port(), _daemon.free_port()
    d = _Daemon(folder, http_port, https_port)
    try:
        assert _listens(ADDRESS, http_port) and _listens(ADDRESS, https_port)
        assert not _listens("127.0.0.1", http_port)
        s = d.session(ADDRESS)
        x = s.xenapi
        h = x.host.get_all()[0]
        eth0 = next(p for p in x.host.get_PIFs(h) if x.PIF.get_device(p) == "eth0")
        x.host.management_disable()                    # answered on the connection it came in on
        assert not _listens(ADDRESS, http_port) and not _listens(ADDRESS, https_port)
        assert _listens("127.0.0.1", http_port) and _listens("127.0.0.1", https_port)
        local = d.session("127.0.0.1")
        assert [p for p in local.xenapi.host.get_PIFs(h) if local.xenapi.PIF.get_management(p)] == []
        local.xenapi.session.logout()
        unix = XenAPI.Session("http://" + os.path.join(folder, "xapi").replace("/", "_") + "/",
                              transport=XenAPI.UDSTransport())
        unix.xenapi.login_with_password("root", PASSWORD, "1.0", "tests")   # the Unix socket stays
        assert unix.xenapi.host.get_all() == [h]
        unix.xenapi.session.logout()

        d.stop()                                       # the inventory names no interface: loopback at start
        d = _Daemon(folder, http_port, https_port)
        assert _listens("127.0.0.1", http_port) and not _listens(ADDRESS, http_port)
        local = d.session("127.0.0.1")
        local.xenapi.host.management_reconfigure(eth0)
        assert _listens(ADDRESS, http_port) and _listens(ADDRESS, https_port)
        assert not _listens("127.0.0.1", http_port)
        s = d.session(ADDRESS)
        assert [p for p in s.xenapi.host.get_PIFs(h) if s.xenapi.PIF.get_management(p)] == [eth0]
        s.xenapi.session.logout()
    finally:
        d.stop()


def test_a_taken_port_leaves_the_listeners_where_they_were(folder):
    """The new listener is bound before the old ones go: with the loopback's port taken by another
    program, management_disable fails with xapi's INTERNAL_ERROR (the Unix bind error) and the daemon
    still answers on its address, HTTP and HTTPS; once the port is free it moves."""
    http_port, https_port = _daemon.free_port(), _daemon.free_port()
    d = _Daemon(folder, http_port, https_port)
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", http_port))
        squatter.listen(1)
        s = d.session(ADDRESS)
        x = s.xenapi
        h = x.host.get_all()[0]
        with pytest.raises(XenAPI.Failure) as e:
            x.host.management_disable()
        assert e.value.details[0] == "INTERNAL_ERROR" and "EADDRINUSE" in e.value.details[1]
        assert _listens(ADDRESS, http_port) and _listens(ADDRESS, https_port)
        assert not _listens("127.0.0.1", https_port)        # nothing half-moved
        with open(os.path.join(folder, "inventory")) as f:  # nor half-recorded for the next start
            assert "MANAGEMENT_INTERFACE=''" not in f.read()
        again = d.session(ADDRESS)                          # new connections are served there
        assert again.xenapi.host.get_all() == [h]
        again.xenapi.session.logout()
        squatter.close()
        x.host.management_disable()
        assert not _listens(ADDRESS, http_port) and _listens("127.0.0.1", https_port)
    finally:
        squatter.close()
        d.stop()
