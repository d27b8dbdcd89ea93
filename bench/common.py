"""Shared helpers for the benchmarks: timing, CPU pinning, and the ratio line every benchmark prints."""
import gc
import os
import statistics
import time


def best_and_median(fn, runs: int = 5, inner: int = 1):
    """Runs fn `inner` times per sample, `runs` samples; returns (best, median) seconds per call."""
    samples = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return min(samples), statistics.median(samples)


def pin(cpu: int) -> None:
    """Pins this process to one CPU when the machine has it, so client and server don't share a core."""
    try:
        if cpu < os.cpu_count():
            os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def report(bench_id: str, what: str, ours: float, baseline: float, baseline_name: str,
           unit: str = "s", higher_is_better: bool = False, target: str = "") -> None:
    """Prints one comparable line: our figure, the baseline's figure from the same run, and the ratio."""
    ratio = (ours / baseline) if higher_is_better else (baseline / ours)
    fmt = (lambda v: f"{v * 1e3:.2f} ms") if unit == "s" else (lambda v: f"{v:,.0f} {unit}")
    tail = f"  (target {target})" if target else ""
    print(f"{bench_id:4} {what:44} ours {fmt(ours):>14}  {baseline_name} {fmt(baseline):>14}  ratio {ratio:6.2f}x{tail}",
          flush=True)
