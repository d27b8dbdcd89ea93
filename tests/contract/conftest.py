"""Fixtures the contract modules share; each module's daemon and session come from tests/fixtures.py."""
import pytest


@pytest.fixture(scope="module")
def sr(x):
    """The pool's default SR on the module's daemon."""
    return x.pool.get_default_SR(x.pool.get_all()[0])
