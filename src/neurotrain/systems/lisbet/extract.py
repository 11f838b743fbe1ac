"""Export the LISBET embedding model and embed every frame of every sequence.

``weights/``:
  embedder/model_config.json, embedder/weights.pt   the standalone embedding model (backbone
                                                     only, task heads dropped; LISBET's
                                                     ``export_embedder``), from model_final.pt
  <parameter>.npy                                    every parameter of the full model
                                                     (backbone and task heads) as an array
``export/models/<run_id>-embedder/``: the embedder in the layout of lisbet 0.4.3's
  ``export_embedder`` (``model_config.yml``: ``model_id``, ``backbone`` (transformer),
  ``out_heads`` (``embedding``), ``input_features``, ``window_size``, ``window_offset``;
  ``weights/weights_last.pt``: its state dict), which ``lisbet.io.load_model`` loads
  (:func:`export_lisbet`).
``outputs/``:
  embedding_<sequence>.npy   [T, emb_dim]   embedding of the window ending at each frame
  annotations_<sequence>.npy [T] int16      behaviour index per frame (-1 = none)
  sequences.json                            names, split (0 train, 1 val, 2 test), behaviours, fps
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.systems.lisbet.data import load_processed
from neurotrain.io import atomic_dir, save_json, save_npy
from neurotrain.systems.lisbet.train import export_embedder, run_name
from neurotrain.training.checkpoint import load_checkpoint, save_checkpoint


def extract(cfg: dict, model_dir: str, data_path: str, out_dir: str) -> None:
    """Stage ``extract``: ``weights/`` and ``outputs/`` under ``out_dir``."""
    ck = load_checkpoint(Path(model_dir) / "model_final.pt")
    data = load_processed(data_path)
    mc = ck["model_config"]
    emb = export_embedder(mc, ck["model"])
    out = Path(out_dir)
    with atomic_dir(out / "weights") as w:
        (w / "embedder").mkdir()
        save_json(w / "embedder" / "model_config.json", {k: v for k, v in mc.items() if k != "task_ids"})
        save_checkpoint(w / "embedder" / "weights.pt", emb.state_dict())
        for name, p in ck["model"].items():
            save_npy(w / f"{name}.npy", p.cpu().numpy())
    export_lisbet(mc, emb, run_name(ck["config"]["training"], ck["config"]["model"], data["source"]), out / "export")
    bs = cfg["training"]["embed_batch"]
    with atomic_dir(out / "outputs") as o:
        for name, kp, ann in zip(data["names"], data["keypoints"], data["annotations"]):
            x = torch.as_tensor(kp.reshape(len(kp), -1))
            save_npy(o / f"embedding_{name}.npy", emb.embed_sequence(x, bs).numpy().astype(np.float32))
            save_npy(o / f"annotations_{name}.npy", ann.astype(np.int16))
        save_json(o / "sequences.json", {"names": data["names"], "split": data["split"].tolist(),
                                         "behaviors": data["behaviors"], "fps": data["fps"], "source": data["source"]})


def lisbet_state_dict(emb) -> dict:
    """The embedder's parameters under lisbet 0.4.3's names (``MultiTaskModel`` with a
    ``TransformerBackbone``): ``backbone.frame_embedder``, ``backbone.pos_embedder.pos_emb``
    [window, emb_dim], ``backbone.transformer_encoder.layers.<i>.*`` (torch's
    ``nn.TransformerEncoderLayer`` names, which ours share) and ``backbone.layer_norm``."""
    out = {}
    for key, value in emb.state_dict().items():
        key = key.removeprefix("backbone.")
        if key == "pos_embedding":
            out["backbone.pos_embedder.pos_emb"] = value[0].clone()
        elif key.startswith("encoder."):
            out["backbone.transformer_encoder." + key.removeprefix("encoder.")] = value.clone()
        elif key.startswith("norm."):
            out["backbone.layer_norm." + key.removeprefix("norm.")] = value.clone()
        else:
            out["backbone." + key] = value.clone()
    return out


def export_lisbet(model_config: dict, emb, run_id: str, export: Path) -> Path:
    """Write ``models/<run_id>-embedder/`` under ``export`` as lisbet 0.4.3's ``export_embedder``
    lays it out, so that ``lisbet.io.load_model(model_config.yml, weights/weights_last.pt)``
    builds the same embedder: its ``"embedding"`` head returns the last frame of each window
    (``window_offset`` 0), the frame this workflow embeds. Inputs are frames of
    ``input_features`` (individuals x keypoints x (x, y)), flattened in that order, in the
    preprocessed units (positions divided by the frame width). Returns the model folder."""
    import yaml

    from neurotrain.io import atomic_dir, save_text

    model_id = f"{run_id}-embedder"
    config = {
        "model_id": model_id,
        "backbone": {"type": "transformer", "feature_dim": model_config["in_dim"],
                     "embedding_dim": model_config["emb_dim"], "hidden_dim": model_config["hidden_dim"],
                     "num_heads": model_config["num_heads"], "num_layers": model_config["num_layers"],
                     "max_length": model_config["window"]},
        "out_heads": {"embedding": {"output_token_idx": -1}},
        "input_features": {"individuals": list(model_config.get("individuals", ["resident", "intruder"])),
                           "keypoints": list(model_config.get("keypoints", [])), "space": ["x", "y"]},
        "window_size": model_config["window"],
        "window_offset": 0,
    }
    folder = Path(export) / "models" / model_id
    with atomic_dir(folder) as d:
        save_text(d / "model_config.yml", yaml.safe_dump(config, sort_keys=False))
        (d / "weights").mkdir()
        torch.save(lisbet_state_dict(emb), d / "weights" / "weights_last.pt")
    return folder
