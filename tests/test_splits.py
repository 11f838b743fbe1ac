"""splits.block_split: one rule for every time-series source (GWOSC segments, ring-attractor
trajectories, CEBRA time bins): contiguous blocks, later blocks later, a gap between them."""

import numpy as np
import pytest

from neurotrain.errors import NeurotrainError
from neurotrain.splits import block_split


@pytest.mark.parametrize("length,gap,val", [(1.0, None, 0.15), (0.25, 1.0, 0.1), (1, 10, 0.0)])
def test_blocks_are_ordered_and_a_gap_apart(length, gap, val):
    rng = np.random.default_rng(0)
    starts = rng.permutation(np.arange(400.0) if gap == 10 else rng.uniform(0, 500, 800))  # any order
    split = block_split(starts, length, val, 0.2, "where", "windows", gap=gap)
    need = length if gap is None else gap
    codes = [0, 1, 2] if val > 0 else [0, 2]
    assert set(np.unique(split)) <= {-1, *codes} and all((split == c).any() for c in codes)
    for a, b in zip(codes, codes[1:]):
        end_a = (starts[split == a] + length).max()
        assert starts[split == b].min() >= end_a + need - 1e-9
    assert (split == 2).sum() == round(len(starts) * 0.2)


def test_time_bins_with_a_receptive_field_gap():
    """CEBRA's use: bins 0..T-1, test the last fifth, 10 bins left out before it."""
    split = block_split(np.arange(400), 1, 0.0, 0.2, "s.nwb", "time bins of session s", gap=10)
    assert np.array_equal(np.flatnonzero(split == 0), np.arange(310))
    assert np.array_equal(np.flatnonzero(split == 2), np.arange(320, 400))
    with pytest.raises(NeurotrainError, match="s.nwb: 12 time bins of session s cannot be split into contiguous "
                                              "train and test"):
        block_split(np.arange(12), 1, 0.0, 0.2, "s.nwb", "time bins of session s", gap=10)
