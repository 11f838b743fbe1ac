"""CEBRA analysis: cross-session consistency, behaviour decoding, latent reconstruction, PCA of
the embeddings, Fano factors of the input spike counts.

``metrics/``:
  consistency.npy           [S, S]  CEBRA's consistency_score: R^2 of the linear alignment of
                                    session i's embedding onto session j's (row = source, column =
                                    target; labels binned); NaN diagonal and pairs not scored
  decoding_r2.npy           [S]     kNN decoding of behaviour from the embedding, held-out part
  decoding_median_abs_error.npy [S] median absolute error of that decoding (behaviour units)
  raw_decoding_r2.npy       [S]     the same kNN on the raw spike counts (baseline)
  reconstruction_r2.npy     [S]     reconstruction R^2 of the true latent from the embedding with a
                                    kNN read-out (held-out part; embedded data): the quality bar
  reconstruction_linear_r2.npy [S]  the same with a linear read-out (the CEBRA paper's score),
                                    reported beside; a linear read-out of the true 1-D u itself too
  fano_<session>.npy        [N_s]   Fano factor per neuron (windows of fano_window_bins, conditions
                                    = behaviour bins)
  decoded_<session>.npy     [T_test, B] decoded behaviour on the held-out part
``population/``: pca_<session>.npy [T_s, n_pcs] embedding on its principal components,
  pca_explained_variance_<session>.npy [n_pcs].
``metrics.json``: the summary numbers and quality-bar verdicts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor

from neurotrain.io import atomic_dir, load_json, load_npy, save_json, save_npy
from neurotrain import stats


def knn_decode(train_x, train_y, test_x, k: int, metric: str = "cosine"):
    """kNN regression (distance-weighted, as in CEBRA's decoding examples)."""
    knn = KNeighborsRegressor(n_neighbors=min(k, len(train_x)), weights="distance", metric=metric)
    return knn.fit(train_x, train_y).predict(test_x)


def knn_predict(train_x, train_y, x, k: int, discrete: bool, metric: str = "cosine") -> np.ndarray:
    """One behaviour column predicted from embeddings: distance-weighted kNN regression, or a kNN
    classifier for a discrete column (CEBRA's decoding examples)."""
    from sklearn.neighbors import KNeighborsClassifier

    if not discrete:
        return knn_decode(train_x, train_y, x, k, metric)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), weights="distance", metric=metric)
    return knn.fit(train_x, train_y).predict(x)


def decode_columns(train_x, train_b, test_x, test_b, discrete: list[bool], k: int, metric: str = "cosine") -> list[float]:
    """Per behaviour column: R^2 of kNN regression (continuous columns) or accuracy of a kNN
    classifier (discrete ones), held out; as CEBRA's decoding examples score them."""
    out = []
    for j, is_discrete in enumerate(discrete):
        pred = knn_predict(train_x, train_b[:, j], test_x, k, is_discrete, metric)
        out.append(float(np.mean(pred == test_b[:, j])) if is_discrete else float(r2_score(test_b[:, j], pred)))
    return out


def consistency_matrix(embeddings: list[np.ndarray], labels: list[np.ndarray], names: list[str],
                       bins: int) -> tuple[np.ndarray, list[dict]]:
    """Cross-session consistency with CEBRA's own ``cebra.sklearn.metrics.consistency_score``
    (``between="datasets"``; Schneider, Lee & Mathis 2023), one pair of sessions at a time.

    For the pair (i, j) the held-out embeddings [T_s, D] are aligned on their labels [T_s]
    (``num_discretization_bins=bins`` over the pair's label range, bin means scaled to unit
    length) and a linear regression maps one onto the other; its R^2 is ``mat[i, j]`` (row =
    source, column = target, as CEBRA's consistency plots; NaN diagonal).

    CEBRA refuses a pair when a session has no sample within two bins of some bin (its held-out
    part leaves part of the behaviour range unvisited). Such a pair is not scored: its entries
    stay NaN and it is listed in the returned ``unscored`` [{"pair": [a, b], "reason": ...}];
    statistics are taken over the scored pairs only.
    """
    import cebra

    score = cebra.sklearn.metrics.consistency_score
    S = len(embeddings)
    mat = np.full((S, S), np.nan)
    unscored = []
    for i in range(S):
        for j in range(i + 1, S):
            try:
                scores, pairs, _ = score([embeddings[i], embeddings[j]], between="datasets",
                                         labels=[labels[i], labels[j]], dataset_ids=[i, j],
                                         num_discretization_bins=bins)
            except ValueError as exc:
                unscored.append({"pair": [names[i], names[j]], "reason": _uncovered(labels, i, j, names, bins, exc)})
                continue
            for value, (a, b) in zip(scores, pairs):
                mat[int(a), int(b)] = float(value)
    return mat, unscored


def _uncovered(labels: list[np.ndarray], i: int, j: int, names: list[str], bins: int, exc: Exception) -> str:
    """Why CEBRA could not align sessions i and j: the session whose labels leave bins of the
    pair's range without a sample within two bins (digitised as CEBRA's align_embeddings does)."""
    lo = min(float(np.min(labels[i])), float(np.min(labels[j])))
    hi = max(float(np.max(labels[i])), float(np.max(labels[j])))
    for k in (i, j):
        dig = np.digitize(labels[k], np.linspace(lo, hi, bins))
        present = np.zeros(bins + 2, bool)
        present[np.unique(dig)] = True
        near = np.convolve(present, np.ones(5), "same") > 0  # a sample within two bins
        missing = int((~near[1:bins]).sum())
        if missing:
            return (f"the held-out part of {names[k]} leaves {missing} of {bins - 1} behaviour bins over "
                    f"[{lo:.3g}, {hi:.3g}] without a sample within two bins (CEBRA cannot align them)")
    return f"CEBRA's consistency_score refused the pair ({exc})"


def behaviour_conditions(behavior: np.ndarray, n_bins: int) -> np.ndarray:
    """Conditions [T] for Fano factors: quantile bins of the first behaviour dimension, crossed
    with the rounded values of the others (e.g. the rat's running direction)."""
    b = behavior[:, 0]
    edges = np.unique(np.quantile(b, np.linspace(0, 1, n_bins + 1)[1:-1]))
    cond = np.searchsorted(edges, b)
    if behavior.shape[1] > 1:
        _, rest = np.unique(np.round(behavior[:, 1:]), axis=0, return_inverse=True)
        cond = cond * (int(rest.max()) + 1) + rest.reshape(-1)
    return cond


def analyze(cfg: dict, run_dir: str, data_path: str | None = None, truth_path: str | None = None) -> dict:
    """Stage ``analyze``: ``metrics/``, ``population/``, ``metrics.json`` from ``outputs/``."""
    run = Path(run_dir)
    a = cfg["analysis"]
    meta = load_json(run / "outputs" / "sessions.json")
    names = meta["names"]
    from neurotrain.systems.cebra.data import load_processed

    data = load_processed(data_path)
    o = lambda kind, n: load_npy(run / "outputs" / f"{kind}_{n}.npy")  # noqa: E731
    embs = [o("embedding", n) for n in names]
    behs = [o("behavior", n) for n in names]
    splits = [o("split", n) for n in names]
    has_latent = all((run / "outputs" / f"latent_{n}.npy").exists() for n in names)

    columns, discrete = data["behavior_names"], data["behavior_discrete"]
    first = next((j for j, dsc in enumerate(discrete) if not dsc), 0)  # the first continuous column
    # consistency on the held-out parts, labels = the first continuous behaviour column
    test = [sp == 1 for sp in splits]
    cons, unscored = consistency_matrix([e[m] for e, m in zip(embs, test)], [b[m][:, first] for b, m in zip(behs, test)],
                                        names, a["consistency_bins"])
    per_column, per_column_raw = [], []
    dec_r2, dec_mae, raw_r2, decoded, fanos, pcas = [], [], [], {}, {}, {}
    rec_r2, rec_lin, rec_u_lin, rec_raw = [], [], [], []
    for n, e, b, sp, s in zip(names, embs, behs, splits, data["sessions"]):
        tr, te = sp == 0, sp == 1
        pred = knn_decode(e[tr], b[tr], e[te], a["knn_neighbors"])
        decoded[n] = pred
        # scored on the first continuous behaviour column (u, or the rat's position in metres)
        dec_r2.append(r2_score(b[te, first], pred[:, first]))
        dec_mae.append(float(np.median(np.abs(pred[:, first] - b[te, first]))))
        raw = knn_decode(s["spikes"][tr], b[tr], s["spikes"][te], a["knn_neighbors"], metric="euclidean")
        raw_r2.append(r2_score(b[te, first], raw[:, first]))
        per_column.append(decode_columns(e[tr], b[tr], e[te], b[te], discrete, a["knn_neighbors"]))
        per_column_raw.append(decode_columns(s["spikes"][tr], b[tr], s["spikes"][te], b[te], discrete,
                                             a["knn_neighbors"], metric="euclidean"))
        if has_latent:
            z = o("latent", n)
            rec_r2.append(r2_score(z[te], knn_decode(e[tr], z[tr], e[te], a["knn_neighbors"])))
            rec_lin.append(r2_score(z[te], LinearRegression().fit(e[tr], z[tr]).predict(e[te])))
            rec_u_lin.append(r2_score(z[te], LinearRegression().fit(b[tr], z[tr]).predict(b[te])))
            rec_raw.append(r2_score(z[te], knn_decode(s["spikes"][tr], z[tr], s["spikes"][te], a["knn_neighbors"],
                                                      metric="euclidean")))
        W = a["fano_window_bins"]
        counts = stats.window_counts(s["spikes"][None], W)[0]  # [windows, N]
        cond = behaviour_conditions(b[W // 2: len(counts) * W: W][: len(counts)], a["behavior_bins"])
        fanos[n] = stats.fano_factor(counts[:, None, :], cond, 1)
        p = stats.pca_fit(e, a["n_pcs"])
        pcas[n] = (stats.pca_project(e, p), p["explained_variance_ratio"])

    with atomic_dir(run / "metrics") as d:
        save_npy(d / "consistency.npy", cons)
        save_npy(d / "decoding_r2.npy", np.array(dec_r2))
        save_npy(d / "decoding_median_abs_error.npy", np.array(dec_mae))
        save_npy(d / "raw_decoding_r2.npy", np.array(raw_r2))
        if has_latent:
            save_npy(d / "reconstruction_r2.npy", np.array(rec_r2))
            save_npy(d / "reconstruction_linear_r2.npy", np.array(rec_lin))
        for n in names:
            save_npy(d / f"fano_{n}.npy", fanos[n])
            save_npy(d / f"decoded_{n}.npy", decoded[n])
    with atomic_dir(run / "population") as d:
        for n in names:
            save_npy(d / f"pca_{n}.npy", pcas[n][0])
            save_npy(d / f"pca_explained_variance_{n}.npy", pcas[n][1])

    off = cons[~np.eye(len(names), dtype=bool)]
    off = off[np.isfinite(off)]  # the scored pairs (unscored ones are named in consistency_unscored)
    log = load_json(run / "model" / "training_log.json")
    summary = {
        "sessions": names, "n_neurons": [int(s["spikes"].shape[1]) for s in data["sessions"]],
        "n_bins": [int(s["spikes"].shape[0]) for s in data["sessions"]], "source": meta["source"],
        "consistency_mean": float(np.mean(off)) if off.size else None,
        "consistency_min": float(np.min(off)) if off.size else None,
        "consistency_pairs_scored": int(off.size // 2), "consistency_unscored": unscored,
        "decoding_r2": [float(x) for x in dec_r2], "decoding_median_abs_error": dec_mae,
        "raw_decoding_r2": [float(x) for x in raw_r2],
        "behavior_columns": columns, "decoded_column": columns[first],
        "decoding_per_column": {c: {"kind": "discrete (accuracy)" if dsc else "continuous (R^2)",
                                    "embedding": float(np.mean([r[j] for r in per_column])),
                                    "raw_spikes": float(np.mean([r[j] for r in per_column_raw]))}
                                for j, (c, dsc) in enumerate(zip(columns, discrete))},
        "decoding_r2_mean": float(np.mean(dec_r2)), "raw_decoding_r2_mean": float(np.mean(raw_r2)),
        "fano_mean": {n: float(np.nanmean(f)) for n, f in fanos.items()},
        "pca_explained_variance_top": {n: [float(x) for x in pcas[n][1]] for n in names},
        "test_fraction": float(np.mean([np.mean(sp) for sp in splits])), "analysis_config": a, "final_loss": log["summary"]["final_loss"], "final_goodness_of_fit_bits": log["summary"]["final_goodness_of_fit_bits"],
    }
    quality = {"min_consistency": a["min_consistency"],
               "consistency_passes": bool(np.min(off) >= a["min_consistency"]) if off.size else None}
    if len(names) == 1:
        quality["note"] = "one session: consistency compares two or more sessions, so it is not scored"
    elif unscored:
        left = "; ".join(f"{u['pair'][0]} - {u['pair'][1]}: {u['reason']}" for u in unscored)
        quality["note"] = (f"consistency judged on {off.size // 2} of {len(names) * (len(names) - 1) // 2} session "
                           f"pairs; not scored: {left}")
    if has_latent:
        summary["reconstruction_r2"] = [float(x) for x in rec_r2]
        summary["reconstruction_r2_min"] = float(np.min(rec_r2))
        summary["reconstruction_linear_r2_min"] = float(np.min(rec_lin))
        summary["reconstruction_linear_r2"] = [float(x) for x in rec_lin]
        summary["reconstruction_linear_from_true_behavior_r2"] = [float(x) for x in rec_u_lin]
        summary["raw_reconstruction_r2"] = [float(x) for x in rec_raw]
        quality.update(min_reconstruction=a["min_reconstruction"],
                       reconstruction_passes=bool(np.min(rec_r2) >= a["min_reconstruction"]),
                       reconstruction_linear_meets_bar=bool(np.min(rec_lin) >= a["min_reconstruction"]))
    from neurotrain.quality import bar

    init_files = [run / "outputs" / f"embedding_init_{n}.npy" for n in names]
    cons0 = None
    if len(names) > 1 and all(f.exists() for f in init_files):  # the untrained encoders' consistency
        m0, _ = consistency_matrix([load_npy(f) for f in init_files], [b[m][:, first] for b, m in zip(behs, test)],
                                   names, a["consistency_bins"])
        off0 = m0[~np.eye(len(names), dtype=bool)]
        cons0 = float(np.min(off0[np.isfinite(off0)])) if np.isfinite(off0).any() else None
    summary["consistency_min_init"] = cons0
    quality["bars"] = [bar("cross-session consistency, least consistent pair", summary["consistency_min"],
                           f">= {a['min_consistency']:g}", quality["consistency_passes"],
                           None if summary["consistency_min"] is None else summary["consistency_min"] - a["min_consistency"],
                           cons0, "untrained encoders")]
    if has_latent:
        quality["bars"].append(bar("latent reconstruction R² (kNN, held-out), worst session", float(np.min(rec_r2)),
                                   f">= {a['min_reconstruction']:g}", quality["reconstruction_passes"],
                                   float(np.min(rec_r2)) - a["min_reconstruction"], float(np.min(rec_raw)),
                                   "raw spike counts, same kNN"))
    scored = [v for k, v in quality.items() if k.endswith("_passes") and v is not None]
    quality["passes"] = all(scored) if scored else None
    summary["quality"] = quality
    save_json(run / "metrics.json", summary)
    return summary
