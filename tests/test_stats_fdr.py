"""FDR correction against statsmodels and scipy on fresh random p-values."""

import numpy as np
import pytest
from scipy.stats import false_discovery_control
from statsmodels.stats.multitest import multipletests

from jaxalign.stats._fdr import fdr_correction

SM = {"bh": "fdr_bh", "by": "fdr_by"}


def reference(p, alpha, method):
    reject, p_adj, _, _ = multipletests(p, alpha=alpha, method=SM[method])
    return reject, p_adj


def check(p, alpha, method):
    reject, p_adj = fdr_correction(p, alpha=alpha, method=method)
    ref_reject, ref_adj = reference(p, alpha, method)
    np.testing.assert_array_equal(reject, ref_reject)
    np.testing.assert_array_equal(p_adj, ref_adj)  # bit for bit
    np.testing.assert_allclose(p_adj, false_discovery_control(p, method=method), rtol=1e-12, atol=0)
    return reject, p_adj


def mixtures(rng):
    m = int(rng.integers(2, 400))
    yield rng.uniform(size=m)
    k = int(rng.integers(1, m))
    small = rng.uniform(size=k) ** 6 * 0.01  # strong signals
    yield rng.permutation(np.concatenate([small, rng.uniform(size=m - k)]))
    yield rng.beta(0.3, 4.0, size=m)


@pytest.mark.parametrize("method", ["bh", "by"])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_matches_statsmodels_and_scipy_random(method, alpha):
    rng = np.random.default_rng()
    n_rejected = 0
    for _ in range(20):
        for p in mixtures(rng):
            reject, _ = check(p, alpha, method)
            n_rejected += reject.sum()
    assert n_rejected > 0  # the mixtures do exercise rejections


@pytest.mark.parametrize("method", ["bh", "by"])
def test_ties_and_exact_endpoints(method):
    rng = np.random.default_rng()
    p = rng.choice([0.0, 0.001, 0.01, 0.02, 0.04, 0.5, 1.0], size=200)
    reject, p_adj = check(p, 0.05, method)
    # tied p-values share their adjusted value and decision
    for v in np.unique(p):
        assert np.unique(p_adj[p == v]).size == 1
        assert np.unique(reject[p == v]).size == 1
    assert (p_adj[p == 0.0] == 0.0).all() and reject[p == 0.0].all()
    assert (p_adj[p == 1.0] == 1.0).all() and not reject[p == 1.0].any()
    check(np.ones(7), 0.05, method)
    check(np.zeros(7), 0.05, method)


@pytest.mark.parametrize("method", ["bh", "by"])
def test_single_p_value(method):
    for v in (0.0, 0.03, 0.05, 0.07, 1.0):
        reject, p_adj = check(np.array([v]), 0.05, method)
        assert p_adj[0] == v  # m = 1: nothing to correct
        assert reject[0] == (v <= 0.05)


@pytest.mark.parametrize("method", ["bh", "by"])
def test_nan_excluded_from_family(method):
    rng = np.random.default_rng()
    p = rng.uniform(size=300) ** 3
    nan = rng.uniform(size=300) < 0.3
    p[nan] = np.nan
    reject, p_adj = fdr_correction(p, alpha=0.1, method=method)
    assert np.isnan(p_adj[nan]).all() and not reject[nan].any()
    ref_reject, ref_adj = reference(p[~nan], 0.1, method)
    np.testing.assert_array_equal(reject[~nan], ref_reject)
    np.testing.assert_array_equal(p_adj[~nan], ref_adj)


def test_all_nan_and_empty():
    reject, p_adj = fdr_correction(np.full((3, 2), np.nan))
    assert reject.shape == (3, 2) and not reject.any()
    assert p_adj.shape == (3, 2) and np.isnan(p_adj).all()
    reject, p_adj = fdr_correction(np.zeros((0,)))
    assert reject.shape == (0,) and p_adj.shape == (0,)


@pytest.mark.parametrize("method", ["bh", "by"])
def test_2d_shape_preserved_and_flattened_family(method):
    rng = np.random.default_rng()
    p = rng.uniform(size=(20, 15)) ** 4  # e.g. channels x windows
    p[3, 4] = np.nan
    reject, p_adj = fdr_correction(p, alpha=0.05, method=method)
    assert reject.shape == p.shape and p_adj.shape == p.shape
    flat_reject, flat_adj = fdr_correction(p.ravel(), alpha=0.05, method=method)
    np.testing.assert_array_equal(reject.ravel(), flat_reject)
    np.testing.assert_array_equal(p_adj.ravel(), flat_adj)
    keep = ~np.isnan(p.ravel())
    ref_reject, ref_adj = reference(p.ravel()[keep], 0.05, method)
    np.testing.assert_array_equal(flat_reject[keep], ref_reject)
    np.testing.assert_array_equal(flat_adj[keep], ref_adj)


def test_by_more_conservative_than_bh():
    rng = np.random.default_rng()
    p = rng.uniform(size=100) ** 3
    r_bh, a_bh = fdr_correction(p, method="bh")
    r_by, a_by = fdr_correction(p, method="by")
    assert (a_by >= a_bh).all() and (r_bh | ~r_by).all()


def test_float32_and_integer_input():
    p = np.array([0.01, 0.2, 0.03], dtype=np.float32)
    _, p_adj = fdr_correction(p)
    assert p_adj.dtype == np.float64
    np.testing.assert_array_equal(p_adj, reference(p.astype(np.float64), 0.05, "bh")[1])
    reject, _ = fdr_correction(np.array([0, 1]))
    assert reject.tolist() == [True, False]


@pytest.mark.parametrize(
    "pvals, kwargs, match",
    [
        ([0.1, 1.2], {}, r"\[0, 1\]"),
        ([0.1, -0.01], {}, r"\[0, 1\]"),
        ([0.1, np.inf], {}, r"\[0, 1\]"),
        ([0.1], {"alpha": 0.0}, "alpha"),
        ([0.1], {"alpha": 1.0}, "alpha"),
        ([0.1], {"alpha": "x"}, "alpha"),
        ([0.1], {"method": "bonferroni"}, "method"),
        ([0.1], {"method": "fdr_bh"}, "method"),
        (["a", "b"], {}, "numeric"),
    ],
)
def test_errors(pvals, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fdr_correction(pvals, **kwargs)
