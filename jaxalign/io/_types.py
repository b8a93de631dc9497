"""The two containers every reader returns: :class:`Stimulus` and :class:`Recording`.

A :class:`Stimulus` is what was presented (words and, where known, when);
a :class:`Recording` is what was measured (brain or behaviour, samples x
targets). Both validate themselves on construction, so a reader that returns
one has returned consistent arrays. Plain numpy arrays inside; nothing here
knows about language models.

:class:`MultipleChoice` holds a multiple-choice task (PIQA, Social IQa) with
0-based labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["KINDS", "MultipleChoice", "Recording", "Stimulus"]

KINDS = ("fmri", "meg", "behaviour")


def _vector(values, name: str, n: int | None, dtype, *, what: str = "words") -> np.ndarray | None:
    """Turn ``values`` into a 1-D array of length ``n`` (or return None)."""
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}.")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} entries but there are {n} {what}: "
            f"every per-{what.rstrip('s')} array must have one entry per {what.rstrip('s')}."
        )
    if dtype is float:
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise ValueError(f"{name} must be finite; entry {bad} is {arr[bad]}.")
    elif dtype is int:
        if arr.dtype.kind not in "biu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}.")
        arr = arr.astype(np.int64)
    return arr


def _words(words) -> np.ndarray:
    if isinstance(words, str):
        raise ValueError("words must be a sequence of strings, not one string (split it first).")
    arr = np.asarray(words, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"words must be 1-D, got shape {arr.shape}.")
    out = np.empty(arr.shape[0], dtype=object)
    for i, w in enumerate(arr):
        if not isinstance(w, (str, np.str_)):
            raise ValueError(f"words must be strings; entry {i} is {w!r} ({type(w).__name__}).")
        out[i] = str(w)
    return out


@dataclass(eq=False)
class Stimulus:
    """Words as presented, with optional timing, sentence and run labels.

    Parameters
    ----------
    words : sequence of str, length n
        The words in presentation order (stored as an object array of ``str``).
    onsets, offsets : array_like of float, length n, optional
        Word onset / offset times in seconds on the recording's clock (e.g.
        the scanner clock for fMRI). ``offsets >= onsets`` is checked.
    sentence_ids : array_like of int, length n, optional
        Sentence index of each word (non-decreasing within a run is not
        required, but :attr:`sentence_starts` assumes sentences are contiguous).
    runs : array_like of int, length n, optional
        Run, story or passage id of each word.
    info : dict
        Free-form metadata (source path, tier name, per-word extras such as
        Natural Stories zones).

    Raises
    ------
    ValueError
        If any per-word array has a different length from ``words``, is not
        1-D, holds non-finite times, or an offset precedes its onset.
    """

    words: np.ndarray
    onsets: np.ndarray | None = None
    offsets: np.ndarray | None = None
    sentence_ids: np.ndarray | None = None
    runs: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.words = _words(self.words)
        n = self.words.shape[0]
        self.onsets = _vector(self.onsets, "onsets", n, float)
        self.offsets = _vector(self.offsets, "offsets", n, float)
        self.sentence_ids = _vector(self.sentence_ids, "sentence_ids", n, int)
        self.runs = _vector(self.runs, "runs", n, int)
        if self.offsets is not None and self.onsets is not None:
            bad = np.flatnonzero(self.offsets < self.onsets)
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"offsets must not precede onsets: word {i} ({self.words[i]!r}) has onset "
                    f"{self.onsets[i]} s and offset {self.offsets[i]} s ({bad.size} such words)."
                )
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {type(self.info).__name__}.")

    def __len__(self) -> int:
        return int(self.words.shape[0])

    @property
    def n_words(self) -> int:
        return len(self)

    @property
    def sentence_starts(self) -> np.ndarray | None:
        """Boolean mask of the words that begin a sentence (None without ``sentence_ids``).

        A word starts a sentence when it is the first word, or its sentence id
        (or run) differs from the previous word's.
        """
        if self.sentence_ids is None:
            return None
        starts = np.ones(len(self), dtype=bool)
        starts[1:] = self.sentence_ids[1:] != self.sentence_ids[:-1]
        if self.runs is not None:
            starts[1:] |= self.runs[1:] != self.runs[:-1]
        return starts

    def select(self, index) -> Stimulus:
        """A new Stimulus with the words at ``index`` (bool mask or integer indices).

        Per-word entries of ``info`` (1-D arrays of length n) are selected too.
        """
        idx = np.asarray(index)
        if idx.dtype == bool and idx.shape != (len(self),):
            raise ValueError(f"a boolean index must have shape ({len(self)},), got {idx.shape}.")

        def take(a):
            return None if a is None else a[idx]

        info = {
            k: (v[idx] if isinstance(v, np.ndarray) and v.ndim == 1 and v.shape[0] == len(self) else v)
            for k, v in self.info.items()
        }
        return Stimulus(
            words=self.words[idx],
            onsets=take(self.onsets),
            offsets=take(self.offsets),
            sentence_ids=take(self.sentence_ids),
            runs=take(self.runs),
            info=info,
        )

    def __repr__(self) -> str:
        parts = [f"n_words={len(self)}"]
        head = " ".join(self.words[:6])
        parts.append(f"words={head!r}{'...' if len(self) > 6 else ''}")
        for name in ("onsets", "offsets", "sentence_ids", "runs"):
            if getattr(self, name) is not None:
                parts.append(name)
        return f"Stimulus({', '.join(parts)})"


@dataclass(eq=False)
class Recording:
    """A recording: brain data (fMRI, MEG) or behaviour, samples x targets.

    Parameters
    ----------
    data : array_like of float, shape (n_samples, n_targets) or (n_samples, n_targets, n_times)
        Samples are TRs (fMRI), MEG samples, or words (behaviour, word-locked
        MEG). Targets are voxels, ROIs, channels or behavioural measures. The
        3-D form is word-locked epochs (words, channels, time) and needs
        ``epoch_times``. Integer input is converted to float64; float32 stays
        float32.
    kind : {"fmri", "meg", "behaviour"}
    times : array_like of float, shape (n_samples,), optional
        Time of each sample in seconds (scan times, MEG sample times, or word
        onsets for epochs). Required for ``kind="fmri"``.
    runs : array_like of int, shape (n_samples,), optional
        Run / story / session id of each sample.
    target_names : sequence of str, optional
        One name per target (default ``"0", "1", ...``).
    tr : float, optional
        Repetition time in seconds (fMRI).
    sfreq : float, optional
        Sample rate in Hz (continuous MEG; for epochs, the rate of the time axis).
    epoch_times : array_like of float, shape (n_times,), optional
        Time of each epoch sample relative to word onset (3-D data only).
    mask : ndarray of bool, 3-D, optional
        Brain / ROI mask whose ``True`` voxels (C order) are the targets.
        ``mask.sum()`` must equal ``n_targets``.
    affine : ndarray, shape (4, 4), optional
        Voxel-to-world affine of the image the mask lives in.
    channel_info : Any, optional
        Channel metadata (e.g. an ``mne.Info``).
    info : dict
        Free-form metadata (source path, subject, quality flags).
    """

    data: np.ndarray
    kind: str
    times: np.ndarray | None = None
    runs: np.ndarray | None = None
    target_names: tuple[str, ...] | None = None
    tr: float | None = None
    sfreq: float | None = None
    epoch_times: np.ndarray | None = None
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    channel_info: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        data = np.asarray(self.data)
        if data.dtype.kind not in "biuf":
            raise ValueError(f"data must be a numeric array, got dtype {data.dtype}.")
        if data.dtype.kind != "f":
            data = data.astype(np.float64)
        if data.ndim not in (2, 3):
            raise ValueError(
                "data must be 2-D (n_samples, n_targets) or 3-D (n_samples, n_targets, "
                f"n_times) word-locked epochs, got shape {data.shape}."
            )
        self.data = data
        n, t = data.shape[0], data.shape[1]
        what = "samples"
        self.times = _vector(self.times, "times", n, float, what=what)
        self.runs = _vector(self.runs, "runs", n, int, what=what)
        if self.kind == "fmri" and self.times is None:
            raise ValueError("an fMRI recording needs times (the scan time of each row, in seconds).")
        if self.target_names is None:
            self.target_names = tuple(str(i) for i in range(t))
        else:
            if isinstance(self.target_names, str):
                raise ValueError("target_names must be a sequence of names, not one string.")
            self.target_names = tuple(str(x) for x in self.target_names)
            if len(self.target_names) != t:
                raise ValueError(
                    f"target_names has {len(self.target_names)} names but data has {t} targets "
                    f"(data shape {data.shape})."
                )
        for name in ("tr", "sfreq"):
            v = getattr(self, name)
            if v is not None:
                v = float(v)
                if not np.isfinite(v) or v <= 0:
                    raise ValueError(f"{name} must be a positive number, got {v}.")
                setattr(self, name, v)
        if data.ndim == 3:
            if self.epoch_times is None:
                raise ValueError(
                    "3-D data (words, channels, time) needs epoch_times: the time of each "
                    "epoch sample relative to word onset, in seconds."
                )
            self.epoch_times = _vector(self.epoch_times, "epoch_times", data.shape[2], float, what="time points")
        elif self.epoch_times is not None:
            raise ValueError("epoch_times is only meaningful for 3-D (words, channels, time) data.")
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.dtype != bool:
                if mask.dtype.kind in "biuf" and np.all((mask == 0) | (mask == 1)):
                    mask = mask.astype(bool)
                else:
                    raise ValueError(f"mask must be boolean (or 0/1), got dtype {mask.dtype}.")
            if mask.ndim != 3:
                raise ValueError(f"mask must be a 3-D volume, got shape {mask.shape}.")
            if int(mask.sum()) != t:
                raise ValueError(f"mask selects {int(mask.sum())} voxels but data has {t} targets.")
            self.mask = mask
        if self.affine is not None:
            affine = np.asarray(self.affine, dtype=np.float64)
            if affine.shape != (4, 4):
                raise ValueError(f"affine must have shape (4, 4), got {affine.shape}.")
            self.affine = affine
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {type(self.info).__name__}.")

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.data.shape[1])

    def __len__(self) -> int:
        return self.n_samples

    def target(self, name: str) -> np.ndarray:
        """The data of the target called ``name`` (a column, or (samples, time) for epochs)."""
        try:
            j = self.target_names.index(name)
        except ValueError:
            raise KeyError(f"no target named {name!r}; targets are {list(self.target_names)}.") from None
        return self.data[:, j]

    def select(self, index) -> Recording:
        """A new Recording with the samples at ``index`` (bool mask or integer indices)."""
        idx = np.asarray(index)
        if idx.dtype == bool and idx.shape != (self.n_samples,):
            raise ValueError(f"a boolean index must have shape ({self.n_samples},), got {idx.shape}.")
        return replace(
            self,
            data=self.data[idx],
            times=None if self.times is None else self.times[idx],
            runs=None if self.runs is None else self.runs[idx],
            info=dict(self.info),
        )

    def __repr__(self) -> str:
        parts = [f"kind={self.kind!r}", f"data={self.data.shape} {self.data.dtype}"]
        names = list(self.target_names[:6])
        parts.append(f"targets={names}{'...' if self.n_targets > 6 else ''}")
        for name in ("tr", "sfreq"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name):g}")
        if self.runs is not None:
            parts.append(f"runs={np.unique(self.runs).tolist()}")
        if self.mask is not None:
            parts.append(f"mask={self.mask.shape}")
        return f"Recording({', '.join(parts)})"


@dataclass(eq=False)
class MultipleChoice:
    """A multiple-choice task: a prompt, its options, and the 0-based correct option.

    Parameters
    ----------
    prompts : sequence of str, length n
        The text each option continues (PIQA: the goal; Social IQa: context
        and question joined by a space).
    choices : sequence of sequences of str, shape (n, n_choices)
        The options of every item, all items with the same number of options.
    labels : array_like of int, shape (n,), optional
        Index of the correct option, **0-based** (``choices[i][labels[i]]`` is
        the right answer). None when the split has no labels.
    ids : sequence of str, optional
        Item ids where the source has them.
    records : list of dict
        The source records as read (for other prompt formats).
    name : str
        Data set name ("piqa", "siqa", ...).
    """

    prompts: tuple[str, ...]
    choices: tuple[tuple[str, ...], ...]
    labels: np.ndarray | None = None
    ids: tuple[str, ...] | None = None
    records: list[dict] = field(default_factory=list)
    name: str = ""

    def __post_init__(self):
        self.prompts = tuple(str(p) for p in self.prompts)
        n = len(self.prompts)
        self.choices = tuple(tuple(str(c) for c in row) for row in self.choices)
        if len(self.choices) != n:
            raise ValueError(f"{len(self.choices)} rows of choices for {n} prompts.")
        widths = {len(row) for row in self.choices}
        if len(widths) > 1:
            raise ValueError(f"every item must have the same number of choices, got {sorted(widths)}.")
        k = widths.pop() if widths else 0
        if self.labels is not None:
            self.labels = _vector(self.labels, "labels", n, int, what="items")
            bad = np.flatnonzero((self.labels < 0) | (self.labels >= k))
            if bad.size:
                raise ValueError(
                    f"labels must be 0-based option indices in [0, {k - 1}]; item {int(bad[0])} "
                    f"has label {int(self.labels[bad[0]])}."
                )
        if self.ids is not None:
            self.ids = tuple(str(i) for i in self.ids)
            if len(self.ids) != n:
                raise ValueError(f"{len(self.ids)} ids for {n} items.")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_choices(self) -> int:
        return len(self.choices[0]) if self.choices else 0

    def subset(self, items) -> MultipleChoice:
        """The items at the indices ``items`` (in that order), with their labels, ids and records.

        >>> mc = MultipleChoice(prompts=["a", "b", "c"], choices=[("x", "y")] * 3, labels=[0, 1, 1])
        >>> mc.subset([2, 0]).labels.tolist()
        [1, 0]
        """
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if items.size and (items.min() < -len(self) or items.max() >= len(self)):
            raise IndexError(f"item indices must lie in [0, {len(self)}), got {items.min()}..{items.max()}")
        return MultipleChoice(
            prompts=[self.prompts[i] for i in items],
            choices=[self.choices[i] for i in items],
            labels=None if self.labels is None else self.labels[items],
            ids=None if self.ids is None else [self.ids[i] for i in items],
            records=[self.records[i] for i in items] if self.records else [],
            name=self.name,
        )

    def __repr__(self) -> str:
        return (
            f"MultipleChoice(name={self.name!r}, n_items={len(self)}, n_choices={self.n_choices}, "
            f"labelled={self.labels is not None})"
        )
