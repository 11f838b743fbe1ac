"""Exact resume under Snakemake, for every system: the training job is killed (SIGTERM, and
SIGKILL) at a random point after its first checkpoint, the same target is run again, and the
final and best weights are byte-identical, array by array, to an uninterrupted run of the same
config on CPU. SIGTERM saves the state at the next step/epoch boundary; SIGKILL leaves only the
last periodic checkpoint (written atomically), so the rerun repeats the lost work exactly."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import model_digests, snakemake_env, workflow_copy

pytestmark = pytest.mark.slow

# smoke sizes, with training long enough to be killed in the middle: the kill comes up to 1.5 s
# after the first checkpoint (ei_rnn: 120 epochs took about 1.5 s in all, and once finished first)
LONGER = {
    "ei_rnn": "ei_rnn:\n  training:\n    max_epochs: 400\n    patience: 400\n    checkpoint_every: 10\n    detail_every: 60\n",
    "cebra": "cebra:\n  training:\n    max_steps: 80\n    checkpoint_every: 8\n",
    "ring_attractor": "ring_attractor:\n  training:\n    max_epochs: 60\n    checkpoint_every: 2\n    patience: 60\n",
    "lisbet": "lisbet:\n  training:\n    epochs: 16\n    checkpoint_every: 1\n",
    "cpc_snn": "cpc_snn:\n  training:\n    phase3:\n      epochs: 12\n      steps_per_epoch: 3\n      warmup_steps: 1\n",
}
EXT = {"cpc_snn": "npz"}


def arrays(path: Path) -> dict[str, str]:
    """sha256 of every array of the saved model (weights, optimizer-free), by name."""
    return {k: v for k, v in model_digests(path).items() if k != "__meta__" and not k.startswith(".metrics")}


def smk(wd: Path, *args, timeout=600):
    return subprocess.run(["snakemake", "--cores", "2", *args, "--configfile", "config/smoke.yaml", "config/longer.yaml"],
                          cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=timeout)


def trainer_of(proc: subprocess.Popen):
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            cmd = child.cmdline()
            if "neurotrain.runner" in cmd and "train" in cmd:  # python -m ..., not the shell around it
                return child
        except psutil.Error:
            continue
    return None


def _new_checkpoint(ckpts: Path, since: float) -> bool:
    """A whole checkpoint (not a temporary file) written after ``since``."""
    try:
        return any(not f.name.startswith(".") and f.stat().st_mtime > since for f in ckpts.iterdir())
    except OSError:  # the folder is being replaced, or a file went between listing and stat
        return False


def run_and_kill_training(cmd: list[str], wd: Path, ckpts: Path, sig, delay: float = 0.0):
    """Run ``cmd`` (Snakemake) and send ``sig`` to its training job ``delay`` s after its first
    whole checkpoint appears (an earlier run's checkpoints do not count); returns (killed,
    returncode, output)."""
    since = time.time()
    proc = subprocess.Popen(cmd, cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=snakemake_env())
    killed = False
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if _new_checkpoint(ckpts, since):
            time.sleep(delay)
            trainer = trainer_of(proc)
            if trainer is not None and trainer.is_running():
                trainer.send_signal(sig)
                killed = True
            break
    out, _ = proc.communicate(timeout=300)
    return killed, proc.returncode, out


@pytest.fixture(scope="module", params=list(LONGER))
def reference(request, tmp_path_factory):
    """(system, a workflow copy with the processed data only, the uninterrupted run's digests)."""
    system = request.param
    base = workflow_copy(tmp_path_factory.mktemp(f"{system}_data"))
    (base / "config" / "longer.yaml").write_text(f"systems: [{system}]\n" + LONGER[system])
    r = smk(base, f"data/processed/{system}.h5")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ref = tmp_path_factory.mktemp(f"{system}_ref")
    shutil.copytree(base, ref, symlinks=True, dirs_exist_ok=True)
    ext = EXT.get(system, "pt")
    target = f"results/{system}/model/model_final.{ext}"
    r = smk(ref, target)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    model = ref / "results" / system / "model"
    digests = {kind: arrays(model / f"model_{kind}.{ext}") for kind in ("final", "best")}
    assert digests["final"]
    return system, base, digests


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_resumes_to_identical_weights(reference, sig, tmp_path):
    system, base, digests = reference
    wd = tmp_path / "wd"
    shutil.copytree(base, wd, symlinks=True)
    ext = EXT.get(system, "pt")
    target = f"results/{system}/model/model_final.{ext}"
    ckpts = wd / "results" / system / "model" / "checkpoints"
    seed = random.SystemRandom().randrange(2**32)
    delay = random.Random(seed).uniform(0.0, 1.5)
    cmd = ["snakemake", "--cores", "2", target, "--configfile", "config/smoke.yaml", "config/longer.yaml"]
    killed, code, out = run_and_kill_training(cmd, wd, ckpts, sig, delay)
    assert killed, f"training of {system} finished before it could be killed (seed {seed}); lengthen LONGER:\n{out[-2000:]}"
    assert code != 0, f"{system}: the killed job did not fail (seed {seed}, delay {delay:.2f} s)"
    assert not (wd / target).exists(), "a killed job left its declared output"
    assert any(ckpts.glob("last.*")) or any(ckpts.glob("model_*")), "no checkpoint survived the kill"

    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (wd / "results" / "logs" / system / "train_model.log").read_text(errors="replace")
    assert "Resuming from" in log, f"{system}: the rerun did not resume:\n{log[-2000:]}"
    model = wd / "results" / system / "model"
    for kind in ("final", "best"):
        got = arrays(model / f"model_{kind}.{ext}")
        differ = sorted(k for k in digests[kind] if got.get(k) != digests[kind][k])
        assert got.keys() == digests[kind].keys() and not differ, \
            f"{system} {kind} weights differ after {sig.name} (seed {seed}, delay {delay:.2f} s): {differ[:5]}"


def _all_arrays(results: Path, system: str) -> dict[str, str]:
    import hashlib

    import numpy as np

    out = {}
    run = results / system
    for f in sorted(run.rglob("*.npy")):
        out[f.relative_to(run).as_posix()] = hashlib.sha256(np.load(f, allow_pickle=False).tobytes()).hexdigest()
    for f in sorted(run.glob("model/model_*.*")):
        out.update({f"{f.name}:{k}": v for k, v in arrays(f).items()})
    return out


def test_edit_then_killed_training_rebuilds_everything_byte_for_byte(tmp_path):
    """A finished run; the learning rate is changed; the rerun's training is stopped by SIGTERM;
    the same command again rebuilds training (resuming) and everything after it, and every array
    of the system equals a clean run with the new rate, byte for byte."""
    system = "ei_rnn"
    longer = (f"systems: [{system}]\n{system}:\n  training:\n    max_epochs: 300\n    patience: 300\n"
              "    checkpoint_every: 10\n    detail_every: 1000\n    log_every: 1000\n")
    edited = longer.replace("max_epochs: 300", "max_epochs: 300\n    learning_rate: 0.002")
    target = f"results/{system}/metrics.json"  # training, extraction and analysis (figures and reports are cheap)

    (tmp_path / "clean").mkdir()
    (tmp_path / "wd").mkdir()
    clean = workflow_copy(tmp_path / "clean")
    (clean / "config" / "longer.yaml").write_text(edited)
    r = smk(clean, target)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    wd = workflow_copy(tmp_path / "wd")
    (wd / "config" / "longer.yaml").write_text(longer)
    r = smk(wd, target)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wd / "config" / "longer.yaml").write_text(edited)
    ckpts = wd / "results" / system / "model" / "checkpoints"
    cmd = ["snakemake", "--cores", "2", target, "--configfile", "config/smoke.yaml", "config/longer.yaml"]
    killed, code, out = run_and_kill_training(cmd, wd, ckpts, signal.SIGTERM)
    assert killed and code != 0, out[-2000:]
    dry = smk(wd, "-n", target)
    assert "Nothing to be done" not in dry.stdout and "train_model" in dry.stdout, dry.stdout[-2000:]
    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got, want = _all_arrays(wd / "results", system), _all_arrays(clean / "results", system)
    assert got.keys() == want.keys() and [k for k in want if got[k] != want[k]] == []
    assert smk(wd, "-n", target).stdout.count("Nothing to be done") == 1
