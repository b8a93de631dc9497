"""File formats every reader shares: existence checks that name the path,
text decoding, numeric column files and tab-separated tables."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

__all__ = [
    "existing_dir",
    "existing_file",
    "find_one",
    "float_column",
    "int_column",
    "read_columns",
    "read_text",
    "read_tsv",
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
# tab-separated tables with a header line
# --------------------------------------------------------------------------


def read_tsv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of a tab-separated table with a header line.

    Blank lines are skipped. ValueError naming the file for an empty file, a
    missing required column, a row with a different number of fields from
    the header, or no data rows.
    """
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


def int_column(path, header, rows, name) -> np.ndarray:
    """Column ``name`` of :func:`read_tsv`'s rows as int64 (ValueError naming the file otherwise)."""
    j = header.index(name)
    try:
        return np.array([int(r[j]) for r in rows], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}: column {name!r} must hold integers") from None


def float_column(path, header, rows, name) -> np.ndarray:
    """Column ``name`` as float64; empty, NA, NaN and n/a (BIDS) cells are NaN."""
    j = header.index(name)
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        v = r[j].strip()
        try:
            out[i] = np.nan if v in ("", "NA", "NaN", "nan", "n/a") else float(v)
        except ValueError:
            raise ValueError(f"{path}: column {name!r}, data row {i + 1}: not a number: {v!r}") from None
    return out
