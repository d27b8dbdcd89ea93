"""Sessions: the in-memory table every call checks, mirrored into the database's session rows."""
from __future__ import annotations

import time
from dataclasses import dataclass

from xapi.datamodel import ROLES
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import insert

# The role a local superuser (root) holds: everything.
SUPERUSER_ROLE = ROLES[0]


@dataclass(slots=True)
class Session:
    ref: str
    user: str
    superuser: bool
    role: str
    originator: str
    last_active: float


class Sessions:
    """Looks sessions up by ref in O(1); the database row is for get_record and events."""

    def __init__(self, db, host_ref: str) -> None:
        self.db = db
        self.host_ref = host_ref
        self.by_ref: dict[str, Session] = {}
        self.on_destroy: list = []          # callbacks(ref): e.g. wake that session's long polls

    def create(self, user: str, *, superuser: bool, role: str = SUPERUSER_ROLE, originator: str = "",
               pool: bool = False) -> Session:
        now = datetime_now()
        ref = insert(self.db, "session", this_host=self.host_ref, last_active=now, validation_time=now,
                     pool=pool, is_local_superuser=superuser, auth_user_name=user, originator=originator)
        s = Session(ref, user, superuser, role, originator, time.monotonic())
        self.by_ref[ref] = s
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
        self.db.table("session").remove(ref)
        for callback in self.on_destroy:
            callback(ref)
