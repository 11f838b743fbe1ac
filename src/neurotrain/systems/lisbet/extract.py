"""Export the LISBET embedding model and embed every frame of every sequence.

``weights/``:
  embedder/model_config.json, embedder/weights.pt   the standalone embedding model (backbone
                                                     only, task heads dropped; LISBET's
                                                     ``export_embedder``), from model_final.pt
  <parameter>.npy                                    every parameter of the full model
                                                     (backbone and task heads) as an array
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
from neurotrain.systems.lisbet.train import export_embedder
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
    bs = cfg["training"]["embed_batch"]
    with atomic_dir(out / "outputs") as o:
        for name, kp, ann in zip(data["names"], data["keypoints"], data["annotations"]):
            x = torch.as_tensor(kp.reshape(len(kp), -1))
            save_npy(o / f"embedding_{name}.npy", emb.embed_sequence(x, bs).numpy().astype(np.float32))
            save_npy(o / f"annotations_{name}.npy", ann.astype(np.int16))
        save_json(o / "sequences.json", {"names": data["names"], "split": data["split"].tolist(),
                                         "behaviors": data["behaviors"], "fps": data["fps"], "source": data["source"]})
