"""Benchmark: CEBRA training through this pipeline vs through ``cebra.CEBRA`` (run by
`make bench`; not a test).

Same data (the default embedded sessions of config/config.yaml), same model, batch, loader and
number of steps; both on 2 CPU threads, timed in one run, alternating, median of repeats.
Prints steps per second of both and their ratio; writes results/benchmarks/cebra_train.md.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ei_rnn import matmul_rate  # noqa: E402
STEPS, REPEATS = 30, 3


def main() -> int:
    import cebra
    import cebra.data

    from neurotrain.config import load_config
    from neurotrain.data.cebra import generate_embedded, load_processed, preprocess_raw
    from neurotrain.systems.cebra import run_training

    torch.set_num_threads(2)
    cfg = load_config(ROOT / "config" / "config.yaml")["cebra"]
    cfg["training"].update(max_steps=STEPS, checkpoint_every=10**9)
    t = cfg["training"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        generate_embedded(cfg, d / "raw")
        preprocess_raw(cfg, [d / "raw"], d / "p.h5")
        data = load_processed(d / "p.h5")
        X = [s["spikes"][s["train_idx"]] for s in data["sessions"]]
        y = [s["behavior"][s["train_idx"]] for s in data["sessions"]]
        pipe, skl = [], []
        for r in range(REPEATS):
            t0 = time.perf_counter()
            run_training(cfg, str(d / "p.h5"), str(d / f"run{r}"), threads=2)
            pipe.append(STEPS / (time.perf_counter() - t0))
            model = cebra.CEBRA(model_architecture=cfg["model"]["architecture"], batch_size=t["batch_size"],
                                num_hidden_units=cfg["model"]["num_units"], output_dimension=cfg["model"]["output_dim"],
                                max_iterations=STEPS, conditional=t["conditional"], time_offsets=t["time_offset"],
                                temperature=t["temperature"], learning_rate=t["learning_rate"], device="cpu", verbose=False)
            t0 = time.perf_counter()
            model.fit(X, y)
            skl.append(STEPS / (time.perf_counter() - t0))
        # achieved FLOP rate of one solver step vs the machine's matmul rate, same run
        from torch.utils.flop_counter import FlopCounterMode

        from neurotrain.systems.cebra import build_models, make_datasets, make_solver

        mc = {"architecture": cfg["model"]["architecture"], "num_units": cfg["model"]["num_units"],
              "output_dim": cfg["model"]["output_dim"], "sharing": "per_session",
              "n_features": [x.shape[1] for x in X], "session_names": data["names"]}
        models = build_models(mc)
        coll = make_datasets(data["sessions"])
        coll.configure_for(models)
        solver = make_solver(models, cfg, tqdm_on=False)
        loader = cebra.data.ContinuousMultiSessionDataLoader(coll, num_steps=8, batch_size=t["batch_size"],
                                                             conditional=t["conditional"], time_offset=t["time_offset"])
        solver._set_fitted_params(loader)
        batches = iter(loader)
        solver.step(next(batches))
        with FlopCounterMode(display=False) as fc:
            solver.step(next(batches))
        flops = fc.get_total_flops()
        step_times = []
        for batch in batches:
            t0 = time.perf_counter()
            solver.step(batch)
            step_times.append(time.perf_counter() - t0)
        step_s = statistics.median(step_times)
    peak = matmul_rate()
    p, s = statistics.median(pipe), statistics.median(skl)
    shapes = ", ".join(f"{x.shape[0]}x{x.shape[1]}" for x in X)
    text = "\n".join([
        "# CEBRA training speed: pipeline vs cebra.CEBRA", "",
        f"Sessions (training part, bins x neurons): {shapes}; {STEPS} steps of batch {t['batch_size']} per session, "
        f"{cfg['model']['architecture']} with {cfg['model']['num_units']} units, torch threads {torch.get_num_threads()}; "
        f"median of {REPEATS} alternating repeats, each timed from the call to its return (set-up included).", "",
        "| path | steps/s |", "| --- | --- |",
        f"| neurotrain train stage (cebra solver, checkpointing hook) | {p:.3f} |",
        f"| cebra.CEBRA(...).fit (scikit-learn API) | {s:.3f} |",
        f"| ratio pipeline / cebra.CEBRA | {p / s:.3f} |", "",
        "| one solver step | value |", "| --- | --- |",
        f"| FLOPs (FlopCounterMode) | {flops / 1e9:.1f} GFLOP |",
        f"| wall time (median of 6) | {step_s:.3f} s |",
        f"| achieved rate | {flops / step_s / 1e9:.1f} GFLOP/s |",
        f"| torch matmul rate (fp32 1024^3, same run) | {peak / 1e9:.1f} GFLOP/s |",
        f"| fraction of matmul rate | {flops / step_s / peak:.2f} |", ""])
    out = ROOT / "results" / "benchmarks" / "cebra_train.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
