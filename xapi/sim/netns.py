"""`xapi sim --netns` (root only): each host in its own network namespace, joined by a bridge.

The bridge (in the caller's namespace, <subnet>.1/24) links one veth pair per host; host i gets
<subnet>.(i+2) inside its namespace, so a test can cut a host off by setting its bridge-side veth down
(`Netns.cut`/`mend`). Names derive from the data folder, and what was made is recorded in
DIR/netns.json before it is made: the next start removes what a crashed sim left (including the
daemons it left running in those namespaces)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

# TEST-NET-2 (RFC 5737). Not TEST-NET-1 (192.0.2.0/24): development containers use it for their own
# network (eth0 and gateway), and a second route for it would cut the machine off.
SUBNET = "198.51.100"
RECORD = "netns.json"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Netns:
    def __init__(self, data_dir: str, hosts: int, subnet: str = SUBNET) -> None:
        self.data_dir, self.n, self.subnet = data_dir, hosts, subnet
        tag = hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:6]
        self.tag = tag
        self.bridge = f"xsb{tag}"                              # interface names: at most 15 bytes

    def namespace(self, i: int) -> str:
        return f"xsim{self.tag}-{i + 1}"

    def veth(self, i: int) -> str:
        """The bridge-side end of host i's link (the host's end is eth0 in its namespace)."""
        return f"xsv{self.tag}{i + 1}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i + 2}"

    def _record_path(self) -> str:
        return os.path.join(self.data_dir, RECORD)

    # -- making and removing -------------------------------------------------------------------
    def create(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("--netns needs root")
        if not 1 <= self.n <= 250:
            raise RuntimeError("--netns: 1 to 250 hosts")
        self.remove_leftovers()
        prefix = f"{self.subnet}."
        for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
            if prefix in line:
                raise RuntimeError(f"--netns: {self.subnet}.0/24 is already routed here ({line.strip()}): "
                                   "one --netns sim at a time, on a subnet this machine does not use")
        with open(self._record_path(), "w") as f:
            json.dump({"bridge": self.bridge, "namespaces": [self.namespace(i) for i in range(self.n)]}, f)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.n):
            ns, outside = self.namespace(i), self.veth(i)
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def remove(self, record: dict | None = None) -> None:
        record = record or {"bridge": self.bridge, "namespaces": [self.namespace(i) for i in range(self.n)]}
        for ns in record.get("namespaces", []):
            self._end_processes(ns)
            _ip("netns", "del", ns, check=False)             # takes its veth pair with it
        _ip("link", "del", record.get("bridge", self.bridge), check=False)
        try:
            os.unlink(self._record_path())
        except FileNotFoundError:
            pass

    def remove_leftovers(self) -> None:
        try:
            with open(self._record_path()) as f:
                record = json.load(f)
        except (FileNotFoundError, ValueError):
            return
        self.remove(record)

    @staticmethod
    def _end_processes(ns: str) -> None:
        """Daemons a crashed sim left in its own namespace (only ours live there)."""
        r = _ip("netns", "pids", ns, check=False)
        pids = [int(p) for p in r.stdout.split()] if r.returncode == 0 else []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
                time.sleep(0.05)
            if not pids:
                return

    # -- running and cutting -------------------------------------------------------------------
    def wrap(self, i: int, cmd: list[str]) -> list[str]:
        """`cmd` run inside host i's namespace (`ip netns exec` execs it: the pid is the daemon's)."""
        return ["ip", "netns", "exec", self.namespace(i), *cmd]

    def cut(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "down")

    def mend(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "up")
