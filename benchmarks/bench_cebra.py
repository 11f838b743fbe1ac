"""Benchmark: CEBRA training through this pipeline's rule vs through ``cebra.CEBRA`` (run by
`make bench`; not a test).

Same data (the default embedded sessions of config/config.yaml), model, batch, loader and
number of steps, 2 CPU threads, measured in one run. Both are timed as whole processes, from
interpreter start to exit: the pipeline as the ``train_model`` job of Snakemake (its
``benchmark:`` file), ``cebra.CEBRA(...).fit`` as a ``python -c`` process. Also reports one
solver step's FLOP rate against the torch matmul rate measured in the same run: CEBRA's step
(every window encoded on its own) and the rule's (``training.batch_encoding``: with ``auto`` on
these sessions, each session encoded once per step), with the speed-up between them.

CPU time on this machine drifts by tens of percent from minute to minute (other tenants), more
than the two paths differ, so a second comparison runs both inside this one process, in short
fits that alternate (``PAIRS`` pairs of ``PAIR_STEPS`` steps): the pipeline's training function
as its rule calls it (data loading, set-up, fit, saving) against loading the same arrays and
``cebra.CEBRA(...).fit``; the median of the per-pair time ratios is reported beside the medians.
Writes results/benchmarks/cebra_train.md.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, flop_rows, matmul_rate, profile_rows, step_record, write_report  # noqa: E402

STEPS, REPEATS = 60, 5
PAIR_STEPS, PAIRS = 20, 9

# The cebra.CEBRA path as its own process: this file's sklearn_fit, with the same arguments.
SKLEARN = """
import json, sys, torch
torch.set_num_threads(2)
sys.path.insert(0, sys.argv[1])
from bench_cebra import sklearn_fit
from pathlib import Path
print("FIT_SECONDS", sklearn_fit(Path(sys.argv[2]), *json.loads(sys.argv[3]), verbose=True)[1])
"""


def sklearn_fit(h5: Path, m: dict, t: dict, steps: int, verbose: bool = False) -> tuple[float, float]:
    """Seconds to load the training arrays and run ``cebra.CEBRA(...).fit``, and of ``fit`` alone."""
    import cebra
    import h5py

    t0 = time.perf_counter()
    with h5py.File(h5) as fh:
        names = [str(n) for n in fh.attrs["session_names"]]
        X = [fh[f"sessions/{n}/spikes"][()][fh[f"sessions/{n}/train_idx"][()]] for n in names]
        y = [fh[f"sessions/{n}/behavior"][()][fh[f"sessions/{n}/train_idx"][()]] for n in names]
    model = cebra.CEBRA(model_architecture=m["architecture"], batch_size=t["batch_size"], num_hidden_units=m["num_units"],
                        output_dimension=m["output_dim"], max_iterations=steps, conditional="time_delta",
                        time_offsets=t["time_offset"], temperature=t["temperature"], learning_rate=t["learning_rate"],
                        device="cpu", verbose=verbose)
    t1 = time.perf_counter()
    model.fit(X, y)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def interleaved(h5: Path, cfg: dict, out: Path) -> dict:
    """Alternating in-process fits of both paths: per-pair seconds and their ratios."""
    from neurotrain.systems.cebra.train import run_training

    c = json.loads(json.dumps(cfg))
    c["training"].update(max_steps=PAIR_STEPS, checkpoint_every=10**6)
    def rule() -> float:
        t0 = time.perf_counter()
        run_training(c, str(h5), str(out), threads=2)
        return time.perf_counter() - t0

    paths = {"rule": rule, "sklearn": lambda: sklearn_fit(h5, cfg["model"], cfg["training"], PAIR_STEPS)[0]}
    times = {"rule": [], "sklearn": []}
    for i in range(PAIRS + 1):  # the first pair warms both up and is dropped
        for name in (("rule", "sklearn") if i % 2 else ("sklearn", "rule")):  # which goes first alternates
            dt = paths[name]()
            if i:
                times[name].append(dt)
    return {**times, "ratios": [b / a for a, b in zip(times["rule"], times["sklearn"])]}


def main() -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from neurotrain.config import load_config
    from neurotrain.systems.cebra.data import load_processed
    from neurotrain.systems.cebra.encoding import use_session_encoding
    from neurotrain.systems.cebra.train import build_models, make_datasets, make_loader, make_solver

    torch.set_num_threads(2)
    cfg = load_config(ROOT / "config" / "config.yaml")["cebra"]
    t, m = cfg["training"], cfg["model"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d)
        for name in ("Snakefile", "workflow", "config", "envs"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, wd / name)
        os.symlink(ROOT / "src", wd / "src")
        (wd / "config" / "bench.yaml").write_text(yaml.safe_dump(
            {"systems": ["cebra"], "cebra": {"training": {"max_steps": STEPS, "checkpoint_every": 10**6,
                                                         "threads": 2}}}))  # cebra.CEBRA's process: 2 threads too
        smk = ["snakemake", "--cores", "2", "--configfile", "config/config.yaml", "config/bench.yaml"]
        subprocess.run(smk[:3] + ["data/processed/cebra.h5"] + smk[3:], cwd=wd, env=env, check=True, capture_output=True)
        h5 = wd / "data/processed/cebra.h5"
        rule_runs, skl_runs, rule_fit, skl_fit = [], [], [], []
        seed = f"cebra/default/seed{t['seed']}"  # the default run's one replicate
        for _ in range(REPEATS):  # alternate the two paths; medians below
            subprocess.run(smk[:3] + [f"results/{seed}/model/model_final.pt", "--forcerun", "train_model"] + smk[3:],
                           cwd=wd, env=env, check=True, capture_output=True)
            tsv = (wd / f"results/benchmarks/{seed}/train_model.tsv").read_text().splitlines()
            rule_runs.append(float(tsv[1].split("\t")[0]))
            log = json.loads((wd / f"results/{seed}/model/training_log.json").read_text())
            rule_fit.append(log["summary"]["training_time_s"])
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", SKLEARN, str(Path(__file__).resolve().parent), str(h5),
                                json.dumps([m, t, STEPS])], check=True, capture_output=True, env=env, text=True)
            skl_runs.append(time.perf_counter() - t0)
            skl_fit.append(float(r.stdout.split("FIT_SECONDS")[1].split()[0]))
        rule_s, skl_s = statistics.median(rule_runs), statistics.median(skl_runs)
        rule_f, skl_f = statistics.median(rule_fit), statistics.median(skl_fit)

        pairs = interleaved(h5, cfg, wd / "inproc")
        data = load_processed(h5)
        mc = {"architecture": m["architecture"], "num_units": m["num_units"], "output_dim": m["output_dim"],
              "sharing": "per_session", "n_features": [s["spikes"].shape[1] for s in data["sessions"]],
              "session_names": data["names"]}
        steps = {}
        for mode in ("windows", t["batch_encoding"]):  # CEBRA's step, then the rule's (the config's batch_encoding)
            models = build_models(mc)
            coll = make_datasets(data["sessions"])
            coll.configure_for(models)
            solver = make_solver(models, cfg, tqdm_on=False)
            used = use_session_encoding(mode, solver, coll, models, t["batch_size"])
            loader = make_loader(coll, 8, t)
            solver._set_fitted_params(loader)
            batches = iter(loader)
            solver.step(next(batches))
            with FlopCounterMode(display=False) as fc:
                solver.step(next(batches))
            if mode == t["batch_encoding"]:  # where the rule's step spends its time
                profile = profile_rows(lambda: solver.step(next(batches)), "solver step (the rule's)", reps=2)
            times = []
            for batch in batches:
                t1 = time.perf_counter()
                solver.step(batch)
                times.append(time.perf_counter() - t1)
            steps["session" if used else "windows"] = (fc.get_total_flops(), statistics.median(times))
        flops, step_s = steps["windows"]
        shapes = ", ".join(f"{len(s['train_idx'])}x{s['spikes'].shape[1]}" for s in data["sessions"])
    peak = matmul_rate()
    p, s = STEPS / rule_s, STEPS / skl_s
    pf, sf = STEPS / rule_f, STEPS / skl_f
    text = "\n".join([
        "# CEBRA training speed: pipeline rule vs cebra.CEBRA", "",
        f"Sessions (training part, bins x neurons): {shapes}; {STEPS} steps of batch {t['batch_size']} per session, "
        f"{m['architecture']} with {m['num_units']} units, 2 torch threads. Each path timed as a whole process "
        f"(interpreter start, imports, data loading, set-up, training, saving); median of {REPEATS} alternating runs "
        f"(rule: {', '.join(f'{x:.1f}' for x in rule_runs)} s; cebra.CEBRA: {', '.join(f'{x:.1f}' for x in skl_runs)} s).", "",
        "| path | wall time (s) | steps/s |", "| --- | --- | --- |",
        f"| `train_model` rule (Snakemake benchmark file) | {rule_s:.1f} | {p:.3f} |",
        f"| `cebra.CEBRA(...).fit` (scikit-learn API) | {skl_s:.1f} | {s:.3f} |",
        f"| ratio pipeline / cebra.CEBRA | | {p / s:.3f} |", "",
        "Training loop alone (the pipeline's `solver.fit` with its checkpoint hook, from the training log; "
        "`cebra.CEBRA.fit()` timed inside its process), same runs:", "",
        "| path | fit time (s) | steps/s |", "| --- | --- | --- |",
        f"| pipeline `solver.fit` | {rule_f:.1f} | {pf:.3f} |",
        f"| `cebra.CEBRA.fit` | {skl_f:.1f} | {sf:.3f} |",
        f"| ratio pipeline / cebra.CEBRA | | {pf / sf:.3f} |", "",
        f"In one process, {PAIRS} alternating pairs of {PAIR_STEPS}-step fits (which path goes first alternates; "
        "a warm-up pair dropped): pipeline training function (loading, set-up, fit, saving) "
        f"{', '.join(f'{x:.1f}' for x in pairs['rule'])} s; load + `cebra.CEBRA.fit` "
        f"{', '.join(f'{x:.1f}' for x in pairs['sklearn'])} s.", "",
        "| in-process pairs | value |", "| --- | --- |",
        f"| median pipeline time | {statistics.median(pairs['rule']):.2f} s |",
        f"| median cebra.CEBRA time | {statistics.median(pairs['sklearn']):.2f} s |",
        f"| median of per-pair speed ratios (pipeline / cebra.CEBRA, steps/s) | {statistics.median(pairs['ratios']):.3f} |",
        f"| pairs where the pipeline was faster | {sum(r > 1 for r in pairs['ratios'])} of {PAIRS} |", "",
        "| one solver step, window by window (CEBRA's step) | value |", "| --- | --- |",
        *flop_rows(flops, step_s, peak, "solver step"), ""])
    records = [step_record("cebra", "solver step, windows (3 sessions x 512)", "torch", flops, step_s, peak)]
    if "session" in steps:
        sf, ss = steps["session"]
        text += "\n".join([
            "", "| one solver step, each session encoded once (the rule's `batch_encoding`) | value |", "| --- | --- |",
            *flop_rows(sf, ss, peak, "solver step"),
            f"| window-by-window FLOPs per second of this step (the same embeddings) | {flops / ss / 1e9:.1f} GFLOP/s, "
            f"{flops / ss / peak:.3f} of the matmul rate |",
            f"| speed-up of the step over window by window | {step_s / ss:.2f}x |", ""])
        records.append(step_record("cebra", "solver step, session encoding (3 sessions x 512)", "torch", sf, ss, peak))
    write_report("cebra_train.md", text + "\n" + "\n".join(profile), records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
