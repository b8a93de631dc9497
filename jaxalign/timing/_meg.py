r"""MEG timing: word-locked time windows and continuous onset-impulse designs.

- Word-locked (Harry Potter MEG, Toneva & Wehbe): the recording is
  ``(words, channels, time)``; :func:`word_locked_windows` averages it in
  consecutive windows after word onset (20 windows of 25 ms from 0 to 500 ms)
  and one regression is fitted per window.
- Continuous (Moth stories): :func:`onset_impulses` puts each word's features
  at its onset sample, :func:`sample_delays` adds the delayed copies (0..39
  samples) that let a ridge model learn the response shape.
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxalign.timing._fmri import _times
from jaxalign.timing._preprocess import fir_delays

__all__ = ["onset_impulses", "sample_delays", "targets_to_windows", "window_edges", "windows_to_targets",
           "word_locked_windows"]


def window_edges(sfreq: float, n_times: int, *, n_windows: int = 20, width: float = 0.025, start: float = 0.0, tmin: float = 0.0) -> np.ndarray:
    r"""Sample-index edges ``(n_windows, 2)`` of consecutive time windows.

    Window ``k`` covers :math:`[\text{start} + k w, \text{start} + (k+1) w)`
    seconds after word onset; sample ``j`` of an epoch is at
    :math:`t_j = \text{tmin} + j / f_s`, and belongs to the window when the
    interval contains :math:`t_j` (up to 1e-6 samples of rounding). Each row
    is ``[lo, hi)``.

    Raises
    ------
    ValueError
        A window with no sample, or one that needs samples outside
        ``0 .. n_times - 1``.
    """
    sfreq = float(sfreq)
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq}.")
    if int(n_windows) != n_windows or n_windows < 1:
        raise ValueError(f"n_windows must be a positive integer, got {n_windows!r}.")
    if not width > 0:
        raise ValueError(f"width must be positive seconds, got {width!r}.")
    k = np.arange(int(n_windows) + 1)
    bounds = start + k * width
    idx = np.ceil((bounds - tmin) * sfreq - 1e-6).astype(np.int64)
    edges = np.column_stack([idx[:-1], idx[1:]])
    empty = np.flatnonzero(edges[:, 1] <= edges[:, 0])
    if empty.size:
        j = int(empty[0])
        raise ValueError(
            f"window {j} ({bounds[j]:g} to {bounds[j + 1]:g} s) holds no sample at sfreq = {sfreq:g} Hz; "
            "use wider windows or a higher sample rate."
        )
    if edges[0, 0] < 0 or edges[-1, 1] > n_times:
        raise ValueError(
            f"windows from {bounds[0]:g} to {bounds[-1]:g} s need samples {edges[0, 0]} to {edges[-1, 1] - 1}, "
            f"but the epochs have {n_times} samples from tmin = {tmin:g} s at {sfreq:g} Hz "
            f"({tmin:g} to {tmin + (n_times - 1) / sfreq:g} s)."
        )
    return edges


def word_locked_windows(meg, sfreq: float | None = None, *, edges=None, n_windows: int = 20, width: float = 0.025, start: float = 0.0, tmin: float = 0.0) -> np.ndarray:
    r"""Average word-locked MEG in time windows: ``(words, channels, time) -> (windows, words, channels)``.

    .. math::

        Y_{k, i, c} = \frac{1}{|J_k|} \sum_{j \in J_k} M_{i, c, j}

    with :math:`J_k` the samples of window ``k`` (:func:`window_edges`).

    Parameters
    ----------
    meg : array_like, shape (n_words, n_channels, n_times)
    sfreq : float, optional
        Sample rate of the time axis (Hz); with ``n_windows``, ``width``,
        ``start`` (s after onset) and ``tmin`` (time of sample 0) it defines
        the windows. Default 20 windows of 25 ms from 0 s.
    edges : array_like of int, optional
        Instead of ``sfreq``: sample-index windows, either ``(n_windows, 2)``
        rows ``[lo, hi)`` or a 1-D increasing list of ``n_windows + 1``
        boundaries (consecutive windows).

    Returns
    -------
    ndarray, shape (n_windows, n_words, n_channels)
        Same float dtype as ``meg`` (sums are taken in float64).
    """
    m = np.asarray(meg)
    if m.ndim != 3:
        raise ValueError(f"meg must be 3-D (words, channels, time), got shape {m.shape}.")
    if m.dtype.kind not in "biuf":
        raise ValueError(f"meg must be numeric, got dtype {m.dtype}.")
    dtype = m.dtype if m.dtype.kind == "f" else np.float64
    n_times = m.shape[2]
    if edges is None:
        if sfreq is None:
            raise ValueError("pass sfreq (Hz) or edges (sample indices) to define the windows.")
        e = window_edges(sfreq, n_times, n_windows=n_windows, width=width, start=start, tmin=tmin)
    else:
        e = np.asarray(edges)
        if e.dtype.kind not in "iu":
            raise ValueError(f"edges must be integer sample indices, got dtype {e.dtype}.")
        if e.ndim == 1:
            if e.size < 2:
                raise ValueError("1-D edges need at least 2 boundaries.")
            e = np.column_stack([e[:-1], e[1:]])
        if e.ndim != 2 or e.shape[1] != 2:
            raise ValueError(f"edges must be (n_windows, 2) or 1-D boundaries, got shape {e.shape}.")
        if np.any(e[:, 1] <= e[:, 0]) or e.min() < 0 or e.max() > n_times:
            raise ValueError(f"every window [lo, hi) must satisfy 0 <= lo < hi <= {n_times}; got {e.tolist()}.")
    cs = np.zeros((*m.shape[:2], n_times + 1), dtype=np.float64)
    np.cumsum(m, axis=2, dtype=np.float64, out=cs[:, :, 1:])
    sums = cs[:, :, e[:, 1]] - cs[:, :, e[:, 0]]  # (words, channels, windows)
    out = sums / (e[:, 1] - e[:, 0])
    return np.ascontiguousarray(np.moveaxis(out, 2, 0)).astype(dtype, copy=False)


def onset_impulses(word_times, features=None, sfreq: float = 1.0, n_samples: int | None = None, *, t0: float = 0.0) -> np.ndarray:
    r"""Impulse design matrix: each word's features at its onset sample.

    .. math::

        X_s = \sum_{i : s_i = s} f_i, \qquad s_i = \lfloor (w_i - t_0) f_s + 1/2 \rfloor

    (the nearest sample; halves round up, with a 1e-9-sample allowance so
    that e.g. 0.105 s at 100 Hz from t0 = 0.1 s is sample 1 despite float
    rounding; words sharing a sample add up).
    Words outside ``0 .. n_samples - 1`` are dropped with a warning.

    Parameters
    ----------
    word_times : array_like, shape (n_words,)
        Onsets in seconds, on the clock where sample 0 is at ``t0``.
    features : array_like, shape (n_words,) or (n_words, d), optional
        Default: ones (a word-rate impulse train).
    sfreq : float
        Sample rate in Hz.
    n_samples : int
        Length of the recording in samples.

    Returns
    -------
    ndarray, shape (n_samples, d) (or (n_samples,) for 1-D features)
    """
    w = _times(word_times, "word_times")
    sfreq = float(sfreq)
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise ValueError(f"sfreq must be positive Hz, got {sfreq}.")
    if n_samples is None or isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    n_samples = int(n_samples)
    f = np.ones((w.size, 1)) if features is None else np.asarray(features)
    if f.dtype.kind not in "biuf":
        raise ValueError(f"features must be numeric, got dtype {f.dtype}.")
    if f.dtype.kind != "f":
        f = f.astype(np.float64)
    if f.ndim not in (1, 2) or f.shape[0] != w.size:
        raise ValueError(f"features must be (n_words,) or (n_words, d) with n_words = {w.size}, got shape {f.shape}.")
    idx = np.floor((w - t0) * sfreq + (0.5 + 1e-9)).astype(np.int64)
    inside = (idx >= 0) & (idx < n_samples)
    if not inside.all():
        warnings.warn(
            f"{int((~inside).sum())} of {w.size} words fall outside the {n_samples} samples and are dropped.",
            UserWarning,
            stacklevel=2,
        )
    out = np.zeros((n_samples, *f.shape[1:]), dtype=f.dtype)
    np.add.at(out, idx[inside], f[inside])
    return out


def sample_delays(X, delays=range(40), runs=None, *, axis: int = 0) -> np.ndarray:
    """Delayed copies of a continuous design at the MEG sample rate (default 0..39 samples).

    The same operation as :func:`fir_delays` (delay-major columns, zero-filled,
    never crossing a run boundary), with delays in samples rather than TRs.
    """
    return fir_delays(X, delays, runs, axis=axis)


def windows_to_targets(windows) -> np.ndarray:
    """``(windows, words, channels)`` -> ``(words, windows * channels)``: every window x channel one target.

    Column ``k * n_channels + c`` is window ``k``, channel ``c`` (window
    major), so one multi-target ridge fits every window at once;
    :func:`targets_to_windows` undoes it on any per-target result.

    Examples
    --------
    >>> Y = np.arange(2 * 3 * 4).reshape(2, 3, 4)      # 2 windows, 3 words, 4 channels
    >>> flat = windows_to_targets(Y)
    >>> flat.shape, bool((targets_to_windows(flat, 2) == Y.transpose(1, 0, 2)).all())
    ((3, 8), True)
    """
    w = np.asarray(windows)
    if w.ndim != 3:
        raise ValueError(f"windows must be (n_windows, n_words, n_channels), got shape {w.shape}")
    n_windows, n_words, n_channels = w.shape
    return np.ascontiguousarray(w.transpose(1, 0, 2)).reshape(n_words, n_windows * n_channels)


def targets_to_windows(values, n_windows: int) -> np.ndarray:
    """``(..., windows * channels)`` -> ``(..., windows, channels)``: per-target results back per window.

    The inverse of :func:`windows_to_targets` on the last axis (scores,
    p-values, penalties of its targets).
    """
    a = np.asarray(values)
    if isinstance(n_windows, bool) or not isinstance(n_windows, (int, np.integer)) or n_windows < 1:
        raise ValueError(f"n_windows must be a positive integer, got {n_windows!r}")
    if a.ndim < 1 or a.shape[-1] % n_windows:
        raise ValueError(f"the last axis ({a.shape[-1] if a.ndim else 'none'}) is not a multiple of "
                         f"n_windows={n_windows}")
    return a.reshape(a.shape[:-1] + (n_windows, a.shape[-1] // n_windows))
