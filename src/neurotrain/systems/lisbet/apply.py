"""Embed new recordings with the trained LISBET model, predict behaviours, find motifs.

Input (``lisbet.apply.inputs.<name>``): one or more files, each read by the readers of
preprocessing: pose files of two mice through ``movement`` (netCDF, DeepLabCut, SLEAP, ...; the
``data.movement`` settings apply), a CalMS21 zip, or a CalMS21 ``.json``. Every recording is
reduced to the model's keypoints (in the model's order), resampled to the model's frame rate
(or refused with ``data.resample: false``) and gap-filled as in training; a file without one
of the model's keypoints, or another number of mice, is refused naming the file.

For every recording:

- the embedding of each frame (the window ending at it), by the trained embedder;
- the behaviour predicted by the analysis' read-out (standardised logistic regression, refitted
  on the training recordings' embeddings and annotations exactly as the analysis fits it),
  when the training data had annotations;
- behaviour motifs without labels: a Gaussian hidden Markov model (``hmmlearn.GaussianHMM``,
  ``apply.motifs`` states, diagonal covariances) fitted on the training recordings' embeddings
  on their first ``apply.motif_pcs`` principal components, as LISBET's discovery mode segments
  embeddings into motifs, and decoded (Viterbi) on the new recording;
- where the recording has annotations (CalMS21 task 1): the macro F1 of the predicted behaviour
  and the adjusted mutual information between motifs and annotated behaviours.

Output (``results/lisbet/<run>/seed<k>/apply/<name>/<recording>/``), T frames at the model's rate:
  embedding.npy   [T, emb_dim] float32
  behavior.npy    [T] int16   predicted behaviour index (``apply.json`` lists the names)
  motifs.npy      [T] int16   HMM state
  annotations.npy [T] int16   the file's own labels (-1 none), when it has any
``results/lisbet/<run>/seed<k>/apply/<name>/``: ``ethogram.png`` (predicted behaviour, motifs and annotations
over time, first recordings) and ``apply.json`` (per recording: file, frames, scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import load_json, load_npy, save_json, save_npy


def read_recordings(paths: list[Path], d: dict, keypoints: list[str]):
    """The recordings of the new files, with the model's ``keypoints``, one at a time."""
    from neurotrain.systems.lisbet.data import KEYPOINTS
    from neurotrain.systems.lisbet.poses import read_calms21, read_pose_file, select_keypoints

    c = d["calms21"]
    for path in paths:
        if path.suffix.lower() in (".zip", ".json"):  # CalMS21's layout, read as preprocessing reads it
            for rec in read_calms21(path, c["frame_width"], c["fps"]):
                rec.keypoints = select_keypoints(rec.keypoints, list(KEYPOINTS), keypoints, str(path))
                yield rec
        else:
            yield read_pose_file(path, d["movement"], keypoints)


def fit_motif_model(train: list[np.ndarray], a: dict):
    """(PCA, GaussianHMM) fitted on training embeddings (whole recordings, up to ``hmm_frames``)."""
    from hmmlearn.hmm import GaussianHMM
    from sklearn.decomposition import PCA

    seqs, total = [], 0
    for e in train:
        if total >= a["hmm_frames"]:
            break
        seqs.append(e[: a["hmm_frames"] - total])
        total += len(seqs[-1])
    X = np.concatenate(seqs)
    pca = PCA(n_components=min(a["motif_pcs"], X.shape[1], len(X)), random_state=a["seed"]).fit(X)
    hmm = GaussianHMM(n_components=a["motifs"], covariance_type="diag", n_iter=a["hmm_iterations"],
                      random_state=a["seed"])
    hmm.fit(pca.transform(X), lengths=[len(s) for s in seqs])
    return pca, hmm


def apply(cfg: dict, run_dir: str, data_path: str, inputs: list[str], out_dir: str) -> dict:
    """Stage ``apply``: embeddings, predicted behaviours and motifs of the recordings in ``inputs``."""
    import torch
    from sklearn.metrics import adjusted_mutual_info_score, f1_score

    from neurotrain.names import plain_name
    from neurotrain.systems.lisbet.analyze import fit_readout
    from neurotrain.systems.lisbet.data import fill_gaps, load_processed
    from neurotrain.systems.lisbet.network import Embedder
    from neurotrain.systems.lisbet.poses import resample
    from neurotrain.training.checkpoint import load_checkpoint

    run, d, a = Path(run_dir), cfg["data"], cfg["apply"]
    ck = load_checkpoint(run / "model" / "model_final.pt")
    mc = ck["model_config"]
    data = load_processed(data_path)
    keypoints = list(mc.get("keypoints") or data["keypoint_names"])
    emb_model = Embedder(mc)
    emb_model.load_state_dict({k: v for k, v in ck["model"].items() if k.startswith("backbone.")})
    emb_model.eval()
    # what the analysis learned from the training recordings
    meta = load_json(run / "outputs" / "sequences.json")
    names, split, behaviors = meta["names"], np.asarray(meta["split"]), meta["behaviors"]
    train_emb = {n: load_npy(run / "outputs" / f"embedding_{n}.npy") for n in names}
    train_ann = {n: load_npy(run / "outputs" / f"annotations_{n}.npy") for n in names}
    fit = [n for n, s in zip(names, split) if s in (0, 1) and (train_ann[n] >= 0).any()]
    readout = None
    if fit:
        X = np.concatenate([train_emb[n][train_ann[n] >= 0] for n in fit])
        y = np.concatenate([train_ann[n][train_ann[n] >= 0] for n in fit])
        readout = fit_readout(X, y, cfg["analysis"]["classifier_C"])
    pca, hmm = fit_motif_model([train_emb[n] for n, s in zip(names, split) if s in (0, 1)], a)

    out = Path(out_dir)
    report, shown, seen = [], [], set()
    W, bs = mc["window"], cfg["training"]["embed_batch"]
    for rec in read_recordings([Path(p) for p in inputs], d, keypoints):
        name = plain_name(rec.name, f"{rec.where}: recording name")
        if name in seen:
            raise NeurotrainError(rec.where, f"recording {name!r} appears twice among the inputs")
        seen.add(name)
        rec = resample(rec, float(data["fps"]), d["resample"])
        kp = np.asarray(rec.keypoints, np.float32)
        if kp.shape[1:] != (2, len(keypoints), 2):
            raise NeurotrainError(rec.where, f"frames of shape {kp.shape[1:]}; the model takes 2 mice x "
                                             f"{len(keypoints)} keypoints x (x, y)")
        if len(kp) < W:
            raise NeurotrainError(rec.where, f"recording {name}: {len(kp)} frames, fewer than the model's window ({W})")
        kp = fill_gaps(kp, name, rec.where, d["max_gap_frames"], keypoints)
        with torch.no_grad():
            z = emb_model.embed_sequence(torch.as_tensor(kp.reshape(len(kp), -1)), bs).numpy().astype(np.float32)
        motifs = hmm.predict(pca.transform(z)).astype(np.int16)
        ann = np.asarray(rec.annotations, np.int16)
        entry = {"recording": name, "file": rec.where, "frames": int(len(z)), "fps": float(data["fps"]),
                 "motif_frames": np.bincount(motifs, minlength=a["motifs"]).tolist()}
        folder = out / name
        folder.mkdir()
        save_npy(folder / "embedding.npy", z)
        save_npy(folder / "motifs.npy", motifs)
        pred = None
        if readout is not None:
            pred = readout.predict(z).astype(np.int16)
            save_npy(folder / "behavior.npy", pred)
            entry["behavior_frames"] = {b: int((pred == k).sum()) for k, b in enumerate(behaviors)}
        if (ann >= 0).any():
            save_npy(folder / "annotations.npy", ann)
            m = ann >= 0
            entry["motif_ami"] = float(adjusted_mutual_info_score(ann[m], motifs[m]))
            if pred is not None:
                entry["macro_f1"] = float(f1_score(ann[m], pred[m], labels=list(range(len(behaviors))),
                                                   average="macro", zero_division=0))
        report.append(entry)
        if len(shown) < 4:
            shown.append((name, pred, motifs, ann if (ann >= 0).any() else None))
    if not report:
        raise NeurotrainError(", ".join(inputs), "no recordings found")
    summary = {"inputs": list(inputs), "behaviors": behaviors, "keypoints": keypoints, "motifs": a["motifs"],
               "readout": "logistic regression on the training recordings' embeddings" if readout is not None else
               "none (the training data had no annotations)", "recordings": report,
               "model": str(run / "model" / "model_final.pt")}
    scored = [r for r in report if "macro_f1" in r]
    if scored:
        summary["macro_f1_mean"] = float(np.mean([r["macro_f1"] for r in scored]))
        summary["motif_ami_mean"] = float(np.mean([r["motif_ami"] for r in scored]))
    _figure(out / "ethogram.png", shown, behaviors, a["motifs"], float(data["fps"]))
    save_json(out / "apply.json", summary)
    return summary


def _figure(path: Path, shown: list, behaviors: list[str], n_motifs: int, fps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotrain.plotting import save_figure

    rows = sum(1 + (p is not None) + (a is not None) for _, p, _, a in shown)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 0.55 * rows + 1.2), sharex=False, squeeze=False)
    axes = axes[:, 0]
    i = 0
    for name, pred, motifs, ann in shown:
        for label, values, k in (("annotated", ann, len(behaviors)), ("predicted", pred, len(behaviors)),
                                 ("motif", motifs, n_motifs)):
            if values is None:
                continue
            ax = axes[i]
            ax.imshow(values[None].astype(float), aspect="auto", cmap="tab10" if k <= 10 else "tab20",
                      vmin=-0.5, vmax=max(k, 10) - 0.5, interpolation="nearest",
                      extent=(0, len(values) / fps, 0, 1))
            ax.set_yticks([])
            ax.set_ylabel(f"{name}\n{label}", rotation=0, ha="right", va="center", fontsize=7)
            i += 1
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time (s)")
    from matplotlib.patches import Patch

    cmap = plt.get_cmap("tab10")
    fig.legend(handles=[Patch(color=cmap(k), label=b) for k, b in enumerate(behaviors)], loc="upper center",
               ncol=len(behaviors), fontsize=7, title="behaviour (annotated, predicted); motifs: one colour per state",
               title_fontsize=7, frameon=False)
    save_figure(fig, path)
