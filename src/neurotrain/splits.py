"""Train / validation / test splits: at random for independent items (trials, sequences), in
contiguous time blocks with gaps for windows cut from one recording (segments, chunks)."""

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


def block_split(starts, length: float, val_fraction: float, test_fraction: float, where: str,
                items: str, gap: float | None = None, unit: str = "") -> np.ndarray:
    """Split windows ``[start, start + length)`` of one time axis (``starts`` [n], any order,
    any unit) into contiguous blocks in time: train first, then validation, then test (the
    latest), with a gap of at least ``gap`` (default ``length``, one window) between blocks.
    Windows inside a gap are left out (-1), so no sample is in two splits and no window of one
    split overlaps or comes within ``gap`` of another's. Single samples are windows of length 1
    (``starts`` = sample indices, ``gap`` = a model's receptive field in samples).

    Returns [n] int8: 0 train, 1 validation, 2 test, -1 unused. Validation and test get
    ``round(n * fraction)`` windows each; train gets what precedes them. ``val_fraction`` 0
    means no validation block. Raises NeurotrainError at ``where`` when a split would be empty
    (``unit``, the unit of ``starts``, is for its message)."""
    starts = np.asarray(starts, np.float64)
    gap = length if gap is None else gap
    n = len(starts)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    order = np.argsort(starts, kind="stable")
    t = starts[order]
    split = np.full(n, -1, np.int8)
    hi = n  # windows order[:hi] are still free, latest last
    wanted = [(2, n_test)] + ([(1, n_val)] if val_fraction > 0 else [])
    for code, count in wanted:
        if count < 1 or hi - count < 1:
            break
        split[order[hi - count:hi]] = code
        first = t[hi - count]
        hi -= count
        while hi > 0 and t[hi - 1] + length > first - gap:  # end of the earlier block + the gap
            hi -= 1
    split[order[:hi]] = np.where(split[order[:hi]] == -1, 0, split[order[:hi]])
    if min((split == c).sum() for c in (0, *(code for code, _ in wanted))) < 1:
        parts = f"train, validation ({val_fraction}) and test" if val_fraction > 0 else "train and test"
        raise NeurotrainError(where, f"{n} {items} cannot be split into contiguous {parts} ({test_fraction}) "
                                     f"blocks with a gap of {gap:g}{' ' + unit if unit else ''} between them")
    return split
