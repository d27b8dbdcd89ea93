"""Fixtures the system modules share; each module's pool or daemon comes from tests/fixtures.py."""
import pytest


@pytest.fixture
def x(sim):
    """A root session of the test's own on the module's pool coordinator (a test may change the
    coordinator or restart hosts: the logout afterwards is cleanup only)."""
    s = sim.coordinator.session()
    yield s.xenapi
    try:
        s.xenapi.session.logout()
    except Exception:
        pass
