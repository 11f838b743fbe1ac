"""E-I RNN data: the embedded teacher-network dataset, the ``.mat`` reader, the processed HDF5.

``.mat`` layout (MATLAB shapes; variable names configurable under ``ei_rnn.data.variables``):

=============  ===================================  =========================================
variable       shape                                meaning
=============  ===================================  =========================================
spikes         [n_trials, n_time, n_neurons]        spike counts per time bin
inputs         [n_trials, n_time, n_inputs]         task inputs per bin
conditions     [n_trials] or [n_trials, 1]          condition label per trial: integers, a char
                                                    matrix (one row per trial, trailing blanks
                                                    ignored), a char row (one character per
                                                    trial) or a cell array of char; a MATLAB
                                                    string array must be saved as
                                                    cellstr(conditions)
ei_labels      [n_neurons] or [n_neurons, 1]        0 = excitatory, 1 = inhibitory
dt             scalar                               bin width in seconds
outputs        [n_trials, n_time, n_outputs]        optional task outputs (behaviour)
=============  ===================================  =========================================

Processed HDF5 (``data/processed/ei_rnn.h5``): ``spikes`` float32 [trials, time, neurons],
``inputs`` float32 [trials, time, inputs], ``outputs`` float32 [trials, time, outputs] (outputs
may be 0), ``conditions`` int64 [trials] (0-based), ``condition_values`` [conditions] (the file's
labels, sorted: int64 for numbers, UTF-8 strings for text labels),
``ei_labels`` int8 [neurons], ``train_idx``/``val_idx``/``test_idx`` int64 (training; validation,
which early stopping and the best checkpoint use; test, which only the analysis reads); attributes ``dt`` (s),
``source``, ``source_sha256``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, check_arrays, read_hdf5, sha256_file
from neurotrain.matlab import read_mat, write_mat


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def task_inputs(n_conditions: int, n_time: int, dt: float, n_inputs: int) -> np.ndarray:
    """Inputs of a delayed-reach-like task, [n_conditions, n_time, n_inputs].

    Channel 0/1: cos/sin of the condition's direction while the stimulus is on (25-55% of the
    trial); channel 2: a go cue (70-78%); channel 3: fixation, on until the go cue; further
    channels: condition-specific constant context drawn from the direction.
    """
    t = np.arange(n_time) / n_time
    stim = ((t >= 0.25) & (t < 0.55)).astype(float)
    go = ((t >= 0.70) & (t < 0.78)).astype(float)
    fix = (t < 0.70).astype(float)
    theta = 2 * np.pi * np.arange(n_conditions) / n_conditions
    u = np.zeros((n_conditions, n_time, n_inputs))
    chans = [np.cos(theta)[:, None] * stim, np.sin(theta)[:, None] * stim, np.broadcast_to(go, (n_conditions, n_time)), np.broadcast_to(fix, (n_conditions, n_time))]
    for i in range(n_inputs):
        if i < len(chans):
            u[:, :, i] = chans[i]
        else:
            u[:, :, i] = 0.5 * np.cos((i - 3) * theta)[:, None] * fix
    return u


@dataclass
class Teacher:
    """A Dale's-law rate network: x <- (1-a) x + a (W_rec r + W_in u + b) + noise, r = softplus(x)."""

    w_rec: np.ndarray  # [N, N]
    w_in: np.ndarray  # [N, n_inputs]
    bias: np.ndarray  # [N]
    w_out: np.ndarray  # [n_outputs, N] (zero on inhibitory columns)
    ei_labels: np.ndarray  # [N] 0=E, 1=I
    alpha: float

    def run(self, u: np.ndarray, rng: np.random.Generator | None = None, noise: float = 0.0) -> np.ndarray:
        """Rates [batch, time, N] (expected spike counts per bin) for inputs [batch, time, n_inputs]."""
        b, T, _ = u.shape
        x = np.full((b, self.w_rec.shape[0]), -1.0) + self.bias
        rates = np.empty((b, T, self.w_rec.shape[0]))
        for t in range(T):
            r = softplus(x)
            drive = r @ self.w_rec.T + u[:, t] @ self.w_in.T + self.bias
            x = (1 - self.alpha) * x + self.alpha * drive
            if noise > 0 and rng is not None:
                x = x + np.sqrt(2 * self.alpha) * noise * rng.standard_normal(x.shape)
            rates[:, t] = softplus(x)
        return rates


def make_teacher(n_exc: int, n_inh: int, n_inputs: int, n_outputs: int, alpha: float, rng: np.random.Generator) -> Teacher:
    n = n_exc + n_inh
    labels = np.r_[np.zeros(n_exc, np.int8), np.ones(n_inh, np.int8)]
    labels = labels[rng.permutation(n)]
    mag = rng.gamma(2.0, 1.0, size=(n, n)) * (rng.random((n, n)) < 0.5)
    np.fill_diagonal(mag, 0.0)
    sign = np.where(labels == 1, -(n_exc / n_inh), 1.0)
    w = mag * sign[None, :]
    w *= 1.2 / max(np.abs(np.linalg.eigvals(w)).max(), 1e-9)
    w_in = rng.normal(0.0, 1.0, size=(n, n_inputs))
    bias = rng.normal(-1.0, 0.3, size=n)
    w_out = rng.normal(0.0, 1.0 / np.sqrt(n_exc), size=(n_outputs, n)) * (labels == 0)[None, :]
    return Teacher(w, w_in, bias, w_out, labels, alpha)


def generate(cfg: dict, out_mat: str | Path, out_truth: str | Path) -> dict:
    """Write the embedded dataset (.mat, v5) and its ground truth (.npz).

    Trials of condition c: teacher rates with private noise, times a trial gain
    g ~ Gamma(mean 1, CV ``gain_cv``) shared by all neurons, then Poisson counts. The gain makes
    the Fano factor exceed 1, as in cortex. Ground truth: teacher weights, noise-free rates per
    condition [C, T, N], and the gain of every trial.
    """
    e = cfg["data"]["embedded"]
    rng = np.random.default_rng(e["seed"])
    dt = e["dt_ms"] / 1000.0
    alpha = e["dt_ms"] / e["tau_ms"]
    teacher = make_teacher(e["n_exc"], e["n_inh"], e["n_inputs"], e["n_outputs"], alpha, rng)
    C, K, T = e["n_conditions"], e["trials_per_condition"], e["n_time"]
    u_c = task_inputs(C, T, dt, e["n_inputs"])
    conditions = np.repeat(np.arange(C), K)
    rng.shuffle(conditions)
    u = u_c[conditions]
    rates = teacher.run(u, rng, noise=0.05)
    cv = e["gain_cv"]
    gains = rng.gamma(1 / cv**2, cv**2, size=len(conditions)) if cv > 0 else np.ones(len(conditions))
    spikes = rng.poisson(rates * gains[:, None, None]).astype(np.float64)
    outputs = np.einsum("btn,on->bto", rates, teacher.w_out)
    true_rates = teacher.run(u_c)  # noise-free PSTH per condition
    write_mat(out_mat, {
        "spikes": spikes,
        "inputs": u,
        "conditions": (conditions + 1).reshape(-1, 1).astype(np.float64),
        "ei_labels": teacher.ei_labels.reshape(-1, 1).astype(np.float64),
        "dt": np.array([[dt]]),
        "outputs": outputs,
        "time": (np.arange(T) * dt).reshape(-1, 1),
    })
    with atomic_path(out_truth) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, w_rec=teacher.w_rec, w_in=teacher.w_in, bias=teacher.bias, w_out=teacher.w_out,
                     ei_labels=teacher.ei_labels, true_rates=true_rates / dt, trial_gains=gains,
                     condition_values=np.arange(1, C + 1))
    return {"n_trials": len(conditions), "n_neurons": len(teacher.ei_labels), "n_time": T}


def _kind(value) -> str:
    """What a non-numeric value read from a .mat file is, in MATLAB's words."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        return "text (char or cell array of char)"
    if isinstance(value, list):
        return "a cell array"
    if isinstance(value, dict):
        return "a struct"
    return f"dtype {np.asarray(value).dtype}"


def _var(data: dict, cfg: dict, key: str, path: Path, required: bool = True):
    name = cfg["variables"][key]
    if name not in data:
        if required:
            raise NeurotrainError(path, f"missing variable {name!r} (config key ei_rnn.data.variables.{key})")
        return None
    value = data[name]
    arr = np.asarray(value) if isinstance(value, np.ndarray) else None
    if arr is None or arr.dtype.kind not in "biuf":
        raise NeurotrainError(path, f"variable {name!r} is not numeric ({_kind(value)})")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise NeurotrainError(path, f"variable {name!r} has {bad} NaN/Inf values")
    return arr


def _condition_labels(data: dict, cfg: dict, path: Path) -> np.ndarray:
    """The condition label of each trial: float64 numbers, or text (a str array) from a char
    matrix (one row per trial, trailing blanks dropped), a char row (one character per trial)
    or a cell array of char."""
    name = cfg["variables"]["conditions"]
    value = data.get(name)
    if isinstance(value, str):
        labels = list(value)
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        labels = [v.rstrip() for v in value]
    elif isinstance(value, list) and value and all(isinstance(v, (int, float, np.integer, np.floating))
                                                   and not isinstance(v, (bool, np.bool_)) for v in value):
        return _var({name: np.asarray(value, np.float64)}, cfg, "conditions", path).reshape(-1)
    elif isinstance(value, (list, dict)):
        raise NeurotrainError(path, f"{name!r} must hold one label per trial: numbers, a char matrix or a cell "
                                    f"array of char, not {_kind(value)}")
    else:  # a numeric array, or missing (raises)
        return _var(data, cfg, "conditions", path).reshape(-1)
    for i, label in enumerate(labels):
        if not label.strip():
            raise NeurotrainError(path, f"{name!r} has an empty label for trial {i + 1}")
    return np.array(labels, dtype=str)


def load_mat_dataset(path: str | Path, cfg: dict) -> dict:
    """Read and check a ``.mat`` export (v5 or v7.3; layout in the module docstring).

    Returns ``spikes`` [trials, time, neurons], ``inputs`` [trials, time, inputs], ``outputs``
    [trials, time, outputs] (float64), ``conditions`` int64 [trials] (0-based index into
    ``condition_values``, the sorted labels: int64 numbers or a str array), ``ei_labels`` int8
    [neurons] and ``dt`` (s). Raises NeurotrainError naming ``path`` for a missing, non-numeric,
    non-finite or misshapen variable and for the file errors of :func:`read_mat`.
    """
    path = Path(path)
    v = cfg["variables"]
    data = read_mat(path, [v[k] for k in ("spikes", "inputs", "conditions", "ei_labels", "dt", "outputs")])
    spikes = _var(data, cfg, "spikes", path)
    inputs = _var(data, cfg, "inputs", path)
    conditions = _condition_labels(data, cfg, path)
    labels = _var(data, cfg, "ei_labels", path).reshape(-1)
    dt = _var(data, cfg, "dt", path).reshape(-1)
    outputs = _var(data, cfg, "outputs", path, required=False)
    if spikes.ndim != 3:
        raise NeurotrainError(path, f"{v['spikes']!r} must be [n_trials, n_time, n_neurons], got shape {spikes.shape}")
    n_trials, n_time, n_neurons = spikes.shape
    if 0 in spikes.shape:
        raise NeurotrainError(path, f"{v['spikes']!r} has shape {spikes.shape}: no trials, time bins or neurons")
    if inputs.ndim == 2 and inputs.shape == (n_trials, n_time):
        inputs = inputs[:, :, None]
    if inputs.ndim != 3 or inputs.shape[:2] != (n_trials, n_time):
        raise NeurotrainError(path, f"{v['inputs']!r} has shape {inputs.shape}, expected [{n_trials}, {n_time}, n_inputs] to match {v['spikes']!r} {spikes.shape}")
    if conditions.shape[0] != n_trials:
        raise NeurotrainError(path, f"{v['conditions']!r} has {conditions.shape[0]} entries, expected {n_trials} (one per trial)")
    if labels.shape[0] != n_neurons:
        raise NeurotrainError(path, f"{v['ei_labels']!r} has {labels.shape[0]} entries, expected {n_neurons} (one per neuron)")
    if not np.all(np.isin(labels, [0, 1])):
        raise NeurotrainError(path, f"{v['ei_labels']!r} must hold 0 (E) or 1 (I)")
    if labels.sum() == 0 or labels.sum() == n_neurons:
        raise NeurotrainError(path, f"{v['ei_labels']!r} must label at least one E and one I neuron")
    if dt.size != 1 or dt[0] <= 0:
        raise NeurotrainError(path, f"{v['dt']!r} must be one positive number (bin width in seconds)")
    if np.any(spikes < 0):
        raise NeurotrainError(path, f"{v['spikes']!r} has negative spike counts")
    if outputs is None or outputs.size == 0:
        outputs = np.zeros((n_trials, n_time, 0))
    elif outputs.ndim == 2 and outputs.shape == (n_trials, n_time):
        outputs = outputs[:, :, None]
    if outputs.ndim != 3 or outputs.shape[:2] != (n_trials, n_time):
        raise NeurotrainError(path, f"{v['outputs']!r} has shape {outputs.shape}, expected [{n_trials}, {n_time}, n_outputs]")
    if conditions.dtype.kind == "U":  # text labels
        values, cond = np.unique(conditions, return_inverse=True)
    else:
        if np.any(conditions != np.round(conditions)):
            raise NeurotrainError(path, f"{v['conditions']!r} must hold integer labels")
        values, cond = np.unique(conditions.astype(np.int64), return_inverse=True)
    counts = np.bincount(cond)
    if counts.min() < 3:
        label = values[counts.argmin()]
        label = repr(str(label)) if values.dtype.kind == "U" else label
        raise NeurotrainError(path, f"condition {label} has {counts.min()} trial(s); every condition needs at least 3 "
                                    "(training, validation and test trials)")
    return {"spikes": spikes, "inputs": inputs, "outputs": outputs, "conditions": cond.astype(np.int64),
            "condition_values": values, "ei_labels": labels.astype(np.int8), "dt": float(dt[0])}


def stratified_split(conditions: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test trial indices, stratified by condition: every condition has at
    least one trial in each (``conditions`` [trials] needs 3 or more trials per condition). The
    test trials are drawn first, so a change of ``val_fraction`` leaves them as they are."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(conditions):
        idx = rng.permutation(np.flatnonzero(conditions == c))
        n_test = min(max(1, int(round(test_fraction * len(idx)))), len(idx) - 2)
        n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - n_test - 1)
        test.extend(idx[:n_test])
        val.extend(idx[n_test:n_test + n_val])
        train.extend(idx[n_test + n_val:])
    return tuple(np.sort(np.array(x, np.int64)) for x in (train, val, test))


def preprocess(raw: str | Path, cfg: dict, out: str | Path) -> dict:
    """Check a ``.mat`` export and write the processed HDF5 (layout in the module docstring)."""
    d = load_mat_dataset(raw, cfg)
    train_idx, val_idx, test_idx = stratified_split(d["conditions"], cfg["val_fraction"], cfg["test_fraction"],
                                                    cfg["split_seed"])
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as fh:
            for key in ("spikes", "inputs", "outputs"):
                if d[key].size and np.abs(d[key]).max() > np.finfo(np.float32).max:
                    raise NeurotrainError(raw, f"variable {cfg['variables'][key]!r} has values beyond float32's "
                                               f"range (largest {np.abs(d[key]).max():.3g})")
                fh.create_dataset(key, data=d[key].astype(np.float32))
            fh.create_dataset("conditions", data=d["conditions"])
            if d["condition_values"].dtype.kind == "U":  # text labels, as UTF-8 strings
                fh.create_dataset("condition_values", data=d["condition_values"].astype(object),
                                  dtype=h5py.string_dtype())
            else:
                fh.create_dataset("condition_values", data=d["condition_values"])
            fh.create_dataset("ei_labels", data=d["ei_labels"])
            fh.create_dataset("train_idx", data=train_idx)
            fh.create_dataset("val_idx", data=val_idx)
            fh.create_dataset("test_idx", data=test_idx)
            fh.attrs["dt"] = d["dt"]
            fh.attrs["source"] = str(raw)
            fh.attrs["source_sha256"] = sha256_file(raw)
    n_trials, n_time, n_neurons = d["spikes"].shape
    return {"n_trials": n_trials, "n_time": n_time, "n_neurons": n_neurons, "n_train": len(train_idx), "n_val": len(val_idx),
            "n_test": len(test_idx)}


def load_processed(path: str | Path) -> dict:
    """The processed HDF5 as a dict of numpy arrays (plus ``dt``); text ``condition_values`` come
    back as a str array. Raises NeurotrainError naming ``path`` for a missing or bad array."""
    def read(fh):
        out = {k: np.asarray(fh[k].asstr()[()], dtype=str) if h5py.check_string_dtype(fh[k].dtype)
               else np.asarray(fh[k][()]) for k in fh.keys()}
        out["dt"] = float(fh.attrs["dt"])
        out["source_sha256"] = str(fh.attrs.get("source_sha256", ""))
        return out

    out = read_hdf5(path, read, "processed ei_rnn dataset")
    missing = {"spikes", "inputs", "outputs", "conditions", "ei_labels", "train_idx", "val_idx", "test_idx"} - set(out)
    if missing:
        raise NeurotrainError(path, f"not a processed ei_rnn dataset (missing {', '.join(sorted(missing))})")
    n = len(out["spikes"])
    check_arrays(path, out, finite=("spikes", "inputs", "outputs"),
                 indices={"train_idx": n, "val_idx": n, "test_idx": n, "conditions": n}, codes={"ei_labels": (0, 1)})
    return out


EMBEDDED_MAT = "dataset.mat"
EMBEDDED_TRUTH = "truth.npz"


def generate_embedded(cfg: dict, out_dir: str | Path) -> None:
    """Stage ``generate``: ``dataset.mat`` and ``truth.npz`` into ``out_dir``."""
    out_dir = Path(out_dir)
    generate(cfg, out_dir / EMBEDDED_MAT, out_dir / EMBEDDED_TRUTH)


def preprocess_raw(cfg: dict, raw, out: str | Path) -> None:
    """Stage ``preprocess``: ``raw`` is a ``.mat`` file or the folder ``generate`` wrote (or a
    one-element list of either)."""
    if isinstance(raw, (list, tuple)):
        if len(raw) != 1:
            raise NeurotrainError(", ".join(map(str, raw)), "the ei_rnn system reads exactly one .mat file")
        raw = raw[0]
    raw = Path(raw)
    if raw.is_dir():
        raw = raw / EMBEDDED_MAT
    preprocess(raw, cfg["data"], out)
