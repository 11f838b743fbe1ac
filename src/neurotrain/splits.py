"""Random train / validation / test split of n items (trajectories, segments, ...)."""

from __future__ import annotations

import numpy as np

from neurotrain.errors import NeurotrainError


def random_split(n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator,
                 where: str, items: str) -> np.ndarray:
    """[n] int8: 0 train, 1 validation, 2 test, each part non-empty, else an error at ``where``."""
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    if n - n_val - n_test < 1 or n_val < 1 or n_test < 1:
        raise NeurotrainError(where, f"{n} {items} cannot be split into train, validation ({val_fraction}) "
                                     f"and test ({test_fraction})")
    split = np.zeros(n, np.int8)
    order = rng.permutation(n)
    split[order[:n_val]] = 1
    split[order[n_val:n_val + n_test]] = 2
    return split
