"""Ring-attractor figures: training curves, learning rate, gradient norms, parameter evolution,
connectivity, bump over time, decoded vs true direction, PCA ring, drift, Fano factors."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from neurotrain.io import atomic_dir, load_json, load_npy
from neurotrain.plotting import E_COLOR, I_COLOR, MODEL_COLOR, REAL_COLOR, save_figure

FIGURES = ("training_curves", "learning_rate", "gradient_norms", "parameter_evolution", "connectivity",
           "bump_over_time", "decoded_vs_true", "pca_ring", "drift", "fano_factors")
PARAMS = ("g_ee", "g_ei", "g_ie", "g_av", "noise_rate_e", "noise_rate_i")


def render(cfg: dict, run_dir: str) -> None:
    """Stage ``figures``: every PNG of :data:`FIGURES` into ``<run_dir>/figures``."""
    run = Path(run_dir)
    h = load_json(run / "model" / "training_log.json")["history"]
    m = load_json(run / "metrics.json")
    info = load_json(run / "outputs" / "info.json")

    def o(name):
        return load_npy(run / "outputs" / f"{name}.npy")

    with atomic_dir(run / "figures") as out:
        fig = progress_figure(h, panels=("loss",))
        save_figure(fig, out / "training_curves.png")
        save_figure(progress_figure(h, panels=("lr",)), out / "learning_rate.png")
        save_figure(progress_figure(h, panels=("grad",)), out / "gradient_norms.png")
        _params(h, out / "parameter_evolution.png")
        _connectivity(load_npy(run / "weights" / "connectivity.npy"), info["n_exc"], out / "connectivity.png")
        _bump(o("test_rates"), o("test_theta"), o("test_decoded"), o("test_light"), info, out / "bump_over_time.png")
        _decoded(o("test_theta"), o("test_decoded"), o("test_decoded_init"), o("test_light"), info, m,
                 out / "decoded_vs_true.png")
        _pca(load_npy(run / "population" / "pca.npy"), o("test_theta"),
             load_npy(run / "population" / "pca_explained_variance.npy"), out / "pca_ring.png")
        _drift(o("drift_decoded"), o("drift_decoded_init"), info, m, out / "drift.png")
        _fano(load_npy(run / "metrics" / "fano.npy"), info["n_exc"], out / "fano_factors.png")


def progress_figure(history: list[dict], panels=("loss", "lr", "grad", "params")):
    """Training progress from the per-epoch log rows (also shown by ``train_model_enhanced``)."""
    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "loss":
            ax.plot(ep, [r["train_loss"] for r in history], label="train", color=MODEL_COLOR)
            ax.plot(ep, [r["val_loss"] for r in history], label="validation", color=REAL_COLOR)
            best = min(history, key=lambda r: r["val_loss"])
            ax.axvline(best["epoch"], ls=":", color="gray", label=f"best (epoch {best['epoch']})")
            ax.set_ylabel("loss (1 - cos error)")
            ax.set_yscale("log")
            ax2 = ax.twinx()
            ax2.plot(ep, [r["val_tracking_error_deg"] for r in history], color="tab:green", lw=0.8)
            ax2.set_ylabel("val median tracking error (deg)", color="tab:green")
            ax.legend(loc="upper right")
            ax.set_title("Training curves")
        elif panel == "lr":
            ax.plot(ep, [r["learning_rate"] for r in history])
            ax.set_yscale("log")
            ax.set_ylabel("learning rate")
            ax.set_title("Cosine annealing")
        elif panel == "grad":
            ax.plot(ep, [r["grad_norm"] for r in history], label="mean per epoch")
            ax.plot(ep, [r["grad_norm_max"] for r in history], label="max per epoch", alpha=0.6)
            ax.set_yscale("log")
            ax.set_ylabel("gradient norm (all parameters)")
            ax.legend()
            ax.set_title("Gradient norms")
        elif panel == "params":
            for p in PARAMS:
                ax.plot(ep, [r[p] for r in history], label=p)
            ax.set_yscale("log")
            ax.legend(fontsize=7)
            ax.set_title("Ring parameters")
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def _params(h, path):
    ep = [r["epoch"] for r in h]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    for ax, p in zip(axes.flat, PARAMS):
        v = [r[p] for r in h]
        ax.plot(ep, v, color=E_COLOR if p.endswith("e") else I_COLOR if p.endswith("i") else MODEL_COLOR)
        ax.set_title(f"{p}: {v[0]:.3g} -> {v[-1]:.3g}")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle("Parameter evolution (param_history); gains kept in [0.1, 10], noise rates in [0.1, 20] Hz")
    fig.tight_layout()
    save_figure(fig, path)


def _connectivity(W, ne, path):
    fig, ax = plt.subplots(1, 2, figsize=(12, 5.2))
    lim = np.percentile(np.abs(W), 99.5) or 1.0
    im = ax[0].imshow(W, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax[0].axhline(ne - 0.5, color="k", lw=0.5)
    ax[0].axvline(ne - 0.5, color="k", lw=0.5)
    ax[0].set_xlabel("presynaptic (E then I)")
    ax[0].set_ylabel("postsynaptic")
    ax[0].set_title("Effective recurrent connectivity")
    fig.colorbar(im, ax=ax[0], shrink=0.8)
    mid = ne // 2
    x = (np.arange(ne) - mid) * 360.0 / ne
    ax[1].plot(x, np.roll(W[mid, :ne], 0), color=E_COLOR, label="E->E (row of a mid-ring unit)")
    ax[1].plot(x, np.full(ne, W[:ne, ne:].mean(1)[mid]), color=I_COLOR, ls="--", label="mean I->E onto it")
    ax[1].set_xlabel("presynaptic preferred direction - postsynaptic (deg)")
    ax[1].legend()
    ax[1].set_title("Connectivity profile")
    save_figure(fig, path)


def _shade_dark(ax, light, dt):
    t = np.arange(len(light)) * dt
    dark = light == 0
    edges = np.flatnonzero(np.diff(np.r_[0, dark.astype(int), 0]))
    for a, b in zip(edges[::2], edges[1::2]):
        ax.axvspan(t[a], t[b - 1] + dt, color="0.85", zorder=0, lw=0)


def _bump(rates, theta, decoded, light, info, path):
    ne, dt = info["n_exc"], info["dt"]
    k = 0
    fig, ax = plt.subplots(figsize=(12, 4.5))
    T = rates.shape[1]
    # unit i prefers 360 i / ne deg: roll by half the ring so the rows run from -180 to 180 deg
    img = np.roll(rates[k, :, :ne], ne // 2, axis=1).T * info["max_rate"]
    im = ax.imshow(img, aspect="auto", origin="lower", cmap="viridis", extent=(0, T * dt, -180, 180),
                   interpolation="nearest")
    t = np.arange(T) * dt
    th = np.rad2deg(np.angle(np.exp(1j * theta[k])))
    dd = np.rad2deg(np.angle(np.exp(1j * decoded[k])))
    jumps = np.r_[np.abs(np.diff(th)) > 180, False]
    ax.plot(t, np.where(jumps, np.nan, th), color="w", lw=1.5, label="true direction")
    ax.plot(t, np.where(np.r_[np.abs(np.diff(dd)) > 180, False], np.nan, dd), color="r", lw=0.8, ls="--",
            label="decoded")
    dark = light[k] == 0
    ax.fill_between(t, -180, -170, where=dark, color="k", step="mid", label="darkness")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("preferred direction (deg)")
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=ax, label="rate (Hz)")
    ax.set_title("Bump of excitatory activity on a held-out trajectory")
    save_figure(fig, path)


def _decoded(theta, decoded, decoded0, light, info, m, path):
    dt = info["dt"]
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    k = 1 if len(theta) > 1 else 0
    t = np.arange(theta.shape[1]) * dt
    _shade_dark(ax[0], light[k], dt)
    for y, lab, c in ((theta[k], "true", REAL_COLOR), (decoded[k], "trained", MODEL_COLOR),
                      (decoded0[k], "untrained", "tab:purple")):
        ax[0].plot(t, np.rad2deg(np.unwrap(y)), label=lab, color=c, lw=1.2 if lab != "untrained" else 0.8)
    ax[0].set_xlabel("time (s) (grey: darkness)")
    ax[0].set_ylabel("head direction (deg, unwrapped)")
    ax[0].legend()
    ax[0].set_title("Decoded vs true direction (held-out trajectory)")
    skip = info["loss_skip"]
    x = np.rad2deg(theta[:, skip:]).ravel()
    y = np.rad2deg(decoded[:, skip:]).ravel()
    step = max(1, len(x) // 5000)
    ax[1].scatter(x[::step], y[::step], s=1, alpha=0.4, color=MODEL_COLOR)
    ax[1].plot([-180, 180], [-180, 180], "k--", lw=0.5)
    ax[1].set_xlabel("true (deg)")
    ax[1].set_ylabel("decoded (deg)")
    ax[1].set_title(f"median error {m['tracking_error_median_deg']:.1f} deg "
                    f"(untrained {m['tracking_error_init_median_deg']:.1f})")
    save_figure(fig, path)


def _pca(proj, theta, evr, path):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    p = proj.reshape(-1, proj.shape[-1])
    c = np.rad2deg(np.angle(np.exp(1j * theta.reshape(-1))))
    step = max(1, len(p) // 6000)
    sc = ax.scatter(p[::step, 0], p[::step, 1], c=c[::step], cmap="hsv", s=2, vmin=-180, vmax=180)
    fig.colorbar(sc, ax=ax, label="true direction (deg)")
    ax.set_xlabel(f"PC1 ({100 * evr[0]:.0f}%)")
    ax.set_ylabel(f"PC2 ({100 * evr[1]:.0f}%)")
    ax.set_title("Population activity: the ring in PC1-PC2")
    ax.set_aspect("equal", adjustable="datalim")
    save_figure(fig, path)


def _drift(d, d0, info, m, path):
    dt, n_cue = info["dt"], info["n_cue"]
    t = (np.arange(d.shape[1]) - n_cue) * dt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arr, c, lab in ((d0, "tab:purple", "untrained"), (d, MODEL_COLOR, "trained")):
        un = np.rad2deg(np.unwrap(arr.astype(np.float64), axis=1))
        rel = un - un[:, n_cue - 1: n_cue]
        for i, row in enumerate(rel):
            ax.plot(t, row, color=c, lw=0.6, alpha=0.5, label=lab if i == 0 else None)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("time since the landmark went off (s); no velocity input")
    ax.set_ylabel("displacement of the bump (deg)")
    ax.set_title(f"Drift without input: {m['drift_mean_deg_per_s']:.2f} deg/s trained, "
                 f"{m['drift_init_mean_deg_per_s']:.2f} untrained")
    ax.legend()
    save_figure(fig, path)


def _fano(fano, ne, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    for sl, c, lab in ((slice(0, ne), E_COLOR, "E"), (slice(ne, None), I_COLOR, "I")):
        v = fano[sl]
        v = v[np.isfinite(v)]
        if len(v):
            ax.hist(v, bins=40, alpha=0.6, color=c, label=f"{lab} (mean {v.mean():.2f}, n={len(v)})")
    ax.axvline(1, color="k", ls="--", lw=0.5)
    ax.set_xlabel("Fano factor of spike counts (direction-bin conditions)")
    ax.set_ylabel("neurons")
    ax.legend()
    save_figure(fig, path)
