"""Exact resume under Snakemake, for every system: the training job is killed with SIGTERM at a
random point after its first checkpoint, the rerun is killed with SIGKILL at a random point
after its first new checkpoint, the same target is run a third time, and the final and best
weights are byte-identical, array by array, to an uninterrupted run of the same config on CPU.
SIGTERM saves the state at the next step/epoch boundary; SIGKILL leaves only the last periodic
checkpoint (written atomically), so the rerun repeats the lost work exactly."""

from __future__ import annotations

import json
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
            if "neurotrain.stages.train" in child.cmdline():  # python -m ..., not the shell around it
                return child
        except psutil.Error:
            continue
    return None


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


def interrupt(wd: Path, system: str, sig: signal.Signals, after: float, delay: float, seed: int) -> None:
    """Run the training target and send ``sig`` to the training process ``delay`` s after it
    writes a whole checkpoint (not a temp file) newer than ``after``; the job must fail and
    leave no declared output and a checkpoint."""
    target = f"results/{system}/model/model_final.{EXT.get(system, 'pt')}"
    ckpts = wd / "results" / system / "model" / "checkpoints"
    cmd = ["snakemake", "--cores", "2", target, "--configfile", "config/smoke.yaml", "config/longer.yaml"]
    proc = subprocess.Popen(cmd, cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=snakemake_env())
    killed = False
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if ckpts.is_dir() and any(not f.name.startswith(".") and f.stat().st_mtime > after for f in ckpts.iterdir()):
            time.sleep(delay)
            trainer = trainer_of(proc)
            if trainer is not None and trainer.is_running():
                trainer.send_signal(sig)
                killed = True
            break
    out, _ = proc.communicate(timeout=300)
    what = f"{system} {sig.name} (seed {seed}, delay {delay:.2f} s)"
    assert killed, f"{what}: training finished before it could be killed; lengthen LONGER:\n{out[-2000:]}"
    assert proc.returncode != 0, f"{what}: the killed job did not fail"
    assert not (wd / target).exists(), f"{what}: a killed job left its declared output"
    assert any(ckpts.glob("last.*")) or any(ckpts.glob("model_*")), f"{what}: no checkpoint survived the kill"


def test_training_killed_twice_resumes_to_identical_weights(reference, tmp_path):
    """SIGTERM (state saved at the next boundary), then, in the resumed run, SIGKILL (only the
    last periodic checkpoint survives) after its first new checkpoint; the third run finishes."""
    system, base, digests = reference
    wd = tmp_path / "wd"
    shutil.copytree(base, wd, symlinks=True)
    seed = random.SystemRandom().randrange(2**32)
    draw = random.Random(seed)
    interrupt(wd, system, signal.SIGTERM, 0.0, draw.uniform(0.0, 1.5), seed)
    interrupt(wd, system, signal.SIGKILL, time.time(), draw.uniform(0.0, 1.0), seed)

    ext = EXT.get(system, "pt")
    cmd = ["snakemake", "--cores", "2", f"results/{system}/model/model_final.{ext}", "--configfile",
           "config/smoke.yaml", "config/longer.yaml"]
    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (wd / "results" / "logs" / system / "train_model.log").read_text(errors="replace")
    assert "Resuming from" in log, f"{system}: the rerun did not resume:\n{log[-2000:]}"
    model = wd / "results" / system / "model"
    for kind in ("final", "best"):
        got = arrays(model / f"model_{kind}.{ext}")
        differ = sorted(k for k in digests[kind] if got.get(k) != digests[kind][k])
        assert got.keys() == digests[kind].keys() and not differ, \
            f"{system} {kind} weights differ after SIGTERM and SIGKILL (seed {seed}): {differ[:5]}"
