"""Word timing tables: a words/onsets TSV, and BIDS ``events.tsv`` files.

Two tab-separated formats people bring their stimulus timing in:

``read_words_tsv``
    A header line with ``word`` and ``onset`` (seconds), optionally
    ``duration`` (s) and ``run`` (integer run / story label)::

        word	onset	duration	run
        Alice	20.06	0.31	0
        was	20.37	0.12	0

``read_bids_events``
    A BIDS events file (``*_events.tsv``): ``onset`` and ``duration`` in
    seconds from the start of the run's first volume, ``trial_type`` and any
    other columns; ``n/a`` marks a missing value. The words are one column
    (``word`` by default); rows without a word (``n/a``, empty) are other
    events and are left out, as are rows whose ``trial_type`` is not the one
    asked for.

Both return a :class:`Stimulus` in presentation order: rows are sorted by
(run, onset), stably, so a file already in order is kept as it is
(``info["reordered"]`` says whether sorting moved anything).
"""

from __future__ import annotations

import numpy as np

from jaxalign.io._formats import existing_file, float_column, int_column, read_tsv
from jaxalign.io._types import Stimulus

__all__ = ["read_bids_events", "read_words_tsv"]

_MISSING = ("", "n/a", "NA", "NaN", "nan")


def _onsets(path, header, rows, name="onset") -> np.ndarray:
    onsets = float_column(path, header, rows, name)
    bad = np.flatnonzero(~np.isfinite(onsets))
    if bad.size:
        raise ValueError(f"{path}: column {name!r} must be a number on every row; data row {int(bad[0]) + 1} "
                         f"is {rows[bad[0]][header.index(name)]!r} ({bad.size} such rows)")
    return onsets


def _offsets(path, header, rows, onsets) -> tuple[np.ndarray | None, int]:
    """onset + duration where every duration is known; (None, n missing) otherwise."""
    if "duration" not in header:
        return None, 0
    dur = float_column(path, header, rows, "duration")
    missing = int(np.count_nonzero(~np.isfinite(dur)))
    if missing:
        return None, missing
    neg = np.flatnonzero(dur < 0)
    if neg.size:
        raise ValueError(f"{path}: column 'duration' must be >= 0; data row {int(neg[0]) + 1} has {dur[neg[0]]}")
    return onsets + dur, 0


def _in_order(words, onsets, offsets, runs, info) -> Stimulus:
    keys = (onsets,) if runs is None else (onsets, runs)
    order = np.lexsort(keys)  # stable: ties keep file order
    info["reordered"] = bool(np.any(order != np.arange(order.size)))
    return Stimulus(
        words=np.asarray(words, dtype=object)[order],
        onsets=onsets[order],
        offsets=None if offsets is None else offsets[order],
        runs=None if runs is None else runs[order],
        info=info,
    )


def read_words_tsv(path) -> Stimulus:
    """Words and their onsets from a TSV with columns ``word``, ``onset`` [, ``duration``] [, ``run``].

    Parameters
    ----------
    path : str or Path
        A tab-separated file with a header line; other columns are ignored.
        Onsets (and durations) in seconds on the recording's clock (for
        several fMRI runs, each run's scan clock, with ``run`` telling them
        apart).

    Returns
    -------
    Stimulus
        ``words``, ``onsets``; ``offsets`` = onset + duration when a
        ``duration`` column is present (and filled on every row); ``runs``
        from ``run``. Rows sorted by (run, onset), stably.

    Raises
    ------
    FileNotFoundError
        A missing file (named).
    ValueError
        No ``word`` or ``onset`` column, an empty word, a non-numeric or
        missing onset, a negative or non-numeric duration, a non-integer run
        (each message names the file).
    """
    p = existing_file(path, "words/onsets TSV")
    header, rows = read_tsv(p, ("word", "onset"))
    wj = header.index("word")
    words = [r[wj] for r in rows]
    empty = [i for i, w in enumerate(words) if not w.strip()]
    if empty:
        raise ValueError(f"{p}: column 'word' is empty on data row {empty[0] + 1} ({len(empty)} such rows)")
    onsets = _onsets(p, header, rows)
    offsets, missing = _offsets(p, header, rows, onsets)
    if missing:
        raise ValueError(f"{p}: column 'duration' is missing on {missing} rows (leave the column out if unknown)")
    runs = int_column(p, header, rows, "run") if "run" in header else None
    return _in_order(words, onsets, offsets, runs, {"source": str(p)})


def read_bids_events(path, word_column: str = "word", *, trial_type=None) -> Stimulus:
    """The words of a BIDS ``events.tsv`` (onset, duration, trial_type, a word column).

    Parameters
    ----------
    path : str or Path
        A BIDS events file: tab-separated, header line, ``onset`` and
        ``duration`` columns (seconds from the first volume of the run),
        ``n/a`` for missing values.
    word_column : str
        The column holding the words (``"word"`` by default; ``"trial_type"``
        when the trial types are the words).
    trial_type : str or sequence of str, optional
        Keep only rows whose ``trial_type`` is one of these (e.g. ``"word"``
        in a file that also lists sentence or fixation events).

    Returns
    -------
    Stimulus
        One entry per kept row with a word: ``words``, ``onsets``;
        ``offsets`` = onset + duration when every kept row has a duration
        (else None, ``info["missing_durations"]`` counts them).
        ``info["dropped"]`` counts the rows left out (other trial types, no
        word). Sorted by onset, stably.

    Raises
    ------
    FileNotFoundError
        A missing file.
    ValueError
        No ``onset`` column or no word column (the columns found are
        listed), a missing or non-numeric onset, ``trial_type`` asked for in
        a file without that column, or no word left (each names the file).
    """
    p = existing_file(path, "BIDS events file")
    header, rows = read_tsv(p, ("onset",))
    if word_column not in header:
        raise ValueError(f"{p}: no word column {word_column!r} (columns: {header}); pass word_column=")
    n_rows = len(rows)
    dropped = {"trial_type": 0, "no_word": 0}
    if trial_type is not None:
        if "trial_type" not in header:
            raise ValueError(f"{p}: trial_type={trial_type!r} asked for but the file has no 'trial_type' column "
                             f"(columns: {header})")
        wanted = {trial_type} if isinstance(trial_type, str) else set(trial_type)
        tj = header.index("trial_type")
        kept = [r for r in rows if r[tj] in wanted]
        dropped["trial_type"] = len(rows) - len(kept)
        rows = kept
    wj = header.index(word_column)
    kept = [r for r in rows if r[wj].strip() not in _MISSING]
    dropped["no_word"] = len(rows) - len(kept)
    rows = kept
    if not rows:
        raise ValueError(f"{p}: no word events left of {n_rows} rows (dropped: {dropped}; word column "
                         f"{word_column!r}, trial_type {trial_type!r})")
    onsets = _onsets(p, header, rows)
    offsets, missing = _offsets(p, header, rows, onsets)
    info = {"source": str(p), "word_column": word_column, "dropped": dropped, "missing_durations": missing}
    return _in_order([r[wj] for r in rows], onsets, offsets, None, info)
