"""Sessions: the in-memory table every call checks, mirrored into the database's session rows.

A session carries what the RBAC check needs (superuser flag, permission set) so a call costs one
dict lookup and one set lookup. Idle sessions are collected as xapi's database GC does
(`timeout_sessions`): a session idle for longer than the inactive-session timeout (24 h in xapi) is
destroyed, and within each group (pool-internal sessions, root sessions without an originator, root
sessions per originator, other users per user name) only the most recently active ones are kept
(400, 400, 500 and 500 in xapi), the oldest going first. A collected session answers SESSION_INVALID.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from xmlrpc.client import DateTime

from xapi.auth.passwords import login_succeeded
from xapi.datamodel import ROLES
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, insert

log = logging.getLogger("xapi.sessions")

# The role a local superuser (root) holds: everything.
SUPERUSER_ROLE = ROLES[0]
SUPERUSER_ROLES = frozenset((SUPERUSER_ROLE,))

INACTIVE_SESSION_TIMEOUT = 86400.0      # xapi_globs.inactive_session_timeout
MAX_SESSIONS = 400                      # xapi_globs.max_sessions (pool-internal; root without originator)
MAX_SESSIONS_PER_ORIGINATOR = 500       # xapi_globs.max_sessions_per_originator
MAX_SESSIONS_PER_USER_NAME = 500        # xapi_globs.max_sessions_per_user_name
TOUCH_INTERVAL = 30.0                   # how stale a row's last_active may get (xapi touches every 30 s)

# A coarse clock (time.monotonic, refreshed by the sweeper): calls stamp their session with it, which
# is cheaper than reading the time on every call.
CLOCK = [time.monotonic()]


@dataclass(slots=True)
class Session:
    ref: str
    user: str
    superuser: bool
    roles: frozenset            # role names
    originator: str
    last_active: float          # CLOCK time of the last call
    permissions: frozenset = frozenset()    # permission (and role) names; empty for the superuser
    subject: str = NULL_REF
    auth_user_sid: str = ""
    pool: bool = False
    written_active: float = 0.0             # last_active as last written to the row

    @property
    def role(self) -> str:
        """The most privileged role (for callers that want one name)."""
        return next((r for r in ROLES if r in self.roles), "")


class Sessions:
    """Looks sessions up by ref in O(1); the database row is for get_record and events."""

    def __init__(self, db, host_ref: str, timeout: float = INACTIVE_SESSION_TIMEOUT) -> None:
        self.db = db
        self.host_ref = host_ref
        self.timeout = timeout
        self.by_ref: dict[str, Session] = {}
        self.on_destroy: list = []          # callbacks(ref): e.g. wake that session's long polls
        self.max_sessions = MAX_SESSIONS
        self.max_per_originator = MAX_SESSIONS_PER_ORIGINATOR
        self.max_per_user_name = MAX_SESSIONS_PER_USER_NAME
        self._task: asyncio.Task | None = None

    def create(self, user: str, *, superuser: bool, roles: frozenset | None = None, originator: str = "",
               pool: bool = False, permissions: frozenset = frozenset(), subject: str = NULL_REF,
               auth_user_sid: str = "", role: str | None = None) -> Session:
        if roles is None:
            roles = frozenset((role,)) if role else SUPERUSER_ROLES if superuser else frozenset()
        now = datetime_now()
        # xapi writes no permissions for local superuser sessions: they are never checked
        perms = [] if superuser else sorted(permissions)
        ref = insert(self.db, "session", this_host=self.host_ref, this_user=NULL_REF, last_active=now,
                     validation_time=now, pool=pool, is_local_superuser=superuser, subject=subject,
                     auth_user_sid=auth_user_sid, auth_user_name=user, rbac_permissions=perms,
                     originator=originator)
        clock = CLOCK[0] = time.monotonic()
        s = Session(ref, user, superuser, frozenset(roles), originator, clock, frozenset(permissions),
                    subject, auth_user_sid, pool, clock)
        self.by_ref[ref] = s
        login_succeeded()               # a password login is through: its address's failures go
        return s

    def get(self, ref) -> Session:
        s = self.by_ref.get(ref) if type(ref) is str else None
        if s is None:
            raise XapiError("SESSION_INVALID", ref)
        return s

    def destroy(self, ref: str) -> None:
        s = self.by_ref.pop(ref, None)
        if s is None:
            raise XapiError("SESSION_INVALID", ref)
        table = self.db.table("session")
        if ref in table:
            table.remove(ref)
        for callback in self.on_destroy:
            try:
                callback(ref)
            except Exception:
                log.exception("session %s: destroy callback failed", ref)

    # -- collection ------------------------------------------------------------------------------
    def _group(self, s: Session) -> tuple[str, str, int]:
        if s.pool:
            return ("internal", "", self.max_sessions)
        if s.user in ("", "root"):
            if not s.originator:
                return ("external", "", self.max_sessions)
            return ("originator", s.originator, self.max_per_originator)
        return ("username", s.user, self.max_per_user_name)

    def sweep(self, now: float | None = None) -> list[str]:
        """Destroys idle sessions and the oldest of over-full groups; refreshes stale last_active
        fields. Returns the refs destroyed."""
        now = time.monotonic() if now is None else now
        CLOCK[0] = max(CLOCK[0], now)
        doomed: list[str] = []
        groups: dict[tuple[str, str], list[Session]] = {}
        limits: dict[tuple[str, str], int] = {}
        threshold = now - self.timeout
        for s in self.by_ref.values():
            if s.last_active < threshold:
                doomed.append(s.ref)
                continue
            kind, key, limit = self._group(s)
            groups.setdefault((kind, key), []).append(s)
            limits[(kind, key)] = limit
        for group, members in groups.items():
            if len(members) > limits[group]:
                members.sort(key=lambda s: s.last_active, reverse=True)
                evicted = members[limits[group]:]
                log.info("sessions in group %s:%s exceed %d: destroying the %d oldest", group[0], group[1],
                         limits[group], len(evicted))
                doomed.extend(s.ref for s in evicted)
        for ref in doomed:
            if ref in self.by_ref:
                self.destroy(ref)
        self._touch(now)
        return doomed

    def _touch(self, now: float) -> None:
        """Writes last_active into rows that have gone stale by TOUCH_INTERVAL."""
        table = self.db.table("session")
        wall = time.time()
        for s in self.by_ref.values():
            if s.last_active - s.written_active >= TOUCH_INTERVAL and s.ref in table:
                t = time.gmtime(wall - (now - s.last_active))
                table.set_field(s.ref, "last_active", DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", t)))
                s.written_active = s.last_active

    def interval(self) -> float:
        """How often the sweeper runs: once a second, or four times per timeout when that is shorter."""
        return max(0.25, min(1.0, self.timeout / 4))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            CLOCK[0] = time.monotonic()
            try:
                self.sweep(CLOCK[0])
            except Exception:
                log.exception("session sweep failed")

    def start_sweeper(self, timeout: float | None = None) -> asyncio.Task:
        """Starts the periodic collection (in the running loop); `timeout` overrides the idle timeout."""
        if timeout is not None:
            self.timeout = timeout
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task
