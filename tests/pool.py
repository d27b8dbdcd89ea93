"""A pool of real daemons for tests: `xapi sim` (xapi.sim.supervisor) on free ports in a temp folder.

    @pytest.fixture
    def pool3():
        p = pool.start(3)
        yield p
        pool.cleanup(p)

`p.hosts[i]` is host i+1 (address 127.0.0.(i+2); hosts[0] the coordinator at start): `.url`,
`.https_url`, `.data_dir`, `.pid`, `.session()` (a logged-in XenAPI.Session), `.kill(sig)`.
`p.stop()` ends the supervisor, which stops every daemon; `cleanup` also kills by pid any left and
removes the folder (kept, with every host's daemon.log, when XAPI_TEST_KEEP_DATA=1). `start(n, netns=True)` (root) puts each host in its own network namespace at
198.51.100.(i+2) (`xapi sim --netns`); `p.cut(host)` / `p.mend(host)` set its link on the bridge down / up.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import XenAPI

from tests import daemon as _daemon

PASSWORD = "pool-password"


@dataclass
class Host(_daemon.Endpoint):
    address: str
    http_port: int
    https_port: int
    data_dir: str
    password: str
    namespace: str | None = None          # with netns: its namespace and its link on the bridge
    link: str | None = None

    def session(self) -> XenAPI.Session:
        s = XenAPI.Session(self.url)
        s.xenapi.login_with_password("root", self.password, "1.0", "tests")
        return s

    def local_session(self) -> XenAPI.Session:
        """session.slave_local_login_with_password: a member's own superuser session."""
        s = XenAPI.Session(self.url)
        s.slave_local_login_with_password("root", self.password)
        return s

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)

    def log(self) -> str:
        with open(os.path.join(self.data_dir, "daemon.log"), errors="replace") as f:
            return f.read()


@dataclass
class Pool:
    data_dir: str
    proc: subprocess.Popen
    hosts: list = field(default_factory=list)
    pids: list = field(default_factory=list)

    @property
    def coordinator(self) -> Host:
        return self.hosts[0]

    def log(self) -> str:
        with open(os.path.join(self.data_dir, "sim.log"), errors="replace") as f:
            return f.read()

    def cut(self, host: Host) -> None:
        subprocess.run(["ip", "link", "set", host.link, "down"], check=True)

    def mend(self, host: Host) -> None:
        subprocess.run(["ip", "link", "set", host.link, "up"], check=True)

    def stop(self, timeout: float = 20.0) -> int:
        _daemon.terminate(self.proc, timeout)
        for pid in self.pids:                   # daemons the supervisor could not stop
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.proc.returncode


def _free_on_all(n: int) -> int:
    """A port free on 127.0.0.2 ... 127.0.0.(n+1)."""
    while True:
        port = _daemon.free_port()
        if port in (8080, 8443):
            continue
        try:
            for i in range(n):
                with socket.socket() as s:
                    s.bind((f"127.0.0.{i + 2}", port))
            return port
        except OSError:
            continue


def start(n: int, *serve_args: str, timeout: float = 90.0, env: dict | None = None,
          redo_log: bool = False, netns: bool = False, data_dir: str | None = None) -> Pool:
    data_dir = data_dir or _daemon.data_folder()
    state = os.path.join(data_dir, "sim.json")
    if os.path.exists(state):                  # left by a sim that was killed: not this one's
        os.unlink(state)
    http_port = _free_on_all(n)             # in namespaces any port would do; not 8080/8443 anyway
    https_port = _free_on_all(n)
    while https_port == http_port:
        https_port = _free_on_all(n)
    environ = dict(os.environ, XAPI_ROOT_PASSWORD=PASSWORD, **(env or {}))
    args = ["--serve-arg=--auth-failure-delay=0.1", *(f"--serve-arg={a}" for a in serve_args)]
    if redo_log:
        args.append("--redo-log")
    if netns:
        args.append("--netns")
    cmd = [sys.executable, "-m", "xapi.cli.main", "sim", "--hosts", str(n), "--data-dir", data_dir,
           "--http-port", str(http_port), "--https-port", str(https_port), *args]
    with open(os.path.join(data_dir, "sim.log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ)
    pool = Pool(data_dir, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"xapi sim exited with {proc.returncode}:\n{pool.log()}")
        if os.path.exists(state):
            info = json.load(open(state))
            pool.pids = [h["pid"] for h in info["hosts"]]
            pool.hosts = [Host(h["address"], http_port, https_port, h["data_dir"], PASSWORD,
                               h.get("namespace"), h.get("link")) for h in info["hosts"]]
            return pool
        time.sleep(0.1)
    pool.stop()
    raise RuntimeError(f"xapi sim did not form the pool in {timeout}s:\n{pool.log()}")


def cleanup(pool: Pool) -> None:
    pool.stop()
    if os.path.exists(os.path.join(pool.data_dir, "netns.json")):    # a sim that could not clean up
        from xapi.sim.netns import Netns
        Netns(pool.data_dir, len(pool.hosts)).remove_leftovers()
    if _daemon.keep_data():
        print(f"kept {pool.data_dir}", file=sys.stderr)
        return
    shutil.rmtree(pool.data_dir, ignore_errors=True)
