"""ridge_cv_moments: ridge CV from per-fold sums over samples, against a float64 numpy reference.

The reference fits every fold by the closed form on the training rows
(centred when fitting an intercept), scores the validation rows directly,
averages over folds, takes the best penalty (ties to the larger) and refits
on all rows: the textbook computation, sample by sample, in float64. The
moments path never forms a prediction. Data at the scales of MEG (1e-12),
unit and raw BOLD (1e4); splits with gaps and groups; every scoring.
Across processes: tests/test_distributed.py.
"""

import numpy as np
import pytest

from jaxalign.ridge import ContiguousKFold, GroupKFold, check_cv, ridge_cv_moments, split_atoms


def _reference(X, Y, alphas, splits, fit_intercept, scoring):
    A, T = len(alphas), Y.shape[1]
    scores = np.empty((len(splits), A, T))

    def fit(Xt, Yt, a):
        if fit_intercept:
            mx, my = Xt.mean(0), Yt.mean(0)
            Xt, Yt = Xt - mx, Yt - my
        B = np.linalg.solve(Xt.T @ Xt + a * np.eye(X.shape[1]), Xt.T @ Yt)
        b = my - mx @ B if fit_intercept else np.zeros(T)
        return B, b

    for j, (tr, va) in enumerate(splits):
        for i, a in enumerate(alphas):
            B, b = fit(X[tr], Y[tr], a)
            f, y = X[va] @ B + b, Y[va]
            if scoring == "pearson":
                fc, yc = f - f.mean(0), y - y.mean(0)
                scores[j, i] = (fc * yc).sum(0) / np.sqrt((fc**2).sum(0) * (yc**2).sum(0))
            elif scoring == "r2":
                scores[j, i] = 1 - ((y - f) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
            else:
                scores[j, i] = -((y - f) ** 2).mean(0)
    cv = scores.mean(0)
    best = cv.max(0)
    # ties within 1e-6 of the score in each target's own unit (MSE: of its variance over all samples, so
    # the choice does not depend on the data's scale)
    unit = ((Y - (Y.mean(0) if fit_intercept else 0)) ** 2).mean(0) if scoring == "neg_mse" else 1.0
    tol = 1e-6 * np.maximum(np.abs(best) / unit, 1.0) * unit
    idx = np.argmax(np.where(cv >= best - tol, alphas[:, None], -np.inf), axis=0)
    coef = np.empty((X.shape[1], T))
    icpt = np.empty(T)
    for t in range(T):
        B, b = fit(X, Y[:, [t]], alphas[idx[t]])
        coef[:, t], icpt[t] = B[:, 0], b[0]
    return cv, idx, coef, icpt


@pytest.mark.parametrize("scale, fit_intercept, scoring, cv", [
    (1e-12, True, "pearson", ContiguousKFold(5, gap=8)),
    (1.0, False, "pearson", 4),
    (1e4, True, "r2", ContiguousKFold(4)),
    (1.0, True, "neg_mse", "groups"),
    (1e-12, True, "neg_mse", ContiguousKFold(5, gap=3)),  # tesla: every MSE ~1e-24, the choice unchanged
    (1e4, False, "neg_mse", 4),
])
def test_moments_equal_the_float64_reference(scale, fit_intercept, scoring, cv):
    rng = np.random.default_rng(int(np.log10(scale) + 20))
    n, p, T = 600, 12, 9
    X = rng.standard_normal((n, p)) * rng.uniform(0.3, 3, p) + rng.normal(0, 2, p)
    Y = (X @ rng.standard_normal((p, T)) * rng.uniform(0.02, 0.5, T) + rng.standard_normal((n, T))
         + rng.normal(0, 5, T)) * scale
    alphas = np.logspace(-2, 5, 8)
    groups = None
    if cv == "groups":
        groups, cv = np.repeat(np.arange(6), n // 6), GroupKFold(3)
    splits = check_cv(cv, n, groups=groups)
    ref_cv, ref_idx, ref_coef, ref_icpt = _reference(X, Y, alphas, splits, fit_intercept, scoring)
    res = ridge_cv_moments(X, Y, alphas, cv, groups=groups, fit_intercept=fit_intercept, scoring=scoring)
    np.testing.assert_array_equal(res.best_alpha_index, ref_idx)
    unit = scale**2 if scoring == "neg_mse" else 1.0
    np.testing.assert_allclose(res.cv_scores, ref_cv, rtol=1e-9, atol=1e-10 * unit)
    np.testing.assert_allclose(res.coef, ref_coef, rtol=1e-8, atol=1e-10 * np.abs(ref_coef).max())
    np.testing.assert_allclose(res.intercept, ref_icpt, rtol=1e-8, atol=1e-10 * scale)
    assert res.method == "moments"


def test_atoms_of_splits_with_gaps():
    splits = check_cv(ContiguousKFold(3, gap=2), 30)
    atom, train, val = split_atoms(splits, 30)
    for j, (tr, va) in enumerate(splits):  # each split's sets are exactly unions of its atoms
        assert set(np.flatnonzero(train[j][atom])) == set(tr.tolist())
        assert set(np.flatnonzero(val[j][atom])) == set(va.tolist())
    assert train.shape[1] == len(np.unique(atom)) <= 2 * 3 + 1


def test_moments_bad_input():
    X, Y = np.ones((20, 3)), np.ones((20, 2))
    with pytest.raises(ValueError, match="rows must be 20 integer indices"):
        ridge_cv_moments(X, Y, [1.0], 2, rows=np.arange(1, 21))
    with pytest.raises(ValueError, match="n_samples=40 but X has 20 rows and this is the only process"):
        ridge_cv_moments(X, Y, [1.0], 2, n_samples=40)
    with pytest.raises(ValueError, match="finite"):
        ridge_cv_moments(np.full((20, 3), np.nan), Y, [1.0], 2)
    with pytest.raises(ValueError, match="Y must be"):
        ridge_cv_moments(X, np.ones((19, 2)), [1.0], 2)
