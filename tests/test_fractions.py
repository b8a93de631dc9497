"""The partial-fraction penalty sweep (jaxalign.ridge._fractions) against
float64 references, and the engine's choice between it and the direct sweep."""

import jax
import numpy as np
import pytest

from jaxalign.ridge import ContiguousKFold, ridge_cv
from jaxalign.ridge._engine import _plan_sweeps
from jaxalign.ridge._fractions import amplification, fractions, has_ties, variance
from jaxalign.ridge._solve import FoldPlan
from test_ridge import ALPHAS, assert_same_choices, cv_scores64, planted

WIDE = np.logspace(-4, 10, 15)


def designs(rng, n=240, p=60):
    """Spectra that stress partial fractions: decaying, isotropic (close
    eigenvalues), rank-deficient (ties at zero), nearly collinear, one-hot."""
    out = {}
    U = np.linalg.qr(rng.standard_normal((n, p)))[0]
    V = np.linalg.qr(rng.standard_normal((p, p)))[0]
    out["decay k^-2"] = (U * np.arange(1, p + 1.0) ** -2) @ V.T * 300
    out["isotropic"] = rng.standard_normal((n, p))
    dup = rng.standard_normal((n, p))
    dup[:, p // 2:] = dup[:, : p - p // 2]
    out["duplicated columns"] = dup
    col = rng.standard_normal((n, p))
    col[:, 1] = col[:, 0] + 1e-4 * rng.standard_normal(n)
    out["near-collinear"] = col
    onehot = np.eye(8)[rng.integers(0, 8, n)]
    out["one-hot + noise"] = np.hstack([onehot, rng.standard_normal((n, p - 8))])
    out["tiny scale"] = rng.standard_normal((n, p)) * 1e-3
    return {k: v.astype(np.float32) for k, v in out.items()}


def fold_inputs(X, Y, val):
    """(R, s2, Z) of one validation fold, as the engine forms them (float32),
    with float64 eigendecomposition."""
    tr = np.setdiff1d(np.arange(X.shape[0]), val)
    X64 = X.astype(np.float64)
    s2, V = np.linalg.eigh(X64[tr].T @ X64[tr])
    s2 = np.clip(s2, 0, None)
    ev = X64[val] @ V
    R = (ev - ev.mean(0)).astype(np.float32)
    Z = (V.T @ (X64[tr].T @ Y[tr].astype(np.float64))).astype(np.float32)
    return R, s2.astype(np.float32), Z


def variance64(R, s2, Z, alphas):
    """Float64 direct variance, times the sweep's gain squared (``max(1, a /
    max s2)``: the scaling that keeps large penalties off float32's floor)."""
    R, s2, Z = (np.asarray(a, np.float64) for a in (R, s2, Z))
    gain = np.maximum(1.0, np.asarray(alphas) / s2.max())
    return np.stack([np.sum((R @ (Z / (s2 + a)[:, None])) ** 2, 0) * g**2
                     for a, g in zip(alphas, gain)])


@pytest.mark.parametrize("name", ["decay k^-2", "isotropic", "duplicated columns",
                                  "near-collinear", "one-hot + noise", "tiny scale"])
def test_variance_equals_float64_direct(name):
    """Every penalty's prediction variance, from one float64 product per
    target, equals the float64 direct computation to ~1e-7 (the float32 direct
    sweep is ~1e-6), over 14 decades of penalties."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    X = designs(rng)[name]
    Y = (X @ rng.standard_normal((X.shape[1], 30)) + rng.standard_normal((X.shape[0], 30)))
    R, s2, Z = fold_inputs(X, Y.astype(np.float32), np.arange(48, 96))
    ties = has_ties(s2)
    if name == "duplicated columns":  # zero eigenvalues, clipped: exact ties
        assert ties
    fr = fractions(R, s2, WIDE, ties)
    with jax.enable_x64(True):
        got = np.asarray(variance(fr, Z))
    assert got.dtype == np.float32
    ref = variance64(R, s2, Z, WIDE)
    rel = np.abs(got - ref) / ref
    assert rel.max() < 2e-6, (name, rel.max())
    assert np.median(rel) < 2e-7


def test_amplification_is_the_worst_pair():
    """The O(r) neighbour rule equals the brute-force maximum over all pairs,
    for each form; ties are excluded."""
    rng = np.random.default_rng(3)
    s2 = np.exp(rng.uniform(-8, 12, 40))
    s2[[5, 6]] = s2[7]  # exact ties
    alphas = np.logspace(-3, 6, 10)
    k, l = np.triu_indices(40, 1)
    big, small = np.maximum(s2[k], s2[l]), np.minimum(s2[k], s2[l])
    gap = big - small
    ok = gap > 0
    expect = []
    for a in alphas:
        amp_r = ((big + a)[ok] / gap[ok]).max()
        amp_rho = ((big * small / a + big)[ok] / gap[ok]).max()
        expect.append(min(amp_r, amp_rho))
    np.testing.assert_allclose(amplification(s2, alphas), expect, rtol=1e-12)
    # a leading layer axis takes the worst layer
    two = np.stack([s2, s2 * 3])
    np.testing.assert_allclose(amplification(two, alphas),
                               np.maximum(expect, amplification(s2 * 3, alphas)), rtol=1e-12)
    assert has_ties(s2) and not has_ties(np.arange(1.0, 9.0))


CASES = [  # (n, p, scoring, fit_intercept, gap): QR-compressed folds, primal, dual
    (250, 20, "pearson", False, 0),
    (120, 60, "r2", True, 2),
    (50, 90, "neg_mse", True, 0),
]


@pytest.mark.parametrize("n,p,scoring,fit_intercept,gap", CASES)
def test_both_sweeps_equal_float64_loop(n, p, scoring, fit_intercept, gap):
    rng = np.random.default_rng(n + p)
    X, Y = planted(rng, n, p, 30, spectrum=2.0)
    Y = Y + rng.standard_normal(30).astype(np.float32)
    splits = list(ContiguousKFold(4, gap=gap).split(n))
    ref = cv_scores64(X, Y, ALPHAS, splits, scoring, fit_intercept)
    scale = 1.0 if scoring != "neg_mse" else np.abs(ref).max()
    out = {}
    for sweep in ("partial_fractions", "direct"):
        res = ridge_cv(X, Y, ALPHAS, splits, scoring=scoring, fit_intercept=fit_intercept,
                       penalty_sweep=sweep)
        assert res.penalty_sweep == sweep
        np.testing.assert_allclose(res.cv_scores, ref, atol=2e-4 * scale, rtol=0)
        out[sweep] = res
    pf, direct = out["partial_fractions"], out["direct"]
    np.testing.assert_allclose(pf.cv_scores, direct.cv_scores, atol=2e-5 * scale, rtol=0)
    assert_same_choices(pf, direct)


def test_layers_and_auto_choice(monkeypatch):
    import jaxalign.ridge._engine as engine

    rng = np.random.default_rng(9)
    Xs = np.stack([planted(rng, 300, 24, 1, spectrum=s)[0] for s in (0.5, 2.0, 3.0)])
    Y = rng.standard_normal((300, 40)).astype(np.float32) + Xs[2] @ rng.standard_normal((24, 40)).astype(np.float32)
    # 40 targets save too little to pay for the set-up: auto stays direct
    assert ridge_cv(Xs, Y, ALPHAS, cv=5).penalty_sweep == "direct"
    monkeypatch.setattr(engine, "_MIN_SAVED_FLOPS", 0)
    auto = ridge_cv(Xs, Y, ALPHAS, cv=5)
    assert auto.penalty_sweep == "partial_fractions"  # 11 penalties, r = 24 <= m = 60
    direct = ridge_cv(Xs, Y, ALPHAS, cv=5, penalty_sweep="direct")
    np.testing.assert_allclose(auto.cv_scores, direct.cv_scores, atol=1e-5)
    assert_same_choices(auto, direct)
    np.testing.assert_allclose(auto.coef, direct.coef, atol=1e-5 * np.abs(direct.coef).max())
    # one penalty: the direct sweep is cheaper, auto keeps it
    assert ridge_cv(Xs[0], Y, [1.0], cv=5).penalty_sweep == "direct"
    # x64 is switched on only inside the call; outputs stay float32
    assert not jax.config.jax_enable_x64
    assert auto.cv_scores.dtype == np.float32 and auto.coef.dtype == np.float32
    with pytest.raises(ValueError, match="penalty_sweep"):
        ridge_cv(Xs[0], Y, ALPHAS, penalty_sweep="fractions")


def _plan(s2, m=8):
    r = len(s2)
    R = np.random.default_rng(0).standard_normal((m, r)).astype(np.float32)
    z = np.zeros(r, np.float32)
    return FoldPlan(None, None, z, np.asarray(s2, np.float32), R, R.T, None, z)


def test_imprecise_penalties_fall_back_to_direct():
    """Nearly equal eigenvalues over a spectrum of 20 decades give some
    penalties an amplification beyond MAX_AMPLIFICATION: those are swept
    directly, the rest by partial fractions, and the engine says "mixed"."""
    s2 = np.concatenate([np.logspace(10, -10, 20), [1e-10 * (1 + 2e-7)]])
    amp = amplification(np.asarray(s2, np.float32), ALPHAS)
    assert (amp > 1e9).any() and (amp <= 1e9).any()
    plans, direct, kind = _plan_sweeps((_plan(s2), _plan(np.logspace(2, 0, 21))), ALPHAS,
                                       "partial_fractions", "cpu")
    assert kind == "mixed"
    assert direct[0] == tuple(np.flatnonzero(amp > 1e9)) and direct[1] == ()
    assert plans[0].fr is not None and plans[1].fr is not None
    # TPUs have no float64: always direct; GPUs: direct unless asked
    _, direct, kind = _plan_sweeps((_plan(s2),), ALPHAS, "partial_fractions", "tpu")
    assert kind == "direct" and direct == ((),)
    assert _plan_sweeps((_plan(s2),), ALPHAS, "auto", "gpu")[2] == "direct"
    assert _plan_sweeps((_plan(s2),), ALPHAS, "partial_fractions", "gpu")[2] == "mixed"


def test_mixed_sweep_equals_direct_end_to_end():
    """A design whose fold spectra trip the fallback for some penalties (a
    rank-deficient, large-scale design with tiny penalties) scores like the
    direct sweep."""
    rng = np.random.default_rng(21)
    X = rng.standard_normal((200, 30)) * np.logspace(4, 0, 30)
    X = np.hstack([X, X[:, :10]]).astype(np.float32)  # rank 30 of 40
    signal = X @ rng.standard_normal((40, 100))
    Y = (signal / signal.std(0) + 2 * rng.standard_normal((200, 100))).astype(np.float32)
    alphas = np.logspace(-6, 8, 15)
    pf = ridge_cv(X, Y, alphas, cv=4, penalty_sweep="partial_fractions")
    direct = ridge_cv(X, Y, alphas, cv=4, penalty_sweep="direct")
    assert pf.penalty_sweep == "mixed"
    # float64 reference through an SVD (the Gram is singular at these penalties)
    ref = np.zeros((4, len(alphas), 100))
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    for k, (tr, va) in enumerate(ContiguousKFold(4).split(200)):
        U, s, Vt = np.linalg.svd(X64[tr], full_matrices=False)
        UtY = U.T @ Y64[tr]
        for a, alpha in enumerate(alphas):
            f = X64[va] @ (Vt.T @ ((s / (s**2 + alpha))[:, None] * UtY))
            yc, fc = Y64[va] - Y64[va].mean(0), f - f.mean(0)
            ref[k, a] = (yc * fc).sum(0) / np.sqrt((yc**2).sum(0) * (fc**2).sum(0))
    ref = ref.mean(0)
    for res in (pf, direct):  # alpha = 1e-6 on a rank-deficient design: ~2e-5 in float32
        np.testing.assert_allclose(res.cv_scores, ref, atol=5e-5, rtol=0)
        np.testing.assert_allclose(res.cv_scores[3:], ref[3:], atol=2e-6, rtol=0)
    np.testing.assert_allclose(pf.cv_scores, direct.cv_scores, atol=2e-5)
    assert_same_choices(pf, direct)
