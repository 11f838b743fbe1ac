"""LISBET figures: training history per task, embedding PCA coloured by behaviour, confusion
matrices (embedding vs raw keypoints), an ethogram of a test sequence."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neurotrain.io import atomic_dir, load_json, load_npy
from neurotrain.plotting import save_figure

FIGURES = ("history", "embedding_pca", "confusion", "ethogram")
COLORS = ("#d62728", "#1f77b4", "#9467bd", "#7f7f7f")


def render(cfg: dict, run_dir: str) -> None:
    """Stage ``figures``: every PNG of :data:`FIGURES` into ``<run_dir>/figures``."""
    run = Path(run_dir)
    h = load_json(run / "model" / "training_log.json")["history"]
    m = load_json(run / "metrics.json")
    meta = load_json(run / "outputs" / "sequences.json")
    with atomic_dir(run / "figures") as out:
        _history(h, out / "history.png")
        _pca(run, meta, out / "embedding_pca.png")
        _confusion(run, m, out / "confusion.png")
        _ethogram(run, meta, m, out / "ethogram.png")


def _history(h, path):
    tasks = sorted({k.split("_")[1] for k in h[0] if k.startswith("val_") and k.endswith("_accuracy") and k != "val_accuracy"})
    ep = [r["epoch"] for r in h]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for t in tasks:
        line, = ax[0].plot(ep, [r[f"val_{t}_accuracy"] for r in h], label=f"{t} (validation)")
        ax[0].plot(ep, [r[f"train_{t}_accuracy"] for r in h], ls=":", color=line.get_color())
        ax[1].plot(ep, [r[f"train_{t}_loss"] for r in h], label=t, color=line.get_color())
    ax[0].axhline(0.5, color="k", lw=0.5, ls="--")
    ax[0].set_ylabel("accuracy (dotted: training)")
    ax[0].legend(fontsize=8)
    ax[1].set_ylabel("training loss (binary cross-entropy)")
    ax[1].legend(fontsize=8)
    for a in ax:
        a.set_xlabel("epoch")
    fig.suptitle("Self-supervised tasks")
    save_figure(fig, path)


def _pca(run, meta, path):
    fig, ax = plt.subplots(figsize=(6, 5.5))
    beh = meta["behaviors"]
    xs, ys = [], []
    for n in meta["names"]:
        p = load_npy(run / "population" / f"pca_{n}.npy")
        a = load_npy(run / "outputs" / f"annotations_{n}.npy")
        xs.append(p[:, :2])
        ys.append(a)
    X, y = np.concatenate(xs), np.concatenate(ys)
    step = max(1, len(X) // 8000)
    X, y = X[::step], y[::step]
    if (y < 0).all():
        ax.scatter(X[:, 0], X[:, 1], s=1, color="0.5")
    for k, b in enumerate(beh):
        sel = y == k
        ax.scatter(X[sel, 0], X[sel, 1], s=1, alpha=0.5, color=COLORS[k % len(COLORS)], label=b)
    ev = load_npy(run / "population" / "pca_explained_variance.npy")
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f}%)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f}%)")
    ax.legend(markerscale=8)
    ax.set_title("Per-frame embeddings, coloured by behaviour")
    save_figure(fig, path)


def _confusion(run, m, path):
    beh = m["behaviors"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, kind in zip(axes, ("embedding", "raw")):
        f = run / "metrics" / f"confusion_{kind}.npy"
        if not f.exists():
            ax.set_axis_off()
            continue
        c = load_npy(f).astype(float)
        c = c / np.maximum(c.sum(1, keepdims=True), 1)
        ax.imshow(c, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(beh)):
            for j in range(len(beh)):
                ax.text(j, i, f"{c[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="w" if c[i, j] > 0.5 else "k")
        ax.set_xticks(range(len(beh)), beh, rotation=30)
        ax.set_yticks(range(len(beh)), beh)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{kind}: macro F1 {m.get(f'macro_f1_{kind}', float('nan')):.3f}")
    fig.suptitle("Linear classifier on held-out sequences (rows normalised)")
    save_figure(fig, path)


def _ethogram(run, meta, m, path):
    tests = m.get("test_sequences") or []
    fig, ax = plt.subplots(figsize=(12, 2.6))
    if tests:
        n = tests[0]
        a = load_npy(run / "outputs" / f"annotations_{n}.npy")
        p = load_npy(run / "metrics" / f"predicted_{n}.npy")
        t = np.arange(len(a)) / meta["fps"]
        for row, lab in ((1, a), (0, p)):
            for k in range(len(meta["behaviors"])):
                ax.fill_between(t, row, row + 0.8, where=lab == k, step="mid", color=COLORS[k % len(COLORS)],
                                label=meta["behaviors"][k] if row == 1 else None)
        ax.set_yticks([0.4, 1.4], ["from embedding", "true"])
        ax.set_xlabel("time (s)")
        ax.legend(ncol=4, fontsize=8, loc="upper right")
        ax.set_title(f"Ethogram of held-out sequence {n}")
    else:
        ax.set_axis_off()
    save_figure(fig, path)
