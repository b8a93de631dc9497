"""Drift and confound regression fitted on each outer fold's training rows (issue 11's trust rule).

``timing.nuisance_design`` + ``timing.fold_residualizer`` against statsmodels
OLS fitted on the training rows only (an independent least-squares
implementation, with the per-run polynomial basis written out by hand), at
realistic and extreme data scales; equality with ``timing.detrend`` when every
row is used; and ``ridge.nested_cv(fold_targets=...)`` against a loop of
plain ``ridge_cv`` fits on targets cleaned by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign import ridge, timing


def _hand_design(n, runs, order, C):
    """Per run: 1, t, t^2 ... on [-1, 1] (not orthonormalised) and the confounds, block diagonal."""
    blocks = []
    for r in np.unique(runs):
        idx = np.flatnonzero(runs == r)
        t = np.linspace(-1, 1, len(idx))
        local = np.column_stack([t**k for k in range(order + 1)] + ([C[idx]] if C is not None else []))
        block = np.zeros((n, local.shape[1]))
        block[idx] = local
        blocks.append(block)
    return np.hstack(blocks)


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e4])
def test_fold_residualizer_matches_ols_on_training_rows(scale):
    import statsmodels.api as sm

    rng = np.random.default_rng(7)
    n, T = 240, 5
    runs = np.repeat([0, 1, 2], [80, 90, 70])
    C = rng.standard_normal((n, 3))
    Y = scale * (rng.standard_normal((n, T)) + np.linspace(0, 3, n)[:, None] + C @ rng.standard_normal((3, T)))
    train = np.r_[0:100, 130:240]
    test = np.arange(105, 125)
    D = timing.nuisance_design(n, runs, kind="poly", order=2, confounds=C)
    got_train, got_test = timing.fold_residualizer(D)(Y, train, test)
    H = _hand_design(n, runs, 2, C)
    for j in range(T):
        fit = sm.OLS(Y[train, j], H[train]).fit()
        np.testing.assert_allclose(got_train[:, j], fit.resid, rtol=1e-9, atol=1e-9 * scale)
        np.testing.assert_allclose(got_test[:, j], Y[test, j] - H[test] @ fit.params, rtol=1e-9, atol=1e-9 * scale)


def test_test_rows_never_enter_the_fit():
    rng = np.random.default_rng(1)
    n = 120
    D = timing.nuisance_design(n, None, order=1, confounds=rng.standard_normal((n, 2)))
    f = timing.fold_residualizer(D)
    Y = rng.standard_normal((n, 4))
    train, test = np.arange(0, 90), np.arange(95, 120)
    a_train, a_test = f(Y, train, test)
    Y2 = Y.copy()
    Y2[test] += 1e3 * rng.standard_normal((len(test), 4))  # wild test rows
    b_train, b_test = f(Y2, train, test)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_allclose(b_test - a_test, Y2[test] - Y[test])


@pytest.mark.parametrize("kind", ["poly", "dct"])
def test_all_rows_equal_detrend(kind):
    rng = np.random.default_rng(2)
    n = 150
    runs = np.repeat([0, 1], [70, 80])
    C = rng.standard_normal((n, 4))
    Y = rng.standard_normal((n, 6)) * 1e4 + 3e4
    everything = np.arange(n)
    got, _ = timing.fold_residualizer(timing.nuisance_design(n, runs, kind=kind, order=3, confounds=C))(
        Y, everything, everything[:0])
    ref = timing.detrend(Y, runs, kind=kind, order=3, confounds=C)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * 3e4)


def test_per_subject_designs_and_tiled_columns():
    rng = np.random.default_rng(3)
    n, T = 100, 3
    D = np.stack([timing.nuisance_design(n, None, order=1, confounds=rng.standard_normal((n, 2))) for _ in range(2)])
    groups = np.repeat([0, 1], T)
    f = timing.fold_residualizer(D, groups)
    Y = rng.standard_normal((n, 2 * T))
    train, test = np.arange(70), np.arange(75, 100)
    got_train, got_test = f(Y, train, test)
    for g in (0, 1):
        cols = groups == g
        ref_train, ref_test = timing.fold_residualizer(D[g])(Y[:, cols], train, test)
        np.testing.assert_allclose(got_train[:, cols], ref_train)
        np.testing.assert_allclose(got_test[:, cols], ref_test)
    # two permuted copies side by side (the refitted permutation test) use the same pattern
    tiled_train, _ = f(np.hstack([Y, Y[::-1]]), train, test)
    np.testing.assert_allclose(tiled_train[:, :2 * T], got_train)
    with pytest.raises(ValueError, match="not a multiple"):
        f(Y[:, :4], train, test)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="kind"):
        timing.nuisance_design(10, kind="spline")
    with pytest.raises(ValueError, match="confounds"):
        timing.nuisance_design(10, confounds=np.ones((9, 1)))
    with pytest.raises(ValueError, match="column_groups"):
        timing.fold_residualizer(np.ones((2, 10, 1)))
    with pytest.raises(ValueError, match="NaN"):
        timing.fold_residualizer(np.full((10, 1), np.nan))


def test_nested_cv_fold_targets_equals_a_loop_over_folds():
    rng = np.random.default_rng(4)
    n, p, T = 200, 12, 7
    X = rng.standard_normal((n, p))
    C = rng.standard_normal((n, 2))
    Y = X @ rng.standard_normal((p, T)) + 5 * C @ rng.standard_normal((2, T)) + rng.standard_normal((n, T))
    Y += np.linspace(-4, 4, n)[:, None]
    alphas = np.logspace(-1, 4, 6)
    outer = ridge.ContiguousKFold(4, gap=3)
    D = timing.nuisance_design(n, None, order=1, confounds=C)
    hook = timing.fold_residualizer(D)
    folds = []
    res = ridge.nested_cv(X, Y, alphas, outer, 3, standardize="separate", fold_targets=hook,
                          on_fold=lambda k, m: folds.append((k, m)))
    assert folds == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for k, (train, test) in enumerate(res.outer_splits):
        # by hand: least squares on the training rows (numpy), subtracted from both
        beta = np.linalg.lstsq(D[train], Y[train], rcond=None)[0]
        y_train, y_test = Y[train] - D[train] @ beta, Y[test] - D[test] @ beta

        def z(a):
            return (a - a.mean(0)) / a.std(0)

        fit = ridge.ridge_cv(z(X[train]).astype(np.float32), z(y_train).astype(np.float32), alphas, 3)
        pred = z(X[test]) @ np.asarray(fit.coef, np.float64)
        ref = [np.corrcoef(pred[:, j], y_test[:, j])[0, 1] for j in range(T)]
        np.testing.assert_allclose(res.fold_scores[k], ref, atol=2e-4)
        np.testing.assert_array_equal(res.best_alphas[k], fit.best_alphas)
    # the confounds would otherwise dominate: cleaning inside the folds lifts the held-out r
    plain = ridge.nested_cv(X, Y, alphas, outer, 3, standardize="separate")
    assert res.fold_scores.mean() > plain.fold_scores.mean() + 0.1


def test_fold_targets_bad_return_is_named():
    X = np.random.default_rng(0).standard_normal((60, 3))
    Y = X @ np.ones((3, 2))
    with pytest.raises(ValueError, match="fold_targets returned Y_train of shape"):
        ridge.nested_cv(X, Y, [1.0], 3, 2, fold_targets=lambda Y, tr, te: (Y[tr][:, :1], Y[te]))
    with pytest.raises(ValueError, match="non-finite"):
        ridge.nested_cv(X, Y, [1.0], 3, 2, fold_targets=lambda Y, tr, te: (Y[tr] * np.nan, Y[te]))
