"""Below the permutation floor (Gaussian tail), the floor warning, and leading
batch axes of the permutation tests."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as sps
from scipy.signal import lfilter

from jaxalign import stats
from jaxalign.stats import _tail


def _pair(rng, n, T, r):
    """Truth and prediction columns with population correlation r."""
    y = rng.standard_normal((n, T))
    f = r * y + np.sqrt(1 - r**2) * rng.standard_normal((n, T))
    return y, f


def test_tail_p_matches_a_large_exact_count():
    """From 1,000 permutations the Gaussian tail p equals the p of 200,000
    permutations within a factor 0.6-2 where the latter rests on >= 20 hits,
    for observed r whose p is far below the 1/1001 floor; also with blocks on
    autocorrelated series, where the null's spread is wider than 1/sqrt(n)."""
    rng = np.random.default_rng(1)
    n, r = 150, np.linspace(0.20, 0.31, 12)  # exact sample r: p from ~1e-2.5 to ~1e-4
    y = rng.standard_normal((n, r.size))
    y -= y.mean(0)
    y /= np.linalg.norm(y, axis=0)
    e = rng.standard_normal((n, r.size))
    e -= e.mean(0) + y * np.sum(e * y, axis=0)
    e /= np.linalg.norm(e, axis=0)
    f = r * y + np.sqrt(1 - r**2) * e
    big = stats.permutation_test(y, f, 200_000, seed=11)
    np.testing.assert_allclose(big.r, r, atol=1e-6)
    res = stats.permutation_test(y, f, 1000, seed=12, tail="normal")
    assert res.tail == "normal"
    trusted = big.p * 200_001 >= 21
    assert trusted.sum() >= 8
    below = trusted & (big.p < 1 / 1001)
    assert below.sum() >= 3  # the floor was really passed
    ratio = res.p[trusted] / big.p[trusted]
    assert np.all((ratio > 0.6) & (ratio < 2.0)), ratio
    assert sps.spearmanr(res.p, big.p).statistic > 0.95
    # autocorrelated truth and prediction, 10-sample blocks
    y = lfilter([1], [1, -0.6], rng.standard_normal((n, 12)), axis=0)
    f = lfilter([1], [1, -0.6], rng.standard_normal((n, 12)), axis=0) + np.linspace(0.1, 0.6, 12) * y
    big = stats.permutation_test(y, f, 200_000, seed=11, block_size=10)
    res = stats.permutation_test(y, f, 1000, seed=12, block_size=10, tail="normal")
    trusted = (big.p * 200_001 >= 21) & (big.p < 0.01)
    assert trusted.sum() >= 3
    ratio = res.p[trusted] / big.p[trusted]
    assert np.all((ratio > 0.6) & (ratio < 2.5)), ratio


def test_tail_p_is_calibrated_under_the_null():
    """20,000 null targets, 1,000 permutations: p < 1e-3 and p < 1e-2 occur at
    their nominal rates or below (within 3 binomial sd above, and not below a
    third of nominal: conservative but not useless)."""
    rng = np.random.default_rng(2)
    y, f = _pair(rng, 60, 20_000, 0.0)
    res = stats.permutation_test(y, f, 1000, seed=3, tail="normal")
    for level in (1e-3, 1e-2):
        frac = np.mean(res.p < level)
        sd = np.sqrt(level * (1 - level) / 20_000)
        assert level / 3 <= frac <= level + 3 * sd, (level, frac)


def test_counts_kept_where_they_suffice():
    rng = np.random.default_rng(4)
    y, f = _pair(rng, 80, 50, 0.1)
    plain = stats.permutation_test(y, f, 500, seed=5)
    tail = stats.permutation_test(y, f, 500, seed=5, tail="normal")
    hits = plain.p * 501 - 1
    keep = hits >= _tail.MIN_HITS
    assert keep.sum() > 10
    np.testing.assert_array_equal(tail.p[keep], plain.p[keep])
    assert np.all(tail.p[~keep] <= (_tail.MIN_HITS + 1) / 501 * 1.5)


def test_paired_tail_and_no_tail_for_sign_flips():
    rng = np.random.default_rng(6)
    y, a = _pair(rng, 120, 6, 0.6)
    b = 0.2 * y + rng.standard_normal(y.shape)
    res = stats.paired_permutation_test(y, a, b, 999, seed=1, tail="normal")
    assert (res.p < 1 / 1000).sum() >= 3 and res.tail == "normal"  # below the 1/1000 floor
    with pytest.raises(TypeError):
        stats.sign_flip_test(rng.standard_normal((12, 3)), 999, tail="normal")
    with pytest.raises(ValueError, match="tail"):
        stats.permutation_test(y, a, 99, tail="gpd")


def test_floor_warning_and_its_remedy():
    """The report's case in small: many targets, K = 99, a few strong ones.
    Without the tail BH finds nothing, and a warning says why; with it BH
    finds the strong targets."""
    rng = np.random.default_rng(7)
    y, f = _pair(rng, 100, 2000, 0.0)
    f[:, :5] = y[:, :5] + 0.5 * rng.standard_normal((100, 5))  # r ~ 0.9
    with pytest.warns(UserWarning, match=r"of 2000 targets reached the smallest p.*at least 400.*tail='normal'"):
        res = stats.permutation_test(y, f, 99, seed=1)
    assert not stats.fdr_correction(res.p)[0].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tail = stats.permutation_test(y, f, 99, seed=1, tail="normal")
    reject, _ = stats.fdr_correction(tail.p)
    assert reject[:5].all() and reject[5:].sum() <= 5


def test_no_floor_warning_when_discoveries_are_possible():
    rng = np.random.default_rng(8)
    y, f = _pair(rng, 100, 20, 0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats.permutation_test(y, f, 999, seed=1)  # 20 targets at 1/1000: BH can reject


def test_leading_batch_axes():
    """(L, n, T) predictions against a (n, T) truth: per-layer results equal
    separate calls (same arrangements), the null is (K, L, T), max_stat spans
    every layer; sign flips take (L, n, T) too."""
    rng = np.random.default_rng(9)
    y = rng.standard_normal((50, 4))
    preds = np.stack([y * w + rng.standard_normal((50, 4)) for w in (0.0, 0.5, 1.0)])
    res = stats.permutation_test(y, preds, 199, block_size=5, seed=2, return_null=True,
                                 max_stat=True)
    assert res.r.shape == (3, 4) and res.p.shape == (3, 4) and res.null.shape == (199, 3, 4)
    flat = stats.permutation_test(np.tile(y, 3), np.concatenate(list(preds), axis=1), 199,
                                  block_size=5, seed=2, max_stat=True)
    np.testing.assert_array_equal(res.p_fwe.ravel(), flat.p_fwe)
    for layer in range(3):
        one = stats.permutation_test(y, preds[layer], 199, block_size=5, seed=2,
                                     return_null=True)
        np.testing.assert_allclose(res.r[layer], one.r, atol=1e-7)
        np.testing.assert_array_equal(res.p[layer], one.p)
        np.testing.assert_allclose(res.null[:, layer], one.null, atol=1e-7)
    both = stats.paired_permutation_test(np.stack([y] * 3), preds, preds[::-1], 99, seed=2)
    assert both.statistic.shape == (3, 4)
    np.testing.assert_allclose(both.statistic[1], 0.0, atol=1e-7)
    d = rng.standard_normal((2, 12, 3)) + np.array([0.0, 1.0])[:, None, None]
    flip = stats.sign_flip_test(d, 999, seed=0)
    assert flip.statistic.shape == (2, 3)
    np.testing.assert_allclose(flip.statistic, d.mean(1), atol=1e-6)
    for i in range(2):
        np.testing.assert_array_equal(flip.p[i], stats.sign_flip_test(d[i], 999, seed=0).p)
