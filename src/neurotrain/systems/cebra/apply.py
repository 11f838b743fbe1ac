"""Embed new sessions with the trained CEBRA model, without retraining.

Input (``cebra.apply.inputs.<name>``), one file per name, in the training bins:

- ``.nwb``: the Units table counted in bins of the training bin size over the span of the
  behaviour series ``data.nwb.behavior`` (read like a training session, :func:`.data.load_nwb`);
- ``.npz`` with ``spikes`` [T, N] (and optionally ``behavior`` [T, B]);
- ``.npy``: spikes [T, N].

CEBRA embeds a session through an encoder trained on its neurons (Schneider, Lee & Mathis 2023:
multi-session training aligns one encoder per session). The new file is embedded by the
encoder of ``apply.session``, or of the one training session with as many neurons; a file
whose neuron count no encoder takes is refused, with the answer: add it to the training
sessions and retrain (a new encoder, aligned to the others by multi-session training).

The model is the exported ``export/cebra_model.pt``, loaded with ``cebra.CEBRA.load`` and
applied with its ``transform(spikes, session_id)``, as a CEBRA user would.

Output (``results/cebra/<run>/seed<k>/apply/<name>/``):
  embedding.npy  [T, D] float32  the embedding
  decoded.npy    [T, B] float32  behaviour decoded from it with the kNN decoder of the analysis
                                 (fitted on the chosen session's training part, its behaviour
                                 columns; discrete columns as classes)
  behavior.npy   [T, B] float32  the file's own behaviour, when it has one
  embedding.png                  the embedding coloured by (decoded or true) behaviour
  apply.json                     input, session used, decoding R^2 / accuracy per column when the
                                 file has behaviour
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import load_npy, save_json, save_npy


def read_session(path: Path, cfg: dict, dt: float, width: int, discrete: list[bool]) -> dict:
    """{"spikes" [T, N] float32, "behavior" [T, B] or None} of one new file."""
    from neurotrain.systems.cebra.data import load_nwb

    suffix = path.suffix.lower()
    if suffix == ".nwb":
        s = load_nwb(path, cfg["data"]["nwb"], dt, lambda w: frozenset(np.flatnonzero(discrete).tolist()))
        spikes, behavior = s["spikes"], s["behavior"]
    elif suffix in (".npz", ".npy"):
        try:
            if suffix == ".npy":
                spikes, behavior = np.load(path, allow_pickle=False), None
            else:
                with np.load(path, allow_pickle=False) as z:
                    if "spikes" not in z.files:
                        raise NeurotrainError(path, f"has no array 'spikes' (it has {', '.join(z.files) or 'none'})")
                    spikes = z["spikes"]
                    behavior = z["behavior"] if "behavior" in z.files else None
        except (OSError, ValueError) as exc:
            raise NeurotrainError(path, f"not a readable numpy file ({exc})") from None
    else:
        raise NeurotrainError(path, "a new session must be an NWB file, a .npz (spikes, behavior) or a .npy of spikes")
    spikes = np.asarray(spikes)
    if spikes.ndim != 2 or spikes.dtype.kind not in "biuf" or 0 in spikes.shape:
        raise NeurotrainError(path, f"spikes must be counts [T, N], got {spikes.dtype} {spikes.shape}")
    if not np.isfinite(spikes).all():
        raise NeurotrainError(path, f"spikes hold {int(np.size(spikes) - np.isfinite(spikes).sum())} NaN/Inf values")
    if behavior is not None:
        behavior = np.asarray(behavior, np.float64)
        behavior = behavior[:, None] if behavior.ndim == 1 else behavior
        if behavior.shape != (len(spikes), width):
            raise NeurotrainError(path, f"behavior has shape {behavior.shape}; expected [{len(spikes)}, {width}] "
                                        "(one row per time bin, the training behaviour's columns)")
    return {"spikes": spikes.astype(np.float32), "behavior": None if behavior is None else behavior.astype(np.float32)}


def choose_session(path: Path, n_neurons: int, names: list[str], n_features: list[int], wanted: str | None) -> int:
    """Index of the training session whose encoder embeds a file of ``n_neurons`` neurons."""
    listing = ", ".join(f"{n} ({k} neurons)" for n, k in zip(names, n_features))
    if wanted is not None:
        if wanted not in names:
            raise NeurotrainError("config key cebra.apply.session", f"{wanted!r} is not a training session ({listing})")
        i = names.index(wanted)
        if n_features[i] != n_neurons:
            raise NeurotrainError(path, f"has {n_neurons} neurons, but session {wanted}'s encoder takes {n_features[i]} "
                                        "(config key cebra.apply.session)")
        return i
    match = [i for i, k in enumerate(n_features) if k == n_neurons]
    if not match:
        raise NeurotrainError(path, f"has {n_neurons} neurons; the model's encoders take {listing}. CEBRA embeds a "
                                    "session only through an encoder trained on its neurons: add this session to the "
                                    "training data and retrain (multi-session training aligns its encoder with the others)")
    if len(match) > 1:
        raise NeurotrainError(path, f"has {n_neurons} neurons like {', '.join(names[i] for i in match)}; name the "
                                    "session recorded from the same neurons with config key cebra.apply.session")
    return match[0]


def apply(cfg: dict, run_dir: str, data_path: str, inputs: list[str], out_dir: str) -> dict:
    """Stage ``apply``: embed the session in ``inputs`` (one file) into ``out_dir``."""
    import cebra

    from neurotrain.systems.cebra.analyze import decode_columns, knn_predict
    from neurotrain.systems.cebra.data import load_processed

    path, run = Path(inputs[0]), Path(run_dir)
    data = load_processed(data_path)
    names, columns, discrete = data["names"], data["behavior_names"], list(data["behavior_discrete"])
    n_features = [int(s["spikes"].shape[1]) for s in data["sessions"]]
    new = read_session(path, cfg, float(data["dt"]), len(columns), discrete)
    i = choose_session(path, new["spikes"].shape[1], names, n_features, cfg["apply"]["session"])
    model = cebra.CEBRA.load(str(run / "export" / "cebra_model.pt"))
    emb = np.asarray(model.transform(new["spikes"], session_id=i) if len(names) > 1 else model.transform(new["spikes"]),
                     np.float32)
    # the analysis' kNN decoder, fitted on the chosen session's training part
    train_emb = load_npy(run / "outputs" / f"embedding_{names[i]}.npy")
    train_beh = load_npy(run / "outputs" / f"behavior_{names[i]}.npy")
    part = load_npy(run / "outputs" / f"split_{names[i]}.npy") == 0
    k = cfg["analysis"]["knn_neighbors"]
    decoded = np.stack([knn_predict(train_emb[part], train_beh[part][:, j], emb, k, discrete[j])
                        for j in range(len(columns))], 1).astype(np.float32)
    out = Path(out_dir)
    save_npy(out / "embedding.npy", emb)
    save_npy(out / "decoded.npy", decoded)
    summary = {"input": str(path), "session": names[i], "session_id": i, "bins": int(len(emb)),
               "bin_size_s": float(data["dt"]), "n_neurons": int(new["spikes"].shape[1]),
               "output_dim": int(emb.shape[1]), "behavior_columns": columns,
               "model": str(run / "export" / "cebra_model.pt")}
    if new["behavior"] is not None:
        save_npy(out / "behavior.npy", new["behavior"])
        scores = decode_columns(train_emb[part], train_beh[part], emb, new["behavior"], discrete, k)
        summary["decoding"] = {c: {"kind": "discrete (accuracy)" if d else "continuous (R^2)", "score": float(v)}
                               for c, d, v in zip(columns, discrete, scores)}
    _figure(out / "embedding.png", emb, new["behavior"] if new["behavior"] is not None else decoded, columns, summary)
    save_json(out / "apply.json", summary)
    return summary


def _figure(path: Path, emb: np.ndarray, colour: np.ndarray, columns: list[str], summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotrain.plotting import save_figure

    fig = plt.figure(figsize=(5.5, 5))
    ax = fig.add_subplot(projection="3d") if emb.shape[1] >= 3 else fig.add_subplot()
    pts = emb[:, :3].T if emb.shape[1] >= 3 else emb[:, :2].T
    sc = ax.scatter(*pts, c=colour[:, 0], s=2, cmap="viridis")
    fig.colorbar(sc, ax=ax, shrink=0.6, label=("" if "decoding" in summary else "decoded ") + columns[0])
    ax.set_title(f"{Path(summary['input']).name} through {summary['session']}'s encoder", fontsize=9)
    save_figure(fig, path)
