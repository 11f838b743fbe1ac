"""The one training loop for JAX systems: phases of jitted optax steps over parameter pytrees.

A system supplies a *task* (see :class:`JaxTask`) and a list of :class:`Phase`; each phase
trains a subset of the top-level parameter groups (the rest frozen) on its own loss weights
with ``optax.chain(clip_by_global_norm(clip), adam(schedule))``, where the schedule is a
linear warm-up then cosine decay (or constant) over the phase's steps. One optimizer step
averages the gradients of ``accumulate`` micro-batches (unrolled inside the jitted step).

With ``LoopConfig.ema_decay`` d > 0 the loop also keeps an exponential moving average of the
trainable parameters, ``ema <- d ema + (1 - d) params`` after every optimizer step, restarted
from the parameters at each phase's start (Polyak & Juditsky 1992; the averaged weights that
optax's ``ema`` and timm's ``ModelEmaV2`` keep). Validation, ``model_best`` and ``model_final``
then use the averaged weights; training itself continues on the raw ones, which are also what
the next phase starts from. An average over about 1 / (1 - d) steps smooths the step-to-step
noise of small batches of fresh examples out of the weights that are evaluated.

Files under ``out_dir`` (``results/<system>/<run>/seed<k>/model``)::

    model_best.npz, model_final.npz   parameters (one array per pytree path) + JSON metadata
    training_log.json                 {"history": [per-epoch rows], "summary": {...}}
    config.json                       the config, versions, data fingerprint
    checkpoints/phase{N}.npz          the parameters at the end of phase N
    checkpoints/last.npz              the full state after the last finished epoch (parameters,
                                      optimizer state, phase, epoch, numpy generator, history) in
                                      the layout of runstate.CheckpointDir: a rerun resumes from
                                      it; removed when training finishes

Every ``.npz`` is written atomically and read with ``allow_pickle=False``: metadata is a JSON
string stored as a byte array, never a pickle.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from neurotrain.errors import Interrupted, NeurotrainError
from neurotrain.io import atomic_path, save_json
from neurotrain.training.runstate import CheckpointDir, SignalGuard, fingerprint

log = logging.getLogger("neurotrain.train")
META = "__meta__"
STATE_ARRAYS = ("model", "optimizer", "best", "ema")


# --------------------------------------------------------------------------- pytree files
def flatten(tree) -> dict[str, np.ndarray]:
    """``{path: array}`` of a pytree (paths as ``jax.tree_util.keystr``)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def unflatten(like, arrays: dict[str, np.ndarray], where: str = "checkpoint"):
    """The pytree shaped like ``like`` with leaves from ``arrays`` (names and shapes checked)."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for p, ref in paths:
        k = jax.tree_util.keystr(p)
        if k not in arrays:
            raise NeurotrainError(where, f"has no array {k}")
        a = arrays[k]
        if a.shape != np.shape(ref):
            raise NeurotrainError(where, f"array {k} has shape {a.shape}, expected {np.shape(ref)}")
        leaves.append(jnp.asarray(a, dtype=jnp.asarray(ref).dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Arrays plus JSON metadata in one ``.npz``, written atomically."""
    payload = dict(arrays)
    payload[META] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, metadata) of a file written by :func:`save_npz`; no pickles."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop(META).tobytes().decode())
    except Exception as exc:
        raise NeurotrainError(path, f"corrupt or unreadable checkpoint ({exc.__class__.__name__})") from None
    return arrays, meta


def save_state_npz(path: str | Path, state: dict) -> None:
    """A resume state as one ``.npz``: the array groups (``model``, ``optimizer``, ``best``:
    ``{pytree path: array}``) as ``<group>/<path>`` arrays, everything else as JSON metadata."""
    arrays = {f"{g}/{k}": v for g in STATE_ARRAYS for k, v in state.get(g, {}).items()}
    save_npz(path, arrays, {k: v for k, v in state.items() if k not in STATE_ARRAYS})


def load_state_npz(path: str | Path) -> dict:
    """The state written by :func:`save_state_npz` (no pickles)."""
    arrays, meta = load_npz(path)
    state = dict(meta)
    for g in STATE_ARRAYS:
        state[g] = {k[len(g) + 1:]: v for k, v in arrays.items() if k.startswith(g + "/")}
    return state


# --------------------------------------------------------------------------- phases and tasks
@dataclass
class Phase:
    name: str
    title: str
    trainable: tuple[str, ...]
    weights: dict  # loss weights passed to the task's loss
    epochs: int
    learning_rate: float
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    monitor: str | None = None  # validation key of the best model (lower is better); None: not monitored


class JaxTask(Protocol):
    def init_params(self, key) -> dict: ...

    def steps_per_epoch(self, phase: Phase) -> int: ...

    def batches(self, phase: Phase, np_rng: np.random.Generator, step0: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (x, y), each shaped [accumulate, micro_batch, ...]."""

    def loss(self, params, x, y, weights: dict): ...

    def evaluate(self, params, phase: Phase) -> dict: ...


@dataclass
class LoopConfig:
    seed: int
    accumulate: int
    gradient_clip: float
    checkpoint_every: int = 1
    log_every: int = 1
    ema_decay: float = 0.0  # > 0: evaluate and save an exponential moving average of the weights
    extra_fingerprint: dict = field(default_factory=dict)


def make_optimizer(phase: Phase, total_steps: int, clip: float):
    if phase.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0 if phase.warmup_steps else phase.learning_rate,
                                                phase.learning_rate, max(phase.warmup_steps, 0),
                                                max(total_steps, phase.warmup_steps + 1), phase.learning_rate * 0.01)
    else:
        lr = (optax.linear_schedule(0.0, phase.learning_rate, phase.warmup_steps) if phase.warmup_steps
              else optax.constant_schedule(phase.learning_rate))
        if phase.warmup_steps:
            lr = optax.join_schedules([lr, optax.constant_schedule(phase.learning_rate)], [phase.warmup_steps])
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr)), lr


def make_step(task: JaxTask, phase: Phase, opt, ema_decay: float = 0.0) -> Callable:
    """The jitted update ``(train, frozen, opt_state, xs, ys, ema) -> (train, opt_state, aux,
    ema)``: gradients of the trainable groups averaged over the micro-batches; with
    ``ema_decay`` d > 0, ``ema <- d ema + (1 - d) train`` after the update (else ``ema`` is
    passed through)."""
    weights = dict(phase.weights)

    def micro_loss(train, frozen, x, y):
        return task.loss({**frozen, **train}, x, y, weights)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def step(train, frozen, opt_state, xs, ys, ema):
        # micro-batches unrolled (a lax.scan around the CPC loss's scans runs several times slower on CPU)
        n = xs.shape[0]
        g = aux = None
        for i in range(n):
            (_, a), gi = grad_fn(train, frozen, xs[i], ys[i])
            g = gi if g is None else jax.tree_util.tree_map(jnp.add, g, gi)
            aux = a if aux is None else jax.tree_util.tree_map(jnp.add, aux, a)
        g = jax.tree_util.tree_map(lambda v: v / n, g)
        aux = jax.tree_util.tree_map(lambda v: v / n, aux)
        aux["grad_norm"] = optax.tree.norm(g)
        updates, opt_state = opt.update(g, opt_state, train)
        train = optax.apply_updates(train, updates)
        if ema_decay:
            ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, train)
        return train, opt_state, aux, ema

    return jax.jit(step)


def _say(text: str) -> None:
    tqdm.write(text, file=sys.stderr)


def _np_rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


class PhaseTrainer:
    """Runs the phases in order, resuming from ``checkpoints/last.npz`` of the same run."""

    def __init__(self, task: JaxTask, phases: list[Phase], cfg: LoopConfig, out_dir: str | Path,
                 config_record: dict, data_sha: str, run_record: dict | None = None):
        self.task, self.phases, self.cfg, self.out = task, phases, cfg, Path(out_dir)
        self.config_record, self.run_record = config_record, run_record or {}
        self.params = task.init_params(jax.random.PRNGKey(cfg.seed))
        shapes = {k: np.zeros(np.shape(v)) for k, v in flatten(self.params).items()}
        self.fp = fingerprint({**config_record, **cfg.extra_fingerprint}, data_sha, shapes)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.state = {"phase": 0, "epoch": 0, "global_step": 0, "history": [], "elapsed": 0.0, "best": None,
                      "best_epoch": None, "resumed_from": None, "phase_steps": {}}
        self.best_params = None
        self.opt_state = None
        self._pending_opt = None
        self.ema = None  # the trainable groups' moving average in the current phase (ema_decay > 0)
        self._pending_ema = None
        self.ckpts = CheckpointDir(self.out, self.fp, "npz", save_state_npz, load_state_npz,
                                   outputs=("model_best.npz", "model_final.npz", "training_log.json", "config.json"))

    # -- checkpoints (runstate.CheckpointDir: the one resume mechanism of every loop)
    def _state(self) -> dict:
        return {"progress": self.state, "model": flatten(self.params),
                "optimizer": flatten(self.opt_state) if self.opt_state is not None else {},
                "best": flatten(self.best_params) if self.best_params is not None else {},
                "ema": flatten(self.ema) if self.ema is not None else {},
                "rng": _np_rng_state(self.np_rng)}

    def _restore(self, st: dict) -> None:
        try:
            params = unflatten(self.params, st["model"], "checkpoint")
            best = unflatten(self.params, st["best"], "checkpoint") if st["best"] else None
            progress, opt, ema = st["progress"], st["optimizer"], st.get("ema") or None
            self.np_rng.bit_generator.state = st["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise NeurotrainError("checkpoint", f"checkpoint does not fit this run ({exc.__class__.__name__}: {exc})"
                                  ) from None
        self.params, self.best_params, self.state, self._pending_opt = params, best, progress, opt
        self._pending_ema = ema

    # -- the run
    def train(self) -> dict:
        self._pending_opt = self._pending_ema = None
        if self.ckpts.begin(self._restore) is not None:
            self.state["resumed_from"] = {"phase": self.state["phase"], "epoch": self.state["epoch"]}
            log.info("Resuming at phase %d, epoch %d", self.state["phase"] + 1, self.state["epoch"])
        ckpt_dir = self.ckpts.dir
        t_start = time.perf_counter() - self.state["elapsed"]
        with SignalGuard() as guard:
            try:
                while self.state["phase"] < len(self.phases):
                    phase = self.phases[self.state["phase"]]
                    if phase.epochs == 0:  # nothing to train: the next phase starts from these parameters
                        _say(f"\n=== Phase {self.state['phase'] + 1}: {phase.title}: 0 epochs, skipped ===")
                        self.state.update(phase=self.state["phase"] + 1, epoch=0)
                        continue
                    self._run_phase(phase, ckpt_dir, guard, t_start)
            except (Interrupted, KeyboardInterrupt):
                self.state["elapsed"] = time.perf_counter() - t_start
                log.warning("Interrupted in phase %d at epoch %d; state saved to %s. Rerun the same target to resume.",
                            self.state["phase"] + 1, self.state["epoch"], self.ckpts.last)
                raise
        return self._finish(time.perf_counter() - t_start, ckpt_dir)

    def _run_phase(self, phase: Phase, ckpt_dir: Path, guard: SignalGuard, t_start: float) -> None:
        task, st = self.task, self.state
        steps = task.steps_per_epoch(phase)
        opt, lr_fn = make_optimizer(phase, steps * phase.epochs, self.cfg.gradient_clip)
        train = {k: self.params[k] for k in phase.trainable}
        frozen = {k: v for k, v in self.params.items() if k not in phase.trainable}
        opt_state = opt.init(train)
        if st["epoch"] > 0 and self._pending_opt:
            opt_state = unflatten(opt_state, self._pending_opt, "checkpoints/last.npz")
        self._pending_opt = None
        decay = self.cfg.ema_decay
        ema = train if decay else None
        if decay and st["epoch"] > 0 and self._pending_ema:
            ema = unflatten(train, self._pending_ema, "checkpoints/last.npz")
        self._pending_ema = None
        step = make_step(task, phase, opt, decay)
        if st["epoch"] == 0:
            _say(f"\n=== Phase {st['phase'] + 1}: {phase.title} ({phase.epochs} epochs x {steps} steps; "
                 f"training {', '.join(phase.trainable)}) ===")
        bar = tqdm(total=phase.epochs, initial=st["epoch"], desc=f"Phase {st['phase'] + 1}", dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
        while st["epoch"] < phase.epochs:
            epoch = st["epoch"] + 1
            t0 = time.perf_counter()
            sums, n = {}, 0
            phase_step = st["epoch"] * steps
            for xs, ys in task.batches(phase, self.np_rng, st["global_step"]):
                train, opt_state, aux, ema = step(train, frozen, opt_state, jnp.asarray(xs), jnp.asarray(ys), ema)
                for k, v in aux.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
                st["global_step"] += 1
                phase_step += 1
                if guard.signum is not None:  # the last epoch-end checkpoint stays the resume point
                    bar.close()
                    raise Interrupted(guard.signum)
            self.params = {**frozen, **train}
            self.opt_state = opt_state
            self.ema = ema
            evaluated = {**frozen, **ema} if decay else self.params  # what is validated and saved
            row = {"phase": st["phase"] + 1, "phase_name": phase.name, "epoch": epoch,
                   "global_step": st["global_step"], "learning_rate": float(lr_fn(phase_step - 1)),
                   **{f"train_{k}": v / max(n, 1) for k, v in sums.items()}}
            row.update({f"val_{k}": v for k, v in task.evaluate(evaluated, phase).items()})
            row["epoch_time"] = time.perf_counter() - t0
            if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
                raise FloatingPointError(f"loss diverged in phase {row['phase']} at epoch {epoch}: {row}")
            if phase.monitor is not None:
                score = row[f"val_{phase.monitor}"]
                if st["best"] is None or score < st["best"]:
                    st.update(best=score, best_epoch={"phase": row["phase"], "epoch": epoch})
                    self.best_params = evaluated
            st["history"].append(row)
            st["epoch"] = epoch
            st["elapsed"] = time.perf_counter() - t_start
            bar.update(1)
            if epoch % self.cfg.log_every == 0 or epoch == phase.epochs:
                extra = "".join(f" | {k}: {row[k]:.4f}" for k in ("val_classification_loss", "val_accuracy", "val_auc",
                                                                    "val_cpc_loss", "val_cpc_accuracy") if k in row)
                _say(f"Epoch {epoch}/{phase.epochs} | Loss: {row.get('train_loss', float('nan')):.4f}{extra} "
                     f"| lr: {row['learning_rate']:.1e} | time: {row['epoch_time']:.1f}s")
            if epoch == phase.epochs:
                save_npz(ckpt_dir / f"phase{row['phase']}.npz", flatten(self.params),
                         {"phase": phase.name, "epoch": epoch, "fingerprint": self.fp})
                st["phase"] += 1
                st["epoch"] = 0
                self.opt_state = None
            if epoch % self.cfg.checkpoint_every == 0 or st["epoch"] == 0:
                self.ckpts.save(self._state())
                save_json(self.out / "training_log.json", {"history": st["history"], "summary": {"in_progress": True}})
            if guard.signum is not None:
                bar.close()
                self.ckpts.save(self._state())
                raise Interrupted(guard.signum)
            if st["epoch"] == 0:  # this phase is done
                break
        bar.close()

    def _final_params(self):
        """The parameters after the last epoch as evaluated: the raw ones, or with ``ema_decay``
        the last trained phase's moving average in place of its trainable groups."""
        if not self.cfg.ema_decay:
            return self.params
        ema = self.ema
        if ema is None and self._pending_ema:  # resumed after the last epoch, before the files were written
            trained = [p for p in self.phases if p.epochs > 0]
            like = {k: self.params[k] for k in trained[-1].trainable} if trained else {}
            ema = unflatten(like, self._pending_ema, "checkpoints/last.npz")
        return {**self.params, **(ema or {})}

    def _finish(self, total_time: float, ckpt_dir: Path) -> dict:
        st, out = self.state, self.out
        history = st["history"]
        final = history[-1] if history else {}
        meta = {"fingerprint": self.fp, "config": self.config_record}
        last = self._final_params()
        save_npz(out / "model_final.npz", flatten(last), {**meta, "kind": "final", "metrics": final})
        best = self.best_params if self.best_params is not None else last
        save_npz(out / "model_best.npz", flatten(best), {**meta, "kind": "best", "best_epoch": st["best_epoch"]})
        summary = {"phases": [p.name for p in self.phases], "epochs_per_phase": [p.epochs for p in self.phases],
                   "total_epochs": len(history), "global_steps": st["global_step"], "best_epoch": st["best_epoch"],
                   "monitor": next((p.monitor for p in reversed(self.phases) if p.monitor), None),
                   "best_monitor": st["best"], "final_loss": final.get("train_loss"), "training_time_s": total_time,
                   "resumed_from": st["resumed_from"]}
        save_json(out / "training_log.json", {"history": history, "summary": summary})
        save_json(out / "config.json", {**self.run_record, "config": self.config_record, "fingerprint": self.fp})
        self.ckpts.finish()
        banner = "=" * 80
        _say("\n".join([banner, "TRAINING COMPLETE", banner,
                        f"Final training loss: {final.get('train_loss', float('nan')):.4f}",
                        f"Best validation {self.phases[-1].monitor}: {st['best']} ({st['best_epoch']})",
                        f"Training time: {total_time / 60:.1f} min", f"Files saved to: {out.parent}/", banner]))
        return summary
