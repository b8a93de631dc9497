r"""Design-matrix and response preprocessing per run: delays, edge trimming, z-scoring, detrending.

What a run is: ``runs`` gives a label per sample, and a run is a maximal
block of consecutive samples with the same label (``[1, 1, 2, 2, 1]`` is
three runs). Nothing here mixes samples across a run boundary.

Sample axis: ``axis=0`` by default (``X`` is ``(n_samples, n_features)``);
pass ``axis=1`` for a stack ``(n_layers, n_samples, n_features)``. Numpy in,
numpy out (jax arrays are converted); float32 input stays float32.

This module is the public home of the z-score (:func:`zscore_per_run`; its
float64 rule for constant columns is ``jaxalign._core.zscore``, shared with
``ridge.nested_cv``). Run bookkeeping (:func:`run_segments`, :func:`trim_mask`)
lives in ``jaxalign._core.runs``, shared with ``io`` (which reads arrays
already trimmed) and re-exported here.
"""

from __future__ import annotations

import numbers

import numpy as np

from jaxalign._core.runs import run_segments, trim_mask
from jaxalign._core.zscore import constant_columns, warn_constant

__all__ = ["detrend", "fir_delays", "run_segments", "trim_mask", "trim_runs", "zscore_per_run"]


def _array(X, name: str = "X") -> np.ndarray:
    a = np.asarray(X)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}.")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if a.ndim == 0:
        raise ValueError(f"{name} must be at least 1-D, got a scalar.")
    return a


def _axis(a: np.ndarray, axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"axis must be an integer, got {axis!r}.")
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis {axis} is out of range for an array of shape {a.shape}.")
    return int(axis) % a.ndim


def _segment_ids(runs, n: int) -> np.ndarray:
    starts, ends = run_segments(runs, n)
    return np.repeat(np.arange(starts.size), ends - starts)


# --------------------------------------------------------------------------
# delays
# --------------------------------------------------------------------------


def _delays(delays) -> list[int]:
    try:
        ds = list(delays)
    except TypeError:
        raise ValueError(f"delays must be a sequence of integers, got {delays!r}.") from None
    if not ds:
        raise ValueError("delays is empty.")
    for d in ds:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise ValueError(f"delays must be integers (in samples), got {d!r}.")
    return [int(d) for d in ds]


def fir_delays(X, delays=(1, 2, 3, 4), runs=None, *, axis: int = 0) -> np.ndarray:
    r"""Finite-impulse-response design: delayed copies of the features side by side.

    For every delay ``d`` (in samples), the block

    .. math::

        X^{(d)}_t = X_{t-d} \text{ if } t-d \text{ is in the same run as } t, \text{ else } 0

    and the result is ``[X^{(d_1)}, X^{(d_2)}, ...]`` along the last axis
    (delay-major: the first ``p`` columns are delay ``d_1``). Positive delays
    look back (the features of earlier samples, as the hemodynamic response
    lags the stimulus), ``0`` is ``X`` itself, negative delays look ahead.
    Zero-filled at run starts / ends; never crosses a run boundary.

    Parameters
    ----------
    X : array_like, shape (n, p), (n,) or stacked with samples on ``axis``
    delays : sequence of int
        Default (1, 2, 3, 4): Toneva & Wehbe and Huth's FIR delays in TRs.
    runs : array_like, shape (n,), optional
    axis : int
        Sample axis (not the last one unless ``X`` is 1-D).

    Returns
    -------
    ndarray, shape (n, p * len(delays)) (or (n, len(delays)) for 1-D ``X``)

    Examples
    --------
    >>> fir_delays([1.0, 2.0, 3.0, 4.0], delays=(1, 2), runs=[0, 0, 1, 1])
    array([[0., 0.],
           [1., 0.],
           [0., 0.],
           [3., 0.]])
    """
    a = _array(X)
    ds = _delays(delays)
    if a.ndim == 1:
        a = a[:, None]
    ax = _axis(a, axis)
    if ax == a.ndim - 1:
        raise ValueError("the sample axis cannot be the last (feature) axis; delayed copies are stacked there.")
    n = a.shape[ax]
    seg = _segment_ids(runs, n)
    blocks = []
    t = np.arange(n)
    for d in ds:
        src = t - d
        ok = (src >= 0) & (src < n)
        ok[ok] &= seg[src[ok]] == seg[t[ok]]
        block = np.zeros_like(a)
        dst_idx = [slice(None)] * a.ndim
        dst_idx[ax] = t[ok]
        block[tuple(dst_idx)] = np.take(a, src[ok], axis=ax)
        blocks.append(block)
    return np.concatenate(blocks, axis=-1)


# --------------------------------------------------------------------------
# trimming
# --------------------------------------------------------------------------


def trim_runs(X, runs, start: int = 20, end: int = 15, *, axis: int = 0):
    """Drop the first ``start`` and last ``end`` samples of every run.

    Toneva & Wehbe (Harry Potter): 20 and 15 TRs of each of the 4 runs.

    Returns
    -------
    X_trimmed : ndarray
        ``X`` without those samples (along ``axis``).
    runs_trimmed : ndarray
        The labels of the kept samples.
    """
    a = np.asarray(X)
    ax = _axis(a, axis) if a.ndim else 0
    r = np.asarray(runs)
    if a.ndim == 0 or a.shape[ax] != r.shape[0]:
        raise ValueError(f"X has {a.shape[ax] if a.ndim else 0} samples on axis {axis} but runs has {r.shape[0]} labels.")
    keep = trim_mask(r, start, end)
    return np.compress(keep, a, axis=ax), r[keep]


# --------------------------------------------------------------------------
# z-score and detrending
# --------------------------------------------------------------------------


def zscore_per_run(X, runs=None, *, axis: int = 0, ddof: int = 0) -> np.ndarray:
    r"""Z-score every column within every run: :math:`(x - \bar x_r) / s_r`.

    Means and standard deviations (``ddof`` = 0 by default, like
    ``scipy.stats.zscore``) are computed per run in float64; the result has
    the input's float dtype. A column that is constant within a run (its
    standard deviation is 0, or below ``100 eps |mean|`` of the input dtype,
    i.e. rounding noise) becomes zeros there, with a warning. NaNs
    propagate. Train and test sets should be z-scored separately: call this
    on each.

    Parameters
    ----------
    X : array_like, samples on ``axis`` (e.g. (n, p), or (words, channels,
        time) with ``axis=0`` for MEG z-scored across words)
    runs : array_like, shape (n,), optional
        Default: the whole array is one run.
    axis : int
    ddof : int

    Returns
    -------
    ndarray, same shape as ``X``
    """
    a = _array(X)
    ax = _axis(a, axis)
    n = a.shape[ax]
    starts, ends = run_segments(runs, n)
    if n == 0:
        return a.copy()
    counts = ends - starts
    if np.any(counts - ddof <= 0):
        raise ValueError(f"every run needs more than ddof={ddof} samples; run lengths are {counts.tolist()}.")
    x = np.moveaxis(a, ax, 0).astype(np.float64)
    shape_c = (-1,) + (1,) * (x.ndim - 1)
    means = np.add.reduceat(x, starts, axis=0) / counts.reshape(shape_c)
    centred = x - np.repeat(means, counts, axis=0)
    var = np.add.reduceat(centred * centred, starts, axis=0) / (counts - ddof).reshape(shape_c)
    std = np.sqrt(var)
    constant = constant_columns(means, std, a.dtype)  # the rule of jaxalign._core.zscore
    warn_constant(int(np.count_nonzero(constant & ~np.isnan(std))), "(run, column) pairs")
    safe = np.where(constant, 1.0, std)
    out = centred / np.repeat(safe, counts, axis=0)
    out[np.repeat(constant, counts, axis=0)] = 0.0
    return np.moveaxis(out, 0, ax).astype(a.dtype, copy=False)


def _basis(n: int, kind: str, order: int) -> np.ndarray:
    """Orthonormal (n, order + 1) basis: constant + ``order`` trend regressors."""
    if kind == "poly":
        t = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        raw = np.polynomial.legendre.legvander(t, order)
    else:  # dct-II cosines, k = 0 (constant) .. order
        i = np.arange(n)[:, None]
        k = np.arange(order + 1)[None, :]
        raw = np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    q, _ = np.linalg.qr(raw)
    return q


def detrend(Y, runs=None, *, kind: str = "poly", order: int = 1, axis: int = 0, confounds=None) -> np.ndarray:
    r"""Remove slow drifts within every run by least squares.

    In each run of length ``m`` the columns are regressed on a basis ``B``
    (``m x (order + 1)``) and replaced by the residuals
    :math:`Y - B (B^\top B)^{-1} B^\top Y`:

    - ``kind="poly"``: polynomials of degree 0..``order`` in time (Legendre
      basis on [-1, 1], orthonormalised); ``order=1`` removes mean and
      linear trend.
    - ``kind="dct"``: the constant and the ``order`` lowest DCT-II cosines
      :math:`\cos(\pi k (2i + 1) / 2m)`, ``k = 1..order`` (SPM-style high-pass;
      cosine ``k`` has period ``2 m / k`` samples).

    The run mean is always removed. Float32 stays float32.

    ``confounds`` (n, k), optional: nuisance regressors (e.g. head motion,
    sound power) removed together with the drift basis, by least squares in
    each run on ``[B, confounds]`` jointly (computed float64 as the drift
    residual minus its projection on the drift-residualised confounds; a
    rank-deficient confound set is fine).

    Raises
    ------
    ValueError
        Unknown ``kind``, negative ``order``, a run with no more than
        ``order + 1`` samples, or confounds that are not finite or not
        (n, k).
    """
    if kind not in ("poly", "dct"):
        raise ValueError(f"kind must be 'poly' or 'dct', got {kind!r}.")
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}.")
    a = _array(Y, "Y")
    ax = _axis(a, axis)
    x = np.moveaxis(a, ax, 0)
    n = x.shape[0]
    starts, ends = run_segments(runs, n)
    flat = x.reshape(n, -1).astype(np.float64)
    C = None
    if confounds is not None:
        C = np.asarray(confounds, dtype=np.float64)
        C = C[:, None] if C.ndim == 1 else C
        if C.ndim != 2 or C.shape[0] != n:
            raise ValueError(f"confounds must be ({n}, k) to match Y's {n} samples, got {np.shape(confounds)}")
        if not np.isfinite(C).all():
            raise ValueError("confounds contain NaN or inf")
    out = np.empty_like(flat)
    for s, e in zip(starts, ends):
        m = int(e - s)
        if m <= order + 1:
            raise ValueError(f"a run of {m} samples cannot be detrended with order {order} (needs more than {order + 1}).")
        b = _basis(m, kind, int(order))
        block = flat[s:e]
        resid = block - b @ (b.T @ block)
        if C is not None:
            c = C[s:e] - b @ (b.T @ C[s:e])
            resid = resid - c @ np.linalg.lstsq(c, resid, rcond=None)[0]
        out[s:e] = resid
    return np.moveaxis(out.reshape(x.shape), 0, ax).astype(a.dtype, copy=False)
