"""Population statistics shared by every system: PSTHs, correlations, PCA, Fano factors,
split-half noise ceilings. Pure numpy; every function documents the shapes it takes."""

from __future__ import annotations

import numpy as np


def psth_by_condition(x: np.ndarray, conditions: np.ndarray, n_conditions: int | None = None) -> np.ndarray:
    """Trial average per condition: x [trials, time, neurons] -> [conditions, time, neurons]."""
    conditions = np.asarray(conditions)
    n_conditions = int(conditions.max()) + 1 if n_conditions is None else n_conditions
    out = np.zeros((n_conditions,) + x.shape[1:], dtype=np.float64)
    for c in range(n_conditions):
        sel = conditions == c
        if sel.any():
            out[c] = x[sel].mean(axis=0)
    return out


def per_neuron_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per neuron (last axis) over all other axes; 0 where either is flat."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / den
    return np.where(den > 0, r, 0.0)


def spearman_brown(r: np.ndarray | float, factor: float = 2.0) -> np.ndarray:
    """Reliability of a measure ``factor`` times longer: k r / (1 + (k - 1) r)."""
    r = np.asarray(r, dtype=np.float64)
    return factor * r / (1.0 + (factor - 1.0) * r)


def split_half_reliability(counts: np.ndarray, conditions: np.ndarray, n_splits: int = 50, seed: int = 0) -> dict:
    """Split-half reliability of condition PSTHs, per neuron.

    counts [trials, time, neurons]; for each of ``n_splits`` random splits of every condition's
    trials into halves, correlate the two halves' PSTHs per neuron over (condition, time).
    Returns ``r_half`` (mean over splits), ``reliability`` (Spearman-Brown stepped up from a
    half to all the trials, i.e. by n_trials / n_half, which is 2 for even counts: the
    correlation expected between two full-size PSTHs) and ``ceiling`` = sqrt(reliability), the
    expected correlation of a perfect model with the full-size PSTH. All [neurons].
    Conditions with a single trial are left out; with none left, everything is NaN.
    """
    rng = np.random.default_rng(seed)
    conditions = np.asarray(conditions)
    values, counts_per = np.unique(conditions, return_counts=True)
    cond_values = values[counts_per >= 2]  # a condition with one trial cannot be split
    n_used = int(counts_per[counts_per >= 2].sum())
    if len(cond_values) == 0:
        nan = np.full(counts.shape[-1], np.nan)
        return {"r_half": nan, "reliability": nan, "ceiling": nan}
    rs = []
    n_half = 0
    for _ in range(n_splits):
        a, b = [], []
        n_half = 0
        for c in cond_values:
            idx = rng.permutation(np.flatnonzero(conditions == c))
            h = len(idx) // 2
            n_half += h
            a.append(counts[idx[:h]].mean(0))
            b.append(counts[idx[h:2 * h]].mean(0))
        rs.append(per_neuron_correlation(np.stack(a), np.stack(b)))
    r_half = np.mean(rs, axis=0)
    # Step up from a half (h trials per condition) to all trials (odd counts leave one out of
    # the halves): factor = all trials / trials in one half.
    rel = spearman_brown(r_half, factor=n_used / n_half)
    return {"r_half": r_half, "reliability": rel, "ceiling": np.sqrt(np.clip(rel, 0.0, None))}


def window_counts(counts: np.ndarray, window_bins: int) -> np.ndarray:
    """Sum counts [trials, time, neurons] over non-overlapping windows -> [trials, windows, neurons]."""
    n_w = counts.shape[1] // window_bins
    if n_w == 0:
        raise ValueError(f"window of {window_bins} bins is longer than the trial ({counts.shape[1]} bins)")
    c = counts[:, : n_w * window_bins]
    return c.reshape(c.shape[0], n_w, window_bins, c.shape[2]).sum(2)


def fano_factor(counts: np.ndarray, conditions: np.ndarray, window_bins: int = 1) -> np.ndarray:
    """Fano factor per neuron of spike counts [trials, time, neurons].

    Counts are summed in windows of ``window_bins`` bins; for every (condition, window) the
    across-trial variance (ddof=1) and mean are taken, and the Fano factor is
    sum(variance) / sum(mean) over (condition, window): the mean-weighted average of the
    per-bin Fano factors, defined even where single bins have mean 0. NaN for silent neurons.
    """
    w = window_counts(np.asarray(counts, dtype=np.float64), window_bins)
    conditions = np.asarray(conditions)
    var_sum = np.zeros(w.shape[2])
    mean_sum = np.zeros(w.shape[2])
    for c in np.unique(conditions):
        sel = w[conditions == c]
        if sel.shape[0] < 2:
            continue
        var_sum += sel.var(axis=0, ddof=1).sum(0)
        mean_sum += sel.mean(axis=0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean_sum > 0, var_sum / mean_sum, np.nan)


def pca_fit(x: np.ndarray, n_components: int) -> dict:
    """PCA of x [samples, features] by SVD of the centred data.

    Returns ``components`` [n_pcs, features] (unit rows, sign fixed so the largest loading is
    positive), ``explained_variance_ratio`` [n_pcs], ``explained_variance`` [n_pcs] and
    ``mean`` [features]. n_pcs = min(n_components, samples, features).
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(n_components, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    var = s**2 / max(x.shape[0] - 1, 1)
    total = var.sum()
    return {"components": comps, "explained_variance": var[:k],
            "explained_variance_ratio": var[:k] / total if total > 0 else np.zeros(k), "mean": mean}


def pca_project(x: np.ndarray, pca: dict) -> np.ndarray:
    """Project x [..., features] onto fitted components -> [..., n_pcs]."""
    return (np.asarray(x, dtype=np.float64) - pca["mean"]) @ pca["components"].T


# --------------------------------------------------------------------------- detection
def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm probability, true-positive rate) at every threshold, from strict to loose."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    y = np.asarray(labels)[order] == 1
    tp, fp = np.cumsum(y), np.cumsum(~y)
    return (np.concatenate([[0.0], fp / max(fp[-1], 1)]), np.concatenate([[0.0], tp / max(tp[-1], 1)]))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    y = np.asarray(labels) == 1
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def detection_threshold(noise_scores: np.ndarray, fap: float) -> float:
    """Threshold whose exceedance rate on the noise-only scores is at most ``fap`` (a score
    strictly above it is a detection); NaN when fewer than 1/fap noise scores exist."""
    s = np.sort(np.asarray(noise_scores))[::-1]
    if len(s) * fap < 1:
        return float("nan")
    return float(s[int(np.floor(fap * len(s)))])


def tpr_at_fap(scores: np.ndarray, labels: np.ndarray, fap: float) -> float:
    y = np.asarray(labels) == 1
    thr = detection_threshold(np.asarray(scores)[~y], fap)
    return float("nan") if np.isnan(thr) else float(np.mean(np.asarray(scores)[y] > thr))


def bootstrap_tpr_ratio(scores: np.ndarray, reference: np.ndarray, labels: np.ndarray, fap: float,
                        n: int = 1000, quantiles=(0.16, 0.84), seed: int = 0) -> list[float]:
    """Quantiles of TPR(scores) / TPR(reference) at ``fap`` over a paired bootstrap of the
    segments: noise and signal segments are resampled separately (their counts stay fixed) and
    both detectors are scored on the same resample, so the thresholds' uncertainty (set by the
    few loudest noise segments) and the true-positive counts' are both in the spread."""
    labels = np.asarray(labels)
    scores, reference = np.asarray(scores), np.asarray(reference)
    noise, signal = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    rng = np.random.default_rng(seed)
    ratios = np.full(n, np.nan)
    for b in range(n):
        i = np.concatenate([rng.choice(noise, len(noise)), rng.choice(signal, len(signal))])
        ref = tpr_at_fap(reference[i], labels[i], fap)
        if ref > 0:
            ratios[b] = tpr_at_fap(scores[i], labels[i], fap) / ref
    if not np.isfinite(ratios).any():
        return [float("nan")] * len(quantiles)
    return [float(q) for q in np.nanquantile(ratios, quantiles)]


def block_bootstrap_difference(metric, y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, groups: np.ndarray,
                               block: int, n: int = 1000, level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile interval (``level``, two-sided) of ``metric(y, pred_a) - metric(y, pred_b)`` over a
    paired block bootstrap: the frames [n_frames] are cut into blocks of ``block`` consecutive frames
    within each group (a recording: ``groups`` [n_frames]), and blocks are drawn with replacement,
    the same blocks for both predictions. Blocks keep the frames' autocorrelation, so the interval
    is not narrowed by counting neighbouring frames as independent (Kuensch 1989, moving blocks;
    here non-overlapping). Returns [low, high]."""
    y, pred_a, pred_b, groups = map(np.asarray, (y, pred_a, pred_b, groups))
    starts = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        starts.extend(idx[k:k + block] for k in range(0, len(idx), block))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for b in range(n):
        take = np.concatenate([starts[i] for i in rng.integers(0, len(starts), len(starts))])
        diffs[b] = metric(y[take], pred_a[take]) - metric(y[take], pred_b[take])
    tail = (1 - level) / 2
    return [float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))]
