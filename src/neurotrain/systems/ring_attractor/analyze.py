"""Ring-attractor analysis: tracking error, drift without input, bump width, integration gain,
PCA of population activity, Fano factors of spike counts drawn from the rates.

``metrics/``:
  tracking_error_deg.npy       [n, T]   |decoded - true| (deg, circular) on test trajectories
  tracking_error_init_deg.npy  [n, T]   the same for the untrained network
  drift_deg_per_s.npy          [n_d]    |net displacement| / time without input, per trial
  drift_init_deg_per_s.npy     [n_d]    the same for the untrained network
  bump_profile.npy             [n_exc]  mean excitatory profile centred on the decoded direction
  angular_velocity.npy         [k, 2]   (true, decoded) angular velocity (rad/s) in darkness
  fano.npy                     [N]      Fano factor per neuron (windows of fano_window s;
                                        conditions = direction bins); NaN for silent units
  mean_rate_hz.npy             [N]      mean firing rate per neuron
``population/``: pca.npy [n, T, n_pcs] (test activity on its principal components),
  pca_explained_variance.npy [n_pcs], pca_components.npy [n_pcs, N].
``metrics.json``: summary numbers and the quality-bar verdicts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.io import atomic_dir, load_json, load_npy, save_json, save_npy
from neurotrain import stats


def circ_err_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.rad2deg(np.abs((a - b + np.pi) % (2 * np.pi) - np.pi))


def drift_deg_per_s(decoded: np.ndarray, n_cue: int, dt: float) -> np.ndarray:
    un = np.unwrap(decoded.astype(np.float64), axis=1)
    duration = (decoded.shape[1] - n_cue) * dt
    return np.rad2deg(np.abs(un[:, -1] - un[:, n_cue - 1])) / duration


def bump_profile(rates_e: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Mean excitatory profile [n_exc] with every time step rolled so its decoded direction
    sits at the centre index."""
    n = rates_e.shape[-1]
    r = rates_e.reshape(-1, n)
    centre = np.round(np.mod(decoded.reshape(-1), 2 * np.pi) / (2 * np.pi) * n).astype(int) % n
    idx = (np.arange(n)[None, :] + centre[:, None] - n // 2) % n
    return np.take_along_axis(r, idx, 1).mean(0)


def fwhm_deg(profile: np.ndarray) -> float:
    """Full width at half maximum (deg) of a circular profile above its minimum."""
    p = profile - profile.min()
    if p.max() <= 0:
        return float("nan")
    return float((p >= p.max() / 2).sum() * 360.0 / len(p))


def integration(decoded: np.ndarray, omega: np.ndarray, light: np.ndarray, dt: float, smooth: int) -> dict:
    """Decoded vs true angular velocity in darkness: gain (least-squares slope through 0) and R^2.
    Velocities are averaged over ``smooth`` steps to tame the readout noise."""
    un = np.unwrap(decoded.astype(np.float64), axis=1)
    k = max(1, smooth)
    n, n_w = len(un), (un.shape[1] - 1) // k
    i0 = np.arange(n_w) * k
    d_hat = (un[:, i0 + k] - un[:, i0]) / (k * dt)  # theta_t = theta_{t-1} + omega_t dt
    w_true = omega[:, 1: n_w * k + 1].reshape(n, n_w, k).mean(2)
    dark = light[:, 1: n_w * k + 1].reshape(n, n_w, k).max(2) == 0
    x, y = w_true[dark], d_hat[dark]
    if len(x) < 2:
        return {"gain": float("nan"), "r2": float("nan"), "pairs": np.zeros((0, 2))}
    gain = float((x * y).sum() / (x * x).sum())
    r2 = float(1 - ((y - gain * x) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return {"gain": gain, "r2": r2, "pairs": np.stack([x, y], 1)}


def analyze(cfg: dict, run_dir: str, data_path: str, truth: str | None) -> None:
    """Stage ``analyze``: ``metrics/``, ``population/`` and ``metrics.json`` under ``run_dir``."""
    a = cfg["analysis"]
    run = Path(run_dir)

    def o(name):
        return load_npy(run / "outputs" / f"{name}.npy")

    info = load_json(run / "outputs" / "info.json")
    params = load_json(run / "weights" / "parameters.json")
    dt, ne, skip, n_cue = info["dt"], info["n_exc"], info["loss_skip"], info["n_cue"]
    rates, theta, omega, light = o("test_rates"), o("test_theta"), o("test_omega"), o("test_light")
    dec, dec0 = o("test_decoded"), o("test_decoded_init")
    err, err0 = circ_err_deg(dec, theta), circ_err_deg(dec0, theta)
    after = np.zeros_like(err, bool)
    after[:, skip:] = True
    dark = after & (light == 0)
    drift, drift0 = (drift_deg_per_s(o(n), n_cue, dt) for n in ("drift_decoded", "drift_decoded_init"))
    profile = bump_profile(rates[:, skip:, :ne], dec[:, skip:])
    integ = integration(dec, omega, light, dt, smooth=max(1, int(round(0.05 / dt))))
    integ0 = integration(dec0, omega, light, dt, smooth=max(1, int(round(0.05 / dt))))

    # spike counts drawn from the rates; Fano factor per neuron with direction-bin conditions
    rng = np.random.default_rng(a["spike_seed"])
    win = max(1, int(round(a["fano_window"] / dt)))
    counts = rng.poisson(rates.astype(np.float64) * info["max_rate"] * dt)
    w = stats.window_counts(counts, win)  # [n, n_windows, N]
    centre = theta[:, win // 2: w.shape[1] * win: win][:, : w.shape[1]]
    cond = np.floor(np.mod(centre, 2 * np.pi) / (2 * np.pi) * a["direction_bins"]).astype(int)
    fano = stats.fano_factor(w.reshape(-1, 1, w.shape[2]), cond.reshape(-1), 1)
    mean_rate = rates.reshape(-1, rates.shape[-1]).mean(0) * info["max_rate"]

    flat = rates.reshape(-1, rates.shape[-1])
    p = stats.pca_fit(flat, a["n_pcs"])
    proj = stats.pca_project(rates, p)
    # the ring in PC1-PC2: how much of (cos theta, sin theta) a linear map from PC1-2 explains
    X = np.c_[proj[..., :2].reshape(-1, 2), np.ones(flat.shape[0])]
    dec_flat = dec.reshape(-1)
    Y = np.c_[np.cos(dec_flat), np.sin(dec_flat)]
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
    ring_r2 = float(1 - ((Y - X @ coef) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum())
    pc_angle = np.arctan2(proj[..., 1], proj[..., 0])
    # circular correlation-free check: spread of (PC angle - decoded direction), after removing the offset
    diff = np.angle(np.exp(1j * (pc_angle - dec)))
    ring_alignment = float(np.abs(np.mean(np.exp(1j * diff))))  # 1 = PC angle locked to direction
    ring_alignment = max(ring_alignment, float(np.abs(np.mean(np.exp(1j * (pc_angle + dec))))))  # either orientation

    with atomic_dir(run / "metrics") as d:
        save_npy(d / "tracking_error_deg.npy", err.astype(np.float32))
        save_npy(d / "tracking_error_init_deg.npy", err0.astype(np.float32))
        save_npy(d / "drift_deg_per_s.npy", drift)
        save_npy(d / "drift_init_deg_per_s.npy", drift0)
        save_npy(d / "bump_profile.npy", profile)
        save_npy(d / "angular_velocity.npy", integ["pairs"])
        save_npy(d / "fano.npy", fano)
        save_npy(d / "mean_rate_hz.npy", mean_rate)
    with atomic_dir(run / "population") as d:
        save_npy(d / "pca.npy", proj.astype(np.float32))
        save_npy(d / "pca_explained_variance.npy", p["explained_variance_ratio"])
        save_npy(d / "pca_components.npy", p["components"])

    log = load_json(run / "model" / "training_log.json")
    e, i = slice(0, ne), slice(ne, None)
    from neurotrain.systems.ring_attractor.data import load_processed

    summary = {
        "source": load_processed(data_path)["source"],
        "n_test_trajectories": int(len(dec)), "n_steps": int(dec.shape[1]), "dt": dt,
        "tracking_error_median_deg": float(np.median(err[after])),
        "tracking_error_median_dark_deg": float(np.median(err[dark])) if dark.any() else None,
        "tracking_error_median_light_deg": float(np.median(err[after & (light == 1)])) if (after & (light == 1)).any() else None,
        "tracking_error_p90_deg": float(np.percentile(err[after], 90)),
        "tracking_error_init_median_deg": float(np.median(err0[after])),
        "tracking_error_init_median_dark_deg": float(np.median(err0[dark])) if dark.any() else None,
        "dark_fraction": float(dark.sum() / after.sum()),
        "drift_mean_deg_per_s": float(drift.mean()), "drift_median_deg_per_s": float(np.median(drift)),
        "drift_init_mean_deg_per_s": float(drift0.mean()), "drift_duration_s": float((o("drift_decoded").shape[1] - n_cue) * dt),
        "bump_fwhm_deg": fwhm_deg(profile),
        "integration_gain": integ["gain"], "integration_r2": integ["r2"],
        "integration_gain_init": integ0["gain"], "integration_r2_init": integ0["r2"],
        "pca_explained_variance": [float(x) for x in p["explained_variance_ratio"]],
        "ring_r2_pc12": ring_r2, "ring_alignment_pc12": ring_alignment,
        "fano_mean_e": float(np.nanmean(fano[e])), "fano_mean_i": float(np.nanmean(fano[i])),
        "rate_mean_e_hz": float(mean_rate[e].mean()), "rate_mean_i_hz": float(mean_rate[i].mean()),
        "rate_max_e_hz": float(mean_rate[e].max()),
        "parameters": params["trained"], "parameters_initial": params["initial"],
        "constraint_violations": int(sum(params["constraint_violations"].values())),
        "training": log["summary"], "analysis_config": a,
    }
    summary["quality"] = quality(summary, a)
    save_json(run / "metrics.json", summary)


def quality(m: dict, a: dict) -> dict:
    """The bars judge what training must change, each as an absolute level and as an improvement
    over the untrained network (same seed, same trajectories): tracking in darkness (velocity
    integration learned), the integration gain near 1, drift without input no worse than the
    untrained bump's by more than an allowance, and the parameters inside their ranges."""
    from neurotrain.quality import bar

    dark, dark0 = m["tracking_error_median_dark_deg"], m["tracking_error_init_median_dark_deg"]
    g, g0 = m["integration_gain"], m["integration_gain_init"]
    drift, drift0 = m["drift_mean_deg_per_s"], m["drift_init_mean_deg_per_s"]
    ratio = a["max_dark_error_ratio"]
    bars = []
    if dark is not None:
        need = min(a["max_tracking_error_deg"], ratio * dark0)
        bars.append(bar("median tracking error in darkness", dark,
                        f"<= {a['max_tracking_error_deg']:g} deg and <= {ratio:g} x untrained", dark <= need,
                        need - dark, dark0, "untrained network", "deg"))
    else:  # no darkness in the test trajectories: the tracking bar falls back to all steps
        e, e0 = m["tracking_error_median_deg"], m["tracking_error_init_median_deg"]
        need = min(a["max_tracking_error_deg"], ratio * e0)
        bars.append(bar("median tracking error", e, f"<= {a['max_tracking_error_deg']:g} deg and <= {ratio:g} x "
                        "untrained", e <= need, need - e, e0, "untrained network", "deg"))
    gain_ok = None if not np.isfinite(g) else bool(abs(g - 1) <= a["max_gain_error"] and abs(g - 1) < abs(g0 - 1))
    bars.append(bar("integration gain (decoded / true angular velocity, darkness)", g,
                    f"|gain - 1| <= {a['max_gain_error']:g} and closer to 1 than untrained", gain_ok,
                    min(a["max_gain_error"] - abs(g - 1), abs(g0 - 1) - abs(g - 1)) if np.isfinite(g) else None, g0,
                    "untrained network"))
    need = min(a["max_drift_deg_per_s"], drift0 + a["drift_allowance_deg_per_s"])
    bars.append(bar("bump drift without input", drift, f"<= {a['max_drift_deg_per_s']:g} deg/s and <= untrained + "
                    f"{a['drift_allowance_deg_per_s']:g}", drift <= need, need - drift, drift0, "untrained network",
                    "deg/s"))
    bars.append(bar("parameters outside their biological ranges", m["constraint_violations"], "0",
                    m["constraint_violations"] == 0, -m["constraint_violations"]))
    scored = [b["passes"] for b in bars if b["passes"] is not None]
    return {"bars": bars, "passes": all(scored) if scored else None,
            "max_tracking_error_deg": a["max_tracking_error_deg"], "max_drift_deg_per_s": a["max_drift_deg_per_s"],
            "max_dark_error_ratio": ratio, "max_gain_error": a["max_gain_error"],
            "drift_allowance_deg_per_s": a["drift_allowance_deg_per_s"],
            "tracking_passes": bars[0]["passes"], "gain_passes": bars[1]["passes"], "drift_passes": bars[2]["passes"],
            "constraints_pass": bars[3]["passes"]}
