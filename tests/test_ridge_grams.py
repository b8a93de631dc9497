"""The Gram path of the ridge engine (``folds_from="grams"``, n >> p): every
fold from per-block float64 Gram matrices and cross-products, against a
float64 closed-form loop on fresh random data, at realistic and extreme
scales, with layers and intercepts, and under every kind of split."""

import numpy as np
import pytest

from jaxalign.ridge import (
    ContiguousKFold,
    KFold,
    LeaveOneGroupOut,
    RidgeCV,
    ShuffleSplit,
    ridge_cv,
)
from jaxalign.ridge._gram import sample_blocks

ALPHAS = np.logspace(-2, 6, 9)
N, P, T = 600, 20, 8  # one shape for most tests: one compilation


def planted(rng, n, p, T, decay=1.0):
    """Features with singular values ~ k^-decay (ill-conditioned like LM
    features); targets from ~0 to high SNR; float32."""
    X = rng.standard_normal((n, p)) * np.arange(1, p + 1) ** -decay
    X = X @ np.linalg.qr(rng.standard_normal((p, p)))[0]
    signal = X @ rng.standard_normal((p, T))
    snr = np.logspace(-1.5, 1, T)
    Y = signal / signal.std(0) * snr + rng.standard_normal((n, T))
    return X.astype(np.float32), Y.astype(np.float32)


def _score64(scoring, y, f):
    yc, fc = y - y.mean(0), f - f.mean(0)
    if scoring == "pearson":
        return (yc * fc).sum(0) / np.sqrt((yc**2).sum(0) * (fc**2).sum(0))
    sse = ((y - f) ** 2).sum(0)
    return 1 - sse / (yc**2).sum(0) if scoring == "r2" else -sse / len(y)


def _fit64(X, Y, alpha, fit_intercept):
    xm = X.mean(0) if fit_intercept else np.zeros(X.shape[1])
    ym = Y.mean(0) if fit_intercept else np.zeros(Y.shape[1])
    Xc = X - xm
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ (Y - ym))
    return W, ym - xm @ W


def reference64(X, Y, alphas, splits, scoring="pearson", fit_intercept=False):
    """Float64 closed form (np.linalg.solve, no eigendecomposition): CV
    scores, best penalty index (ties within 1e-6 to the larger penalty, the
    engine's rule), coefficients and intercepts refitted on all samples."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    scores = np.zeros((len(alphas), Y.shape[1]))
    for tr, va in splits:
        for i, a in enumerate(alphas):
            W, b = _fit64(X[tr], Y[tr], a, fit_intercept)
            scores[i] += _score64(scoring, Y[va], X[va] @ W + b) / len(splits)
    top = scores.max(0)
    tied = scores >= top - 1e-6 * np.maximum(np.abs(top), 1)
    best = len(alphas) - 1 - np.argmax(tied[::-1], axis=0)
    coef = np.empty((X.shape[1], Y.shape[1]))
    icpt = np.empty(Y.shape[1])
    for t, b in enumerate(best):
        W, c = _fit64(X, Y[:, [t]], alphas[b], fit_intercept)
        coef[:, t], icpt[t] = W[:, 0], c[0]
    return scores, best, coef, icpt


def check(res, ref, score_atol=2e-5, coef_rtol=2e-4, scale=1.0):
    """Same penalties; scores within ``score_atol`` (in units of ``scale**2``
    for neg_mse); each target's coefficients within ``coef_rtol`` of its
    largest."""
    scores, best, coef, icpt = ref
    assert res.folds_from == "grams"
    np.testing.assert_array_equal(res.best_alpha_index, best)
    np.testing.assert_allclose(res.cv_scores, scores, rtol=0,
                               atol=score_atol * (scale**2 if res.scoring == "neg_mse" else 1))
    err = np.abs(res.coef - coef).max(0) / np.abs(coef).max(0)
    assert err.max() < coef_rtol, err.max()
    np.testing.assert_allclose(res.intercept, icpt, rtol=1e-6,
                               atol=coef_rtol * np.abs(coef).max() * 10 + 1e-12 * scale)


@pytest.mark.parametrize("scoring,sweep,fit_intercept", [
    ("pearson", "direct", False), ("r2", "partial_fractions", True), ("neg_mse", "auto", True)])
def test_grams_equal_float64_closed_form(scoring, sweep, fit_intercept):
    rng = np.random.default_rng(100 + fit_intercept)
    X, Y = planted(rng, N, P, T)
    Y = Y + 300.0 * fit_intercept  # raw-BOLD-like offsets
    splits = list(ContiguousKFold(5).split(N))
    res = ridge_cv(X, Y, ALPHAS, 5, scoring=scoring, fit_intercept=fit_intercept,
                   penalty_sweep=sweep, folds_from="grams")
    check(res, reference64(X, Y, ALPHAS, splits, scoring, fit_intercept))


@pytest.mark.parametrize("cv,n_blocks", [
    (ContiguousKFold(4, gap=5), 10),  # gap blocks next to each validation block
    (KFold(5, shuffle=True, seed=3), 5),  # blocks are not contiguous: a reordering
    ("groups", 6),  # LeaveOneGroupOut over interleaved groups
])
def test_grams_under_every_kind_of_split(cv, n_blocks):
    rng = np.random.default_rng(7)
    n = N
    X, Y = planted(rng, n, P, T)
    groups = None
    if cv == "groups":
        groups = np.repeat(np.arange(12) % 6, n // 12)  # each group in two runs
        cv = LeaveOneGroupOut()
    splits = list(cv.split(n, groups=groups)) if groups is not None else list(cv.split(n))
    layout, order, _ = sample_blocks(splits, n)
    assert len(layout.bounds) == n_blocks
    res = ridge_cv(X, Y, ALPHAS, cv, groups=groups, fit_intercept=True, folds_from="grams")
    check(res, reference64(X, Y, ALPHAS, splits, "pearson", True))


@pytest.mark.parametrize("scale", [1e-12, 1e4])
def test_grams_at_extreme_scales(scale):
    """MEG in Tesla (~1e-12) and raw units (~1e4): features and targets
    scaled alike give the float64 answer (penalties scale with X^2), in one
    batch of targets and in three (the last padded)."""
    rng = np.random.default_rng(11)
    X, Y = planted(rng, N, P, T)
    Xs = (X.astype(np.float64) * scale).astype(np.float32)
    Ys = (Y.astype(np.float64) * scale * 3).astype(np.float32)
    alphas = ALPHAS * scale**2
    splits = list(ContiguousKFold(5).split(N))
    for fit_intercept in (False, True):
        res = ridge_cv(Xs, Ys, alphas, 5, scoring="r2", fit_intercept=fit_intercept,
                       folds_from="grams", batch_size=3 if fit_intercept else None)
        check(res, reference64(Xs, Ys, alphas, splits, "r2", fit_intercept), scale=scale)


def test_grams_on_ill_conditioned_design():
    """cond(X) ~ 3e4 (the Gram's 1e9): float64 Grams keep the closed form,
    as the accurate row-wise path does."""
    rng = np.random.default_rng(12)
    X, Y = planted(rng, N, P, T, decay=3.5)
    s = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    assert s[0] / s[-1] > 1e4
    alphas = np.logspace(-8, 2, 11)
    splits = list(ContiguousKFold(5).split(N))
    res = ridge_cv(X, Y, alphas, 5, folds_from="grams")
    rows = ridge_cv(X, Y, alphas, 5, folds_from="rows", precision="accurate")
    ref = reference64(X, Y, alphas, splits)
    check(res, ref, score_atol=5e-5, coef_rtol=2e-3)
    # at least as close to float64 as the row-wise accurate path
    err = lambda r: np.abs(r.coef - ref[2]).max() / np.abs(ref[2]).max()  # noqa: E731
    assert err(res) <= 2 * err(rows) + 1e-6, (err(res), err(rows))
    derr = lambda r: np.abs(r.cv_scores - ref[0]).max()  # noqa: E731
    assert derr(res) <= 2 * derr(rows) + 1e-6, (derr(res), derr(rows))


def test_grams_with_singular_validation_grams():
    """The validation Gram is singular (Cholesky fails, its eigh is used):
    fewer validation rows than features, and collinear features (rank 10 of
    20); still the float64 answer."""
    rng = np.random.default_rng(19)
    X, Y = planted(rng, 80, P, T, decay=0.5)
    splits = list(ContiguousKFold(5).split(80))  # 16 validation rows, 20 features
    res = ridge_cv(X, Y, ALPHAS, 5, fit_intercept=True, folds_from="grams")
    check(res, reference64(X, Y, ALPHAS, splits, "pearson", True))
    X, Y = planted(rng, N, P // 2, T)
    X = np.concatenate([X, X[:, :5] * 2, X[:, 5:] + X[:, :5]], axis=1)
    splits = list(ContiguousKFold(5).split(N))
    res = ridge_cv(X, Y, ALPHAS, 5, folds_from="grams")
    check(res, reference64(X, Y, ALPHAS, splits), coef_rtol=1e-3)


def test_grams_with_layers_and_intercept():
    """X of shape (L, n, p): each layer equals its own float64 closed form."""
    rng = np.random.default_rng(13)
    n, p, L = N, P, 3
    X0, Y = planted(rng, n, p, T)
    Xl = np.stack([X0, X0 * 0.5 + 2.0, (rng.standard_normal((n, p)) * 1e3).astype(np.float32)])
    Y = Y + 50.0
    splits = list(ContiguousKFold(5, gap=2).split(n))
    res = ridge_cv(Xl, Y, ALPHAS, ContiguousKFold(5, gap=2), fit_intercept=True,
                   folds_from="grams")
    assert res.coef.shape == (L, p, T) and res.folds_from == "grams"
    for layer in range(L):
        scores, best, coef, icpt = reference64(Xl[layer], Y, ALPHAS, splits, "pearson", True)
        np.testing.assert_array_equal(res.best_alpha_index[layer], best)
        np.testing.assert_allclose(res.cv_scores[layer], scores, atol=2e-5)
        err = np.abs(res.coef[layer] - coef).max(0) / np.abs(coef).max(0)
        assert err.max() < 2e-4
        np.testing.assert_allclose(res.intercept[layer], icpt, rtol=1e-5)


def test_auto_takes_grams_when_samples_dominate():
    """n >> p on CPU: "auto" (and RidgeCV) take the Gram path, with the
    float64 answer; a small problem keeps the row-wise path."""
    rng = np.random.default_rng(14)
    X, Y = planted(rng, 6000, 80, 4)
    auto = RidgeCV(ALPHAS, cv=5).fit(X, Y).result_
    check(auto, reference64(X, Y, ALPHAS, list(ContiguousKFold(5).split(6000))))
    assert ridge_cv(X[:N, :P], Y[:N], ALPHAS, 5).folds_from == "rows"


def test_grams_constant_and_undefined_targets():
    """A constant target gets NaN scores and zero coefficients; one constant
    in a validation fold is left out of that fold's mean (with a warning)."""
    rng = np.random.default_rng(15)
    X, Y = planted(rng, N, P, T)
    Y[:, 1] = 3.0
    Y[:N // 5, 2] = 1.0  # constant in the first validation fold
    with pytest.warns(UserWarning):
        res = ridge_cv(X, Y, ALPHAS, 5, folds_from="grams")
    assert np.isnan(res.best_alphas[1]) and np.all(res.coef[:, 1] == 0)
    assert np.all(np.isnan(res.cv_scores[:, 1]))
    splits = list(ContiguousKFold(5).split(N))
    ref = reference64(X, Y[:, [0, 3]], ALPHAS, splits)
    np.testing.assert_array_equal(res.best_alpha_index[[0, 3]], ref[1])
    assert np.isfinite(res.best_alphas[2])


def test_grams_bad_input():
    rng = np.random.default_rng(16)
    X, Y = planted(rng, 120, 8, 2)
    with pytest.raises(ValueError, match="folds_from must be"):
        ridge_cv(X, Y, ALPHAS, 5, folds_from="blocks")
    with pytest.raises(ValueError, match="folds_from='grams' needs the primal"):
        ridge_cv(X[:40], Y[:40], ALPHAS, 4, folds_from="grams", method="dual")
    with pytest.raises(ValueError, match="folds_from='grams'"):
        ridge_cv(X, Y, ALPHAS, ShuffleSplit(n_splits=8, test_size=0.3, seed=1),
                 folds_from="grams")
