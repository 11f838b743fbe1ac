"""LISBET system: the four self-supervised tasks, the training task for the one torch loop, the
``train`` stage with LISBET's ``run_id`` folder, and the embedder export.

Tasks (LISBET's current code calls them order, cons, shift, warp), each a binary label per
window of ``window`` frames:

- ``nwp`` next window prediction: the window is split at a random frame; the second part is the
  true continuation (1) or a piece from elsewhere in the same recording, earlier when possible (0).
- ``smp`` swap mouse prediction: the intruder comes from the same window (1) or from another
  recording (0).
- ``dmp`` delay mouse prediction: the intruder's trajectory is delayed (1) or advanced (0) by
  ``delay_min..delay_max`` frames against the resident's.
- ``vsp`` video speed prediction: the window is played faster (1, factor ``speed_fast``) or
  slower (0, factor ``speed_slow``) than real time.

Every epoch samples ``train_sample`` of all training windows per task (LISBET's
``--train_sample``), with the loop's seeded generator, so runs and resumed runs are exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurotrain.training import torch_numerics  # noqa: F401  (sets up MKL's vector math before any threaded call)
from neurotrain.systems.lisbet.network import TASKS, Embedder, LisbetModel

MODEL_KEYS = ("emb_dim", "num_layers", "num_heads", "hidden_dim", "window")


class Frames:
    """All sequences' frame features concatenated [N, 2, K, 2] (mice, keypoints, x/y), with
    per-sequence offsets."""

    def __init__(self, keypoints: list[np.ndarray]):
        self.lengths = np.array([len(k) for k in keypoints])
        self.offsets = np.r_[0, np.cumsum(self.lengths)[:-1]]
        self.all = np.concatenate(keypoints).astype(np.float32)

    def gather(self, seq: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Frames [B, W, 2, K, 2] at local indices [B, W] of sequences [B] (clipped to each);
        fractional indices are interpolated linearly between neighbouring frames."""
        hi = self.lengths[seq][:, None] - 1
        local = np.clip(local, 0, hi)
        lo = np.floor(local).astype(int)
        frac = (local - lo).astype(np.float32)
        a = self.all[lo + self.offsets[seq][:, None]]
        if not frac.any():
            return a
        b = self.all[np.minimum(lo + 1, hi) + self.offsets[seq][:, None]]
        f = frac[..., None, None, None]
        return a + f * (b - a)


def make_examples(task: str, frames: Frames, seqs: np.ndarray, n: int, rng: np.random.Generator, t: dict,
                  W: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows [n, W, 28] and binary labels [n] of ``task`` from the sequences ``seqs``."""
    s = rng.choice(seqs, n)
    L = frames.lengths[s]
    start = (rng.random(n) * np.maximum(L - W + 1, 1)).astype(int)
    y = rng.integers(0, 2, n)
    j = np.arange(W)[None, :]
    res_idx = start[:, None] + j
    int_idx = res_idx.copy()
    int_seq = s.copy()
    if task == "nwp":
        k = rng.integers(1, W, n)[:, None]
        u = rng.random(n)
        later_lo, later_hi = start + W, L - W
        other = np.where(start >= W, (u * (start - W + 1)).astype(int),  # an earlier piece when there is one
                         np.where(later_hi >= later_lo, later_lo + (u * (later_hi - later_lo + 1)).astype(int),
                                  (u * np.maximum(L - W + 1, 1)).astype(int)))
        spliced = np.where(j < k, res_idx, other[:, None] + (j - k))
        res_idx = np.where(y[:, None] == 1, res_idx, spliced)
        int_idx = res_idx
    elif task == "smp":
        swap = rng.choice(seqs, n)
        same = swap == s
        swap = np.where(same & (len(seqs) > 1), seqs[(np.searchsorted(seqs, s) + 1) % len(seqs)], swap)
        Ls = frames.lengths[swap]
        ostart = (rng.random(n) * np.maximum(Ls - W + 1, 1)).astype(int)
        int_seq = np.where(y == 1, s, swap)
        int_idx = np.where(y[:, None] == 1, res_idx, ostart[:, None] + j)
    elif task == "dmp":
        d = rng.integers(t["delay_min"], t["delay_max"] + 1, n)
        # windows whose shifted intruder stays inside the recording (no frozen frames at an edge)
        m = t["delay_max"]
        start = m + (rng.random(n) * np.maximum(L - W - 2 * m + 1, 1)).astype(int)
        res_idx = start[:, None] + j
        int_idx = res_idx + np.where(y == 1, -d, d)[:, None]
    elif task == "vsp":
        fast = rng.uniform(*t["speed_fast"], n)
        slow = rng.uniform(*t["speed_slow"], n)
        f = np.where(y == 1, fast, slow)
        span = np.ceil(f * (W - 1)).astype(int)
        start = (rng.random(n) * np.maximum(L - span, 1)).astype(int)
        res_idx = start[:, None] + f[:, None] * j  # fractional: frames are interpolated, never repeated
        int_idx = res_idx
    else:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    x = np.stack([frames.gather(s, res_idx)[:, :, 0], frames.gather(int_seq, int_idx)[:, :, 1]], 2)
    return x.reshape(n, W, -1), y.astype(np.float32)


class LisbetTask:
    """What the torch loop needs: per-epoch sampled windows for every task, validation accuracy."""

    def __init__(self, data: dict, cfg: dict, device: torch.device):
        m, t = cfg["model"], cfg["training"]
        self.device = device
        self.t = t
        self.W = m["window"]
        self.task_ids = list(t["task_ids"])
        # 2 mice x K keypoints (lisbet.data.keypoints) x (x, y), flattened as LISBET's PoseToTensor does
        in_dim = int(np.prod(np.shape(data["keypoints"][0])[1:]))
        self.model_config = {**{k: m[k] for k in MODEL_KEYS}, "in_dim": in_dim, "task_ids": self.task_ids,
                             "keypoints": list(data.get("keypoint_names", [])), "individuals": ["resident", "intruder"]}
        self.model = LisbetModel(self.model_config).to(device)
        self.frames = Frames(data["keypoints"])
        split = np.asarray(data["split"])
        self.train_seqs, self.val_seqs = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
        if len(self.train_seqs) == 0 or len(self.val_seqs) == 0:
            raise ValueError(f"need training and validation sequences, got {len(self.train_seqs)} and "
                             f"{len(self.val_seqs)} (lisbet.data.val_fraction)")
        n_train_windows = int(np.maximum(self.frames.lengths[self.train_seqs] - self.W + 1, 1).sum())
        self.n_per_task = max(t["batch_size"], int(round(t["train_sample"] * n_train_windows)))
        rng = np.random.default_rng(t["seed"] + 1)
        self.val = {k: make_examples(k, self.frames, self.val_seqs, t["val_examples"], rng, t, self.W)
                    for k in self.task_ids}

    def _logits(self, task: str, x: np.ndarray) -> torch.Tensor:
        return self.model(torch.as_tensor(x, device=self.device), task)

    def train_epoch(self, np_rng: np.random.Generator, step) -> dict:
        bs = self.t["batch_size"]
        data = {k: make_examples(k, self.frames, self.train_seqs, self.n_per_task, np_rng, self.t, self.W)
                for k in self.task_ids}
        order = [(k, i) for i in range(0, self.n_per_task, bs) for k in self.task_ids]  # tasks interleaved
        sums = {f"train_{k}_{m}": 0.0 for k in self.task_ids for m in ("loss", "accuracy")}
        counts = dict.fromkeys(self.task_ids, 0)
        for k, i in order:
            x, y = data[k][0][i:i + bs], torch.as_tensor(data[k][1][i:i + bs], device=self.device)
            logits = self._logits(k, x)
            loss = F.binary_cross_entropy_with_logits(logits, y)
            self.model.zero_grad(set_to_none=True)
            loss.backward()
            step()
            n = len(y)
            sums[f"train_{k}_loss"] += float(loss.detach()) * n
            sums[f"train_{k}_accuracy"] += float(((logits.detach() > 0).float() == y).sum())
            counts[k] += n
        out = {key: v / counts[key.split("_")[1]] for key, v in sums.items()}
        out["train_loss"] = float(np.mean([out[f"train_{k}_loss"] for k in self.task_ids]))
        return out

    def evaluate(self) -> dict:
        out, losses, accs = {}, [], []
        for k, (x, y) in self.val.items():
            logits = torch.cat([self._logits(k, x[i:i + 512]) for i in range(0, len(x), 512)])
            yt = torch.as_tensor(y, device=self.device)
            loss = float(F.binary_cross_entropy_with_logits(logits, yt))
            acc = float(((logits > 0).float() == yt).float().mean())
            out[f"val_{k}_loss"], out[f"val_{k}_accuracy"] = loss, acc
            losses.append(loss)
            accs.append(acc)
        out["val_loss"], out["val_accuracy"] = float(np.mean(losses)), float(np.mean(accs))
        return out

    def detail(self) -> dict:
        return {}

    def format_detail(self, d: dict) -> list[str]:
        return ["per-task validation accuracy: " + ", ".join(f"{k}={d[f'val_{k}_accuracy']:.3f}" for k in self.task_ids)]


def loop_config(t: dict):
    from neurotrain.training.torch_loop import LoopConfig

    return LoopConfig(max_epochs=t["epochs"], patience=t["epochs"] + 1, learning_rate=t["learning_rate"], min_lr=0.0,
                      gradient_clip=t["gradient_clip"], seed=t["seed"], checkpoint_every=t["checkpoint_every"],
                      log_every=1, detail_every=t["checkpoint_every"], monitor="val_accuracy", monitor_mode="max",
                      monitor_label="val_acc", monitor_name="mean validation accuracy over tasks",
                      scheduler="constant")


def run_training(cfg: dict, data_path: str, out_dir: str, threads: int = 0) -> dict:
    """Stage ``train``: self-supervised training; also writes LISBET's ``<run_id>/`` folder
    (``model_config.json``, ``weights/weights_last.pt``, ``weights/weights_best.pt``,
    ``training_history.json``) beside the workflow's model files."""
    from neurotrain.systems.lisbet.data import load_processed
    from neurotrain.errors import NeurotrainError
    from neurotrain.io import atomic_dir, save_json, sha256_file
    from neurotrain.training.checkpoint import load_checkpoint, save_checkpoint
    from neurotrain.names import plain_name
    from neurotrain.training.checkpoint import run_preamble
    from neurotrain.training.runstate import versions
    from neurotrain.training.torch_loop import train

    t, m = cfg["training"], cfg["model"]
    if m["emb_dim"] % m["num_heads"]:  # the model's own sizes, named by their key before any data is read
        raise NeurotrainError("config key lisbet.model.num_heads",
                              f"{m['num_heads']} attention heads do not divide emb_dim {m['emb_dim']}")
    reserved = ("model_best.pt", "model_final.pt", "training_log.json", "config.json", "checkpoints")
    if t["run_id"] is not None:  # a configured name is checked before any data is read
        plain_name(t["run_id"], "config key lisbet.training.run_id", reserved=reserved)
    data = load_processed(data_path)
    run_id = run_name(t, m, data["source"])
    plain_name(run_id, "config key lisbet.training.run_id", reserved=reserved)
    device = run_preamble("lisbet", t, threads)
    try:
        task = LisbetTask(data, cfg, device)
    except ValueError as exc:
        raise NeurotrainError(data_path, str(exc)) from None
    data_sha = sha256_file(data_path)
    record = {k: cfg[k] for k in ("model", "training")}
    run_record = {"system": "lisbet", "run_id": run_id, "model_config": task.model_config, "device": str(device), "data": str(data_path),
                  "data_sha256": data_sha, "n_train_sequences": len(task.train_seqs),
                  "windows_per_task_per_epoch": task.n_per_task,
                  "versions": versions(torch, np)}
    out = Path(out_dir)
    summary = train(task, loop_config(t), out, record, data_sha, run_record)
    with atomic_dir(out / run_id) as r:
        save_json(r / "model_config.json", task.model_config)
        (r / "weights").mkdir()
        for kind in ("final", "best"):
            ck = load_checkpoint(out / f"model_{kind}.pt")
            save_checkpoint(r / "weights" / f"weights_{'last' if kind == 'final' else 'best'}.pt", ck["model"])
        from neurotrain.io import load_json

        save_json(r / "training_history.json", load_json(out / "training_log.json")["history"])
    return summary


def run_name(training: dict, model: dict, source: str) -> str:
    """LISBET's naming of a run folder by model size and dataset (``lisbet<emb_dim>x<num_layers>-
    <source>``), unless ``training.run_id`` names it."""
    return training["run_id"] or f"lisbet{model['emb_dim']}x{model['num_layers']}-{source}"


def export_embedder(model_config: dict, state: dict) -> Embedder:
    """The standalone embedding model from a full model's state dict (task heads dropped)."""
    emb = Embedder(model_config)
    emb.load_state_dict({k: v for k, v in state.items() if k.startswith("backbone.")})
    return emb.eval()
