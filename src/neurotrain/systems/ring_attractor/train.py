"""Ring-attractor head-direction system: the training task, the ``train`` stage, and the seed's
Python API (``train_model_enhanced``, ``quick_train``, ``AdamCosineTrainer``,
``create_training_config``) for training from a notebook without Snakemake.

The network (``neurotrain.systems.ring_attractor.network.RingAttractorNetwork``) receives the angular
velocity of a head-direction trajectory and, while the landmark is visible, a bump of input at
the true direction. The loss is the circular tracking error of the population-vector readout,
``1 - cos(decoded - true)``, averaged over time steps after the first ``loss_skip`` seconds.
Training uses the one torch loop (``training.torch_loop``) with Adam (weight decay), cosine
annealing to ``min_lr``, early stopping on the validation loss, the seed's biological
constraints after every optimizer step, and the ring parameters logged every epoch.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from neurotrain.training import torch_numerics  # noqa: F401  (sets up MKL's vector math before any threaded call)
from neurotrain.systems.ring_attractor.network import RingAttractorNetwork

MODEL_KEYS = ("n_exc", "n_inh", "sigma_ee", "tau_e", "tau_i", "g_ee", "g_ei", "g_ie", "g_av", "noise_rate_e",
              "noise_rate_i", "noise_scale", "landmark_strength", "landmark_kappa", "tonic_e", "tonic_i", "max_rate",
              "weight_spread")
PARAM_NAMES = ("g_ee", "g_ei", "g_ie", "g_av", "noise_rate_e", "noise_rate_i")


def build_model(model_config: dict) -> RingAttractorNetwork:
    """The network of ``model_config`` (the ``MODEL_KEYS`` and ``dt``); random initial
    weights come from torch's global generator (seed it first)."""
    return RingAttractorNetwork(dt=model_config["dt"], **{k: model_config[k] for k in MODEL_KEYS})


def tracking_loss(decoded_vec: torch.Tensor, theta: torch.Tensor, skip: int) -> torch.Tensor:
    """Mean of 1 - cos(decoded - true) over [B, T >= skip]; ``decoded_vec`` is the population
    vector [B, T, 2] (cos, sin components), normalised here."""
    c, s = decoded_vec[..., 0], decoded_vec[..., 1]
    norm = torch.sqrt(c**2 + s**2 + 1e-8)
    cos_err = (c * torch.cos(theta) + s * torch.sin(theta)) / norm
    return (1.0 - cos_err[:, skip:]).mean()


def circular_error_deg(decoded: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.abs(torch.remainder(decoded - theta + math.pi, 2 * math.pi) - math.pi))


class RingTask:
    """What the torch loop needs: batches of training trajectories, validation, diagnostics."""

    def __init__(self, data: dict, cfg: dict, device: torch.device, model: RingAttractorNetwork | None = None):
        self.device = device
        self.dt = float(data["dt"])
        m = cfg["model"]
        if model is None:
            self.model_config = {"dt": self.dt, **{k: m[k] for k in MODEL_KEYS}}
            model = build_model(self.model_config)
        else:  # a user's network (the notebook API): its own constructor arguments
            self.model_config = dict(model.init_args)
        self.model = model.to(device)
        t = {k: torch.as_tensor(data[k], dtype=torch.float32, device=device) for k in ("omega", "theta", "light")}
        split = np.asarray(data["split"])
        self.train_idx, self.val_idx = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise ValueError(f"the data need training (split 0) and validation (split 1) trajectories; got "
                             f"{len(self.train_idx)} and {len(self.val_idx)}")
        self.omega, self.theta, self.light = t["omega"], t["theta"], t["light"]
        self.batch_size = cfg["training"]["batch_size"]
        self.skip = int(round(cfg["loss"]["loss_skip"] / self.dt))
        self.rate_penalty = cfg["loss"]["rate_penalty"]
        self.eval_seed = cfg["training"]["seed"] + 1
        self.drift_trials, self.drift_duration = cfg["training"]["drift_trials"], cfg["training"]["drift_duration"]
        if self.skip >= self.omega.shape[1]:
            raise ValueError(f"loss.loss_skip ({cfg['loss']['loss_skip']} s) is not shorter than a trajectory")

    def losses(self, idx: np.ndarray, generator: torch.Generator | None = None) -> dict:
        i = torch.as_tensor(idx, device=self.device)
        theta = self.theta[i]
        rates, _ = self.model(self.omega[i], theta, self.light[i], noise=True, generator=generator)
        track = tracking_loss(self.model.population_vector(rates), theta, self.skip)
        if self.rate_penalty > 0:
            rate = (rates**2).mean()
            total = track + self.rate_penalty * rate
        else:  # not computed: it would cost a pass over every rate, forward and backward
            rate, total = torch.zeros(()), track
        return {"L_track": track, "L_rate": rate, "total": total, "rates": rates}

    def train_epoch(self, np_rng: np.random.Generator, step) -> dict:
        order = np_rng.permutation(self.train_idx)
        bs = self.batch_size or len(order)
        sums = {"train_loss": 0.0, "L_track": 0.0, "L_rate": 0.0}
        n = 0
        for start in range(0, len(order), bs):
            L = self.losses(np.sort(order[start:start + bs]))
            self.model.zero_grad(set_to_none=True)
            L["total"].backward()
            step()
            sums["train_loss"] += float(L["total"].detach())
            sums["L_track"] += float(L["L_track"].detach())
            sums["L_rate"] += float(L["L_rate"].detach())
            n += 1
        return {k: v / n for k, v in sums.items()}

    def after_step(self) -> None:
        self.model.apply_constraints()

    def epoch_extras(self) -> dict:
        return self.model.ring_parameters()

    def evaluate(self) -> dict:
        g = torch.Generator(device=self.device).manual_seed(self.eval_seed)
        L = self.losses(self.val_idx, generator=g)
        i = torch.as_tensor(self.val_idx, device=self.device)
        decoded, _ = self.model.decode(L["rates"])
        err = circular_error_deg(decoded, self.theta[i])[:, self.skip:]
        return {"val_loss": float(L["L_track"]), "val_tracking_error_deg": float(err.median())}

    def drift(self, seed: int) -> float:
        """Mean absolute drift (deg/s) of the bump with no velocity and no landmark input,
        after a landmark cue of 0.2 s, over ``drift_trials`` trials with noise."""
        return float(drift_rate(self.model, self.drift_trials, self.drift_duration, seed, self.device).mean())

    def detail(self) -> dict:
        return {"drift_deg_per_s": self.drift(self.eval_seed + 1),
                "constraint_violations": sum(self.model.constraint_violations().values())}

    def format_detail(self, d: dict) -> list[str]:
        p = self.model.ring_parameters()
        return [f"gains: g_ee={p['g_ee']:.3f}, g_ei={p['g_ei']:.3f}, g_ie={p['g_ie']:.3f}, g_av={p['g_av']:.3f}",
                f"noise rates: E={p['noise_rate_e']:.2f} Hz, I={p['noise_rate_i']:.2f} Hz",
                f"val tracking error (median): {d['val_tracking_error_deg']:.2f} deg; drift without input: "
                f"{d['drift_deg_per_s']:.2f} deg/s; constraint violations: {d['constraint_violations']}"]


def drift_run(model: RingAttractorNetwork, n: int, duration: float, seed: int, device, cue: float = 0.2):
    """Trials with a landmark cue at random directions for ``cue`` s, then neither velocity nor
    landmark for ``duration`` s, with noise. Returns (rates [n, T, N], decoded [n, T],
    start directions [n], index of the first step without input)."""
    g = torch.Generator(device=device).manual_seed(seed)
    n_cue = max(1, int(round(cue / model.dt)))
    T = n_cue + int(round(duration / model.dt))
    start = (torch.rand(n, generator=g, device=device) * 2 - 1) * math.pi
    theta = start[:, None].expand(n, T)
    light = torch.zeros(n, T, device=device)
    light[:, :n_cue] = 1
    with torch.no_grad():
        rates, _ = model(torch.zeros(n, T, device=device), theta, light, noise=True, generator=g)
        decoded, _ = model.decode(rates)
    return rates, decoded, start, n_cue


def drift_rate(model: RingAttractorNetwork, n: int, duration: float, seed: int, device) -> np.ndarray:
    """Per-trial |net displacement| / time (deg/s) of the decoded direction after the cue."""
    from neurotrain.systems.ring_attractor.analyze import drift_deg_per_s  # numpy only: the analysis stage's measure

    _, decoded, _, n_cue = drift_run(model, n, duration, seed, device)
    return drift_deg_per_s(decoded.cpu().numpy(), n_cue, model.dt)


def flush_denormals() -> None:
    """Flush denormal floats to zero on CPU. Gradients carried back through a hundred steps
    decay into the denormal range, where BLAS runs about ten times slower; values below
    1e-38 contribute nothing to the weights."""
    torch.set_flush_denormal(True)


def loop_config(tc: dict):
    from neurotrain.training.torch_loop import LoopConfig

    return LoopConfig(max_epochs=tc["max_epochs"], patience=tc["patience"] if tc["early_stopping"] else tc["max_epochs"] + 1,
                      learning_rate=tc["learning_rate"], min_lr=tc["min_lr"], gradient_clip=tc["gradient_clip"],
                      seed=tc["seed"], checkpoint_every=tc["checkpoint_every"], log_every=tc["log_every"],
                      detail_every=tc["detail_every"], monitor="val_loss", monitor_mode="min", monitor_label="val_loss",
                      monitor_name="validation loss (1 - cos error)", scheduler="cosine",
                      weight_decay=tc["weight_decay"])


def run_training(cfg: dict, data_path: str, out_dir: str, threads: int = 0) -> dict:
    """Stage ``train``: fit the ring attractor to the processed trajectories."""
    from neurotrain.systems.ring_attractor.data import load_processed
    from neurotrain.errors import NeurotrainError
    from neurotrain.io import sha256_file
    from neurotrain.training.checkpoint import run_preamble
    from neurotrain.training.runstate import versions
    from neurotrain.training.torch_loop import train

    flush_denormals()
    data = load_processed(data_path)
    tc = cfg["training"]
    device = run_preamble("ring_attractor", tc, threads)  # the heterogeneous initial weights are seeded
    try:
        task = RingTask(data, cfg, device)
    except ValueError as exc:
        raise NeurotrainError("config key ring_attractor", str(exc)) from None
    data_sha = sha256_file(data_path)
    record = {k: cfg[k] for k in ("model", "loss", "training")}
    run_record = {"system": "ring_attractor", "model_config": task.model_config, "device": str(device),
                  "data": str(data_path), "data_sha256": data_sha, "n_train": len(task.train_idx),
                  "n_val": len(task.val_idx), "versions": versions(torch, np)}
    return train(task, loop_config(tc), Path(out_dir), record, data_sha, run_record)


# --------------------------------------------------------------------------- the seed's API
SEED_DEFAULTS = {"learning_rate": 1e-3, "max_epochs": 100, "min_lr": 1e-6, "weight_decay": 1e-4, "batch_size": 32,
                 "early_stopping": True, "patience": 20}
PRESETS = {
    "conservative": {"learning_rate": 5e-4, "max_epochs": 200, "weight_decay": 1e-3, "patience": 30, "batch_size": 16},
    "aggressive": {"learning_rate": 2e-3, "max_epochs": 50, "weight_decay": 1e-5, "patience": 10, "batch_size": 64},
}


def default_config() -> dict:
    """The ``ring_attractor`` config block with every schema default."""
    from neurotrain.config import system_defaults

    return system_defaults("ring_attractor")


def create_training_config(**overrides) -> dict:
    """A full ``ring_attractor`` config block: schema defaults, with the seed's training keys
    (``learning_rate``, ``max_epochs``, ``min_lr``, ``weight_decay``, ``batch_size``,
    ``early_stopping``, ``patience``, and the other ``training`` keys) overridden by name;
    ``save_dir`` and ``device`` are accepted too."""
    cfg = default_config()
    unknown = set(overrides) - set(cfg["training"]) - {"save_dir"}
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(cfg['training']))}, save_dir)")
    save_dir = overrides.pop("save_dir", None)
    cfg["training"].update(overrides)
    from neurotrain.config import validate_system

    cfg = validate_system("ring_attractor", cfg)
    cfg["save_dir"] = save_dir
    return cfg


def _default_data(cfg: dict) -> dict:
    from neurotrain.systems.ring_attractor.data import make_split, simulate_trajectories

    e = cfg["data"]["embedded"]
    tr = simulate_trajectories(e, np.random.default_rng(e["seed"]))
    tr["split"] = make_split(len(tr["omega"]), cfg["data"]["val_fraction"], cfg["data"]["test_fraction"],
                             np.random.default_rng(cfg["data"]["split_seed"]))
    tr["dt"] = e["dt"]
    return tr


class AdamCosineTrainer:
    """The seed's trainer: Adam + cosine annealing with the ring's biological constraints.

    ``trainer.train()`` returns the history (a dict of per-epoch lists); ``param_history``
    holds the ring parameters per epoch; ``save_checkpoint(epoch, path)`` and
    ``load_checkpoint(path)`` (returns the epoch to continue after) write and restore the full
    training state. Files go to ``config['save_dir']`` (a new temporary folder if None).
    """

    def __init__(self, model: RingAttractorNetwork, config: dict | None = None, data: dict | None = None):
        from neurotrain.training.torch_loop import Trainer, pick_device

        flush_denormals()
        self.config = config if config is not None else create_training_config()
        tc = self.config["training"]
        self.device = pick_device(tc["device"])
        self.data = data if data is not None else _default_data(self.config)
        if abs(float(self.data["dt"]) - model.dt) > 1e-9:
            raise ValueError(f"model.dt={model.dt} does not match the data's dt={self.data['dt']}")
        self.save_dir = Path(self.config.get("save_dir") or tempfile.mkdtemp(prefix="ring_attractor_"))
        self.task = RingTask(self.data, self.config, self.device, model=model)
        self.model = self.task.model
        record = {k: self.config[k] for k in ("loss", "training")}
        record["model"] = dict(model.init_args)
        self._trainer = Trainer(self.task, loop_config(tc), self.save_dir, record, "in-memory",
                                {"system": "ring_attractor", "model_config": self.task.model_config})
        self.summary: dict | None = None

    @property
    def history(self) -> dict[str, list]:
        rows = self._trainer.history
        keys = [k for k in (rows[0] if rows else {}) if isinstance(rows[0][k], (int, float))]
        return {k: [r[k] for r in rows] for k in keys}

    @property
    def param_history(self) -> dict[str, list[float]]:
        h = self.history
        return {k: h.get(k, []) for k in PARAM_NAMES}

    def train(self) -> dict[str, list]:
        self.summary = self._trainer.train()
        best = torch.load(self.save_dir / "model_best.pt", weights_only=True)["model"]
        self.model.load_state_dict(best)  # the model at the best validation loss, as the seed says
        return self.history

    def save_checkpoint(self, epoch: int, path: str | Path) -> None:
        if epoch != self._trainer.state["epoch"]:
            raise ValueError(f"the trainer is at epoch {self._trainer.state['epoch']}, not {epoch}")
        self._trainer.save_checkpoint(path)

    def load_checkpoint(self, path: str | Path) -> int:
        return self._trainer.load_checkpoint(path)


def train_model_enhanced(model: RingAttractorNetwork, data: dict | None = None, plot_progress: bool = False,
                         **config) -> tuple[RingAttractorNetwork, dict, AdamCosineTrainer]:
    """Train ``model`` with Adam + cosine annealing (the seed's entry point).

    ``config`` takes the seed's keys (``learning_rate``, ``max_epochs``, ``min_lr``,
    ``weight_decay``, ``batch_size``, ``early_stopping``, ``patience``) and the other
    ``ring_attractor.training`` keys, or ``preset='conservative'|'aggressive'``. ``data`` is a
    dict like the processed HDF5 (omega, theta, light, split, dt); None trains on the embedded
    default trajectories. Returns (model at its best validation loss, history, trainer).
    """
    preset = config.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        config = {**PRESETS[preset], **config}
    trainer = AdamCosineTrainer(model, create_training_config(**config), data=data)
    history = trainer.train()
    if plot_progress:
        from neurotrain.systems.ring_attractor.figures import progress_figure

        fig = progress_figure(trainer._trainer.history)
        fig.savefig(trainer.save_dir / "training_progress.png", dpi=100)
        try:
            import matplotlib.pyplot as plt

            plt.show()
        except Exception:  # noqa: BLE001 - no display: the PNG is saved
            pass
    return trainer.model, history, trainer


def quick_train(model: RingAttractorNetwork, epochs: int = 50, lr: float = 1e-3, data: dict | None = None
                ) -> tuple[RingAttractorNetwork, dict]:
    """Fast training with the seed's defaults for everything but ``epochs`` and ``lr``."""
    model, history, _ = train_model_enhanced(model, data=data, max_epochs=epochs, learning_rate=lr)
    return model, history
