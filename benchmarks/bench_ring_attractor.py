"""Benchmark of the ring-attractor training step (run by `make bench`; not a test).

Measures, in one run: the machine's torch fp32 matmul rate, the median wall time of one
optimizer step (forward over the trajectory, backward, Adam, constraints) on a batch of the
default embedded data (config/config.yaml, seed batch size), that step's FLOPs
(torch.utils.flop_counter.FlopCounterMode), and so the achieved fraction of the matmul rate.
Also the rate of the recurrent product alone at the step's shape, which bounds what the step
can reach. Writes results/benchmarks/ring_attractor_train_step.md and prints it.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, flop_rows, matmul_rate, median_time, profile_rows, step_record, write_report  # noqa: E402


def main() -> int:
    from neurotrain.config import load_config
    from neurotrain.systems.ring_attractor.train import RingTask, _default_data, flush_denormals

    torch.set_num_threads(2)
    flush_denormals()  # as the train stage does
    cfg = load_config(ROOT / "config" / "config.yaml")["ring_attractor"]
    data = _default_data(cfg)
    torch.manual_seed(0)
    task = RingTask(data, cfg, torch.device("cpu"))
    model = task.model
    opt = torch.optim.Adam(model.parameters(), lr=cfg["training"]["learning_rate"],
                           weight_decay=cfg["training"]["weight_decay"])
    bs = cfg["training"]["batch_size"]
    idx = task.train_idx[:bs]

    def step():
        L = task.losses(idx)
        opt.zero_grad(set_to_none=True)
        L["total"].backward()
        opt.step()
        task.after_step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    # The machine's speed drifts (shared host): alternate matmul-rate and step measurements and
    # take the median of the per-round ratios.
    rounds = []
    for _ in range(7):
        p = matmul_rate(reps=10)
        st = median_time(step, 3)
        rounds.append((flops / st / p, st, p))
    ratio = statistics.median(r[0] for r in rounds)
    step_s = statistics.median(r[1] for r in rounds)
    peak = statistics.median(r[2] for r in rounds)
    N = model.n_exc + model.n_inh
    Mt = model.recurrent_matrix().detach().t().contiguous()  # the recurrence's layout: [N + E, N] x [N, B]
    r = torch.rand(N, bs)
    h = torch.empty(Mt.shape[0], bs)
    T = data["omega"].shape[1]
    mm_s = median_time(lambda: [torch.mm(Mt, r, out=h) for _ in range(T)], 7) / T
    mm_rate = 2 * bs * N * Mt.shape[0] / mm_s
    text = "\n".join([
        "# Ring-attractor training step benchmark", "",
        f"Network: {model.n_exc} E + {model.n_inh} I units; one step = batch {bs} x {T} time steps forward and backward, Adam, constraints.",
        "", "| quantity | value |", "| --- | --- |",
        f"| torch threads | {torch.get_num_threads()} |",
        *flop_rows(flops, step_s, peak, "training step"),
        f"| fraction of matmul rate, median of {len(rounds)} alternating rounds | {ratio:.3f} (rounds: {', '.join(f'{r[0]:.2f}' for r in rounds)}) |",
        f"| one recurrent product alone ([{Mt.shape[0]}, {N}] x [{N}, {bs}]) | {mm_rate / 1e9:.1f} GFLOP/s = {mm_rate / peak:.3f} of the matmul rate |",
        "", "The step's FLOPs are the recurrent products: one thin product per time step forward and one",
        "backward, and the weight gradient as one large product (the recurrence's hand-written",
        "backward pass). The rest of the gap to the square-matmul rate is the elementwise work",
        "between products. Denormals are flushed to zero, as in the train stage.", "",
        *profile_rows(step, "training step")])
    write_report("ring_attractor_train_step.md", text, [step_record("ring_attractor", "training step (batch 32 x 100)", "torch", flops, step_s, peak)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
