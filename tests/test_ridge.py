"""The ridge engine against independent references (float64 numpy, himalaya,
scipy, scikit-learn), on fresh random data."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np

from _reference import score64 as _score64
import pytest

from jaxalign.ridge import (
    ContiguousKFold,
    KFold,
    LeaveOneGroupOut,
    RidgeCV,
    ShuffleSplit,
    nested_cv,
    neg_mse,
    parse_bytes,
    pearson_r,
    r2_score,
    ridge_cv,
    ridge_cv_flops,
)
from jaxalign.ridge._engine import target_batch_size

ALPHAS = np.logspace(-2, 8, 11)


def planted(rng, n, p, T, spectrum=1.0, dtype=np.float32):
    """Features with a decaying spectrum; targets with SNRs from ~0 to high."""
    X = rng.standard_normal((n, p)) * np.logspace(0, -spectrum, p)
    X = X @ np.linalg.qr(rng.standard_normal((p, p)))[0]
    signal = X @ rng.standard_normal((p, T))
    snr = np.logspace(-2, 1, T)
    rng.shuffle(snr)
    Y = signal / signal.std(0) * snr + rng.standard_normal((n, T))
    return X.astype(dtype), Y.astype(dtype)


def ridge64(X, Y, alpha, fit_intercept=False):
    """Closed form (X^T X + a I)^-1 X^T Y in float64."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    xm = X.mean(0) if fit_intercept else np.zeros(X.shape[1])
    ym = Y.mean(0) if fit_intercept else np.zeros(Y.shape[1])
    Xc, Yc = X - xm, Y - ym
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    return W, ym - xm @ W


def score64(scoring, y, f):
    return _score64(scoring, np.asarray(y, np.float64), np.asarray(f, np.float64))


def assert_same_choices(a, b):
    """Same chosen penalties, except float32 near-ties (<= 1e-5 apart) at the
    tie tolerance's edge, which a different GEMM blocking may flip."""
    ia, ib = a.best_alpha_index, b.best_alpha_index
    diff = ia != ib
    assert diff.mean() <= 0.01, diff.mean()
    sa = np.take_along_axis(b.cv_scores, ia[..., None, :], axis=-2)[..., 0, :]
    sb = np.take_along_axis(b.cv_scores, ib[..., None, :], axis=-2)[..., 0, :]
    assert np.all(np.abs(sa - sb)[diff] <= 1e-5)


def cv_scores64(X, Y, alphas, splits, scoring, fit_intercept):
    """Plain float64 loop over folds and penalties."""
    out = np.zeros((len(splits), len(alphas), Y.shape[1]))
    for k, (tr, va) in enumerate(splits):
        for a, alpha in enumerate(alphas):
            W, b = ridge64(X[tr], Y[tr], alpha, fit_intercept)
            out[k, a] = score64(scoring, Y[va], X[va] @ W + b)
    return out.mean(0)


# ----------------------------------------------------------------- himalaya


@pytest.mark.parametrize("scoring,sweep", [("pearson", "partial_fractions"),
                                           ("pearson", "direct"), ("r2", "partial_fractions")])
def test_matches_himalaya_on_5000_targets(scoring, sweep):
    himalaya = pytest.importorskip("himalaya")
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import correlation_score, r2_score as h_r2
    from sklearn.model_selection import KFold as SkKFold

    set_backend("numpy")
    rng = np.random.default_rng(11 if scoring == "pearson" else 12)
    X, Y = planted(rng, 400, 60, 5000, spectrum=2.0)
    ours = RidgeCV(alphas=ALPHAS, cv=5, scoring=scoring, penalty_sweep=sweep).fit(X, Y)
    assert ours.result_.penalty_sweep == sweep
    ref = HimalayaRidgeCV(
        alphas=ALPHAS, cv=SkKFold(5), fit_intercept=False,
        solver_params=dict(score_func=correlation_score if scoring == "pearson" else h_r2),
    ).fit(X, Y)
    assert himalaya.__version__
    ref_alphas = np.asarray(ref.best_alphas_, np.float64)
    same = np.isclose(ours.best_alphas_, ref_alphas, rtol=1e-5)
    # Pearson: the acceptance bar. R^2 on pure-noise targets rises
    # monotonically to a plateau in alpha (differences ~1e-7), where float32
    # noise decides himalaya's choice and our tie rule takes the larger alpha;
    # there the float64 reference arbitrates below.
    assert same.mean() >= (0.995 if scoring == "pearson" else 0.98), same.mean()
    # The rest are near-ties: for Pearson the score saturates as alpha grows
    # (predictions tend to X X^T y up to scale), so the tail of the grid ties
    # to ~1e-7; ties go to the larger alpha here, to float32 noise there.
    T = Y.shape[1]
    ref_idx = np.searchsorted(ALPHAS, ref_alphas * (1 - 1e-6))
    ours_idx = np.searchsorted(ALPHAS, ours.best_alphas_ * (1 - 1e-6))
    gap = ours.cv_scores_[ours_idx, np.arange(T)] - ours.cv_scores_[ref_idx, np.arange(T)]
    assert np.all(gap[~same] < 1e-5), gap[~same].max()
    if (~same).any():  # in exact arithmetic our choice is optimal to 2e-6
        bad = np.flatnonzero(~same)
        f64 = cv_scores64(X, Y[:, bad], ALPHAS, list(ContiguousKFold(5).split(400)), scoring, False)
        ours64 = f64[ours_idx[bad], np.arange(bad.size)]
        assert np.all(ours64 >= f64.max(0) - 2e-6)
    # held-out score of each target's chosen penalty equals himalaya's
    ours_best = ours.cv_scores_[ours_idx, np.arange(T)]
    np.testing.assert_allclose(ours_best, np.asarray(ref.cv_scores_), atol=1e-4)


# ------------------------------------------------------- closed-form coefs


@pytest.mark.parametrize("n,p", [(300, 40), (60, 150)])  # primal and dual
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_coef_equals_float64_closed_form(n, p, fit_intercept):
    rng = np.random.default_rng(n + p + fit_intercept)
    X, Y = planted(rng, n, p, 50)
    Y = Y + 3.0 * fit_intercept  # offsets that an intercept must absorb
    for alpha in (0.1, 10.0, 1e4):
        res = ridge_cv(X, Y, [alpha], cv=3, fit_intercept=fit_intercept)
        W, b = ridge64(X, Y, alpha, fit_intercept)
        scale = np.abs(W).max()
        np.testing.assert_allclose(res.coef, W, atol=2e-5 * scale, rtol=0)
        np.testing.assert_allclose(res.intercept, b, atol=1e-4 * np.abs(b).max() + 1e-5)
    assert res.method == ("primal" if p <= n else "dual")


def test_primal_and_dual_agree():
    rng = np.random.default_rng(3)
    X, Y = planted(rng, 120, 100, 30)
    a = ridge_cv(X, Y, ALPHAS, cv=4, method="primal")
    b = ridge_cv(X, Y, ALPHAS, cv=4, method="dual")
    np.testing.assert_allclose(a.cv_scores, b.cv_scores, atol=1e-4)
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-4 * np.abs(a.coef).max())


def test_ill_conditioned_and_collinear_design():
    """Singular values over 6 decades plus duplicated columns: the float64
    Gram eigendecomposition must give the float64 closed form."""
    rng = np.random.default_rng(4)
    n, p = 400, 30
    U = np.linalg.qr(rng.standard_normal((n, p)))[0]
    V = np.linalg.qr(rng.standard_normal((p, p)))[0]
    X = U @ np.diag(np.logspace(2, -4, p)) @ V.T
    X = np.hstack([X, X[:, :5], 2 * X[:, 5:8]])  # exact collinearity
    X = X.astype(np.float32)
    Y = (X @ rng.standard_normal((X.shape[1], 20)) + 0.1 * rng.standard_normal((n, 20)))
    Y = Y.astype(np.float32)
    for alpha in (1e-2, 1.0, 1e3):
        res = ridge_cv(X, Y, [alpha], cv=2)
        W, _ = ridge64(X, Y, alpha)
        err = np.abs(res.coef - W).max() / np.abs(W).max()
        assert err < 1e-3, (alpha, err)
        pred_err = np.abs(X @ res.coef - X.astype(np.float64) @ W).max() / np.abs(X @ W).max()
        assert pred_err < 1e-4, (alpha, pred_err)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_fast_and_accurate_paths_agree_on_well_conditioned_design(fit_intercept):
    rng = np.random.default_rng(17)
    X, Y = planted(rng, 300, 40, 60, spectrum=0.5)
    Y = Y + 500.0 * fit_intercept  # raw-BOLD-like offsets
    fast = ridge_cv(X, Y, ALPHAS, cv=5, precision="fast", fit_intercept=fit_intercept)
    acc = ridge_cv(X, Y, ALPHAS, cv=5, precision="accurate", fit_intercept=fit_intercept)
    auto = ridge_cv(X, Y, ALPHAS, cv=5, fit_intercept=fit_intercept)
    assert (fast.precision, acc.precision, auto.precision) == ("fast", "accurate", "fast")
    ref = cv_scores64(X, Y, ALPHAS, list(ContiguousKFold(5).split(300)), "pearson", fit_intercept)
    for res in (fast, acc):
        np.testing.assert_allclose(res.cv_scores, ref, atol=2e-4)
    for t in range(0, 60, 13):
        W, b = ridge64(X, Y[:, [t]], fast.best_alphas[t], fit_intercept)
        np.testing.assert_allclose(fast.coef[:, t], W[:, 0], atol=1e-4 * np.abs(W).max())
        np.testing.assert_allclose(fast.intercept[t], b[0], rtol=1e-5, atol=1e-4)


def test_auto_precision_protects_ill_conditioned_designs():
    rng = np.random.default_rng(18)
    X = (100 * rng.standard_normal((200, 20)) * np.logspace(0, -4, 20)).astype(np.float32)
    Y = rng.standard_normal((200, 5)).astype(np.float32)
    assert ridge_cv(X, Y, ALPHAS, cv=4).precision == "accurate"  # cond ~ 1e8
    assert ridge_cv(X, Y, [1e5, 1e6], cv=4).precision == "fast"  # large alphas tame it
    with pytest.raises(ValueError, match="precision"):
        ridge_cv(X, Y, ALPHAS, precision="sloppy")


# ----------------------------------------------------- CV scores vs loops


@pytest.mark.parametrize("scoring", ["pearson", "r2", "neg_mse"])
@pytest.mark.parametrize("n,p", [(250, 20), (120, 60), (50, 90)])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_cv_scores_equal_float64_loop(scoring, n, p, fit_intercept):
    """Every (penalty, target) score equals explicit float64 predictions,
    covering validation folds larger (QR-compressed) and smaller than the
    rank, primal and dual."""
    rng = np.random.default_rng(n * p + fit_intercept)
    X, Y = planted(rng, n, p, 40)
    Y = Y + rng.standard_normal(40).astype(np.float32)  # non-zero target means
    splits = ContiguousKFold(4, gap=2).split(n)
    splits = list(splits)
    alphas = np.logspace(-1, 5, 7)
    res = ridge_cv(X, Y, alphas, splits, scoring=scoring, fit_intercept=fit_intercept)
    ref = cv_scores64(X, Y, alphas, splits, scoring, fit_intercept)
    scale = 1.0 if scoring != "neg_mse" else np.abs(ref).max()
    np.testing.assert_allclose(res.cv_scores, ref, atol=2e-4 * scale, rtol=0)
    # chosen penalty = argmax of the reference (ties to the larger one)
    best_ref = ref.max(0)
    chosen = res.cv_scores[res.best_alpha_index, np.arange(40)]
    assert np.all(ref[res.best_alpha_index, np.arange(40)] >= best_ref - 5e-4 * scale)
    assert np.allclose(chosen, res.cv_scores.max(0))
    # refit with each target's own penalty on all samples
    for t in range(0, 40, 7):
        W, b = ridge64(X, Y[:, [t]], res.best_alphas[t], fit_intercept)
        np.testing.assert_allclose(res.coef[:, t], W[:, 0], atol=5e-5 * np.abs(W).max())


def test_ties_go_to_larger_alpha():
    rng = np.random.default_rng(5)
    X, _ = planted(rng, 100, 10, 1)
    Y = rng.standard_normal((100, 3)).astype(np.float32)
    # identical penalties in the grid: identical scores, pick the larger index value
    res = ridge_cv(X, Y, [1.0, 1.0 + 1e-12, 1e9, 1e9 * (1 + 1e-15)], cv=3)
    assert np.all(np.isfinite(res.best_alphas))


# -------------------------------------------------- layers, batching, devices


def test_layers_equal_separate_fits():
    rng = np.random.default_rng(6)
    Xs = np.stack([planted(rng, 150, 20, 1)[0] for _ in range(3)])
    Y = rng.standard_normal((150, 25)).astype(np.float32) + Xs[1] @ rng.standard_normal((20, 25)).astype(np.float32)
    res = ridge_cv(Xs, Y, ALPHAS, cv=5, fit_intercept=True)
    assert res.cv_scores.shape == (3, 11, 25) and res.coef.shape == (3, 20, 25)
    for layer in range(3):
        one = ridge_cv(Xs[layer], Y, ALPHAS, cv=5, fit_intercept=True)
        np.testing.assert_allclose(res.cv_scores[layer], one.cv_scores, atol=1e-5)
        np.testing.assert_array_equal(res.best_alpha_index[layer], one.best_alpha_index)
        np.testing.assert_allclose(res.coef[layer], one.coef, atol=1e-5 * np.abs(one.coef).max())


def test_batching_does_not_change_results():
    rng = np.random.default_rng(7)
    X, Y = planted(rng, 200, 30, 300)
    one = ridge_cv(X, Y, ALPHAS, cv=5, batch_size=300)
    many = ridge_cv(X, Y, ALPHAS, cv=5, batch_size=7, progress=False)  # padded last batch
    budget = ridge_cv(X, Y, ALPHAS, cv=5, memory_budget="2MiB", progress=False)
    assert many.batch_size == 7 and budget.batch_size < 300
    for other in (many, budget):
        np.testing.assert_allclose(other.cv_scores, one.cv_scores, atol=1e-5)
        assert_same_choices(other, one)
        np.testing.assert_allclose(other.coef, one.coef, atol=1e-5 * np.abs(one.coef).max())


def test_batch_size_from_budget():
    assert target_batch_size(100_000, 10_000, 10_000 * 4096) == 4096
    assert target_batch_size(1000, 100, 10**9) == 1000
    size = target_batch_size(100_000, 1000, 3_000_000, n_devices=8)
    assert size % 8 == 0 and size <= 8 * 3000
    with pytest.raises(MemoryError, match="raise memory_budget"):
        target_batch_size(10, 10**9, 10)
    assert parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("1.5 MB") == 1_500_000
    with pytest.raises(ValueError, match="parse"):
        parse_bytes("lots")


SHARDING_SCRIPT = textwrap.dedent(
    """
    import numpy as np, jax
    from jaxalign.ridge import ridge_cv
    from test_ridge import assert_same_choices
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((160, 12)).astype(np.float32)
    Y = (X @ rng.standard_normal((12, 203)) + 2 * rng.standard_normal((160, 203))).astype(np.float32)
    Xs = np.stack([X, X[:, ::-1] ** 2])
    for x, folds_from in ((X, "auto"), (Xs, "auto"), (Xs, "grams")):
        kw = dict(cv=5, batch_size=64, progress=False, folds_from=folds_from)
        one = ridge_cv(x, Y, np.logspace(-2, 6, 9), devices=1, **kw)
        many = ridge_cv(x, Y, np.logspace(-2, 6, 9), devices=8, **kw)
        assert many.batch_size == 64 and many.folds_from == one.folds_from
        np.testing.assert_allclose(many.cv_scores, one.cv_scores, atol=1e-6)
        assert_same_choices(many, one)
        same = np.broadcast_to((many.best_alpha_index == one.best_alpha_index)[..., None, :], one.coef.shape)
        np.testing.assert_allclose(  # float32 GEMM blocking differs per device
            many.coef[same], one.coef[same], rtol=1e-5, atol=1e-6)
    print("SHARDED-OK")
    """
)


def test_sharding_over_8_cpu_devices_identical():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.path.dirname(__file__) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED-OK" in out.stdout


# ------------------------------------------------------------- bad input


def test_bad_inputs_give_clear_errors():
    rng = np.random.default_rng(8)
    X, Y = planted(rng, 50, 5, 4)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="X contains 1 non-finite.*NaN"):
        RidgeCV().fit(Xn, Y)
    Yi = Y.copy()
    Yi[0, 1] = np.inf
    with pytest.raises(ValueError, match="Y contains 1 non-finite.*inf"):
        RidgeCV().fit(X, Yi)
    with pytest.raises(ValueError, match="different numbers of samples: 50 vs 49"):
        RidgeCV().fit(X, Y[:-1])
    with pytest.raises(ValueError, match="fewer samples"):
        RidgeCV(cv=5).fit(X[:4], Y[:4])
    for bad in ([0.0, 1.0], [-1.0], [np.nan], []):
        with pytest.raises(ValueError, match="alphas"):
            RidgeCV(alphas=bad).fit(X, Y)
    with pytest.raises(ValueError, match="scoring"):
        RidgeCV(scoring="accuracy").fit(X, Y)
    with pytest.raises(ValueError, match="must be 2-D or 3-D"):
        ridge_cv(X[0], Y)
    with pytest.raises(TypeError, match="numeric"):
        RidgeCV().fit(np.array([["a"] * 5] * 50), Y)
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeCV().predict(X)
    m = RidgeCV().fit(X, Y)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 5\)"):
        m.predict(X[:, :4])


def test_constant_targets_warn_and_stay_isolated():
    rng = np.random.default_rng(9)
    X, Y = planted(rng, 120, 8, 6)
    Yc = np.insert(Y, [1, 4], 7.5, axis=1)  # two constant targets
    with pytest.warns(UserWarning, match="2 of 8 targets have zero variance"):
        m = RidgeCV(alphas=ALPHAS).fit(X, Yc)
    const = np.array([False, True, False, False, False, True, False, False])
    assert np.isnan(m.cv_scores_[:, const]).all() and np.isnan(m.best_alphas_[const]).all()
    assert np.isfinite(m.cv_scores_[:, ~const]).all()
    assert (m.coef_[:, const] == 0).all()
    ref = RidgeCV(alphas=ALPHAS).fit(X, Y)
    np.testing.assert_allclose(m.cv_scores_[:, ~const], ref.cv_scores_, atol=1e-6)
    np.testing.assert_allclose(m.coef_[:, ~const], ref.coef_, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = m.score(X, Yc)
    assert np.isnan(s[const]).all() and np.isfinite(s[~const]).all()


# -------------------------------------------------------------- estimator


def test_estimator_predict_score_and_1d():
    rng = np.random.default_rng(10)
    X, Y = planted(rng, 300, 12, 5)
    m = RidgeCV(alphas=ALPHAS, fit_intercept=True).fit(X[:200], Y[:200] + 5)
    pred = m.predict(X[200:])
    np.testing.assert_allclose(pred, X[200:] @ m.coef_ + m.intercept_, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(m.score(X[200:], Y[200:] + 5), score64("pearson", Y[200:], pred), atol=1e-5)
    m1 = RidgeCV(alphas=ALPHAS).fit(X, Y[:, 2])
    assert m1.coef_.shape == (12,) and np.ndim(m1.best_alphas_) == 0
    assert m1.cv_scores_.shape == (11,) and m1.predict(X).shape == (300,)
    np.testing.assert_allclose(m1.coef_, RidgeCV(alphas=ALPHAS).fit(X, Y).coef_[:, 2], atol=1e-6)
    assert "RidgeCV(alphas=[0.01..1e+08] (11)" in repr(m1)
    assert m.set_params(cv=3).get_params()["cv"] == 3


def test_score_functions_match_references():
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_squared_error, r2_score as sk_r2

    rng = np.random.default_rng(13)
    y = rng.standard_normal((80, 6)) + 10.0
    f = y * 0.3 + rng.standard_normal((80, 6))
    np.testing.assert_allclose(pearson_r(y, f), [pearsonr(y[:, i], f[:, i])[0] for i in range(6)], atol=2e-6)
    np.testing.assert_allclose(r2_score(y, f), sk_r2(y, f, multioutput="raw_values"), atol=2e-5)
    np.testing.assert_allclose(neg_mse(y, f), -mean_squared_error(y, f, multioutput="raw_values"), rtol=1e-5)
    yc = y.copy()
    yc[:, 2] = 1.0
    assert np.isnan(pearson_r(yc, f)[2]) and np.isfinite(np.delete(np.asarray(pearson_r(yc, f)), 2)).all()
    with pytest.raises(ValueError, match="differ in shape"):
        pearson_r(y, f[:, :3])


# -------------------------------------------------------------- splitters


@pytest.mark.parametrize(
    "cv",
    [ContiguousKFold(4, gap=3), KFold(5, shuffle=True, seed=1), ShuffleSplit(4, 0.2, seed=2)],
)
def test_engine_accepts_every_splitter(cv):
    rng = np.random.default_rng(14)
    X, Y = planted(rng, 120, 10, 8)
    splits = list(cv.split(120))
    res = ridge_cv(X, Y, ALPHAS[:6], cv)
    ref = cv_scores64(X, Y, ALPHAS[:6], splits, "pearson", False)
    np.testing.assert_allclose(res.cv_scores, ref, atol=2e-4)


def test_group_splitter_with_groups_argument():
    rng = np.random.default_rng(15)
    X, Y = planted(rng, 90, 6, 4)
    runs = np.repeat([1, 2, 3], 30)
    m = RidgeCV(alphas=ALPHAS, cv=LeaveOneGroupOut()).fit(X, Y, groups=runs)
    ref = cv_scores64(X, Y, ALPHAS, list(LeaveOneGroupOut().split(X, groups=runs)), "pearson", False)
    np.testing.assert_allclose(m.cv_scores_, ref, atol=2e-4)


# --------------------------------------------------------------- nested CV


def test_nested_cv_heldout_predictions():
    rng = np.random.default_rng(16)
    X, Y = planted(rng, 160, 10, 12)
    outer = ContiguousKFold(4, gap=3)
    res = nested_cv(X, Y, ALPHAS, outer_cv=outer, inner_cv=5, fit_intercept=True)
    assert res.predictions.shape == (160, 12) and np.isfinite(res.predictions).all()
    for k, (tr, te) in enumerate(outer.split(160)):
        inner = RidgeCV(alphas=ALPHAS, cv=5, fit_intercept=True).fit(X[tr], Y[tr])
        np.testing.assert_allclose(res.best_alphas[k], inner.best_alphas_)
        np.testing.assert_allclose(res.predictions[te], inner.predict(X[te]), atol=1e-4)
        np.testing.assert_allclose(res.fold_scores[k], score64("pearson", Y[te], inner.predict(X[te])), atol=1e-5)
    np.testing.assert_allclose(res.scores, score64("pearson", Y, res.predictions), atol=1e-5)
    # layers and a non-partition outer splitter
    Xs = np.stack([X, X[:, ::-1]])
    lay = nested_cv(Xs, Y, ALPHAS, ShuffleSplit(3, 0.25, seed=0), 3)
    assert lay.predictions is None and lay.scores is None
    assert lay.fold_scores.shape == (2, 3, 12) and lay.best_alphas.shape == (2, 3, 12)



def _z(a):
    a = np.asarray(a, np.float64)
    return (a - a.mean(0)) / a.std(0)


@pytest.mark.parametrize("how", ["separate", "train"])
def test_nested_cv_standardize_matches_manual_loop(how):
    rng = np.random.default_rng(31)
    X, Y = planted(rng, 150, 12, 9)
    X = X * rng.uniform(0.5, 3, 12) + rng.standard_normal(12) * 4  # offsets and scales
    Y = Y + np.linspace(0, 3, 150)[:, None]  # a drift
    outer = ContiguousKFold(3, gap=2)
    res = nested_cv(X, Y, ALPHAS, outer, 4, standardize=how)
    y_all = np.empty_like(Y)
    for k, (tr, te) in enumerate(outer.split(150)):
        mx, sx, my, sy = X[tr].mean(0), X[tr].std(0), Y[tr].mean(0), Y[tr].std(0)
        if how == "separate":
            Xte, Yte = _z(X[te]), _z(Y[te])
        else:
            Xte, Yte = (X[te] - mx) / sx, (Y[te] - my) / sy
        inner = RidgeCV(alphas=ALPHAS, cv=4).fit(_z(X[tr]), _z(Y[tr]))
        np.testing.assert_allclose(res.best_alphas[k], inner.best_alphas_)
        np.testing.assert_allclose(res.predictions[te], inner.predict(Xte), atol=1e-4)
        np.testing.assert_allclose(res.fold_scores[k], score64("pearson", Yte, inner.predict(Xte)), atol=1e-5)
        y_all[te] = Yte
    np.testing.assert_allclose(res.scores, score64("pearson", y_all, res.predictions), atol=1e-5)
    with pytest.raises(ValueError, match="standardize"):
        nested_cv(X, Y, ALPHAS, outer, 4, standardize="global")


def test_nested_cv_standardize_removes_fold_offset_leak():
    # Pure-noise features against slowly drifting targets: nothing to predict.
    # Z-scored once over all samples, each test fold's target mean is minus the
    # training set's and the intercept-free predictions carry an offset that
    # tracks it, so the concatenated held-out r comes out clearly positive.
    rng = np.random.default_rng(1)
    n, T = 300, 40
    Y = _z(np.cumsum(rng.standard_normal((n, T)), 0))
    X = _z(rng.standard_normal((n, 400)))
    outer = ContiguousKFold(5, gap=5)
    leaky = nested_cv(X, Y, ALPHAS, outer, 4)
    clean = nested_cv(X, Y, ALPHAS, outer, 4, standardize="separate")
    assert leaky.scores.mean() > 0.15  # the artefact (0.27 with this seed)
    assert abs(clean.scores.mean()) < 0.05
    assert abs(clean.fold_scores.mean()) < 0.05 and abs(leaky.fold_scores.mean()) < 0.05

def test_flop_count_is_consistent():
    splits = list(ContiguousKFold(5).split(3000))
    f = ridge_cv_flops(3000, 768, 20000, 11, splits)
    # dominated by the per-target GEMMs: roughly 5 x (2*2400*768 + 2*11*600*768) per target
    per_target = 5 * (2 * 2400 * 768 + 2 * 11 * 600 * 768)
    assert per_target * 20000 < f < 1.3 * per_target * 20000
    assert ridge_cv_flops(3000, 768, 40000, 11, splits) > 1.9 * f
    # partial fractions: the sweep is one float64 r x r product per target and fold
    g, g64 = ridge_cv_flops(3000, 768, 20000, 11, splits, precision="accurate",
                            penalty_sweep="partial_fractions", float64_part=True)
    per_target = 5 * (2 * 2400 * 768 + 2 * 768 * 600 + 2 * 768 * 768) + 2 * 3000 * 768 + 2 * 768 * 768
    assert per_target * 20000 < g < 1.3 * per_target * 20000
    assert 5 * 2 * 768 * 768 * 20000 < g64 < 1.2 * 5 * 2 * 768 * 768 * 20000
    assert ridge_cv_flops(3000, 768, 20000, 11, splits, precision="accurate") > 1.8 * g


# ------------------------------------------- shared projection of the folds


def _fold_paths(X, splits, alphas=ALPHAS, fit_intercept=False):
    from jaxalign.ridge._engine import _decompose

    x_offset = X.mean(axis=-2, dtype=np.float64) if fit_intercept else None
    plans, *_ = _decompose(X, x_offset, splits, np.asarray(alphas), "primal", fit_intercept,
                           "accurate")
    return ["shared" if p.K is not None else "per-fold" for p in plans]


@pytest.mark.parametrize("fit_intercept,gap,layers", [(False, 0, False), (True, 3, False),
                                                      (True, 0, True)])
def test_shared_projection_equals_per_fold_and_float64(monkeypatch, fit_intercept, gap, layers):
    """Training targets from the whole design's projection minus the left-out
    rows (``K P - EoutT Y_out``) score like the per-fold projection and the
    float64 loop, with an intercept, gaps and stacked layers."""
    import jaxalign.ridge._engine as engine

    monkeypatch.setattr(engine, "_MIN_SAVED_FLOPS", 0)  # 40 targets: worth it only here

    rng = np.random.default_rng(31 + gap)
    X, Y = planted(rng, 300, 30, 40, spectrum=2.0)
    Y = Y + 200.0 * fit_intercept
    if layers:
        X = np.stack([X, planted(rng, 300, 30, 1, spectrum=1.0)[0]])
    splits = list(ContiguousKFold(5, gap=gap).split(300))
    assert _fold_paths(X, splits, fit_intercept=fit_intercept) == ["shared"] * 5
    shared = ridge_cv(X, Y, ALPHAS, splits, fit_intercept=fit_intercept, precision="accurate")
    monkeypatch.setattr(engine, "_SHARED_MAX_ERROR_RATIO", 0.0)
    assert _fold_paths(X, splits, fit_intercept=fit_intercept) == ["per-fold"] * 5
    per_fold = ridge_cv(X, Y, ALPHAS, splits, fit_intercept=fit_intercept, precision="accurate")
    np.testing.assert_allclose(shared.cv_scores, per_fold.cv_scores, atol=2e-6)
    assert_same_choices(shared, per_fold)
    for layer in range(2 if layers else 1):
        Xl = X[layer] if layers else X
        ref = cv_scores64(Xl, Y, ALPHAS, splits, "pearson", fit_intercept)
        got = shared.cv_scores[layer] if layers else shared.cv_scores
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_shared_projection_refused_where_it_would_lose_precision():
    """A training fold missing a direction the left-out rows have (here a
    feature that is zero outside the first fold) keeps the per-fold
    projection; so do folds where it would cost more (p + n_out >= n_train)."""
    rng = np.random.default_rng(32)
    X, Y = planted(rng, 300, 30, 20)
    X[60:, 0] = 0.0  # only the first fold's rows carry feature 0
    splits = list(ContiguousKFold(5).split(300))
    assert _fold_paths(X, splits) == ["per-fold"] + ["shared"] * 4
    res = ridge_cv(X, Y, ALPHAS, splits, precision="accurate")
    ref = cv_scores64(X, Y, ALPHAS, splits, "pearson", False)
    np.testing.assert_allclose(res.cv_scores, ref, atol=2e-5)
    assert _fold_paths(planted(rng, 100, 60, 1)[0], list(ContiguousKFold(5).split(100))) == ["per-fold"] * 5


def test_flop_count_of_shared_folds():
    splits = list(ContiguousKFold(5).split(3000))
    kw = dict(precision="accurate", penalty_sweep="partial_fractions")
    per_fold = ridge_cv_flops(3000, 768, 20000, 11, splits, **kw)
    shared = ridge_cv_flops(3000, 768, 20000, 11, splits, shared_folds=5, **kw)
    # per target and fold: 2 (p + n_out) r instead of 2 n_train r
    saved = 5 * 2 * 768 * (2400 - 768 - 600) * 20000
    # once per fold: K = V^T V_ref and (X_out V)^T instead of (X_train V)^T
    saved += 5 * 2 * 768 * 768 * (2400 - 600 - 768)
    assert abs((per_fold - shared) - saved) < 1e-6 * saved


# ------------------------------------------------------------ stacked sweep


@pytest.mark.parametrize("n,p,scoring,fit_intercept,layers", [
    (120, 300, "pearson", False, False),  # dual
    (120, 300, "r2", True, True),  # dual, intercept, two layers vmapped
    (150, 110, "neg_mse", True, False),  # primal, accurate path
])
def test_stacked_sweep_equals_unstacked_and_float64(monkeypatch, n, p, scoring, fit_intercept, layers):
    """Every penalty's validation predictions straight from the training targets
    (``B[a] @ Y_train``, no spectral coordinates) score like the sweep through ``Z``
    and like the float64 loop; the refit is the same."""
    import jaxalign.ridge._engine as engine

    monkeypatch.setattr(engine, "_MIN_SAVED_FLOPS", 0)  # 400 targets: worth it only here
    rng = np.random.default_rng(n + p + 7 * fit_intercept)
    X, Y = planted(rng, n, p, 400, spectrum=2.0)
    Y = Y + 300.0 * fit_intercept
    if layers:
        X = np.stack([X, planted(rng, n, p, 1, spectrum=1.0)[0]])
    splits = list(ContiguousKFold(5, gap=2).split(n))
    kw = dict(scoring=scoring, fit_intercept=fit_intercept, precision="accurate", penalty_sweep="direct")
    stacked = ridge_cv(X, Y, ALPHAS, splits, **kw)
    assert stacked.stacked_folds == 5
    monkeypatch.setattr(engine, "_stack_pays", lambda *a, **k: False)
    plain = ridge_cv(X, Y, ALPHAS, splits, **kw)
    assert plain.stacked_folds == 0
    scale = 1.0 if scoring != "neg_mse" else np.nanmax(np.abs(plain.cv_scores))
    np.testing.assert_allclose(stacked.cv_scores, plain.cv_scores, atol=1e-5 * scale, rtol=0)
    assert_same_choices(stacked, plain)
    for layer in range(2 if layers else 1):
        Xl = X[layer] if layers else X
        ref = cv_scores64(Xl, Y, ALPHAS, splits, scoring, fit_intercept)
        got = stacked.cv_scores[layer] if layers else stacked.cv_scores
        np.testing.assert_allclose(got, ref, atol=2e-4 * scale, rtol=0)
        idx = stacked.best_alpha_index[layer] if layers else stacked.best_alpha_index
        assert np.all(ref[idx, np.arange(400)] >= ref.max(0) - 5e-4 * scale)  # the float64 best, up to rounding
    same = (stacked.best_alpha_index == plain.best_alpha_index)[..., None, :]  # the refit: same penalty, same coefs
    np.testing.assert_allclose(np.where(same, stacked.coef, 0), np.where(same, plain.coef, 0), rtol=0,
                               atol=1e-6 * np.abs(plain.coef).max())


def test_stacked_sweep_at_extreme_scales_and_rank_deficient_design(monkeypatch):
    """MEG-sized targets (1e-12) on a rank-deficient dual design (z-scored per run, penalties
    down to 1e-6, below its rounding level) and fMRI-sized ones (1e4): the stacked sweep gives
    the unstacked sweep's scores and choices."""
    import jaxalign.ridge._engine as engine

    monkeypatch.setattr(engine, "_MIN_SAVED_FLOPS", 0)
    rng = np.random.default_rng(5)
    n, p = 160, 400
    X = rng.standard_normal((n, p))
    X = np.concatenate([(b - b.mean(0)) / b.std(0) for b in np.split(X, 4)]).astype(np.float32)
    Y = X[:, :20] @ rng.standard_normal((20, 600)) * 0.1 + rng.standard_normal((n, 600))
    alphas = np.logspace(-6, 9, 16)
    splits = list(ContiguousKFold(4, gap=3).split(n))
    for unit in (1e-12, 1e4):
        Yu = (Y * unit).astype(np.float32)
        stacked = ridge_cv(X, Yu, alphas, splits, penalty_sweep="direct")
        assert stacked.stacked_folds == 4 and np.all(np.isfinite(stacked.cv_scores))
        with monkeypatch.context() as m:
            m.setattr(engine, "_stack_pays", lambda *a, **k: False)
            plain = ridge_cv(X, Yu, alphas, splits, penalty_sweep="direct")
        np.testing.assert_allclose(stacked.cv_scores, plain.cv_scores, atol=1e-5, rtol=0)
        assert_same_choices(stacked, plain)


def test_stacked_sweep_chosen_where_it_saves_flops():
    """The dual method with many targets stacks (the sweep benchmark's inner folds); few targets, or
    a primal fold with a large validation block, do not; the flop count follows."""
    from jaxalign.ridge._engine import _stack_pays

    # 13 layers x 395 training rows x 1,024 features (dual), 45 validation rows, 16 penalties
    assert _stack_pays(16, 45, 395, 395, 6000, 13)
    assert not _stack_pays(16, 45, 395, 395, 10, 13)  # forming B would not be paid back
    assert not _stack_pays(11, 600, 768, 2400, 20000)  # primal: A m n_train > n_train r + A m r
    splits = list(ContiguousKFold(10).split(440))
    plain = ridge_cv_flops(440, 1024, 6000, 16, splits)
    stacked = ridge_cv_flops(440, 1024, 6000, 16, splits, stacked_folds=10)
    # per target and fold: 2 A m n_train instead of 2 n_train^2 + 2 n_train m + 2 A m n_train
    saved = 10 * (2 * 396 * 396 + 2 * 396 * 44) * 6000
    assert 0.85 * saved < plain - stacked < saved  # less forming B once per fold (~10%)
