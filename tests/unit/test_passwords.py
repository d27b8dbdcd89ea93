"""Local passwords (scrypt file, `xapi passwd`, root's line) and the per-address login throttle."""
import asyncio
import base64
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from xapi.auth import passwords
from xapi.auth.passwords import LocalAuth, PasswordFile, ensure_root, hash_password, verify_password
from xapi.auth.throttle import Throttle, peer_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINE = re.compile(r"^([^:]+):\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def passwd_cli(data_dir: str, *args: str, stdin: str = "", env: dict | None = None):
    environ = {k: v for k, v in os.environ.items() if k not in ("XAPI_ROOT_PASSWORD", "XAPI_DATA_DIR")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "xapi.cli.main", "passwd", *args, "--data-dir", data_dir, "--stdin"],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, env=environ, timeout=30)


# -- the scrypt file -----------------------------------------------------------------------------
def test_hash_format_and_round_trip():
    encoded = hash_password("correct horse")
    m = LINE.match("u:" + encoded)
    assert m, encoded
    assert (int(m[2]), int(m[3]), int(m[4])) == (passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P)
    assert len(base64.b64decode(m[5])) == 16 and len(base64.b64decode(m[6])) == 32
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horse ", encoded)
    assert not verify_password("", encoded)
    assert hash_password("correct horse") != encoded                       # a fresh salt each time
    cheap = hash_password("é ✓", n=1024, r=4, p=1)                          # parameters come from the line
    assert "$n=1024,r=4,p=1$" in cheap and verify_password("é ✓", cheap)
    for broken in ("", "x", "$scrypt$n=3,r=8,p=1$AAAA$AAAA", "$bcrypt$n=1024,r=8,p=1$AAAA$AAAA",
                   encoded.replace("n=16384", "n=1048576000"), encoded[:-6] + "AAAA=="):
        assert not verify_password("correct horse", broken)
    with pytest.raises(ValueError):
        hash_password("")


def test_password_file_rewrites_one_line_and_stays_private(tmp_path):
    pf = PasswordFile(str(tmp_path))
    pf.set("alice", "a-pass")
    pf.set("bob", "b-pass")
    with open(pf.path, "a") as f:
        f.write("# kept as it is\n")
    pf.set("alice", "a-pass-2")
    lines = open(pf.path).read().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob", "# kept as it is"]
    assert all(LINE.match(line) for line in lines[:2])
    assert mode(pf.path) == 0o600
    assert verify_password("a-pass-2", pf.get("alice")) and not verify_password("a-pass", pf.get("alice"))
    assert pf.delete("alice") and not pf.delete("alice")
    assert set(pf.users()) == {"bob"}
    with pytest.raises(ValueError):
        pf.set("ev:il", "x")
    os.chmod(pf.path, 0o644)
    pf.fix_mode()
    assert mode(pf.path) == 0o600


def test_local_auth_checks_users_and_sees_file_changes(tmp_path):
    pf = PasswordFile(str(tmp_path))
    pf.set("root", "r00t")

    async def main():
        auth = LocalAuth(str(tmp_path), failure_delay=0)
        assert await auth.check("root", "r00t", "10.0.0.1")
        assert not await auth.check("root", "wrong", "10.0.0.1")
        assert not await auth.check("nobody", "r00t", "10.0.0.1")
        assert not await auth.check("root", "", "10.0.0.1")
        assert not await auth.check("root", None, "10.0.0.1")
        pf.set("carol", "c-pass")                                  # as `xapi passwd` would, daemon running
        assert await auth.check("carol", "c-pass", "10.0.0.1")
        pf.delete("carol")
        assert not await auth.check("carol", "c-pass", "10.0.0.1")

    asyncio.run(main())


def test_unknown_user_and_wrong_password_take_the_same_path(tmp_path, monkeypatch):
    PasswordFile(str(tmp_path)).set("root", "r00t")
    calls = []
    real = passwords._scrypt
    monkeypatch.setattr(passwords, "_scrypt", lambda *a, **k: calls.append(a[2:5]) or real(*a, **k))

    async def main():
        auth = LocalAuth(str(tmp_path), failure_delay=0.001)
        for user, password in (("root", "wrong"), ("nobody", "wrong"), ("ro:ot", "wrong"), ("root", "")):
            calls.clear()
            assert not await auth.check(user, password, "10.0.0.9")
            assert calls == [(passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P)], user
        calls.clear()
        await auth.failed("mallory", "10.0.0.9")        # refused without a check: still one scrypt's work
        assert len(calls) == 1
        assert auth.throttle.failures("10.0.0.9") == 5

    asyncio.run(main())


# -- root's line ---------------------------------------------------------------------------------
def test_root_generated_then_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("XAPI_ROOT_PASSWORD", raising=False)
    data = str(tmp_path / "data")
    generated = ensure_root(data)
    kept = os.path.join(data, "root-password")
    assert generated and open(kept).read().strip() == generated
    assert mode(kept) == 0o600 and mode(os.path.join(data, "passwd")) == 0o600
    pf = PasswordFile(data)
    assert verify_password(generated, pf.get("root"))
    line = open(pf.path).read()
    assert ensure_root(data) is None and open(pf.path).read() == line          # nothing rewritten


def test_root_from_existing_root_password_file(tmp_path, monkeypatch):
    """A data folder from before the password file: root keeps its password."""
    monkeypatch.delenv("XAPI_ROOT_PASSWORD", raising=False)
    with open(tmp_path / "root-password", "w") as f:
        f.write("older-password\n")
    assert ensure_root(str(tmp_path)) is None
    assert verify_password("older-password", PasswordFile(str(tmp_path)).get("root"))


def test_xapi_root_password_always_wins(tmp_path, monkeypatch):
    data = str(tmp_path)
    pf = PasswordFile(data)
    pf.set("root", "set-by-admin")
    monkeypatch.setenv("XAPI_ROOT_PASSWORD", "from-env")
    assert ensure_root(data) is None
    assert verify_password("from-env", pf.get("root"))
    assert not os.path.exists(os.path.join(data, "root-password"))
    line = open(pf.path).read()
    assert ensure_root(data) is None and open(pf.path).read() == line          # unchanged: not rehashed
    monkeypatch.setenv("XAPI_ROOT_PASSWORD", "changed")
    ensure_root(data)
    assert verify_password("changed", pf.get("root"))
    monkeypatch.delenv("XAPI_ROOT_PASSWORD")
    assert ensure_root(data) is None                                          # the line stays
    assert verify_password("changed", pf.get("root"))


# -- xapi passwd ---------------------------------------------------------------------------------
def test_xapi_passwd_command(tmp_path):
    data = str(tmp_path / "data")
    r = passwd_cli(data, "alice", stdin="first pass\n")
    assert r.returncode == 0, r.stderr
    path = os.path.join(data, "passwd")
    assert mode(path) == 0o600 and mode(data) == 0o700
    pf = PasswordFile(data)
    assert verify_password("first pass", pf.get("alice"))
    assert passwd_cli(data, "alice", stdin="second pass\n").returncode == 0
    assert verify_password("second pass", pf.get("alice"))
    assert passwd_cli(data, "bob", stdin="\n").returncode == 1                 # empty: refused
    assert passwd_cli(data, "b:ob", stdin="x\n").returncode == 2
    assert set(pf.users()) == {"alice"}
    r = passwd_cli(data, "alice", "--delete")
    assert r.returncode == 0 and pf.users() == {}
    assert passwd_cli(data, "alice", "--delete").returncode == 1


def test_xapi_passwd_root_replaces_the_generated_password(tmp_path, monkeypatch):
    monkeypatch.delenv("XAPI_ROOT_PASSWORD", raising=False)
    data = str(tmp_path)
    assert ensure_root(data)
    r = passwd_cli(data, "root", stdin="new root pass\n", env={"XAPI_ROOT_PASSWORD": "x"})
    assert r.returncode == 0 and "XAPI_ROOT_PASSWORD" in r.stderr
    assert not os.path.exists(os.path.join(data, "root-password"))           # it held the old one
    assert verify_password("new root pass", PasswordFile(data).get("root"))
    assert ensure_root(data) is None                                          # nothing regenerated
    assert verify_password("new root pass", PasswordFile(data).get("root"))


# -- the throttle --------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_delays_double_per_address_and_decay():
    clock = Clock()
    t = Throttle(2.0, max_delay=30.0, quiet=60.0, clock=clock)
    assert [t.failure("10.0.0.1") for _ in range(7)] == [2, 4, 8, 16, 30, 30, 30]
    assert t.failure("10.0.0.2") == 2                                         # other addresses: unaffected
    assert t.failures("10.0.0.3") == 0
    clock.now += 59
    assert t.failure("10.0.0.1") == 30
    clock.now += 60 * 2 + 1                                                   # two quiet periods: two fewer
    assert t.failures("10.0.0.1") == t._max_count - 2
    assert t.failure("10.0.0.1") == 16
    t.success("10.0.0.1")
    assert t.failure("10.0.0.1") == 2
    clock.now += 3600
    t._sweep()
    assert len(t) == 0                                                        # idle, decayed: forgotten


def test_addresses_are_grouped_sensibly():
    assert peer_key("192.0.2.7") == "192.0.2.7"
    assert peer_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("local") == "local" and peer_key("") == ""


def test_turns_queue_in_order_and_overflow_fails_at_once():
    async def main():
        t = Throttle(0, in_flight=1, queue=2)
        assert await t.acquire("10.0.0.1")
        order = []

        async def waiter(name):
            await t.acquire("10.0.0.1")
            order.append(name)

        w1 = asyncio.create_task(waiter("w1"))
        w2 = asyncio.create_task(waiter("w2"))
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        assert not await t.acquire("10.0.0.1")                                 # queue full: refused at once
        assert time.perf_counter() - t0 < 0.5 and t.rejected == 1              # (a wait would be forever)
        assert await asyncio.wait_for(t.acquire("10.0.0.2"), 0.1)              # another address: no wait
        t.release("10.0.0.2")
        w1.cancel()                                                           # a client gone while queued
        await asyncio.sleep(0)
        t.release("10.0.0.1")
        await asyncio.sleep(0)
        assert order == ["w2"] and w1.cancelled()
        t.release("10.0.0.1")
        assert len(t) == 0

    asyncio.run(main())


def test_brute_force_from_one_address_does_not_slow_another(tmp_path):
    PasswordFile(str(tmp_path)).set("root", "r00t")

    async def main():
        auth = LocalAuth(str(tmp_path), throttle=Throttle(0.05, in_flight=2, queue=32))
        attack = [asyncio.create_task(auth.check("root", f"guess{i}", "10.0.0.1")) for i in range(40)]
        await asyncio.sleep(0.2)
        done = [a for a in attack if a.done()]
        assert len(done) >= 6 and not any(a.result() for a in done)          # the overflow: failed at once
        assert auth.throttle.rejected == 6
        # Behind the attacker's queue (30 attempts, delays 0.05 s doubling) another address would wait
        # many seconds; 2 s leaves room for a loaded machine's slow hashing without hiding that.
        for _ in range(3):
            t0 = time.perf_counter()
            assert await auth.check("root", "r00t", "10.0.0.2")
            assert time.perf_counter() - t0 < 2.0
            t0 = time.perf_counter()
            assert not await auth.check("root", "bad", "10.0.0.3")           # first failure: the base delay
            assert time.perf_counter() - t0 < 2.0
            await auth.failed("root", "10.0.0.3")                           # after check: no second delay
            assert time.perf_counter() - t0 < 2.0
        assert auth.throttle.failures("10.0.0.1") >= 3                      # 0.05, 0.1, 0.2, ...: still going
        assert sum(not a.done() for a in attack) >= 25
        for a in attack:
            a.cancel()
        await asyncio.gather(*attack, return_exceptions=True)

    asyncio.run(main())


def test_failed_without_check_serves_the_delay(tmp_path):
    PasswordFile(str(tmp_path)).set("root", "r00t")

    async def main():
        auth = LocalAuth(str(tmp_path), failure_delay=0.2)
        t0 = time.perf_counter()
        await auth.failed("someone", "10.0.0.4")
        assert time.perf_counter() - t0 >= 0.2
        t0 = time.perf_counter()
        assert not await auth.check("root", "bad", "10.0.0.5")
        await auth.failed("root", "10.0.0.5")
        assert 0.2 <= time.perf_counter() - t0 < 0.6                       # served once, not twice (0.2 + 0.4)

    asyncio.run(main())
