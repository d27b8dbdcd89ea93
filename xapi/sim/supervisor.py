"""`xapi sim --hosts N --data-dir DIR`: N daemons on 127.0.0.2 ... 127.0.0.(N+1), one process each
(its own data folder DIR/host<i> with its simulated hypervisor, xenopsd and xenstored), all on the same
ports, joined into one pool whose coordinator is the first; one shared `nfs` SR on the folder DIR/nfs
with a PBD plugged on every host; with --redo-log, the pool's redo-log in DIR/nfs/redo-log
(xapi.pool.redolog). This process supervises them and stops them all on SIGINT/SIGTERM.
With --netns (root), each host runs in its own network namespace at <subnet>.(i+2) on a bridge
(xapi.sim.netns), removed again when the sim stops (or, after a crash, when it next starts).

When the pool is up, DIR/sim.json says where everything is (hosts: address, data folder, pid) and
"ready" is printed. root's password: $XAPI_ROOT_PASSWORD, else a new one (printed, and in sim.json).
A daemon that dies is reported, not restarted (tests kill coordinators on purpose).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client

from xapi import atomic

SR_NAME = "Shared storage"


def host_address(i: int) -> str:
    return f"127.0.0.{i + 2}"


class Sim:
    def __init__(self, hosts: int, data_dir: str, http_port: int, https_port: int, password: str,
                 extra: list[str], start_timeout: float = 60.0, redo_log: bool = False,
                 netns: bool = False, netns_subnet: str = "198.51.100") -> None:
        self.redo_log = redo_log
        self.n, self.data_dir = hosts, os.path.abspath(data_dir)
        self.http_port, self.https_port = http_port, https_port
        self.password, self.extra, self.start_timeout = password, extra, start_timeout
        self.procs: list[subprocess.Popen] = []
        self.stopping: list = []                 # non-empty once SIGINT/SIGTERM arrived
        self.netns = None
        if netns:
            from xapi.sim.netns import Netns
            self.netns = Netns(self.data_dir, hosts, netns_subnet)

    def address(self, i: int) -> str:
        return self.netns.address(i) if self.netns else host_address(i)

    def host_dir(self, i: int) -> str:
        return os.path.join(self.data_dir, f"host{i + 1}")

    @property
    def nfs_dir(self) -> str:
        return os.path.join(self.data_dir, "nfs")

    def url(self, i: int) -> str:
        return f"http://{self.address(i)}:{self.http_port}/"

    # -- processes ---------------------------------------------------------------------------------
    def start_host(self, i: int) -> subprocess.Popen:
        d = self.host_dir(i)
        os.makedirs(d, mode=0o700, exist_ok=True)
        env = dict(os.environ, XAPI_ROOT_PASSWORD=self.password)
        if self.redo_log:
            env["XAPI_REDO_LOG"] = os.path.join(self.nfs_dir, "redo-log")
        cmd = [sys.executable, "-m", "xapi.cli.main", "serve", "--data-dir", d, "--address", self.address(i),
               "--http-port", str(self.http_port), "--https-port", str(self.https_port), *self.extra]
        if self.netns:
            cmd = self.netns.wrap(i, cmd)
        log = open(os.path.join(d, "daemon.log"), "ab")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        return p

    def wait_up(self, i: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        pid_file = os.path.join(self.host_dir(i), "xapi.pid")
        while time.monotonic() < deadline:
            if self.stopping:
                raise RuntimeError("stopped while the hosts started")
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"host{i + 1} exited with {self.procs[i].returncode} "
                                   f"(see {self.host_dir(i)}/daemon.log)")
            if os.path.exists(pid_file):
                try:
                    socket.create_connection((self.address(i), self.http_port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"host{i + 1} did not start in {self.start_timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- the pool ----------------------------------------------------------------------------------
    def _session(self, i: int):
        proxy = xmlrpc.client.ServerProxy(self.url(i), allow_none=True)
        r = proxy.session.login_with_password("root", self.password, "1.0", "xapi-sim")
        if r["Status"] != "Success":
            return proxy, None, r["ErrorDescription"]
        return proxy, r["Value"], None

    @staticmethod
    def _ok(r):
        if r["Status"] != "Success":
            raise RuntimeError(f"xapi sim: {r['ErrorDescription']}")
        return r["Value"]

    def form_pool(self) -> None:
        coordinator = self.address(0)
        for i in range(1, self.n):
            proxy, session, error = self._session(i)
            if session is None:
                if error and error[0] == "HOST_IS_SLAVE":
                    continue                       # already a member (a folder from an earlier run)
                raise RuntimeError(f"xapi sim: login on host{i + 1}: {error}")
            try:
                self._ok(proxy.pool.join(session, coordinator, "root", self.password))
            finally:
                proxy.session.logout(session)
        self._wait_members()
        self._shared_sr()

    def _wait_members(self, timeout: float = 30.0) -> None:
        proxy, session, error = self._session(0)
        deadline = time.monotonic() + timeout
        try:
            while len(self._ok(proxy.host.get_all(session))) < self.n:
                if time.monotonic() > deadline:
                    raise RuntimeError("xapi sim: the hosts did not all join")
                time.sleep(0.1)
        finally:
            proxy.session.logout(session)

    def _shared_sr(self) -> None:
        os.makedirs(self.nfs_dir, exist_ok=True)
        proxy, session, error = self._session(0)
        try:
            srs = self._ok(proxy.SR.get_by_name_label(session, SR_NAME))
            hosts = self._ok(proxy.host.get_all(session))
            if not srs:
                master = self._ok(proxy.pool.get_master(session, self._ok(proxy.pool.get_all(session))[0]))
                sr = self._ok(proxy.SR.create(session, master, {"path": self.nfs_dir}, "0", SR_NAME,
                                              "the folder every simulated host sees", "nfs", "user", True, {}))
            else:
                sr = srs[0]
            have = {self._ok(proxy.PBD.get_host(session, p)): p for p in self._ok(proxy.SR.get_PBDs(session, sr))}
            for h in hosts:
                pbd = have.get(h)
                if pbd is None:
                    pbd = self._ok(proxy.PBD.create(session, {"host": h, "SR": sr,
                                                              "device_config": {"path": self.nfs_dir}}))
                if not self._ok(proxy.PBD.get_currently_attached(session, pbd)):
                    self._ok(proxy.PBD.plug(session, pbd))
        finally:
            proxy.session.logout(session)

    def describe(self) -> dict:
        hosts = [{"address": self.address(i), "data_dir": self.host_dir(i), "pid": p.pid}
                 for i, p in enumerate(self.procs)]
        if self.netns:
            for i, h in enumerate(hosts):
                h.update(namespace=self.netns.namespace(i), link=self.netns.veth(i))
        return {"coordinator": self.address(0), "http_port": self.http_port, "https_port": self.https_port,
                "password": self.password, "nfs": self.nfs_dir, "supervisor": os.getpid(),
                "bridge": self.netns.bridge if self.netns else None, "hosts": hosts}

    def run(self) -> int:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        state = os.path.join(self.data_dir, "sim.json")
        stopping = self.stopping
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        try:
            if self.netns:
                self.netns.create()
            self.procs = [self.start_host(i) for i in range(self.n)]
            for i in range(self.n):
                self.wait_up(i)
            self.form_pool()
            atomic.write_file(state, json.dumps(self.describe(), indent=1).encode(), 0o600)
            print(f"xapi sim: {self.n} hosts, coordinator {self.url(0)} (root password in {state})", flush=True)
            print("ready", flush=True)
            reported = set()
            while not stopping:
                for i, p in enumerate(self.procs):
                    if p.poll() is not None and i not in reported:
                        reported.add(i)
                        print(f"xapi sim: host{i + 1} exited with {p.returncode}", flush=True)
                time.sleep(0.2)
            return 0
        except (RuntimeError, OSError) as e:
            print(f"xapi sim: {e}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.stop()
            if self.netns:
                self.netns.remove()
            try:
                os.unlink(state)
            except FileNotFoundError:
                pass


def add_parser(sub) -> None:
    p = sub.add_parser("sim", help="run N simulated hosts as one pool",
                       description="Start N daemons on 127.0.0.2 ... 127.0.0.(N+1) with their own data folders "
                                   "under DIR, join them into one pool with a shared nfs SR (DIR/nfs), and "
                                   "supervise them until SIGINT/SIGTERM.")
    p.add_argument("--hosts", type=int, default=3, help="how many hosts (default 3)")
    p.add_argument("--data-dir", default=os.environ.get("XAPI_DATA_DIR", "var/sim"),
                   help="folder of the hosts' data folders and the shared nfs folder (default var/sim)")
    p.add_argument("--http-port", type=int, default=8080, help="every host's HTTP port (default 8080)")
    p.add_argument("--https-port", type=int, default=8443, help="every host's TLS port (default 8443)")
    p.set_defaults(log_level="INFO")
    p.add_argument("--redo-log", action="store_true",
                   help="the coordinator appends every committed write to DIR/nfs/redo-log/<pool uuid>.log "
                        "before answering, so a member promoted after a crash loses nothing")
    p.add_argument("--netns", action="store_true",
                   help="(root) each host in its own network namespace at <subnet>.2 ... on a bridge, so one "
                        "can be cut off (its link on the bridge set down)")
    p.add_argument("--netns-subnet", default="198.51.100",
                   help="the /24 of --netns, as its first three numbers (default 198.51.100, TEST-NET-2); "
                        "refused if this machine already routes it")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="an extra argument for every `xapi serve` (repeatable)")


def run(args) -> int:
    if args.hosts < 1 or args.hosts > 250:
        print("xapi sim: --hosts is 1 to 250", file=sys.stderr)
        return 2
    password = os.environ.get("XAPI_ROOT_PASSWORD") or secrets.token_urlsafe(12)
    return Sim(args.hosts, args.data_dir, args.http_port, args.https_port, password, args.serve_arg,
               redo_log=args.redo_log, netns=args.netns, netns_subnet=args.netns_subnet).run()
