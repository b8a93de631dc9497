"""Cross-cutting condition: extreme data scales.

Every public numerical function that scores or fits data is run on the same
problem multiplied by factors from 1e-25 to 1e20 (MEG in Tesla is ~1e-12,
raw scanner units ~1e4) and compared with a float64 numpy / scipy reference
computed at unit scale. A new function joins the sweep by adding one entry
to ``CASES``. Before the scale-free scoring these gave NaN penalties and
zero models at 1e-12, CV scores off by 0.036 at 1e-9, every CV score 0 at
1e10 and r = 0, p = 1 in the permutation test at 1e-22.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as sps

from jaxalign import stats
from jaxalign.analysis import divergence
from jaxalign.analysis.probing import LogisticRegression, remove_property
from jaxalign.ridge import (
    ContiguousKFold,
    RidgeCV,
    check_cv,
    neg_mse,
    nested_cv,
    pearson_r,
    r2_score,
    ridge_cv,
)

from _reference import ridge_cv64, score64 as _score64

SCALES = [1e-25, 1e-13, 1e-9, 1e4, 1e13, 1e20]
ALPHAS = np.logspace(-2, 5, 8)


def _problem(seed=0, n=120, p=8, T=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, T)) * np.array([0.2, 0.5, 1.0, 2.0, 0.0])[:T] \
        + rng.standard_normal((n, T))
    return X, Y


# --------------------------------------------------------------------------
# the sweep: name -> (run(scale) -> dict of arrays, reference() -> same dict, how each
# output scales with the data, tolerance)


def _ridge(scoring):
    X, Y = _problem()
    splits = check_cv(5, len(X))

    def run(s):
        res = ridge_cv(X, Y * s, ALPHAS, 5, scoring=scoring)
        return {"cv": res.cv_scores, "alpha": res.best_alphas, "coef": res.coef}

    def ref():
        sc, a, c = ridge_cv64(X, Y, ALPHAS, splits, scoring)
        return {"cv": sc, "alpha": a, "coef": c}

    power = {"cv": 2 if scoring == "neg_mse" else 0, "alpha": 0, "coef": 1}
    return run, ref, power


def _ridge_x_scale(dtype=np.float64):
    """X at extreme scales: penalties move with X^2, the answer must not."""
    X, Y = _problem(1)
    splits = check_cv(5, len(X))

    def run(s):
        res = ridge_cv((X * s).astype(dtype), Y, ALPHAS * s**2, 5)
        return {"cv": res.cv_scores, "alpha": res.best_alphas / s**2, "coef": res.coef * s}

    def ref():
        sc, a, c = ridge_cv64(X, Y, ALPHAS, splits, "pearson")
        return {"cv": sc, "alpha": a, "coef": c}

    return run, ref, {"cv": 0, "alpha": 0, "coef": 0}


def _estimator():
    X, Y = _problem(2)
    splits = check_cv(5, 90)

    def run(s):
        m = RidgeCV(alphas=ALPHAS, cv=5).fit(X[:90], Y[:90] * s)
        return {"score": m.score(X[90:], Y[90:] * s), "pred": m.predict(X[90:])}

    def ref():
        _, a, c = ridge_cv64(X[:90], Y[:90], ALPHAS, splits, "pearson")
        pred = X[90:] @ c
        return {"score": _score64("pearson", Y[90:], pred), "pred": pred}

    return run, ref, {"score": 0, "pred": 1}


def _nested():
    X, Y = _problem(3)
    outer = list(ContiguousKFold(4, gap=2).split(X))

    def run(s):
        res = nested_cv(X, Y * s, ALPHAS, outer, 3)
        return {"pred": res.predictions, "fold": res.fold_scores, "score": res.scores}

    def ref():
        pred = np.empty_like(Y)
        fold = []
        for tr, te in outer:
            _, _, c = ridge_cv64(X[tr], Y[tr], ALPHAS, check_cv(3, len(tr)), "pearson")
            pred[te] = X[te] @ c
            fold.append(_score64("pearson", Y[te], pred[te]))
        return {"pred": pred, "fold": np.stack(fold), "score": _score64("pearson", Y, pred)}

    return run, ref, {"pred": 1, "fold": 0, "score": 0}


def _explicit_scores():
    _, Y = _problem(4)
    F = Y + np.random.default_rng(5).standard_normal(Y.shape)

    def run(s):
        return {"r": pearson_r(Y * s, F * s), "r2": r2_score(Y * s, F * s),
                "mse": neg_mse(Y * s, F * s)}

    def ref():
        return {"r": _score64("pearson", Y, F), "r2": _score64("r2", Y, F),
                "mse": _score64("neg_mse", Y, F)}

    return run, ref, {"r": 0, "r2": 0, "mse": 2}


def _permutation():
    _, Y = _problem(6)
    F = Y + 2 * np.random.default_rng(7).standard_normal(Y.shape)
    G = Y + 3 * np.random.default_rng(8).standard_normal(Y.shape)
    idx = stats.permutation_indices(len(Y), 199, scheme="block", block_size=6, seed=3)

    def run(s):
        r = stats.permutation_test(Y * s, F * s, 199, block_size=6, seed=3)
        d = stats.paired_permutation_test(Y * s, F * s, G * s, 199, block_size=6, seed=3)
        f = stats.sign_flip_test((F - G)[:12] * s, 999, seed=3)
        return {"r": r.r, "p": r.p, "diff": d.statistic, "p_diff": d.p,
                "mean": f.statistic, "p_flip": f.p}

    def ref():
        r = _score64("pearson", Y, F)
        null = np.stack([_score64("pearson", Y[i], F) for i in idx])
        diff = r - _score64("pearson", Y, G)
        null_d = np.stack([_score64("pearson", Y[i], F) - _score64("pearson", Y[i], G)
                           for i in idx])
        flip = stats.sign_flip_test((F - G)[:12], 999, seed=3)  # unit scale: the reference p
        return {"r": r, "p": ((null >= r - 1e-5).sum(0) + 1) / 200, "diff": diff,
                "p_diff": ((null_d >= diff - 1e-5).sum(0) + 1) / 200,
                "mean": (F - G)[:12].mean(0), "p_flip": flip.p}

    return run, ref, {"r": 0, "p": 0, "diff": 0, "p_diff": 0, "mean": 1, "p_flip": 0}


def _ceiling():
    rng = np.random.default_rng(9)
    signal = rng.standard_normal((60, 4))
    data = signal[None] + rng.standard_normal((6, 60, 4))

    def run(s):
        return {"ceiling": stats.split_half_ceiling(data * s, n_splits=20, seed=0).ceiling}

    def ref():
        return {"ceiling": stats.split_half_ceiling(data, n_splits=20, seed=0).ceiling}

    return run, ref, {"ceiling": 0}


def _removal():
    """Property removal (ridge residuals on one-hot labels, with an intercept):
    residuals move with the features."""
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 3, 120)
    F = rng.standard_normal((120, 6)) + np.eye(3)[labels] @ rng.standard_normal((3, 6))
    alphas = np.logspace(-3, 5, 9)

    def run(s):
        return {"resid": remove_property(F * s, labels, alphas, 5)}

    def ref():
        T = np.eye(3)[labels]
        scores = np.zeros((len(alphas), F.shape[1]))
        for tr, va in check_cv(5, len(F)):  # centred on each training fold
            tm, fm = T[tr].mean(0), F[tr].mean(0)
            G, B = (T[tr] - tm).T @ (T[tr] - tm), (T[tr] - tm).T @ (F[tr] - fm)
            for i, a in enumerate(alphas):
                pred = (T[va] - tm) @ np.linalg.solve(G + a * np.eye(3), B) + fm
                scores[i] += _score64("r2", F[va], pred) / 5
        top = scores.max(0)  # the engine's tie rule (_reference.ridge_cv64)
        tied = scores >= top - 1e-6 * np.maximum(np.abs(top), 1)
        best = len(alphas) - 1 - np.argmax(tied[::-1], axis=0)
        Tc, Fc = T - T.mean(0), F - F.mean(0)
        W = np.stack([np.linalg.solve(Tc.T @ Tc + alphas[b] * np.eye(3), Tc.T @ Fc[:, t])
                      for t, b in enumerate(best)], axis=1)
        return {"resid": Fc - Tc @ W}

    return run, ref, {"resid": 1}


def _logistic():
    """The logistic probe on features at any scale: C / s^2 is the same
    problem (coefficients / s), against scipy's BFGS on the unit-scale objective."""
    X, _ = _problem(13)
    y = (X @ np.random.default_rng(13).standard_normal(X.shape[1])
         + np.random.default_rng(14).logistic(size=len(X)) > 0).astype(int)
    C = 0.5

    def run(s):
        m = LogisticRegression(C=C / s**2).fit(X * s, y)
        return {"coef": m.coef_ * s, "proba": m.predict_proba(X * s)[:, 1]}

    def ref():
        from scipy.optimize import minimize

        def f(theta):  # scikit-learn's objective: C * sum log-loss + ||w||^2 / 2
            z = X @ theta[:-1] + theta[-1]
            q = 1 / (1 + np.exp(-z))
            val = C * np.sum(np.logaddexp(0, z) - y * z) + 0.5 * theta[:-1] @ theta[:-1]
            return val, np.r_[C * X.T @ (q - y) + theta[:-1], C * np.sum(q - y)]

        th = minimize(f, np.zeros(X.shape[1] + 1), jac=True, method="BFGS",
                      options={"gtol": 1e-11, "maxiter": 10000}).x
        return {"coef": th[None, :-1], "proba": 1 / (1 + np.exp(-(X @ th[:-1] + th[-1])))}

    return run, ref, {"coef": 0, "proba": 0}


def _divergence():
    """Per-word squared error over significant channels and windows, and sentence means
    (float64 sums: errors ~1e-50 at 1e-25 and ~1e40 at 1e20 stay exact to rounding)."""
    rng = np.random.default_rng(15)
    y = rng.standard_normal((40, 6, 5))
    pred = y + rng.standard_normal(y.shape) * rng.random(40)[:, None, None]
    sig = rng.random((6, 5)) < 0.6
    sig[:, 0] = True
    words = [f"w{i}" + ("." if i % 7 == 6 else "") for i in range(40)]

    def run(s):
        e = divergence.word_errors(y * s, pred * s, sig, windows=range(2, 5))
        return {"mse": e, "mean": divergence.sentence_scores(e, words, min_words=1)["score"].to_numpy()}

    def ref():
        e = np.array([np.mean([np.mean((y[i, k, sig[k]] - pred[i, k, sig[k]]) ** 2) for k in range(2, 5)])
                      for i in range(40)])
        return {"mse": e, "mean": np.array([e[a:a + 7].mean() for a in range(0, 40, 7)])}

    return run, ref, {"mse": 2, "mean": 2}


CASES = {
    "ridge_cv pearson": _ridge("pearson"),
    "ridge_cv r2": _ridge("r2"),
    "ridge_cv neg_mse": _ridge("neg_mse"),
    "ridge_cv X scale": _ridge_x_scale(),
    "ridge_cv X scale float32": _ridge_x_scale(np.float32),
    "RidgeCV score/predict": _estimator(),
    "nested_cv": _nested(),
    "pearson_r r2_score neg_mse": _explicit_scores(),
    "permutation tests": _permutation(),
    "split_half_ceiling": _ceiling(),
    "remove_property": _removal(),
    "LogisticRegression X scale": _logistic(),
    "divergence word_errors sentence_scores": _divergence(),
}

# relative tolerance per output: float32 engine against the float64 closed form
TOL = {"coef": 2e-4, "pred": 2e-4, "cv": 1e-5, "fold": 1e-5, "score": 1e-5, "r": 1e-6,
       "r2": 1e-5, "mse": 1e-5, "ceiling": 1e-5, "diff": 1e-6, "mean": 1e-6,
       "resid": 2e-5, "proba": 1e-6}


@pytest.fixture(scope="module")
def references():
    return {name: case[1]() for name, case in CASES.items()}


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"{s:g}")
@pytest.mark.parametrize("name", list(CASES))
def test_scale_free(name, scale, references):
    run, _, power = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at any scale either
        got = run(scale)
    ref = references[name]
    for key, want in ref.items():
        have = np.asarray(got[key], np.float64) / scale ** power[key]
        want = np.asarray(want, np.float64)
        assert np.isfinite(have).all(), (name, key, scale, have)
        if key in ("alpha", "p", "p_diff", "p_flip"):
            np.testing.assert_array_equal(have, want, err_msg=f"{name} {key} at {scale:g}")
        else:
            tol = TOL[key] * max(np.abs(want).max(), 1e-12)
            np.testing.assert_allclose(have, want, rtol=0, atol=tol,
                                       err_msg=f"{name} {key} at {scale:g}")


def test_permutation_r_equals_scipy_at_meg_scale():
    """The exact symptom of the report: r 0.774 vs scipy 0.662 at 1e-19."""
    rng = np.random.default_rng(11)
    y = rng.standard_normal((200, 3)) * 1e-19
    f = y + rng.standard_normal((200, 3)) * 1e-19
    res = stats.permutation_test(y, f, 99)
    want = [sps.pearsonr(y[:, i], f[:, i])[0] for i in range(3)]
    np.testing.assert_allclose(res.r, want, atol=1e-6)
    assert (res.p == 0.01).all()


def test_large_offset_with_intercept_is_exact():
    """Y = 1000 + 1e-4 * signal with an intercept: coefficients equal the
    float64 closed form to < 1e-5 relative on the default (auto) path (was
    2e-3: float32 rounded the signal away)."""
    rng = np.random.default_rng(12)
    X = rng.standard_normal((150, 6))
    Y = 1000 + 1e-4 * (X @ rng.standard_normal((6, 3)) + 0.5 * rng.standard_normal((150, 3)))
    res = ridge_cv(X, Y, [1e-3, 1e-2], cv=5, fit_intercept=True)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    a = res.best_alphas
    coef = np.stack([np.linalg.solve(Xc.T @ Xc + a[t] * np.eye(6), Xc.T @ Yc[:, t])
                     for t in range(3)], axis=1)
    intercept = Y.mean(0) - X.mean(0) @ coef
    assert np.abs(res.coef - coef).max() / np.abs(coef).max() < 1e-5
    np.testing.assert_allclose(res.intercept, intercept, rtol=1e-12, atol=1e-9)
    pred = X @ res.coef + res.intercept
    assert np.abs(pred - (X @ coef + intercept)).max() < 1e-8


def test_huge_penalty_scores_and_no_nan():
    """A penalty of 1e30 shrinks predictions to ~1e-30: every score stays
    defined (was all NaN) and Pearson equals its limit, r(y, X X^T y)."""
    X, Y = _problem(13)
    splits = check_cv(5, len(X))
    res = ridge_cv(X, Y, [1e30], 5)
    assert np.isfinite(res.cv_scores).all()
    ref = np.zeros(Y.shape[1])
    for tr, va in splits:
        ref += _score64("pearson", Y[va], X[va] @ (X[tr].T @ Y[tr])) / len(splits)
    np.testing.assert_allclose(res.cv_scores[0], ref, atol=1e-5)
    for scoring in ("r2", "neg_mse"):
        r = ridge_cv(X, Y, [1e30], 5, scoring=scoring)
        sc, _, _ = ridge_cv64(X, Y, [1e30], splits, scoring)
        np.testing.assert_allclose(r.cv_scores, sc, rtol=1e-5)
    assert np.abs(res.coef).max() > 0  # ~1e-30, not a silent zero model


def test_penalty_beyond_float32_warns():
    X, Y = _problem(14)
    with pytest.warns(UserWarning, match="underflow float32"):
        ridge_cv(X, Y, [1e45], 5)
