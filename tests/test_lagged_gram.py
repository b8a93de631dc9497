"""``timing.lagged_gram``: the Gram matrix, cross-products and sums of a
delayed design over a set of rows, from lagged products of the undelayed
features, against the materialised design (``fir_delays``) in float64."""

import numpy as np
import pytest

from jaxalign.ridge import ContiguousKFold
from jaxalign.timing import fir_delays, lagged_gram


def _reference(X, Y, delays, runs, rows):
    D = fir_delays(np.asarray(X, np.float64), delays, runs)
    S = np.zeros(len(X), bool)
    S[rows] = True
    return D[S].T @ D[S], D[S].T @ np.asarray(Y, np.float64)[S], D[S].sum(0), S.sum()


def _check(res, ref, rtol=1e-12):
    G, C, s, n = ref
    scale = lambda a: np.abs(a).max() + 1e-300  # noqa: E731
    assert res.n == n
    np.testing.assert_allclose(res.gram, G, rtol=0, atol=rtol * scale(G))
    np.testing.assert_allclose(res.cross, C, rtol=0, atol=rtol * scale(C))
    np.testing.assert_allclose(res.sums, s, rtol=0, atol=rtol * scale(s))


@pytest.mark.parametrize("delays", [range(6), (0, 2, 3, 7), (-2, 0, 1, 4)])
@pytest.mark.parametrize("scale", [1.0, 1e-12, 1e4])
def test_equals_materialised_design_on_every_fold(delays, scale):
    """Every fold's training and validation rows of contiguous folds with a
    gap, three runs of unequal length, delays looking back and ahead, data
    at MEG (1e-12) and raw (1e4) scales: equal to float64 rounding. The
    training Gram is also the sum of its blocks'."""
    rng = np.random.default_rng(abs(hash((tuple(delays), scale))) % 2**32)
    n, p, T = 97, 3, 2
    X = (rng.standard_normal((n, p)) * scale).astype(np.float32)
    Y = rng.standard_normal((n, T)) * scale
    runs = np.repeat([0, 1, 2], [40, 25, 32])
    for tr, va in ContiguousKFold(4, gap=3).split(n):
        for rows in (tr, va):
            _check(lagged_gram(X, delays, runs, rows, Y), _reference(X, Y, delays, runs, rows))
        # a fold's sums are the sums of disjoint row sets' (the engine's blocks)
        half = tr[: len(tr) // 2], tr[len(tr) // 2:]
        parts = [lagged_gram(X, delays, runs, h, Y) for h in half]
        whole = lagged_gram(X, delays, runs, tr, Y)
        np.testing.assert_allclose(parts[0].gram + parts[1].gram, whole.gram, rtol=1e-12,
                                   atol=1e-12 * np.abs(whole.gram).max())


def test_whole_design_forms_of_rows_and_default_delays():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 2))
    Y = rng.standard_normal(120)
    ref = _reference(X, Y[:, None], range(40), None, np.arange(120))
    _check(lagged_gram(X, Y=Y), ref)  # default: delays 0..39, all rows
    mask = np.zeros(120, bool)
    mask[10:50] = True
    ref = _reference(X, Y[:, None], (1, 3), None, mask)
    for rows in (mask, slice(10, 50), np.arange(10, 50)):
        _check(lagged_gram(X, (1, 3), rows=rows, Y=Y), ref)
    assert lagged_gram(X, (1, 3), rows=mask).cross is None


def test_bad_input():
    X = np.ones((10, 2))
    with pytest.raises(ValueError, match="X must be 2-D"):
        lagged_gram(np.ones(10), (0, 1))
    with pytest.raises(ValueError, match="repeated"):
        lagged_gram(X, (0, 1, 1))
    with pytest.raises(ValueError, match="Y has 9 samples"):
        lagged_gram(X, (0, 1), Y=np.ones(9))
    with pytest.raises(ValueError, match="finite"):
        lagged_gram(np.full((10, 2), np.nan), (0, 1))
    with pytest.raises(ValueError, match="repeats a sample"):
        lagged_gram(X, (0, 1), rows=[1, 1, 2])
    with pytest.raises(ValueError, match="boolean mask"):
        lagged_gram(X, (0, 1), rows=np.ones(5, bool))
    with pytest.raises(ValueError, match="delays must be integers"):
        lagged_gram(X, (0, 1.5))


# ------------------------------------------------ ridge CV on the delayed design, never built


@pytest.mark.parametrize("scale, offset, scoring, fit_intercept", [
    (1.0, 0.0, "pearson", False), (1e-12, 0.0, "pearson", True), (1e-12, 0.0, "neg_mse", True),
    (1e4, 3e5, "r2", True), (1e4, 3e5, "neg_mse", False)])
def test_lagged_ridge_cv_equals_the_materialised_design(scale, offset, scoring, fit_intercept):
    """``timing.lagged_ridge_cv`` against ``ridge.ridge_cv_moments`` on ``fir_delays(X)`` (the materialised
    design; itself tested against a float64 closed form) and against the row-wise ``ridge.ridge_cv``: the
    same penalties, scores to 1e-9, coefficients to 1e-7 of their scale, and ``lagged_predict`` equal to
    the design times the coefficients. Three runs, contiguous folds with a gap, delays looking back and
    ahead; targets in tesla (1e-12) and raw BOLD with an offset (1e4 +- 3e5)."""
    from jaxalign.ridge import ContiguousKFold, check_cv, ridge_cv, ridge_cv_moments
    from jaxalign.timing import lagged_predict, lagged_ridge_cv

    rng = np.random.default_rng(int(scale * 1e3 % 97) + len(scoring))
    n, p, T = 420, 4, 6
    delays = (-1, 0, 2, 3, 5)
    runs = np.repeat([0, 1, 2], [150, 130, 140])
    X = rng.standard_normal((n, p))
    D = fir_delays(X, delays, runs)
    w = rng.standard_normal((D.shape[1], T)) * (rng.random(T) < 0.7)
    Y = (D @ w * 0.3 + rng.standard_normal((n, T))) * scale + offset
    alphas = np.logspace(-2, 5, 8)
    cv = ContiguousKFold(5, gap=4)
    splits = check_cv(cv, n)
    got = lagged_ridge_cv(X, Y, delays, runs, alphas, splits, scoring=scoring, fit_intercept=fit_intercept)
    ref = ridge_cv_moments(D, Y, alphas, splits, scoring=scoring, fit_intercept=fit_intercept)
    np.testing.assert_array_equal(got.best_alpha_index, ref.best_alpha_index)
    np.testing.assert_allclose(got.cv_scores, ref.cv_scores, rtol=1e-9, atol=1e-9 * np.abs(ref.cv_scores).max())
    np.testing.assert_allclose(got.coef, ref.coef, rtol=0, atol=1e-7 * np.abs(ref.coef).max())
    np.testing.assert_allclose(got.intercept, ref.intercept, rtol=1e-9, atol=1e-9 * scale)
    rows = ridge_cv(D, Y, alphas, splits, scoring=scoring, fit_intercept=fit_intercept)
    assert (np.asarray(rows.best_alpha_index) == got.best_alpha_index).mean() >= 5 / 6  # float32 path: near-ties
    pred = lagged_predict(X, got.coef, delays, runs, got.intercept)
    np.testing.assert_allclose(pred, D @ got.coef + got.intercept, rtol=0,
                               atol=1e-9 * np.abs(D @ got.coef).max() + 1e-9 * abs(offset))


def test_lagged_ridge_cv_and_predict_refuse_bad_input():
    from jaxalign.ridge import AtomMoments, check_cv, ridge_cv_from_moments
    from jaxalign.timing import lagged_predict, lagged_ridge_cv

    X, Y = np.ones((50, 2)), np.ones((50, 1))
    with pytest.raises(ValueError, match="Y has 40 samples"):
        lagged_ridge_cv(X, Y[:40], delays=(0, 1))
    with pytest.raises(ValueError, match="X must be 2-D"):
        lagged_ridge_cv(X[:, 0], Y, delays=(0, 1))
    with pytest.raises(ValueError, match="finite"):
        lagged_ridge_cv(X, np.full((50, 1), np.nan), delays=(0, 1))
    with pytest.raises(ValueError, match="coef must have 2 delays x 2 features = 4 rows"):
        lagged_predict(X, np.ones((3, 1)), delays=(0, 1))
    splits = check_cv(5, 50)
    bad = AtomMoments(np.full(5, 10.0), np.zeros((5, 2)), np.zeros((5, 3, 3)), np.zeros((5, 1)),
                      np.zeros((5, 2, 1)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"moments.x_sums has shape \(5, 2\), expected \(5, 3\) \(5 atoms"):
        ridge_cv_from_moments(bad, splits)
