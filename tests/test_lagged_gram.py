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


def _impulse_problem(rng, scale, offset=0.0, n=700, p=3, T=4, delays=(0, 1, 3, 6)):
    """Two layers of sparse onset impulses over three runs of unequal length,
    some samples left out (run edges), targets driven by the delayed layer 1."""
    runs = np.repeat([0, 1, 2], [260, 240, 200])
    X = np.zeros((2, n, p))
    at = rng.choice(n, n // 6, replace=False)
    X[:, at] = rng.standard_normal((2, at.size, p))
    D = np.stack([fir_delays(x, delays, runs) for x in X])
    keep = np.ones(n, bool)
    keep[[0, 1, 2, 260, 261, 500, 699]] = False
    Y = D[1][keep] @ rng.standard_normal((len(delays) * p, T)) + 2 * rng.standard_normal((keep.sum(), T))
    return X, Y * scale + offset, D, runs, keep, list(delays)


@pytest.mark.parametrize("standardize", ["separate", "train", None])
@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1e-12, 0.0), (1e4, 3e5)])
def test_lagged_nested_cv_equals_nested_cv_on_the_materialised_design(standardize, scale, offset):
    """The study runner's continuous-MEG fit: per-run z-scored delayed design
    over the kept samples, outer contiguous folds with a gap, inner folds,
    each ``standardize``; MEG (1e-12) and raw (1e4 + offset) target scales.
    Fold scores and pooled scores within 5e-6 (float32 pipeline vs float64
    sums), the same penalties, predictions to 1e-5 of their range."""
    from jaxalign import ridge, timing

    rng = np.random.default_rng(int(np.log10(scale)) + 40 + len(str(standardize)))
    X, Y, D, runs, keep, delays = _impulse_problem(rng, scale, offset)
    alphas = [0.1, 10.0, 1e3, 1e5]
    outer = ContiguousKFold(4, gap=6)
    for fit_intercept in (False, True):
        Dm = timing.zscore_per_run(D[:, keep], runs[keep], axis=-2).astype(np.float32)
        ref = ridge.nested_cv(Dm, Y, alphas, outer, 3, standardize=standardize, fit_intercept=fit_intercept)
        res = timing.lagged_nested_cv(X, Y, delays, runs, alphas, outer, 3, rows=keep, zscore_runs=True,
                                      standardize=standardize, fit_intercept=fit_intercept)
        assert res.fold_scores.shape == ref.fold_scores.shape == (2, 4, 4)
        # the same penalties, but for an inner-CV near-tie that the float32 reference resolves
        # differently (raw scale with a 3e5 offset: 1 of 32 choices; the float64 path's fold scores
        # then equal a float64 numpy refit with its penalty to 3e-8)
        same = res.best_alphas == ref.best_alphas
        assert same.mean() >= (0.96 if offset else 1.0), same.mean()
        np.testing.assert_allclose(res.fold_scores[same], ref.fold_scores[same], atol=5e-6)
        np.testing.assert_allclose(res.fold_scores, ref.fold_scores, atol=1e-3)
        if same.all():
            np.testing.assert_allclose(res.scores, ref.scores, atol=5e-6)
            span = np.abs(ref.predictions).max()
            np.testing.assert_allclose(res.predictions, ref.predictions, rtol=0, atol=1e-5 * span)
        np.testing.assert_allclose(res.targets, ref.targets, rtol=1e-6, atol=1e-6 * np.abs(ref.targets).max())
    assert res.scores[1].min() > 0.2 and res.scores[1].mean() > res.scores[0].mean() + 0.2  # layer 1 drives Y


def test_lagged_nested_cv_options_as_nested_cv():
    """Groups for both CVs, a fold_targets hook, neg_mse scoring, one layer,
    no row selection and no per-run z-scoring: still nested_cv's answer; the
    progress hook sees every outer fold."""
    from jaxalign import ridge, timing

    rng = np.random.default_rng(7)
    X, Y, D, runs, keep, delays = _impulse_problem(rng, 1.0)
    X1, D1 = X[1], D[1]
    Yall = D1 @ rng.standard_normal((D1.shape[1], 3)) + rng.standard_normal((len(D1), 3))
    groups = np.arange(len(D1)) // 35

    def hook(Y, train, test):  # centre on the training mean, as a confound regression would
        mu = Y[train].mean(0)
        return Y[train] - mu, Y[test] - mu

    seen = []
    for scoring in ("neg_mse", "r2"):
        kw = dict(groups=groups, scoring=scoring, fold_targets=hook, standardize="train")
        ref = ridge.nested_cv(D1.astype(np.float32), Yall, [1.0, 100.0], ridge.GroupKFold(5), ridge.GroupKFold(3),
                              **kw)
        res = timing.lagged_nested_cv(X1, Yall, delays, runs, [1.0, 100.0], ridge.GroupKFold(5),
                                      ridge.GroupKFold(3), on_fold=lambda k, n: seen.append((k, n)), **kw)
        assert res.fold_scores.shape == (5, 3) and res.predictions.shape == Yall.shape
        tol = 1e-4 * np.abs(ref.fold_scores).max() if scoring == "neg_mse" else 5e-6
        np.testing.assert_allclose(res.fold_scores, ref.fold_scores, atol=tol)
        np.testing.assert_array_equal(res.best_alphas, ref.best_alphas)
    assert seen[:5] == [(k, 5) for k in range(1, 6)]


def test_lagged_nested_cv_refuses_bad_input():
    from jaxalign.timing import lagged_nested_cv

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((200, 2)), rng.standard_normal((200, 2))
    with pytest.raises(ValueError, match="rows"):
        lagged_nested_cv(X, Y[:150], range(3), rows=np.arange(50, 200)[::-1], outer_cv=3, inner_cv=3)
    with pytest.raises(ValueError, match="150 rows"):
        lagged_nested_cv(X, Y, range(3), rows=np.arange(150), outer_cv=3, inner_cv=3)
    with pytest.raises(ValueError, match="standardize"):
        lagged_nested_cv(X, Y, range(3), outer_cv=3, inner_cv=3, standardize="both")
    with pytest.raises(ValueError, match="finite"):
        lagged_nested_cv(np.where(X > 2, np.nan, X), Y, range(3), outer_cv=3, inner_cv=3)
    with pytest.raises(ValueError, match="repeated"):
        lagged_nested_cv(X, Y, (0, 1, 1), outer_cv=3, inner_cv=3)
    with pytest.raises(ValueError, match="X must be"):
        lagged_nested_cv(X[0], Y, range(3))
