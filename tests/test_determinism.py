"""Byte-identical at the real model size: every system's default model (the default run's
config, with small data and a few epochs or steps), trained with 2 threads (`training.threads:
2`; the default is 1) in fresh processes, gives the same weights whether it runs through or is
stopped by SIGTERM after its first checkpoint and rerun. (Smoke-size tensors stay under the sizes at which torch splits an
operation across threads, so the smoke runs alone would not show a thread-order dependence.)"""

import copy
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import NEUROTRAIN, ROOT, model_digests

pytestmark = pytest.mark.slow

DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
# Few epochs or steps, a checkpoint after each; small data where the model's size does not come
# from the data (the E-I RNN's network is as large as its dataset, so it keeps the default data).
SHORT = {
    "ei_rnn": {"training": {"max_epochs": 3, "checkpoint_every": 1, "detail_every": 1000}},
    "cebra": {"data": SMOKE["cebra"]["data"], "training": {"max_steps": 4, "checkpoint_every": 2}},
    "ring_attractor": {"data": SMOKE["ring_attractor"]["data"],
                       "training": {"max_epochs": 4, "checkpoint_every": 1, "batch_size": 4}},
    "lisbet": {"data": SMOKE["lisbet"]["data"], "training": {"epochs": 4, "checkpoint_every": 1, "train_sample": 0.1,
                                                             "val_examples": 32}},
    "cpc_snn": {"data": SMOKE["cpc_snn"]["data"], "analysis": {"bar_fap": SMOKE["cpc_snn"]["analysis"]["bar_fap"]},
                "training": {"micro_batch": 8, "accumulate": 2, "phase1": {"epochs": 1},
                             "phase2": {"epochs": 1, "steps_per_epoch": 2}, "phase3": {"epochs": 2, "steps_per_epoch": 2}}},
}


def _merge(a, b):
    for k, v in b.items():
        a[k] = _merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a


def _run(cwd, *args):
    """The CLI from ``cwd`` with the paths relative to it, as the rules run it; its stderr goes to
    a file (a pipe nobody reads while it runs could fill and stall it)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    err = Path(cwd) / f".stderr.{time.monotonic_ns()}"
    with open(err, "w") as fh:
        proc = subprocess.Popen([NEUROTRAIN, *map(str, args)], stdout=subprocess.DEVNULL, stderr=fh, text=True,
                                env=env, cwd=cwd)
    proc.err = err
    return proc


def _stderr(proc) -> str:
    return proc.err.read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("system", sorted(SHORT))
def test_default_size_identical_through_and_after_sigterm(system, tmp_path):
    block = _merge(copy.deepcopy(DEFAULT.get(system, {})), SHORT[system])
    block["training"]["threads"] = 2  # the default is 1; with 2, a sum's order could vary between runs
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({system: block}))
    for stage, args in (("generate", ["--out-dir", "raw"]), ("preprocess", ["--raw", "raw", "--out", "p.h5"])):
        p = _run(tmp_path, stage, "--system", system, "--config", cfg.name, *args)
        assert p.wait() == 0, _stderr(p)
    train = ["train", "--system", system, "--config", cfg.name, "--data", "p.h5", "--out-dir"]
    through = _run(tmp_path, *train, "a")
    assert through.wait(timeout=900) == 0, _stderr(through)
    cut = _run(tmp_path, *train, "b")
    ckpts = tmp_path / "b" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and cut.poll() is None and not any(ckpts.glob("*.*")):
        time.sleep(0.05)
    if cut.poll() is None:
        cut.send_signal(signal.SIGTERM)
    code = cut.wait(timeout=600)
    # 128 + SIGTERM: the trainer saved its state and exited; -SIGTERM: the signal came after the
    # training loop (its guard) had ended, during the last saves or the interpreter's exit, and
    # the default handler ended the process (a fast machine can finish the loop that soon after
    # the first checkpoint); either way the rerun must give the uninterrupted run's weights
    assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), _stderr(cut)
    if code:
        rerun = _run(tmp_path, *train, "b")
        assert rerun.wait(timeout=900) == 0, _stderr(rerun)
    ext = "npz" if system == "cpc_snn" else "pt"
    for kind in ("best", "final"):
        a, b = model_digests(tmp_path / "a" / f"model_{kind}.{ext}"), model_digests(tmp_path / "b" / f"model_{kind}.{ext}")
        a.pop("__meta__", None), b.pop("__meta__", None)
        assert a == b, [k for k in a if a[k] != b.get(k)][:8]
