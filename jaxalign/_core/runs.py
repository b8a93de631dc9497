"""Runs of a recording: where each run starts and ends, trimming, the word -> scan rule.

A run is a maximal block of consecutive samples with the same label in
``runs`` (``[1, 1, 2, 2, 1]`` is three runs). ``timing`` builds design
matrices from these facts and ``io`` needs the same ones to read arrays
distributed already trimmed (Harry Potter fMRI): one home here keeps the two
in agreement without ``io`` importing ``timing`` (``io`` sits above it in the
data flow). ``timing`` re-exports :func:`run_segments` and :func:`trim_mask`
as public API.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["last_scan_before", "run_segments", "trim_mask"]


def run_segments(runs, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) sample index of every run; ``runs=None`` is one run.

    Raises ValueError when ``runs`` is not 1-D of length ``n``.
    """
    if runs is None:
        return np.array([0]), np.array([n])
    r = np.asarray(runs)
    if r.ndim != 1 or r.shape[0] != n:
        raise ValueError(f"runs must be 1-D with one label per sample ({n}), got shape {r.shape}.")
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(r[1:] != r[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [n]]).astype(np.int64)
    return starts, ends


def trim_mask(runs, start: int = 20, end: int = 15) -> np.ndarray:
    """Boolean mask keeping each run but its first ``start`` and last ``end`` samples.

    Raises ValueError when a run has ``start + end`` samples or fewer
    (nothing would be left of it).
    """
    r = np.asarray(runs)
    if r.ndim != 1:
        raise ValueError(f"runs must be 1-D, got shape {r.shape}.")
    for name, v in (("start", start), ("end", end)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}.")
    starts, ends = run_segments(r, r.shape[0])
    lengths = ends - starts
    short = np.flatnonzero(lengths <= start + end)
    if short.size:
        k = int(short[0])
        raise ValueError(
            f"run {k} (label {r[starts[k]]!r}, samples {starts[k]}..{ends[k] - 1}) has {lengths[k]} samples, "
            f"not more than start + end = {start + end}: nothing would be left."
        )
    keep = np.zeros(r.shape[0], dtype=bool)
    pos = np.arange(r.shape[0]) - np.repeat(starts, lengths)
    length = np.repeat(lengths, lengths)
    keep[(pos >= start) & (pos < length - end)] = True
    return keep


def last_scan_before(word_times: np.ndarray, tr_times: np.ndarray) -> np.ndarray:
    """Index of the last scan time strictly before each word time (-1 if none). No checks.

    The word -> TR rule of ``timing.words_to_trs`` (which validates its
    inputs and warns about unit mix-ups, then calls this).
    """
    return np.searchsorted(tr_times, word_times, side="left").astype(np.int64) - 1
