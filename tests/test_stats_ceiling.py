"""Noise ceilings against plain numpy/scipy re-implementations and known reliabilities."""

import warnings

import numpy as np
import pytest
from scipy.optimize import curve_fit

from jaxalign.stats._ceiling import (
    ExtrapolationCeiling,
    SplitHalfCeiling,
    extrapolation_ceiling,
    fit_saturating_curve,
    normalize_scores,
    saturating_curve,
    split_half_ceiling,
)


def corr(a, b):
    """Plain float64 Pearson r per column."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def shared_signal(rng, n_subjects, n_samples, noise_sd):
    """Shared signal (variance 1) + independent noise per subject and target."""
    signal = rng.standard_normal((n_samples, noise_sd.size))
    return signal + noise_sd * rng.standard_normal((n_subjects, n_samples, noise_sd.size))


def v(x, v0, tau):
    return v0 * (1 - np.exp(-x / tau))


# --------------------------------------------------------------------------- #
# split-half
# --------------------------------------------------------------------------- #


def split_half_reference(data, n_splits, seed):
    """Direct loop implementation with the documented generator convention."""
    S = data.shape[0]
    rng = np.random.default_rng(seed)
    splits = np.argsort(rng.random((n_splits, S)), axis=1)
    h = S // 2
    raw = np.array([corr(data[s[:h]].mean(0), data[s[h:]].mean(0)) for s in splits])
    sb = 2 * raw / (1 + raw)
    return np.median(sb, axis=0), sb, raw, splits


@pytest.mark.parametrize("n_subjects", [2, 7, 10])
def test_split_half_equals_reference(n_subjects):
    rng = np.random.default_rng()
    data = shared_signal(rng, n_subjects, 80, rng.uniform(0.3, 3.0, size=13))
    seed = int(rng.integers(1 << 30))
    res = split_half_ceiling(data, n_splits=9, seed=seed)
    ref_ceiling, ref_sb, ref_raw, ref_splits = split_half_reference(data, 9, seed)
    assert isinstance(res, SplitHalfCeiling)
    np.testing.assert_array_equal(res.splits, ref_splits)
    assert res.n_first == n_subjects // 2  # odd: floor first, ceil second
    np.testing.assert_allclose(res.per_split_raw, ref_raw, atol=2e-6)
    np.testing.assert_allclose(res.per_split, ref_sb, atol=1e-5)
    np.testing.assert_allclose(res.ceiling, ref_ceiling, atol=1e-5)
    assert res.ceiling.shape == (13,) and res.per_split.shape == (9, 13)


def test_split_half_deterministic_seed_axis_and_2d():
    rng = np.random.default_rng()
    data = shared_signal(rng, 6, 50, np.full(4, 1.0)).astype(np.float32)
    a = split_half_ceiling(data, seed=3)
    b = split_half_ceiling(data, seed=3)
    c = split_half_ceiling(data, seed=4)
    np.testing.assert_array_equal(a.splits, b.splits)
    np.testing.assert_array_equal(a.ceiling, b.ceiling)
    assert not np.array_equal(a.splits, c.splits)
    assert a.splits.shape == (10, 6)
    # subjects on another axis
    moved = split_half_ceiling(np.moveaxis(data, 0, 2), seed=3, axis_subjects=2)
    np.testing.assert_array_equal(moved.ceiling, a.ceiling)
    # one target: (n_subjects, n_samples), outputs lose the target axis
    one = split_half_ceiling(data[:, :, 1], seed=3)
    assert np.ndim(one.ceiling) == 0 and one.per_split.shape == (10,)
    assert np.isclose(one.ceiling, a.ceiling[1], atol=1e-6)
    # a large offset (raw BOLD ~ 1000) does not cost float32 precision
    shifted = split_half_ceiling(data.astype(np.float64) * 0.01 + 1000.0, seed=3)
    np.testing.assert_allclose(shifted.ceiling, a.ceiling, atol=1e-5)


def test_split_half_known_reliability():
    rng = np.random.default_rng()
    S = 10
    noise_sd = np.sqrt(rng.uniform(0.3, 20.0, size=150))
    data = shared_signal(rng, S, 2000, noise_sd)
    res = split_half_ceiling(data, n_splits=10, seed=int(rng.integers(1 << 30)))
    theory = 1.0 / (1.0 + noise_sd**2 / S)  # reliability of the 10-subject mean
    err = np.abs(res.ceiling - theory)
    assert np.median(err) < 0.02
    assert np.mean(err < 0.05) >= 0.95


def test_split_half_constant_target_is_nan():
    rng = np.random.default_rng()
    data = rng.standard_normal((4, 30, 3))
    data[:, :, 2] = 5.0
    res = split_half_ceiling(data)
    assert np.isnan(res.ceiling[2]) and np.isfinite(res.ceiling[:2]).all()


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        (np.zeros((1, 10, 2)), {}, "at least 2 subjects"),
        (np.zeros((3, 2, 2)), {}, "3 samples"),
        (np.zeros((3, 10, 2, 2)), {}, "n_subjects"),
        (np.zeros(10), {}, "n_subjects"),
        (np.where(np.eye(10)[:3, :, None] > 0, np.nan, 1.0), {}, "non-finite"),
        (np.zeros((3, 10, 2)), {"n_splits": 0}, "n_splits"),
        (np.zeros((3, 10, 2)), {"n_splits": 2.5}, "n_splits"),
        (np.zeros((3, 10, 2)), {"axis_subjects": 3}, "axis_subjects"),
    ],
)
def test_split_half_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_half_ceiling(data, **kwargs)


# --------------------------------------------------------------------------- #
# saturating-curve fit
# --------------------------------------------------------------------------- #


def test_fit_recovers_parameters_of_the_model():
    rng = np.random.default_rng()
    x = np.arange(2.0, 10.0)
    v0 = rng.uniform(0.05, 1.0, size=300)
    tau = np.exp(rng.uniform(np.log(0.5), np.log(15.0), size=300))
    y = v(x[None, :], v0[:, None], tau[:, None])
    fit_v0, fit_tau = fit_saturating_curve(x, y.reshape(3, 100, x.size))
    assert fit_v0.shape == (3, 100)
    np.testing.assert_allclose(fit_v0.ravel(), v0, rtol=1e-6)
    np.testing.assert_allclose(fit_tau.ravel(), tau, rtol=1e-5)
    np.testing.assert_allclose(saturating_curve(x, 0.5, 2.0), v(x, 0.5, 2.0), rtol=1e-15)


def test_fit_matches_scipy_curve_fit_on_noisy_curves():
    rng = np.random.default_rng()
    x = np.arange(2.0, 9.0)
    y = v(x, rng.uniform(0.2, 0.9, size=(40, 1)), rng.uniform(1.0, 6.0, size=(40, 1)))
    y = y + 0.01 * rng.standard_normal(y.shape)
    fit_v0, fit_tau = fit_saturating_curve(x, y)
    for i in range(y.shape[0]):
        best = None
        for p0 in [(0.5, 1.0), (0.9, 5.0), (0.3, 0.5)]:
            try:
                params, _ = curve_fit(
                    v, x, y[i], p0=p0, bounds=([0, 1e-6], [1, np.inf]), xtol=1e-14, ftol=1e-14
                )
            except RuntimeError:
                continue
            sse = ((y[i] - v(x, *params)) ** 2).sum()
            if best is None or sse < best[0]:
                best = (sse, params)
        ours = ((y[i] - v(x, fit_v0[i], fit_tau[i])) ** 2).sum()
        assert ours <= best[0] * (1 + 1e-8) + 1e-15  # never worse than scipy
        if fit_v0[i] < 0.999 and fit_tau[i] < 50:  # interior optimum: same point
            np.testing.assert_allclose([fit_v0[i], fit_tau[i]], best[1], rtol=1e-4)


def test_fit_bounds_and_nan():
    x = np.array([2.0, 3.0, 4.0])
    v0, _ = fit_saturating_curve(x, -v(x, 0.3, 2.0))  # decreasing negative data
    assert v0 == 0.0
    v0, _ = fit_saturating_curve(x, v(x, 3.0, 2.0))  # asymptote above 1
    assert v0 == 1.0
    v0, tau = fit_saturating_curve(x, np.array([[0.1, np.nan, 0.3], [0.1, 0.2, 0.25]]))
    assert np.isnan(v0[0]) and np.isnan(tau[0]) and np.isfinite(v0[1])
    for bad_x, match in [([2.0], "2 points"), ([2.0, 2.0], "distinct"), ([0.0, 1.0], "positive")]:
        with pytest.raises(ValueError, match=match):
            fit_saturating_curve(bad_x, np.zeros(len(bad_x)))
    with pytest.raises(ValueError, match="shape"):
        fit_saturating_curve(x, np.zeros((2, 4)))


# --------------------------------------------------------------------------- #
# extrapolation ceiling
# --------------------------------------------------------------------------- #


def extrapolation_reference(data, n_bootstraps, seed, pool_sizes, n_draws):
    """Loop implementation with the documented generator convention."""
    S, _, T = data.shape
    P = len(pool_sizes)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((P, n_draws, S)), axis=-1)
    boot = rng.integers(0, n_draws, size=(n_bootstraps, P, n_draws))
    draw_r = np.empty((P, n_draws, T))
    for j, p in enumerate(pool_sizes):
        for d in range(n_draws):
            held, pool = perms[j, d, 0], perms[j, d, 1 : 1 + p]
            assert held not in pool and len(set(pool)) == p
            draw_r[j, d] = corr(data[held], data[pool].mean(0))
    boot_mean = np.empty((n_bootstraps, P, T))
    for b in range(n_bootstraps):
        for j in range(P):
            boot_mean[b, j] = draw_r[j, boot[b, j]].mean(0)
    return perms, boot, draw_r, boot_mean


def test_extrapolation_equals_reference():
    rng = np.random.default_rng()
    S, T = 6, 9
    data = shared_signal(rng, S, 60, rng.uniform(0.5, 3.0, size=T))
    seed = int(rng.integers(1 << 30))
    res = extrapolation_ceiling(data, n_bootstraps=12, seed=seed, n_draws=7)
    assert isinstance(res, ExtrapolationCeiling)
    pools = np.arange(1, S)
    perms, boot, draw_r, boot_mean = extrapolation_reference(data, 12, seed, pools, 7)
    np.testing.assert_array_equal(res.pool_sizes, pools)
    np.testing.assert_array_equal(res.x, pools + 1.0)  # Brain-Score's num_subjects
    np.testing.assert_array_equal(res.permutations, perms)
    np.testing.assert_array_equal(res.bootstrap_index, boot)
    np.testing.assert_allclose(res.draw_consistency, draw_r, atol=2e-6)
    np.testing.assert_allclose(res.consistency, draw_r.mean(1), atol=2e-6)
    # each bootstrap's fit is the least-squares fit of the reference bootstrap means
    x = pools + 1.0
    ref_v0 = np.empty((12, T))
    for b in range(12):
        for t in range(T):
            ref_v0[b, t] = fit_saturating_curve(x, boot_mean[b, :, t])[0]
    np.testing.assert_allclose(res.v0_bootstrap, ref_v0, atol=1e-4)
    # ... and scipy's curve_fit agrees on a few of them
    for b, t in [(0, 0), (5, 3), (11, 8)]:
        params, _ = curve_fit(v, x, boot_mean[b, :, t], p0=(0.5, 1.0), bounds=([0, 1e-6], [1, np.inf]))
        sse_scipy = ((boot_mean[b, :, t] - v(x, *params)) ** 2).sum()
        sse_ours = ((boot_mean[b, :, t] - v(x, res.v0_bootstrap[b, t], res.tau_bootstrap[b, t])) ** 2).sum()
        assert sse_ours <= sse_scipy + 1e-9
    # Brain-Score aggregation: median over bootstraps, then over targets
    np.testing.assert_allclose(res.target_ceiling, np.median(ref_v0, axis=0), atol=1e-4)
    assert np.isclose(res.ceiling, np.median(np.median(ref_v0, axis=0)), atol=1e-4)
    np.testing.assert_allclose(res.target_ci, np.percentile(ref_v0, [2.5, 97.5], axis=0), atol=1e-4)
    np.testing.assert_allclose(
        res.ceiling_ci, np.percentile(np.median(ref_v0, axis=1), [2.5, 97.5]), atol=1e-4
    )


def test_extrapolation_custom_pools_median_curve_and_single_target():
    rng = np.random.default_rng()
    data = shared_signal(rng, 7, 40, rng.uniform(0.5, 2.0, size=5))
    res = extrapolation_ceiling(data, n_bootstraps=6, seed=1, pool_sizes=[4, 2, 6], n_draws=4)
    np.testing.assert_array_equal(res.pool_sizes, [2, 4, 6])
    perms, boot, draw_r, boot_mean = extrapolation_reference(data, 6, 1, [2, 4, 6], 4)
    np.testing.assert_allclose(res.draw_consistency, draw_r, atol=2e-6)
    med = extrapolation_ceiling(
        data, n_bootstraps=6, seed=1, pool_sizes=[4, 2, 6], n_draws=4, per_target=False
    )
    assert med.target_ceiling is None and med.v0_bootstrap.shape == (6,)
    ref_v0 = fit_saturating_curve(res.x, np.median(boot_mean, axis=2))[0]
    np.testing.assert_allclose(med.v0_bootstrap, ref_v0, atol=1e-4)
    assert np.isclose(med.ceiling, np.median(ref_v0), atol=1e-4)
    one = extrapolation_ceiling(data[:, :, 2], n_bootstraps=6, seed=1, pool_sizes=[2, 4, 6], n_draws=4)
    assert np.ndim(one.target_ceiling) == 0 and one.consistency.shape == (3,)
    np.testing.assert_allclose(one.draw_consistency, res.draw_consistency[..., 2], atol=1e-6)
    assert np.isclose(one.target_ceiling, res.target_ceiling[2], atol=1e-6)


def test_extrapolation_known_consistency_curve():
    rng = np.random.default_rng()
    noise_sd = np.sqrt(rng.uniform(0.5, 4.0, size=40))
    data = shared_signal(rng, 8, 1500, noise_sd)
    res = extrapolation_ceiling(data, n_bootstraps=30, seed=int(rng.integers(1 << 30)), n_draws=20)
    p = res.pool_sizes[:, None]
    s2 = noise_sd[None, :] ** 2
    theory = 1.0 / np.sqrt((1.0 + s2) * (1.0 + s2 / p))  # corr(subject, mean of p others)
    assert np.abs(res.consistency - theory).max() < 0.06
    assert np.median(np.abs(res.consistency - theory)) < 0.02
    limit = 1.0 / np.sqrt(1.0 + noise_sd**2)  # infinitely many subjects
    assert (res.target_ceiling >= res.consistency[-1] - 0.05).all()
    assert (res.target_ceiling <= limit + 0.1).all()
    assert (res.target_ci[0] <= res.target_ceiling + 1e-12).all()
    assert (res.target_ci[1] >= res.target_ceiling - 1e-12).all()


def test_extrapolation_deterministic_and_nan_target():
    rng = np.random.default_rng()
    data = rng.standard_normal((4, 25, 3))
    data[:, :, 1] = 2.0  # constant target
    a = extrapolation_ceiling(data, n_bootstraps=5, seed=9, n_draws=3)
    b = extrapolation_ceiling(data, n_bootstraps=5, seed=9, n_draws=3)
    np.testing.assert_array_equal(a.v0_bootstrap, b.v0_bootstrap)
    np.testing.assert_array_equal(a.permutations, b.permutations)
    assert np.isnan(a.target_ceiling[1]) and np.isfinite(a.target_ceiling[[0, 2]]).all()
    assert np.isfinite(a.ceiling)


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        (np.zeros((2, 10, 2)), {}, "at least 3 subjects"),
        (np.where(np.eye(10)[:4, :, None] > 0, np.nan, 1.0), {}, "non-finite"),
        (np.ones((4, 10, 2)), {"pool_sizes": [1]}, "at least 2"),
        (np.ones((4, 10, 2)), {"pool_sizes": [1, 1]}, "at least 2"),
        (np.ones((4, 10, 2)), {"pool_sizes": [1, 4]}, r"1\.\.3"),
        (np.ones((4, 10, 2)), {"pool_sizes": [0, 2]}, r"1\.\.3"),
        (np.ones((4, 10, 2)), {"pool_sizes": [1.5, 2]}, "integers"),
        (np.ones((4, 10, 2)), {"n_bootstraps": 0}, "n_bootstraps"),
        (np.ones((4, 10, 2)), {"n_draws": 0}, "n_draws"),
    ],
)
def test_extrapolation_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        extrapolation_ceiling(data, **kwargs)


# --------------------------------------------------------------------------- #
# normalisation
# --------------------------------------------------------------------------- #


def test_normalize_scores():
    norm, c = normalize_scores(np.array([[0.1, 0.2], [0.3, 0.9]]), np.array([0.5, 0.6]))
    np.testing.assert_allclose(norm, [[0.2, 0.2 / 0.6], [0.6, 1.5]])
    np.testing.assert_array_equal(c, [[0.5, 0.6], [0.5, 0.6]])
    clipped, _ = normalize_scores([-0.1, 0.9], 0.6, clip=True)
    np.testing.assert_allclose(clipped, [0.0, 1.0])
    with pytest.warns(RuntimeWarning, match="<= 0"):
        norm, c = normalize_scores([0.2, 0.2, 0.2], [0.4, 0.0, -0.1])
    assert norm[0] == 0.5 and np.isnan(norm[1:]).all()
    np.testing.assert_array_equal(c, [0.4, 0.0, -0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm, _ = normalize_scores([0.2], [np.nan])  # NaN ceiling: NaN, no warning
    assert np.isnan(norm).all()
    with pytest.raises(ValueError, match="broadcast"):
        normalize_scores([0.1, 0.2, 0.3], [0.5, 0.6])


def test_normalize_scores_accepts_ceiling_results():
    rng = np.random.default_rng()
    data = shared_signal(rng, 4, 40, np.full(3, 1.0))
    split = split_half_ceiling(data)
    norm, c = normalize_scores([0.3, 0.3, 0.3], split)
    np.testing.assert_allclose(c, split.ceiling)
    np.testing.assert_allclose(norm, 0.3 / split.ceiling)
