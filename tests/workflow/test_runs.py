"""The run sheet under Snakemake: named runs and seed replicates as targets, pooled per run and
compared per system; a run's own preprocessing; targets outside the sheet refused."""

import json
import re
import subprocess

import numpy as np
import pytest

from conftest import snakemake_env, workflow_copy

pytestmark = pytest.mark.slow


def test_named_runs_and_seeds_are_targets_pooled_and_compared(tmp_path):
    """A run sheet with two runs of one system: every replicate is its own chain under
    results/<system>/<run>/seed<k>/, one seed or one run can be built alone, the run report pools
    the seeds (mean, SD, 95% t-interval, the bar judged on the mean) and the system's runs are
    compared side by side; a run or seed not in the sheet is refused in one line."""
    from scipy import stats

    wd = workflow_copy(tmp_path)
    (wd / "config" / "runs.yaml").write_text(
        "systems: [ei_rnn]\nruns:\n"
        "  - {name: default, system: ei_rnn, seeds: [42, 7]}\n"
        "  - {name: wide, system: ei_rnn, seeds: [3], config: {model: {attention_dim: 8}}}\n")
    run = lambda *args: subprocess.run(  # noqa: E731
        ["snakemake", "--cores", "2", *args, "--configfile", "config/smoke.yaml", "config/runs.yaml"], cwd=wd,
        capture_output=True, text=True, env=snakemake_env(), timeout=900)
    # one seed alone: only its chain (the data rules, then one replicate)
    one = run("-n", "results/ei_rnn/default/seed7/training_report.md")
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    assert set(re.findall(r"wildcards: system=ei_rnn, run=(\w+), seed=(\d+)", one.stdout)) == {("default", "7")}
    # one run: both seeds' chains and the pooling, nothing of the other run
    r = run("results/ei_rnn/default/run_report.md")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not (wd / "results" / "ei_rnn" / "wide").exists()
    a = json.loads((wd / "results/ei_rnn/default/aggregate.json").read_text())
    assert a["seeds"] == [42, 7]
    fracs = [json.loads((wd / f"results/ei_rnn/default/seed{k}/metrics.json").read_text())["fraction_of_noise_ceiling"]
             for k in (42, 7)]
    (bar,) = [b for b in a["bars"] if b["name"].startswith("test-trial PSTH correlation")]
    assert bar["trained"]["mean"] == pytest.approx(np.mean(fracs)) and bar["trained"]["sd"] == pytest.approx(np.std(fracs, ddof=1))
    assert bar["trained"]["ci95"] == pytest.approx(list(stats.t.interval(0.95, 1, loc=np.mean(fracs), scale=stats.sem(fracs))))
    assert bar["passes"] == (bar["margin"]["mean"] >= 0) and a["passes"] is False  # four epochs do not pass
    # what chose each seed's checkpoint, pooled: the validation measure runs are tuned on
    best = [json.loads((wd / f"results/ei_rnn/default/seed{k}/model/training_log.json").read_text())["summary"]
            ["best_val_correlation"] for k in (42, 7)]
    assert a["validation"]["measure"] == "val_correlation" and a["validation"]["mean"] == pytest.approx(np.mean(best))
    report = (wd / "results/ei_rnn/default/run_report.md").read_text()
    assert "2 seeds" in report and "[seed7/training_report.md](seed7/training_report.md)" in report
    assert f"{np.mean(fracs):.3f} ± {np.std(fracs, ddof=1):.3f}" in report
    # everything: the other run, then the project report and the comparison of the two runs
    r = run()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wide = json.loads((wd / "results/ei_rnn/wide/seed3/model/config.json").read_text())
    assert wide["config"]["model"]["attention_dim"] == 8 and wide["config"]["training"]["seed"] == 3
    runs_md = (wd / "results/ei_rnn/runs.md").read_text()
    assert "[`default`](default/run_report.md) | - | 42, 7 | val_correlation " in runs_md
    assert "[`wide`](wide/run_report.md) | `model.attention_dim: 8` | 3 | val_correlation " in runs_md
    index = (wd / "results/report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert {"ei_rnn/default/run_report.md", "ei_rnn/wide/run_report.md", "ei_rnn/runs.md"} <= set(links)
    assert all((wd / "results" / link).is_file() for link in links)
    assert "Nothing to be done" in run("-n").stdout
    # a run that overrides a key preprocessing reads (LISBET's model.window) cuts the raw data
    # again for itself, with its override: the other runs keep the system's processed file
    (wd / "config" / "prep.yaml").write_text(
        "systems: [lisbet]\nruns:\n  - {name: long, system: lisbet, seeds: [5], config: {model: {window: 100000}}}\n"
        "  - {name: default, system: lisbet, seeds: [1]}\n")
    prep = lambda *args: subprocess.run(  # noqa: E731
        ["snakemake", "--cores", "2", *args, "--configfile", "config/smoke.yaml", "config/prep.yaml"], cwd=wd,
        capture_output=True, text=True, env=snakemake_env(), timeout=900)
    plan = prep("-n", "results/lisbet/long/seed5/metrics.json", "results/lisbet/default/seed1/metrics.json").stdout
    jobs = {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n    input: ([^\n]*)", plan, re.M)}
    assert "preprocess_run_dataset" in jobs and "preprocess_dataset" in jobs, plan[-2000:]
    trains = re.findall(r"^rule train_model:\n    input: ([^,\n]*)", plan, re.M)
    assert sorted(trains) == ["data/processed/lisbet-long.h5", "data/processed/lisbet.h5"], trains
    bad = prep("data/processed/lisbet-long.h5")
    assert bad.returncode != 0 and not (wd / "data/processed/lisbet-long.h5").exists()
    log = (wd / "results/logs/lisbet/long/preprocess_dataset.log").read_text().strip().splitlines()
    assert "fewer than one window (100000 frames, config key lisbet.model.window)" in log[-1], log[-3:]
    # targets outside the sheet: one line naming the run sheet
    for target, needle in (("results/ei_rnn/slow/run_report.md", "run ei_rnn/slow: not in the run sheet"),
                           ("results/ei_rnn/default/seed9/metrics.json", "has no seed 9 (its seeds: 42, 7)"),
                           # seed 42 written another way is not another replicate of it
                           ("results/ei_rnn/default/seed042/metrics.json", "No rule to produce")):
        bad = run("-n", target)
        assert bad.returncode != 0 and needle in bad.stdout + bad.stderr, (target, bad.stdout[-1500:] + bad.stderr[-1500:])
