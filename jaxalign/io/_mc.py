"""Multiple-choice tasks as JSONL plus a label file: PIQA and Social IQa.

Labels are returned **0-based** for both: PIQA's label file is already 0/1
(sol1/sol2); Social IQa's is 1..3 (answerA..answerC) and is shifted by one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxalign.io._formats import existing_file, read_text
from jaxalign.io._types import MultipleChoice

__all__ = ["read_multiple_choice", "read_piqa", "read_siqa"]


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: line {lineno} is not a JSON object")
        records.append(rec)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def _read_labels(path: Path) -> np.ndarray:
    labels = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            labels.append(int(s))
        except ValueError:
            raise ValueError(f"{path}: line {lineno} is not an integer label: {s!r}") from None
    return np.asarray(labels, dtype=np.int64)


def _resolve(data, labels, split: str):
    p = Path(os.fspath(data)).expanduser()
    if p.is_dir():
        folder = p
        p = folder / f"{split}.jsonl"
        if labels is None and (folder / f"{split}-labels.lst").exists():
            labels = folder / f"{split}-labels.lst"
    return existing_file(p, "JSONL file"), labels


def read_multiple_choice(data, labels=None, *, prompt_keys, choice_keys, label_base: int = 0, name: str = "", split: str = "dev") -> MultipleChoice:
    """Read a JSONL multiple-choice set and its label file (one integer per line).

    Parameters
    ----------
    data : str or Path
        The JSONL file, or a folder holding ``<split>.jsonl`` and
        ``<split>-labels.lst`` (the labels are then found automatically).
    labels : str or Path, optional
        The label file; without one (and none in the folder) labels are None.
    prompt_keys : sequence of str
        Record fields joined with a space to form the prompt.
    choice_keys : sequence of str
        Record fields holding the options, in option order.
    label_base : int
        What the label file calls the first option (0 or 1); subtracted.
    name : str
        Data set name stored on the result.
    split : str
        File stem used when ``data`` is a folder.

    Raises
    ------
    FileNotFoundError
        A missing JSONL or label file (named).
    ValueError
        Invalid JSON, a record without a required field, a label count that
        differs from the record count, or a label outside the options.
    """
    path, labels = _resolve(data, labels, split)
    records = _read_jsonl(path)
    prompts, choices = [], []
    for i, rec in enumerate(records):
        missing = [k for k in (*prompt_keys, *choice_keys) if k not in rec]
        if missing:
            raise ValueError(f"{path}: record {i + 1} lacks the fields {missing}")
        prompts.append(" ".join(str(rec[k]).strip() for k in prompt_keys))
        choices.append(tuple(str(rec[k]) for k in choice_keys))
    y = None
    if labels is not None:
        lp = existing_file(labels, "label file")
        y = _read_labels(lp)
        if y.shape[0] != len(records):
            raise ValueError(f"{lp} has {y.shape[0]} labels but {path} has {len(records)} records")
        lo, hi = label_base, label_base + len(choice_keys) - 1
        bad = np.flatnonzero((y < lo) | (y > hi))
        if bad.size:
            raise ValueError(f"{lp}: line {int(bad[0]) + 1} has label {int(y[bad[0]])}, expected {lo}..{hi}")
        y = y - label_base
    ids = [rec.get("id") for rec in records]
    return MultipleChoice(
        prompts=prompts,
        choices=choices,
        labels=y,
        ids=ids if all(i is not None for i in ids) else None,
        records=records,
        name=name,
    )


def read_piqa(data, labels=None, *, split: str = "dev") -> MultipleChoice:
    """PIQA (Bisk et al. 2020): prompt = ``goal``, choices = (``sol1``, ``sol2``), labels 0/1 as in the file.

    ``data`` is ``dev.jsonl`` or its folder (then ``dev-labels.lst`` is used).
    """
    return read_multiple_choice(data, labels, prompt_keys=("goal",), choice_keys=("sol1", "sol2"), label_base=0, name="piqa", split=split)


def read_siqa(data, labels=None, *, split: str = "dev") -> MultipleChoice:
    """Social IQa (Sap et al. 2019): prompt = ``context + " " + question``, choices = answerA..C.

    The label file numbers the answers 1..3; they are converted to 0-based
    (label 1 = answerA -> 0), so ``choices[i][labels[i]]`` is the right answer.
    """
    return read_multiple_choice(
        data,
        labels,
        prompt_keys=("context", "question"),
        choice_keys=("answerA", "answerB", "answerC"),
        label_base=1,
        name="siqa",
        split=split,
    )
