"""Runs the real `xe` program (the .venv's console script) against a test daemon in each of the ways
xe connects: the local Unix socket (root, no password), plain HTTP (--nossl -u -pw), TLS (-s -p -u -pw)
and TLS with a password file (-pwf)."""
from __future__ import annotations

import os
import subprocess
import sys

XE = os.path.join(os.path.dirname(sys.executable), "xe")
MODES = ("socket", "http", "tls", "pwf")


def connection_args(d, mode: str) -> list[str]:
    if mode == "socket":
        return []
    if mode == "http":
        return ["-s", "127.0.0.1", "-p", str(d.http_port), "--nossl", "-u", "root", "-pw", d.password]
    if mode == "tls":
        return ["-s", "127.0.0.1", "-p", str(d.https_port), "-u", "root", "-pw", d.password]
    if mode == "pwf":
        path = os.path.join(d.data_dir, "xe-test.pwf")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(f"root\n{d.password}\n")
        return ["-s", "127.0.0.1", "-p", str(d.https_port), "-pwf", path]
    raise ValueError(mode)


def xe(d, *args, mode: str = "socket", input: str | None = None, timeout: float = 60, text: bool = True,
       cwd: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, XAPI_SOCKET=d.socket_path)
    return subprocess.run([XE, *connection_args(d, mode), *args], env=env, capture_output=True, text=text,
                          input=input, timeout=timeout, cwd=cwd)


def ok(r) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout.strip() if isinstance(r.stdout, str) else r.stdout
