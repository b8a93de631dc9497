"""Scores that are undefined on a fold: computed where defined, refused or
warned where not, never a silent zero model (issue: one-sample folds gave NaN
penalties and zero coefficients; neg MSE dropped constant-truth folds)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import LeaveOneOut

from _reference import ridge_cv64, score64
from jaxalign.ridge import check_cv, nested_cv, ridge_cv

ALPHAS = np.logspace(-2, 4, 7)


def _data(n=40, p=4, T=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    return X, X @ rng.standard_normal((p, T)) + rng.standard_normal((n, T))


@pytest.mark.parametrize("scoring", ["pearson", "r2"])
@pytest.mark.parametrize("cv", ["five of five", "leave-one-out"])
def test_one_sample_folds_refused_for_correlation(scoring, cv):
    X, Y = _data()
    X, Y = (X[:5], Y[:5]) if cv == "five of five" else (X, Y)
    splitter = 5 if cv == "five of five" else LeaveOneOut()
    with pytest.raises(ValueError, match=r"validation fold of 1 sample.*neg_mse"):
        ridge_cv(X, Y, ALPHAS, splitter, scoring=scoring)


def test_one_sample_folds_neg_mse_equals_float64():
    """neg MSE is defined on one sample: leave-one-out equals the closed form."""
    X, Y = _data(n=20)
    splits = check_cv(LeaveOneOut(), 20)
    res = ridge_cv(X, Y, ALPHAS, LeaveOneOut(), scoring="neg_mse")
    sc, alpha, coef = ridge_cv64(X, Y, ALPHAS, splits, "neg_mse")
    np.testing.assert_allclose(res.cv_scores, sc, rtol=2e-5)
    np.testing.assert_array_equal(res.best_alphas, alpha)
    np.testing.assert_allclose(res.coef, coef, rtol=2e-4, atol=2e-5)


def test_neg_mse_keeps_constant_truth_folds():
    """A target constant within one validation fold: MSE is defined there and
    must count (it was dropped: -6.375 where float64 says -6.942)."""
    X, Y = _data(n=50, seed=1)
    Y[:10, 0] = 3.0  # constant in the first of 5 contiguous folds
    splits = check_cv(5, 50)
    res = ridge_cv(X, Y, ALPHAS, 5, scoring="neg_mse")
    sc, alpha, _ = ridge_cv64(X, Y, ALPHAS, splits, "neg_mse")
    np.testing.assert_allclose(res.cv_scores, sc, rtol=2e-5)
    np.testing.assert_array_equal(res.best_alphas, alpha)


@pytest.mark.parametrize("scoring", ["pearson", "r2"])
def test_undefined_folds_are_counted_and_warned(scoring):
    """Pearson / R^2 are undefined on a constant fold: that fold is left out
    of the target's CV mean, with a warning that says so; the other targets
    are unaffected and the mean equals the float64 mean over defined folds."""
    X, Y = _data(n=50, seed=2)
    Y[:10, 1] = -1.0
    splits = check_cv(5, 50)
    with pytest.warns(UserWarning, match=r"1 target\(s\) \(first: \[1\]\).*1 of 5 folds"):
        res = ridge_cv(X, Y, ALPHAS, 5, scoring=scoring)
    ref = np.zeros((len(ALPHAS), 3))
    count = np.zeros(3)
    for tr, va in splits:
        for i, a in enumerate(ALPHAS):
            W = np.linalg.solve(X[tr].T @ X[tr] + a * np.eye(4), X[tr].T @ Y[tr])
            with np.errstate(invalid="ignore", divide="ignore"):
                s = score64(scoring, Y[va], X[va] @ W)
            ref[i] += np.where(np.isfinite(s), s, 0.0)
        count += np.isfinite(s)
    np.testing.assert_allclose(res.cv_scores, ref / count, rtol=2e-5, atol=1e-6)


def test_no_warning_when_every_fold_is_defined():
    X, Y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge_cv(X, Y, ALPHAS, 5)


def test_nested_leave_one_out_outer():
    """Outer leave-one-out: each one-sample fold score is NaN (not a number
    from a zero model), the concatenated held-out r is defined and equals the
    float64 closed form."""
    X, Y = _data(n=30, seed=3)
    res = nested_cv(X, Y, ALPHAS, LeaveOneOut(), 4)
    assert np.isnan(res.fold_scores).all()
    pred = np.empty_like(Y)
    for tr, te in check_cv(LeaveOneOut(), 30):
        _, _, c = ridge_cv64(X[tr], Y[tr], ALPHAS, check_cv(4, len(tr)), "pearson")
        pred[te] = X[te] @ c
    np.testing.assert_allclose(res.predictions, pred, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.scores, score64("pearson", Y, pred), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_columns_have_no_pearson_r(dtype):
    """A constant column (0.4 everywhere: its float64 mean is not exactly
    0.4) has no correlation, also in the float64 host path and for 3-D input."""
    from jaxalign.ridge import pearson_r

    rng = np.random.default_rng(4)
    y = rng.standard_normal((10, 3, 2)).astype(dtype)
    f = rng.standard_normal((10, 3, 2)).astype(dtype)
    y[:, 1, 0] = 0.4
    f[:, 2, 1] = -7.3
    r = np.asarray(pearson_r(y, f))
    assert np.isnan(r[1, 0]) and np.isnan(r[2, 1])
    assert np.isfinite(np.delete(r.ravel(), [2, 5])).all()


@pytest.mark.parametrize("alphas", ["abc", ["1", "x"], [1.0, None], {"a": 1}])
def test_bad_alphas_name_the_argument(alphas):
    X, Y = _data()
    with pytest.raises(ValueError, match="alphas must be"):
        ridge_cv(X, Y, alphas, 5)
