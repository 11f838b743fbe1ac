"""E-I RNN analysis: per-neuron metrics, noise ceiling, Fano factors, PCA, ground truth.

Everything is computed on the test trials (``outputs/test_*``), which training, early stopping
and the choice of the best checkpoint never saw.

``metrics/`` (all [N]): per_neuron_correlation (condition-resolved test PSTH, model vs
target), per_neuron_mean_rate_model/target (spikes/s), per_neuron_variance_model/target
(temporal variance of each condition's PSTH, averaged over conditions, (spikes/s)^2), per_neuron_fano_model/target,
neuron_ei_labels (0=E, 1=I), noise_ceiling (sqrt of the Spearman-Brown split-half
reliability), split_half_reliability, and per_neuron_correlation_truth when the teacher's
rates are known.

``population/``: pca_real/pca_model [n_time, n_pcs] (the all-trial PSTHs projected on the PCs),
pca_components [n_pcs, N], pca_explained_variance [n_pcs] (fraction of variance),
pca_real_by_condition/pca_model_by_condition [n_conditions, n_time, n_pcs]. PCs are fitted
on the target's condition PSTHs, stacked over conditions and time.

``metrics.json``: every summary number the report shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from neurotrain.systems.ei_rnn.data import load_processed
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, load_arrays, load_npy, save_json, save_npy
from neurotrain import stats

log = logging.getLogger("neurotrain.analysis")


def dale_violations(w_rec: np.ndarray, e_mask: np.ndarray) -> int:
    """Entries of W_rec [post, pre] whose sign contradicts the presynaptic type."""
    return int((w_rec[:, e_mask] < 0).sum() + (w_rec[:, ~e_mask] > 0).sum())


def analyze(cfg: dict, run_dir: str, data_path: str, truth_path: str | None = None) -> dict:
    """Stage ``analyze``: write ``metrics/``, ``population/`` and ``metrics.json``."""
    run = Path(run_dir)
    a = cfg["analysis"]
    data = load_processed(data_path)
    if a["fano_window_bins"] > data["spikes"].shape[1]:
        raise NeurotrainError("config key ei_rnn.analysis.fano_window_bins",
                              f"{a['fano_window_bins']} bins is longer than a trial ({data['spikes'].shape[1]} bins in {data_path})")
    o = lambda name: load_npy(run / "outputs" / f"{name}.npy")  # noqa: E731
    w = lambda name: load_npy(run / "weights" / f"{name}.npy")  # noqa: E731
    model_c, target_c = o("test_model_psth_by_condition"), o("test_target_psth_by_condition")
    cond = o("test_trial_conditions")
    model_rates = o("test_model_rates")
    e_mask = w("E_mask")
    labels = (~e_mask).astype(np.int8)
    dt = data["dt"]
    test_counts = data["spikes"][data["test_idx"]]

    corr = stats.per_neuron_correlation(model_c, target_c)
    # the noise ceiling is the data's: its random halves follow the data's split seed, so every
    # training seed (a replicate) is held against the same ceiling
    ceiling = stats.split_half_reliability(test_counts, cond, a["noise_ceiling_splits"], seed=cfg["data"]["split_seed"])
    rng = np.random.default_rng(cfg["training"]["seed"])
    model_counts = rng.poisson(np.clip(model_rates, 0, None) * dt)
    fano_m = stats.fano_factor(model_counts, cond, a["fano_window_bins"])
    fano_t = stats.fano_factor(test_counts, cond, a["fano_window_bins"])
    w_rec = w("W_rec")
    metrics = {
        "per_neuron_correlation": corr,
        "per_neuron_mean_rate_model": model_c.mean((0, 1)),
        "per_neuron_mean_rate_target": target_c.mean((0, 1)),
        "per_neuron_variance_model": model_c.var(axis=1).mean(0),
        "per_neuron_variance_target": target_c.var(axis=1).mean(0),
        "per_neuron_fano_model": fano_m,
        "per_neuron_fano_target": fano_t,
        "neuron_ei_labels": labels,
        "noise_ceiling": ceiling["ceiling"],
        "split_half_reliability": ceiling["reliability"],
    }
    truth = {}
    if truth_path:
        t = load_arrays(truth_path)
        metrics["per_neuron_correlation_truth"] = stats.per_neuron_correlation(model_c, t["true_rates"])
        ceiling_truth = stats.per_neuron_correlation(t["true_rates"], target_c)
        w_true = t["w_rec"]
        off = ~np.eye(len(w_true), dtype=bool)
        truth = {"mean_correlation_with_true_rates": float(metrics["per_neuron_correlation_truth"].mean()),
                 "true_rates_vs_target_correlation": float(ceiling_truth.mean()),
                 "w_rec_correlation_with_teacher": float(np.corrcoef(w_rec[off], w_true[off])[0, 1])}

    n_pcs = min(a["n_pcs"], target_c.shape[-1])
    pca = stats.pca_fit(target_c.reshape(-1, target_c.shape[-1]), n_pcs)
    population = {
        "pca_real": stats.pca_project(o("test_target_psth"), pca),
        "pca_model": stats.pca_project(o("test_model_psth"), pca),
        "pca_components": pca["components"],
        "pca_explained_variance": pca["explained_variance_ratio"],
        "pca_real_by_condition": stats.pca_project(target_c, pca),
        "pca_model_by_condition": stats.pca_project(model_c, pca),
    }
    with atomic_dir(run / "metrics") as d:
        for k, v in metrics.items():
            save_npy(d / f"{k}.npy", v)
    with atomic_dir(run / "population") as d:
        for k, v in population.items():
            save_npy(d / f"{k}.npy", v)

    mean_corr = float(corr.mean())
    mean_ceiling = float(ceiling["ceiling"].mean())
    frac = mean_corr / mean_ceiling if mean_ceiling > 0 else float("nan")  # NaN: no ceiling
    init_path = run / "outputs" / "test_model_psth_by_condition_init.npy"
    frac_init = (float(np.nanmean(stats.per_neuron_correlation(load_npy(init_path), target_c))) / mean_ceiling
                 if init_path.exists() and mean_ceiling > 0 else None)
    if not np.isfinite(mean_ceiling):
        log.warning("No noise ceiling: every condition has a single test trial (%s)", data_path)
    violations = dale_violations(w_rec, e_mask)
    summary = {
        "simulated": bool(truth_path),  # the embedded teacher's trials (ground truth known), else a recording
        "n_neurons": int(len(labels)), "n_exc": int(e_mask.sum()), "n_inh": int((~e_mask).sum()),
        "n_test_trials": int(len(cond)), "n_val_trials": int(len(data["val_idx"])), "n_conditions": int(model_c.shape[0]), "n_time": int(model_c.shape[1]),
        "mean_correlation": mean_corr, "median_correlation": float(np.median(corr)),
        "E_mean_correlation": float(corr[e_mask].mean()), "I_mean_correlation": float(corr[~e_mask].mean()),
        "noise_ceiling": mean_ceiling, "split_half_reliability": float(ceiling["reliability"].mean()),
        "fraction_of_noise_ceiling": frac,
        "fano_model_mean": float(np.nanmean(fano_m)), "fano_target_mean": float(np.nanmean(fano_t)),
        "fano_window_s": a["fano_window_bins"] * dt,
        "dale_violations": violations,
        "pca_explained_variance_top3": [float(x) for x in pca["explained_variance_ratio"][:3]],
        "pca_model_real_trajectory_correlation": float(np.corrcoef(population["pca_model_by_condition"][..., :3].ravel(), population["pca_real_by_condition"][..., :3].ravel())[0, 1]),
        **truth,
        "quality": {"required_fraction_of_noise_ceiling": a["quality_fraction"],
                    "correlation_passes": bool(frac >= a["quality_fraction"]),
                    "dale_passes": violations == 0},
    }
    summary["quality"]["passes"] = summary["quality"]["correlation_passes"] and summary["quality"]["dale_passes"]
    summary["fraction_of_noise_ceiling_init"] = frac_init
    from neurotrain.quality import bar

    summary["quality"]["bars"] = [
        bar("test-trial PSTH correlation, fraction of the noise ceiling", frac, f">= {a['quality_fraction']:g}",
            summary["quality"]["correlation_passes"], frac - a["quality_fraction"], frac_init,
            "untrained network; 1 is the noise ceiling"),
        bar("Dale's-law sign violations in W_rec", violations, "0", violations == 0, -violations)]
    save_json(run / "metrics.json", summary)
    return summary
