"""Checks user names and passwords: the local root password, or PAM (service `xapi`)."""
from __future__ import annotations

import asyncio
import hmac
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

# PAM conversations block (and may sleep on failure), so they run here, never in the event loop.
_pam_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pam")


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


class _Delay:
    """A failed login is answered only after a delay (as PAM's pam_faildelay does), slowing guessing.
    The delay is an asyncio sleep: it holds back that caller only."""

    failure_delay = 2.0

    async def failed(self, user: str, peer: str) -> None:
        await asyncio.sleep(self.failure_delay)


class LocalAuth(_Delay):
    """Only root, with the daemon's root password."""

    def __init__(self, password: str) -> None:
        self._password = password.encode()

    async def check(self, user: str, password: str, peer: str = "") -> bool:
        return user == "root" and hmac.compare_digest(password.encode(), self._password)


class PamAuth(_Delay):
    """Any account PAM accepts for the `xapi` service (python-pam)."""

    def __init__(self, service: str = "xapi") -> None:
        import pam  # python-pam; imported here so `local` mode doesn't need libpam

        self._pam = pam
        self.service = service

    def _check(self, user: str, password: str) -> bool:
        return bool(self._pam.pam().authenticate(user, password, service=self.service))

    async def check(self, user: str, password: str, peer: str = "") -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pam_pool, self._check, user, password)
