"""Changed block tracking (xapi.actions.vdi_cbt) with the XenAPI SDK against a real daemon: data written
through /import_raw_vdi between snapshots shows up in list_changed_blocks' bitmap, block for block;
xapi's checks for enable_cbt, data_destroy, list_changed_blocks and get_nbd_info."""
import base64
import time

import pytest

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import MIB, failure, new_vdi, new_vm, raw_vdi, vbd_record, wait_for

CHUNK = 64 * 1024

host = own_daemon("--request-timeout", "20", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
session = root_session("host")
x = xenapi_of("session")


def _chunks(bitmap_b64: str, size: int) -> set[int]:
    bits = base64.b64decode(bitmap_b64)
    n = size // CHUNK
    assert len(bits) == -(-n // 8)
    return {i for i in range(n) if bits[i // 8] & (0x80 >> (i % 8))}


@pytest.fixture
def disk(x, sr):
    vdi = new_vdi(x, sr, size=8 * MIB, name="cbt")
    yield vdi
    for s in x.VDI.get_snapshots(vdi):
        x.VDI.destroy(s)
    x.VDI.destroy(vdi)


def test_changed_blocks_between_snapshots(x, host, session, disk):
    raw_vdi(host, session, "import_raw_vdi", disk, b"\x11" * (2 * MIB))           # block 0: before any snapshot
    x.VDI.enable_cbt(disk)
    assert x.VDI.get_cbt_enabled(disk) is True
    s1 = x.VDI.snapshot(disk, {})
    assert x.VDI.get_cbt_enabled(s1) is True                           # the snapshot keeps tracking
    # block 1 (chunks 32..63) written after the first snapshot
    raw_vdi(host, session, "import_raw_vdi", disk, bytes(2 * MIB) + b"\x22" * (2 * MIB))
    assert _chunks(x.VDI.list_changed_blocks(s1, disk), 8 * MIB) == set(range(32, 64))
    s2 = x.VDI.snapshot(disk, {})
    assert _chunks(x.VDI.list_changed_blocks(s1, s2), 8 * MIB) == set(range(32, 64))
    assert _chunks(x.VDI.list_changed_blocks(s2, disk), 8 * MIB) == set()
    # the data is what was written: the export of the second snapshot
    data = raw_vdi(host, session, "export_raw_vdi", s2)
    assert data[:2 * MIB] == b"\x11" * (2 * MIB) and data[2 * MIB:4 * MIB] == b"\x22" * (2 * MIB)
    # data_destroy keeps the snapshot's place in the chain: blocks can still be listed against it
    assert failure(x.VDI.data_destroy, disk) == ["OPERATION_NOT_ALLOWED", f"VDI is not a snapshot: {disk}"]
    x.VDI.data_destroy(s1)
    assert x.VDI.get_type(s1) == "cbt_metadata"
    assert _chunks(x.VDI.list_changed_blocks(s1, disk), 8 * MIB) == set(range(32, 64))
    assert failure(x.VDI.get_nbd_info, s1) == ["VDI_INCOMPATIBLE_TYPE", s1, "cbt_metadata"]
    x.VDI.disable_cbt(disk)
    assert failure(x.VDI.list_changed_blocks, s2, disk) == ["VDI_NO_CBT_METADATA", disk]


def test_cbt_checks(x, sr, disk):
    assert failure(x.VDI.data_destroy, "OpaqueRef:nope") == ["HANDLE_INVALID", "VDI", "OpaqueRef:nope"]
    snap = x.VDI.snapshot(disk, {})
    assert failure(x.VDI.enable_cbt, snap) == ["OPERATION_NOT_ALLOWED", f"VDI is a snapshot: {snap}"]
    assert failure(x.VDI.data_destroy, snap) == ["VDI_NO_CBT_METADATA", snap]
    x.VDI.set_on_boot(disk, "reset")
    assert failure(x.VDI.enable_cbt, disk) == ["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"]
    x.VDI.set_on_boot(disk, "persist")
    # a disk attached to a running VM cannot be compared
    x.VDI.enable_cbt(disk)
    vm = new_vm(x, "cbt-vm")
    x.VBD.create(vbd_record(vm, disk))
    x.VM.start(vm, False, False)
    try:
        assert failure(x.VDI.list_changed_blocks, disk, disk) == ["VDI_IN_USE", disk, "list_changed_blocks"]
    finally:
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    # no network has an NBD purpose: no NBD servers to offer
    assert x.VDI.get_nbd_info(disk) == []


def test_changes_survive_the_gc_coalescing_the_chain(x, host, session, disk):
    raw_vdi(host, session, "import_raw_vdi", disk, b"\x11" * (2 * MIB))
    x.VDI.enable_cbt(disk)
    s1 = x.VDI.snapshot(disk, {})
    time.sleep(1.1)                          # later than the snapshot's whole second
    raw_vdi(host, session, "import_raw_vdi", disk, bytes(2 * MIB) + b"\x22" * (2 * MIB))
    s2 = x.VDI.snapshot(disk, {})
    parent = x.VDI.get_sm_config(disk).get("vhd-parent")
    x.VDI.destroy(s2)                        # its base now has one child: the GC coalesces it
    assert wait_for(lambda: x.VDI.get_sm_config(disk).get("vhd-parent") != parent, 20)
    raw_vdi(host, session, "import_raw_vdi", disk, bytes(4 * MIB) + b"\x33" * (2 * MIB))
    got = _chunks(x.VDI.list_changed_blocks(s1, disk), 8 * MIB)
    assert set(range(32, 96)) <= got and not got & set(range(96, 128))
    assert raw_vdi(host, session, "export_raw_vdi", s1)[:4 * MIB] == b"\x11" * (2 * MIB) + bytes(2 * MIB)
