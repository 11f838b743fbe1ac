"""Benchmark: the CPC+SNN jitted training steps (config/config.yaml, the default run; one micro-batch of 32 segments).

For each phase's step: the compile time, the FLOPs of the compiled step from XLA's own cost
analysis, the median wall time, and the achieved rate as a fraction of JAX's float32 matmul
rate measured in the same run. Writes results/benchmarks/cpc_snn.md. Not a test: CPU timings
are noisy, run it on a quiet machine.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from _common import ROOT, step_record, write_report

sys.path.insert(0, str(ROOT / "src"))

from neurotrain.config import load_config  # noqa: E402
from neurotrain.systems.cpc_snn.network import Detector  # noqa: E402
from neurotrain.systems.cpc_snn.train import phases_from_config  # noqa: E402
from neurotrain.training.jax_loop import make_optimizer, make_step  # noqa: E402


def jax_matmul_rate(n: int = 1024, reps: int = 20) -> float:
    f = jax.jit(lambda a, b: a @ b)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def main() -> None:
    cfg = load_config(ROOT / "config" / "config.yaml")["cpc_snn"]  # the default run's model
    det = Detector.from_config(cfg["model"])

    class Task:
        def loss(self, p, x, y, w):
            return det.losses(p, x, y, w["cpc"], w["classification"])

    params = det.init(jax.random.PRNGKey(0))
    B, N = cfg["training"]["micro_batch"], int(cfg["data"]["sample_rate"] * cfg["data"]["segment_duration"])
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((1, B, N)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, 2, (1, B)).astype(np.int32))
    peak = jax_matmul_rate()
    rows, records = [], []
    for phase in phases_from_config(cfg):
        train = {k: params[k] for k in phase.trainable}
        frozen = {k: v for k, v in params.items() if k not in phase.trainable}
        opt, _ = make_optimizer(phase, 1000, 1.0)
        state = opt.init(train)
        step = make_step(Task(), phase, opt)
        t = time.perf_counter()
        compiled = step.lower(train, frozen, state, xs, ys, None).compile()
        compile_s = time.perf_counter() - t
        flops = flops_of(compiled)
        out = compiled(train, frozen, state, xs, ys, None)
        jax.block_until_ready(out)
        times = []
        for _ in range(7):
            t = time.perf_counter()
            jax.block_until_ready(compiled(train, frozen, state, xs, ys, None))
            times.append(time.perf_counter() - t)
        sec = statistics.median(times)
        records.append(step_record("cpc_snn", f"{phase.name}: {phase.title}", "jax", flops, sec, peak))
        rows.append(f"| {phase.name}: {phase.title} | {compile_s:.1f} s | {flops / 1e9:.2f} | {sec * 1000:.0f} ms | "
                    f"{flops / sec / 1e9:.1f} | {flops / sec / peak:.3f} |")
    text = "\n".join([
        "# CPC+SNN training-step benchmark", "",
        f"Machine: {platform.processor() or platform.machine()}, JAX {jax.__version__} on {jax.devices()[0]}; "
        f"micro-batch {B} x {N} samples, default model (latent 128, SNN [512, 256, 128]). Median of 7 steps.", "",
        f"JAX float32 matmul rate (1024^3, same run): {peak / 1e9:.1f} GFLOP/s", "",
        "| step | compile | GFLOP per step (XLA cost analysis) | wall time | GFLOP/s | fraction of matmul rate |",
        "| --- | --- | --- | --- | --- | --- |", *rows, ""])
    write_report("cpc_snn.md", text, records)


if __name__ == "__main__":
    main()
