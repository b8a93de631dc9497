"""Natural Stories self-paced reading times (Futrell et al. 2018) and
sentence boundaries from punctuation."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from jaxalign.io._formats import existing_file, find_one, float_column, int_column, read_tsv
from jaxalign.io._types import Recording, Stimulus

__all__ = ["read_natural_stories", "sentence_ids_from_punctuation"]

# --------------------------------------------------------------------------
# Natural Stories self-paced reading (Futrell et al. 2018)
# --------------------------------------------------------------------------

# a word ends a sentence when it ends in . ! ? followed by any closing quotes or
# brackets; common abbreviations are not sentence ends
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*$")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "prof.", "e.g.", "i.e.", "vs."})


def sentence_ids_from_punctuation(words, runs=None) -> np.ndarray:
    """Sentence index of every word, from sentence-final punctuation.

    A word starts a new sentence when it is the first word, the first word of
    a new run/story, or the previous word ends in ``.``, ``!`` or ``?``
    (optionally followed by closing quotes or brackets), is not a common
    abbreviation (Mr., Mrs., Dr., St., ...) and the word itself does not
    begin with a lower-case letter (``'Stop!' he cried.`` is one sentence).
    A heuristic for punctuated text
    such as Natural Stories; ids count up from 0 over the whole input.
    """
    words = [str(w) for w in words]
    n = len(words)
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
    for i in range(1, n):
        prev = words[i - 1]
        if (
            _SENTENCE_END.search(prev)
            and prev.strip("\"'\u2018\u201c(").lower() not in _ABBREVIATIONS
            and not words[i][:1].islower()  # 'Stop!' he cried. -> one sentence
        ):
            starts[i] = True
    if runs is not None:
        runs = np.asarray(runs)
        if runs.shape != (n,):
            raise ValueError(f"runs has shape {runs.shape}, expected ({n},).")
        starts[1:] |= runs[1:] != runs[:-1]
    return np.cumsum(starts) - 1


def read_natural_stories(wordinfo, tokens=None) -> tuple[Stimulus, Recording]:
    """Natural Stories self-paced reading times (Futrell et al. 2018), in story order.

    The files list words out of order; this reader sorts them by ``(item,
    zone)`` (story, then position in the story).

    Parameters
    ----------
    wordinfo : str or Path
        ``processed_wordinfo*.tsv`` (columns word, zone, item, nItem,
        meanItemRT, sdItemRT, gmeanItemRT, gsdItemRT), or the folder holding
        it (and the ``all_stories*.tok`` token file, used as ``tokens``).
    tokens : str or Path, optional
        ``all_stories*.tok`` (word, zone, item). When given, its (item, zone)
        keys must equal the reading-time file's (ValueError otherwise) and its
        word forms (the story text) are used as the words.

    Returns
    -------
    stimulus : Stimulus
        Words in story order; ``runs`` = story id (``item``); ``sentence_ids``
        from sentence-final punctuation (:func:`sentence_ids_from_punctuation`;
        use ``stimulus.sentence_starts`` to drop sentence-initial words);
        ``info["zone"]`` = position of each word in its story.
    recording : Recording
        ``kind="behaviour"``, one sample per word, targets = the numeric
        columns (``"meanItemRT"`` first, then ``sdItemRT``, ``gmeanItemRT``,
        ``gsdItemRT``, ``nItem``, where present); ``runs`` = story id.
        ``recording.target("meanItemRT")`` is the mean reading time in ms.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        For missing columns, duplicated (item, zone) pairs, or token keys
        that do not match the reading-time keys.
    """
    wp = Path(os.fspath(wordinfo)).expanduser()
    if wp.is_dir():
        folder = wp
        wp = find_one(folder, "processed_wordinfo*.tsv", "Natural Stories word-info")
        if tokens is None:
            hits = sorted(folder.glob("all_stories*.tok"))
            tokens = hits[0] if len(hits) == 1 else None
    wp = existing_file(wp, "Natural Stories word-info file")
    header, rows = read_tsv(wp, ("word", "zone", "item", "meanItemRT"))
    wj = header.index("word")
    words = np.array([r[wj] for r in rows], dtype=object)
    zone = int_column(wp, header, rows, "zone")
    item = int_column(wp, header, rows, "item")
    value_names = ["meanItemRT"] + [c for c in ("sdItemRT", "gmeanItemRT", "gsdItemRT", "nItem") if c in header]
    values = np.column_stack([float_column(wp, header, rows, c) for c in value_names])

    order = np.lexsort((zone, item))
    words, zone, item, values = words[order], zone[order], item[order], values[order]
    dup = np.flatnonzero((item[1:] == item[:-1]) & (zone[1:] == zone[:-1]))
    if dup.size:
        raise ValueError(f"{wp}: (item, zone) = ({item[dup[0]]}, {zone[dup[0]]}) appears more than once")

    info = {"source": str(wp), "zone": zone}
    if tokens is not None:
        tp = existing_file(tokens, "Natural Stories token file")
        th, trows = read_tsv(tp, ("word", "zone", "item"))
        tz, ti = int_column(tp, th, trows, "zone"), int_column(tp, th, trows, "item")
        tw = np.array([r[th.index("word")] for r in trows], dtype=object)
        torder = np.lexsort((tz, ti))
        tz, ti, tw = tz[torder], ti[torder], tw[torder]
        if tz.shape != zone.shape or np.any(tz != zone) or np.any(ti != item):
            raise ValueError(
                f"{tp} and {wp} do not list the same (item, zone) positions "
                f"({tz.size} tokens vs {zone.size} reading-time rows)"
            )
        info["tokens_source"] = str(tp)
        info["wordinfo_words"] = words
        words = tw

    stimulus = Stimulus(
        words=words,
        sentence_ids=sentence_ids_from_punctuation(words, item),
        runs=item,
        info=info,
    )
    recording = Recording(
        data=values,
        kind="behaviour",
        runs=item,
        target_names=tuple(value_names),
        info={"source": str(wp), "units": "ms"},
    )
    return stimulus, recording

