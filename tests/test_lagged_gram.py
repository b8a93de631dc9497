"""``timing.lagged_gram``: the Gram matrix, cross-products and sums of a
delayed design over a set of rows, from lagged products of the undelayed
features, against the materialised design (``fir_delays``) in float64."""

import numpy as np
import pytest

from jaxalign.ridge import ContiguousKFold
from jaxalign.timing import fir_delays, lagged_gram


def _reference(X, Y, delays, runs, rows):
    D = fir_delays(np.asarray(X, np.float64), delays, runs)
    S = np.zeros(len(X), bool)
    S[rows] = True
    return D[S].T @ D[S], D[S].T @ np.asarray(Y, np.float64)[S], D[S].sum(0), S.sum()


def _check(res, ref, rtol=1e-12):
    G, C, s, n = ref
    scale = lambda a: np.abs(a).max() + 1e-300  # noqa: E731
    assert res.n == n
    np.testing.assert_allclose(res.gram, G, rtol=0, atol=rtol * scale(G))
    np.testing.assert_allclose(res.cross, C, rtol=0, atol=rtol * scale(C))
    np.testing.assert_allclose(res.sums, s, rtol=0, atol=rtol * scale(s))


@pytest.mark.parametrize("delays", [range(6), (0, 2, 3, 7), (-2, 0, 1, 4)])
@pytest.mark.parametrize("scale", [1.0, 1e-12, 1e4])
def test_equals_materialised_design_on_every_fold(delays, scale):
    """Every fold's training and validation rows of contiguous folds with a
    gap, three runs of unequal length, delays looking back and ahead, data
    at MEG (1e-12) and raw (1e4) scales: equal to float64 rounding. The
    training Gram is also the sum of its blocks'."""
    rng = np.random.default_rng(abs(hash((tuple(delays), scale))) % 2**32)
    n, p, T = 97, 3, 2
    X = (rng.standard_normal((n, p)) * scale).astype(np.float32)
    Y = rng.standard_normal((n, T)) * scale
    runs = np.repeat([0, 1, 2], [40, 25, 32])
    for tr, va in ContiguousKFold(4, gap=3).split(n):
        for rows in (tr, va):
            _check(lagged_gram(X, delays, runs, rows, Y), _reference(X, Y, delays, runs, rows))
        # a fold's sums are the sums of disjoint row sets' (the engine's blocks)
        half = tr[: len(tr) // 2], tr[len(tr) // 2:]
        parts = [lagged_gram(X, delays, runs, h, Y) for h in half]
        whole = lagged_gram(X, delays, runs, tr, Y)
        np.testing.assert_allclose(parts[0].gram + parts[1].gram, whole.gram, rtol=1e-12,
                                   atol=1e-12 * np.abs(whole.gram).max())


def test_whole_design_forms_of_rows_and_default_delays():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 2))
    Y = rng.standard_normal(120)
    ref = _reference(X, Y[:, None], range(40), None, np.arange(120))
    _check(lagged_gram(X, Y=Y), ref)  # default: delays 0..39, all rows
    mask = np.zeros(120, bool)
    mask[10:50] = True
    ref = _reference(X, Y[:, None], (1, 3), None, mask)
    for rows in (mask, slice(10, 50), np.arange(10, 50)):
        _check(lagged_gram(X, (1, 3), rows=rows, Y=Y), ref)
    assert lagged_gram(X, (1, 3), rows=mask).cross is None


def test_bad_input():
    X = np.ones((10, 2))
    with pytest.raises(ValueError, match="X must be 2-D"):
        lagged_gram(np.ones(10), (0, 1))
    with pytest.raises(ValueError, match="repeated"):
        lagged_gram(X, (0, 1, 1))
    with pytest.raises(ValueError, match="Y has 9 samples"):
        lagged_gram(X, (0, 1), Y=np.ones(9))
    with pytest.raises(ValueError, match="finite"):
        lagged_gram(np.full((10, 2), np.nan), (0, 1))
    with pytest.raises(ValueError, match="repeats a sample"):
        lagged_gram(X, (0, 1), rows=[1, 1, 2])
    with pytest.raises(ValueError, match="boolean mask"):
        lagged_gram(X, (0, 1), rows=np.ones(5, bool))
    with pytest.raises(ValueError, match="delays must be integers"):
        lagged_gram(X, (0, 1.5))
