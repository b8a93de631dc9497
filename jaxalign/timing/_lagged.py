r"""Gram matrix and cross-products of a delayed design without building it.

A delayed (FIR) design stacks ``K`` delayed copies of the features,
``D_t = [x_{t-d_1}, ..., x_{t-d_K}]`` (:func:`fir_delays`: zero where
``t - d`` leaves ``t``'s run). For continuous MEG it is too large to exist:
576 features x 40 sample delays x 110,000 samples is 40 GB in float64 (10 GB
in float32). But the ridge engine needs only sums over the samples of a
row set ``S`` (a fold's training or validation rows, see
``jaxalign.ridge._gram``), and each block of them is a lagged product of the
undelayed ``x``:

.. math::

    G_S[d, e] = \sum_{t \in S,\ t-d,\ t-e \in \mathrm{run}(t)} x_{t-d} x_{t-e}^T
              = \sum_{u = u_0}^{u_1 - 1} x_u x_{u+\ell}^T, \quad \ell = d - e,

    C_S[d] = \sum_{t \in S,\ t-d \in \mathrm{run}(t)} x_{t-d} y_t^T, \qquad
    s_S[d] = \sum_{t \in S,\ t-d \in \mathrm{run}(t)} x_{t-d},

where, for a maximal interval ``[a, b)`` of ``S`` inside a run ``[r_0, r_1)``,
``u_0 = max(a, r_0 + max(d, e)) - d`` and ``u_1 = min(b, r_1 + min(d, e)) - d``.
All pairs ``(d, e)`` with the same lag ``l`` sum ``x_u x_{u+l}^T`` over
windows that differ only by a few rows at each end (at most the spread of the
delays): the lag's product over the rows common to all of them is formed
once (one ``p x p`` GEMM over the interval), and each pair adds its own edge
rows, read from running sums of the edge rows' products. Fold boundaries are exact by construction: the sums run over the rows
``t`` of ``S``, and ``x_{t-d}`` may come from a neighbouring fold, as in the
materialised design split by rows; run boundaries are the zeros of
:func:`fir_delays`. ``G[e, d] = G[d, e]^T``, so only lags ``l >= 0`` are
formed.

Cost, for ``n`` rows, ``p`` features and ``K`` consecutive delays: ``K``
lagged products, ``2 K n p^2`` flops, plus edges ``O(K^2 p^2)`` per interval,
against ``2 n (K p)^2`` for the Gram of the materialised design (``K``
times more: 40x for 40 delays); the cross-products cost what the materialised
design's would, ``2 K n p T``, reading ``x`` instead of a ``K``-times-larger
design. Memory: the result, ``(K p)^2`` floats, and the running sums of
one lag's edges, ``K p^2``. Everything is accumulated
in float64 (products of float32 numbers are exact there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxalign._core.runs import run_segments
from jaxalign.timing._preprocess import _array, _delays

__all__ = ["LaggedGram", "lagged_gram", "lagged_nested_cv", "lagged_predict", "lagged_ridge_cv"]


class LaggedGram(NamedTuple):
    """Sums over a row set ``S`` of the delayed design ``D`` (delay-major
    columns, as :func:`fir_delays`), float64.

    gram : (K p, K p) ``D_S^T D_S``
    cross : (K p, T) ``D_S^T Y_S``, or None without ``Y``
    sums : (K p,) ``D_S^T 1`` (column sums: the means for an intercept)
    n : number of rows in ``S``
    """

    gram: np.ndarray
    cross: np.ndarray | None
    sums: np.ndarray
    n: int


def _row_mask(rows, n: int) -> np.ndarray:
    if rows is None:
        return np.ones(n, bool)
    if isinstance(rows, slice):
        mask = np.zeros(n, bool)
        mask[rows] = True
        return mask
    r = np.asarray(rows)
    if r.dtype == bool:
        if r.shape != (n,):
            raise ValueError(f"rows as a boolean mask must have shape ({n},), got {r.shape}.")
        return r.copy()
    if r.ndim != 1 or r.dtype.kind not in "iu":
        raise ValueError("rows must be None, a slice, a boolean mask or 1-D integer indices.")
    if r.size and (r.min() < -n or r.max() >= n):
        raise ValueError(f"rows has indices outside [0, {n}).")
    mask = np.zeros(n, bool)
    mask[r] = True
    if np.count_nonzero(mask) != r.size:
        raise ValueError("rows repeats a sample: each row of the delayed design counts once.")
    return mask


def _intervals(mask: np.ndarray, starts, ends):
    """Maximal intervals ``(a, b, r0, r1)`` of ``mask`` inside each run."""
    out = []
    for r0, r1 in zip(starts, ends):
        m = np.concatenate([[False], mask[r0:r1], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(m))
        out += [(int(r0 + a), int(r0 + b), int(r0), int(r1)) for a, b in zip(edges[::2], edges[1::2])]
    return out


def _edge_sums(X, u0, u1, lag, suffix):
    """Running sums of ``x_u x_{u+lag}^T`` over ``u0 <= u < u1``, (u1 - u0 + 1,
    p, p): entry ``j`` sums ``u >= u0 + j`` (``suffix``) or ``u < u0 + j``."""
    p = X.shape[1]
    out = np.zeros((u1 - u0 + 1, p, p))
    if u1 > u0:
        prods = np.einsum("up,uq->upq", X[u0:u1], X[u0 + lag:u1 + lag])
        if suffix:
            out[:-1] = np.cumsum(prods[::-1], axis=0)[::-1]
        else:
            out[1:] = np.cumsum(prods, axis=0)
    return out


def _add_lag(G, X, ds, lag, pairs, a, b, r0, r1):
    """Add the blocks ``G[k, :, m, :]`` (and their transposes) of the delay
    pairs with ``ds[k] - ds[m] = lag >= 0`` over the rows ``[a, b)`` of run
    ``[r0, r1)``: the lag's product over the rows all their windows share,
    once, plus each pair's edge rows from running sums."""
    windows = []
    for k, m in pairs:
        d, e = ds[k], ds[m]
        lo, hi = max(a, r0 + max(d, e)), min(b, r1 + min(d, e))
        if hi > lo:
            windows.append((k, m, lo - d, hi - d))
    if not windows:
        return
    ks, ms, u0, u1 = (np.array(v) for v in zip(*windows))
    c0, c1 = int(u0.max()), int(u1.min())
    if c1 < c0:  # no common rows (tiny intervals): one window at a time
        for k, m, w0, w1 in windows:
            block = X[w0:w1].T @ X[w0 + lag:w1 + lag]
            G[k, :, m, :] += block
            if k != m:
                G[m, :, k, :] += block.T
        return
    core = X[c0:c1].T @ X[c0 + lag:c1 + lag]
    left = _edge_sums(X, int(u0.min()), c0, lag, suffix=True)
    right = _edge_sums(X, c1, int(u1.max()), lag, suffix=False)
    blocks = core + left[u0 - u0.min()] + right[u1 - c1]  # (pairs, p, p)
    G[ks, :, ms, :] += blocks
    off = ks != ms
    if off.any():
        G[ms[off], :, ks[off], :] += np.transpose(blocks[off], (0, 2, 1))


def lagged_gram(X, delays=range(40), runs=None, rows=None, Y=None) -> LaggedGram:
    r"""Gram matrix, cross-products with ``Y`` and column sums of the delayed
    design of ``X``, over a set of its rows, without materialising it.

    Equals, to float64 rounding, ``D = fir_delays(X, delays, runs)`` followed
    by ``D[S].T @ D[S]``, ``D[S].T @ Y[S]`` and ``D[S].sum(0)``, at ``~K``
    times fewer flops for the Gram and ``K`` times less memory (see the
    module docstring for the maths). Sum the results of disjoint row sets to
    get their union's (a fold's training set from the blocks of
    ``jaxalign.ridge._gram``).

    Parameters
    ----------
    X : (n, p) features (undelayed)
    delays : sequence of int
        Delays in samples (positive look back), as :func:`fir_delays`;
        default 0..39.
    runs : (n,) labels, optional
        Delays never cross a run boundary (zeros there).
    rows : None (all), a slice, a boolean mask (n,) or integer indices
        The rows ``S`` of the delayed design to sum over (e.g. a CV fold).
    Y : (n,) or (n, T), optional
        Targets for the cross-products.

    Returns
    -------
    LaggedGram
        ``gram`` (K p, K p), ``cross`` (K p, T) or None, ``sums`` (K p,), ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.timing import fir_delays, lagged_gram
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> D = fir_delays(X, delays=(0, 1, 2))
    >>> res = lagged_gram(X, delays=(0, 1, 2), rows=slice(2, 5))
    >>> bool(np.allclose(res.gram, D[2:5].T @ D[2:5]))
    True
    """
    X = _array(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}.")
    X = X.astype(np.float64)
    n, p = X.shape
    ds = _delays(delays)
    K = len(ds)
    if len(set(ds)) != K:
        raise ValueError(f"delays has repeated values: {ds}.")
    if Y is not None:
        Y = _array(Y, "Y")
        if Y.shape[0] != n:
            raise ValueError(f"Y has {Y.shape[0]} samples but X has {n}.")
        Y = Y.reshape(n, -1).astype(np.float64)
    if not (np.all(np.isfinite(X)) and (Y is None or np.all(np.isfinite(Y)))):
        raise ValueError("X and Y must be finite (no NaN or inf).")
    mask = _row_mask(rows, n)
    starts, ends = run_segments(runs, n)
    G = np.zeros((K, p, K, p))
    C = None if Y is None else np.zeros((K, p, Y.shape[1]))
    s = np.zeros((K, p))
    # pairs (k, m) with lag ds[k] - ds[m] >= 0, grouped by lag
    by_lag: dict[int, list[tuple[int, int]]] = {}
    for k, d in enumerate(ds):
        for m, e in enumerate(ds):
            if d - e >= 0:
                by_lag.setdefault(d - e, []).append((k, m))
    for a, b, r0, r1 in _intervals(mask, starts, ends):
        for k, d in enumerate(ds):
            lo, hi = max(a, r0 + d), min(b, r1 + d)
            if hi > lo:
                s[k] += X[lo - d:hi - d].sum(axis=0)
                if C is not None:
                    C[k] += X[lo - d:hi - d].T @ Y[lo:hi]
        for lag, pairs in by_lag.items():
            _add_lag(G, X, ds, lag, pairs, a, b, r0, r1)
    G = G.reshape(K * p, K * p)
    return LaggedGram(G, None if C is None else C.reshape(K * p, -1), s.reshape(-1),
                      int(np.count_nonzero(mask)))


def lagged_ridge_cv(X, Y, delays=range(40), runs=None, alphas=np.logspace(-2, 8, 11), cv=5, *, groups=None,
                    scoring: str = "pearson", fit_intercept: bool = False):
    """Ridge CV with per-target penalties on the delayed design of ``X``, which is never built.

    The same answer as ``jaxalign.ridge.ridge_cv_moments(fir_delays(X, delays, runs), Y, ...)``
    (to float64 rounding; tested to 1e-9), with memory of the undelayed ``X``
    and a few ``(K p)^2`` matrices: the CV splits cut the samples into atoms
    (``ridge.split_atoms``), each atom's Gram matrix, cross-products and sums
    of the delayed design come from :func:`lagged_gram` (lagged products of
    ``X``; rows at fold edges read their delayed features from the
    neighbouring fold, as the materialised design does, and never across a
    run), and ``ridge.ridge_cv_from_moments`` runs the spectral CV, the
    penalty choice (ties within 1e-6 to the larger penalty) and the refit on
    all samples from them. Float64 throughout, on the host (CPU).

    Parameters
    ----------
    X : (n, p) undelayed features (continuous MEG: onset impulses, or
        word features on the sample grid; p a few dozen after PCA)
    Y : (n,) or (n, T) targets (any scale: tesla, raw BOLD)
    delays : sample delays, as :func:`fir_delays` (default 0..39)
    runs : (n,) run labels: delays never cross a run boundary
    alphas, cv, groups, scoring, fit_intercept : as ``jaxalign.ridge.ridge_cv``
        (``cv`` an int: that many contiguous folds)

    Returns
    -------
    ``jaxalign.ridge.RidgeCVResult``; ``coef`` (K p, T) delay-major, as the
    columns of :func:`fir_delays`. Predictions: :func:`lagged_predict`.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.timing import lagged_ridge_cv
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((600, 3))
    >>> Y = np.convolve(X[:, 0], [0.0, 1.0, 0.5], mode="full")[:600, None] + rng.standard_normal((600, 1))
    >>> res = lagged_ridge_cv(X, Y, delays=range(4), alphas=np.logspace(-1, 4, 6), cv=5)
    >>> res.coef.shape, bool(res.cv_scores.max() > 0.5)
    ((12, 1), True)
    """
    from jaxalign.ridge import AtomMoments, check_cv, ridge_cv_from_moments, split_atoms

    Xa = _array(X)
    if Xa.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {Xa.shape}.")
    n = Xa.shape[0]
    Ya = _array(Y, "Y")
    if Ya.shape[0] != n:
        raise ValueError(f"Y has {Ya.shape[0]} samples but X has {n}.")
    Ya = Ya.reshape(n, -1).astype(np.float64)
    if not np.all(np.isfinite(Ya)):
        raise ValueError("Y must be finite (no NaN or inf).")
    splits = check_cv(cv, n, groups=groups)
    atom_of, _, _ = split_atoms(splits, n)
    n_atoms = int(atom_of.max()) + 1
    parts = []
    for a in range(n_atoms):
        rows = atom_of == a
        lg = lagged_gram(Xa, delays, runs, rows=rows, Y=Ya)
        Ys = Ya[rows]
        parts.append((lg.n, lg.sums, lg.gram, Ys.sum(0), lg.cross, (Ys * Ys).sum(0)))
    moments = AtomMoments(*(np.stack(v) for v in zip(*parts)))
    return ridge_cv_from_moments(moments, splits, alphas, scoring=scoring, fit_intercept=fit_intercept)


def lagged_predict(X, coef, delays=range(40), runs=None, intercept=None) -> np.ndarray:
    """``fir_delays(X, delays, runs) @ coef (+ intercept)`` without building the delayed design.

    Parameters
    ----------
    X : (n, p) undelayed features
    coef : (K p,) or (K p, T) delay-major coefficients (:func:`lagged_ridge_cv`'s ``coef``)
    delays, runs : as :func:`fir_delays`
    intercept : (T,) or scalar, optional

    Returns
    -------
    (n,) or (n, T) float64 predictions, one delay's block at a time (memory of
    the output, not of the design).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.timing import fir_delays, lagged_predict
    >>> X, B = np.arange(12.0).reshape(6, 2), np.ones((6, 1))
    >>> bool(np.allclose(lagged_predict(X, B, delays=(0, 1, 2)), fir_delays(X, (0, 1, 2)) @ B))
    True
    """
    Xa = _array(X)
    if Xa.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {Xa.shape}.")
    Xa = Xa.astype(np.float64)
    n, p = Xa.shape
    ds = _delays(delays)
    B = np.asarray(coef, np.float64)
    ravel = B.ndim == 1
    B = B[:, None] if ravel else B
    if B.ndim != 2 or B.shape[0] != len(ds) * p:
        raise ValueError(f"coef must have {len(ds)} delays x {p} features = {len(ds) * p} rows, got shape "
                         f"{np.shape(coef)}.")
    starts, ends = run_segments(runs, n)
    out = np.zeros((n, B.shape[1]))
    for k, d in enumerate(ds):
        Bk = B[k * p:(k + 1) * p]
        for r0, r1 in zip(starts, ends):
            lo, hi = max(r0, r0 + d), min(r1, r1 + d)  # rows t whose t - d is in the run
            if hi > lo:
                out[lo:hi] += Xa[lo - d:hi - d] @ Bk
    if intercept is not None:
        out += np.asarray(intercept, np.float64)
    return out[:, 0] if ravel else out


# ------------------------------------------------------------ nested CV on the delayed design


def _delayed_sums(X, ds, starts, ends, mask):
    """Column sums and sums of squares of the delayed design over the rows of ``mask``: (K, p) each."""
    K, p = len(ds), X.shape[1]
    s, q = np.zeros((K, p)), np.zeros((K, p))
    for a, b, r0, r1 in _intervals(mask, starts, ends):
        for k, d in enumerate(ds):
            lo, hi = max(a, r0 + d), min(b, r1 + d)
            if hi > lo:
                seg = X[lo - d:hi - d]
                s[k] += seg.sum(axis=0)
                q[k] += np.einsum("up,up->p", seg, seg)
    return s.ravel(), q.ravel()


def _zstats(s, q, n, dtype):
    """(mean, 1 / sd) of columns from their sums; a constant column gets 1 / sd = 0 (z-scores 0)."""
    from jaxalign._core.zscore import constant_columns

    mean = s / n
    sd = np.sqrt(np.maximum(q / n - mean * mean, 0.0))
    return mean, np.where(constant_columns(mean, sd, dtype), 0.0, 1.0 / np.where(sd > 0, sd, 1.0))


def _affine(m, mean, inv):
    """Moments ``(n, s, G, C, ysum)`` of ``x`` -> those of ``(x - mean) * inv`` (per column)."""
    n, s, G, C, ysum = m
    s0 = s - n * mean
    G = (G - np.outer(s, mean) - np.outer(mean, s) + n * np.outer(mean, mean)) * np.outer(inv, inv)
    C = (C - np.outer(mean, ysum)) * inv[:, None]
    return n, s0 * inv, G, C, ysum


def lagged_nested_cv(X, Y, delays=range(40), runs=None, alphas=np.logspace(-2, 8, 11), outer_cv=5, inner_cv=5, *,
                     rows=None, zscore_runs: bool = False, groups=None, scoring: str = "pearson",
                     fit_intercept: bool = False, standardize: str | None = None, fold_targets=None,
                     on_fold=None):
    """``jaxalign.ridge.nested_cv`` on the delayed design of ``X``, which is never built.

    The same answer, to float64 rounding of a float32 pipeline (tested to
    2e-5 in r), as materialising ``D = fir_delays(X, delays, runs)[rows]``
    (z-scored per run first with ``zscore_runs``) and calling
    ``nested_cv(D, Y, alphas, outer_cv, inner_cv, ...)``. In every outer
    fold the inner CV's atoms (``ridge.split_atoms``), cut further at run
    boundaries, get their Gram matrices, cross-products and sums from
    :func:`lagged_gram`; the per-run z-scoring and the fold's
    ``standardize`` are affine maps of the columns, applied to those sums
    (``(x - m) / s`` turns ``G`` into ``(G - s m' - m s' + n m m') / s s'``);
    ``ridge.ridge_cv_from_moments`` picks the penalties and refits; the test
    rows are predicted by :func:`lagged_predict` over their own stretch of
    the recording. Memory: the undelayed ``X``, ``Y`` and a few ``(K p)^2``
    matrices, never ``n x K p``. Float64 on the host.

    Parameters
    ----------
    X : (n, p) or (L, n, p) undelayed features on the recording's sample grid
        (onset impulses of word features; ``L`` layers share the splits)
    Y : (n_rows, T) targets of the rows used (``rows``)
    delays, runs : as :func:`fir_delays`, over all ``n`` samples
    rows : the samples that are modelled (boolean mask or indices, in order;
        default all): delayed features still read the samples before them
    zscore_runs : z-score every delayed column within every run over
        ``rows`` first (``zscore_per_run`` of the materialised design)
    alphas, outer_cv, inner_cv, groups, scoring, fit_intercept, standardize,
    fold_targets, on_fold : as ``jaxalign.ridge.nested_cv`` (splits index
        the used rows)

    Returns
    -------
    ``jaxalign.ridge.NestedCVResult``

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign import ridge
    >>> from jaxalign.timing import fir_delays, lagged_nested_cv
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((400, 2))
    >>> Y = fir_delays(X, range(3)) @ rng.standard_normal((6, 2)) + rng.standard_normal((400, 2))
    >>> res = lagged_nested_cv(X, Y, range(3), alphas=[1.0, 100.0], outer_cv=4, inner_cv=3)
    >>> ref = ridge.nested_cv(fir_delays(X, range(3)), Y, [1.0, 100.0], 4, 3)
    >>> bool(np.allclose(res.fold_scores, ref.fold_scores, atol=1e-5))
    True
    """
    from jaxalign.ridge import AtomMoments, check_cv, ridge_cv_from_moments, split_atoms
    from jaxalign.ridge._cv import is_partition
    from jaxalign.ridge._nested import NestedCVResult, _fold_y, _score
    from jaxalign.ridge._scores import check_scoring

    Xa = _array(X)
    if Xa.ndim not in (2, 3):
        raise ValueError(f"X must be (samples, features) or (layers, samples, features), got shape {Xa.shape}.")
    layered = Xa.ndim == 3
    Xl = Xa.astype(np.float64) if layered else Xa.astype(np.float64)[None]
    if not np.all(np.isfinite(Xl)):
        raise ValueError("X must be finite (no NaN or inf).")
    n = Xl.shape[1]
    ds = _delays(delays)
    if len(set(ds)) != len(ds):
        raise ValueError(f"delays has repeated values: {ds}.")
    K, p = len(ds), Xl.shape[2]
    used = np.flatnonzero(_row_mask(rows, n)) if rows is None or np.asarray(rows).dtype == bool or isinstance(
        rows, slice) else np.asarray(rows)
    if used.size and np.any(np.diff(used) <= 0):
        raise ValueError("rows must be increasing sample indices (or a boolean mask).")
    m_rows = used.size
    Ya = _array(Y, "Y")
    if Ya.ndim == 1:
        Ya = Ya[:, None]
    if Ya.ndim != 2 or Ya.shape[0] != m_rows:
        raise ValueError(f"Y must be (rows, targets) with {m_rows} rows (the used samples), got shape {Ya.shape}.")
    if not np.all(np.isfinite(Ya)):
        raise ValueError("Y must be finite (no NaN or inf).")
    scoring = check_scoring(scoring)
    if standardize not in (None, "separate", "train"):
        raise ValueError(f"standardize must be None, 'separate' or 'train', got {standardize!r}.")
    starts, ends = run_segments(runs, n)
    run_of = np.repeat(np.arange(len(starts)), ends - starts)  # run index of every sample
    T = Ya.shape[1]
    Y64 = Ya.astype(np.float64)
    outer = check_cv(outer_cv, m_rows, groups=groups)
    partition = is_partition(outer, m_rows)
    L = Xl.shape[0]
    preds = np.full((L, m_rows, T), np.nan) if partition else None
    fold_scores = np.empty((L, len(outer), T), np.float64 if scoring == "neg_mse" else np.float32)
    best_alphas = np.empty((L, len(outer), T), np.float64)
    y_std = np.empty((m_rows, T), np.float32 if standardize is not None else np.float64) if preds is not None else None
    # the per-run z-scoring: statistics over the used rows of each run (the whole recording, as the
    # materialised design is z-scored before the CV)
    used_mask = np.zeros(n, bool)
    used_mask[used] = True
    run_ids = np.unique(run_of[used])
    per_run = []  # per layer: {run: (mean, inv)}
    for Xk in Xl:
        stats = {}
        for r in run_ids:
            mr = used_mask & (run_of == r)
            if zscore_runs:
                s, q = _delayed_sums(Xk, ds, starts, ends, mr)
                stats[r] = _zstats(s, q, int(mr.sum()), np.float64)
            else:
                stats[r] = (np.zeros(K * p), np.ones(K * p))
        per_run.append(stats)
    maxlag, maxlead = max(max(ds), 0), max(-min(ds), 0)
    for k, (train, test) in enumerate(outer):
        train, test = np.asarray(train), np.asarray(test)
        Y_train, Y_test = _fold_y(Y64, train, test, fold_targets, standardize)
        Y_train, Y_test = np.asarray(Y_train, np.float64), np.asarray(Y_test)
        if y_std is not None:
            y_std[test] = Y_test
        inner_groups = None if groups is None else np.asarray(groups)[train]
        inner = check_cv(inner_cv, len(train), groups=inner_groups)
        atom_of, _, _ = split_atoms(inner, len(train))
        n_atoms = int(atom_of.max()) + 1
        Yfull = np.zeros((n, T))
        Yfull[used[train]] = Y_train
        test_mask = np.zeros(n, bool)
        test_mask[used[test]] = True
        pos = np.full(n, -1)
        pos[used[test]] = np.arange(len(test))
        for li, Xk in enumerate(Xl):
            parts = []
            for a in range(n_atoms):
                rows_a = used[train[atom_of == a]]
                acc = None
                for r in np.unique(run_of[rows_a]):
                    mask = np.zeros(n, bool)
                    mask[rows_a[run_of[rows_a] == r]] = True
                    lg = lagged_gram(Xk, ds, runs, rows=mask, Y=Yfull)
                    ysum = Yfull[mask].sum(axis=0)
                    piece = _affine((lg.n, lg.sums, lg.gram, lg.cross, ysum), *per_run[li][r])
                    acc = piece if acc is None else tuple(x + y for x, y in zip(acc, piece))
                Ya_rows = Yfull[rows_a]
                parts.append(acc + ((Ya_rows * Ya_rows).sum(axis=0),))
            cnt, sx, G, C, ysum, yy = (np.stack(v) for v in zip(*parts))
            # the fold's standardize: statistics of the (per-run z-scored) training rows, from the sums
            mean, inv = np.zeros(K * p), np.ones(K * p)
            if standardize is not None:
                ntr = float(cnt.sum())
                mean, inv = _zstats(sx.sum(0), np.einsum("aii->i", G), ntr, np.float32)
                sx, G, C = map(np.stack, zip(*[_affine((c, s_, g_, c_, y_), mean, inv)[1:4]
                                               for c, s_, g_, c_, y_ in zip(cnt, sx, G, C, ysum)]))
            res = ridge_cv_from_moments(AtomMoments(cnt, sx, G, ysum, C, yy), inner, alphas, scoring=scoring,
                                        fit_intercept=fit_intercept)
            coef, intercept = np.asarray(res.coef, np.float64), np.asarray(res.intercept, np.float64)
            best_alphas[li, k] = res.best_alphas
            # the test rows' own statistics ("separate"), after the per-run map
            t_mean, t_inv = mean, inv
            if standardize == "separate":
                s_t, q_t = np.zeros(K * p), np.zeros(K * p)
                for r in np.unique(run_of[used[test]]):
                    mr = test_mask & (run_of == r)
                    s, q = _delayed_sums(Xk, ds, starts, ends, mr)
                    rm, ri = per_run[li][r]
                    nr = int(mr.sum())
                    s_t += ri * (s - nr * rm)
                    q_t += ri * ri * (q - 2 * rm * s + nr * rm * rm)
                t_mean, t_inv = _zstats(s_t, q_t, len(test), np.float32)
            pred = np.empty((len(test), T))
            for a, b, r0, r1 in _intervals(test_mask, starts, ends):
                rm, ri = per_run[li][run_of[a]]
                scale = ri * t_inv
                offset = (rm * ri + t_mean) * t_inv
                lo, hi = max(r0, a - maxlag), min(r1, b + maxlead)
                seg = lagged_predict(Xk[lo:hi], coef * scale[:, None], ds)
                pred[pos[a:b]] = seg[a - lo:b - lo] - offset @ coef + intercept
            if len(test) < 2 and scoring != "neg_mse":
                fold_scores[li, k] = np.nan
            else:
                fold_scores[li, k] = _score(scoring, Y_test, pred)
            if preds is not None:
                preds[li, test] = pred
        if on_fold is not None:
            on_fold(k + 1, len(outer))
    scores = y = None
    if preds is not None:
        y = y_std
        scores = np.stack([_score(scoring, y, pl) for pl in preds])
    if not layered:
        preds = None if preds is None else preds[0]
        scores = None if scores is None else scores[0]
        fold_scores, best_alphas = fold_scores[0], best_alphas[0]
    return NestedCVResult(preds, scores, fold_scores, best_alphas, outer, scoring, targets=y)
