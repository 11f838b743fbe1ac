"""CPC+SNN figures: loss per phase, ROC beside the matched filter, efficiency vs SNR, spike
raster, CPC latent PCA."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neurotrain.io import atomic_dir, load_json, load_npy  # noqa: E402
from neurotrain.plotting import MODEL_COLOR, REAL_COLOR, save_figure  # noqa: E402


def _loss_per_phase(history: list[dict], path: Path, cpc_chance: float | None = None) -> None:
    phases = sorted({r["phase"] for r in history})
    fig, axes = plt.subplots(1, len(phases), figsize=(4.2 * len(phases), 3.4), squeeze=False)
    for ax, ph in zip(axes[0], phases):
        rows = [r for r in history if r["phase"] == ph]
        ep = [r["epoch"] for r in rows]
        for key, style, label in (("train_cpc_loss", "-", "CPC (train)"), ("val_cpc_loss", "--", "CPC (val)"),
                                  ("train_classification_loss", "-", "cross-entropy (train)"),
                                  ("val_classification_loss", "--", "cross-entropy (val)")):
            if key in rows[0]:
                ax.plot(ep, [r[key] for r in rows], style, marker="o", ms=3, label=label,
                        color=MODEL_COLOR if "cpc" in key else REAL_COLOR)
        if cpc_chance is not None and "val_cpc_loss" in rows[0]:
            ax.axhline(cpc_chance, color="0.5", lw=0.8, ls=":", label="CPC chance, ln(candidates)")
        ax.set_title(f"phase {ph}: {rows[0]['phase_name']}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        if "val_auc" in rows[0]:
            ax2 = ax.twinx()
            ax2.plot(ep, [r["val_auc"] for r in rows], ":", color="tab:green", label="val AUC")
            ax2.set_ylim(0.4, 1.0)
            ax2.set_ylabel("validation AUC", color="tab:green")
    fig.tight_layout()
    save_figure(fig, path)


def render(cfg: dict, run_dir: str) -> None:
    run = Path(run_dir)
    m, o = run / "metrics", run / "outputs"
    summary = load_json(run / "metrics.json")
    met = summary["metrics"]
    log = load_json(run / "model" / "training_log.json")
    with atomic_dir(run / "figures") as f:
        _loss_per_phase(log["history"], f / "loss_per_phase.png", met.get("cpc_chance", {}).get("loss"))

        fig, ax = plt.subplots(figsize=(5, 4.2))
        for name, color, auc in (("snn", MODEL_COLOR, met["auc_snn"]), ("mf", REAL_COLOR, met["auc_mf"])):
            roc = load_npy(m / f"roc_{name}.npy")
            ax.plot(np.maximum(roc[:, 0], 1e-4), roc[:, 1], color=color,
                    label=f"{'SNN' if name == 'snn' else 'matched filter'} (AUC {auc:.3f})")
        for op in met["operating_points"]:
            ax.axvline(op["fap"], color="0.7", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_xlabel("false-alarm probability")
        ax.set_ylabel("true-positive rate")
        ax.set_title("ROC on the test segments")
        ax.legend(loc="lower right", fontsize=8)
        save_figure(fig, f / "roc.png")

        eff = load_npy(m / "efficiency.npy")
        fig, ax = plt.subplots(figsize=(5, 3.8))
        ax.plot(eff[:, 0], eff[:, 1], "o-", color=MODEL_COLOR, label="SNN")
        ax.plot(eff[:, 0], eff[:, 2], "s--", color=REAL_COLOR, label="matched filter")
        ax.set_xlabel("optimal SNR")
        ax.set_ylabel(f"detection efficiency at FAP {met['quality_bar']['fap']:g}")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
        ax.set_title("efficiency vs SNR")
        save_figure(fig, f / "efficiency_vs_snr.png")

        layers = sorted(o.glob("raster_layer*.npy"), key=lambda p: int(p.stem.removeprefix("raster_layer")))
        rasters = [load_npy(p) for p in layers]
        idx = load_npy(o / "raster_index.npy")
        labels = load_npy(o / "labels.npy")[idx]
        snr = load_npy(o / "snr.npy")[idx]
        cols = len(idx)
        fig, axes = plt.subplots(len(rasters), cols, figsize=(2.6 * cols, 1.6 * len(rasters)), squeeze=False,
                                 sharex=True)
        for j in range(cols):
            for i, r in enumerate(rasters):
                axes[i, j].imshow(r[j].T, aspect="auto", cmap="Greys", interpolation="nearest", origin="lower",
                                  vmin=0, vmax=1)
                if j == 0:
                    axes[i, j].set_ylabel("bridge" if i == 0 else f"LIF {i}", fontsize=8)
            axes[0, j].set_title(f"chirp, SNR {snr[j]:.1f}" if labels[j] == 1 else "noise", fontsize=9)
            axes[-1, j].set_xlabel("frame")
        fig.tight_layout()
        save_figure(fig, f / "spike_raster.png")

        pcs = load_npy(run / "population" / "pca_latents.npy")
        lab = load_npy(o / "labels.npy")[: len(pcs)]
        fig, ax = plt.subplots(figsize=(5, 4.2))
        for cls, color, name in ((0, REAL_COLOR, "noise"), (1, MODEL_COLOR, "chirp")):
            sel = pcs[lab == cls][:40]
            for k, tr in enumerate(sel):
                ax.plot(tr[:, 0], tr[:, 1], color=color, alpha=0.25, lw=0.6, label=name if k == 0 else None)
        ev = summary["pca_explained_variance_ratio"]
        ax.set_xlabel(f"PC1 ({ev[0]:.0%})")
        ax.set_ylabel(f"PC2 ({ev[1]:.0%})")
        ax.set_title("CPC latent trajectories (test segments)")
        ax.legend()
        save_figure(fig, f / "latent_pca.png")
