"""Word features -> the brain's sampling: TR alignment, delays, run-wise preprocessing, MEG windows.

Arrays in, arrays out (numpy; jax arrays are accepted). This is the one home
of the word -> TR mapping (:func:`words_to_trs`) and of the z-score
(:func:`zscore_per_run`).

fMRI
----
words_to_trs
    Index of the last scan strictly before each word (-1 before the first scan).
average_per_tr
    Mean of the word features in each TR (zeros for TRs without words).
lanczos_resample, lanczos_kernel
    Huth-lab Lanczos interpolation from word times to scan times.
fir_delays
    Delayed copies as extra columns, zero-filled, within runs.
trim_runs, trim_mask
    Drop the first/last samples of every run.
zscore_per_run, detrend
    Per-run z-score; polynomial or DCT drift removal.
nuisance_design, fold_residualizer
    Drift + confound regression as a design, fitted on each outer CV fold's
    training rows only (the ``fold_targets`` hook of ``ridge.nested_cv``).

MEG
---
word_locked_windows, window_edges
    (words, channels, time) -> (windows, words, channels) window means.
windows_to_targets, targets_to_windows
    (windows, words, channels) <-> (words, windows x channels): all windows
    as the targets of one fit, and per-target results back per window.
onset_impulses, sample_delays
    Continuous word-onset impulse design and its sample delays.
lagged_gram
    Gram matrix and cross-products of a delayed design, over a set of rows
    (a CV fold), from lagged products of the undelayed features: never
    materialised (40 sample delays of 576 features x 110k samples: 40 GB).
lagged_ridge_cv, lagged_predict
    Ridge CV with per-target penalties on that delayed design from those
    sums (``ridge.ridge_cv_from_moments``), and its predictions, without
    ever building it.
"""

from jaxalign.timing._fmri import average_per_tr, lanczos_kernel, lanczos_resample, words_to_trs
from jaxalign.timing._meg import (
    onset_impulses,
    sample_delays,
    targets_to_windows,
    window_edges,
    windows_to_targets,
    word_locked_windows,
)
from jaxalign.timing._lagged import LaggedGram, lagged_gram, lagged_nested_cv, lagged_predict, lagged_ridge_cv
from jaxalign.timing._nuisance import fold_residualizer, nuisance_design
from jaxalign.timing._preprocess import detrend, fir_delays, run_segments, trim_mask, trim_runs, zscore_per_run

__all__ = [
    "average_per_tr",
    "detrend",
    "fir_delays",
    "fold_residualizer",
    "LaggedGram",
    "lagged_gram",
    "lagged_nested_cv",
    "lagged_predict",
    "lagged_ridge_cv",
    "lanczos_kernel",
    "lanczos_resample",
    "nuisance_design",
    "onset_impulses",
    "run_segments",
    "sample_delays",
    "trim_mask",
    "trim_runs",
    "targets_to_windows",
    "window_edges",
    "windows_to_targets",
    "word_locked_windows",
    "words_to_trs",
    "zscore_per_run",
]
