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
import torch.nn.functional as F
from torch import nn

TASKS = ("nwp", "smp", "dmp", "vsp")


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (the fused flash
    kernel on CPU, in training and in inference alike). Parameters as in ``nn.MultiheadAttention``:
    ``in_proj_weight`` [3E, E] (query, key, value rows), ``in_proj_bias``, ``out_proj``."""

    def __init__(self, emb_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * emb_dim, emb_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * emb_dim))
        self.out_proj = nn.Linear(emb_dim, emb_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, E] -> [B, L, E], or [B, 1, E] for the last query alone."""
        B, L, E = x.shape
        H = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, L, 3, H, E // H)
        q = qkv[:, -1:, 0] if last_only else qkv[:, :, 0]
        a = F.scaled_dot_product_attention(q.transpose(1, 2), qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2))
        return self.out_proj(a.transpose(1, 2).reshape(B, q.shape[1], E))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer, x + attn(LN(x)), then x + FFN(LN(x)) (GELU, no dropout);
    parameter names as in ``nn.TransformerEncoderLayer``."""

    def __init__(self, emb_dim: int, num_heads: int, hidden_dim: int):
        super().__init__()
        self.self_attn = SelfAttention(emb_dim, num_heads)
        self.linear1 = nn.Linear(emb_dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, emb_dim)
        self.norm1 = nn.LayerNorm(emb_dim)
        self.norm2 = nn.LayerNorm(emb_dim)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        a = self.self_attn(self.norm1(x), last_only)
        x = (x[:, -1:] if last_only else x) + a
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class Encoder(nn.Module):
    def __init__(self, emb_dim: int, num_heads: int, hidden_dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(emb_dim, num_heads, hidden_dim) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, W, E] -> the last frame's output [B, E]. Only that frame is read, so the last
        layer computes its query, attention and FFN for that frame alone (same result)."""
        for layer in self.layers[:-1]:
            x = layer(x)
        return self.layers[-1](x, last_only=True)[:, 0]


class TorchReference(nn.Module):
    """Torch's own ``nn.TransformerEncoder`` of pre-norm GELU layers holding an :class:`Encoder`'s
    weights (loaded strictly: the parameter names are the same), read at the last frame like it.
    The definition the encoder is tested and benchmarked against."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        first = encoder.layers[0]
        layer = nn.TransformerEncoderLayer(first.linear1.in_features, first.self_attn.num_heads,
                                           first.linear1.out_features, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.stack = nn.TransformerEncoder(layer, len(encoder.layers), enable_nested_tensor=False)
        self.stack.load_state_dict(encoder.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)[:, -1]


class Backbone(nn.Module):
    def __init__(self, in_dim: int, emb_dim: int, hidden_dim: int, num_heads: int, num_layers: int, max_len: int):
        super().__init__()
        if emb_dim % num_heads:
            raise ValueError(f"emb_dim ({emb_dim}) must be divisible by num_heads ({num_heads})")
        self.frame_embedder = nn.Linear(in_dim, emb_dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, max_len, emb_dim) * 0.02)
        self.encoder = Encoder(emb_dim, num_heads, hidden_dim, num_layers)
        self.norm = nn.LayerNorm(emb_dim)

    @classmethod
    def from_config(cls, c: dict) -> "Backbone":
        return cls(c["in_dim"], c["emb_dim"], c["hidden_dim"], c["num_heads"], c["num_layers"], c["window"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, W, in_dim] -> embedding of the last frame [B, emb_dim]."""
        W = x.shape[1]
        h = self.frame_embedder(x) + self.pos_embedding[:, -W:]
        return self.norm(self.encoder(h))


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
