"""Toy training: a linear model fitted by the shared torch loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurotrain.io import sha256_file
from neurotrain.systems.toy.data import load_processed
from neurotrain.training.torch_loop import LoopConfig, train


class ToyTask:
    def __init__(self, data: dict):
        self.x, self.y = torch.as_tensor(data["x"]), torch.as_tensor(data["y"])
        self.train_idx, self.val_idx = data["train_idx"], data["val_idx"]
        self.model_config = {"n_features": int(self.x.shape[1])}
        self.model = torch.nn.Linear(self.x.shape[1], 1)

    def _loss(self, idx):
        return torch.mean((self.model(self.x[idx]).squeeze(1) - self.y[idx]) ** 2)

    def train_epoch(self, np_rng, step) -> dict:
        loss = self._loss(np_rng.permutation(self.train_idx))
        self.model.zero_grad()
        loss.backward()
        step()
        return {"train_loss": float(loss)}

    def evaluate(self) -> dict:
        return {"val_loss": float(self._loss(self.val_idx))}

    def detail(self) -> dict:
        return {}

    def format_detail(self, d: dict) -> list[str]:
        return []


def run_training(cfg: dict, data_path: str, out_dir: str, threads: int = 0) -> dict:
    t = cfg["training"]
    torch.manual_seed(t["seed"])
    task = ToyTask(load_processed(data_path))
    loop = LoopConfig(max_epochs=t["max_epochs"], patience=t["max_epochs"] + 1, learning_rate=t["learning_rate"],
                      min_lr=0.0, gradient_clip=0.0, seed=t["seed"], checkpoint_every=10, log_every=10,
                      detail_every=t["max_epochs"] + 1, monitor="val_loss", monitor_mode="min", scheduler="constant")
    data_sha = sha256_file(data_path)
    return train(task, loop, Path(out_dir), {"training": dict(t)}, data_sha,
                 {"system": "toy", "model_config": task.model_config, "versions": {"numpy": np.__version__}})
