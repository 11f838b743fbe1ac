"""CEBRA figures: embeddings coloured by behaviour, loss and goodness of fit, consistency
matrix, decoded vs true behaviour, Fano factors."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neurotrain.io import atomic_dir, load_json, load_npy
from neurotrain.plotting import save_figure

FIGURES = ("embeddings", "loss", "consistency", "decoding", "fano_factors")


def render(cfg: dict, run_dir: str) -> None:
    """Stage ``figures``: every PNG of :data:`FIGURES` into ``<run_dir>/figures``."""
    run = Path(run_dir)
    meta = load_json(run / "outputs" / "sessions.json")
    names = meta["names"]
    o = lambda kind, n: load_npy(run / "outputs" / f"{kind}_{n}.npy")  # noqa: E731
    log = load_json(run / "model" / "training_log.json")
    with atomic_dir(run / "figures") as out:
        _embeddings(names, [o("embedding", n) for n in names], [o("behavior", n) for n in names], out / "embeddings.png")
        _loss(log, out / "loss.png")
        _consistency(names, load_npy(run / "metrics" / "consistency.npy"), out / "consistency.png")
        dt = meta["dt"]
        _decoding(names, [o("behavior", n)[o("split", n) == 1] for n in names],
                  [load_npy(run / "metrics" / f"decoded_{n}.npy") for n in names], dt,
                  load_json(run / "metrics.json"), out / "decoding.png")
        _fano(names, [load_npy(run / "metrics" / f"fano_{n}.npy") for n in names], out / "fano_factors.png")


def _embeddings(names, embs, behs, path):
    S = len(names)
    three = embs[0].shape[1] >= 3
    fig = plt.figure(figsize=(4.5 * S, 4.5))
    for i, (n, e, b) in enumerate(zip(names, embs, behs)):
        step = max(1, len(e) // 4000)
        if three:
            ax = fig.add_subplot(1, S, i + 1, projection="3d")
            sc = ax.scatter(e[::step, 0], e[::step, 1], e[::step, 2], c=b[::step, 0], cmap="cool", s=1)
            ax.set_zticks([])
        else:
            ax = fig.add_subplot(1, S, i + 1)
            sc = ax.scatter(e[::step, 0], e[::step, 1], c=b[::step, 0], cmap="cool", s=1)
        ax.set_title(f"{n}"); ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(sc, ax=fig.axes, shrink=0.6, label="behaviour (dim 0)")
    fig.suptitle(f"Embeddings (dims 1-{3 if three else 2}) coloured by behaviour")
    save_figure(fig, path)


def _loss(log, path):
    h = log["history"]
    step = np.asarray(h["step"])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(step, h["total"], lw=0.6, alpha=0.5, label="total (per step)")
    k = max(1, len(step) // 50)
    smooth = np.convolve(h["total"], np.ones(k) / k, mode="valid")
    ax[0].plot(step[k - 1:], smooth, color="k", label=f"running mean ({k})")
    ax[0].set_xlabel("step"); ax[0].set_ylabel("InfoNCE"); ax[0].legend()
    ax[1].plot(step, h["goodness_of_fit_bits"], color="C2", lw=0.6)
    ax[1].set_xlabel("step"); ax[1].set_ylabel("goodness of fit (bits)")
    fig.tight_layout()
    save_figure(fig, path)


def _consistency(names, mat, path):
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 1.2 * len(names) + 2))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="magma")
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{100 * mat[i, j]:.0f}", ha="center", va="center", color="w" if mat[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(names)), names, rotation=45); ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("target session"); ax.set_ylabel("source session")
    ax.set_title("consistency R² (%)" if len(names) > 1 else "consistency: one session, not scored")
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


def _decoding(names, truths, preds, dt, metrics, path):
    S = len(names)
    fig, ax = plt.subplots(S, 1, figsize=(11, 2.2 * S), squeeze=False)
    for i, (n, y, p) in enumerate(zip(names, truths, preds)):
        t = np.arange(len(y)) * dt
        ax[i, 0].plot(t, y[:, 0], color="k", lw=1, label="true")
        ax[i, 0].plot(t, p[:, 0], color="C1", lw=1, label="decoded (kNN on embedding)")
        ax[i, 0].set_title(f"{n}: R² {metrics['decoding_r2'][i]:.3f} (raw spikes {metrics['raw_decoding_r2'][i]:.3f})", fontsize=9)
    ax[0, 0].legend(loc="upper right", fontsize=8)
    ax[-1, 0].set_xlabel("time in held-out part (s)")
    fig.tight_layout()
    save_figure(fig, path)


def _fano(names, fanos, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [f[np.isfinite(f)] for f in fanos]
    ax.boxplot(ok, tick_labels=names)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_ylabel("Fano factor (input spike counts)")
    save_figure(fig, path)
