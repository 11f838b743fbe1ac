"""E-I RNN figures (seed list): training curves, per-neuron correlation histogram and scatter,
best/worst PSTHs, weight matrices, h0, attention patterns, PCA trajectories and state space,
Fano factors."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neurotrain.io import atomic_dir, load_json, load_npy
from neurotrain.plotting import E_COLOR, I_COLOR, MODEL_COLOR, REAL_COLOR, save_figure

FIGURES = ("training_curves", "per_neuron_correlation_histogram", "per_neuron_correlation_scatter",
           "best_worst_neurons", "weight_matrices", "h0_distribution", "attention_patterns",
           "pca_trajectories", "pca_state_space", "fano_factor_comparison")


def render(cfg: dict, run_dir: str) -> None:
    """Stage ``figures``: every PNG of :data:`FIGURES` into ``<run_dir>/figures``."""
    run = Path(run_dir)
    ld = lambda sub, name: load_npy(run / sub / f"{name}.npy")  # noqa: E731
    log = load_json(run / "model" / "training_log.json")
    labels = ld("metrics", "neuron_ei_labels")
    e = labels == 0
    corr = ld("metrics", "per_neuron_correlation")
    dt = load_json(run / "model" / "config.json")["config"]["model"]["dt"] / 1000.0
    with atomic_dir(run / "figures") as out:
        _training_curves(log, out / "training_curves.png")
        _corr_hist(corr, e, out / "per_neuron_correlation_histogram.png")
        _corr_scatter(corr, ld("metrics", "per_neuron_mean_rate_target"), e, out / "per_neuron_correlation_scatter.png")
        _best_worst(corr, ld("outputs", "test_model_psth_by_condition"), ld("outputs", "test_target_psth_by_condition"),
                    dt, out / "best_worst_neurons.png")
        _weights(ld("weights", "W_rec"), ld("weights", "W_in"), e, out / "weight_matrices.png")
        _h0(ld("weights", "h0"), e, out / "h0_distribution.png")
        att = run / "weights" / "attention_weights.npy"
        maps = run / "weights" / "attention_maps.npy"
        _attention(load_npy(att) if att.exists() else None, load_npy(maps) if maps.exists() else None,
                   ld("weights", "input_embed_linear"), out / "attention_patterns.png")
        _pca_traj(ld("population", "pca_real"), ld("population", "pca_model"), ld("population", "pca_explained_variance"),
                  dt, out / "pca_trajectories.png")
        _pca_space(ld("population", "pca_real_by_condition"), ld("population", "pca_model_by_condition"),
                   out / "pca_state_space.png")
        _fano(ld("metrics", "per_neuron_fano_model"), ld("metrics", "per_neuron_fano_target"), e,
              out / "fano_factor_comparison.png")


def _training_curves(log: dict, path: Path) -> None:
    h = log["history"]
    ep = np.array([r["epoch"] for r in h])
    g = lambda k: np.array([r[k] for r in h])  # noqa: E731
    best = log["summary"]["best_epoch"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    ax[0, 0].plot(ep, g("train_loss"), label="train (total)")
    ax[0, 0].plot(ep, g("val_loss"), label="val (L_neuron)")
    ax[0, 0].plot(ep, g("L_neuron"), label="train L_neuron", alpha=0.6)
    ax[0, 0].set_yscale("log"); ax[0, 0].set_title("Loss"); ax[0, 0].legend(); ax[0, 0].set_xlabel("epoch")
    ax[0, 1].plot(ep, g("val_correlation"), color="C2")
    ax[0, 1].set_title("Validation PSTH correlation"); ax[0, 1].set_xlabel("epoch")
    ax[1, 0].plot(ep, g("learning_rate"), color="C3")
    ax[1, 0].set_yscale("log"); ax[1, 0].set_title("Learning rate"); ax[1, 0].set_xlabel("epoch")
    vc = g("val_correlation")
    ax[1, 1].plot(ep, vc, color="C2", alpha=0.5)
    ax[1, 1].axvline(best, color="k", ls="--")
    ax[1, 1].scatter([best], [vc[ep == best][0]], color="k", zorder=3, label=f"best {vc[ep == best][0]:.3f} @ {best}")
    ax[1, 1].set_title("Best correlation"); ax[1, 1].legend(); ax[1, 1].set_xlabel("epoch")
    fig.tight_layout()
    save_figure(fig, path)


def _corr_hist(corr, e, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(min(corr.min(), 0), 1, 26)
    ax.hist(corr[e], bins=bins, alpha=0.7, color=E_COLOR, label=f"E (n={e.sum()}, mean {corr[e].mean():.3f})")
    ax.hist(corr[~e], bins=bins, alpha=0.7, color=I_COLOR, label=f"I (n={(~e).sum()}, mean {corr[~e].mean():.3f})")
    ax.set_xlabel("PSTH correlation (test trials)"); ax.set_ylabel("neurons"); ax.legend()
    save_figure(fig, path)


def _corr_scatter(corr, rate, e, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(rate[e], corr[e], color=E_COLOR, label="E", s=18)
    ax.scatter(rate[~e], corr[~e], color=I_COLOR, label="I", s=18)
    ax.set_xlabel("mean firing rate, target (spikes/s)"); ax.set_ylabel("PSTH correlation"); ax.legend()
    save_figure(fig, path)


def _best_worst(corr, model_c, target_c, dt, path):
    order = np.argsort(corr)
    picks = list(order[::-1][:4]) + list(order[:4])
    t = np.arange(model_c.shape[1]) * dt
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), sharex=True)
    for ax, n in zip(axes.ravel(), picks):
        for c in range(model_c.shape[0]):
            col = plt.cm.viridis(c / max(model_c.shape[0] - 1, 1))
            ax.plot(t, target_c[c, :, n], color=col, lw=0.8, alpha=0.6)
            ax.plot(t, model_c[c, :, n], color=col, lw=1.6, ls="--")
        ax.set_title(f"neuron {n}: r={corr[n]:.2f}")
    axes[0, 0].set_ylabel("best 4\nrate (spikes/s)"); axes[1, 0].set_ylabel("worst 4\nrate (spikes/s)")
    for ax in axes[1]:
        ax.set_xlabel("time (s)")
    fig.suptitle("Validation PSTHs per condition: target (solid) vs model (dashed)")
    fig.tight_layout()
    save_figure(fig, path)


def _weights(w_rec, w_in, e, path):
    order = np.r_[np.flatnonzero(e), np.flatnonzero(~e)]
    fig, ax = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    v = np.abs(w_rec).max()
    im = ax[0].imshow(w_rec[np.ix_(order, order)], cmap="RdBu_r", vmin=-v, vmax=v)
    ax[0].axhline(e.sum() - 0.5, color="k", lw=0.8); ax[0].axvline(e.sum() - 0.5, color="k", lw=0.8)
    ax[0].set_title("W_rec (sorted E | I; post x pre)"); ax[0].set_xlabel("presynaptic"); ax[0].set_ylabel("postsynaptic")
    fig.colorbar(im, ax=ax[0], shrink=0.8)
    v = np.abs(w_in).max()
    im = ax[1].imshow(w_in[order], cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
    ax[1].axhline(e.sum() - 0.5, color="k", lw=0.8)
    ax[1].set_title("W_in (neurons sorted E | I)"); ax[1].set_xlabel("embedding dim")
    fig.colorbar(im, ax=ax[1], shrink=0.8)
    fig.tight_layout()
    save_figure(fig, path)


def _h0(h0, e, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(h0.min(), h0.max() + 1e-9, 25)
    ax.hist(h0[e], bins=bins, alpha=0.7, color=E_COLOR, label="E")
    ax.hist(h0[~e], bins=bins, alpha=0.7, color=I_COLOR, label="I")
    ax.set_xlabel("learned h0"); ax.set_ylabel("neurons"); ax.legend()
    save_figure(fig, path)


def _attention(att, maps, proj, path):
    if att is None:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.imshow(proj, cmap="RdBu_r", aspect="auto"); ax.set_title("linear input embedding (no attention)")
        save_figure(fig, path)
        return
    H = maps.shape[0]
    fig = plt.figure(figsize=(4 * max(H, 4), 8))
    grid = fig.add_gridspec(2, max(H, 4))
    for h in range(H):
        a = fig.add_subplot(grid[0, h])
        im = a.imshow(maps[h], cmap="viridis", vmin=0, vmax=1)
        a.set_title(f"head {h}: mean attention"); a.set_xlabel("key input channel"); a.set_ylabel("query input channel")
    fig.colorbar(im, ax=a, shrink=0.8)
    for j, k in enumerate(("Q", "K", "V")):
        a = fig.add_subplot(grid[1, j])
        m = np.asarray(att[k]); v = np.abs(m).max()
        a.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto"); a.set_title(f"{k} projection {m.shape}")
        a.set_xlabel("token feature")
    a = fig.add_subplot(grid[1, 3])
    v = np.abs(proj).max()
    a.imshow(proj, cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
    a.set_title(f"output projection {proj.shape}"); a.set_xlabel("input x head")
    fig.tight_layout()
    save_figure(fig, path)


def _pca_traj(real, model, evr, dt, path):
    t = np.arange(real.shape[0]) * dt
    k = min(3, real.shape[1])
    fig, ax = plt.subplots(1, k, figsize=(4.5 * k, 3.6))
    for i in range(k):
        a = np.atleast_1d(ax)[i]
        a.plot(t, real[:, i], color=REAL_COLOR, label="real"); a.plot(t, model[:, i], color=MODEL_COLOR, ls="--", label="model")
        a.set_title(f"PC{i + 1} ({100 * evr[i]:.1f}% var)"); a.set_xlabel("time (s)")
    np.atleast_1d(ax)[0].legend()
    fig.tight_layout()
    save_figure(fig, path)


def _pca_space(real_c, model_c, path):
    fig, ax = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for c in range(real_c.shape[0]):
        col = plt.cm.hsv(c / real_c.shape[0])
        ax[0].plot(real_c[c, :, 0], real_c[c, :, 1], color=col); ax[0].scatter(*real_c[c, 0, :2], color=col, s=12)
        ax[1].plot(model_c[c, :, 0], model_c[c, :, 1], color=col); ax[1].scatter(*model_c[c, 0, :2], color=col, s=12)
    ax[0].set_title("real (test-trial PSTH per condition)"); ax[1].set_title("model")
    for a in ax:
        a.set_xlabel("PC1"); a.set_ylabel("PC2")
    fig.tight_layout()
    save_figure(fig, path)


def _fano(fm, ft, e, path):
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    ok = np.isfinite(fm) & np.isfinite(ft) & (fm > 0) & (ft > 0)
    if not ok.any():
        ax[0].text(0.5, 0.5, "no neuron with spikes in both model and data", ha="center", transform=ax[0].transAxes)
        save_figure(fig, path)
        return
    ax[0].scatter(ft[ok & e], fm[ok & e], color=E_COLOR, label="E", s=18)
    ax[0].scatter(ft[ok & ~e], fm[ok & ~e], color=I_COLOR, label="I", s=18)
    lo, hi = min(fm[ok].min(), ft[ok].min()) * 0.9, max(fm[ok].max(), ft[ok].max()) * 1.1
    ax[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax[0].set_xscale("log"); ax[0].set_yscale("log"); ax[0].set_xlabel("real Fano factor"); ax[0].set_ylabel("model Fano factor")
    ax[0].legend()
    bins = np.logspace(np.log10(lo), np.log10(hi), 25)
    ax[1].hist(ft[ok], bins=bins, alpha=0.6, color=REAL_COLOR, label=f"real (mean {np.nanmean(ft):.2f})")
    ax[1].hist(fm[ok], bins=bins, alpha=0.6, color=MODEL_COLOR, label=f"model (mean {np.nanmean(fm):.2f})")
    ax[1].set_xscale("log"); ax[1].set_xlabel("Fano factor"); ax[1].legend()
    fig.tight_layout()
    save_figure(fig, path)
