"""Toy analysis: validation R^2 and the weight error against the generator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.io import atomic_dir, load_npy, save_json, save_npy


def analyze(cfg: dict, run_dir: str, data_path: str, truth: str | None) -> None:
    run = Path(run_dir)
    pred, true = load_npy(run / "outputs" / "val_pred.npy"), load_npy(run / "outputs" / "val_true.npy")
    r2 = float(1 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))
    out = {"r2": r2, "quality": {"min_r2": cfg["analysis"]["min_r2"], "passes": r2 >= cfg["analysis"]["min_r2"]}}
    if truth:
        with np.load(truth) as z:
            out["weight_error"] = float(np.linalg.norm(load_npy(run / "weights" / "w.npy") - z["w"]))
    with atomic_dir(run / "metrics") as d:
        save_npy(d / "residuals.npy", pred - true)
    with atomic_dir(run / "population") as d:
        save_npy(d / "pred_variance.npy", np.asarray([pred.var()]))
    save_json(run / "metrics.json", out)
