"""Harry Potter chapter 9 (Wehbe et al. 2014) in the Toneva & Wehbe array format.

fMRI folder layout (as distributed with Toneva & Wehbe's code)::

    data_subject_{F,H,I,J,K,L,M,N}.npy   (1211 TRs x ~27,905 voxels)
    time_fmri.npy        (1351,) scan times in s: 0, 2, 4, ...
    runs_fmri.npy        (1351,) run of each scan, 1..4
    time_words_fmri.npy  (5176,) word onset times in s
    words_fmri.npy       (5176,) the words (stimuli_words.npy is the same list)

1211 = 1351 - 4 x (20 + 15): the subject arrays have the first 20 and last
15 TRs of every run removed; :func:`read_harry_potter_fmri` detects this
and trims the scan times and runs to match.

MEG: an array (words, channels, time) with one row per word (306 or 102
channels), plus the word list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# the word -> TR rule and run trimming that timing uses too (one home, in _core:
# io sits above timing in the data flow and does not import it)
from jaxalign._core.runs import last_scan_before, trim_mask
from jaxalign.io._formats import existing_dir, existing_file
from jaxalign.io._types import Recording, Stimulus


__all__ = ["read_harry_potter_fmri", "read_harry_potter_meg", "read_harry_potter_words"]


def _load(path: Path, what: str) -> np.ndarray:
    p = existing_file(path, what)
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:  # object arrays (pickled) are refused
        raise ValueError(f"{p}: cannot load {what} without pickle ({exc}); save it as a plain numpy array") from None


def _words(arr: np.ndarray, path) -> np.ndarray:
    if arr.ndim != 1:
        raise ValueError(f"{path}: the words must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "US":
        raise ValueError(f"{path}: the words must be strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8")
    return arr.astype(str).astype(object)


def read_harry_potter_words(path) -> Stimulus:
    """The 5,176 words of chapter 9 (``stimuli_words.npy`` / ``words_fmri.npy``), no timing."""
    p = Path(os.fspath(path))
    return Stimulus(words=_words(_load(p, "Harry Potter word file"), p), info={"source": str(p)})


def read_harry_potter_fmri(root, subject, *, trim=(20, 15)) -> tuple[Stimulus, Recording]:
    """One subject of the Harry Potter fMRI data in the Toneva & Wehbe format.

    Parameters
    ----------
    root : str or Path
        Folder holding the arrays listed in the module docstring. The word
        list is ``words_fmri.npy``, else ``stimuli_words.npy``.
    subject : str
        Subject letter ("F", "H", ...), or a file name / path of the data array.
    trim : (int, int)
        TRs removed from the start and end of every run in the subject array
        (Toneva & Wehbe: 20 and 15). Used only when the array has fewer rows
        than ``time_fmri.npy``; then it must have exactly
        ``len(time_fmri) - n_runs * (start + end)`` rows.

    Returns
    -------
    stimulus : Stimulus
        Words with ``onsets`` = ``time_words_fmri``; ``runs`` = the run of the
        last scan strictly before each word (the TR the word is assigned to).
    recording : Recording
        ``kind="fmri"``, data (n_TRs, n_voxels), ``times`` and ``runs`` of the
        kept scans, ``tr`` = the median scan interval. For a trimmed array
        ``info["full_times"]`` / ``info["full_runs"]`` hold every scan of the
        session and ``info["trim"]`` the trim: build word features and FIR
        delays on that grid, then keep ``trim_mask(full_runs, *trim)``
        (``jaxalign.studies`` does), so that words heard during a trimmed
        scan are neither pooled into a kept one nor lost from the delays.

    Raises
    ------
    FileNotFoundError
        A missing array (the message names the path).
    ValueError
        Arrays of inconsistent lengths, or a subject array whose row count is
        neither the full nor the trimmed number of scans.
    """
    folder = existing_dir(root, "Harry Potter fMRI folder")
    sub = Path(str(subject))
    if sub.suffix == ".npy":
        data_path = sub if sub.is_absolute() or sub.exists() else folder / sub
    else:
        data_path = folder / f"data_subject_{subject}.npy"
    data = _load(data_path, "Harry Potter subject array")
    if data.ndim != 2:
        raise ValueError(f"{data_path}: expected a 2-D (TRs, voxels) array, got shape {data.shape}")
    time_fmri = _load(folder / "time_fmri.npy", "scan times (time_fmri.npy)").astype(np.float64).ravel()
    runs_fmri = _load(folder / "runs_fmri.npy", "scan runs (runs_fmri.npy)").ravel()
    word_times = _load(folder / "time_words_fmri.npy", "word times (time_words_fmri.npy)").astype(np.float64).ravel()
    words_path = folder / "words_fmri.npy"
    if not words_path.exists() and (folder / "stimuli_words.npy").exists():
        words_path = folder / "stimuli_words.npy"
    words = _words(_load(words_path, "word list (words_fmri.npy)"), words_path)

    if time_fmri.shape != runs_fmri.shape:
        raise ValueError(
            f"{folder}: time_fmri.npy has {time_fmri.size} scans but runs_fmri.npy has {runs_fmri.size}"
        )
    if words.shape[0] != word_times.shape[0]:
        raise ValueError(
            f"{folder}: {words.shape[0]} words ({words_path.name}) but {word_times.shape[0]} word times "
            "(time_words_fmri.npy)"
        )
    n_full = time_fmri.shape[0]
    if data.shape[0] == n_full:
        keep = np.ones(n_full, dtype=bool)
        trimmed = False
    else:
        start, end = trim
        n_runs = np.unique(runs_fmri).size
        expected = n_full - n_runs * (start + end)
        if data.shape[0] != expected:
            raise ValueError(
                f"{data_path}: {data.shape[0]} rows, but time_fmri.npy has {n_full} scans in {n_runs} runs: "
                f"expected {n_full} (untrimmed) or {expected} (trim={tuple(trim)} per run)"
            )
        keep = trim_mask(runs_fmri, start, end)
        trimmed = True

    tr_index = last_scan_before(word_times, time_fmri)
    word_runs = runs_fmri[tr_index] if np.all(tr_index >= 0) else None
    diffs = np.diff(time_fmri)
    stimulus = Stimulus(words=words, onsets=word_times, runs=word_runs, info={"source": str(folder)})
    recording = Recording(
        data=data,
        kind="fmri",
        times=time_fmri[keep],
        runs=runs_fmri[keep],
        target_names=None,
        tr=float(np.median(diffs)) if diffs.size else None,
        info={"source": str(data_path), "subject": str(subject), "trimmed": trimmed, "trim": tuple(trim) if trimmed else None,
              # every scan of the session: features and delays are built on this grid, then trimmed
              # (the words heard during the trimmed scans are in the delays of the kept ones)
              "full_times": time_fmri if trimmed else None, "full_runs": runs_fmri if trimmed else None},
    )
    return stimulus, recording


def read_harry_potter_meg(data, words=None, *, sfreq=None, epoch_times=None, tmin: float = 0.0, channel_names=None) -> tuple[Stimulus, Recording]:
    """Word-locked Harry Potter MEG: an array (words, channels, time) and its words.

    Parameters
    ----------
    data : str, Path or ndarray
        A ``.npy`` file or an array of shape (n_words, n_channels, n_times).
    words : str, Path or sequence of str, optional
        A ``.npy`` word list or the words themselves, one per row of ``data``.
        Without it the words are ``"0", "1", ...``.
    sfreq : float, optional
        Sample rate of the time axis in Hz (40 Hz for 25 ms windows). With
        ``tmin`` it gives ``epoch_times = tmin + arange(n_times) / sfreq``.
    epoch_times : array_like, optional
        Explicit time of each sample relative to word onset (s). Default:
        from ``sfreq``, else the sample indices.
    tmin : float
        Time of the first sample relative to word onset (s).
    channel_names : sequence of str, optional

    Returns
    -------
    stimulus : Stimulus
        The words (no onsets).
    recording : Recording
        ``kind="meg"``, 3-D data (words, channels, time) with ``epoch_times``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; data not 3-D; words and rows of different lengths.
    """
    if isinstance(data, (str, os.PathLike)):
        source = str(data)
        arr = _load(Path(os.fspath(data)), "Harry Potter MEG array")
    else:
        source = None
        arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"MEG data must be 3-D (words, channels, time), got shape {arr.shape}")
    if words is None:
        word_list = np.array([str(i) for i in range(arr.shape[0])], dtype=object)
    elif isinstance(words, (str, os.PathLike)):
        wp = Path(os.fspath(words))
        word_list = _words(_load(wp, "MEG word list"), wp)
    else:
        word_list = np.asarray(list(words), dtype=object)
    if word_list.shape[0] != arr.shape[0]:
        raise ValueError(f"{word_list.shape[0]} words but the MEG array has {arr.shape[0]} rows (words, channels, time)")
    as_indices = epoch_times is None and sfreq is None
    if epoch_times is None:
        if sfreq is not None:
            epoch_times = tmin + np.arange(arr.shape[2]) / float(sfreq)
        else:
            epoch_times = np.arange(arr.shape[2], dtype=np.float64)
    stimulus = Stimulus(words=word_list, info={"source": source})
    recording = Recording(
        data=arr,
        kind="meg",
        target_names=channel_names,
        sfreq=sfreq,
        epoch_times=epoch_times,
        info={"source": source, "epoch_times_are_indices": as_indices},
    )
    return stimulus, recording
