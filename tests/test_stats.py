"""Population statistics against small hand-computed cases."""

import numpy as np
import pytest

from neurotrain import stats


def test_fano_factor_hand_case():
    # 1 neuron, 1 condition, 3 trials, 2 bins; window 1 bin.
    counts = np.array([[[1.0], [2.0]], [[3.0], [2.0]], [[5.0], [2.0]]])
    cond = np.zeros(3, int)
    # bin 0: mean 3, var (ddof=1) 4; bin 1: mean 2, var 0 -> (4 + 0) / (3 + 2) = 0.8
    assert stats.fano_factor(counts, cond, 1)[0] == pytest.approx(0.8)
    # window of 2 bins: trial sums 3, 5, 7 -> mean 5, var 4 -> 0.8
    assert stats.fano_factor(counts, cond, 2)[0] == pytest.approx(0.8)


def test_fano_factor_poisson_and_gain():
    rng = np.random.default_rng(0)
    cond = np.repeat(np.arange(2), 2000)
    lam = np.array([2.0, 5.0])[cond][:, None, None] * np.ones((1, 3, 4))
    assert np.allclose(stats.fano_factor(rng.poisson(lam), cond, 1), 1.0, atol=0.07)
    gains = rng.gamma(4.0, 0.25, size=len(cond))[:, None, None]  # CV 0.5
    f = stats.fano_factor(rng.poisson(lam * gains), cond, 1)
    assert np.all(f > 1.4)


def test_fano_silent_neuron_is_nan():
    counts = np.zeros((4, 2, 1))
    assert np.isnan(stats.fano_factor(counts, np.zeros(4, int), 1)[0])


def test_pca_hand_case():
    # points on a line y = 2x: one component (1, 2)/sqrt(5) explains everything
    x = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    p = stats.pca_fit(x, 2)
    assert np.allclose(p["components"][0], np.array([1, 2]) / np.sqrt(5))
    assert p["explained_variance_ratio"] == pytest.approx([1.0, 0.0], abs=1e-12)
    proj = stats.pca_project(x, p)
    assert np.allclose(proj[:, 0], (np.arange(4) - 1.5) * np.sqrt(5))
    # explained variance = sample variance along the component
    assert p["explained_variance"][0] == pytest.approx(np.var(proj[:, 0], ddof=1))


def test_per_neuron_correlation():
    a = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 5.0]])
    b = np.array([[2.0, 3.0], [4.0, 3.0], [6.0, 3.0]])
    r = stats.per_neuron_correlation(a, b)
    assert r[0] == pytest.approx(1.0) and r[1] == 0.0  # flat neuron -> 0


def test_spearman_brown():
    assert stats.spearman_brown(0.5) == pytest.approx(2 * 0.5 / 1.5)
    assert stats.spearman_brown(0.5, 3.0) == pytest.approx(3 * 0.5 / 2.0)


@pytest.mark.parametrize("K", [40, 15])
def test_noise_ceiling_predicts_truth(K):
    rng = np.random.default_rng(K)
    C, T, N = 4, 20, 40
    psth = rng.gamma(2.0, 0.5, size=(C, T, N))
    cond = np.repeat(np.arange(C), K)
    counts = rng.poisson(psth[cond])
    rel = stats.split_half_reliability(counts, cond, n_splits=30, seed=0)
    # the ceiling predicts how well the true PSTH correlates with the K-trial PSTH
    true_r = stats.per_neuron_correlation(psth, stats.psth_by_condition(counts, cond, C))
    assert rel["ceiling"].mean() == pytest.approx(true_r.mean(), abs=0.02)
    assert np.allclose(rel["ceiling"], true_r, atol=0.12)
    assert np.all(rel["reliability"] <= 1.0)


def test_psth_by_condition():
    x = np.arange(12, dtype=float).reshape(4, 3, 1)
    p = stats.psth_by_condition(x, np.array([0, 1, 0, 1]), 2)
    assert np.allclose(p[0, :, 0], (x[0, :, 0] + x[2, :, 0]) / 2)


def test_ceiling_skips_single_trial_conditions():
    rng = np.random.default_rng(3)
    counts = rng.poisson(3.0, size=(9, 5, 4)).astype(float)
    cond = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])  # condition 2 has one trial
    rel = stats.split_half_reliability(counts, cond, n_splits=5)
    assert np.all(np.isfinite(rel["r_half"]))
    only_single = stats.split_half_reliability(counts[:3], np.array([0, 1, 2]), n_splits=5)
    assert np.all(np.isnan(only_single["ceiling"]))


def test_block_bootstrap_difference_is_paired_and_respects_blocks():
    from sklearn.metrics import f1_score

    from neurotrain.stats import block_bootstrap_difference

    rng = np.random.default_rng(0)
    # behaviour in bouts of 50 frames, 4 recordings
    y = np.repeat(rng.integers(0, 3, 80), 50)
    groups = np.repeat(np.arange(4), 1000)
    f1 = lambda t, p: f1_score(t, p, labels=[0, 1, 2], average="macro", zero_division=0)  # noqa: E731
    good = np.where(rng.random(len(y)) < 0.8, y, rng.integers(0, 3, len(y)))
    assert block_bootstrap_difference(f1, y, good, good, groups, 50, n=100) == [0.0, 0.0]  # paired: no spread
    worse = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, 3, len(y)))
    lo, hi = block_bootstrap_difference(f1, y, good, worse, groups, 50, n=150)
    assert 0 < lo < f1(y, good) - f1(y, worse) < hi
    # a prediction wrong on whole bouts: frame resampling would understate the spread
    bouts = np.repeat(np.where(rng.random(80) < 0.5, np.repeat(rng.integers(0, 3, 80), 1), -1), 50)
    coarse = np.where(bouts >= 0, bouts, y)
    wide = np.subtract(*block_bootstrap_difference(f1, y, coarse, good, groups, 50, n=150)[::-1])
    narrow = np.subtract(*block_bootstrap_difference(f1, y, coarse, good, groups, 1, n=150)[::-1])
    assert wide > 1.5 * narrow
