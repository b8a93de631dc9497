r"""Word features -> fMRI TRs: the one place that maps words to scans.

Two ways to bring per-word features to the scan times:

- :func:`average_per_tr` (Toneva & Wehbe; the Pythia study): each word goes to
  the TR given by :func:`words_to_trs` and the features of a TR's words are
  averaged.
- :func:`lanczos_resample` (Huth lab): a Lanczos-windowed sinc low-pass
  interpolation from the word times to the scan times.

Numpy in, numpy out (jax arrays are accepted and converted). Features are
``(n_words, d)`` or a stack ``(n_layers, n_words, d)`` (words on the
second-to-last axis; a 1-D ``(n_words,)`` vector works too), and the output
has the same layout with ``n_trs`` in place of ``n_words``.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from jaxalign._core.runs import last_scan_before

__all__ = ["average_per_tr", "lanczos_kernel", "lanczos_resample", "words_to_trs"]


def _times(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one time per entry), got shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric seconds, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite.")
    return arr


def _scan_times(tr_times) -> np.ndarray:
    tr = _times(tr_times, "tr_times")
    if tr.size == 0:
        raise ValueError("tr_times is empty.")
    if np.any(np.diff(tr) <= 0):
        raise ValueError(
            "tr_times must be strictly increasing. For runs whose clocks restart at 0, map each run "
            "separately or offset each run's times (word times alike)."
        )
    return tr


def _warn_after_last_scan(w: np.ndarray, tr: np.ndarray) -> None:
    """Warn when most words (> 50%) come after the last TR ends: a unit mix-up, most likely."""
    end = tr[-1] + (tr[-1] - tr[-2] if tr.size > 1 else 0.0)  # the last scan's TR ends here
    n_after = int(np.count_nonzero(w > end))
    if 2 * n_after > w.size:
        warnings.warn(
            f"{n_after} of {w.size} words come after the last scan (t = {tr[-1]:g} s, its TR ends at "
            f"{end:g} s) and all go to the last TR (word times reach {w.max():g}): are the word times in "
            "milliseconds and the scan times in seconds? Both must be seconds on the same clock.",
            UserWarning,
            stacklevel=3,
        )


def words_to_trs(word_times, tr_times, *, warn: bool = True) -> np.ndarray:
    r"""The TR of every word: the index of the last scan time strictly before it.

    .. math::

        \mathrm{tr}(i) = \max\{\, j : s_j < w_i \,\}

    with scan times :math:`s_j` and word time :math:`w_i` (Toneva & Wehbe's
    rule: a word at exactly a scan time belongs to the previous scan). Words
    at or before the first scan get ``-1``: they fall before the recording
    and are dropped by :func:`average_per_tr` (a warning says how many).
    Words after the last scan go to the last TR; when most of them (more than
    half) come even after that TR ends, a warning suggests a unit mix-up
    (word times in ms, scan times in s).

    Parameters
    ----------
    word_times : array_like, shape (n_words,)
        Word onsets in seconds (any order).
    tr_times : array_like, shape (n_trs,)
        Scan times in seconds, strictly increasing, on the same clock.
    warn : bool
        Warn when some words get ``-1``, or most come after the last scan.

    Returns
    -------
    ndarray of int64, shape (n_words,)
        TR index per word, ``-1`` for words before the first scan.

    Examples
    --------
    >>> words_to_trs([0.5, 2.0, 2.1, 7.0], [0.0, 2.0, 4.0])
    array([0, 0, 1, 2])
    """
    w = _times(word_times, "word_times")
    tr = _scan_times(tr_times)
    idx = last_scan_before(w, tr)
    n_before = int(np.count_nonzero(idx < 0))
    if warn and n_before:
        warnings.warn(
            f"{n_before} of {w.size} words are at or before the first scan (t = {tr[0]:g} s): they get TR "
            "index -1 and are dropped when features are aligned to TRs.",
            UserWarning,
            stacklevel=2,
        )
    if warn:
        _warn_after_last_scan(w, tr)
    return idx


def _features(features, n_words: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Move the word axis first and flatten the rest: (n_words, m), plus the output shape tail."""
    f = np.asarray(features)
    if f.dtype.kind not in "biuf":
        raise ValueError(f"features must be numeric, got dtype {f.dtype}.")
    if f.dtype.kind != "f":
        f = f.astype(np.float64)
    if f.ndim == 0 or f.ndim > 3:
        raise ValueError(
            f"features must be (n_words,), (n_words, d) or (n_layers, n_words, d), got shape {f.shape}."
        )
    axis = 0 if f.ndim == 1 else f.ndim - 2
    if f.shape[axis] != n_words:
        raise ValueError(
            f"features have {f.shape[axis]} words (axis {axis} of shape {f.shape}) but there are "
            f"{n_words} word times."
        )
    moved = np.moveaxis(f, axis, 0)
    return moved.reshape(n_words, -1), f.shape


def _apply(matrix: sp.spmatrix, flat: np.ndarray, shape: tuple[int, ...], n_trs: int) -> np.ndarray:
    out = np.asarray(matrix @ flat, dtype=flat.dtype)
    if len(shape) == 1:
        return out.reshape(n_trs)
    axis = len(shape) - 2
    moved_shape = (n_trs, *shape[:axis], *shape[axis + 1 :])
    return np.moveaxis(out.reshape(moved_shape), 0, axis)


def average_per_tr(features, word_times, tr_times, *, return_counts: bool = False):
    r"""Average the features of the words that fall in each TR.

    .. math::

        F_j = \frac{1}{|W_j|} \sum_{i \in W_j} f_i, \qquad
        W_j = \{\, i : \mathrm{tr}(i) = j \,\}

    with :math:`\mathrm{tr}` from :func:`words_to_trs`; :math:`F_j = 0` for a
    TR with no word (silence). Words before the first scan are dropped with a
    warning; a warning also says when most words come after the last scan.

    Parameters
    ----------
    features : array_like, shape (n_words,), (n_words, d) or (n_layers, n_words, d)
    word_times : array_like, shape (n_words,)
    tr_times : array_like, shape (n_trs,), strictly increasing
    return_counts : bool
        Also return the number of words in each TR.

    Returns
    -------
    ndarray, shape (n_trs,), (n_trs, d) or (n_layers, n_trs, d)
        Same float dtype as ``features`` (integers become float64).
    counts : ndarray of int64, shape (n_trs,), if ``return_counts``

    Examples
    --------
    >>> average_per_tr([[1.0], [3.0], [5.0]], [0.5, 1.0, 4.5], [0.0, 2.0, 4.0])
    array([[2.],
           [0.],
           [5.]])
    """
    w = _times(word_times, "word_times")
    tr = _scan_times(tr_times)
    flat, shape = _features(features, w.size)
    idx = last_scan_before(w, tr)
    keep = idx >= 0
    if not keep.all():
        warnings.warn(
            f"{int((~keep).sum())} of {w.size} words are at or before the first scan (t = {tr[0]:g} s) "
            "and are dropped.",
            UserWarning,
            stacklevel=2,
        )
    _warn_after_last_scan(w, tr)
    counts = np.bincount(idx[keep], minlength=tr.size).astype(np.int64)
    weights = (1.0 / counts[idx[keep]]).astype(flat.dtype)
    matrix = sp.csr_matrix((weights, (idx[keep], np.flatnonzero(keep))), shape=(tr.size, w.size))
    out = _apply(matrix, flat, shape, tr.size)
    return (out, counts) if return_counts else out


def lanczos_kernel(t, cutoff: float, window: int = 3) -> np.ndarray:
    r"""Lanczos kernel at times ``t`` (s) for a low-pass ``cutoff`` (Hz).

    .. math::

        L(t) = \frac{a \sin(\pi x) \sin(\pi x / a)}{\pi^2 x^2}, \quad x = f_c t,
        \qquad L = 1 \text{ at } x = 0, \quad L = 0 \text{ for } |x| > a

    with ``a = window`` lobes (Huth lab ``lanczosfun``; not normalised).
    """
    x = np.asarray(t, dtype=np.float64) * cutoff
    with np.errstate(divide="ignore", invalid="ignore"):
        val = window * np.sin(np.pi * x) * np.sin(np.pi * x / window) / (np.pi**2 * x**2)
    val = np.where(x == 0, 1.0, val)
    return np.where(np.abs(x) > window, 0.0, val)


def lanczos_resample(features, word_times, tr_times, *, window: int = 3, cutoff: float | None = None):
    r"""Resample word features to scan times with a Lanczos filter (Huth lab style).

    .. math::

        F_j = \sum_i L(s_j - w_i)\, f_i

    with :func:`lanczos_kernel` (``window`` lobes, cutoff ``f_c``), exactly
    the Huth lab's ``lanczosinterp2D`` (the weights are not normalised, so a
    TR's value grows with the number of nearby words). Only words within
    ``window / f_c`` seconds of a scan contribute, so the matrix is built
    sparse (memory linear in the number of words).

    Parameters
    ----------
    features : array_like, shape (n_words,), (n_words, d) or (n_layers, n_words, d)
    word_times : array_like, shape (n_words,)
        Word times in s (Huth: the middle of each word). Any order.
    tr_times : array_like, shape (n_trs,), strictly increasing
        Scan times (Huth: trigger time + TR / 2).
    window : int
        Number of lobes, default 3.
    cutoff : float, optional
        Low-pass cutoff in Hz. Default ``1 / mean(diff(tr_times))``, i.e.
        one cycle per TR, as in the Huth lab (``cutoff_mult=1``).

    Returns
    -------
    ndarray, shape (n_trs,), (n_trs, d) or (n_layers, n_trs, d)
    """
    w = _times(word_times, "word_times")
    tr = _scan_times(tr_times)
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}.")
    if cutoff is None:
        if tr.size < 2:
            raise ValueError("cutoff=None needs at least 2 scan times (cutoff = 1 / mean TR).")
        cutoff = 1.0 / float(np.mean(np.diff(tr)))
    cutoff = float(cutoff)
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a positive frequency in Hz, got {cutoff}.")
    flat, shape = _features(features, w.size)
    order = np.argsort(w, kind="stable")
    ws = w[order]
    half = window / cutoff * (1 + 1e-9)  # a hair wide: the kernel is ~0 at the edge anyway
    lo = np.searchsorted(ws, tr - half, side="left")
    hi = np.searchsorted(ws, tr + half, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(tr.size), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    vals = lanczos_kernel(tr[rows] - ws[pos], cutoff, window).astype(flat.dtype)
    matrix = sp.csr_matrix((vals, (rows, order[pos])), shape=(tr.size, w.size))
    return _apply(matrix, flat, shape, tr.size)
