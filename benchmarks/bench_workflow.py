"""The workflow's own benchmarks and the suite's summary (the last step of `make bench`).

1. The default run: if `snakemake -n` on config/config.yaml has jobs to do, runs them
   (`snakemake --cores N`) and records the wall time; per rule, its wall time and peak memory
   (max RSS) from the `benchmark:` files of that run.
2. Snakemake's own overhead on the finished default run: `snakemake -n` (median of 5,
   alternating with `snakemake -n` on a finished three-rule workflow in the same environment, and
   the median of the 5 pairs' ratios) and a no-op `snakemake --cores N` (median of 3).
3. Each system's training step as a fraction of its framework's matmul rate, from the
   system benchmarks `make bench` ran just before (results/benchmarks/*.json).
4. Scaling: each system trained for a fixed number of epochs/steps on 1x, 2x and 4x its data
   (trials; CEBRA's session length and, apart, its number of sessions, whose multi-session
   InfoNCE grows with their square; trajectories, sequences, segments), wall time of the training.

Writes results/benchmarks/summary.md (tables) and summary.png (per-rule times; scaling), and
prints the tables. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks"
LOGS = ROOT / "results" / "logs"
BIN = Path(sys.executable).parent
SYSTEMS = ["ei_rnn", "cebra", "ring_attractor", "lisbet", "cpc_snn"]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def smk(*args, check=True, cwd=ROOT) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, capture_output=True, text=True, env=env())
    dt = time.perf_counter() - t
    if check and r.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dt, r


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem_s = f"{mem / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        mem_s = "?"
    return f"{cpu}, {os.cpu_count()} cores, {mem_s} RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


# ------------------------------------------------------------------------------ 1-2. the default run
DRY_PAIRS = 5
# A finished three-rule workflow in the same environment (the same Snakemake and plugins): what
# `snakemake -n` costs before any of this workflow's own work.
BARE_SNAKEFILE = """
rule all:
    input: "c.txt"

rule a:
    output: "a.txt"
    shell: "echo a > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cat {input} > {output}"

rule c:
    input: "b.txt"
    output: "c.txt"
    shell: "cat {input} > {output}"
"""


def default_run(cores: int) -> dict:
    _, dry = smk("-n", "--configfile", "config/config.yaml")
    record_path = OUT / "default_run.json"
    if "Nothing to be done" not in dry.stdout:
        _, every = smk("-n", "--forceall", "--configfile", "config/config.yaml")
        jobs, total = _job_count(dry.stdout), _job_count(every.stdout)
        print(f"running the default workflow (make run): {jobs} of its {total} jobs ...", flush=True)
        wall, _ = smk("--cores", str(cores), "--configfile", "config/config.yaml")
        rec = {"wall_time_s": wall, "cores": cores, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "jobs": jobs, "all_jobs": total}
        OUT.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(rec, indent=1))
    elif record_path.is_file():
        rec = json.loads(record_path.read_text())
    else:
        rec = {"wall_time_s": None, "note": "the default run was already finished; remove results/ to time it"}
    dry_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as bare:  # the yardstick: Snakemake's own start-up and DAG
        (Path(bare) / "Snakefile").write_text(BARE_SNAKEFILE)
        smk("--cores", "1", cwd=bare)
        for _ in range(DRY_PAIRS):  # alternating, so drift of the machine hits both alike
            dry_times.append(smk("-n", "--configfile", "config/config.yaml")[0])
            bare_times.append(smk("-n", cwd=bare)[0])
    noop_times = []
    for _ in range(3):
        dt, r = smk("--cores", str(cores), "--configfile", "config/config.yaml")
        if "Nothing to be done" not in r.stdout + r.stderr:
            sys.exit("the no-op rerun had work to do: the default run is not finished")
        noop_times.append(dt)
    rec["dry_run_s"] = statistics.median(dry_times)
    rec["bare_dry_run_s"] = statistics.median(bare_times)
    rec["dry_run_ratio"] = statistics.median(a / b for a, b in zip(dry_times, bare_times))
    rec["noop_rerun_s"] = statistics.median(noop_times)
    return rec


def _job_count(dry_run_stdout: str) -> int:
    """Total of Snakemake's job-stats table in a dry run's output."""
    m = re.search(r"^total\s+(\d+)\s*$", dry_run_stdout, re.M)
    return int(m.group(1)) if m else 0


def rule_benchmarks() -> list[dict]:
    rows = []
    for system in SYSTEMS:
        for tsv in sorted((OUT / system).rglob("*.tsv")):  # data rules per system, the others per replicate
            with open(tsv) as fh:
                r = next(csv.DictReader(fh, delimiter="\t"))
            rss = r.get("max_rss", "NA")
            rows.append({"system": system, "rule": tsv.stem, "s": float(r["s"]),
                         "max_rss_mb": float(rss) if rss not in ("NA", "-", "") else None,
                         "peak_mb": logged_peak(LOGS / tsv.relative_to(OUT).with_suffix(".log"))})
    return rows


def logged_peak(log: Path) -> float | None:
    """The exact peak memory the stage logged at its end (``neurotrain.runner``), or None."""
    if not log.is_file():
        return None
    found = re.findall(r"^peak memory: (\d+) MB", log.read_text(errors="replace"), re.M)
    return float(found[-1]) if found else None


# ------------------------------------------------------------------------------ 4. scaling
SCALING = [
    # system, what grows, the override at size k, the fixed amount of training
    ("ei_rnn", "trials", lambda k: {"data": {"embedded": {"trials_per_condition": 60 * k}},
                                    "training": {"max_epochs": 100, "patience": 1000, "checkpoint_every": 1000,
                                                 "detail_every": 1000, "log_every": 1000}}, "100 epochs (full batch)"),
    # CEBRA's multi-session InfoNCE compares every reference with the negatives of every session, a
    # [S B x S B] similarity matrix: its cost grows with the square of the number of sessions at a
    # fixed batch per session, by the method's design. More data of the same sessions is longer
    # sessions; both are measured.
    ("cebra", "session length", lambda k: {"data": {"embedded": {"n_time": 2000 * k}},
                                           "training": {"max_steps": 20, "checkpoint_every": 1000}}, "20 steps"),
    ("cebra", "sessions", lambda k: {"data": {"embedded": {"n_neurons": [40, 50, 60] * k, "n_time": 2000}},
                                     "training": {"max_steps": 20, "checkpoint_every": 1000}}, "20 steps"),
    ("ring_attractor", "trajectories", lambda k: {"data": {"embedded": {"n_trajectories": 96 * k}},
                                                  "training": {"max_epochs": 5, "checkpoint_every": 1000}}, "5 epochs"),
    ("lisbet", "sequences", lambda k: {"data": {"embedded": {"n_sequences": 10 * k}}, "training": {"epochs": 5}},
     "5 epochs"),
    ("cpc_snn", "segments", lambda k: {"data": {"embedded": {"n_segments": 3000 * k}},
                                       "training": {"phase1": {"epochs": 1}, "phase2": {"epochs": 1, "steps_per_epoch": 10},
                                                    "phase3": {"enabled": False}}},
     "phase 1 for 1 epoch + 10 SNN steps (incl. JIT compile)"),
]


def _merge(a: dict, b: dict) -> dict:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v
    return a


def scaling(sizes=(1, 2, 4)) -> list[dict]:
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    rows = []
    nt = str(BIN / "neurotrain")
    for system, unit, override, amount in SCALING:
        for k in sizes:
            with tempfile.TemporaryDirectory(prefix=f"scale_{system}_") as d:
                d = Path(d)
                cfg = {system: _merge(copy.deepcopy(base.get(system, {})), override(k))}
                (d / "c.yaml").write_text(yaml.safe_dump(cfg))
                c = ["--system", system, "--config", str(d / "c.yaml")]
                for args in (["generate", *c, "--out-dir", str(d / "raw")],
                             ["preprocess", *c, "--raw", str(d / "raw"), "--out", str(d / "p.h5")]):
                    subprocess.run([nt, *args], check=True, capture_output=True, env=env())
                t = time.perf_counter()
                r = subprocess.run([nt, "train", *c, "--data", str(d / "p.h5"), "--out-dir", str(d / "m")],
                                   capture_output=True, text=True, env=env())
                wall = time.perf_counter() - t
                if r.returncode != 0:
                    sys.exit(f"scaling run {system} x{k} failed:\n{r.stderr[-3000:]}")
                summary = json.loads((d / "m" / "training_log.json").read_text())["summary"]
                rows.append({"system": system, "unit": unit, "size": k, "amount": amount, "wall_s": wall,
                             "train_s": summary.get("training_time_s")})
                print(f"scaling {system} ({unit}) x{k}: training {rows[-1]['train_s']:.1f} s (process {wall:.1f} s)", flush=True)
    return rows


# ------------------------------------------------------------------------------ summary
def _series(scale: list[dict]) -> list[tuple[str, str]]:
    """(system, what grows) of the scaling rows, in the order they were measured."""
    return list(dict.fromkeys((r["system"], r["unit"]) for r in scale))


def figure(rules: list[dict], scale: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    order = ["generate_dataset", "preprocess_dataset", "train_model", "extract_model",
             "analyze_population", "render_figures", "render_report"]
    bottom = [0.0] * len(SYSTEMS)
    for rule in order:
        vals = [sum(r["s"] for r in rules if r["system"] == s and r["rule"] == rule) / 60 for s in SYSTEMS]
        if any(vals):
            ax.bar(SYSTEMS, vals, bottom=bottom, label=rule)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("wall time per rule (min)")
    ax.set_title("default run, per system and rule")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=20)
    ax = axes[1]
    for system, unit in _series(scale):
        pts = [(r["size"], r["train_s"]) for r in scale if (r["system"], r["unit"]) == (system, unit)]
        t1 = pts[0][1]
        ax.plot([p[0] for p in pts], [p[1] / t1 for p in pts], marker="o", label=f"{system} ({unit})")
    ax.plot([1, 4], [1, 4], "k--", lw=1, label="proportional")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("data size (x the 1x size)")
    ax.set_ylabel("training time / time at 1x")
    ax.set_title("training time against data size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(run: dict, rules: list[dict], steps: list[dict], scale: list[dict], previous: dict | None = None) -> str:
    lines = ["# Benchmark summary", "",
             f"Machine: {machine()}. Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `make bench`; "
             "CPU timings are noisy (another process may share the cores): medians, and ratios measured in one run.", "",
             "## Workflow", "", "| quantity | value |", "| --- | --- |"]
    wall = run.get("wall_time_s")
    if wall:
        part = "" if run.get("jobs") == run.get("all_jobs") else f" (partial: {run.get('jobs')} of {run.get('all_jobs')} jobs)"
        what = f"{wall / 60:.1f} min{part}, {run.get('all_jobs', '?')} jobs on {run.get('cores')} cores, {run.get('date', '')}"
    else:
        what = run.get("note", "not measured")
    lines.append(f"| default run (`make run`), wall time | {what} |")
    lines.append(f"| `snakemake -n` on the finished run (median of {DRY_PAIRS}) | {run['dry_run_s']:.2f} s |")
    if "bare_dry_run_s" in run:
        lines.append(f"| `snakemake -n` on a finished 3-rule workflow, alternating with the above (median of {DRY_PAIRS}) | "
                     f"{run['bare_dry_run_s']:.2f} s |")
        lines.append(f"| ratio of the two (median of the {DRY_PAIRS} pairs' ratios) | {run['dry_run_ratio']:.2f}x |")
    lines.append(f"| no-op `snakemake` on the finished run (median of 3) | {run['noop_rerun_s']:.2f} s |")
    lines += ["", "## Default run per rule (Snakemake `benchmark:` files; peak memory from each stage's log)", "",
              "| system | rule | wall time | peak memory (max RSS) | max RSS sampled by Snakemake | peak in the table this replaces |",
              "| --- | --- | --- | --- | --- | --- |"]
    mb = lambda v: f"{v:.0f} MB" if v is not None else "-"  # noqa: E731
    grown = []
    for r in rules:
        before = (previous or {}).get((r["system"], r["rule"]))
        change = ""
        if before is not None and r.get("peak_mb") is not None:
            change = f" ({r['peak_mb'] / before - 1:+.0%})"
            if r["peak_mb"] > 1.2 * before:
                grown.append(f"{r['system']} {r['rule']}")
        lines.append(f"| {r['system']} | {r['rule']} | {r['s']:.1f} s | {mb(r.get('peak_mb'))} | {mb(r['max_rss_mb'])} | "
                     f"{mb(before)}{change} |")
    if previous is not None:
        lines += ["", "Peak memory more than 20% above the table this replaces: "
                  + (", ".join(grown) if grown else "none") + "."]
    lines += ["", "## Training step against the machine's matmul rate (same process)", ""]
    if not steps:
        lines.append("Not in this summary: no system benchmark wrote results/benchmarks/<system>*.json before it.")
    else:
        lines += ["| system | step | framework | GFLOP | wall time | matmul rate | fraction |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in steps:
        lines.append(f"| {s['system']} | {s['step']} | {s['framework']} | {s['gflop']:.2f} | {s['seconds'] * 1000:.0f} ms | "
                     f"{s['matmul_gflops']:.0f} GFLOP/s | {s['fraction']:.3f} |")
    lines += ["", "## Training time against data size", ""]
    if not scale:
        lines.append("Not in this summary (`--skip-scaling`).")
    else:
        lines += ["| system | grows | fixed training | 1x | 2x | 4x | 4x / 1x |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for system, unit in _series(scale):
        pts = {r["size"]: r for r in scale if (r["system"], r["unit"]) == (system, unit)}
        one = pts[1]
        cells = [f"{pts[k]['train_s']:.1f} s" if k in pts else "-" for k in (1, 2, 4)]
        ratio = f"{pts[4]['train_s'] / one['train_s']:.2f}" if 4 in pts else "-"
        lines.append(f"| {system} | {one['unit']} | {one['amount']} | {' | '.join(cells)} | {ratio} |")
    lines += ["", "![per-rule times and scaling](summary.png)", ""]
    return "\n".join(lines)


DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"  # docs/benchmarks.md's summary block


def _doc_parts() -> tuple[str, str, str] | None:
    """docs/benchmarks.md as (before the summary block, the block, after it), or None."""
    body = DOC.read_text() if DOC.is_file() else ""
    if START not in body or END not in body:
        return None
    i, j = body.index(START) + len(START), body.index(END)
    return body[:i], body[i:j], body[j:]


def previous_peaks() -> dict | None:
    """(system, rule) -> the peak memory (MB) in the per-rule table of the summary docs/benchmarks.md
    shows now, which this run replaces: its exact (logged) column, or, in a table from before that
    column existed, Snakemake's sampled one. None without such a table."""
    parts = _doc_parts()
    if parts is None:
        return None
    peaks = {(m.group(1), m.group(2)): float(m.group(3))
             for m in re.finditer(r"^\| (\w+) \| (\w+) \| [\d.]+ s \| (\d+) MB \|", parts[1], re.M)}
    return peaks or None


def update_docs(text: str) -> None:
    """docs/benchmarks.md shows the latest summary (in its summary block) and its figure."""
    parts = _doc_parts()
    if parts is None:
        return
    shutil.copyfile(OUT / "summary.png", DOC.parent / "benchmark_summary.png")  # the docs keep the figure they show
    tables = text.split("\n", 2)[2].replace("## ", "#### ").replace("](summary.png)", "](benchmark_summary.png)")
    DOC.write_text(parts[0] + "\n" + tables + "\n" + parts[2])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--skip-scaling", action="store_true")
    args = p.parse_args(argv)
    run = default_run(args.cores)
    rules = rule_benchmarks()
    steps = []
    for f in sorted(OUT.glob("*.json")):
        if f.name not in ("default_run.json", "summary.json"):
            steps += json.loads(f.read_text()).get("steps", [])
    scale = [] if args.skip_scaling else scaling()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps({"run": run, "rules": rules, "steps": steps, "scaling": scale}, indent=1))
    figure(rules, scale, OUT / "summary.png")
    text = summary(run, rules, steps, scale, previous_peaks())
    (OUT / "summary.md").write_text(text)
    update_docs(text)
    print(text)


if __name__ == "__main__":
    main()
