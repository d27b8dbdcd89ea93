"""Starts a real daemon for tests: free ports, its own data folder, stopped by pid."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """How tests reach a daemon (one of ours, or a pool host): its URLs and the pid in its data folder."""

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}/"

    @property
    def https_url(self) -> str:
        return f"https://{self.address}:{self.https_port}/"

    @property
    def pid(self) -> int:
        return int(open(os.path.join(self.data_dir, "xapi.pid")).read())


@dataclass
class Daemon(Endpoint):
    address = "127.0.0.1"                 # not a field: every test daemon listens there
    data_dir: str
    http_port: int
    https_port: int
    password: str
    proc: subprocess.Popen
    log_path: str
    extra_args: list = field(default_factory=list)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.data_dir, "xapi")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        return terminate(self.proc, timeout)


def terminate(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM by pid, then SIGKILL if it doesn't go; returns the exit status."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def data_folder() -> str:
    # XenAPI's Unix-socket transport turns '_' in the host name into '/': keep underscores out of the path.
    path = os.path.join(tempfile.gettempdir(), "xapitest-" + secrets.token_hex(6))
    os.makedirs(path)
    return path


def start(*args: str, password: str | None = "test-password", data_dir: str | None = None,
          env: dict | None = None, timeout: float = 30.0) -> Daemon:
    data_dir = data_dir or data_folder()
    http_port, https_port = free_port(), free_port()
    environ = dict(os.environ)
    environ.pop("XAPI_ROOT_PASSWORD", None)
    if password is not None:
        environ["XAPI_ROOT_PASSWORD"] = password
    environ.update(env or {})
    log_path = os.path.join(data_dir, "daemon.log")
    cmd = [sys.executable, "-m", "xapi.cli.main", "serve", "--data-dir", data_dir,
           "--address", "127.0.0.1", "--http-port", str(http_port), "--https-port", str(https_port),
           "--auth-failure-delay", "0.1", *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=environ)
    d = Daemon(data_dir, http_port, https_port, password or "", proc, log_path, list(args))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}:\n{d.log()}")
        if os.path.exists(os.path.join(data_dir, "xapi.pid")):
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                return d
            except OSError:
                pass
        time.sleep(0.05)
    d.stop()
    raise RuntimeError(f"daemon did not start in {timeout}s:\n{d.log()}")


def keep_data() -> bool:
    """XAPI_TEST_KEEP_DATA=1: cleanups leave the data folders (daemon logs, state) for a post-mortem."""
    return os.environ.get("XAPI_TEST_KEEP_DATA", "") not in ("", "0")


def cleanup(d: Daemon) -> None:
    d.stop()
    if keep_data():
        print(f"kept {d.data_dir}", file=sys.stderr)
        return
    shutil.rmtree(d.data_dir, ignore_errors=True)
