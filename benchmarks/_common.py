"""Shared pieces of the benchmark scripts: the matmul reference rate, the FLOP-rate rows, the
profiler's table of where a step's time goes, and writing a result table to results/benchmarks/."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def matmul_rate(n: int = 1024, reps: int = 20) -> float:
    """The machine's torch fp32 matmul rate (FLOP/s), median of ``reps`` n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def median_time(fn, reps: int) -> float:
    """Median wall time (s) of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flop_rows(flops: float, seconds: float, peak: float, what: str) -> list[str]:
    """Markdown rows: FLOPs and wall time of ``what``, achieved rate, fraction of ``peak``."""
    rate = flops / seconds
    return [f"| FLOPs per {what} (FlopCounterMode) | {flops / 1e9:.3f} GFLOP |",
            f"| wall time per {what} (median) | {seconds * 1000:.1f} ms |",
            f"| achieved rate | {rate / 1e9:.2f} GFLOP/s |",
            f"| torch fp32 matmul rate (1024^3, same run) | {peak / 1e9:.1f} GFLOP/s |",
            f"| fraction of matmul rate | {rate / peak:.4f} |"]


def profile_rows(fn, what: str, reps: int = 3, top: int = 12) -> list[str]:
    """Where the time of ``fn`` goes: a markdown table of the ``top`` torch operations by self CPU
    time (``torch.profiler``, ``reps`` calls after the caller's warm-up), per call of ``fn``, with
    their share of all operations' time. The profiler's own overhead inflates short operations."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = [f"Where the time of one {what} goes (torch.profiler, {reps} calls; self CPU time per call):", "",
            "| operation | calls | self CPU time | share |", "| --- | --- | --- | --- |"]
    for e in events[:top]:
        rows.append(f"| `{e.key}` | {e.count / reps:g} | {e.self_cpu_time_total / reps / 1000:.2f} ms | "
                    f"{e.self_cpu_time_total / total:.1%} |")
    return rows + [""]


def write_report(name: str, text: str, steps: list[dict] | None = None) -> None:
    """Write ``results/benchmarks/<name>`` and print it; ``steps`` (one dict per timed training
    step: system, step, framework, gflop, seconds, matmul_gflops, fraction) also go to
    ``<name>.json`` for the suite's summary (benchmarks/bench_workflow.py)."""
    import json

    out = ROOT / "results" / "benchmarks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if steps is not None:
        out.with_suffix(".json").write_text(json.dumps({"steps": steps}, indent=1))
    print(text)


def step_record(system: str, step: str, framework: str, flops: float, seconds: float, peak: float) -> dict:
    return {"system": system, "step": step, "framework": framework, "gflop": flops / 1e9, "seconds": seconds,
            "matmul_gflops": peak / 1e9, "fraction": flops / seconds / peak}
