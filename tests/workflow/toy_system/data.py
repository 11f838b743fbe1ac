"""Toy data: y = x w + noise. Raw: ``samples.npz`` (x [n, d], y [n]) and ``truth.npz`` (w [d]);
processed HDF5: ``x``, ``y``, ``train_idx``, ``val_idx``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from neurotrain.io import atomic_path, read_hdf5


def generate_embedded(cfg: dict, out_dir: str | Path) -> None:
    d = cfg["data"]
    rng = np.random.default_rng(d["seed"])
    w = rng.normal(size=d["n_features"])
    x = rng.normal(size=(d["n_samples"], d["n_features"]))
    y = x @ w + d["noise"] * rng.normal(size=d["n_samples"])
    np.savez(Path(out_dir) / "samples.npz", x=x, y=y)
    np.savez(Path(out_dir) / "truth.npz", w=w)


def preprocess_raw(cfg: dict, raw, out: str | Path) -> None:
    with np.load(Path(raw[0]) / "samples.npz") as z:
        x, y = z["x"].astype(np.float32), z["y"].astype(np.float32)
    n_val = max(1, int(round(len(y) * cfg["data"]["val_fraction"])))
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h:
        h["x"], h["y"] = x, y
        h["train_idx"], h["val_idx"] = np.arange(n_val, len(y)), np.arange(n_val)


def load_processed(path: str | Path) -> dict:
    return read_hdf5(path, lambda h: {k: h[k][()] for k in ("x", "y", "train_idx", "val_idx")}, "processed toy dataset")
