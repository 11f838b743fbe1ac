"""CPC+SNN analysis: the SNN detector against the matched filter on the same test segments.

Matched filter: a bank of ``n_templates`` chirps of the injected family, uniform in chirp time
tau0 ~ M_c^(-5/3) over the injected chirp-mass range, each whitened with the segment ASD; for
every template the complex (two-phase) correlation with the segment over every coalescence
time in the injected range, normalised to SNR units; the statistic is the largest |SNR| over
templates and times. In Gaussian noise this is the optimal detector of the family (up to the
bank's discreteness, whose fitting factor is reported), so it is the ceiling.

Operating points: the threshold at false-alarm probability p is the score that the test noise
segments exceed in a fraction p of cases; the true-positive rate is the fraction of test chirps
above it. Detection efficiency against SNR uses the ``bar_fap`` threshold in SNR bins.

``metrics/``:
  mf_scores.npy [n]                       matched-filter statistic per test segment
  mf_val_noise_scores.npy [v]             matched-filter statistic per validation noise segment
                                          (outputs/val_noise_index.npy; apply's thresholds)
  roc_snn.npy, roc_mf.npy [n+1, 2]        (false-alarm probability, true-positive rate)
  efficiency.npy [bins, 4]                SNR bin centre, SNN efficiency, MF efficiency, chirps in bin
  fano_layer{L}.npy [units]               Fano factor of spike counts across noise test segments
  rate_layer{L}.npy [units]               mean firing rate (Hz, spikes per frame x frame rate)
  template_masses.npy [n_templates]
``population/``: pca_latents.npy [m, T, n_pcs] (CPC latent frames on their PCs),
  pca_explained_variance.npy [n_pcs], pca_components.npy [n_pcs, latent]
``metrics.json``: AUCs, TPR at each FAP for both detectors, their ratio, the bank's fitting
  factor, firing rates and Fano factors per layer, the quality-bar verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.systems.cpc_snn import data as gw
from neurotrain.systems.cpc_snn import waveforms as wf
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, load_json, load_npy, save_json, save_npy
from neurotrain import stats
from neurotrain.quality import bar as quality_bar


class MatchedFilter:
    """Two-phase matched filter over a chirp-mass bank and the injected coalescence-time range."""

    def __init__(self, asd: np.ndarray, attrs: dict, inj: dict, n_templates: int):
        self.N = (len(asd) - 1) * 2
        self.masses = wf.chirp_masses(inj, n_templates)
        # unit-norm quadrature pairs; |<d, a>|^2 + |<d, b>|^2 over scale^2 is the SNR^2
        self.spectra, self.lags, self.scale = wf.matched_filter_bank(asd, attrs, inj, self.masses)

    def __call__(self, x: np.ndarray, chunk: int = 64) -> np.ndarray:
        out = np.empty(len(x))
        for i in range(0, len(x), chunk):
            X = np.fft.fft(np.asarray(x[i:i + chunk], np.float64), axis=-1)
            best = np.zeros(len(X))
            for s in self.spectra:
                c = np.fft.ifft(X * s[None], axis=-1)[:, self.lags]
                best = np.maximum(best, np.abs(c).max(1))
            out[i:i + chunk] = best / self.scale
        return out

    def fitting_factor(self, asd: np.ndarray, attrs: dict, inj: dict, n: int = 64, seed: int = 0) -> np.ndarray:
        """Recovered / optimal SNR of noise-free random injections (1 = a perfect bank)."""
        rng = np.random.default_rng(seed)
        fs, N = attrs["sample_rate"], self.N
        w = wf.Whitener(asd, N, fs, attrs["f_low"], attrs["f_high"])
        p = wf.draw_injections({**inj, "signal_fraction": 1.0}, n, fs, N, rng)
        clean = []
        for i in range(n):
            h = wf.place_chirp(p["chirp_mass"][i], p["tc"][i], p["phase"][i], fs, attrs["f_start"], N)
            clean.append(w(h) / wf.optimal_snr(h, w))  # SNR 1
        return self(np.asarray(clean))


def analyze(cfg: dict, run_dir: str, data_path: str, truth: str | None) -> None:
    """Stage ``analyze``: ``metrics/``, ``population/`` and ``metrics.json`` under ``run_dir``."""
    a, inj = cfg["analysis"], cfg["data"]["injection"]
    run = Path(run_dir)
    o = run / "outputs"
    data = gw.load_processed(data_path)
    idx = load_npy(o / "test_index.npy")
    scores, labels, snr = load_npy(o / "scores.npy"), load_npy(o / "labels.npy"), load_npy(o / "snr.npy")
    if len(idx) != len(scores) or not np.array_equal(labels, data["label"][idx]):
        raise NeurotrainError(o, "outputs do not match the processed data's test split; rerun extract_model")
    if (labels == 0).sum() * a["bar_fap"] < 1:
        raise NeurotrainError("config key cpc_snn.analysis.bar_fap", f"{int((labels == 0).sum())} noise test segments "
                                                                     f"cannot resolve a false-alarm probability of {a['bar_fap']}")
    val_noise = load_npy(o / "val_noise_index.npy")
    if not np.array_equal(val_noise, np.flatnonzero((data["split"] == 1) & (data["label"] == 0))):
        raise NeurotrainError(o, "outputs do not match the processed data's validation split; rerun extract_model")
    mf = MatchedFilter(data["asd_whiten"], data["attrs"], inj, a["n_templates"])
    mf_scores = mf(data["strain"][idx])
    mf_val_noise = mf(data["strain"][val_noise])
    ff = mf.fitting_factor(data["asd_whiten"], data["attrs"], inj)
    metrics = {"n_test": int(len(idx)), "n_test_noise": int((labels == 0).sum()), "n_test_chirps": int((labels == 1).sum()),
               "auc_snn": stats.roc_auc(scores, labels), "auc_mf": stats.roc_auc(mf_scores, labels),
               "bank": {"n_templates": int(len(mf.masses)), "fitting_factor_min": float(ff.min()),
                        "fitting_factor_median": float(np.median(ff))}, "operating_points": []}
    for fap in a["faps"]:
        t_snn, t_mf = stats.tpr_at_fap(scores, labels, fap), stats.tpr_at_fap(mf_scores, labels, fap)
        metrics["operating_points"].append({"fap": fap, "tpr_snn": t_snn, "tpr_mf": t_mf,
                                            "ratio": t_snn / t_mf if t_mf > 0 else float("nan"),
                                            "mf_threshold_snr": stats.detection_threshold(mf_scores[labels == 0], fap)})
    bar = {"fap": a["bar_fap"], "tpr_snn": stats.tpr_at_fap(scores, labels, a["bar_fap"]),
           "tpr_mf": stats.tpr_at_fap(mf_scores, labels, a["bar_fap"]), "required_ratio": a["bar_ratio"]}
    bar["ratio"] = bar["tpr_snn"] / bar["tpr_mf"] if bar["tpr_mf"] > 0 else float("nan")
    bar["ratio_interval_68"] = stats.bootstrap_tpr_ratio(scores, mf_scores, labels, a["bar_fap"], n=a["n_bootstrap"])
    bar["passed"] = bool(bar["ratio"] >= a["bar_ratio"])
    bar["mf_in_range"] = bool(0.5 <= bar["tpr_mf"] <= 0.9)
    # chance: a detector blind to the data still has TPR = FAP at any threshold
    chance = a["bar_fap"] / bar["tpr_mf"] if bar["tpr_mf"] > 0 else float("nan")
    bar["bars"] = [quality_bar(f"SNN / matched-filter TPR at FAP {a['bar_fap']:g}", bar["ratio"],
                               f">= {a['bar_ratio']:g}", bar["passed"], bar["ratio"] - a["bar_ratio"], chance,
                               f"chance, TPR = FAP = {a['bar_fap']:g}")]
    metrics["quality_bar"] = bar
    # efficiency vs SNR at the bar's threshold
    thr_snn = stats.detection_threshold(scores[labels == 0], a["bar_fap"])
    thr_mf = stats.detection_threshold(mf_scores[labels == 0], a["bar_fap"])
    edges = np.linspace(inj["snr_min"], inj["snr_max"], a["snr_bins"] + 1)
    eff = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (labels == 1) & (snr >= lo) & (snr < hi if hi < edges[-1] else snr <= hi)
        n = int(sel.sum())
        eff.append([(lo + hi) / 2, np.mean(scores[sel] > thr_snn) if n else np.nan,
                    np.mean(mf_scores[sel] > thr_mf) if n else np.nan, n])
    # spikes: firing rates and Fano factors per layer (noise segments: one stationary condition)
    frame_rate = float(load_npy(o / "frame_rate.npy"))
    n_frames = load_npy(o / "raster_layer0.npy").shape[1]
    layers = []
    spike_arrays = {}
    layer = 0
    while (o / f"spike_counts_layer{layer}.npy").is_file():
        c = load_npy(o / f"spike_counts_layer{layer}.npy").astype(np.float64)
        noise_c = c[labels == 0]
        fano = stats.fano_factor(noise_c[:, None, :], np.zeros(len(noise_c)))
        rate = c.mean(0) / n_frames * frame_rate
        spike_arrays[layer] = (fano, rate)
        layers.append({"layer": "bridge" if layer == 0 else f"LIF {layer}", "units": int(c.shape[1]),
                       "mean_rate_hz": float(rate.mean()), "silent_fraction": float(np.mean(c.sum(0) == 0)),
                       "rate_noise_hz": float(noise_c.mean() / n_frames * frame_rate),
                       "rate_chirp_hz": float(c[labels == 1].mean() / n_frames * frame_rate),
                       "fano_median": float(np.nanmedian(fano)) if np.isfinite(fano).any() else float("nan")})
        layer += 1
    metrics["spikes"] = layers
    metrics["frame_rate_hz"] = frame_rate
    # PCA of the CPC latent frames
    lat = load_npy(o / "latents.npy")
    # InfoNCE's chance level: each prediction scores the positive against the other segments of
    # its micro-batch at the same frame and the other frames of its own segment (the micro-batch
    # is the training run's: this stage's config holds only what analysis uses)
    micro = load_json(run / "model" / "config.json")["config"]["training"]["micro_batch"]
    candidates = int(micro + lat.shape[1] - 1)
    metrics["cpc_chance"] = {"candidates": candidates, "loss": float(np.log(candidates)), "accuracy": 1.0 / candidates}
    pca = stats.pca_fit(lat.reshape(-1, lat.shape[-1]), a["n_pcs"])
    log = load_json(run / "model" / "training_log.json")
    summary = {"metrics": metrics, "quality": {"bars": bar["bars"], "passes": bar["passed"]},
               "pca_explained_variance_ratio": pca["explained_variance_ratio"].tolist(),
               "training": log["summary"], "analysis_config": a, "source": data["attrs"].get("source")}
    with atomic_dir(run / "metrics") as m:
        save_npy(m / "mf_scores.npy", mf_scores.astype(np.float32))
        save_npy(m / "mf_val_noise_scores.npy", mf_val_noise.astype(np.float32))
        save_npy(m / "roc_snn.npy", np.stack(stats.roc_curve(scores, labels), 1))
        save_npy(m / "roc_mf.npy", np.stack(stats.roc_curve(mf_scores, labels), 1))
        save_npy(m / "efficiency.npy", np.asarray(eff, np.float64))
        save_npy(m / "template_masses.npy", mf.masses)
        for layer, (fano, rate) in spike_arrays.items():
            save_npy(m / f"fano_layer{layer}.npy", fano)
            save_npy(m / f"rate_layer{layer}.npy", rate)
    with atomic_dir(run / "population") as p:
        save_npy(p / "pca_latents.npy", stats.pca_project(lat, pca).astype(np.float32))
        save_npy(p / "pca_explained_variance.npy", pca["explained_variance_ratio"])
        save_npy(p / "pca_components.npy", pca["components"])
    save_json(run / "metrics.json", summary)
