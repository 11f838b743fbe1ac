"""Run-to-run identical torch arithmetic on CPU: one fix that every torch stage applies first.

torch's float kernels for exp, log, tanh, erf, ... call Intel MKL's vector math library (VML)
on each thread's chunk. MKL sets VML up lazily at its first call; when the first call comes
from two OpenMP threads at once, one of them can compute that call's chunk with another code
path: measured here, in about 6% of fresh processes, the first ``exp`` of a 192 x 192 tensor
on 2 threads gave one thread's half with relative errors up to 1.5e-4, while every later call
was exact. That made CEBRA's first InfoNCE value, and so every weight after it, differ between
otherwise identical runs and resumed runs. One call from one thread before any parallel call
sets MKL up (a single small ``log`` was enough for ``exp``: 0 odd results in 150 processes).

Every torch system's ``network.py`` or ``train.py`` (which its extraction module imports too)
imports this module first, so the set-up runs at import, before any computation of the train
and extract stages.
"""

from __future__ import annotations

import torch


def warm_up_vector_math() -> None:
    """Call torch's MKL-backed vector functions once, serially (small tensors stay on the
    calling thread); well under a millisecond."""

    for dtype in (torch.float32, torch.float64):
        x = torch.linspace(0.1, 0.9, 16, dtype=dtype)
        for fn in (torch.exp, torch.log, torch.tanh, torch.erf, torch.sin, torch.cos, torch.sqrt, torch.log1p,
                   torch.expm1, torch.sigmoid):
            fn(x)


warm_up_vector_math()
