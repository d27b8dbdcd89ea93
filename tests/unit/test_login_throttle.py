"""A right password doesn't clear its address's failed logins until the login has its session: a
login refused after the password check (no subject, no role: RBAC) must not reset the throttle."""
import asyncio

from xapi.auth.passwords import LocalAuth, PasswordFile
from xapi.auth.sessions import Sessions
from xapi.db.schema import new_database

PEER = "192.0.2.7"


def test_refused_login_keeps_the_failures_and_a_session_clears_them(tmp_path):
    PasswordFile(str(tmp_path)).set("alice", "right")

    async def main():
        auth = LocalAuth(str(tmp_path), failure_delay=0.001)
        throttle = auth.throttle
        assert not await auth.check("alice", "wrong", PEER)
        assert not await auth.check("alice", "wrong again", PEER)
        assert throttle.failures(PEER) == 2
        # the right password, then the login refused (no subject / no role): the guesses still count
        assert await auth.check("alice", "right", PEER)
        assert throttle.failures(PEER) == 2
        await auth.failed("alice", PEER)
        assert throttle.failures(PEER) == 3
        # a session made by some other path of this task clears nothing now
        sessions = Sessions(new_database(), "OpaqueRef:host")
        sessions.create("root", superuser=True)
        assert throttle.failures(PEER) == 3
        # a login that gets its session clears them
        assert await auth.check("alice", "right", PEER)
        assert throttle.failures(PEER) == 3
        sessions.create("alice", superuser=False)
        assert throttle.failures(PEER) == 0
    asyncio.run(main())
