"""The SM executor's descriptors under uvloop, as the daemon runs it: each pipe of a driver is
closed exactly once. A second close of a number (uvloop's connect_read_pipe with a file object that
also owns it, MagicStack/uvloop#763) closes whatever another thread opened under that number in
between: a mirror's disk then had its number taken by a driver's pipe and failed with
'[Errno 29] Illegal seek' (storage motion, seen in a full test run)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DRIVER = """#!/usr/bin/env python3
import sys, xmlrpc.client
sys.stderr.write("driver's stderr\\n")
sys.stdout.write(xmlrpc.client.dumps(("ok",), methodresponse=True))
"""

# driver calls through the executor (forked from its warm server, or started afresh), then a
# collection, as the daemon's garbage collector would run it; the marks bound the part traced
SCRIPT = textwrap.dedent("""
    import asyncio, gc, os, sys, uvloop
    sys.path.insert(0, {root!r})
    from xapi.sm.exec import Call, Executor

    async def main():
        ex = Executor({drivers!r}, socket_path="/nonexistent", data_dir={drivers!r}, timeout=30)
        path = os.path.join({drivers!r}, "echoSR")
        await ex.call(path, Call("sr_probe"), needs_session=False)      # the fork server is up
        gc.collect()
        os.access("/mark-begin", os.F_OK)
        for _ in range(3):
            got = await asyncio.gather(*(ex.call(path, Call("sr_probe"), needs_session=False) for _ in range(3)))
            assert got == ["ok"] * 3, got
        await asyncio.sleep(0.1)
        gc.collect()
        os.access("/mark-end", os.F_OK)
        ex.close()
        print(len(os.listdir("/proc/self/fd")))

    uvloop.run(main())
""")


@pytest.fixture
def drivers(tmp_path):
    path = tmp_path / "echoSR"
    path.write_text(DRIVER)
    path.chmod(0o755)
    return str(tmp_path)


def _traced(drivers: str, tmp_path, fork: str) -> list[str]:
    """The close and access calls of the script's own process (its main thread) between the marks."""
    script = tmp_path / "calls.py"
    script.write_text(SCRIPT.format(root=ROOT, drivers=drivers))
    prefix = str(tmp_path / "trace")
    p = subprocess.run(["strace", "-ff", "-qq", "-e", "trace=close,access", "-o", prefix, sys.executable,
                        str(script)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, XAPI_SM_FORK=fork))
    if p.returncode and "ptrace" in p.stderr:
        pytest.skip(f"strace can't trace here: {p.stderr.strip()[-200:]}")
    assert p.returncode == 0, p.stderr[-2000:]
    lines = []
    for name in os.listdir(tmp_path):
        if name.startswith("trace."):
            with open(tmp_path / name) as f:
                text = f.read()
            if "/mark-begin" in text:              # the thread that ran the calls
                lines = text.split("/mark-begin", 1)[1].split("/mark-end", 1)[0].splitlines()
    assert lines, "the marks were not traced"
    return lines


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
@pytest.mark.parametrize("fork", ["1", "0"])
def test_each_driver_pipe_is_closed_once(drivers, tmp_path, fork):
    closes = [line for line in _traced(drivers, tmp_path, fork) if line.startswith("close(")]
    twice = [line for line in closes if "EBADF" in line]
    assert closes and not twice, twice


def test_no_descriptor_is_left_open(drivers):
    """Every pipe is closed (once, and at all): the process has as many descriptors after nine
    driver calls as after the first."""
    script = SCRIPT.format(root=ROOT, drivers=drivers)
    counts = []
    for calls in ("range(0)", "range(3)"):
        p = subprocess.run([sys.executable, "-c", script.replace("range(3):", f"{calls}:")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        counts.append(int(p.stdout.split()[-1]))
    assert counts[0] == counts[1], counts
