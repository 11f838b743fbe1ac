"""LISBET analysis: how well the embedding separates behaviours, against raw keypoints.

A logistic-regression classifier (standardised inputs, class-balanced) is fitted per frame on
the training sequences and scored by macro F1 on the held-out test sequences, once on the
embeddings and once on the raw keypoint features (the baseline), on annotated frames only.

``metrics/``:
  confusion_embedding.npy, confusion_raw.npy   [K, K]   test confusion (row = true, column =
                                                        predicted), K behaviours
  f1_per_class_embedding.npy, f1_per_class_raw.npy [K]
  predicted_<sequence>.npy   [T] int16   embedding classifier's label per frame (test sequences)
``population/``: pca_<sequence>.npy [T, n_pcs] (embedding on the PCs fitted on all frames),
  pca_explained_variance.npy [n_pcs], pca_components.npy [n_pcs, emb_dim].
``metrics.json``: F1 scores, per-task final accuracies, the quality-bar verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurotrain.systems.lisbet.data import load_processed
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, load_json, load_npy, save_json, save_npy
from neurotrain import stats
from neurotrain.quality import bar as quality_bar


def fit_readout(X: np.ndarray, y: np.ndarray, C: float, seed: int = 0):
    """The behaviour read-out: standardised, class-balanced logistic regression fitted on frames
    X [n, features] with labels y [n] (the analysis scores it; apply predicts with it)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, class_weight="balanced",
                                                             random_state=seed))
    return clf.fit(X, y)


def _classify(Xtr, ytr, Xte, yte, K, C, seed):
    clf = fit_readout(Xtr, ytr, C, seed)
    pred = clf.predict(Xte)
    labels = list(range(K))
    return {"macro_f1": float(f1_score(yte, pred, labels=labels, average="macro", zero_division=0)),
            "per_class": f1_score(yte, pred, labels=labels, average=None, zero_division=0),
            "confusion": confusion_matrix(yte, pred, labels=labels), "pred": pred, "model": clf}


def analyze(cfg: dict, run_dir: str, data_path: str, truth: str | None) -> None:
    """Stage ``analyze``: ``metrics/``, ``population/`` and ``metrics.json`` under ``run_dir``."""
    a = cfg["analysis"]
    run = Path(run_dir)
    meta = load_json(run / "outputs" / "sequences.json")
    names, split, behaviors = meta["names"], np.asarray(meta["split"]), meta["behaviors"]
    data = load_processed(data_path)
    emb = {n: load_npy(run / "outputs" / f"embedding_{n}.npy") for n in names}
    ann = {n: load_npy(run / "outputs" / f"annotations_{n}.npy") for n in names}
    raw = {n: k.reshape(len(k), -1) for n, k in zip(data["names"], data["keypoints"])}
    K = len(behaviors)
    fit_seqs = [n for n, s in zip(names, split) if s in (0, 1) and (ann[n] >= 0).any()]
    test_seqs = [n for n, s in zip(names, split) if s == 2 and (ann[n] >= 0).any()]
    summary = {"n_sequences": len(names), "n_frames": int(sum(len(e) for e in emb.values())),
               "behaviors": behaviors, "test_sequences": test_seqs, "analysis_config": a,
               "source": data["source"], "keypoints": data["keypoint_names"], "fps": data["fps"],
               "raw_features": int(next(iter(raw.values())).shape[1])}
    metrics = {}
    if fit_seqs and test_seqs:
        def stack(src, seqs):
            X = np.concatenate([src[n][ann[n] >= 0] for n in seqs])
            y = np.concatenate([ann[n][ann[n] >= 0] for n in seqs])
            return X, y
        res = {}
        for kind, src in (("embedding", emb), ("raw", raw)):
            Xtr, ytr = stack(src, fit_seqs)
            Xte, yte = stack(src, test_seqs)
            res[kind] = _classify(Xtr, ytr, Xte, yte, K, a["classifier_C"], 0)
            metrics[f"confusion_{kind}"] = res[kind]["confusion"]
            metrics[f"f1_per_class_{kind}"] = res[kind]["per_class"]
        for n in test_seqs:
            metrics[f"predicted_{n}"] = res["embedding"]["model"].predict(emb[n]).astype(np.int16)
        fe, fr = res["embedding"]["macro_f1"], res["raw"]["macro_f1"]
        # the margin over the raw-keypoint baseline, with its 95% interval from a paired block
        # bootstrap of the test frames (blocks of analysis.bootstrap_block_s within each sequence)
        yte = np.concatenate([ann[n][ann[n] >= 0] for n in test_seqs])
        groups = np.concatenate([np.full(int((ann[n] >= 0).sum()), i) for i, n in enumerate(test_seqs)])
        labels = list(range(K))
        f1 = lambda y, p: f1_score(y, p, labels=labels, average="macro", zero_division=0)  # noqa: E731
        block = max(1, int(round(a["bootstrap_block_s"] * float(data["fps"]))))
        margin_ci = stats.block_bootstrap_difference(f1, yte, res["embedding"]["pred"], res["raw"]["pred"], groups,
                                                     block, a["n_bootstrap"], seed=0)
        summary.update(macro_f1_embedding=fe, macro_f1_raw=fr,
                       f1_per_class_embedding=dict(zip(behaviors, map(float, res["embedding"]["per_class"]))),
                       f1_per_class_raw=dict(zip(behaviors, map(float, res["raw"]["per_class"]))),
                       test_frames=int(sum((ann[n] >= 0).sum() for n in test_seqs)),
                       label_fractions=dict(zip(behaviors, (np.bincount(np.concatenate([ann[n][ann[n] >= 0] for n in test_seqs]), minlength=K) /
                                                             max(1, sum((ann[n] >= 0).sum() for n in test_seqs))).tolist())))
        summary["macro_f1_margin"] = fe - fr
        summary["macro_f1_margin_ci95"] = margin_ci
        # the bar: a margin chance cannot give (the interval's lower end above zero), and on the
        # embedded data an absolute level as well
        q = {"embedding_beats_raw": bool(margin_ci[0] > 0), "margin_ci95_low": margin_ci[0],
             "bootstrap": f"{a['n_bootstrap']} paired block resamples, blocks of {a['bootstrap_block_s']:g} s"}
        if data["source"] == "embedded":  # a check of the generator (behaviours hidden from single frames)
            q.update(max_raw_f1=a["max_raw_f1"], raw_below_max=bool(fr < a["max_raw_f1"]),
                     min_macro_f1=a["min_macro_f1"], level_passes=bool(fe >= a["min_macro_f1"]))
        q["bars"] = [quality_bar("behaviour macro F1 over the raw-keypoint baseline", fe, "margin's 95% interval "
                                 "above 0 (its lower end is the margin shown)", q["embedding_beats_raw"], margin_ci[0],
                                 fr, "raw keypoints")]
        if "min_macro_f1" in q:
            q["bars"].append(quality_bar("behaviour macro F1, level (embedded data)", fe, f">= {a['min_macro_f1']:g}",
                                         q["level_passes"], fe - a["min_macro_f1"], fr, "raw keypoints"))
        q["passes"] = q["embedding_beats_raw"] and q.get("level_passes", True)
        summary["quality"] = q
    elif data["source"] == "embedded":
        raise NeurotrainError(data_path, "no annotated test sequences to score (raise lisbet.data.test_fraction)")
    else:
        summary["quality"] = {"passes": None, "note": "no behaviour annotations: classifiers not scored"}

    allX = np.concatenate([emb[n] for n in names])
    p = stats.pca_fit(allX, a["n_pcs"])
    log = load_json(run / "model" / "training_log.json")
    last = log["history"][-1]
    summary["final_accuracy"] = {k[len("val_"):-len("_accuracy")]: v for k, v in last.items()
                                 if k.startswith("val_") and k.endswith("_accuracy") and k != "val_accuracy"}
    summary["training"] = log["summary"]
    summary["pca_explained_variance"] = [float(x) for x in p["explained_variance_ratio"]]
    with atomic_dir(run / "metrics") as d:
        for k, v in metrics.items():
            save_npy(d / f"{k}.npy", np.asarray(v))
    with atomic_dir(run / "population") as d:
        for n in names:
            save_npy(d / f"pca_{n}.npy", stats.pca_project(emb[n], p).astype(np.float32))
        save_npy(d / "pca_explained_variance.npy", p["explained_variance_ratio"])
        save_npy(d / "pca_components.npy", p["components"])
    save_json(run / "metrics.json", summary)
