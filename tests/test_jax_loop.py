"""The JAX phase loop's weight average (``LoopConfig.ema_decay``), on a small task whose every
optimizer step the test replays on its own: what is validated and saved is the moving average
of the raw iterates, training itself is unchanged, and an interrupted run resumes to the same
files."""

import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from neurotrain.errors import Interrupted
from neurotrain.training.jax_loop import LoopConfig, Phase, PhaseTrainer, load_npz, make_optimizer, make_step

STEPS = 4


class Quadratic:
    """Loss ``|w - mean(x)|^2 + weight_v |v|^2`` on batches of Gaussian draws (fresh every step)."""

    def __init__(self, interrupt_at=None):
        self.seen = []  # the parameters every validation received
        self.interrupt_at = interrupt_at

    def init_params(self, key):
        return {"w": jnp.zeros(3, jnp.float32), "v": jnp.ones(2, jnp.float32)}

    def steps_per_epoch(self, phase):
        return STEPS

    def batches(self, phase, rng, step0):
        for _ in range(STEPS):
            yield rng.normal(1.0, 1.0, (1, 5, 3)).astype(np.float32), np.zeros((1, 5), np.int32)

    def loss(self, params, x, y, weights):
        total = jnp.sum((params["w"] - x.mean(0)) ** 2) + weights["v"] * jnp.sum(params["v"] ** 2)
        return total, {"loss": total}

    def evaluate(self, params, phase):
        self.seen.append({k: np.asarray(v) for k, v in params.items()})
        if self.interrupt_at is not None and len(self.seen) == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop finishes this epoch, saves and stops
        return {"dist": float(jnp.sum((params["w"] - 1.0) ** 2))}


PHASES = [Phase("a", "w only", ("w",), {"v": 0.0}, 2, 0.1, "constant", 0, "dist"),
          Phase("b", "w and v", ("w", "v"), {"v": 1.0}, 3, 0.05, "cosine", 1, "dist")]


def _train(out, decay, task=None):
    task = task or Quadratic()
    trainer = PhaseTrainer(task, PHASES, LoopConfig(seed=3, accumulate=1, gradient_clip=10.0, ema_decay=decay),
                           out, {"toy": True}, "sha")
    return trainer.train(), task


def _replay(decay):
    """Every epoch's (raw parameters, their average) by the formula, stepping as the loop does."""
    task, rng = Quadratic(), np.random.default_rng(3)
    params = {k: np.asarray(v) for k, v in task.init_params(None).items()}
    epochs = []
    for phase in PHASES:
        opt, _ = make_optimizer(phase, STEPS * phase.epochs, 10.0)
        step = make_step(task, phase, opt)  # no average inside: the test keeps its own
        train = {k: jnp.asarray(params[k]) for k in phase.trainable}
        frozen = {k: jnp.asarray(v) for k, v in params.items() if k not in phase.trainable}
        state = opt.init(train)
        avg = {k: np.asarray(v, np.float64) for k, v in train.items()}
        for _ in range(phase.epochs):
            for xs, ys in task.batches(phase, rng, 0):
                train, state, _, _ = step(train, frozen, state, jnp.asarray(xs), jnp.asarray(ys), None)
                avg = {k: decay * avg[k] + (1 - decay) * np.asarray(train[k], np.float64) for k in avg}
            params = {**{k: np.asarray(v) for k, v in frozen.items()}, **{k: np.asarray(v) for k, v in train.items()}}
            epochs.append((params, {**params, **avg}))
    return epochs


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_weight_average_is_validated_and_saved_and_training_is_unchanged(tmp_path):
    decay = 0.6
    summary, task = _train(tmp_path / "ema", decay)
    replay = _replay(decay)
    assert len(task.seen) == len(replay) == 5
    for i, (seen, (raw, avg)) in enumerate(zip(task.seen, replay)):
        for k in seen:  # validation got the average, not the raw iterate
            np.testing.assert_allclose(seen[k], avg[k], rtol=1e-5, atol=1e-6)
        assert not np.allclose(seen["w"], raw["w"], rtol=1e-3)
        if i < 2:  # phase a: v is frozen, and stays as it was
            assert np.array_equal(seen["v"], np.ones(2, np.float32))
    final, _ = load_npz(tmp_path / "ema" / "model_final.npz")
    np.testing.assert_allclose(final["['w']"], replay[-1][1]["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final["['v']"], replay[-1][1]["v"], rtol=1e-5, atol=1e-6)
    best, _ = load_npz(tmp_path / "ema" / "model_best.npz")
    b = summary["best_epoch"]
    i = b["epoch"] - 1 + (0 if b["phase"] == 1 else PHASES[0].epochs)
    assert _same(best, {f"['{k}']": v for k, v in task.seen[i].items()})

    # the raw trajectory is the one trained without the average: the phase files are identical
    _train(tmp_path / "plain", 0.0)
    for n in (1, 2):
        assert _same(load_npz(tmp_path / "ema" / "checkpoints" / f"phase{n}.npz")[0],
                     load_npz(tmp_path / "plain" / "checkpoints" / f"phase{n}.npz")[0])
    plain, _ = load_npz(tmp_path / "plain" / "model_final.npz")
    np.testing.assert_allclose(plain["['w']"], replay[-1][0]["w"], rtol=1e-6)
    assert not np.allclose(plain["['w']"], final["['w']"])


@pytest.mark.parametrize("stop_at", [4, 5])  # mid phase b; after its last epoch, before the files
def test_an_interrupted_run_with_the_average_resumes_to_the_same_files(tmp_path, stop_at):
    _train(tmp_path / "full", 0.6)
    with pytest.raises(Interrupted):
        _train(tmp_path / "cut", 0.6, Quadratic(interrupt_at=stop_at))
    assert not (tmp_path / "cut" / "model_final.npz").exists()
    summary, _ = _train(tmp_path / "cut", 0.6)
    assert summary["resumed_from"] is not None
    for name in ("model_final.npz", "model_best.npz"):
        assert _same(load_npz(tmp_path / "full" / name)[0], load_npz(tmp_path / "cut" / name)[0]), name
