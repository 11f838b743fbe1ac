"""Extract CEBRA embeddings and weights from ``model_final.pt``.

``outputs/`` (S sessions, T_s bins of session s, D = output_dim):

=================================  ==============  ===========================================
file                               shape           content
=================================  ==============  ===========================================
embedding_<session>.npy            [T_s, D]        embedding (unit norm); training and test parts
                                                   are transformed separately (no window spans both)
behavior_<session>.npy             [T_s, B]        behaviour labels
latent_<session>.npy (embedded)    [T_s, 2]        the true latent
embedding_init_<session>.npy       [T_test, D]     the untrained encoder's embedding of the held-out part
                                                   (the training run's seeded initial weights)
split_<session>.npy                [T_s] int8      0 = training part, 1 = held-out test part,
                                                   -1 = the gap between them (``data.split_gap``)
=================================  ==============  ===========================================

``weights/<encoder>/<parameter>.npy``: every parameter of every encoder (``shared`` when the
model is shared, else ``session<i>_<name>``), with the layer's own shape.

``export/cebra_model.pt``: the trained model as ``cebra.CEBRA.save`` writes it (sklearn backend),
so that ``cebra.CEBRA.load(path).transform(spikes, session_id=i)`` gives ``embedding_<session>``
(:func:`export_cebra`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.systems.cebra.data import load_processed
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, save_json, save_npy
from neurotrain.systems.cebra.train import build_models, make_solver
from neurotrain.training.checkpoint import load_checkpoint, seed_everything


def extract(cfg: dict, model_dir: str, data_path: str, out_dir: str) -> None:
    """Stage ``extract``: ``weights/`` and ``outputs/`` under ``out_dir``."""
    ck = load_checkpoint(Path(model_dir) / "model_final.pt")
    data = load_processed(data_path)
    mc = ck["model_config"]
    n_features = [int(s["spikes"].shape[1]) for s in data["sessions"]]
    if data["names"] != list(mc["session_names"]) or n_features != list(mc["n_features"]):
        raise NeurotrainError(data_path, f"sessions {', '.join(f'{n} ({k} neurons)' for n, k in zip(data['names'], n_features))} "
                                         f"are not the model's {', '.join(f'{n} ({k} neurons)' for n, k in zip(mc['session_names'], mc['n_features']))}; "
                                         "extract with the dataset the model was trained on")
    # the untrained encoders: the training run's seeded draw (run_preamble seeds, then build_models)
    seed_everything(ck["config"]["training"]["seed"])
    init = make_solver(build_models(mc), {"training": ck["config"]["training"]}, tqdm_on=False)
    # the trained solver's state (CEBRA transforms only with a fitted solver), with the initial weights
    init.load_state_dict({**ck["solver"], "model": init.model.state_dict()})
    init.model.eval()
    models = build_models(mc)
    solver = make_solver(models, {"training": ck["config"]["training"]}, tqdm_on=False)
    solver.load_state_dict(ck["solver"])
    solver.model.eval()
    out = Path(out_dir)
    encoders = [("shared", models[0])] if mc["sharing"] == "shared" else [
        (f"session{i}_{n}", m) for i, (n, m) in enumerate(zip(mc["session_names"], models))]
    with atomic_dir(out / "weights") as w:
        for enc_name, enc in encoders:
            (w / enc_name).mkdir()
            for pname, p in enc.state_dict().items():
                save_npy(w / enc_name / f"{pname}.npy", p.detach().cpu().numpy())
        save_json(w / "model_config.json", mc)
    export_cebra(mc, ck["config"]["training"], ck["solver"], data["sessions"], out / "export" / "cebra_model.pt")
    with atomic_dir(out / "outputs") as o:
        for i, (name, s) in enumerate(zip(data["names"], data["sessions"])):
            # each part separately (training, the gap, held out): no window reaches across the split
            split = np.full(len(s["spikes"]), -1, np.int8)
            split[s["train_idx"]], split[s["test_idx"]] = 0, 1
            emb = np.zeros((len(split), mc["output_dim"]), np.float32)
            for code in (0, -1, 1):
                part = np.flatnonzero(split == code)
                if len(part):
                    with torch.no_grad():
                        emb[part] = solver.transform(torch.as_tensor(s["spikes"][part]), session_id=i).cpu().numpy()
            save_npy(o / f"embedding_{name}.npy", emb.astype(np.float32))
            test = np.flatnonzero(split == 1)
            with torch.no_grad():  # the untrained encoder on the held-out part: the consistency bar's reference
                emb0 = init.transform(torch.as_tensor(s["spikes"][test]), session_id=i).cpu().numpy()
            save_npy(o / f"embedding_init_{name}.npy", emb0.astype(np.float32))
            save_npy(o / f"behavior_{name}.npy", s["behavior"])
            if "latent" in s:
                save_npy(o / f"latent_{name}.npy", s["latent"])
            save_npy(o / f"split_{name}.npy", split)
        save_json(o / "sessions.json", {"names": data["names"], "dt": data["dt"], "source": data["source"]})


def export_cebra(model_config: dict, training: dict, solver_state: dict, sessions: list[dict], path: Path) -> None:
    """Write the trained model as a fitted ``cebra.CEBRA`` estimator (``CEBRA.save``, sklearn
    backend: ``args``, ``state``, ``state_dict``), loadable with ``cebra.CEBRA.load(path)``.

    The estimator is set up by CEBRA itself (``CEBRA._prepare_fit`` on the training parts, as
    ``CEBRA.fit`` would) with the workflow's hyper-parameters, then given the trained solver
    state instead of being fitted. A ``shared`` model becomes one encoder per session holding
    the same weights (CEBRA's estimator has no shared mode); its ``transform`` is unchanged.
    Sessions are ``session_id`` 0, 1, ... in the order of ``model_config["session_names"]``.
    """
    import cebra

    t = training
    est = cebra.CEBRA(model_architecture=model_config["architecture"], num_hidden_units=model_config["num_units"],
                      output_dimension=model_config["output_dim"], batch_size=t["batch_size"],
                      learning_rate=t["learning_rate"], temperature_mode="constant", temperature=t["temperature"],
                      distance="cosine", conditional=t["conditional"], time_offsets=t["time_offset"],
                      max_iterations=t["max_steps"], device="cpu", verbose=False)
    X = [s["spikes"][s["train_idx"]] for s in sessions]
    y = [s["behavior"][s["train_idx"]] for s in sessions]
    if len(X) == 1:
        solver, model, _, multi = est._prepare_fit(X[0], y[0])
    else:
        solver, model, _, multi = est._prepare_fit(X, y)
    if model_config["sharing"] == "shared":  # CEBRA's optimizer holds a copy per session: start it afresh
        solver_state = {**solver_state, "optimizer": solver.optimizer.state_dict()}
    solver.load_state_dict(solver_state)
    # what CEBRA.partial_fit records after fitting (cebra 0.6: CEBRA._partial_fit)
    est.model_, est.solver_ = model, solver
    est.n_features_ = solver.n_features
    est.num_sessions_ = solver.num_sessions if hasattr(solver, "num_sessions") else None
    est.n_features_in_ = [model[n].num_input for n in range(len(model))] if multi else model.num_input
    path.parent.mkdir(parents=True, exist_ok=True)
    est.save(str(path))
