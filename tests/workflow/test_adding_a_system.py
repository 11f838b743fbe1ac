"""docs/adding-a-system.md, proved: a new system is one folder. The toy system in
tests/workflow/toy_system/ is copied into a scratch checkout's src/neurotrain/systems/toy/ and runs the
whole chain under Snakemake, registered by its spec alone, with no edit anywhere else."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, snakemake_env

pytestmark = pytest.mark.slow


def _checkout_with_toy(dest):
    for name in ("Snakefile", "workflow", "profiles", "config", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(Path(__file__).parent / "toy_system", dest / "src" / "neurotrain" / "systems" / "toy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_new_system_is_one_folder(tmp_path):
    wd = _checkout_with_toy(tmp_path)
    (wd / "config" / "toy.yaml").write_text("systems: [toy]\ntoy:\n  training:\n    max_epochs: 40\n")
    cmd = ["snakemake", "--cores", "2", "--configfile", "config/toy.yaml"]
    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = (wd / "results" / "toy" / "default").glob("seed*")  # the default run's one seed
    report = (run / "training_report.md").read_text()
    assert "Validation R^2" in report and "PASS" in report
    assert (run / "figures" / "fit.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "model" / "model_best.pt").is_file() and (run / "weights" / "w.npy").is_file()
    pooled = (wd / "results" / "toy" / "default" / "run_report.md").read_text()
    assert "validation R^2" in pooled and "mean over seeds: **met**" in pooled  # no quality.bars: the seeds' verdicts
    index = (wd / "results" / "report.md").read_text()
    assert "Toy linear regression" in index and "validation R^2" in index
    # the repository's own code and workflow are untouched: only the new folder differs
    differing = subprocess.run(["diff", "-rq", "-x", "__pycache__", "-x", "*.egg-info", str(ROOT / "src"),
                                str(wd / "src")], capture_output=True, text=True).stdout.strip().splitlines()
    assert differing == [f"Only in {wd / 'src' / 'neurotrain' / 'systems'}: toy"], differing
    for name in ("Snakefile", "workflow", "profiles", "envs"):
        assert subprocess.run(["diff", "-rq", str(ROOT / name), str(wd / name)]).returncode == 0, name
    # the toy's config block is validated like any other: a misspelt key is named
    (wd / "config" / "bad.yaml").write_text("systems: [toy]\ntoy:\n  trainig: {}\n")
    bad = subprocess.run(["snakemake", "-n", "--configfile", "config/bad.yaml"], cwd=wd, capture_output=True,
                         text=True, env=snakemake_env(), timeout=120)
    assert bad.returncode != 0 and "toy.trainig" in bad.stdout + bad.stderr
    # and its training reruns when the shared torch loop changes, like every torch system's
    loop = wd / "src" / "neurotrain" / "training" / "torch_loop.py"
    loop.write_text(loop.read_text() + "\n# edited\n")
    dry = subprocess.run([*cmd, "-n"], cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=120)
    assert "rule train_model:" in dry.stdout and "wildcards: system=toy" in dry.stdout
