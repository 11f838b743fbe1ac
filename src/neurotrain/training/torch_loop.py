"""The one training loop for torch systems.

A system supplies a *task* object (see :class:`TorchTask`); this loop owns the optimizer
(Adam, with weight decay), the scheduler (ReduceLROnPlateau, cosine annealing or constant), gradient clipping, early stopping, checkpoints
(best, final, every N epochs), resume after an interruption, SIGINT/SIGTERM handling, the
per-epoch log and the console output.

Files under ``out_dir`` (``results/<system>/<run>/seed<k>/model``)::

    model_best.pt, model_final.pt   declared outputs: {"model", "model_config", "epoch", ...}
    training_log.json               {"history": [per-epoch dicts], "summary": {...}}; rewritten at
                                    every checkpoint while training (summary {"in_progress": true})
    config.json                     the system's config, versions, device, data fingerprint
    checkpoints/model_epoch{N}.pt   full training state every ``checkpoint_every`` epochs (the
                                    resume mechanism of :class:`runstate.CheckpointDir`)
    checkpoints/last.pt             resume state (undeclared, so Snakemake never deletes it)
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from neurotrain.errors import Interrupted, NeurotrainError
from neurotrain.io import save_json
from neurotrain.training.checkpoint import (load_checkpoint, pick_device, rng_state,  # noqa: F401  (pick_device: API)
                                           save_checkpoint, seed_everything, set_rng_state)
from neurotrain.training.runstate import STATE_FORMAT, CheckpointDir, SignalGuard, fingerprint

log = logging.getLogger("neurotrain.train")


class TorchTask(Protocol):
    """What a system gives the loop."""

    model: torch.nn.Module
    model_config: dict

    def train_epoch(self, np_rng: np.random.Generator, step) -> dict:
        """Run one epoch; call ``step()`` after setting gradients of each batch. Returns the
        epoch's mean losses (must include ``train_loss``)."""

    def evaluate(self) -> dict:
        """Validation metrics (must include ``val_loss`` and the monitored metric)."""

    def detail(self) -> dict:
        """The expensive every-N-epochs diagnostics."""

    def format_detail(self, d: dict) -> list[str]:
        """Lines of the detailed console block."""

    # Optional: ``after_step()`` runs after every optimizer step (e.g. to project parameters
    # back into their constraints); ``epoch_extras()`` returns numbers logged every epoch.


@dataclass
class LoopConfig:
    max_epochs: int
    patience: int
    learning_rate: float
    min_lr: float
    gradient_clip: float
    seed: int
    checkpoint_every: int = 100
    log_every: int = 10
    detail_every: int = 100
    monitor: str = "val_correlation"
    monitor_mode: str = "max"
    monitor_label: str = "val_corr"  # in the progress bar and the per-epoch line
    monitor_name: str = "validation correlation"  # in the closing banner
    scheduler: str = "plateau"  # "plateau" (ReduceLROnPlateau on val_loss), "cosine" (to min_lr over max_epochs), "constant"
    weight_decay: float = 0.0  # Adam's L2 penalty
    lr_factor: float = 0.5
    lr_patience: int = 10


def _fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _say(text: str) -> None:
    """Console output beside the progress bar (stderr, like the bar)."""
    tqdm.write(text, file=sys.stderr)


class _EpochBar(tqdm):
    """tqdm bar whose format can show ``metrics`` without tqdm's ", " postfix prefix."""

    metrics = ""

    @property
    def format_dict(self):
        d = super().format_dict
        d["metrics"] = self.metrics
        return d


OUTPUTS = ("model_best.pt", "model_final.pt", "training_log.json", "config.json")


class Trainer:
    """Owns the optimizer, scheduler, early-stopping state and checkpoints of one run.

    ``train()`` runs to completion (or early stop) and writes the files listed in the module
    docstring; ``save_checkpoint``/``load_checkpoint`` write and restore the full training
    state by hand (what ``train()`` does at every ``checkpoint_every`` epochs and on resume).
    """

    def __init__(self, task: TorchTask, cfg: LoopConfig, out_dir: str | Path, config_record: dict, data_sha: str,
                 run_record: dict | None = None):
        self.task, self.cfg, self.out = task, cfg, Path(out_dir)
        self.config_record, self.run_record = config_record, run_record or {}
        self.np_rng = seed_everything(cfg.seed)
        model = self.model = task.model
        # max_epochs may change on resume, except under cosine annealing, whose horizon it is
        fp_record = {**config_record, "_cosine_horizon": cfg.max_epochs} if cfg.scheduler == "cosine" else config_record
        self.fp = fingerprint(fp_record, data_sha, model.state_dict())
        self.ckpts = CheckpointDir(self.out, self.fp, "pt", save_checkpoint, load_checkpoint, periodic="model_epoch",
                                   outputs=OUTPUTS)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.max_epochs, eta_min=cfg.min_lr)
        elif cfg.scheduler == "constant":
            self.sched = torch.optim.lr_scheduler.ConstantLR(self.opt, factor=1.0, total_iters=0)
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, mode="min", factor=cfg.lr_factor,
                                                                    patience=cfg.lr_patience, min_lr=cfg.min_lr)
        self.state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "best_model": None, "best_metrics": {},
                      "bad_epochs": 0, "history": [], "elapsed": 0.0, "resumed_from": None}
        self._grad_norms: list[float] = []

    @property
    def history(self) -> list[dict]:
        return self.state["history"]

    def full_state(self) -> dict:
        """The run's resume state (the layout of :mod:`neurotrain.training.runstate`, without the
        format and fingerprint that :class:`CheckpointDir` adds)."""
        return {"progress": self.state, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": rng_state(self.np_rng),
                "model_config": self.task.model_config, "config": self.config_record}

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the full training state (atomically) to ``path``."""
        save_checkpoint(path, {"format": STATE_FORMAT, "fingerprint": self.fp, **self.full_state()})

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore the full training state from ``path``; returns the epoch it resumes after.
        Raises :class:`NeurotrainError` if the file is unreadable or belongs to another run."""
        ck = load_checkpoint(path)
        if ck.get("format") != STATE_FORMAT or ck.get("fingerprint") != self.fp:
            raise NeurotrainError(path, "checkpoint belongs to another config, dataset, model or code version")
        try:
            self._restore(ck)
        except NeurotrainError as exc:
            raise NeurotrainError(path, exc.what) from None
        return int(self.state["epoch"])

    def stop_epoch(self, history: list[dict]) -> int:
        """The epoch at which this config stops a run whose per-epoch rows are ``history``:
        ``max_epochs``, or earlier where early stopping under this ``patience`` fires."""
        cfg = self.cfg
        sign = 1.0 if cfg.monitor_mode == "max" else -1.0
        best, bad = -math.inf, 0
        for row in history:
            score = sign * row[cfg.monitor]
            best, bad = (score, 0) if score > best else (best, bad + 1)
            if bad >= cfg.patience or row["epoch"] >= cfg.max_epochs:
                return min(int(row["epoch"]), cfg.max_epochs)
        return cfg.max_epochs

    def _restore(self, ck: dict) -> None:
        """Load a resume state into the model, optimizer, scheduler, RNGs and loop; on a state that
        does not fit, put everything back as it was and raise NeurotrainError. A state past the
        epoch where this config stops (``max_epochs`` or ``patience`` lowered since it was saved)
        does not fit either: the run resumes from an older state, or starts fresh, and ends where
        a fresh run with this config would."""
        try:
            epoch, limit = int(ck["progress"]["epoch"]), self.stop_epoch(ck["progress"]["history"])
        except (KeyError, TypeError, ValueError) as exc:
            raise NeurotrainError("checkpoint", f"checkpoint does not fit this run ({exc.__class__.__name__}: {exc})"
                                  ) from None
        if epoch > limit:
            raise NeurotrainError("checkpoint", f"it is at epoch {epoch}, past epoch {limit} where this config stops")
        fresh = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict()),
                 copy.deepcopy(self.sched.state_dict()))
        try:
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
            self.sched.load_state_dict(ck["scheduler"])
            set_rng_state(ck["rng"], self.np_rng)
            self.state.update(ck["progress"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            self.model.load_state_dict(fresh[0])
            self.opt.load_state_dict(fresh[1])
            self.sched.load_state_dict(fresh[2])
            self.np_rng = seed_everything(self.cfg.seed)
            raise NeurotrainError("checkpoint", f"checkpoint does not fit this run ({exc.__class__.__name__}: {exc})"
                                  ) from None

    def _step(self) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.gradient_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.gradient_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self._grad_norms.append(float(norm))
        self.opt.step()
        after = getattr(self.task, "after_step", None)
        if after is not None:
            after()

    def train(self) -> dict:
        """Train to completion (or early stop), resuming from ``checkpoints/`` when they hold this
        run; returns the summary dict."""
        if self.ckpts.begin(self._restore) is not None:
            self.state["resumed_from"] = self.state["epoch"]
            log.info("Resuming at epoch %d", self.state["epoch"])
        return self._run()

    def _run(self) -> dict:
        cfg, task, model, out, state = self.cfg, self.task, self.model, self.out, self.state
        opt, sched = self.opt, self.sched
        sign = 1.0 if cfg.monitor_mode == "max" else -1.0
        label = cfg.monitor_label or cfg.monitor

        stop_reason = "max_epochs"
        t_start = time.perf_counter() - state["elapsed"]
        bar = _EpochBar(total=cfg.max_epochs, initial=state["epoch"], dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs "
                              "[{elapsed}<{remaining}, {rate_fmt}] {metrics}")
        with SignalGuard() as guard:
            try:
                while state["epoch"] < cfg.max_epochs:
                    if state["bad_epochs"] >= cfg.patience:  # a resumed run that had already stopped
                        stop_reason = "early_stopping"
                        break
                    epoch = state["epoch"] + 1
                    t0 = time.perf_counter()
                    model.train()
                    self._grad_norms = []
                    losses = task.train_epoch(self.np_rng, self._step)
                    model.eval()
                    with torch.no_grad():
                        val = task.evaluate()
                    lr = opt.param_groups[0]["lr"]  # the rate this epoch trained with
                    if cfg.scheduler in ("cosine", "constant"):
                        sched.step()
                    else:
                        sched.step(val["val_loss"])
                    extras = getattr(task, "epoch_extras", None)
                    row = {"epoch": epoch, **losses, **val, "learning_rate": lr,
                           "grad_norm": float(np.mean(self._grad_norms)) if self._grad_norms else float("nan"),
                           "grad_norm_max": float(np.max(self._grad_norms)) if self._grad_norms else float("nan"),
                           **(extras() if extras is not None else {}), "epoch_time": time.perf_counter() - t0}
                    if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
                        raise FloatingPointError(f"loss diverged at epoch {epoch}: {row}")
                    score = sign * val[cfg.monitor]
                    if score > state["best_score"]:
                        state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                                     best_model={k: v.detach().clone() for k, v in model.state_dict().items()},
                                     best_metrics=dict(val))
                    else:
                        state["bad_epochs"] += 1
                    if epoch % cfg.detail_every == 0:
                        with torch.no_grad():
                            row.update(task.detail())
                    state["history"].append(row)
                    state["epoch"] = epoch
                    state["elapsed"] = time.perf_counter() - t_start
                    bar.set_description_str(f"Epoch {epoch}/{cfg.max_epochs}")
                    bar.metrics = (f"train_loss={row['train_loss']:.3f} {label}={val.get(cfg.monitor, float('nan')):.3f} lr={lr:.1e}")
                    bar.update(1)
                    if epoch % cfg.log_every == 0:
                        _say(f"Epoch {epoch} | train_loss: {row['train_loss']:.3f} | {label}: {val.get(cfg.monitor, float('nan')):.3f} | lr: {lr:.1e} | time: {row['epoch_time']:.1f}s")
                    saved = None
                    if epoch % cfg.checkpoint_every == 0:
                        saved = self.ckpts.save(self.full_state(), index=epoch)
                        save_json(out / "training_log.json", {"history": state["history"], "summary": {"in_progress": True}})
                    if epoch % cfg.detail_every == 0:
                        lines = [f"=== Epoch {epoch} Detailed Report ==="] + ["  " + s for s in task.format_detail(row)]
                        if saved is not None:
                            lines.append(f"  Saved checkpoint: checkpoints/{saved.name}")
                        _say("\n".join(lines))
                    if state["bad_epochs"] >= cfg.patience:
                        stop_reason = "early_stopping"
                        break
                    if guard.signum is not None:
                        raise Interrupted(guard.signum)
            except (Interrupted, KeyboardInterrupt):
                bar.close()
                self.ckpts.save(self.full_state())
                log.warning("Interrupted at epoch %d; state saved to %s. Rerun the same target to resume.",
                            state["epoch"], self.ckpts.last)
                raise
        bar.close()

        total_time = time.perf_counter() - t_start
        history = state["history"]
        final_metrics = history[-1]
        summary = {
            "total_epochs": state["epoch"], "max_epochs": cfg.max_epochs, "stop_reason": stop_reason,
            "patience": cfg.patience, "best_epoch": state["best_epoch"], "monitor": cfg.monitor,
            "best_" + cfg.monitor: state["best_metrics"].get(cfg.monitor),
            "final_" + cfg.monitor: final_metrics.get(cfg.monitor),
            "training_time_s": total_time, "resumed_from_epoch": state["resumed_from"],
        }
        common = {"model_config": task.model_config, "config": self.config_record, "fingerprint": self.fp}
        save_checkpoint(out / "model_final.pt", {"model": model.state_dict(), "epoch": state["epoch"],
                                                  "metrics": {k: v for k, v in final_metrics.items() if isinstance(v, float)}, **common})
        save_checkpoint(out / "model_best.pt", {"model": state["best_model"], "epoch": state["best_epoch"],
                                                 "metrics": state["best_metrics"], **common})
        save_json(out / "training_log.json", {"history": history, "summary": summary})
        save_json(out / "config.json", {**self.run_record, "config": self.config_record, "fingerprint": self.fp})
        self.ckpts.finish()

        banner = "=" * 80
        early = f" (early stopped at patience={cfg.patience})" if stop_reason == "early_stopping" else ""
        _say("\n".join([
            banner, "TRAINING COMPLETE", banner,
            f"Total epochs: {state['epoch']}{early}",
            f"Best {cfg.monitor_name}: {state['best_metrics'].get(cfg.monitor, float('nan')):.4f} (epoch {state['best_epoch']})",
            f"Final {cfg.monitor_name}: {final_metrics.get(cfg.monitor, float('nan')):.4f}",
            f"Training time: {_fmt_duration(total_time)}",
            "", f"Files saved to: {out.parent}/", "See training_report.md for full summary.", banner]))
        return summary


def train(task: TorchTask, cfg: LoopConfig, out_dir: str | Path, config_record: dict, data_sha: str,
          run_record: dict | None = None) -> dict:
    """Train ``task.model`` to completion (or early stop) and write the files listed in the
    module docstring; ``run_record`` goes into ``config.json``.

    Resumes from ``checkpoints/last.pt`` (or, if that is unreadable, the newest
    ``model_epoch{N}.pt``) when it holds a run with the same fingerprint; otherwise starts
    fresh and removes the stale checkpoints. Returns the summary dict.
    """
    return Trainer(task, cfg, out_dir, config_record, data_sha, run_record).train()
