"""The Alice in Wonderland fMRI dataset (Brennan et al. 2016): ROI time
courses, regressors and predictors, aligned to the 362 analysed scans."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from jaxalign.io._formats import existing_dir, existing_file, read_columns
from jaxalign.io._types import Recording

__all__ = [
    "ALICE_FIRST_SCAN",
    "ALICE_ROIS",
    "ALICE_TR",
    "list_alice_subjects",
    "read_alice_predictors",
    "read_alice_regressors",
    "read_alice_subject",
]

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


