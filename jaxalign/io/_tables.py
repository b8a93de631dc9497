"""Plain-text tables: numeric column files, the Alice ROI time courses, Natural Stories.

Also the file helpers every reader shares (existence checks that name the
path, text decoding).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

import numpy as np

from jaxalign.io._types import Recording, Stimulus

__all__ = [
    "ALICE_FIRST_SCAN",
    "ALICE_ROIS",
    "ALICE_TR",
    "list_alice_subjects",
    "read_alice_subject",
    "read_columns",
    "read_natural_stories",
    "sentence_ids_from_punctuation",
]

# --------------------------------------------------------------------------
# file helpers (shared by all readers)
# --------------------------------------------------------------------------


def existing_file(path, what: str = "file") -> Path:
    """``Path(path)``, or FileNotFoundError naming the path when it is not a file."""
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    if p.is_dir():
        raise FileNotFoundError(f"{what} expected at {p}, found a directory")
    return p


def existing_dir(path, what: str = "directory") -> Path:
    """``Path(path)``, or FileNotFoundError naming the path when it is not a directory."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def find_one(folder: Path, pattern: str, what: str) -> Path:
    """The single file in ``folder`` matching ``pattern`` (FileNotFoundError / ValueError otherwise)."""
    hits = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not hits:
        raise FileNotFoundError(f"no {what} ({pattern}) in {folder}")
    if len(hits) > 1:
        raise ValueError(f"several {what} files ({pattern}) in {folder}: {[h.name for h in hits]}; pass one path")
    return hits[0]


def read_text(path: Path) -> str:
    """Decode a text file: UTF-16 with a BOM (Praat's choice for non-ASCII), else UTF-8, else Latin-1."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --------------------------------------------------------------------------
# numeric column files
# --------------------------------------------------------------------------


def read_columns(path, *, n_columns: int | None = None, n_rows: int | None = None, comments: str = "#") -> np.ndarray:
    """Read a whitespace-separated numeric text file into a float64 (n_rows, n_columns) array.

    Parameters
    ----------
    path : str or Path
    n_columns, n_rows : int, optional
        Expected shape; a mismatch raises ValueError naming the file.
    comments : str
        Lines starting with this are skipped.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        For an empty file, rows of different lengths, non-numeric entries or
        a shape other than the expected one.
    """
    p = existing_file(path, "column file")
    rows = []
    for lineno, line in enumerate(read_text(p).splitlines(), start=1):
        s = line.strip()
        if not s or (comments and s.startswith(comments)):
            continue
        try:
            rows.append([float(x) for x in s.replace(",", " ").split()])
        except ValueError:
            raise ValueError(f"{p}: line {lineno} is not numeric: {s[:80]!r}") from None
        if len(rows[-1]) != len(rows[0]):
            raise ValueError(f"{p}: line {lineno} has {len(rows[-1])} columns, the first row has {len(rows[0])}")
    if not rows:
        raise ValueError(f"{p}: no numeric rows")
    arr = np.asarray(rows, dtype=np.float64)
    if n_columns is not None and arr.shape[1] != n_columns:
        raise ValueError(f"{p}: expected {n_columns} columns, found {arr.shape[1]}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{p}: expected {n_rows} rows, found {arr.shape[0]}")
    return arr


# --------------------------------------------------------------------------
# Alice in Wonderland ROI time courses (Brennan et al. 2016)
# --------------------------------------------------------------------------

ALICE_ROIS = ("LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG")
ALICE_TR = 2.0
#: Scanner time of row 0 of ``sNN-timecourses.txt``: the 10 first volumes
#: (20 s at TR = 2 s) were discarded before the files were written.
ALICE_FIRST_SCAN = 20.0
_ALICE_SIZES = ("6mm", "10mm")


def _alice_subject_id(subject) -> str:
    if isinstance(subject, (int, np.integer)):
        return f"s{int(subject):02d}"
    s = str(subject)
    if re.fullmatch(r"\d+", s):
        return f"s{int(s):02d}"
    if not re.fullmatch(r"s\d+", s):
        raise ValueError(f"Alice subject must look like 's18' or 18, got {subject!r}.")
    return s


def list_alice_subjects(root, roi_size: str = "6mm") -> list[str]:
    """Subject ids (``"s18"``, ...) with a time-course file under ``root/fmri/<roi_size>``."""
    if roi_size not in _ALICE_SIZES:
        raise ValueError(f"roi_size must be one of {_ALICE_SIZES}, got {roi_size!r}.")
    folder = existing_dir(Path(root) / "fmri" / roi_size, "Alice time-course folder")
    return sorted((p.name.split("-")[0] for p in folder.glob("s*-timecourses.txt")), key=lambda s: int(s[1:]))


def read_alice_subject(subject, root=None, *, roi_size: str = "6mm", on_bad: str = "warn") -> Recording:
    """One listener's ROI time courses from the Alice fMRI data (Brennan et al. 2016).

    The file ``<root>/fmri/<roi_size>/sNN-timecourses.txt`` holds 362 TRs x 6
    ROIs (:data:`ALICE_ROIS`), TR = 2 s, the 10 first volumes already dropped:
    row ``i`` is the scan at ``20 + 2 i`` seconds on the stimulus (TextGrid)
    clock, which is what :attr:`Recording.times` holds.

    Parameters
    ----------
    subject : str, int or path
        ``"s18"`` / ``18`` (with ``root``), or the path of a time-course file
        (then ``root`` is not needed).
    root : str or Path, optional
        The Alice folder (the one holding ``fmri/`` and the TextGrid).
    roi_size : {"6mm", "10mm"}
        ROI radius.
    on_bad : {"warn", "raise", "ignore"}
        What to do with unusable data: an all-zero file (subject s33 in the
        public release), non-finite values, or ROIs that are constant. With
        "warn" / "ignore" the recording is returned and flagged:
        ``info["bad"]`` is True, ``info["bad_reason"]`` says why and
        ``info["constant_rois"]`` lists the constant ROIs.

    Returns
    -------
    Recording
        ``kind="fmri"``, data (362, 6) float64, ``times`` 20, 22, ..., 742 s,
        ``runs`` all 0, ``target_names`` = :data:`ALICE_ROIS`, ``tr`` = 2.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If the file is not 6 numeric columns, or it is bad and ``on_bad="raise"``.
    """
    if on_bad not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_bad must be 'warn', 'raise' or 'ignore', got {on_bad!r}.")
    if root is None:
        path = existing_file(subject, "Alice time-course file")
        sid = path.name.split("-")[0]
    else:
        if roi_size not in _ALICE_SIZES:
            raise ValueError(f"roi_size must be one of {_ALICE_SIZES}, got {roi_size!r}.")
        sid = _alice_subject_id(subject)
        path = existing_file(Path(root) / "fmri" / roi_size / f"{sid}-timecourses.txt", "Alice time-course file")
    data = read_columns(path, n_columns=len(ALICE_ROIS))
    info = {"source": str(path), "subject": sid, "roi_size": roi_size, "bad": False}

    reason = None
    finite = np.isfinite(data)
    if not finite.all():
        reason = f"{int((~finite).sum())} non-finite values"
    elif not np.any(data):
        reason = "all values are zero"
    constant = [ALICE_ROIS[j] for j in range(data.shape[1]) if np.all(data[:, j] == data[0, j])]
    if reason is None and constant:
        reason = f"constant ROI time courses: {constant}"
    info["constant_rois"] = constant
    if reason is not None:
        info["bad"], info["bad_reason"] = True, reason
        msg = f"Alice subject {sid} ({path}) is unusable: {reason}."
        if on_bad == "raise":
            raise ValueError(msg)
        if on_bad == "warn":
            warnings.warn(msg + " Returned anyway (info['bad'] is True).", UserWarning, stacklevel=2)

    times = ALICE_FIRST_SCAN + ALICE_TR * np.arange(data.shape[0])
    return Recording(
        data=data,
        kind="fmri",
        times=times,
        runs=np.zeros(data.shape[0], dtype=np.int64),
        target_names=ALICE_ROIS,
        tr=ALICE_TR,
        info=info,
    )


ALICE_REGRESSORS = ("rate", "sndpwr", "rp_x", "rp_y", "rp_z", "rp_pitch", "rp_roll", "rp_yaw")
ALICE_PREDICTORS = (
    "rate_conv", "frq_conv_orth", "break_conv_orth", "tdp_conv_orth", "tdx_conv_orth", "bup_conv_orth",
    "bux_conv_orth", "cfgsurp_conv_orth", "bigramlex_conv_orth", "trigramlex_conv_orth",
    "bigrampos_conv_orth", "trigrampos_conv_orth",
)
#: Volumes dropped from the time courses; the head-motion and generic-predictor
#: files still hold them (372 rows), the word-rate and sound-power files do not.
ALICE_DROPPED = 10


def _alice_rows(path, n_columns, n_rows=362):
    """Read a regressor file and align it with the 362 time-course rows."""
    arr = read_columns(path, n_columns=n_columns)
    if arr.shape[0] == n_rows + ALICE_DROPPED:
        arr = arr[ALICE_DROPPED:]
    elif arr.shape[0] != n_rows:
        raise ValueError(f"{path}: expected {n_rows} rows (or {n_rows + ALICE_DROPPED} with the "
                         f"{ALICE_DROPPED} dropped volumes), found {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: non-finite values")
    return arr


def read_alice_regressors(subject, root) -> Recording:
    """One listener's nuisance regressors, aligned with :func:`read_alice_subject`'s rows.

    Reads ``<root>/fmri/sNN-rate.txt`` (word rate under the HRF),
    ``sNN-sndpwr.txt`` (sound power under the HRF; both 362 rows) and
    ``sNN-rp_*.txt`` (SPM head-motion parameters: 3 translations, 3
    rotations; 372 rows, of which the first 10 are the volumes dropped from
    the time courses and are dropped here too).

    Returns
    -------
    Recording
        ``kind="fmri"``, data (362, 8) float64 with ``target_names`` =
        :data:`ALICE_REGRESSORS`, the same ``times`` as the time courses.

    Raises
    ------
    FileNotFoundError
        If a file is missing (or no / several motion files match).
    ValueError
        For wrong shapes or non-finite values.
    """
    sid = _alice_subject_id(subject)
    folder = existing_dir(Path(root) / "fmri", "Alice fmri folder")
    rate = _alice_rows(existing_file(folder / f"{sid}-rate.txt", "Alice word-rate file"), 1)
    snd = _alice_rows(existing_file(folder / f"{sid}-sndpwr.txt", "Alice sound-power file"), 1)
    motion = sorted(folder.glob(f"{sid}-rp_*.txt"))
    if len(motion) != 1:
        raise FileNotFoundError(f"expected one head-motion file {folder}/{sid}-rp_*.txt, found "
                                f"{[m.name for m in motion]}")
    rp = _alice_rows(motion[0], 6)
    data = np.column_stack([rate, snd, rp])
    return Recording(
        data=data, kind="fmri", times=ALICE_FIRST_SCAN + ALICE_TR * np.arange(len(data)),
        runs=np.zeros(len(data), dtype=np.int64), target_names=ALICE_REGRESSORS, tr=ALICE_TR,
        info={"subject": sid, "source": [str(folder / f"{sid}-rate.txt"),
                                         str(folder / f"{sid}-sndpwr.txt"), str(motion[0])]},
    )


def read_alice_predictors(root) -> Recording:
    """The 12 published stimulus predictors (Brennan et al. 2016), aligned with the time courses.

    ``<root>/fmri/sept18-generic-predictors-*.txt``: 372 rows x 12 columns
    (:data:`ALICE_PREDICTORS`: word rate, frequency, and syntactic /
    surprisal predictors convolved with the HRF and orthogonalised against
    word rate); the first 10 rows (dropped volumes) are dropped here.
    """
    folder = existing_dir(Path(root) / "fmri", "Alice fmri folder")
    files = sorted(folder.glob("sept18-generic-predictors*.txt"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one {folder}/sept18-generic-predictors*.txt, found "
                                f"{[f.name for f in files]}")
    data = _alice_rows(files[0], len(ALICE_PREDICTORS))
    return Recording(
        data=data, kind="fmri", times=ALICE_FIRST_SCAN + ALICE_TR * np.arange(len(data)),
        runs=np.zeros(len(data), dtype=np.int64), target_names=ALICE_PREDICTORS, tr=ALICE_TR,
        info={"source": str(files[0])},
    )


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


def _read_tsv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    text = read_text(path)
    reader = csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty file") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; found {header}")
    rows = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}: line {lineno} has {len(row)} fields, the header has {len(header)}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return header, rows


def _int_column(path, header, rows, name) -> np.ndarray:
    j = header.index(name)
    try:
        return np.array([int(r[j]) for r in rows], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}: column {name!r} must hold integers") from None


def _float_column(path, header, rows, name) -> np.ndarray:
    j = header.index(name)
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        v = r[j].strip()
        try:
            out[i] = np.nan if v in ("", "NA", "NaN", "nan") else float(v)
        except ValueError:
            raise ValueError(f"{path}: column {name!r}, data row {i + 1}: not a number: {v!r}") from None
    return out


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
    header, rows = _read_tsv(wp, ("word", "zone", "item", "meanItemRT"))
    wj = header.index("word")
    words = np.array([r[wj] for r in rows], dtype=object)
    zone = _int_column(wp, header, rows, "zone")
    item = _int_column(wp, header, rows, "item")
    value_names = ["meanItemRT"] + [c for c in ("sdItemRT", "gmeanItemRT", "gsdItemRT", "nItem") if c in header]
    values = np.column_stack([_float_column(wp, header, rows, c) for c in value_names])

    order = np.lexsort((zone, item))
    words, zone, item, values = words[order], zone[order], item[order], values[order]
    dup = np.flatnonzero((item[1:] == item[:-1]) & (zone[1:] == zone[:-1]))
    if dup.size:
        raise ValueError(f"{wp}: (item, zone) = ({item[dup[0]]}, {zone[dup[0]]}) appears more than once")

    info = {"source": str(wp), "zone": zone}
    if tokens is not None:
        tp = existing_file(tokens, "Natural Stories token file")
        th, trows = _read_tsv(tp, ("word", "zone", "item"))
        tz, ti = _int_column(tp, th, trows, "zone"), _int_column(tp, th, trows, "item")
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
