"""Toy extraction: ``weights/w.npy`` [d], ``outputs/val_pred.npy`` and ``outputs/val_true.npy`` [n_val]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.io import atomic_dir, save_npy
from neurotrain.systems.toy.data import load_processed
from neurotrain.training.checkpoint import load_checkpoint


def extract(cfg: dict, model_dir: str, data_path: str, out_dir: str) -> None:
    state = load_checkpoint(Path(model_dir) / "model_best.pt")["model"]
    w, b = state["weight"].numpy()[0], float(state["bias"].numpy()[0])
    data = load_processed(data_path)
    x, y = data["x"][data["val_idx"]], data["y"][data["val_idx"]]
    with atomic_dir(Path(out_dir) / "weights") as d:
        save_npy(d / "w.npy", w)
    with atomic_dir(Path(out_dir) / "outputs") as d:
        save_npy(d / "val_pred.npy", x @ w + b)
        save_npy(d / "val_true.npy", np.asarray(y))
