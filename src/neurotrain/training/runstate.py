"""Run identity and signal handling shared by the torch and JAX loops (no framework imports)."""

from __future__ import annotations

import copy
import hashlib
import json
import signal
from pathlib import Path


# Training keys that change neither the trajectory nor the result up to the epoch reached:
# a run interrupted under one value resumes under another.
RESUME_NEUTRAL_KEYS = ("max_epochs", "max_steps", "patience", "log_every", "detail_every", "checkpoint_every", "device")


_CODE_SHA: str | None = None


def code_fingerprint() -> str:
    """sha256 of the package's Python source: a run is only resumed by the code that started
    it (a code change reruns training in Snakemake, and that rerun must not pick up the old
    run's checkpoints)."""
    global _CODE_SHA
    if _CODE_SHA is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
        _CODE_SHA = h.hexdigest()
    return _CODE_SHA


def fingerprint(config: dict, data_sha: str, state: dict) -> str:
    """Identity of a training run for resuming: the config that shapes the trajectory, the
    data, the model's parameter names and shapes (``state`` is a state dict) and the code."""
    cfg = copy.deepcopy(config)
    for k in RESUME_NEUTRAL_KEYS:
        cfg.get("training", {}).pop(k, None)
    params = {k: list(v.shape) for k, v in state.items()}
    blob = json.dumps({"config": cfg, "data": data_sha, "params": params, "code": code_fingerprint()},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class SignalGuard:
    """Turn SIGINT/SIGTERM into a flag that the loop checks at epoch boundaries."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
