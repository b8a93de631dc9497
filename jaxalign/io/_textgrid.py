"""Praat TextGrid word tiers (long "ooTextFile" and short formats)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from jaxalign.io._formats import existing_dir, existing_file, find_one, read_text
from jaxalign.io._types import Stimulus

__all__ = ["PAUSE_LABELS", "read_alice_stimulus", "read_textgrid", "read_textgrid_tiers"]

#: Interval labels treated as pauses (dropped by default): the Penn / FAVE
#: forced aligner's "sp", common silence labels, and unlabelled intervals.
PAUSE_LABELS = ("sp", "sil", "<sil>", "SIL", "{SL}", "")

# The long format is the short format's values with "name = " labels and
# "[n]:" headers between them. Both reduce to the same value stream once the
# labels are skipped: quoted strings ("" escapes a quote), numbers and the
# <exists>/<absent> flag. Bracketed indices ([1]) are skipped; so are comments
# after "!" in the short format (outside strings).
_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"'  # 1: quoted string
    r"|(<exists>|<absent>)"  # 2: flag
    r"|\[\s*\d*\s*\]"  # bracketed index: skip
    r"|![^\n]*"  # comment: skip
    r"|(?<![\w.])([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])"  # 3: number
)


def _values(text: str) -> list:
    out = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            out.append(m.group(1).replace('""', '"'))
        elif m.group(2) is not None:
            out.append(m.group(2))
        elif m.group(3) is not None:
            out.append(float(m.group(3)))
    return out


class _Stream:
    def __init__(self, values, path):
        self.values, self.i, self.path = values, 0, path

    def take(self, kind, what):
        if self.i >= len(self.values):
            raise ValueError(f"{self.path}: TextGrid ends early (expected {what})")
        v = self.values[self.i]
        self.i += 1
        if kind is float and not isinstance(v, float):
            raise ValueError(f"{self.path}: malformed TextGrid: expected a number for {what}, found {v!r}")
        if kind is str and not isinstance(v, str):
            raise ValueError(f"{self.path}: malformed TextGrid: expected a string for {what}, found {v!r}")
        return v

    def next_is_number(self) -> bool:
        return self.i < len(self.values) and isinstance(self.values[self.i], float)

    def count(self, what):
        v = self.take(float, what)
        if v != int(v) or v < 0:
            raise ValueError(f"{self.path}: malformed TextGrid: {what} must be a count, found {v}")
        return int(v)


def read_textgrid_tiers(path) -> dict[str, dict]:
    """All tiers of a Praat TextGrid (long or short text format).

    Returns
    -------
    dict
        ``{tier name: {"class": "IntervalTier" | "TextTier", "xmin": array,
        "xmax": array, "text": list of str}}`` in file order; for point tiers
        (TextTier) ``xmin == xmax`` = the point times. A repeated tier name
        gets a ``"#2"``, ``"#3"``... suffix.

    A tier holding more intervals (or points) than its ``intervals: size =``
    line declares is read whole, with a warning naming the file, the tier and
    both counts (trusting the size line would silently drop words); one
    holding fewer is an error.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a TextGrid or is malformed (including a tier with
        fewer intervals than it declares).
    """
    p = existing_file(path, "TextGrid file")
    s = _Stream(_values(read_text(p)), p)
    file_type = s.take(str, "file type")
    if not file_type.startswith("ooTextFile") or s.take(str, "object class") != "TextGrid":
        raise ValueError(f"{p}: not a Praat TextGrid text file (header must be File type = \"ooTextFile\", Object class = \"TextGrid\")")
    s.take(float, "xmin")
    s.take(float, "xmax")
    flag = s.take(str, "tiers flag")
    tiers: dict[str, dict] = {}
    if flag == "<absent>":
        return tiers
    if flag != "<exists>":
        raise ValueError(f"{p}: malformed TextGrid: expected <exists> or <absent>, found {flag!r}")
    n_tiers = s.count("number of tiers")
    for k in range(n_tiers):
        cls = s.take(str, f"class of tier {k + 1}")
        name = s.take(str, f"name of tier {k + 1}")
        s.take(float, "tier xmin")
        s.take(float, "tier xmax")
        n = s.count(f"number of intervals of tier {name!r}")
        if cls not in ("IntervalTier", "TextTier"):
            raise ValueError(f"{p}: unknown tier class {cls!r}")
        xmin, xmax, text = [], [], []
        unit = "intervals" if cls == "IntervalTier" else "points"
        # Read what the tier holds, not what it declares: an entry starts with
        # a number, a tier with its class (a string), so the stream shows
        # where the tier really ends.
        while len(text) < n or s.next_is_number():
            if not s.next_is_number():  # the next tier, or the end of the file, comes too soon
                raise ValueError(
                    f"{p}: tier {name!r} declares {n} {unit} ({unit}: size = {n}) but holds "
                    f"{len(text)}: the file is truncated or its size line is wrong"
                )
            i = len(text) + 1
            if cls == "IntervalTier":
                xmin.append(s.take(float, f"xmin of interval {i} of tier {name!r}"))
                xmax.append(s.take(float, f"xmax of interval {i} of tier {name!r}"))
                text.append(s.take(str, f"text of interval {i} of tier {name!r}"))
            else:
                xmin.append(s.take(float, f"time of point {i} of tier {name!r}"))
                xmax.append(xmin[-1])
                text.append(s.take(str, f"mark of point {i} of tier {name!r}"))
        if len(text) > n:
            warnings.warn(
                f"{p}: tier {name!r} declares {n} {unit} ({unit}: size = {n}) but holds {len(text)}; "
                f"reading all {len(text)}",
                UserWarning,
                stacklevel=3,
            )
        xmin, xmax = np.asarray(xmin, dtype=np.float64), np.asarray(xmax, dtype=np.float64)
        key, j = name, 2
        while key in tiers:
            key, j = f"{name}#{j}", j + 1
        tiers[key] = {"class": cls, "xmin": xmin, "xmax": xmax, "text": text}
    if s.i < len(s.values):
        warnings.warn(
            f"{p}: the TextGrid declares {n_tiers} tiers (size = {n_tiers}) but has more content after "
            "them, which is ignored",
            UserWarning,
            stacklevel=3,
        )
    return tiers


def _pick_tier(tiers: dict, tier, path) -> str:
    names = list(tiers)
    if isinstance(tier, (int, np.integer)) and not isinstance(tier, bool):
        if not 0 <= tier < len(names):
            raise ValueError(f"{path}: tier index {tier} out of range; tiers are {names}")
        return names[tier]
    if tier is not None:
        if tier not in tiers:
            raise ValueError(f"{path}: no tier named {tier!r}; tiers are {names}")
        return tier
    intervals = [n for n in names if tiers[n]["class"] == "IntervalTier"]
    if len(intervals) == 1:
        return intervals[0]
    for cand in ("word", "words", "Word", "Words"):
        if cand in tiers:
            return cand
    raise ValueError(f"{path}: cannot tell which tier holds the words; pass tier= one of {names}")


def read_textgrid(path, tier=None, *, drop_pauses: bool = True, pause_labels=PAUSE_LABELS) -> Stimulus:
    """Words with onsets and offsets from a Praat TextGrid tier.

    Both the long ("ooTextFile" with ``name = value`` lines) and the short
    text formats are read, in UTF-8, UTF-16 (Praat's choice for non-ASCII
    text) or Latin-1. Words come out ordered by onset (a stable sort; Praat
    already stores intervals in time order). Labels are stripped of
    surrounding whitespace.

    Parameters
    ----------
    path : str or Path
    tier : str or int, optional
        Tier name or 0-based index. Default: the only interval tier, else one
        named "word"/"words".
    drop_pauses : bool, default True
        Drop intervals whose label is in ``pause_labels`` (default
        :data:`PAUSE_LABELS`: "sp", "sil", ..., and empty labels). With False
        every interval is kept, so the words tile the tier.
    pause_labels : sequence of str

    Returns
    -------
    Stimulus
        ``words``, ``onsets`` (interval xmin, s), ``offsets`` (xmax, s);
        ``info`` has the source path and tier name.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; malformed TextGrid; unknown tier.
    """
    tiers = read_textgrid_tiers(path)
    if not tiers:
        raise ValueError(f"{path}: the TextGrid has no tiers")
    name = _pick_tier(tiers, tier, path)
    t = tiers[name]
    words = np.array([w.strip() for w in t["text"]], dtype=object)
    onsets, offsets = t["xmin"], t["xmax"]
    keep = np.ones(words.shape[0], dtype=bool)
    if drop_pauses:
        pauses = set(pause_labels)
        keep = np.array([w not in pauses for w in words], dtype=bool)
    order = np.argsort(onsets[keep], kind="stable")
    return Stimulus(
        words=words[keep][order],
        onsets=onsets[keep][order],
        offsets=offsets[keep][order],
        info={"source": str(path), "tier": name, "n_intervals": int(words.shape[0])},
    )


def read_alice_stimulus(root, *, drop_pauses: bool = True) -> Stimulus:
    """The Alice in Wonderland word tier (``<root>/stimulus_*.TextGrid``), times on the scanner clock.

    The audio was padded with 20 s of silence, so the first word starts at
    about 20.06 s, which is also the time of the first kept scan of
    :func:`read_alice_subject` (row 0 = 20 s).
    """
    folder = existing_dir(root, "Alice folder")
    return read_textgrid(find_one(Path(folder), "stimulus_*.TextGrid", "Alice TextGrid"), drop_pauses=drop_pauses)
