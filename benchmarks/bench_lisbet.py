"""Benchmark of the LISBET model at the seed's size (run by `make bench`; not a test).

In one run: the machine's torch fp32 matmul rate; one training step of the seed-size model
(8 layers, 8 heads, hidden 256, embedding 64, window 200; a batch of 32 windows for each of the
four tasks, summed loss, one Adam step; compute only, windows prepared beforehand) with its FLOPs
(FlopCounterMode) and achieved fraction of the matmul rate; embedding a batch of 128 windows;
embedding every frame of a 2000-frame sequence (one window per frame, batched). Side by side in
the same run, alternating with ours: the training step of `lisbet` 0.4.3's own model at the same
size (the package is installed without its dependencies, whose torchvision does not import beside
this torch; its model needs none of them), and the same model as ours built on torch's own
``nn.TransformerEncoder`` (pre-norm GELU layers, same weights). Reference numbers for the package
taken on another 2-core CPU (from the issue, kept for the embedding rows): 3.2 s per training
step, 1.1 s per 128 windows, 44 s for 2000 frames.
Writes results/benchmarks/lisbet_model.md.
"""

from __future__ import annotations

import statistics
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import flop_rows, matmul_rate, median_time, profile_rows, step_record, write_report  # noqa: E402

REF = {"step": 3.2, "embed128": 1.1, "embed2000": 44.0}
LISBET_VERSION = version("lisbet")  # requirements-reference.txt: installed without its dependencies
ROUNDS = 3  # alternating rounds of (ours, torch's encoder); medians over all timed calls


def lisbet_model(mc: dict, window: int):
    """``lisbet`` 0.4.3's ``MultiTaskModel`` of the seed's size: its transformer backbone and one
    binary window-classification head per task, with the MLP heads its training uses by default."""
    from lisbet.modeling import MultiTaskModel, TransformerBackbone, WindowClassificationHead

    torch.manual_seed(0)
    backbone = TransformerBackbone(feature_dim=mc["in_dim"], embedding_dim=mc["emb_dim"], hidden_dim=mc["hidden_dim"],
                                   num_heads=mc["num_heads"], num_layers=mc["num_layers"], max_length=window)
    heads = {k: WindowClassificationHead(input_dim=mc["emb_dim"], num_classes=1, hidden_dim=mc["hidden_dim"])
             for k in mc["task_ids"]}
    return MultiTaskModel(backbone, heads)


def main() -> int:
    from neurotrain.config import validate_system
    from neurotrain.systems.lisbet.data import simulate_sequence
    from neurotrain.systems.lisbet.network import TASKS, LisbetModel, TorchReference
    from neurotrain.systems.lisbet import train as sl

    torch.set_num_threads(2)
    cfg = validate_system("lisbet", {})  # the schema defaults are the seed's sizes
    W, bs = cfg["model"]["window"], 32
    e = cfg["data"]["embedded"]
    rng = np.random.default_rng(0)
    seqs = [simulate_sequence(2000, e, rng)[0] for _ in range(3)]
    frames = sl.Frames(seqs)
    torch.manual_seed(0)
    mc = {**{k: cfg["model"][k] for k in sl.MODEL_KEYS}, "in_dim": 28, "task_ids": list(TASKS)}
    model = LisbetModel(mc)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = {k: sl.make_examples(k, frames, np.arange(3), bs, rng, cfg["training"], W) for k in TASKS}
    batches = {k: (torch.as_tensor(x), torch.as_tensor(y)) for k, (x, y) in batches.items()}

    ours = model.backbone.encoder
    theirs = TorchReference(ours)
    pkg = lisbet_model(mc, W)  # lisbet 0.4.3's own model at the same size, its default (MLP) task heads
    pkg_opt = torch.optim.Adam(pkg.parameters(), lr=1e-4)

    def pkg_step():
        pkg.train()
        pkg_opt.zero_grad(set_to_none=True)
        loss = sum(F.binary_cross_entropy_with_logits(pkg(x, k)[:, 0], y) for k, (x, y) in batches.items())
        loss.backward()
        pkg_opt.step()

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = sum(F.binary_cross_entropy_with_logits(model(x, k), y) for k, (x, y) in batches.items())
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    emb = sl.export_embedder(mc, model.state_dict())
    x128 = batches["nwp"][0][:1].repeat(128, 1, 1)

    def embed128():
        with torch.no_grad():
            emb(x128)

    seq = torch.as_tensor(seqs[0].reshape(2000, -1))
    times = {k: [] for k in ("step", "embed128", "embed2000", "torch_step", "torch_embed128", "lisbet_step")}
    for _ in range(ROUNDS):  # ours, lisbet's model and torch's encoder alternate, so load changes hit all
        times["step"].append(median_time(step, 3))
        times["lisbet_step"].append(median_time(pkg_step, 3))
        model.backbone.encoder = theirs
        times["torch_step"].append(median_time(step, 3))
        model.backbone.encoder = ours
        times["embed128"].append(median_time(embed128, 3))
        emb.backbone.encoder = theirs.eval()
        times["torch_embed128"].append(median_time(embed128, 3))
        emb.backbone.encoder = ours
        times["embed2000"].append(median_time(lambda: emb.embed_sequence(seq, 256), 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    step_s, e128, e2000 = med["step"], med["embed128"], med["embed2000"]
    peak = matmul_rate()
    text = "\n".join([
        "# LISBET model benchmark (seed size)", "",
        f"Model: {mc['num_layers']} layers, {mc['num_heads']} heads, hidden {mc['hidden_dim']}, embedding {mc['emb_dim']}, "
        f"window {W}; 2 torch threads. Training step = a batch of {bs} windows for each of the 4 tasks, summed loss, one Adam step.",
        "", "| quantity | this package | lisbet 0.4.3 (reference) | speed-up |", "| --- | --- | --- | --- |",
        f"| training step | {step_s:.2f} s | {REF['step']} s | {REF['step'] / step_s:.1f}x |",
        f"| embed 128 windows | {e128:.3f} s | {REF['embed128']} s | {REF['embed128'] / e128:.1f}x |",
        f"| embed 2000 frames (one window per frame) | {e2000:.2f} s | {REF['embed2000']} s | {REF['embed2000'] / e2000:.1f}x |",
        "", f"Same run, alternating ({ROUNDS} rounds): `lisbet` {LISBET_VERSION}'s own `MultiTaskModel` "
        "(`TransformerBackbone` and a `WindowClassificationHead` per task, its default MLP heads) at the same size, on "
        "the same batches, loss and optimizer.", "",
        "| quantity | this package | `lisbet` model | speed-up |", "| --- | --- | --- | --- |",
        f"| training step | {step_s:.2f} s | {med['lisbet_step']:.2f} s | {med['lisbet_step'] / step_s:.2f}x |",
        "", f"Same run, alternating ({ROUNDS} rounds): the same model and weights on torch's `nn.TransformerEncoder` "
        "(its training path, and its fused inference fast path under `no_grad`).", "",
        "| quantity | this package | `nn.TransformerEncoder` | speed-up |", "| --- | --- | --- | --- |",
        f"| training step | {step_s:.2f} s | {med['torch_step']:.2f} s | {med['torch_step'] / step_s:.2f}x |",
        f"| embed 128 windows | {e128:.3f} s | {med['torch_embed128']:.3f} s | {med['torch_embed128'] / e128:.2f}x |",
        "", "Per round (s): " + "; ".join(f"{k} " + ", ".join(f"{x:.3f}" for x in v) for k, v in times.items()), "", "| training step | value |", "| --- | --- |",
        *flop_rows(flops, step_s, peak, "training step"), "",
        "The first table's reference column was measured for the `lisbet` package on another 2-core CPU (from the",
        "issue); only the side-by-side rows are ratios measured in this run.", "",
        *profile_rows(step, "training step", reps=2)])
    write_report("lisbet_model.md", text, [step_record("lisbet", "training step (seed size, 4 tasks)", "torch", flops, step_s, peak)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
