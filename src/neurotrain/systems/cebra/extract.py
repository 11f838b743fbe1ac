"""Extract CEBRA embeddings and weights from ``model_final.pt``.

``outputs/`` (S sessions, T_s bins of session s, D = output_dim):

=================================  ==============  ===========================================
file                               shape           content
=================================  ==============  ===========================================
embedding_<session>.npy            [T_s, D]        embedding (unit norm); training and test parts
                                                   are transformed separately (no window spans both)
behavior_<session>.npy             [T_s, B]        behaviour labels
latent_<session>.npy (embedded)    [T_s, 2]        the true latent
split_<session>.npy                [T_s] int8      0 = training part, 1 = held-out test part,
                                                   -1 = the gap between them (``data.split_gap``)
=================================  ==============  ===========================================

``weights/<encoder>/<parameter>.npy``: every parameter of every encoder (``shared`` when the
model is shared, else ``session<i>_<name>``), with the layer's own shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.systems.cebra.data import load_processed
from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_dir, save_json, save_npy
from neurotrain.systems.cebra.train import build_models, make_solver
from neurotrain.training.checkpoint import load_checkpoint


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
            save_npy(o / f"behavior_{name}.npy", s["behavior"])
            if "latent" in s:
                save_npy(o / f"latent_{name}.npy", s["latent"])
            save_npy(o / f"split_{name}.npy", split)
        save_json(o / "sessions.json", {"names": data["names"], "dt": data["dt"], "source": data["source"]})
