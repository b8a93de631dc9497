"""The JAX logistic-regression probe against scikit-learn (jaxalign.analysis.probing).

Reference: scikit-learn's ``LogisticRegression`` (same objective: C * sum of
log losses + ||W||^2 / 2, unpenalised intercept; binary with one coefficient
row, multinomial for K >= 3) solved by its "newton-cholesky" solver at
tol=1e-12, i.e. its converged answer. Stated tolerances (float64): largest
coefficient difference <= 1e-5 of the largest coefficient, intercepts
<= 1e-4 absolute, probabilities <= 1e-5 absolute, identical predictions.
Measured at writing: ~1e-7..2e-6, ~1e-6..2e-5 and ~1e-7..1e-6.

Fresh random data per test (seeded); one data shape where possible, because
every new shape compiles the solver again (~4 s on 2 CPU cores).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression as SkLogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402  (installed with scikit-learn)

from jaxalign.analysis.probing import LogisticRegression, probe_accuracy  # noqa: E402

N, P = 800, 40
COEF_RTOL, ICPT_ATOL, PROBA_ATOL = 1e-5, 1e-4, 1e-5


def _data(seed, K, n=N, p=P, signal=0.3):
    """Correlated features with an offset (as hidden states have), labels from a
    noisy multinomial model."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) @ (np.eye(p) + 0.3 * rng.standard_normal((p, p))) + 2.0
    y = (X @ rng.standard_normal((p, K)) * signal + rng.gumbel(size=(n, K))).argmax(axis=1)
    return X, y


def _reference(X, y, C, **kw):
    # one BLAS/OpenMP thread: beside JAX's threads on 2 shared cores, more
    # made scikit-learn's small Newton solves 100x slower (3 s instead of 0.03 s)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        return SkLogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000,
                                    **kw).fit(X, y)


def _objective(model, X, y, C):
    """scikit-learn's objective: C * sum of log losses + ||coef||^2 / 2."""
    proba = np.clip(model.predict_proba(X), 1e-300, None)
    idx = np.searchsorted(model.classes_, y)
    return C * -np.log(proba[np.arange(len(y)), idx]).sum() + 0.5 * np.sum(model.coef_**2)


def _close(ours, ref, X, scale=1.0):
    assert ours.coef_.shape == ref.coef_.shape and ours.intercept_.shape == ref.intercept_.shape
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    coef_err = np.abs(ours.coef_ * scale - ref.coef_).max() / np.abs(ref.coef_).max()
    assert coef_err <= COEF_RTOL
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=ICPT_ATOL)
    Xs = X * scale if scale != 1.0 else X
    np.testing.assert_allclose(ours.predict_proba(Xs), ref.predict_proba(X), atol=PROBA_ATOL)
    np.testing.assert_array_equal(ours.predict(Xs), ref.predict(X))


@pytest.mark.parametrize("K", [2, 4])
def test_matches_sklearn(K):
    X, y = _data(K, K)
    for C in (1e-3, 1e-1, 1.0):
        ours = LogisticRegression(C=C).fit(X, y)
        ref = _reference(X, y, C)
        _close(ours, ref, X)
        assert ours.score(X, y) == pytest.approx(ref.score(X, y), abs=1e-12)
        # scikit-learn's default (lbfgs, tol=1e-4, max_iter=100) stops early on
        # these correlated, offset features (up to 0.09 off in probabilities):
        # its objective is never below ours
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            default = SkLogisticRegression(C=C).fit(X, y)
        assert _objective(ours, X, y, C) <= _objective(default, X, y, C) * (1 + 1e-12)


@pytest.mark.parametrize("K", [2, 4])
def test_extreme_feature_scales(K):
    """Features in units 1e-6 or 1e4 times the reference's: the same problem
    with C / s^2 (coefficients / s), which scikit-learn solves in unit scale."""
    X, y = _data(10 + K, K)
    for C in (1e-2, 1.0):
        ref = _reference(X, y, C)
        for s in (1e-6, 1e4):
            ours = LogisticRegression(C=C / s**2).fit(X * s, y)
            _close(ours, ref, X, scale=s)
    # and the plain C at those scales where scikit-learn's own solver converges:
    # at 1e-6 the penalty dominates, the probe is the class prior
    tiny = LogisticRegression(C=1.0).fit(X * 1e-6, y)
    ref = _reference(X * 1e-6, y, 1.0)
    np.testing.assert_allclose(tiny.predict_proba(X * 1e-6), ref.predict_proba(X * 1e-6), atol=1e-8)


def test_sample_weight_no_intercept_labels_and_errors():
    X, y = _data(3, 4)
    rng = np.random.default_rng(3)
    w = rng.uniform(0.2, 3.0, len(y))
    names = np.array(["ADP", "NOUN", "PRON", "VERB"])[y]  # any sortable labels
    ours = LogisticRegression(C=0.5).fit(X, names, sample_weight=w)
    refw = SkLogisticRegression(C=0.5, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    with threadpool_limits(1):
        refw.fit(X, names, sample_weight=w)
    _close(ours, refw, X)
    np.testing.assert_allclose(np.exp(ours.predict_log_proba(X)), ours.predict_proba(X), rtol=1e-12)
    assert ours.score(X, names, sample_weight=w) == pytest.approx(refw.score(X, names, sample_weight=w))
    # without an intercept (centring would change that problem: not applied)
    Xc, yb = X - 2.0, y % 2
    nofit = LogisticRegression(C=0.5, fit_intercept=False).fit(Xc, yb)
    ref0 = _reference(Xc, yb, 0.5, fit_intercept=False)
    assert np.abs(nofit.coef_ - ref0.coef_).max() / np.abs(ref0.coef_).max() <= COEF_RTOL
    assert np.all(nofit.intercept_ == 0)
    np.testing.assert_allclose(nofit.predict_proba(Xc), ref0.predict_proba(Xc), atol=PROBA_ATOL)
    # scikit-learn's parameter protocol (clone, grid search)
    assert sklearn.base.clone(LogisticRegression(C=3.0)).C == 3.0
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegression().fit(X, np.zeros(len(X)))
    with pytest.raises(RuntimeError, match="not fitted"):
        LogisticRegression().predict(X)
    with pytest.raises(ValueError, match="features"):
        ours.predict(X[:, :5])
    with pytest.raises(ValueError, match="non-finite"):
        LogisticRegression().fit(np.where(X > 4, np.nan, X), y)


def test_float32_is_close_to_float64():
    X, y = _data(4, 2)
    a = LogisticRegression(C=0.1).fit(X, y)
    b = LogisticRegression(C=0.1, dtype="float32").fit(X, y)
    assert np.abs(a.predict_proba(X) - b.predict_proba(X)).max() < 1e-3


def test_probe_accuracy_is_nested_cv_of_sklearn():
    """probe_accuracy = for each outer fold, GridSearchCV over C on the inner
    folds of its training rows (first best C on ties), refit, held-out
    accuracy; chance = majority share. Contiguous folds on both levels."""
    from jaxalign.ridge import ContiguousKFold

    n, p, K = 300, 8, 3
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2, n, p))
    y = rng.integers(0, K, n)
    X[0, :, :3] += 0.8 * np.eye(K)[y]  # layer 0 carries the label, layer 1 is noise
    Cs = np.logspace(-3, 0, 4)
    res = probe_accuracy(X, y, Cs=Cs, outer=3, inner=3)
    assert res.accuracy.shape == (2,) and res.fold_accuracy.shape == (2, 3)
    assert res.chance == pytest.approx(np.bincount(y).max() / n)
    for layer in range(2):
        for o, (tr, te) in enumerate(ContiguousKFold(3).split(n)):
            est = SkLogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000)
            grid = GridSearchCV(est, {"C": list(Cs)}, cv=list(ContiguousKFold(3).split(len(tr))))
            with threadpool_limits(1):
                grid.fit(X[layer][tr], y[tr])
            np.testing.assert_allclose(res.inner_accuracy[layer, o], grid.cv_results_["mean_test_score"],
                                       atol=1e-12)
            assert res.best_C[layer, o] == grid.best_params_["C"]
            assert res.fold_accuracy[layer, o] == pytest.approx(grid.score(X[layer][te], y[te]))
    assert res.accuracy[0] > res.chance + 0.2 and res.accuracy[1] < res.chance + 0.1
    single = probe_accuracy(X[1], y, Cs=Cs, outer=3, inner=3)
    assert single.accuracy == pytest.approx(res.accuracy[1]) and single.best_C.shape == (3,)
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe_accuracy(X[0], np.ones(n))
