"""Parametric tests against scipy.stats and statsmodels on fresh random data."""

import warnings

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from jaxalign.stats._parametric import (
    correlate_across_models,
    pearson_pvalue,
    student_ttest,
    welch_ttest,
)

ALTS = ["two-sided", "greater", "less"]


# --------------------------------------------------------------------------- #
# pearson_pvalue
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("alternative", ALTS)
def test_pearson_pvalue_matches_scipy_pearsonr(alternative):
    rng = np.random.default_rng()
    rs, ns, ref = [], [], []
    for _ in range(60):
        n = int(rng.integers(3, 200))
        x = rng.standard_normal(n)
        y = rng.uniform(-1, 1) * x + rng.standard_normal(n)
        res = stats.pearsonr(x, y, alternative=alternative)
        rs.append(res.statistic)
        ns.append(n)
        ref.append(res.pvalue)
    p = pearson_pvalue(np.array(rs), np.array(ns), alternative=alternative)  # vectorised
    np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-300)
    # scalar call
    assert np.isclose(pearson_pvalue(rs[0], ns[0], alternative=alternative), ref[0], rtol=1e-9)


def test_pearson_pvalue_broadcast_and_edges():
    r = np.array([[-1.0, -0.3, 0.0, 0.3, 1.0, np.nan]])
    n = np.array([[5], [50]])
    p = pearson_pvalue(r, n)
    assert p.shape == (2, 6)
    assert (p[:, 0] == 0.0).all() and (p[:, 4] == 0.0).all()  # |r| = 1
    assert (p[:, 2] == 1.0).all()
    assert np.isnan(p[:, 5]).all()
    assert p[1, 3] < p[0, 3]  # more samples, smaller p
    assert pearson_pvalue(1.0, 10, alternative="less") == 1.0
    assert pearson_pvalue(1.0, 10, alternative="greater") == 0.0
    # float32 rounding slightly beyond 1 is clipped, not an error
    assert pearson_pvalue(np.float32(1.0000001), 10) == 0.0
    # one- vs two-sided relation
    p2 = pearson_pvalue(0.4, 20)
    assert np.isclose(pearson_pvalue(0.4, 20, alternative="greater"), p2 / 2)


@pytest.mark.parametrize(
    "r, n, kwargs, match",
    [
        (0.5, 2, {}, ">= 3"),
        (0.5, [10, 2], {}, ">= 3"),
        (0.5, 10.5, {}, "whole"),
        (1.5, 10, {}, r"\[-1, 1\]"),
        (0.5, 10, {"alternative": "two_sided"}, "alternative"),
    ],
)
def test_pearson_pvalue_errors(r, n, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pearson_pvalue(r, n, **kwargs)


# --------------------------------------------------------------------------- #
# t-tests
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("equal_var", [False, True])
@pytest.mark.parametrize("alternative", ALTS)
def test_ttests_match_scipy(equal_var, alternative):
    fn = student_ttest if equal_var else welch_ttest
    rng = np.random.default_rng()
    for _ in range(10):
        na, nb = rng.integers(2, 40, size=2)
        a = rng.standard_normal((na, 7)) * rng.uniform(0.5, 3) + rng.uniform(-1, 1)
        b = rng.standard_normal((nb, 7)) * rng.uniform(0.5, 3)
        t, p = fn(a, b, alternative=alternative)
        ref = stats.ttest_ind(a, b, equal_var=equal_var, alternative=alternative)
        np.testing.assert_allclose(t, ref.statistic, rtol=1e-12)
        np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("equal_var", [False, True])
def test_ttests_axis_shapes_and_scalars(equal_var):
    fn = student_ttest if equal_var else welch_ttest
    rng = np.random.default_rng()
    a = rng.standard_normal((4, 12, 5))  # e.g. (windows, words, channels): words on axis 1
    b = rng.standard_normal((4, 9, 5)) + 0.5
    t, p = fn(a, b, axis=1, alternative="less")
    ref = stats.ttest_ind(a, b, axis=1, equal_var=equal_var, alternative="less")
    assert t.shape == p.shape == (4, 5)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-12)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10)
    t, p = fn(a[0, :, 0], b[0, :, 0], axis=-1)
    ref = stats.ttest_ind(a[0, :, 0], b[0, :, 0], equal_var=equal_var)
    assert np.ndim(t) == 0 and np.isclose(t, ref.statistic) and np.isclose(p, ref.pvalue)


@pytest.mark.parametrize("equal_var", [False, True])
def test_ttests_degenerate_data_like_scipy(equal_var):
    fn = student_ttest if equal_var else welch_ttest
    cases = [
        ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]),  # both constant, different means: t = -inf, p = 0
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),  # both constant, equal: NaN
        ([1.0, 2.0, np.nan], [2.0, 2.0, 3.0]),  # NaN propagates
        ([1.0, 1.0, 1.0], [1.0, 2.0, 4.0]),  # one constant group
    ]
    for a, b in cases:
        t, p = fn(a, b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = stats.ttest_ind(a, b, equal_var=equal_var)
        np.testing.assert_allclose(t, ref.statistic, rtol=1e-12)
        np.testing.assert_allclose(p, ref.pvalue, rtol=1e-12)


def test_student_allows_single_observation_group():
    t, p = student_ttest([1.0], [2.0, 3.0, 4.0])
    ref = stats.ttest_ind([1.0], [2.0, 3.0, 4.0])
    np.testing.assert_allclose([t, p], [ref.statistic, ref.pvalue], rtol=1e-12)


@pytest.mark.parametrize(
    "fn, a, b, kwargs, match",
    [
        (welch_ttest, [1.0], [1.0, 2.0, 3.0], {}, "observations"),
        (student_ttest, [1.0], [2.0], {}, "observations"),
        (welch_ttest, [1.0, 2.0], [1.0, 2.0], {"alternative": "bigger"}, "alternative"),
        (welch_ttest, np.ones((3, 2)), np.ones((3, 4)), {}, "shape"),
        (student_ttest, [1.0, 2.0], [1.0, 2.0], {"axis": 1}, "axis"),
        (student_ttest, ["a", "b"], [1.0, 2.0], {}, "numeric"),
    ],
)
def test_ttest_errors(fn, a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(a, b, **kwargs)


# --------------------------------------------------------------------------- #
# correlate_across_models
# --------------------------------------------------------------------------- #


def test_correlate_across_models_matches_scipy_and_statsmodels():
    rng = np.random.default_rng()
    n, k, q = 25, 4, 3
    props = rng.standard_normal((n, q))
    scores = props @ rng.standard_normal((q, k)) * 0.5 + rng.standard_normal((n, k))
    for method in ("bh", "by"):
        res = correlate_across_models(scores, props, fdr_method=method, alpha=0.1)
        assert res.r.shape == res.p.shape == res.p_fdr.shape == res.reject.shape == (k, q)
        assert res.n_models == n
        ref_r = np.empty((k, q))
        ref_p = np.empty((k, q))
        for i in range(k):
            for j in range(q):
                out = stats.pearsonr(scores[:, i], props[:, j])
                ref_r[i, j], ref_p[i, j] = out.statistic, out.pvalue
        np.testing.assert_allclose(res.r, ref_r, atol=2e-6)  # pearson_r is float32
        np.testing.assert_allclose(res.p, ref_p, rtol=1e-3, atol=1e-6)
        # FDR of our own p-values over all k*q pairs, as statsmodels does it
        rej, adj, _, _ = multipletests(res.p.ravel(), alpha=0.1, method="fdr_" + method)
        np.testing.assert_array_equal(res.reject.ravel(), rej)
        np.testing.assert_array_equal(res.p_fdr.ravel(), adj)


def test_correlate_across_models_vector_shapes():
    rng = np.random.default_rng()
    log_params = np.log10(rng.uniform(1e8, 7e10, size=12))
    mmlu = rng.uniform(0.25, 0.7, size=12)
    alignment = 0.05 * log_params + 0.02 * rng.standard_normal(12)
    res = correlate_across_models(alignment, log_params)
    assert res.r.shape == () and res.reject.shape == ()
    ref = stats.pearsonr(alignment, log_params)
    assert abs(float(res.r) - ref.statistic) < 2e-6
    assert np.isclose(float(res.p_fdr), float(res.p))  # a family of one
    both = correlate_across_models(alignment, np.column_stack([log_params, mmlu]))
    assert both.r.shape == (2,)
    assert abs(both.r[0] - ref.statistic) < 2e-6
    bench = correlate_across_models(np.column_stack([alignment, mmlu]), log_params)
    assert bench.r.shape == (2,)


def test_correlate_across_models_nan_and_constant_columns():
    rng = np.random.default_rng()
    n = 10
    scores = rng.standard_normal((n, 3))
    scores[:, 1] = 0.4  # constant benchmark score
    props = rng.standard_normal((n, 2))
    props[2, 1] = np.nan  # one model lacks this property
    res = correlate_across_models(scores, props)
    undefined = np.zeros((3, 2), bool)
    undefined[1, :] = True
    undefined[:, 1] = True
    assert np.isnan(res.r[undefined]).all() and np.isnan(res.p[undefined]).all()
    assert np.isnan(res.p_fdr[undefined]).all() and not res.reject[undefined].any()
    # the defined pairs form the FDR family on their own
    ok = ~undefined
    _, adj, _, _ = multipletests(res.p[ok], method="fdr_bh")
    np.testing.assert_array_equal(res.p_fdr[ok], adj)
    for i, j in zip(*np.nonzero(ok)):
        assert abs(res.r[i, j] - stats.pearsonr(scores[:, i], props[:, j]).statistic) < 2e-6


@pytest.mark.parametrize(
    "scores, props, kwargs, match",
    [
        (np.arange(2.0), np.arange(2.0), {}, "at least 3"),
        (np.arange(5.0), np.arange(4.0), {}, "different numbers"),
        (np.ones((5, 2, 2)), np.arange(5.0), {}, "n_models"),
        (np.arange(5.0), np.arange(5.0), {"fdr_method": "holm"}, "method"),
        (np.arange(5.0), np.arange(5.0), {"alpha": 1.5}, "alpha"),
        (np.array([1.0, 2.0, np.inf, 4.0]), np.arange(4.0), {}, "inf"),
        (np.array(["a", "b", "c"]), np.arange(3.0), {}, "numeric"),
    ],
)
def test_correlate_across_models_errors(scores, props, kwargs, match):
    with pytest.raises(ValueError, match=match):
        correlate_across_models(scores, props, **kwargs)
