"""Exact resume under Snakemake, for every system: the training job is killed (SIGTERM, and
SIGKILL) at a random point after its first checkpoint, the same target is run again, and the
final and best weights are byte-identical, array by array, to an uninterrupted run of the same
config on CPU. SIGTERM saves the state at the next step/epoch boundary; SIGKILL leaves only the
last periodic checkpoint (written atomically), so the rerun repeats the lost work exactly."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import log_dir, model_digests, seed_dir, snakemake_env, workflow_copy

pytestmark = pytest.mark.slow

# smoke sizes, with training long enough to be killed in the middle: the uninterrupted reference
# run measures the window between the first checkpoint and the trainer's exit on this machine,
# and the kill comes at a random point in its first quarter (the other test worker's load can
# make the reference run twice as slow as the killed one, and a kill must still land before
# training ends); a window under MIN_WINDOW fails as too short
LONGER = {
    "cebra": "cebra:\n  training:\n    max_steps: 360\n    checkpoint_every: 8\n",
    "ring_attractor": "ring_attractor:\n  training:\n    max_epochs: 180\n    checkpoint_every: 4\n    patience: 180\n",
    "lisbet": "lisbet:\n  training:\n    epochs: 40\n    checkpoint_every: 2\n",
}
MIN_WINDOW = 0.8  # s (about 3 s on a 2-core AVX2 EPYC with the lengths above)


def arrays(path: Path) -> dict[str, str]:
    """sha256 of every array of the saved model (weights, optimizer-free), by name."""
    return {k: v for k, v in model_digests(path).items() if k != "__meta__" and not k.startswith(".metrics")}


def smk(wd: Path, *args, timeout=600):
    return subprocess.run(["snakemake", "--cores", "2", *args, "--configfile", "config/smoke.yaml", "config/longer.yaml"],
                          cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=timeout)


def training_target(system: str) -> tuple[str, list[str]]:
    """(the final model of the torch ``system``'s default seed, the Snakemake command that builds it
    with the smoke config and LONGER's training)."""
    target = f"{seed_dir(system)}/model/model_final.pt"
    return target, ["snakemake", "--cores", "2", target, "--configfile", "config/smoke.yaml", "config/longer.yaml"]


def trainer_of(proc: subprocess.Popen):
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            cmd = child.cmdline()
            if "neurotrain.runner" in cmd and "train" in cmd:  # python -m ..., not the shell around it
                return child
        except psutil.Error:
            continue
    return None


def _whole_checkpoints(ckpts: Path) -> list[Path]:
    """The whole checkpoint files in ``ckpts`` (temporary files start with a dot): ``last.*`` and
    CEBRA's periodic ``step{N}.pt``, every state a rerun can resume from."""
    return sorted(f for f in ckpts.iterdir() if not f.name.startswith(".")) if ckpts.is_dir() else []


def _new_checkpoint(ckpts: Path, since: float) -> bool:
    """A whole checkpoint written after ``since``."""
    try:
        return any(f.stat().st_mtime > since for f in _whole_checkpoints(ckpts))
    except OSError:  # the folder is being replaced, or a file went between listing and stat
        return False


def run_and_kill_training(cmd: list[str], wd: Path, ckpts: Path, sig, delay: float = 0.0):
    """Run ``cmd`` (Snakemake) and send ``sig`` to its training job ``delay`` s after its first
    whole checkpoint appears (an earlier run's checkpoints do not count); with ``sig`` None, let it
    run and measure. Returns (killed, returncode, output, window): ``window`` is the time in s
    from the first checkpoint to the trainer's exit (None unless measured)."""
    since = time.time()
    proc = subprocess.Popen(cmd, cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=snakemake_env())
    killed, first, trainer, window = False, None, None, None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        trainer = trainer or trainer_of(proc)
        if first is None and _new_checkpoint(ckpts, since):
            first = time.time()
            if sig is not None:
                time.sleep(delay)
                trainer = trainer_of(proc)
                if trainer is not None and trainer.is_running():
                    trainer.send_signal(sig)
                    killed = True
                break
        if first is not None and trainer is not None and not _alive(trainer):
            window = time.time() - first
            break
    out, _ = proc.communicate(timeout=600)
    return killed, proc.returncode, out, window


def _alive(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def reference(request, tmp_path_factory):
    """(system, a workflow copy with the processed data only, the uninterrupted run's digests)."""
    system = request.param
    base = workflow_copy(tmp_path_factory.mktemp(f"{system}_data"))
    (base / "config" / "longer.yaml").write_text(f"systems: [{system}]\n" + LONGER[system])
    r = smk(base, f"data/processed/{system}.h5")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ref = tmp_path_factory.mktemp(f"{system}_ref")
    shutil.copytree(base, ref, symlinks=True, dirs_exist_ok=True)
    target, cmd = training_target(system)
    _, code, out, window = run_and_kill_training(cmd, ref, ref / seed_dir(system) / "model" / "checkpoints", None)
    assert code == 0, out[-3000:]
    assert window is not None and window >= MIN_WINDOW, \
        f"{system}: {window} s from the first checkpoint to the end of training is too short to kill in; lengthen LONGER"
    model = ref / seed_dir(system) / "model"
    digests = {kind: arrays(model / f"model_{kind}.pt") for kind in ("final", "best")}
    assert digests["final"]
    return system, base, digests, window


# ei_rnn's and cpc_snn's training are killed under Snakemake in
# test_edit_then_every_stage_killed_rebuilds_byte_for_byte (SIGKILL), and resumed after SIGTERM at
# the default model size in tests/test_determinism.py. One reference run per system serves both
# signals (the signal is the inner parametrization, so the module fixture is built once).
KILLED = list(LONGER)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda g: g.name)
@pytest.mark.parametrize("reference", KILLED, indirect=True)
def test_killed_training_resumes_to_identical_weights(reference, sig, tmp_path):
    system, base, digests, window = reference
    wd = tmp_path / "wd"
    shutil.copytree(base, wd, symlinks=True)
    target, cmd = training_target(system)
    ckpts = wd / seed_dir(system) / "model" / "checkpoints"
    seed = random.SystemRandom().randrange(2**32)
    delay = random.Random(seed).uniform(0.0, window / 4)
    killed, code, out, _ = run_and_kill_training(cmd, wd, ckpts, sig, delay)
    assert killed, (f"training of {system} finished before it could be killed (seed {seed}, delay {delay:.2f} s of a "
                    f"{window:.2f} s window); lengthen LONGER:\n{out[-2000:]}")
    assert code != 0, f"{system}: the killed job did not fail (seed {seed}, delay {delay:.2f} s)"
    assert not (wd / target).exists(), "a killed job left its declared output"
    # the resume point: last.* or, for CEBRA, a periodic step{N}.pt (written just before last.pt,
    # so a SIGKILL between the two leaves only the periodic state, which the rerun resumes from)
    assert _whole_checkpoints(ckpts), "no checkpoint survived the kill"

    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (wd / log_dir(system) / "train_model.log").read_text(errors="replace")
    assert "Resuming from" in log, f"{system}: the rerun did not resume:\n{log[-2000:]}"
    model = wd / seed_dir(system) / "model"
    for kind in ("final", "best"):
        got = arrays(model / f"model_{kind}.pt")
        differ = sorted(k for k in digests[kind] if got.get(k) != digests[kind][k])
        assert got.keys() == digests[kind].keys() and not differ, \
            f"{system} {kind} weights differ after {sig.name} (seed {seed}, delay {delay:.2f} s): {differ[:5]}"


KILLER = Path(__file__).parent / "killer"
# the stages of a system in order, with the rename before which the stage is killed: training
# dies after its first checkpoints, so its rerun must resume; the others die mid-write
CHAIN = [("generate", "generate_dataset", 1), ("preprocess", "preprocess_dataset", 1), ("train", "train_model", 3),
         ("extract", "extract_model", 1), ("analyze", "analyze_population", 2), ("figures", "render_figures", 1),
         ("report", "render_report", 1)]
EDITS = {"ei_rnn": ("ei_rnn:\n  data:\n    embedded:\n      seed: 8\n"),
         "cpc_snn": ("cpc_snn:\n  data:\n    embedded:\n      seed: 2027\n")}
# the stages killed per system: every stage of the torch system; of the JAX one the two that
# write through JAX's own code (its checkpoints and .npz models), the other writers being the
# shared ones the torch chain already exercises; both chains then rebuild every stage
KILLED_STAGES = {"ei_rnn": [c[0] for c in CHAIN], "cpc_snn": ["train", "extract"]}


def artifacts(results: Path, system: str) -> dict[str, str]:
    """sha256 of everything a system's run leaves that must not depend on the run's history:
    every .npy, every array of every saved model, metrics.json without its timings and without
    ``resumed_from*`` (where a resumed training started: history, recorded on purpose), and every
    figure's PNG bytes."""
    import hashlib
    import json

    import numpy as np

    from conftest import strip_timings

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    out = {}
    run = results / system / "default"  # every seed folder and the seeds pooled
    for f in sorted(run.rglob("*")):
        rel = f.relative_to(run).as_posix()
        if f.suffix == ".npy":
            out[rel] = sha(np.load(f, allow_pickle=False).tobytes())
        elif f.suffix == ".png":
            out[rel] = sha(f.read_bytes())
        elif f.name == "metrics.json":
            metrics = strip_timings(json.loads(f.read_text()))
            for key in [k for k in metrics.get("training", {}) if k.startswith("resumed_from")]:
                del metrics["training"][key]
            out[rel] = sha(json.dumps(metrics, sort_keys=True).encode())
    for f in sorted(run.glob("seed*/model/model_*.*")):
        out.update({f"{f.name}:{k}": v for k, v in arrays(f).items()})
    return out


def leftovers(wd: Path) -> list[str]:
    """Temporaries of killed writers still on disk (every writer sweeps those of its target)."""
    return sorted(p.relative_to(wd).as_posix() for d in ("results", "data") for p in (wd / d).rglob(".*")
                  if p.name.endswith((".tmp", ".old")))


@pytest.mark.parametrize("system", list(EDITS))
def test_edit_then_every_stage_killed_rebuilds_byte_for_byte(system, tmp_path):
    """A finished run; a data key is edited, so every stage is out of date; then each stage in
    turn is killed mid-write (SIGKILL, temporaries left on disk) by rerunning the same command:
    after every kill `snakemake -n` still plans work, and the final rerun leaves every array,
    model, metric and figure equal to a clean run of the edited config, byte for byte, with no
    temporary left behind. One torch system (every stage killed) and the JAX one (KILLED_STAGES)."""
    target = f"results/{system}/default/run_report.md"
    base = f"systems: [{system}]\n"
    (tmp_path / "clean").mkdir()
    (tmp_path / "wd").mkdir()
    clean = workflow_copy(tmp_path / "clean")
    (clean / "config" / "longer.yaml").write_text(base + EDITS[system])
    wd = workflow_copy(tmp_path / "wd")
    (wd / "config" / "longer.yaml").write_text(base)
    # the clean run of the edited config and the first run of the unedited one, side by side
    # (separate folders, the rules' threads as in every other run; a smoke chain is mostly one job at a time)
    runs = [subprocess.Popen(["snakemake", "--cores", "2", target, "--configfile", "config/smoke.yaml",
                              "config/longer.yaml"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=snakemake_env()) for d in (clean, wd)]
    for p in runs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    (wd / "config" / "longer.yaml").write_text(base + EDITS[system])
    cmd = ["snakemake", "--cores", "2", target, "--configfile", "config/smoke.yaml", "config/longer.yaml"]
    env = snakemake_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KILLER), env.get("PYTHONPATH")]))
    for stage, rule, n in [c for c in CHAIN if c[0] in KILLED_STAGES[system]]:
        env["NEUROTRAIN_TEST_KILL"] = f"{stage}:{n}"
        r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=env, timeout=600)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and f"Error in rule {rule}" in out, f"{stage} was not killed:\n{out[-3000:]}"
        dry = smk(wd, "-n", target)
        assert dry.returncode == 0 and "Nothing to be done" not in dry.stdout and rule in dry.stdout, \
            f"after {stage} was killed, the dry run does not plan it:\n{dry.stdout[-2000:]}"
    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Nothing to be done" in smk(wd, "-n", target).stdout
    log = (wd / log_dir(system) / "train_model.log").read_text(errors="replace")
    assert "Resuming from" in log, f"{system}: training did not resume after its kill:\n{log[-2000:]}"
    got, want = artifacts(wd / "results", system), artifacts(clean / "results", system)
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    assert [k for k in want if got[k] != want[k]] == []
    assert leftovers(wd) == []
