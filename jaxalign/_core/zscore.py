"""The column z-score and its constant-column rule, in float64.

One home for what ``timing.zscore_per_run`` (per run, any float dtype) and
``ridge.nested_cv(standardize=...)`` (train/test folds, float32 out) both do:

.. math::

    z_{ij} = (x_{ij} - \\bar x_j) / s_j, \\qquad s_j^2 = \\frac{1}{n}\\sum_i (x_{ij} - \\bar x_j)^2

with statistics in float64 (float32 sums of squares lose the small variance
of a column with a large offset). A column is *constant* when ``s_j = 0`` or
``s_j <= 100 eps |mean_j|`` for the float type the data were rounded to
(its variation is rounding noise, not signal): its z-scores are zeros, never
noise blown up to unit variance, and the caller is warned once.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["constant_columns", "warn_constant", "zscore_columns"]


def constant_columns(mean, sd, dtype) -> np.ndarray:
    """Mask of the columns whose ``sd`` is 0 or rounding noise of ``dtype`` around ``mean``."""
    tol = 100 * np.finfo(dtype).eps * np.abs(mean)
    return (sd <= tol) | (sd == 0)


def warn_constant(n_constant: int, what: str, stacklevel: int = 3) -> None:
    """One UserWarning: ``n_constant`` ``what`` are constant and their z-scores set to 0."""
    if n_constant:
        warnings.warn(
            f"{n_constant} {what} are constant; their z-scores are set to 0.",
            UserWarning,
            stacklevel=stacklevel,
        )


def zscore_columns(a, mean=None, scale=None, *, tol_dtype=None, warn: bool = True):
    """Z-score the columns of ``a`` (samples on axis -2): ``(z, mean, scale)``.

    ``z`` is float32. ``mean`` and ``scale`` are the float64 statistics used
    (shape ``a.shape[:-2] + (1, p)``); a constant column's ``scale`` is
    ``inf``, so that applying the statistics to other data (a test set
    z-scored with training statistics) also gives zeros there. Pass
    ``mean`` and ``scale`` to apply given statistics instead of computing
    them (nothing is warned then). ``tol_dtype`` is the float type whose
    rounding noise counts as constant (default: ``a``'s own float type).

    >>> z, m, s = zscore_columns(np.array([[1.0, 5.0], [3.0, 5.0]]), warn=False)
    >>> z.tolist(), m.tolist(), s.tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [[2.0, 5.0]], [[1.0, inf]])
    """
    x = np.asarray(a, np.float64)
    if mean is None or scale is None:
        if tol_dtype is None:
            tol_dtype = a.dtype if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) else np.float64
        mean = x.mean(axis=-2, keepdims=True)
        sd = x.std(axis=-2, keepdims=True)
        constant = constant_columns(mean, sd, tol_dtype)
        scale = np.where(constant, np.inf, sd)
        if warn:
            warn_constant(int(np.count_nonzero(constant)), "columns")
    return ((x - mean) / scale).astype(np.float32), mean, scale
