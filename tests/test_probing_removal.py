"""Property removal (ridge residuals on one-hot labels) and the study's
success criterion (jaxalign.analysis.probing).

A property planted in a few feature directions becomes unreadable by the
probe after removal while an independent property planted elsewhere stays
as readable as before; the residuals are those of scikit-learn's Ridge at
the penalties the engine chose; the fold-internal variant uses no test row;
layers and several properties in one call equal separate calls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxalign.analysis.probing import (
    ProbeResult,
    fit_removal,
    probe_accuracy,
    remove_property,
    removal_successful,
)

N, P = 300, 8  # the nested-CV test's shape: the compiled probe is reused
PROBE = dict(Cs=np.logspace(-3, 0, 4), outer=3, inner=3)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 3, N)  # the property to remove: 3 classes on features 0-2
    b = rng.integers(0, 2, N)  # an independent property on feature 5
    X = rng.standard_normal((N, P))
    X[:, :3] += 1.0 * np.eye(3)[a]
    X[:, 5] += 2.0 * b
    return X, a, b


def test_removal_makes_the_planted_property_unreadable_and_keeps_the_other(planted):
    X, a, b = planted
    R = remove_property(X, a)
    assert R.shape == X.shape and R.dtype == np.float64
    # in the planted features the class means (1 apart) become equal up to the
    # ridge shrinkage lambda / (n_k + lambda) that CV chose (lambda ~1 here:
    # ~1% left); elsewhere the class means differ by sampling noise only, which
    # CV keeps (a large penalty predicts held-out words best)
    def spread(F):
        means = np.array([F[a == k].mean(axis=0) for k in range(3)])
        return np.abs(means - means.mean(axis=0)).max(axis=0)

    assert spread(R)[:3].max() < 0.02 and spread(X)[:3].min() > 0.5
    # a fixed tiny penalty is the exact linear removal: all class means equal
    assert spread(remove_property(X, a, alphas=[1e-6])).max() < 1e-6
    before_a, after_a = probe_accuracy(X, a, **PROBE), probe_accuracy(R, a, **PROBE)
    before_b, after_b = probe_accuracy(X, b, **PROBE), probe_accuracy(R, b, **PROBE)
    assert before_a.accuracy > before_a.chance + 0.2
    assert after_a.accuracy < after_a.chance + 0.03  # at chance, up to fold noise
    assert before_b.accuracy > before_b.chance + 0.2
    assert abs(after_b.accuracy - before_b.accuracy) <= 0.03  # the other property is intact
    # feature 5 carries b as before (a's class means there were ~0 already)
    assert np.corrcoef(R[:, 5], b)[0, 1] == pytest.approx(np.corrcoef(X[:, 5], b)[0, 1], abs=0.01)
    ok = removal_successful(before_a, after_a)
    assert ok == (after_a.accuracy < after_a.chance)  # the study's strict "below chance"


def test_residuals_are_sklearn_ridge_at_the_chosen_penalties(planted):
    from sklearn.linear_model import Ridge

    X, a, _ = planted
    fit = fit_removal(X, a)
    R = fit.transform(X, a)
    onehot = np.eye(3)[a]
    for t in range(P):
        ref = Ridge(alpha=fit.best_alphas[0, t], fit_intercept=True).fit(onehot, X[:, t])
        np.testing.assert_allclose(R[:, t], X[:, t] - ref.predict(onehot), atol=1e-5)
    assert np.all(np.isin(fit.best_alphas, np.logspace(-3, 5, 9)))


def test_fold_internal_removal_uses_no_test_row(planted):
    X, a, _ = planted
    train, test = np.arange(200), np.arange(200, N)
    R = remove_property(X, a, train=train)
    np.testing.assert_allclose(R, fit_removal(X[train], a[train]).transform(X, a), atol=1e-12)
    mask = np.zeros(N, bool)
    mask[train] = True
    np.testing.assert_allclose(remove_property(X, a, train=mask), R, atol=1e-12)
    X2 = X.copy()
    X2[test] = 100.0 * np.random.default_rng(1).standard_normal((len(test), P))
    R2 = remove_property(X2, a, train=train)
    np.testing.assert_allclose(R2[train], R[train], atol=1e-12)  # the fit never saw the test rows
    np.testing.assert_allclose(R2[test] - R[test], X2[test] - X[test], atol=1e-9)
    # fitted on all words (the published convention) the test rows do shape the fit
    assert not np.allclose(remove_property(X2, a)[train], remove_property(X, a)[train])


def test_layers_and_properties_in_one_call_equal_separate_calls(planted):
    X, a, b = planted
    rng = np.random.default_rng(2)
    X3 = np.stack([X, X + rng.standard_normal(X.shape), 1e-3 * X])  # (layers, n, p)
    both = remove_property(X3, pd.DataFrame({"a": a, "b": b}))
    assert both.shape == (2,) + X3.shape
    for layer in range(3):  # per layer, the same penalties and residuals
        one = remove_property(X3[layer], a)
        np.testing.assert_allclose(both[0, layer], one, atol=1e-5 * np.abs(X3[layer]).max())
    np.testing.assert_allclose(both[1], remove_property(X3, b), atol=1e-5 * np.abs(X3).max())
    # checkpoints x layers: any leading axes are targets of the same call
    X4 = np.stack([X3, X3[::-1]])
    np.testing.assert_allclose(remove_property(X4, a)[1, 0], remove_property(X3[2], a),
                               atol=1e-8)


def test_edge_cases_and_errors(planted):
    X, a, _ = planted
    # one class: only the mean is removed
    R = remove_property(X, np.zeros(N, int))
    np.testing.assert_allclose(R, X - X.mean(axis=0), atol=1e-12)
    # a class unseen in training has only the intercept removed
    fit = fit_removal(X[a < 2], a[a < 2])
    R = fit.transform(X, a)
    np.testing.assert_allclose(R[a == 2], X[a == 2] - fit.intercept[0], atol=1e-12)
    # string labels work like integers
    names = np.array(["NOUN", "PRON", "VERB"])[a]
    np.testing.assert_allclose(remove_property(X, names), remove_property(X, a), atol=1e-12)
    with pytest.raises(ValueError, match="labels have 10 words"):
        fit_removal(X, a[:10])
    with pytest.raises(ValueError, match="missing"):
        fit_removal(X, np.where(a == 0, np.nan, a))


def test_removal_successful_is_the_studys_criterion():
    # Table 1 of the study, final step, layer 12 (before, after, chance)
    assert removal_successful(0.64, 0.30, chance=0.59)  # TreeDepth: bold
    assert not removal_successful(0.57, 0.35, chance=0.32)  # SentenceLength: not below chance
    assert not removal_successful(0.78, 0.78, chance=0.79)  # TopConst: not above chance
    got = removal_successful(np.array([0.7, 0.7, 0.6]), np.array([0.5, 0.8, 0.5]), chance=0.65)
    assert got.tolist() == [True, False, False]
    res = ProbeResult(accuracy=0.7, chance=0.6, fold_accuracy=np.zeros(1), best_C=np.zeros(1),
                      inner_accuracy=np.zeros((1, 1)), Cs=np.ones(1), classes=np.arange(2))
    after = ProbeResult(**{**res.__dict__, "accuracy": 0.55})
    assert removal_successful(res, after) and res.above_chance
    with pytest.raises(ValueError, match="chance is required"):
        removal_successful(0.7, 0.5)
