"""S2 vhd_coalesce: coalescing a differencing VHD into its parent.

A 256 MiB chain of two: the parent has every other 2 MiB block, the child half of the
blocks (three in four of them whole, the rest in scattered sector runs), so half its
blocks land on allocated parent blocks and half make the parent allocate.  We time
``xapi.sm.vhd.coalesce(child)`` (which ends with an fsync) on a fresh copy of the
parent each run, against ``qemu-img convert -t writeback -f vpc -O raw`` of the child
(qemu has no chains: it reads the child's blocks alone, which is the same data moved;
``-t writeback`` makes it flush at the end too, where convert's default ``unsafe`` does
not).  Both figures are the
child's allocated bytes over the time taken.  Shown against qemu with the same
durability (target: at least its rate, ratio >= 1) and, for scale, against convert's
default that never flushes; the pure-Python core is shown too.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import best_and_median, pin, report  # noqa: E402
from xapi.sm import vhd  # noqa: E402
from xapi.sm.vhd import vhd_ref  # noqa: E402

MiB = 1024 * 1024
VIRTUAL = 256 * MiB
BLOCKS = VIRTUAL // vhd.BLOCK_SIZE


def build(d: str) -> tuple[str, str, int]:
    parent, child = os.path.join(d, "parent.vhd"), os.path.join(d, "child.vhd")
    chunk = bytearray(os.urandom(vhd.BLOCK_SIZE))
    vhd.create(parent, VIRTUAL)
    with vhd.open(parent) as v:
        for b in range(0, BLOCKS, 2):
            chunk[:8] = b.to_bytes(8, "big")
            v.write(b * vhd.BLOCK_SIZE, chunk)
    vhd.snapshot(parent, child)
    with vhd.open(child) as v:
        for b in range(BLOCKS):
            if b % 4 in (0, 3):                          # half the blocks
                continue
            base = b * vhd.BLOCK_SIZE
            if b % 8 != 1:                               # whole blocks
                v.write(base, chunk)
            else:                                        # runs of sectors
                for s in range(0, 4096, 64):
                    v.write(base + s * 512, chunk[:17 * 512])
        allocated = v.allocated_bytes()
    shutil.copyfile(parent, parent + ".orig")
    return parent, child, allocated


def main() -> None:
    pin(0)
    qemu = shutil.which("qemu-img")
    if qemu is None:
        print("S2   skipped: qemu-img (Debian qemu-utils) not installed")
        return
    with tempfile.TemporaryDirectory(prefix="s2-vhd-", dir="/var/tmp") as d:
        parent, child, allocated = build(d)
        raw = os.path.join(d, "out.raw")

        def fresh_parent():
            shutil.copyfile(parent + ".orig", parent)

        def timed_coalesce(core, runs=3):
            saved = vhd._core
            vhd._core = core
            try:
                samples = []
                for _ in range(runs):
                    fresh_parent()
                    t0 = time.perf_counter()
                    vhd.coalesce(child)
                    samples.append(time.perf_counter() - t0)
            finally:
                vhd._core = saved
            assert vhd.check(parent) == [] and vhd.check(child) == []
            return min(samples)

        def convert(cache):
            if os.path.exists(raw):
                os.unlink(raw)
            subprocess.run([qemu, "convert", "-t", cache, "-f", "vpc", "-O", "raw", child, raw], check=True)

        ours = timed_coalesce(vhd._core)
        # the leaf's view is unchanged, and the parent now holds what the child had
        with vhd.open(child, readonly=True) as c, vhd.open(parent, readonly=True) as p:
            for b in (1, 2, 5, 9):
                off = b * vhd.BLOCK_SIZE
                assert c.read(off, vhd.BLOCK_SIZE) == p.read(off, vhd.BLOCK_SIZE)
        pure = timed_coalesce(vhd_ref, runs=1)
        qemu_best, _ = best_and_median(lambda: convert("writeback"), runs=3)
        qemu_unsafe, _ = best_and_median(lambda: convert("unsafe"), runs=3)
        mb = allocated / 1e6
        print(f"     {VIRTUAL // MiB} MiB virtual, child holds {allocated / MiB:.0f} MiB in "
              f"{vhd.query(child)['allocated_blocks']} blocks; "
              f"ours is {vhd.IMPLEMENTATION}")
        report("S2", "coalesce vs convert -t writeback (flushes)", mb / ours, mb / qemu_best,
               "qemu-img", unit="MB/s", higher_is_better=True, target=">=1x")
        report("S2", "coalesce vs convert -t unsafe (no flush)", mb / ours, mb / qemu_unsafe,
               "qemu-img", unit="MB/s", higher_is_better=True)
        report("S2", "pure-Python core vs convert -t writeback", mb / pure, mb / qemu_best,
               "qemu-img", unit="MB/s", higher_is_better=True)


if __name__ == "__main__":
    main()
