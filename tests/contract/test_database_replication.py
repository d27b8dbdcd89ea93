"""Disaster recovery's database replication (xapi.actions.dr) with the XenAPI SDK against a real daemon:
a metadata VDI on a shared nfs SR holds the pool database, VDI.open_database answers a read-only
session on that copy, read_database_pool_uuid names its pool; xapi's checks and errors. Also
SR.assert_can_host_ha_statefile (xapi.actions.sr_ha)."""
import os
import shutil
import time
import xmlrpc.client

import pytest
import XenAPI

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import failure, new_vdi, wait_for

host = own_daemon()
session = root_session("host")
x = xenapi_of("session")

SIZE = 256 << 20                                 # xapi's Redo_log.minimum_vdi_size


@pytest.fixture(scope="module")
def nfs(x, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dr-nfs"))
    sr = x.SR.create(x.host.get_all()[0], {"path": folder}, "0", "dr", "", "nfs", "user", True, {})
    yield sr, os.path.join(folder, x.SR.get_uuid(sr))
    for v in x.SR.get_VDIs(sr):
        x.VDI.destroy(v)
    for pbd in x.SR.get_PBDs(sr):
        x.PBD.unplug(pbd)
    x.SR.destroy(sr)


def _metadata_vdis(x, sr):
    return [v for v in x.SR.get_VDIs(sr) if x.VDI.get_type(v) == "metadata"]


def _as(host, ref):
    """The SDK on an existing session ref."""
    s = XenAPI.Session(host.url)
    s._session = ref
    return s.xenapi


def test_checks(x, nfs):
    sr, _ = nfs
    x.SR.assert_supports_database_replication(sr)
    x.SR.assert_can_host_ha_statefile(sr)
    assert failure(x.SR.assert_supports_database_replication, "OpaqueRef:nope") == ["HANDLE_INVALID", "SR",
                                                                                   "OpaqueRef:nope"]
    udev = [s for s in x.SR.get_all() if x.SR.get_type(s) in ("udev", "iso")]
    for s in udev:                               # no SR_METADATA, no VDI_GENERATE_CONFIG
        if all(x.PBD.get_currently_attached(p) for p in x.SR.get_PBDs(s)) and x.SR.get_PBDs(s):
            assert failure(x.SR.assert_supports_database_replication, s) == ["SR_OPERATION_NOT_SUPPORTED", s]
            assert failure(x.SR.assert_can_host_ha_statefile, s) == ["SR_OPERATION_NOT_SUPPORTED", s]
    pbd = x.SR.get_PBDs(sr)[0]
    x.PBD.unplug(pbd)
    try:
        assert failure(x.SR.assert_supports_database_replication, sr) == ["SR_NO_PBDS", sr]
        assert failure(x.SR.enable_database_replication, sr) == ["SR_NO_PBDS", sr]
        assert failure(x.SR.assert_can_host_ha_statefile, sr) == ["SR_NO_PBDS", sr]
    finally:
        x.PBD.plug(pbd)


def test_enable_open_read_disable(host, x, nfs):
    sr, folder = nfs
    pool = x.pool.get_all()[0]
    x.pool.set_name_label(pool, "replicated")
    x.SR.enable_database_replication(sr)
    (vdi,) = _metadata_vdis(x, sr)
    rec = x.VDI.get_record(vdi)
    assert (rec["name_label"], rec["metadata_of_pool"], rec["virtual_size"]) == ("Metadata for DR", pool, str(SIZE))
    assert os.path.exists(os.path.join(folder, rec["uuid"] + ".metadata", "state.db"))
    assert x.VDI.read_database_pool_uuid(vdi) == x.pool.get_uuid(pool)
    x.SR.enable_database_replication(sr)         # again: the same VDI is reused
    assert _metadata_vdis(x, sr) == [vdi]

    x.pool.set_name_description(pool, "a later change")         # written within the period
    dr = x.VDI.open_database(vdi)
    assert wait_for(lambda: _as(host, x.VDI.open_database(vdi)).pool.get_name_description(pool) == "a later change",
                    timeout=10)
    y = _as(host, dr)
    x.pool.set_name_label(pool, "changed after the copy was opened")
    assert y.pool.get_name_label(pool) == "replicated"           # the VDI's database, not the live one
    assert y.pool.get_record(pool)["uuid"] == x.pool.get_uuid(pool)
    assert sorted(y.VM.get_all()) == sorted(x.VM.get_all())
    assert y.VDI.get_type(vdi) == "metadata"
    code, *_ = failure(y.pool.set_name_label, pool, "no")           # a read-only session
    assert code == "RBAC_PERMISSION_DENIED"
    assert x.session.get_auth_user_name(dr) == "disaster-recovery"
    assert xmlrpc.client.ServerProxy(host.url).session.logout(dr)["Status"] == "Success"
    assert xmlrpc.client.ServerProxy(host.url).pool.get_all(dr)["ErrorDescription"] == ["SESSION_INVALID", dr]

    user = new_vdi(x, sr, name="not metadata")
    assert failure(x.VDI.open_database, user) == ["VDI_INCOMPATIBLE_TYPE", user, "user"]
    assert x.VDI.read_database_pool_uuid(user) == ""
    x.VDI.destroy(user)

    # a metadata VDI of another pool (not replicated here): its database as found on the SR
    other = new_vdi(x, sr, name="another pool's metadata", type="metadata")
    other_db = os.path.join(folder, x.VDI.get_uuid(other) + ".metadata", "state.db")
    assert x.VDI.read_database_pool_uuid(other) == ""
    assert failure(x.VDI.open_database, other)[0] == "COULD_NOT_IMPORT_DATABASE"
    os.makedirs(os.path.dirname(other_db))
    shutil.copyfile(os.path.join(folder, rec["uuid"] + ".metadata", "state.db"), other_db)
    assert x.VDI.read_database_pool_uuid(other) == x.pool.get_uuid(pool)
    t0 = time.monotonic()
    opened = x.VDI.open_database(other)
    print(f"VDI.open_database: {time.monotonic() - t0:.3f} s")
    assert _as(host, opened).pool.get_uuid(pool) == x.pool.get_uuid(pool)
    xmlrpc.client.ServerProxy(host.url).session.logout(opened)
    with open(other_db, "r+b") as f:                             # a damaged copy
        f.truncate(100)
    assert failure(x.VDI.open_database, other)[0] == "COULD_NOT_IMPORT_DATABASE"
    assert x.VDI.read_database_pool_uuid(other) == ""
    x.VDI.destroy(other)

    x.SR.disable_database_replication(sr)
    assert _metadata_vdis(x, sr) == []
    assert not os.path.exists(os.path.join(folder, rec["uuid"] + ".metadata"))
    assert failure(x.VDI.read_database_pool_uuid, vdi)[:2] == ["HANDLE_INVALID", "VDI"]


def test_at_most_eight_replicated(x, tmp_path):
    """xapi's redo_log_max_instances: an enable with 8 metadata VDIs replicated is NO_MORE_REDO_LOGS_ALLOWED."""
    me = x.host.get_all()[0]
    srs = [x.SR.create(me, {"path": str(tmp_path)}, "0", f"dr{i}", "", "nfs", "user", True, {}) for i in range(9)]
    try:
        for sr in srs[:8]:
            x.SR.enable_database_replication(sr)
        assert failure(x.SR.enable_database_replication, srs[8]) == ["NO_MORE_REDO_LOGS_ALLOWED"]
        x.SR.disable_database_replication(srs[0])
        x.SR.enable_database_replication(srs[8])
        assert len(_metadata_vdis(x, srs[8])) == 1
    finally:
        for sr in srs:
            x.SR.disable_database_replication(sr)
            for pbd in x.SR.get_PBDs(sr):
                x.PBD.unplug(pbd)
            x.SR.destroy(sr)
