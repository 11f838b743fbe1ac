"""Toy figure: ``fit.png``, predicted against true validation targets."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from neurotrain.io import atomic_dir, load_npy


def render(cfg: dict, run_dir: str) -> None:
    run = Path(run_dir)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(load_npy(run / "outputs" / "val_true.npy"), load_npy(run / "outputs" / "val_pred.npy"), s=8)
    ax.set_xlabel("true y")
    ax.set_ylabel("predicted y")
    with atomic_dir(run / "figures") as d:
        fig.savefig(d / "fit.png", dpi=80)
    plt.close(fig)
