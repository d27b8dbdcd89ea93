"""Checks user names and passwords: the local password file, or PAM (service `xapi`).

`local`: `<data>/passwd` (mode 0600), one `user:$scrypt$n=..,r=..,p=..$<salt b64>$<hash b64>` line per
user, managed with `xapi passwd`. root's line is made on first start from `$XAPI_ROOT_PASSWORD`, else from
the password kept in `<data>/root-password`; `$XAPI_ROOT_PASSWORD`, when set, always wins.
`pam`: any account the PAM service `xapi` accepts (packaging/pam.d/xapi), through python-pam.

Password checks are CPU-heavy (scrypt) or block (PAM): both run in small thread pools, never in the event
loop, and every attempt goes through the caller's address's turn and delay (xapi.auth.throttle).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import ctypes
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from xapi.auth.throttle import Throttle

log = logging.getLogger("xapi.auth")

# PAM conversations block, so they run here, never in the event loop.
_pam_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pam")
# scrypt takes ~50 ms of CPU (it releases the GIL): at most two at once.
_scrypt_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrypt")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1       # 16 MiB, ~50 ms
_SALT_BYTES, _HASH_BYTES = 16, 32
MAX_PASSWORD = 4096                                 # bytes; longer ones never match
PAM_CONFIG = "/etc/pam.d/xapi"


# -- scrypt hashes -------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int = _HASH_BYTES) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=128 * r * (n + p + 2) + (1 << 20))


def _encode(password) -> bytes | None:
    if not isinstance(password, str):
        return None
    data = password.encode("utf-8", "surrogatepass")
    return data if 0 < len(data) <= MAX_PASSWORD else None


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`$scrypt$n=..,r=..,p=..$<salt b64>$<hash b64>` for a non-empty password."""
    data = _encode(password)
    if data is None:
        raise ValueError(f"a password is 1 to {MAX_PASSWORD} bytes of text")
    salt = os.urandom(_SALT_BYTES)
    return f"$scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(_scrypt(data, salt, n, r, p))}"


def _parse(encoded: str):
    """(n, r, p, salt, hash), or None for anything that isn't a sane scrypt hash."""
    try:
        empty, kind, params, salt, digest = encoded.split("$")
        if empty or kind != "scrypt":
            return None
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt_bytes = base64.b64decode(salt, validate=True)
        digest_bytes = base64.b64decode(digest, validate=True)
    except (ValueError, KeyError):
        return None
    # Bounds keep a tampered file from making one check take seconds or gigabytes.
    if not (1 < n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
            and 128 * r * n * p <= 1 << 30 and salt_bytes and 16 <= len(digest_bytes) <= 64):
        return None
    return n, r, p, salt_bytes, digest_bytes


_DUMMY_SALT = os.urandom(_SALT_BYTES)


def _dummy_check(data: bytes | None) -> bool:
    """The cost of checking a password against a default-strength hash, for users who have none."""
    _scrypt(data or b"", _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return False


def _verify(data: bytes | None, encoded: str | None) -> bool:
    parsed = _parse(encoded) if encoded else None
    if data is None or parsed is None:
        return _dummy_check(data)
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(data, salt, n, r, p, len(digest)), digest)


def verify_password(password: str, encoded: str) -> bool:
    """Does `password` match the scrypt hash `encoded`? (Blocks ~50 ms: not for the event loop.)"""
    return _verify(_encode(password), encoded)


# -- the password file ---------------------------------------------------------------------------
def valid_user(user) -> bool:
    return (isinstance(user, str) and user == user.strip() and 0 < len(user) <= 256
            and not any(c in user for c in ":\n\r\0"))


class PasswordFile:
    """`<data>/passwd`: read again whenever it changes on disk, rewritten whole (atomically) on change."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, "passwd")
        self._lock = threading.Lock()
        self._stamp = None
        self._users: dict[str, str] = {}

    @staticmethod
    def _parse_lines(text: str) -> dict[str, str]:
        users = {}
        for line in text.splitlines():
            if not line or line.startswith("#") or ":" not in line:
                continue
            user, encoded = line.split(":", 1)
            users[user] = encoded.strip()
        return users

    def users(self) -> dict[str, str]:
        """user -> encoded hash."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._stamp, self._users = None, {}
                return {}
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    self._users = self._parse_lines(f.read())
                self._stamp = stamp
            return self._users

    def get(self, user: str) -> str | None:
        return self.users().get(user) if valid_user(user) else None

    @contextlib.contextmanager
    def _locked(self):
        """Serialises writers (the daemon at start, `xapi passwd`) on <data>/passwd.lock."""
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _rewrite(self, user: str, line: str | None) -> bool:
        """Replaces (or, with line None, removes) user's line, keeping all others; True if it was there."""
        with self._locked():
            try:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                lines = []
            out, found = [], False
            for old in lines:
                if old.split(":", 1)[0] == user and ":" in old and not old.startswith("#"):
                    if line is not None and not found:
                        out.append(line)
                    found = True
                else:
                    out.append(old)
            if line is not None and not found:
                out.append(line)
            tmp = f"{self.path}.tmp.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write("".join(f"{x}\n" for x in out))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
            dfd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return found

    def set(self, user: str, password: str) -> None:
        if not valid_user(user):
            raise ValueError(f"invalid user name {user!r}")
        self._rewrite(user, f"{user}:{hash_password(password)}")

    def delete(self, user: str) -> bool:
        return self._rewrite(user, None)

    def fix_mode(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            mode = os.stat(self.path).st_mode & 0o777
            if mode != 0o600:
                log.warning("auth: %s had mode %o: now 0600", self.path, mode)
                os.chmod(self.path, 0o600)


def root_password(data_dir: str) -> tuple[str, bool]:
    """XAPI_ROOT_PASSWORD, else the password kept in <data>/root-password (made on first start).

    Returns (password, newly generated)."""
    env = os.environ.get("XAPI_ROOT_PASSWORD")
    if env:
        return env, False
    path = os.path.join(data_dir, "root-password")
    try:
        with open(path) as f:
            return f.read().strip(), False
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password, True


def ensure_root(data_dir: str) -> str | None:
    """Gives root its line in <data>/passwd; returns root's password if it was just generated.

    $XAPI_ROOT_PASSWORD always wins (the line is rewritten when it no longer matches); otherwise an
    existing line stays, and a missing one is made from <data>/root-password (generated if need be)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    pf = PasswordFile(data_dir)
    pf.fix_mode()
    env = os.environ.get("XAPI_ROOT_PASSWORD")
    if env:
        current = pf.get("root")
        if current is None or not verify_password(env, current):
            pf.set("root", env)
        return None
    if pf.get("root") is not None:
        return None
    password, generated = root_password(data_dir)
    pf.set("root", password)
    return password if generated else None


# -- backends ------------------------------------------------------------------------------------
# Set by check() when it has already served a failure's delay, so the failed() the login flow calls
# next (in the same task, for the same user and address) doesn't serve it twice.
_served: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("xapi_auth_failure_served", default=None)


# Set by check() on a right password: the address's failures are cleared only once the login has made
# its session (login_succeeded(), from Sessions.create), as the subject and RBAC checks may still
# refuse it; a refused login must not wipe the address's failed guesses.
_succeeded: contextvars.ContextVar = contextvars.ContextVar("xapi_auth_password_ok", default=None)


def login_succeeded() -> None:
    """The login whose password check() accepted in this task has its session: clears the failures
    of its address."""
    clear = _succeeded.get()
    if clear is not None:
        _succeeded.set(None)
        clear()


class _Backend:
    """check() takes a turn of the caller's address (xapi.auth.throttle), checks the password in a thread
    pool and, on failure, waits out the address's delay before answering. failed() serves the same path
    for a login refused without a check, so unknown users, users who may not log in and wrong passwords
    look alike, in answer and in timing."""

    def __init__(self, failure_delay: float = 2.0, throttle: Throttle | None = None) -> None:
        self.throttle = throttle if throttle is not None else Throttle(failure_delay)

    @property
    def failure_delay(self) -> float:
        return self.throttle.failure_delay

    @failure_delay.setter
    def failure_delay(self, value: float) -> None:
        self.throttle.failure_delay = value

    async def _verify(self, user, password, peer: str) -> bool:
        raise NotImplementedError

    async def _refuse(self) -> bool:
        return False

    async def check(self, user: str, password: str, peer: str = "") -> bool:
        _served.set(None)
        _succeeded.set(None)
        ok = await self.throttle.run(peer, lambda: self._verify(user, password, peer), clear=False)
        if ok:
            _succeeded.set(lambda: self.throttle.success(peer))
        else:
            _served.set((id(self), user, peer))
        return ok

    async def failed(self, user: str, peer: str = "") -> None:
        _succeeded.set(None)
        if _served.get() == (id(self), user, peer):
            _served.set(None)
            return
        await self.throttle.run(peer, self._refuse)


class LocalAuth(_Backend):
    """Users of <data>/passwd (scrypt hashes)."""

    def __init__(self, data_dir: str, *, failure_delay: float = 2.0, throttle: Throttle | None = None) -> None:
        super().__init__(failure_delay, throttle)
        self.file = PasswordFile(data_dir)

    def _check(self, user, password) -> bool:
        data = _encode(password)
        try:
            encoded = self.file.get(user)
        except OSError:
            log.exception("auth: reading %s", self.file.path)
            encoded = None
        return _verify(data, encoded)

    async def _verify(self, user, password, peer: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(_scrypt_pool, self._check, user, password)

    async def _refuse(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(_scrypt_pool, _dummy_check, None)


# libpam would sleep ~2 s (pam_unix's fail delay) in the checking thread after every failure; this no-op
# delay function replaces that sleep, as the caller's throttle answers failures late instead.
_PAM_FAIL_DELAY = 10
_pam_no_delay = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)(lambda *_: None)


class PamAuth(_Backend):
    """Any account PAM accepts for the `xapi` service (python-pam)."""

    def __init__(self, service: str = "xapi", *, failure_delay: float = 2.0,
                 throttle: Throttle | None = None) -> None:
        super().__init__(failure_delay, throttle)
        import pam  # python-pam; imported here so `local` mode doesn't need libpam

        self._pam = pam
        self.service = service
        self._pad = 0.1            # seconds: see _verify

    def _check(self, user, password, peer: str = "") -> bool:
        if not valid_user(user) or _encode(password) is None:
            return False                          # never ask PAM about empty passwords (nullok)
        handle = self._pam.pam()
        real = handle.pam_authenticate

        def authenticate(pamh, flags):
            handle.pam_set_item(pamh, _PAM_FAIL_DELAY, ctypes.cast(_pam_no_delay, ctypes.c_void_p))
            if peer:
                handle.pam_set_item(pamh, self._pam.PAM_RHOST, ctypes.c_char_p(peer.encode()))
            return real(pamh, flags)

        handle.pam_authenticate = authenticate
        try:
            return bool(handle.authenticate(user, password, service=self.service, resetcreds=False))
        except Exception:
            log.exception("auth: PAM check failed")
            return False

    async def _verify(self, user, password, peer: str) -> bool:
        # PAM says "no such user" sooner than "wrong password" (no hash to compute): failures are padded,
        # in the event loop, to the slowest recent check, so their timing doesn't tell the two apart.
        loop = asyncio.get_running_loop()
        start = loop.time()
        ok = await loop.run_in_executor(_pam_pool, self._check, user, password, peer)
        took = loop.time() - start
        self._pad = min(max(took, self._pad * 0.98), 1.0)
        if not ok and took < self._pad:
            await asyncio.sleep(self._pad - took)
        return ok

    async def _refuse(self) -> bool:
        await asyncio.sleep(self._pad)
        return False


def open_auth(kind: str, data_dir: str, failure_delay: float = 2.0) -> tuple[_Backend, str | None]:
    """The daemon's password checker, and root's password if it was just generated (local only)."""
    if kind == "pam":
        if not os.path.exists(PAM_CONFIG):
            log.warning("auth: %s is missing, so PAM uses its 'other' service: install packaging/pam.d/xapi",
                        PAM_CONFIG)
        return PamAuth(failure_delay=failure_delay), None
    generated = ensure_root(data_dir)
    return LocalAuth(data_dir, failure_delay=failure_delay), generated
