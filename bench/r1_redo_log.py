"""R1 redo_log: the cost of the redo-log for writes. Writes per second (pool.set_name_label through the
Python SDK, one client, back to back for R1_SECONDS, default 3; best of 3 rounds) on the coordinator of
a 2-host `xapi sim` pool with --redo-log (each write's changes appended and fdatasync'ed to the shared
folder before the answer, xapi.pool.redolog) against the same pool without it (the baseline)."""
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import report  # noqa: E402
from tests import pool as simpool  # noqa: E402

SECONDS = float(os.environ.get("R1_SECONDS", "3"))
ROUNDS = 3


def writes_per_second(p) -> float:
    s = p.coordinator.session()
    x = s.xenapi
    ref = x.pool.get_all()[0]
    best = 0.0
    for _ in range(ROUNDS):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < SECONDS:
            x.pool.set_name_label(ref, f"write {n}")
            n += 1
        best = max(best, n / (time.perf_counter() - t0))
    s.xenapi.session.logout()
    return best


def main() -> None:
    rates = {}
    for redo in (False, True):
        p = simpool.start(2, redo_log=redo)
        try:
            rates[redo] = writes_per_second(p)
        finally:
            simpool.cleanup(p)
    report("R1", "pool.set_name_label with the redo-log", rates[True], rates[False], "without",
           unit="calls/s", higher_is_better=True)


if __name__ == "__main__":
    main()
