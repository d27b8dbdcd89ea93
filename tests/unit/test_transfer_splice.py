"""The kernel-side import of xapi.sm.transfer (socket -> pipe -> file by os.splice) on real sockets and
files: whole blocks into a raw disk and into a VHD (new blocks committed, all-zero new ones left out,
already mapped ones overwritten), a short end through memory, a client that stops early or stalls."""
import os
import socket
import threading

import pytest

from xapi.sm import transfer, vhd

BLOCK = transfer.BLOCK


def _blocks(*fills):
    return b"".join(bytes([f]) * BLOCK if f is not None else bytes(BLOCK) for f in fills)


def _feed(data: bytes):
    """A connected pair: the returned end is non-blocking (as the daemon's), the other is fed `data`
    from a thread and then closed."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)

    def send():
        try:
            theirs.sendall(data)
        finally:
            theirs.close()
    t = threading.Thread(target=send, daemon=True)
    t.start()
    return ours, t


def _splice_all(disk, data: bytes, skip_zero: bool, idle: float = 10.0):
    sock, t = _feed(data)
    sp = transfer._Splicer(sock.fileno(), [False], idle)
    try:
        off = 0
        while off < len(data):
            n = min(transfer.BATCH, len(data) - off)
            transfer._splice_batch(disk, sp, off, n, skip_zero)
            off += n
    finally:
        sp.close()
        sock.close()
        t.join(5)


def test_into_a_raw_disk(tmp_path):
    path = str(tmp_path / "disk.raw")
    with open(path, "wb") as f:
        f.truncate(6 * BLOCK)
    data = _blocks(1, None, 3, 4) + b"\x05" * 1000          # a short end: through memory
    disk = transfer._Disk({"params": path, "format": "raw"}, True)
    try:
        _splice_all(disk, data, skip_zero=False)
        disk.flush()
    finally:
        disk.close()
    with open(path, "rb") as f:
        got = f.read()
    assert got[:len(data)] == data and got[len(data):] == bytes(6 * BLOCK - len(data))


def test_into_a_vhd(tmp_path):
    path = str(tmp_path / "disk.vhd")
    vhd.create(path, 8 * BLOCK)
    with vhd.open(path) as v:                               # block 4 already mapped, with other data
        v.write(4 * BLOCK, b"\x44" * BLOCK)
    data = _blocks(1, None, 3, None, None, 6, None, 8)      # block 4 gets zeros: they overwrite it
    disk = transfer._Disk({"params": path, "format": "vhd"}, True)
    try:
        _splice_all(disk, data, skip_zero=True)
        disk.flush()
    finally:
        disk.close()
    assert vhd.check(path) == []
    with vhd.open(path, readonly=True) as v:
        assert v.blocks() == [0, 2, 4, 5, 7]                # the new zero blocks 1, 3, 6 stay unmapped
        assert v.read(0, 8 * BLOCK) == data
    # nothing was left past the footer by the dropped zero blocks
    with vhd.open(path, readonly=True) as v:
        assert os.path.getsize(path) == v._end + 512


def test_a_client_that_stops_early_or_stalls(tmp_path):
    path = str(tmp_path / "disk.vhd")
    vhd.create(path, 4 * BLOCK)
    disk = transfer._Disk({"params": path, "format": "vhd"}, True)
    try:
        sock, t = _feed(_blocks(1))                          # one block, then the connection ends
        sp = transfer._Splicer(sock.fileno(), [False], 10.0)
        with pytest.raises(ConnectionResetError):
            transfer._splice_batch(disk, sp, 0, 2 * BLOCK, True)
        sp.close()
        sock.close()
        t.join(5)
        quiet, other = socket.socketpair()                   # connected, but nothing comes
        quiet.setblocking(False)
        sp = transfer._Splicer(quiet.fileno(), [False], 0.3)
        with pytest.raises(TimeoutError):
            transfer._splice_batch(disk, sp, 0, BLOCK, True)
        stop = [True]                                        # a stopped transfer ends at once
        sp2 = transfer._Splicer(quiet.fileno(), stop, 30.0)
        with pytest.raises(ConnectionResetError):
            transfer._splice_batch(disk, sp2, 0, BLOCK, True)
        for s in (sp, sp2):
            s.close()
        quiet.close()
        other.close()
        disk.flush()
    finally:
        disk.close()
    assert vhd.check(path) == []
