"""Fixtures the contract modules share; each module's daemon and session come from tests/fixtures.py."""
import pytest

from tests.contract import pam_accounts


@pytest.fixture(scope="module")
def sr(x):
    """The pool's default SR on the module's daemon."""
    return x.pool.get_default_SR(x.pool.get_all()[0])


@pytest.fixture(scope="module")
def accounts():
    """Throwaway PAM users and a group (tests/contract/pam_accounts.py), removed afterwards."""
    with pam_accounts.throwaway_accounts() as made:
        yield made


@pytest.fixture(scope="module")
def pam(accounts):
    """A daemon with external auth "PAM" and those accounts as subjects of their roles."""
    with pam_accounts.pam_daemon(accounts) as env:
        yield env
