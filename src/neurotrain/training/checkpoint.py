"""Torch's side of the run mechanics: checkpoint files (one dict of tensors and plain Python
values, written atomically, loaded with ``torch.load(weights_only=True)``: no arbitrary pickles),
every random generator's state, and the preamble every torch training run starts with. The
resume logic itself is framework-free: :class:`neurotrain.training.runstate.CheckpointDir`."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from neurotrain.config import StrictConfig
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path


def _plain(obj):
    """``obj`` with a stage's config slices (:class:`StrictConfig`) turned into plain dicts, so that
    ``torch.load(weights_only=True)`` reads them back; state dicts (OrderedDicts) stay as they are."""
    if isinstance(obj, StrictConfig) or type(obj) is dict:
        return {k: _plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a kill mid-write leaves the previous file). Written
    through a buffer, so the zip's record names are torch's fixed ``archive/`` and not the
    temporary file's random name (the same state gives the same bytes), and a full disk is the
    one-line error naming ``path``."""
    buf = io.BytesIO()  # serialised in memory first: a full disk is then an OSError of the write,
    torch.save(_plain(state), buf)  # which atomic_path names, not a RuntimeError deep in torch's zip writer
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())


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


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees one), ``cpu`` or ``cuda``."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_preamble(system: str, training: dict, threads: int) -> torch.device:
    """The start of every torch training run: ``threads`` CPU threads (the rule's; 0 = torch's
    default), torch's deterministic algorithms, the device of ``<system>.training.device`` (cuda without a CUDA device is a
    NeurotrainError naming that key), and every random generator seeded from
    ``<system>.training.seed`` (model initialisation, samplers). Returns the device."""
    if threads > 0:
        torch.set_num_threads(threads)
    # torch's deterministic kernels wherever it has a choice (an accumulating index_put_ on 2+ CPU
    # threads is not; an op with no deterministic kernel raises instead of varying)
    torch.use_deterministic_algorithms(True)
    if training["device"] == "cuda" and not torch.cuda.is_available():
        raise NeurotrainError(f"config key {system}.training.device", "cuda requested but torch sees no CUDA device")
    seed_everything(training["seed"])
    return pick_device(training["device"])


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy's global state and torch; return the numpy Generator the loop uses."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
