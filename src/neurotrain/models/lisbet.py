"""LISBET-style transformer over windows of pose frames (Chindemi et al., LISBET).

One token per frame: the frame's keypoints of both mice (2 x 7 x 2 = 28 numbers) go through a
linear frame embedder to ``emb_dim``; a learned positional embedding is added; a pre-norm
transformer encoder (GELU, no dropout) mixes the frames. The window's representation is the
output at its last frame: the per-frame embedding of frame t is that of the window ending at t.
Self-supervised task heads (one binary logit each) read that representation; the standalone
:class:`Embedder` is the backbone without heads.
"""

from __future__ import annotations

import torch
from torch import nn

TASKS = ("nwp", "smp", "dmp", "vsp")


class Backbone(nn.Module):
    def __init__(self, in_dim: int, emb_dim: int, hidden_dim: int, num_heads: int, num_layers: int, max_len: int):
        super().__init__()
        if emb_dim % num_heads:
            raise ValueError(f"emb_dim ({emb_dim}) must be divisible by num_heads ({num_heads})")
        self.frame_embedder = nn.Linear(in_dim, emb_dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, max_len, emb_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(emb_dim, num_heads, hidden_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(emb_dim)

    @classmethod
    def from_config(cls, c: dict) -> "Backbone":
        return cls(c["in_dim"], c["emb_dim"], c["hidden_dim"], c["num_heads"], c["num_layers"], c["window"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, W, in_dim] -> embedding of the last frame [B, emb_dim]."""
        W = x.shape[1]
        h = self.frame_embedder(x) + self.pos_embedding[:, -W:]
        return self.norm(self.encoder(h)[:, -1])


class LisbetModel(nn.Module):
    """Backbone plus one binary head per self-supervised task."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.backbone = Backbone.from_config(config)
        self.heads = nn.ModuleDict({t: nn.Linear(config["emb_dim"], 1) for t in config["task_ids"]})

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](self.backbone(x))[:, 0]


class Embedder(nn.Module):
    """The exported embedding model: the backbone alone (task heads dropped)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.backbone = Backbone.from_config(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @torch.no_grad()
    def embed_sequence(self, frames: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Per-frame embeddings [T, emb_dim] of a sequence of frame features [T, in_dim]: the
        window ending at each frame (the first frames padded by repeating frame 0), batched."""
        W = self.config["window"]
        T = frames.shape[0]
        padded = torch.cat([frames[:1].expand(W - 1, -1), frames], 0)
        windows = padded.unfold(0, W, 1).permute(0, 2, 1)  # [T, W, in_dim], a view
        out = [self.backbone(windows[i:i + batch_size]) for i in range(0, T, batch_size)]
        return torch.cat(out, 0)
