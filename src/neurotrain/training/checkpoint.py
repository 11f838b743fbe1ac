"""Checkpoints: one dict of tensors and plain Python values, written atomically and loaded with
``torch.load(weights_only=True)`` (no arbitrary pickles)."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import signal
from pathlib import Path

import numpy as np
import torch

from ..errors import NeurotrainError
from ..io import atomic_path


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a kill mid-write leaves the previous file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise NeurotrainError(path, f"corrupt or unreadable checkpoint ({exc.__class__.__name__})") from None


def rng_state(np_rng: np.random.Generator) -> dict:
    """Every random generator training draws from: torch, the loop's numpy Generator, numpy's
    global stream, python's ``random``."""
    legacy = np.random.get_state()  # numpy's global stream (CEBRA's samplers draw from it)
    state = {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": random.getstate(),
             "numpy_global": [legacy[0], legacy[1].tolist(), int(legacy[2]), int(legacy[3]), float(legacy[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    g = state["numpy_global"]
    np.random.set_state((g[0], np.asarray(g[1], dtype=np.uint32), g[2], g[3], g[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy's global state and torch; return the numpy Generator the loop uses."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


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
