"""Drift and confound regression fitted on training samples only (per outer CV fold).

:func:`detrend` removes drift and confounds from the whole series at once:
the fit sees the test samples too. :func:`nuisance_design` writes the same
regression as one design matrix, and :func:`fold_residualizer` turns it into
the ``fold_targets`` hook of :func:`jaxalign.ridge.nested_cv`: in every outer
fold the nuisance weights are fitted by least squares on the training rows
and the fitted nuisance is subtracted from the training AND the test rows,
so no test sample enters the cleaning (issue 11's trust rule).

With every row used for the fit (``train == test == all rows``) the result
equals :func:`detrend` exactly (tested), because the design is block
diagonal over runs: each run has its own drift basis and its own copy of the
confound columns, as :func:`detrend` fits them run by run. A run that has no
training row at all (group folds that hold out a whole run) gets zero
nuisance weights, so its test rows are left as they are (their mean and
scale are then removed by the fold's z-scoring, ``standardize``).
"""

from __future__ import annotations

import numpy as np

from jaxalign._core.runs import run_segments
from jaxalign.timing._preprocess import _basis

__all__ = ["fold_residualizer", "nuisance_design"]


def nuisance_design(n: int, runs=None, *, kind: str = "poly", order: int = 1, confounds=None) -> np.ndarray:
    """(n, k) float64 nuisance regressors: a drift basis per run and the confounds, block diagonal over runs.

    ``kind``: "poly" (Legendre polynomials of degree 0..order), "dct" (the
    constant and ``order`` cosines) or "none" (no drift basis; then
    ``confounds`` are used as given, with a per-run constant). ``confounds``:
    (n, k) or None.

    Examples
    --------
    >>> nuisance_design(6, [0, 0, 0, 1, 1, 1], order=1).shape   # 2 runs x (constant + trend)
    (6, 4)
    """
    if kind not in ("poly", "dct", "none"):
        raise ValueError(f"kind must be 'poly', 'dct' or 'none', got {kind!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    starts, ends = run_segments(runs, n)
    C = None
    if confounds is not None:
        C = np.asarray(confounds, np.float64)
        C = C[:, None] if C.ndim == 1 else C
        if C.ndim != 2 or C.shape[0] != n:
            raise ValueError(f"confounds must be ({n}, k) to match the {n} samples, got {np.shape(confounds)}")
        if not np.isfinite(C).all():
            raise ValueError("confounds contain NaN or inf")
    blocks = []
    for s, e in zip(starts, ends):
        m = int(e - s)
        basis = _basis(m, kind, int(order)) if kind != "none" else np.ones((m, 1)) / np.sqrt(m)
        if C is not None:
            basis = np.hstack([basis, C[s:e]])
        block = np.zeros((n, basis.shape[1]))
        block[s:e] = basis
        blocks.append(block)
    return np.hstack(blocks)


def fold_residualizer(design, column_groups=None):
    """The ``fold_targets`` hook of ``nested_cv``: nuisance fitted on training rows, removed from both.

    Parameters
    ----------
    design : (n, k) nuisance regressors (:func:`nuisance_design`), or
        (G, n, k): one design per group of target columns (e.g. one per
        subject, whose head motion differs), with ``column_groups``.
    column_groups : (T,) ints in 0..G-1, the design of each target column.
        Targets given with more columns than T (the refitted permutation
        test lays permuted copies side by side) repeat the pattern:
        column j uses ``column_groups[j % T]``.

    Returns
    -------
    callable ``(Y, train, test) -> (Y_train, Y_test)``, float64: the
    residuals of the least-squares fit of each column on ``design[train]``
    (minimum-norm weights where the design is rank deficient on the
    training rows), applied to the training and the test rows.
    """
    D = np.asarray(design, np.float64)
    if D.ndim == 2:
        D = D[None]
        groups = None
    elif D.ndim == 3:
        if column_groups is None:
            raise ValueError("a (G, n, k) design needs column_groups (the design of each target column)")
        groups = np.asarray(column_groups)
        if groups.ndim != 1 or groups.dtype.kind not in "iu" or groups.min() < 0 or groups.max() >= D.shape[0]:
            raise ValueError(f"column_groups must be 1-D integers in 0..{D.shape[0] - 1}")
    else:
        raise ValueError(f"design must be (n, k) or (G, n, k), got shape {D.shape}")
    if not np.isfinite(D).all():
        raise ValueError("design contains NaN or inf")

    def residualize(Y, train, test):
        Y = np.asarray(Y, np.float64)
        train, test = np.asarray(train), np.asarray(test)
        if Y.shape[0] != D.shape[1]:
            raise ValueError(f"Y has {Y.shape[0]} samples, the nuisance design {D.shape[1]}")
        out_train = np.empty((len(train), Y.shape[1]))
        out_test = np.empty((len(test), Y.shape[1]))
        if groups is None:
            col_group = np.zeros(Y.shape[1], np.int64)
        else:
            if Y.shape[1] % len(groups):
                raise ValueError(f"Y has {Y.shape[1]} columns, not a multiple of the {len(groups)} column_groups")
            col_group = np.tile(groups, Y.shape[1] // len(groups))
        for g in np.unique(col_group):
            cols = np.flatnonzero(col_group == g)
            d_train, d_test = D[g][train], D[g][test]
            beta = np.linalg.lstsq(d_train, Y[np.ix_(train, cols)], rcond=None)[0]
            out_train[:, cols] = Y[np.ix_(train, cols)] - d_train @ beta
            out_test[:, cols] = Y[np.ix_(test, cols)] - d_test @ beta
        return out_train, out_test

    return residualize
