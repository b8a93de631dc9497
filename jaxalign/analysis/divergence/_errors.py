r"""Per-word prediction error, sentences, their ranking and the divergent / convergent sets.

The MEG divergence study (METHODS.md section 6; Zhou et al. 2024) asks on
which words an encoding model fails. With the recording
:math:`Y_{i,k,c}` and the held-out prediction :math:`\hat Y_{i,k,c}` of word
``i``, window ``k`` (25 ms each, word-locked) and channel ``c``, and
:math:`S_k` the channels significantly predicted in window ``k`` (a
BOOLEAN mask: the public code indexes with a 0/1 int array, which selects
channels 0 and 1, not the significant ones), the error of word ``i`` is

.. math::

    e_i = \frac{1}{|K|} \sum_{k \in K} \frac{1}{|S_k|} \sum_{c \in S_k}
          \bigl(Y_{i,k,c} - \hat Y_{i,k,c}\bigr)^2

over the window range :math:`K` (the study: windows 12..16, 300-425 ms
after word onset). Windows of ``K`` with no significant channel carry no
information and are left out of the mean (with a warning). Sums are taken
in float64, so recordings in tesla (~1e-12, squared errors ~1e-24) keep
their precision.

Sentences end at a word ending in ``.``, ``!`` or ``?`` (closing quotes and
brackets after it allowed); a sentence's score is the mean error of its
words, and only sentences of more than 3 words are ranked. The ``n`` worst
predicted are "divergent", the ``n`` best "convergent" (the study: 100
each), and each group is split at random into a research part (80%: shown
to the hypothesis proposer) and a validation part (20%: where the validity
of the hypotheses is measured), divergent stays divergent in both parts
(the public code swaps the groups in its validation split).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jaxalign._core.seeds import rng as _rng
from jaxalign._core.validation import check_int
from jaxalign.stats import pearson_pvalue

__all__ = [
    "STUDY_WINDOWS",
    "DivergenceSets",
    "Groups",
    "divergence_sets",
    "segment_sentences",
    "sentence_scores",
    "significant_channels",
    "word_errors",
]

#: The study's window range: windows 12..16 of 25 ms (300-425 ms after word onset).
STUDY_WINDOWS = range(12, 17)

_CLOSERS = "\"'”’)]}»"


def _float3(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3-D (words, windows, channels), got shape {arr.shape}; "
                         "jaxalign.timing.targets_to_windows(pred, n_windows) turns a (words, windows * channels) "
                         "prediction into this layout")
    return arr


def _window_mask(windows, n_windows: int) -> np.ndarray:
    w = np.asarray(list(windows) if isinstance(windows, range) else windows)
    if w.dtype == bool:
        if w.shape != (n_windows,):
            raise ValueError(f"windows as a boolean mask must have shape ({n_windows},), got {w.shape}")
        mask = w.copy()
    else:
        if w.ndim != 1 or w.size == 0 or w.dtype.kind not in "iu":
            raise ValueError(f"windows must be a non-empty sequence of window indices (e.g. range(12, 17)) "
                             f"or a boolean mask over the {n_windows} windows, got {windows!r}")
        if w.min() < 0 or w.max() >= n_windows:
            raise ValueError(f"windows {w.tolist()} are outside the recording's {n_windows} windows "
                             f"(0..{n_windows - 1})")
        mask = np.zeros(n_windows, bool)
        mask[w] = True
    if not mask.any():
        raise ValueError("windows selects no window")
    return mask


def significant_channels(r, n_words: int, alpha: float = 1e-3) -> np.ndarray:
    """Boolean mask of the targets whose held-out Pearson r is significantly positive.

    One-sided p of ``r`` over ``n_words`` words (``jaxalign.stats.pearson_pvalue``,
    alternative "greater"), significant when ``p < alpha`` (the study: 0.001).
    ``r`` of any shape, e.g. (windows, channels); NaN r is never significant.
    """
    r = np.asarray(r, dtype=np.float64)
    n_words = check_int(n_words, "n_words", 3)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    p = np.asarray(pearson_pvalue(np.nan_to_num(r, nan=0.0), n_words, alternative="greater"), dtype=np.float64)
    return (p < alpha) & np.isfinite(r)


def word_errors(recording, predictions, significant, windows=STUDY_WINDOWS) -> np.ndarray:
    """Per-word squared error over significant channels, averaged over windows (module doc).

    Parameters
    ----------
    recording, predictions : array_like, shape (n_words, n_windows, n_channels)
        The word-locked recording and the held-out predictions in the same
        layout (``jaxalign.timing.targets_to_windows`` of a ridge prediction).
    significant : array_like of bool, shape (n_windows, n_channels) or (n_channels,)
        Which channels count in each window (one row for every window). Must be
        boolean: integer arrays are refused.
    windows : sequence of int or boolean mask over windows
        The window range averaged over; default ``STUDY_WINDOWS`` (12..16).

    Returns
    -------
    ndarray of float64, shape (n_words,)
        NaN for a word with a non-finite value among those averaged.
    """
    y = _float3(recording, "recording")
    yhat = _float3(predictions, "predictions")
    if y.shape != yhat.shape:
        raise ValueError(f"recording {y.shape} and predictions {yhat.shape} must have the same shape")
    n_words, n_windows, n_channels = y.shape
    sig = np.asarray(significant)
    if sig.dtype != bool:
        raise TypeError(f"significant must be a boolean mask (dtype bool), got dtype {sig.dtype}: an integer "
                        "array would index channels by number (0/1 selects channels 0 and 1, the public code's bug)")
    if sig.shape == (n_channels,):
        sig = np.broadcast_to(sig, (n_windows, n_channels))
    if sig.shape != (n_windows, n_channels):
        raise ValueError(f"significant must have shape ({n_windows}, {n_channels}) or ({n_channels},), got {sig.shape}")
    use = _window_mask(windows, n_windows)
    counts = sig.sum(axis=1)
    empty = np.flatnonzero(use & (counts == 0))
    if empty.size:
        warnings.warn(f"windows {empty.tolist()} have no significant channel and are left out of the mean",
                      RuntimeWarning, stacklevel=2)
    use &= counts > 0
    if not use.any():
        raise ValueError("no window of the range has a significant channel: no word error can be computed")
    per_window = []
    for k in np.flatnonzero(use):
        d = y[:, k, sig[k]].astype(np.float64) - yhat[:, k, sig[k]].astype(np.float64)
        per_window.append(np.mean(d * d, axis=1))
    return np.mean(per_window, axis=0)


def segment_sentences(words, terminators: str = ".!?", abbreviations=()) -> np.ndarray:
    """Sentence index of every word, (n_words,) int64 from 0, splitting after sentence-final words.

    A word ends its sentence when, after removing closing quotes and
    brackets, it ends with one of ``terminators`` (the study: ``. ! ?``) and
    is not one of ``abbreviations`` (the study splits at every period;
    e.g. ``("Mr.", "Mrs.")`` keeps "Mr. Dursley" together). Words after the
    last terminator form a last sentence.

    >>> segment_sentences(["Mr.", "Potter", 'said', '"Run!"', "He", "ran."]).tolist()
    [0, 1, 1, 1, 2, 2]
    >>> segment_sentences(["Mr.", "Potter", 'said', '"Run!"', "He", "ran."], abbreviations=["Mr."]).tolist()
    [0, 0, 0, 0, 1, 1]
    """
    if isinstance(words, str):
        raise TypeError("words must be a sequence of words, got one str")
    words = [str(w) for w in words]
    if not words:
        raise ValueError("words is empty")
    if not terminators:
        raise ValueError("terminators must name at least one character")
    abbreviations = {str(a) for a in abbreviations}
    ids = np.zeros(len(words), np.int64)
    s = 0
    for i, w in enumerate(words):
        ids[i] = s
        core = w.rstrip(_CLOSERS)
        if core and core[-1] in terminators and core not in abbreviations:
            s += 1
    return ids


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and stops of the runs of equal values in ``ids``."""
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [ids.size]])
    return starts, stops


def sentence_scores(errors, words=None, *, sentence_ids=None, min_words: int = 4) -> pd.DataFrame:
    """One row per sentence: its words, mean word error and rank (1 = worst predicted).

    Parameters
    ----------
    errors : array_like, shape (n_words,)
        Per-word errors (``word_errors``).
    words : sequence of str, optional
        The words as presented; sentences are found with
        ``segment_sentences`` unless ``sentence_ids`` is given.
    sentence_ids : array_like, shape (n_words,), optional
        A sentence label per word; each sentence's words must be contiguous.
    min_words : int
        Sentences with fewer words are not ranked (the study: more than 3 words).

    Returns
    -------
    DataFrame with columns ``sentence`` (label), ``start``, ``stop`` (word
    range), ``n_words``, ``n_scored`` (words with a finite error), ``text``,
    ``score`` (mean finite error; NaN without one), ``eligible``, ``rank``
    (among eligible sentences, 1 = highest score; ``<NA>`` otherwise).
    """
    e = np.asarray(errors)
    if e.dtype == object or e.dtype.kind not in "biuf" or e.ndim != 1:
        raise ValueError(f"errors must be a 1-D numeric array, got shape {e.shape} and dtype {e.dtype}")
    e = e.astype(np.float64)
    min_words = check_int(min_words, "min_words", 1)
    if words is not None:
        if isinstance(words, str):
            raise TypeError("words must be a sequence of words, got one str")
        words = [str(w) for w in words]
        if len(words) != e.size:
            raise ValueError(f"words has {len(words)} entries but errors has {e.size}")
    if sentence_ids is None:
        if words is None:
            raise ValueError("give words (sentences are found at . ! ?) or sentence_ids")
        ids = segment_sentences(words)
    else:
        ids = np.asarray(sentence_ids)
        if ids.shape != e.shape:
            raise ValueError(f"sentence_ids must have shape {e.shape}, got {ids.shape}")
    starts, stops = _runs(ids)
    labels = ids[starts]
    if len(pd.unique(labels)) != labels.size:
        raise ValueError("sentence_ids are not contiguous: a sentence's words must be consecutive "
                         f"(label {pd.Series(labels)[pd.Series(labels).duplicated()].iloc[0]!r} appears in two places)")
    rows = []
    for label, a, b in zip(labels, starts, stops):
        seg = e[a:b]
        finite = np.isfinite(seg)
        rows.append({
            "sentence": label.item() if hasattr(label, "item") else label,
            "start": int(a), "stop": int(b), "n_words": int(b - a), "n_scored": int(finite.sum()),
            "text": " ".join(words[a:b]) if words is not None else "",
            "score": float(seg[finite].mean()) if finite.any() else np.nan,
        })
    table = pd.DataFrame(rows)
    table["eligible"] = (table["n_words"] >= min_words) & np.isfinite(table["score"])
    rank = table.loc[table["eligible"], "score"].rank(ascending=False, method="first")
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table.loc[rank.index, "rank"] = rank.astype("int64").to_numpy()
    return table


@dataclass(frozen=True)
class Groups:
    """Sentence texts of one split: ``divergent`` and ``convergent`` (lists of str)."""

    divergent: list
    convergent: list


@dataclass(frozen=True)
class DivergenceSets:
    """Result of :func:`divergence_sets`.

    Attributes
    ----------
    table : DataFrame
        ``sentence_scores``' table plus ``group`` ("divergent", "convergent"
        or "") and ``split`` ("research", "validation" or "").
    research, validation : Groups
        The texts of each group in each split (research: for the proposer;
        validation: for the validity of hypotheses), in rank order.
    n, validation_fraction, seed
        The settings.
    """

    table: pd.DataFrame
    research: Groups
    validation: Groups
    n: int
    validation_fraction: float
    seed: int

    def texts(self, group: str, split: str) -> list:
        """Texts of ``group`` ("divergent" | "convergent") in ``split`` ("research" | "validation" | "all")."""
        if group not in ("divergent", "convergent"):
            raise ValueError(f"group must be 'divergent' or 'convergent', got {group!r}")
        if split not in ("research", "validation", "all"):
            raise ValueError(f"split must be 'research', 'validation' or 'all', got {split!r}")
        t = self.table
        keep = (t["group"] == group) & ((t["split"] == split) if split != "all" else True)
        return t.loc[keep].sort_values("rank")["text"].tolist()


def divergence_sets(table: pd.DataFrame, n: int = 100, validation: float = 0.2, seed: int = 0) -> DivergenceSets:
    """The ``n`` worst-predicted sentences (divergent), the ``n`` best (convergent), each split research / validation.

    ``table`` is :func:`sentence_scores`' output (only eligible sentences
    take part). Each group is shuffled with a generator seeded by ``seed``
    and its first ``round(n * validation)`` sentences (at least one, at most
    ``n - 1``) go to validation; the study: n = 100, 80/20. Groups keep their
    names in both splits.
    """
    need = {"score", "eligible", "rank", "text"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise TypeError(f"table must be sentence_scores' DataFrame (columns {sorted(need)})")
    n = check_int(n, "n", 2)
    if not 0 < validation < 1:
        raise ValueError(f"validation must be a fraction in (0, 1), got {validation!r}")
    seed = check_int(seed, "seed", 0)
    eligible = int(table["eligible"].sum())
    if eligible < 2 * n:
        raise ValueError(f"n={n} divergent and n={n} convergent sentences need {2 * n} eligible sentences, "
                         f"the table has {eligible}; lower n")
    n_val = int(min(n - 1, max(1, round(n * validation))))
    out = table.copy()
    out["group"] = ""
    out["split"] = ""
    ranks = out["rank"].astype("float64")
    for group, chosen in (("divergent", ranks <= n), ("convergent", ranks > eligible - n)):
        idx = out.index[chosen.fillna(False).to_numpy(bool)]
        order = _rng(seed, "divergence-split", group).permutation(len(idx))
        out.loc[idx, "group"] = group
        out.loc[idx, "split"] = "research"
        out.loc[idx[order[:n_val]], "split"] = "validation"
    sets = DivergenceSets(out, Groups([], []), Groups([], []), n, float(validation), seed)
    research = Groups(sets.texts("divergent", "research"), sets.texts("convergent", "research"))
    valid = Groups(sets.texts("divergent", "validation"), sets.texts("convergent", "validation"))
    return DivergenceSets(out, research, valid, n, float(validation), seed)
