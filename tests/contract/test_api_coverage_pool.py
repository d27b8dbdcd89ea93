"""pool.set_ha_host_failures_to_tolerate and pool.sync_database (xapi.actions.pool_settings) with the
XenAPI SDK against a real daemon."""
import os

from tests.helpers import failure, login


def test_ha_host_failures_to_tolerate(fresh_daemon):
    d = fresh_daemon()
    x = login(d).xenapi
    pool = x.pool.get_all()[0]
    x.pool.set_ha_host_failures_to_tolerate(pool, "2")
    assert x.pool.get_ha_host_failures_to_tolerate(pool) == "2"
    assert failure(x.pool.set_ha_host_failures_to_tolerate, pool, "-1") == \
        ["INVALID_VALUE", "ha_host_failures_to_tolerate", "-1"]
    assert failure(x.pool.set_ha_host_failures_to_tolerate, "OpaqueRef:nope", "1") == \
        ["HANDLE_INVALID", "pool", "OpaqueRef:nope"]


def test_sync_database_writes_state_db_now(fresh_daemon):
    # a flush interval far beyond the test: only sync_database can have written the change
    d = fresh_daemon("--db-flush-interval", "3600")
    x = login(d).xenapi
    pool = x.pool.get_all()[0]
    x.pool.set_name_label(pool, "synced-pool-name")
    path = os.path.join(d.data_dir, "state.db")
    before = open(path, "rb").read() if os.path.exists(path) else b""
    assert b"synced-pool-name" not in before
    x.pool.sync_database()
    assert b"synced-pool-name" in open(path, "rb").read()
