"""The one training loop for torch systems.

A system supplies a *task* object (see :class:`TorchTask`); this loop owns the optimizer
(Adam), the ReduceLROnPlateau scheduler, gradient clipping, early stopping, checkpoints
(best, final, every N epochs), resume after an interruption, SIGINT/SIGTERM handling, the
per-epoch log and the console output.

Files under ``out_dir`` (``results/<system>/model``)::

    model_best.pt, model_final.pt   declared outputs: {"model", "model_config", "epoch", ...}
    training_log.json               {"history": [per-epoch dicts], "summary": {...}}; rewritten at
                                    every checkpoint while training (summary {"in_progress": true})
    config.json                     the system's config, versions, device, data fingerprint
    checkpoints/model_epoch{N}.pt   full training state every ``checkpoint_every`` epochs
    checkpoints/last.pt             resume state (undeclared, so Snakemake never deletes it)
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..errors import Interrupted, NeurotrainError
from ..io import save_json
from .checkpoint import (SignalGuard, fingerprint, load_checkpoint, rng_state, save_checkpoint, seed_everything,
                         set_rng_state)

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


@dataclass
class LoopConfig:
    max_epochs: int
    patience: int
    learning_rate: float
    lr_factor: float
    lr_patience: int
    min_lr: float
    gradient_clip: float
    seed: int
    checkpoint_every: int = 100
    log_every: int = 10
    detail_every: int = 100
    monitor: str = "val_correlation"
    monitor_mode: str = "max"


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


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


def _resume_candidates(ckpt_dir: Path) -> list[Path]:
    """``last.pt`` first, then the periodic checkpoints, newest first."""
    periodic = sorted(ckpt_dir.glob("model_epoch*.pt"), key=lambda p: int(p.stem.removeprefix("model_epoch")),
                      reverse=True)
    return ([ckpt_dir / "last.pt"] if (ckpt_dir / "last.pt").is_file() else []) + periodic


def train(task: TorchTask, cfg: LoopConfig, out_dir: str | Path, config_record: dict, data_sha: str,
          run_record: dict | None = None) -> dict:
    """Train ``task.model`` to completion (or early stop) and write the files listed in the
    module docstring; ``run_record`` goes into ``config.json``.

    Resumes from ``checkpoints/last.pt`` (or, if that is unreadable, the newest
    ``model_epoch{N}.pt``) when it holds a run with the same fingerprint; otherwise starts
    fresh and removes the stale checkpoints. Returns the summary dict.
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.pt"
    for name in OUTPUTS:  # never leave a previous run's outputs beside this run's
        (out / name).unlink(missing_ok=True)
    np_rng = seed_everything(cfg.seed)
    model = task.model
    fp = fingerprint(config_record, data_sha, model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor,
                                                       patience=cfg.lr_patience, min_lr=cfg.min_lr)
    sign = 1.0 if cfg.monitor_mode == "max" else -1.0
    fresh_model = {k: v.clone() for k, v in model.state_dict().items()}
    fresh_opt = copy.deepcopy(opt.state_dict())
    fresh_sched = copy.deepcopy(sched.state_dict())
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "best_model": None, "best_metrics": {},
             "bad_epochs": 0, "history": [], "elapsed": 0.0, "resumed_from": None}

    for cand in _resume_candidates(ckpt_dir) if ckpt_dir.is_dir() else []:
        try:
            ck = load_checkpoint(cand)
            if ck.get("fingerprint") != fp:
                log.warning("Not resuming from %s: it belongs to another config, dataset or model", cand)
                break
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            set_rng_state(ck["rng"], np_rng)
            state.update(ck["loop"])
        except (NeurotrainError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            log.warning("Cannot resume from %s (%s); trying an older checkpoint", cand, exc)
            model.load_state_dict(fresh_model)
            opt.load_state_dict(fresh_opt)
            sched.load_state_dict(fresh_sched)
            np_rng = seed_everything(cfg.seed)
            continue
        state["resumed_from"] = state["epoch"]
        log.info("Resuming from %s at epoch %d", cand, state["epoch"])
        break
    if state["resumed_from"] is None and ckpt_dir.exists():
        stale = sorted(p.name for p in ckpt_dir.iterdir())
        if stale:
            log.warning("Starting fresh: removing stale checkpoints %s", ", ".join(stale))
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    def full_state() -> dict:
        return {"format": "neurotrain-train-state-v1", "fingerprint": fp, "model": model.state_dict(),
                "model_config": task.model_config, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rng_state(np_rng), "loop": state, "config": config_record}

    def step():
        if cfg.gradient_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.gradient_clip)
        opt.step()

    stop_reason = "max_epochs"
    t_start = time.perf_counter() - state["elapsed"]
    bar = _EpochBar(total=cfg.max_epochs, initial=state["epoch"], dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}] {metrics}")
    with SignalGuard() as guard:
        try:
            while state["epoch"] < cfg.max_epochs:
                epoch = state["epoch"] + 1
                t0 = time.perf_counter()
                model.train()
                losses = task.train_epoch(np_rng, step)
                model.eval()
                with torch.no_grad():
                    val = task.evaluate()
                lr = opt.param_groups[0]["lr"]  # the rate this epoch trained with
                sched.step(val["val_loss"])
                row = {"epoch": epoch, **losses, **val, "learning_rate": lr, "epoch_time": time.perf_counter() - t0}
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
                bar.metrics = (f"train_loss={row['train_loss']:.3f} val_corr={val.get('val_correlation', float('nan')):.3f} lr={lr:.1e}")
                bar.update(1)
                if epoch % cfg.log_every == 0:
                    _say(f"Epoch {epoch} | train_loss: {row['train_loss']:.3f} | val_corr: {val.get('val_correlation', float('nan')):.3f} | lr: {lr:.1e} | time: {row['epoch_time']:.1f}s")
                saved = None
                if epoch % cfg.checkpoint_every == 0:
                    saved = ckpt_dir / f"model_epoch{epoch}.pt"
                    full = full_state()
                    save_checkpoint(saved, full)
                    save_checkpoint(last, full)
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
        except Interrupted:
            bar.close()
            save_checkpoint(last, full_state())
            log.warning("Interrupted at epoch %d; state saved to %s. Rerun the same target to resume.", state["epoch"], last)
            raise
        except KeyboardInterrupt:
            bar.close()
            save_checkpoint(last, full_state())
            log.warning("Interrupted at epoch %d; state saved to %s. Rerun the same target to resume.", state["epoch"], last)
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
    common = {"model_config": task.model_config, "config": config_record, "fingerprint": fp}
    save_checkpoint(out / "model_final.pt", {"model": model.state_dict(), "epoch": state["epoch"],
                                              "metrics": {k: v for k, v in final_metrics.items() if isinstance(v, float)}, **common})
    save_checkpoint(out / "model_best.pt", {"model": state["best_model"], "epoch": state["best_epoch"],
                                             "metrics": state["best_metrics"], **common})
    save_json(out / "training_log.json", {"history": history, "summary": summary})
    save_json(out / "config.json", {**(run_record or {}), "config": config_record, "fingerprint": fp})
    last.unlink(missing_ok=True)

    banner = "=" * 80
    early = f" (early stopped at patience={cfg.patience})" if stop_reason == "early_stopping" else ""
    _say("\n".join([
        banner, "TRAINING COMPLETE", banner,
        f"Total epochs: {state['epoch']}{early}",
        f"Best validation correlation: {state['best_metrics'].get(cfg.monitor, float('nan')):.4f} (epoch {state['best_epoch']})",
        f"Final validation correlation: {final_metrics.get(cfg.monitor, float('nan')):.4f}",
        f"Training time: {_fmt_duration(total_time)}",
        "", f"Files saved to: {out.parent}/", "See training_report.md for full summary.", banner]))
    return summary
