"""Real PAM (service `xapi`) with throwaway system users, and a daemon under a brute-force loop.

Needs root (useradd, /etc/pam.d, /etc/shadow). root's own password is never changed or known: the
"good login while under attack" half uses a local-mode daemon, which has the same throttle."""
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAM_FILE = os.path.join(ROOT, "packaging", "pam.d", "xapi")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="PAM tests need root: they add system users and /etc/pam.d/xapi"),
    pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("chpasswd") and shutil.which("userdel")),
                       reason="PAM tests need useradd, chpasswd and userdel (package passwd)"),
]


@pytest.fixture(scope="module")
def pam_service():
    pytest.importorskip("pam", reason="python-pam is not installed")
    if not os.path.exists("/etc/pam.d/xapi"):
        shutil.copyfile(PAM_FILE, "/etc/pam.d/xapi")
        os.chmod("/etc/pam.d/xapi", 0o644)
    return "xapi"


@pytest.fixture(scope="module")
def system_user(pam_service):
    """(name, password) of a fresh system user, removed afterwards."""
    name = "xapit-" + secrets.token_hex(4)
    password = "Pw-" + secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
        yield name, password
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def test_pam_checks_real_accounts_without_blocking_the_loop(system_user):
    from xapi.auth.passwords import PamAuth

    user, good = system_user
    loop_threads = set()
    check_threads = set()

    async def main():
        auth = PamAuth(failure_delay=0)
        real = auth._check
        auth._check = lambda *a: check_threads.add(threading.get_ident()) or real(*a)
        loop_threads.add(threading.get_ident())
        assert await auth.check(user, good, "10.9.0.1")
        t0 = time.perf_counter()
        assert not await auth.check(user, good + "x", "10.9.0.2")
        assert time.perf_counter() - t0 < 1.0          # pam_unix's own ~2 s fail delay doesn't hold a thread
        assert not await auth.check("xapit-nosuchuser", good, "10.9.0.3")
        assert not await auth.check(user, "", "10.9.0.4")

        gaps, stop = [], asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        cases = [(user, good, True), (user, "wrong", False), ("xapit-nosuchuser", "x", False)] * 4
        results = await asyncio.gather(*(auth.check(u, p, f"10.9.1.{i}") for i, (u, p, _) in enumerate(cases)))
        stop.set()
        await tick
        assert list(results) == [ok for _, _, ok in cases]
        assert max(gaps) < 0.2, f"the event loop stalled for {max(gaps):.3f}s"

    asyncio.run(main())
    assert check_threads and not check_threads & loop_threads


# -- daemons under a brute-force loop --------------------------------------------------------------
class Conn:
    """One keep-alive JSON-RPC connection from a chosen source address."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str):
        return cls(*await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))

    async def login(self, user: str, password: str) -> tuple[dict, float]:
        body = json.dumps({"jsonrpc": "2.0", "method": "session.login_with_password",
                           "params": [user, password, "1.0", "test"], "id": 1}).encode()
        t0 = time.perf_counter()
        self.writer.write(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        reply = json.loads(await self.reader.readexactly(length))
        return reply, time.perf_counter() - t0

    def close(self):
        self.writer.close()


async def brute_force(port: int, n: int, results: list, stop: asyncio.Event):
    """n connections from 127.0.0.1 guessing root's password in a loop, as fast as they are answered."""
    conns = [await Conn.open(port, "127.0.0.1") for _ in range(n)]

    async def guess(conn, i):
        k = 0
        while not stop.is_set():
            reply, took = await conn.login("root", f"guess-{i}-{k}")
            results.append((reply.get("error", {}).get("message"), took))
            k += 1
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(guess(c, i)) for i, c in enumerate(conns)]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in conns:
            c.close()


def check_attack(results: list):
    assert results, "no guess was answered"
    assert all(message == "SESSION_AUTHENTICATION_FAILED" for message, _ in results), results[:5]
    latencies = [took for _, took in results]
    assert min(latencies) < 0.1                          # beyond its queue, an address is refused at once
    assert max(latencies) > 0.5                          # ... and its delay grew (0.1, 0.2, 0.4, ...)


def test_pam_daemon_answers_a_brute_force_loop_and_other_addresses_stay_fast(fresh_daemon, system_user):
    user, good = system_user
    d = fresh_daemon("--auth", "pam")

    async def main():
        results, stop = [], asyncio.Event()
        attack = asyncio.create_task(brute_force(d.http_port, 36, results, stop))
        await asyncio.sleep(1.5)
        other = await Conn.open(d.http_port, "127.0.0.2")
        for password in (good, "wrong"):        # refused either way (only root logs in), each promptly
            reply, took = await other.login(user, password)
            assert reply["error"]["message"] == "SESSION_AUTHENTICATION_FAILED"
            assert took < 1.5, f"127.0.0.2 waited {took:.2f}s behind 127.0.0.1's guesses"
        other.close()
        await asyncio.sleep(1.0)
        stop.set()
        await attack
        check_attack(results)

    asyncio.run(main())
    assert "auth: too many concurrent login attempts from 127.0.0.1" in d.log()


def test_good_login_stays_fast_during_a_brute_force_loop(fresh_daemon):
    d = fresh_daemon("--auth", "local")

    async def main():
        results, stop = [], asyncio.Event()
        attack = asyncio.create_task(brute_force(d.http_port, 36, results, stop))
        await asyncio.sleep(1.0)
        other = await Conn.open(d.http_port, "127.0.0.2")
        took_all = []
        for _ in range(5):
            reply, took = await other.login("root", d.password)
            assert reply.get("result", "").startswith("OpaqueRef:"), reply
            took_all.append(took)
            await asyncio.sleep(0.2)
        other.close()
        stop.set()
        await attack
        check_attack(results)
        assert max(took_all) < 1.0, took_all
        assert sorted(took_all)[2] < 0.5, took_all

    asyncio.run(main())
