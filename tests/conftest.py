import pytest

from tests import daemon as _daemon


@pytest.fixture(scope="session")
def xapi_daemon():
    """One daemon shared by the contract tests that don't disturb it."""
    d = _daemon.start("--request-timeout", "2")
    yield d
    _daemon.cleanup(d)


@pytest.fixture
def fresh_daemon():
    """A daemon of the test's own, for tests that stop or stress it."""
    started = []

    def start(*args, **kw):
        d = _daemon.start(*args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        _daemon.cleanup(d)
