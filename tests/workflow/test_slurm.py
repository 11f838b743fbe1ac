"""The cluster profile against a real SLURM: a one-node cluster started on this machine
(tests/workflow/slurm/local_slurm.sh) runs the E-I RNN smoke chain through the project's
workflow/profiles/slurm, with the CI cluster's keys from tests/workflow/slurm/profile put in. The
training job is cancelled with `scancel` mid-run; Snakemake resubmits it (--retries) and it
resumes from its checkpoint. SLURM's own records (squeue --states=all) show every job ran there.

Skipped with the reason where SLURM cannot be started (not root, no apt), except under CI=true."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, log_dir, seed_dir, snakemake_env, workflow_copy

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parent / "slurm" / "local_slurm.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    r = subprocess.run(["timeout", "-k", "10", "900", str(SCRIPT), "start", str(state)], capture_output=True, text=True)
    if r.returncode == 77:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but SLURM cannot be started: {r.stderr.strip()}")
        pytest.skip(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, f"local SLURM did not start:\n{r.stdout}\n{r.stderr[-3000:]}"
    env = snakemake_env()
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["timeout", "-k", "10", "60", str(SCRIPT), "stop", str(state)], capture_output=True)


def slurm_jobs(env) -> list[dict]:
    """Every job slurmctld still knows (finished ones for MinJobAge): id, state, comment."""
    out = subprocess.run(["timeout", "-k", "5", "20", "squeue", "--states=all", "-h", "-o", "%i|%T|%k"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return [dict(zip(("id", "state", "comment"), line.split("|", 2))) for line in out.splitlines() if line]


def test_smoke_chain_on_slurm_with_a_cancelled_training_job(slurm, tmp_path):
    wd = workflow_copy(tmp_path)
    # the shipped profile, with the CI cluster's partition, polling and memory put in
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    profile.update(yaml.safe_load((Path(__file__).parent / "slurm" / "profile" / "config.yaml").read_text()))
    (wd / "profile").mkdir()
    (wd / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    # long enough training to be cancelled mid-run; a run of two seeds, whose trainings go out
    # as parallel jobs (one core each on the two-core node)
    (wd / "config" / "ci.yaml").write_text(
        "systems: [ei_rnn]\nei_rnn:\n  training:\n    max_epochs: 1500\n    patience: 1500\n"
        "    checkpoint_every: 10\n    detail_every: 100\n"
        "runs:\n  - {name: default, system: ei_rnn, seeds: [42, 43]}\n")
    target = "results/ei_rnn/default/run_report.md"
    cmd = ["timeout", "-k", "10", "900", "snakemake", "--workflow-profile", "profile", target,
           "--set-threads", "train_model=1", "--configfile", "config/smoke.yaml", "config/ci.yaml"]
    before = {j["id"] for j in slurm_jobs(slurm)}
    log_path = tmp_path / "snakemake.out"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=wd, stdout=out, stderr=subprocess.STDOUT, env=slurm)
        train_log = wd / log_dir("ei_rnn", seed=42) / "train_model.log"
        cancelled, concurrent = None, 0
        deadline = time.time() + 300
        # watched until Snakemake ends (not only until the cancel): a late start of seed 43's job
        # still shows as two trainings running at once
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            running = [j for j in slurm_jobs(slurm) if j["id"] not in before and j["state"] == "RUNNING"
                       and "train_model" in j["comment"]]
            concurrent = max(concurrent, len(running))
            if cancelled is None and train_log.exists() and "Epoch 30 |" in train_log.read_text(errors="replace"):
                # the job of the seed whose log is watched (comment: rule_..._wildcards_<values>)
                mine = [j for j in running if j["comment"].endswith("_42")]
                if mine:
                    cancelled = mine[0]["id"]
                    subprocess.run(["timeout", "-k", "5", "20", "scancel", cancelled], env=slurm, check=True)
        rc = proc.wait(timeout=900)
    output = log_path.read_text(errors="replace")
    assert cancelled is not None, f"the training job was never seen running under SLURM:\n{output[-3000:]}"
    assert rc == 0, f"snakemake through the SLURM profile failed:\n{output[-4000:]}"

    jobs = [j for j in slurm_jobs(slurm) if j["id"] not in before]
    by_rule = {}
    for j in jobs:
        rule = j["comment"].removeprefix("rule_").split("_wildcards")[0]
        by_rule.setdefault(rule, []).append(j)
    # every non-local rule of the chain ran as a SLURM job; figures/report ran on this host
    assert set(by_rule) == {"preprocess_dataset", "train_model", "extract_model", "analyze_population"}, jobs
    assert sorted(j["state"] for j in by_rule["train_model"]) == ["CANCELLED", "COMPLETED", "COMPLETED"], \
        by_rule["train_model"]
    assert cancelled in [j["id"] for j in by_rule["train_model"]]
    assert concurrent == 2, "the two seeds' trainings did not run as parallel SLURM jobs"
    assert [j["state"] for j in by_rule["preprocess_dataset"]] == ["COMPLETED"], by_rule["preprocess_dataset"]
    for rule in ("extract_model", "analyze_population"):  # one per seed
        assert [j["state"] for j in by_rule[rule]] == ["COMPLETED"] * 2, (rule, by_rule[rule])
    # the resubmitted job resumed from the cancelled one's checkpoint and finished the run
    summaries = [json.loads((wd / seed_dir("ei_rnn", seed=k) / "model" / "training_log.json").read_text())["summary"]
                 for k in (42, 43)]
    assert [x["total_epochs"] for x in summaries] == [1500, 1500], summaries
    # seed 42 was cancelled after its epoch 30 (SIGTERM checkpoints the epoch it reached)
    assert (summaries[0].get("resumed_from_epoch") or 0) >= 30, summaries
    assert json.loads((wd / "results/ei_rnn/default/aggregate.json").read_text())["seeds"] == [42, 43]
    assert (wd / target).is_file()
