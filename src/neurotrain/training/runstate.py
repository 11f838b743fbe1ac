"""What every training run shares, whatever its framework (no torch or JAX imports here): the
run's identity (:func:`fingerprint`), the one checkpoint and resume mechanism
(:class:`CheckpointDir`), signal handling (:class:`SignalGuard`) and the versions record.

The torch loop, the CEBRA solver and the JAX loop all keep their resume state in
``<model dir>/checkpoints/`` through :class:`CheckpointDir`, in one layout::

    {"format": STATE_FORMAT, "fingerprint": ..., "progress": {...},   # where the run is, its history
     "model": ..., "optimizer": ..., "rng": ..., **loop-specific keys}

written with the framework's own file format (``torch.save`` for torch, ``.npz`` + JSON
metadata for JAX), always atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import shutil
import signal
from pathlib import Path
from typing import Callable

from neurotrain.errors import NeurotrainError

log = logging.getLogger("neurotrain.train")
STATE_FORMAT = "neurotrain-state-v2"


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


class CheckpointDir:
    """``<out_dir>/checkpoints/`` of one training run: ``last.<ext>`` (the resume point, rewritten at
    every checkpoint and on SIGINT/SIGTERM, removed when training finishes) and, when ``periodic``
    is set, ``<periodic><N>.<ext>`` full states kept every N epochs or steps.

    ``save(path, state)`` and ``load(path) -> state`` are the framework's atomic writer and safe
    reader; ``outputs`` are the run's result files, removed when a run starts so that an earlier
    run's files never stand beside this one's. Resume order: ``last``, then the periodic states,
    newest first; an unreadable state (or one ``restore`` refuses with a NeurotrainError) is
    skipped with a warning for the next older one; a state of another run (another fingerprint)
    stops the search. Without a usable state the run starts fresh and the stale files are removed.
    Snakemake never deletes this folder: it is not a declared output.
    """

    def __init__(self, out_dir: str | Path, fingerprint: str, ext: str, save: Callable[[Path, dict], None],
                 load: Callable[[Path], dict], periodic: str | None = None, outputs: tuple[str, ...] = ()):
        self.out = Path(out_dir)
        self.dir = self.out / "checkpoints"
        self.fp, self.ext, self.periodic, self.outputs = fingerprint, ext, periodic, outputs
        self._save, self._load = save, load
        self.last = self.dir / f"last.{ext}"
        self.resumed_from: Path | None = None

    def candidates(self) -> list[Path]:
        """``last`` first, then the periodic states, newest first."""
        found = []
        if self.periodic and self.dir.is_dir():
            pat = re.compile(rf"{re.escape(self.periodic)}(\d+)\.{re.escape(self.ext)}")
            found = sorted(((int(m.group(1)), p) for p in self.dir.iterdir() if (m := pat.fullmatch(p.name))),
                           reverse=True)
        return ([self.last] if self.last.is_file() else []) + [p for _, p in found]

    def begin(self, restore: Callable[[dict], None] = lambda state: None) -> dict | None:
        """Clear the run's outputs and return the newest usable state of this run after
        ``restore(state)`` accepted it, or None (a fresh start, stale checkpoints removed)."""
        for name in self.outputs:
            (self.out / name).unlink(missing_ok=True)
        state = None
        for cand in self.candidates():
            try:
                st = self._load(cand)
                if not isinstance(st, dict) or st.get("format") != STATE_FORMAT or st.get("fingerprint") != self.fp:
                    log.warning("Not resuming from %s: it belongs to another config, dataset, model or code version",
                                cand)
                    break
                restore(st)
            except NeurotrainError as exc:
                log.warning("Cannot resume from %s (%s); trying an older checkpoint", cand, exc.what)
                continue
            state, self.resumed_from = st, cand
            log.info("Resuming from %s", cand)
            break
        if state is None and self.dir.exists():
            stale = sorted(p.name for p in self.dir.iterdir())
            if stale:
                log.warning("Starting fresh: removing stale checkpoints %s", ", ".join(stale))
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        return state

    def save(self, state: dict, index: int | None = None) -> Path | None:
        """Write ``state`` as the resume point, and as ``<periodic><index>`` when ``index`` is
        given; returns the periodic file's path (None if none was written)."""
        full = {"format": STATE_FORMAT, "fingerprint": self.fp, **state}
        periodic = None
        if index is not None and self.periodic:
            periodic = self.dir / f"{self.periodic}{index}.{self.ext}"
            self._save(periodic, full)
        self._save(self.last, full)
        return periodic

    def finish(self) -> None:
        """Training is complete: the resume point goes (periodic states and other files stay)."""
        self.last.unlink(missing_ok=True)


def versions(*modules) -> dict[str, str]:
    """``{name: version}`` of the libraries a run used (for ``config.json``)."""
    return {m.__name__: m.__version__ for m in modules}
