"""Benchmark of the E-I RNN training step (run by `make bench`; not a test).

Measures, in one run: the machine's torch fp32 matmul rate, the median wall time of one
training epoch on the default embedded dataset (config/config.yaml) at 2 threads and at 1 (the
training default), the FLOPs of that epoch
(torch.utils.flop_counter.FlopCounterMode) and so the achieved fraction of the matmul rate.
Writes results/benchmarks/ei_rnn_train_step.md and prints it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, flop_rows, matmul_rate, profile_rows, step_record, write_report  # noqa: E402

ROUNDS = 6  # alternating rounds of 5 epochs at 2 threads and 5 at 1


def main() -> int:
    from neurotrain.config import load_config
    from neurotrain.systems.ei_rnn.data import generate_embedded, load_processed, preprocess_raw
    from neurotrain.systems.ei_rnn.train import EIRNNTask

    torch.set_num_threads(2)
    cfg = load_config(ROOT / "config" / "config.yaml")["ei_rnn"]
    with tempfile.TemporaryDirectory() as d:
        generate_embedded(cfg, Path(d) / "raw")
        preprocess_raw(cfg, Path(d) / "raw", Path(d) / "p.h5")
        data = load_processed(Path(d) / "p.h5")
    torch.manual_seed(0)
    task = EIRNNTask(data, cfg, torch.device("cpu"))
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    with FlopCounterMode(display=False) as fc:
        task.train_epoch(rng, opt.step)
    flops = fc.get_total_flops()

    def epoch_times(threads: int) -> list[float]:
        torch.set_num_threads(threads)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            task.train_epoch(rng, opt.step)
            times.append(time.perf_counter() - t)
        return times

    # The host's load drifts within seconds: alternate rounds of 2 threads and 1 thread (the
    # training default) and take the medians over all rounds.
    two, one = [], []
    for _ in range(ROUNDS):
        two += epoch_times(2)
        one += epoch_times(1)
    epoch_s, epoch_1 = statistics.median(two), statistics.median(one)
    torch.set_num_threads(2)
    peak = matmul_rate()
    torch.set_num_threads(1)
    profile = profile_rows(lambda: task.train_epoch(rng, opt.step), "epoch at 1 thread")
    torch.set_num_threads(2)
    n_trials, n_time, n_neurons = data["spikes"].shape
    text = "\n".join([
        "# E-I RNN training step benchmark", "",
        f"Dataset: {n_trials} trials x {n_time} bins x {n_neurons} neurons ({len(data['train_idx'])} training trials, one full-batch step per epoch).",
        "", "| quantity | value |", "| --- | --- |",
        f"| torch threads | {torch.get_num_threads()} |",
        *flop_rows(flops, epoch_s, peak, "epoch"),
        f"| wall time per epoch at 1 thread (`training.threads`' default; median) | {epoch_1 * 1000:.1f} ms |",
        f"| epochs timed | {len(two)} at each thread count, in {ROUNDS} alternating rounds |", "",
        "The step is a 60-step recurrence of small [batch x N] x [N x N] products: it is bound by",
        "per-operation overhead, not arithmetic, so the fraction of the matmul rate is small.", "", *profile])
    write_report("ei_rnn_train_step.md", text, [step_record("ei_rnn", "epoch (full batch)", "torch", flops, epoch_s, peak)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
