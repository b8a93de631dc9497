"""Dataset adapters: a ``[dataset]`` config section -> words and recordings, checked up front.

Every adapter turns one kind of ``[dataset]`` table (``jaxalign.studies.config``,
:data:`~jaxalign.studies.config.DATASET_KINDS`) into a :class:`LoadedDataset`
through the readers of :mod:`jaxalign.io`, and registers in :data:`DATASETS`:
a new dataset is one function here (or in its own module) plus one line in
that table, as an architecture is one file plus one line in
``jaxalign/lm/_registry.py``::

    ds = load_dataset(cfg)                  # a StudyConfig, or its .dataset (+ base_dir)
    ds.kind                                 # "fmri" | "meg" | "behaviour" | "features"
    ds.stimulus.words, ds.stimulus.onsets   # what was presented (None for "arrays")
    ds.recordings["s18"].data               # subject -> io.Recording

What each kind gives (``recordings`` keys are subjects):

=====================  ==========  =====================================================
kind                   ``kind``    recordings
=====================  ==========  =====================================================
alice                  fmri        every usable listener (362 TRs x 6 ROIs), one shared
                                   stimulus and scan times; ``confounds`` = the 8
                                   ``io.ALICE_REGRESSORS`` per listener
nifti                  fmri        one subject (the image file's name): TRs x mask voxels
harry_potter_fmri      fmri        one per subject letter: TRs x voxels, one stimulus
harry_potter_meg       meg         one (the data file's name): (words, channels, time)
mne                    meg         one (the file's name): epochs (words, channels, time)
                                   or continuous Raw (samples, channels) + word onsets
natural_stories        behaviour   :data:`GROUP`: one row per word, the configured
                                   reading-time column; ``info["keep"]`` marks the
                                   words to score, ``info["exclude_sentence_starts"]``
                                   the config's flag (scored by
                                   ``jaxalign.studies.natural_stories``)
arrays                 features    :data:`GROUP`: the targets; ``features`` the array
=====================  ==========  =====================================================

Subjects in ``recordings`` that share a stimulus and sampling are kept
together so the runner fits them as one multi-target problem
(``info["shared_sampling"]``).

Bad input is answered here, before any model is loaded: missing files,
arrays of inconsistent shapes, a recording whose sample count does not
match its times, stimuli that do not match across subjects. Errors keep the
reader's type (FileNotFoundError, ValueError) and start with the config key
they come from (``dataset.root: ...``) and name the path. Words after the
end of the last scan are warned about and counted
(``info["words_after_last_scan"]``), words before the first scan counted
(``info["words_before_first_scan"]``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from jaxalign import io

__all__ = ["DATASETS", "GROUP", "LoadedDataset", "load_dataset"]

#: The subject key of a recording that is not one person's (mean reading
#: times over readers, a user's targets array).
GROUP = "group"

LOADED_KINDS = ("fmri", "meg", "behaviour", "features")


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset read and checked: what was presented and what was recorded.

    Attributes
    ----------
    kind : {"fmri", "meg", "behaviour", "features"}
        The kind of recording ("features" for the "arrays" dataset, whose
        features come from the user rather than a language model).
    stimulus : io.Stimulus or None
        Words (with onsets where the recording is timed); None for "arrays".
    recordings : dict of str -> io.Recording
        Subject -> recording, in a stable order. Subjects that share a
        stimulus and sampling are all here so they can be fitted as one
        multi-target problem.
    features : ndarray or None
        "arrays" only: the user's (n_samples, dim) or (n_layers, n_samples, dim).
    confounds : dict of str -> ndarray or None
        Subject -> (n_samples, k) nuisance regressors (names in
        ``info["confound_names"]``), for datasets that ship them.
    info : dict
        ``paths`` (config key -> resolved path), ``skipped`` (subject ->
        reason), ``recording_kind`` (the config's, e.g. "continuous" for an
        MNE Raw), timing counts and per-kind extras.
    """

    kind: str
    stimulus: io.Stimulus | None
    recordings: dict[str, io.Recording]
    features: np.ndarray | None = None
    confounds: dict[str, np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in LOADED_KINDS:
            raise ValueError(f"kind must be one of {LOADED_KINDS}, got {self.kind!r}")
        if not self.recordings:
            raise ValueError("a dataset needs at least one recording")

    @property
    def subjects(self) -> list[str]:
        return list(self.recordings)


# ------------------------------------------------------------------ helpers


@contextmanager
def _key(key: str):
    """Re-raise a reader's FileNotFoundError / ValueError with the config key first."""
    try:
        yield
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{key}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from error


class _Paths:
    """Resolves the config's paths against the study file's folder and records them in ``info``."""

    def __init__(self, base_dir):
        self.base_dir = Path.cwd() if base_dir is None else Path(base_dir)
        self.used: dict[str, Any] = {}

    def __call__(self, key: str, value, *, what: str = "file", must: str = "file") -> Path:
        p = Path(value).expanduser()
        p = p if p.is_absolute() else self.base_dir / p
        ok = p.is_file() if must == "file" else p.is_dir() if must == "dir" else True
        if not ok:
            found = "a folder" if p.is_dir() else "a file" if p.exists() else "nothing"
            raise FileNotFoundError(f"{key}: {what} not found: {p} (found {found} there)")
        prev = self.used.get(key)
        self.used[key] = str(p) if prev is None else ([*prev] if isinstance(prev, list) else [prev]) + [str(p)]
        return p


def _load_npy(key: str, path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:  # not a .npy file, or an object (pickled) array
        raise ValueError(f"{key}: cannot read {path} as a plain numeric .npy array ({what}; object arrays "
                         f"are refused): {error}") from None


def _scan_counts(stimulus: io.Stimulus, times, runs=None, tr=None) -> dict[str, Any]:
    """Words at or before the first scan and after the last scan's TR ends (per run when both have runs)."""
    out = {"words_before_first_scan": 0, "words_after_last_scan": 0, "last_scan_end": None}
    if stimulus.onsets is None or times is None:
        return out
    times = np.asarray(times, dtype=np.float64)
    if stimulus.runs is not None and runs is not None:
        groups = [(stimulus.runs == r, runs == r) for r in np.unique(stimulus.runs)]
    else:
        groups = [(np.ones(len(stimulus), bool), np.ones(times.size, bool))]
    for words, scans in groups:
        t = times[scans]
        w = stimulus.onsets[words]
        if t.size == 0:  # a run with words and no scans: every word is outside the recording
            out["words_after_last_scan"] += int(w.size)
            continue
        step = tr if tr is not None else (float(np.median(np.diff(t))) if t.size > 1 else 0.0)
        end = float(t[-1]) + step
        out["words_before_first_scan"] += int(np.count_nonzero(w <= t[0]))
        out["words_after_last_scan"] += int(np.count_nonzero(w > end))
        out["last_scan_end"] = end if out["last_scan_end"] is None else max(out["last_scan_end"], end)
    return out


def _timing_info(key: str, stimulus: io.Stimulus, counts: dict[str, dict]) -> dict[str, Any]:
    """Summarise per-subject counts (the worst subject) and warn once when words come after the last scan."""
    after = max(c["words_after_last_scan"] for c in counts.values())
    before = max(c["words_before_first_scan"] for c in counts.values())
    if after:
        who = [s for s, c in counts.items() if c["words_after_last_scan"] == after]
        end = max(c["last_scan_end"] or 0.0 for c in counts.values())
        warnings.warn(
            f"{key}: {after} of {len(stimulus)} words come after the last scan's TR ends ({end:g} s) for "
            f"subject(s) {who}: they lie outside the recording (are word onsets and scan times in seconds on "
            "the same clock?)",
            UserWarning,
            stacklevel=4,
        )
    per_subject = {s: {k: c[k] for k in ("words_before_first_scan", "words_after_last_scan")}
                   for s, c in counts.items()}
    return {"words_before_first_scan": before, "words_after_last_scan": after, "per_subject": per_subject}


def _shared_sampling(recordings: dict[str, io.Recording]) -> bool:
    recs = list(recordings.values())
    first = recs[0]

    def same(a, b):
        return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

    return all(r.n_samples == first.n_samples and same(r.times, first.times) and same(r.runs, first.runs)
               for r in recs[1:])


def _same_stimulus(a: io.Stimulus, b: io.Stimulus) -> bool:
    return (len(a) == len(b) and list(a.words) == list(b.words)
            and (a.onsets is None) == (b.onsets is None)
            and (a.onsets is None or np.array_equal(a.onsets, b.onsets)))


def _info(cfg, paths: _Paths, **extra) -> dict:
    return {"dataset": cfg.kind, "recording_kind": cfg.recording_kind, "paths": dict(paths.used),
            "skipped": {}, **extra}


# ----------------------------------------------------------------- adapters


def _alice(cfg, paths: _Paths) -> LoadedDataset:
    """Alice ROI time courses: every usable listener, one stimulus, one set of scan times."""
    if cfg.source == "synthetic":
        raise ValueError("dataset.source: 'synthetic' has no files to load: the synthetic Alice-format study "
                         "is built by jaxalign.studies.alice.synthetic_data (use source 'real' or 'auto' here)")
    if cfg.root is not None:
        root = paths("dataset.root", cfg.root, what="Alice data folder", must="dir")
        if not (root / "fmri").is_dir():
            raise FileNotFoundError(f"dataset.root: no Alice data at {root} (expected {root / 'fmri'} and the "
                                    "TextGrid)")
    else:
        from jaxalign.studies.alice import find_root  # $JAXALIGN_ALICE, else ../shared/data/alice

        with _key("dataset.root"):
            root = find_root(None)
        if root is None:
            raise FileNotFoundError(
                "dataset.root: the Alice data was not found ($JAXALIGN_ALICE unset, no ../shared/data/alice "
                "beside the working directory or the project): set dataset.root to the folder holding fmri/ "
                "and the TextGrid (source 'auto' falls back to the synthetic study in jaxalign.studies.alice)")
        paths.used["dataset.root"] = str(root)
    with _key("dataset.root"):
        stimulus = io.read_alice_stimulus(root)
        subjects = io.list_alice_subjects(root, cfg.roi_size)
    recordings, confounds, skipped, counts = {}, {}, {}, {}
    for sid in subjects:
        if cfg.n_subjects is not None and len(recordings) >= cfg.n_subjects:
            break
        with _key("dataset.root"):
            rec = io.read_alice_subject(sid, root, roi_size=cfg.roi_size, on_bad="ignore")
        if rec.info["bad"]:
            skipped[sid] = rec.info["bad_reason"]
            warnings.warn(f"dataset.root: skipping Alice subject {sid}: {rec.info['bad_reason']}", UserWarning,
                          stacklevel=3)
            continue
        with _key("dataset.root"):
            reg = io.read_alice_regressors(sid, root)
        if reg.n_samples != rec.n_samples:
            raise ValueError(f"dataset.root: subject {sid} has {rec.n_samples} scans but {reg.n_samples} rows of "
                             f"regressors ({reg.info['source']})")
        recordings[sid], confounds[sid] = rec, reg.data
        counts[sid] = _scan_counts(stimulus, rec.times, rec.runs, rec.tr)
    if not recordings:
        raise ValueError(f"dataset.root: no usable Alice subject in {root / 'fmri' / cfg.roi_size} "
                         f"(skipped: {skipped})")
    if cfg.n_subjects is not None and len(recordings) < cfg.n_subjects:
        raise ValueError(f"dataset.n_subjects: {cfg.n_subjects} listeners asked for but {root} has "
                         f"{len(recordings)} usable ones (skipped: {skipped})")
    first = next(iter(recordings))
    for sid, rec in recordings.items():
        if rec.n_samples != recordings[first].n_samples:
            raise ValueError(f"dataset.root: Alice subject {sid} has {rec.n_samples} scans but {first} has "
                             f"{recordings[first].n_samples} ({rec.info['source']}): the listeners must share "
                             "their scan times")
    info = _info(cfg, paths, skipped=skipped, confound_names=list(io.ALICE_REGRESSORS), roi_size=cfg.roi_size,
                 shared_sampling=True, **_timing_info("dataset.root", stimulus, counts))
    return LoadedDataset("fmri", stimulus, recordings, confounds=confounds, info=info)


def _nifti(cfg, paths: _Paths) -> LoadedDataset:
    """4-D NIfTI runs + mask + words/onsets TSV: one subject."""
    images = [paths(f"dataset.images[{i}]", p, what="NIfTI image") for i, p in enumerate(cfg.images)]
    words_path = paths("dataset.words", cfg.words, what="words/onsets TSV")
    mask = None if cfg.mask is None else paths("dataset.mask", cfg.mask, what="mask image")
    with _key("dataset.words"):
        stimulus = io.read_words_tsv(words_path)
    with _key("dataset.images"):
        rec = io.read_nifti(images, mask, tr=cfg.tr)
    n_runs = len(images)
    if stimulus.runs is None:
        if n_runs > 1:
            raise ValueError(f"dataset.words: {words_path} has no 'run' column but dataset.images lists {n_runs} "
                             "runs: add a run column (one label per image, in the images' order)")
        stimulus = io.Stimulus(words=stimulus.words, onsets=stimulus.onsets, offsets=stimulus.offsets,
                               runs=np.zeros(len(stimulus), np.int64), info=stimulus.info)
        labels = [0]
    else:
        labels = sorted(np.unique(stimulus.runs).tolist())
        if len(labels) != n_runs:
            raise ValueError(f"dataset.words: {words_path} has runs {labels} but dataset.images lists {n_runs} "
                             "image(s): one run label per image (sorted labels map to the images in order)")
        index = {lab: k for k, lab in enumerate(labels)}
        stimulus = io.Stimulus(words=stimulus.words, onsets=stimulus.onsets, offsets=stimulus.offsets,
                               runs=np.array([index[r] for r in stimulus.runs.tolist()], np.int64),
                               info={**stimulus.info, "run_labels": labels})
    subject = Path(cfg.images[0]).name.split(".")[0]
    timing = _timing_info("dataset.words", stimulus, {subject: _scan_counts(stimulus, rec.times, rec.runs, rec.tr)})
    info = _info(cfg, paths, run_labels=labels, shared_sampling=True, tr=rec.tr, **timing)
    return LoadedDataset("fmri", stimulus, {subject: rec}, info=info)


def _harry_potter_fmri(cfg, paths: _Paths) -> LoadedDataset:
    """Harry Potter fMRI in the Toneva & Wehbe format: one recording per subject letter, one stimulus."""
    root = paths("dataset.root", cfg.root, what="Harry Potter fMRI folder", must="dir")
    missing = [s for s in cfg.subjects if not (root / f"data_subject_{s}.npy").is_file()]
    if missing:
        raise FileNotFoundError(f"dataset.subjects: no data for subject(s) {missing} in {root} "
                                f"(expected {', '.join(f'data_subject_{s}.npy' for s in missing)})")
    stimulus, recordings, counts = None, {}, {}
    for s in cfg.subjects:
        with _key("dataset.root"):
            stim, rec = io.read_harry_potter_fmri(root, s)
        if stimulus is None:
            stimulus = stim
            # the reader has checked these two: every scan of the session, trimmed ones included
            full_times = np.load(root / "time_fmri.npy").astype(np.float64).ravel()
            full_runs = np.load(root / "runs_fmri.npy").ravel()
        elif not _same_stimulus(stim, stimulus):
            raise ValueError(f"dataset.root: subject {s} reads a different stimulus from {cfg.subjects[0]} in {root}")
        recordings[s] = rec
        # against every scan of the session: words in the run-edge scans trimmed from the array
        # (20 + 15 per run) were heard while scanning and are the context of the next words
        counts[s] = _scan_counts(stimulus, full_times, full_runs, rec.tr)
    info = _info(cfg, paths, shared_sampling=_shared_sampling(recordings),
                 **_timing_info("dataset.root", stimulus, counts))
    return LoadedDataset("fmri", stimulus, recordings, info=info)


def _harry_potter_meg(cfg, paths: _Paths) -> LoadedDataset:
    """Word-locked MEG: (words, channels, time) + its words; one subject (the data file's name)."""
    data = paths("dataset.data", cfg.data, what="MEG array (.npy)")
    words = paths("dataset.words", cfg.words, what="MEG word list (.npy)")
    with _key("dataset.data"):
        stimulus, rec = io.read_harry_potter_meg(data, words, sfreq=cfg.sfreq, tmin=cfg.tmin)
    subject = data.name.removesuffix(".npy")
    return LoadedDataset("meg", stimulus, {subject: rec}, info=_info(cfg, paths, shared_sampling=True))


def _mne(cfg, paths: _Paths) -> LoadedDataset:
    """Any file MNE reads: word-locked epochs (words from metadata / event names) or a Raw with word annotations."""
    path = paths("dataset.path", cfg.path, what="MEG/EEG file")
    with _key("dataset.path"):
        if cfg.data == "epochs":
            # -epo.fif files do not keep their Raw's first_samp: onsets on the acquisition clock (order only
            # matters for word-locked epochs)
            stimulus, rec = io.read_mne_epochs(path, word_column=cfg.word_column, picks=cfg.picks, first_samp=0)
        else:
            stimulus, rec = io.read_mne_raw(path, picks=cfg.picks)
    subject = path.name.split(".")[0]  # (read_mne_raw drops word onsets outside the recording, with a warning)
    return LoadedDataset("meg", stimulus, {subject: rec}, info=_info(cfg, paths, shared_sampling=True))


def _natural_stories(cfg, paths: _Paths) -> LoadedDataset:
    """Natural Stories mean reading times over readers: one row per word, in story order."""
    root = paths("dataset.root", cfg.root, what="Natural Stories folder", must="dir")
    with _key("dataset.root"):
        stimulus, rec = io.read_natural_stories(root)
    have = sorted(set(stimulus.runs.tolist()))
    if cfg.stories is not None:
        absent = sorted(set(cfg.stories) - set(have))
        if absent:
            raise ValueError(f"dataset.stories: stories {absent} are not in {root} (it has {have})")
        keep = np.isin(stimulus.runs, cfg.stories)
        stimulus, rec = stimulus.select(keep), rec.select(keep)
    if cfg.target not in rec.target_names:
        raise ValueError(f"dataset.target: {root} has no {cfg.target!r} column (it has {list(rec.target_names)})")
    j = rec.target_names.index(cfg.target)
    rec = io.Recording(data=rec.data[:, [j]], kind="behaviour", runs=rec.runs, target_names=(cfg.target,),
                       info=dict(rec.info))
    # the stimulus keeps every word (they are the context of the next ones); the exclusions mark which
    # rows are scored, each word under the first reason that applies (jaxalign.studies.natural_stories)
    starts = stimulus.sentence_starts if cfg.exclude_sentence_starts else np.zeros(len(stimulus), bool)
    missing = ~np.isfinite(rec.data[:, 0]) & ~starts
    keep = ~(starts | missing)
    info = _info(cfg, paths, keep=keep, excluded={"sentence_start": int(starts.sum()), "missing_rt": int(missing.sum())},
                 exclude_sentence_starts=bool(cfg.exclude_sentence_starts),
                 stories=sorted(set(stimulus.runs.tolist())), shared_sampling=True)
    return LoadedDataset("behaviour", stimulus, {GROUP: rec}, info=info)


def _arrays(cfg, paths: _Paths) -> LoadedDataset:
    """The user's features and targets (and group labels), rows matched and checked."""
    fp = paths("dataset.features", cfg.features, what="features .npy")
    tp = paths("dataset.targets", cfg.targets, what="targets .npy")
    gp = None if cfg.groups is None else paths("dataset.groups", cfg.groups, what="groups .npy")
    X = _load_npy("dataset.features", fp, "features")
    Y = _load_npy("dataset.targets", tp, "targets")
    if X.dtype.kind not in "biuf" or X.ndim not in (2, 3):
        raise ValueError(f"dataset.features: {fp} must be a numeric (samples, features) or (layers, samples, "
                         f"features) array, got shape {X.shape} dtype {X.dtype}")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.dtype.kind not in "biuf" or Y.ndim != 2:
        raise ValueError(f"dataset.targets: {tp} must be a numeric (samples, targets) array, got shape {Y.shape} "
                         f"dtype {Y.dtype}")
    n = X.shape[-2]
    if Y.shape[0] != n:
        raise ValueError(f"dataset.targets: {tp} has {Y.shape[0]} rows but dataset.features ({fp}, shape "
                         f"{X.shape}) has {n} samples: one target row per sample")
    for key, arr, p in (("dataset.features", X, fp), ("dataset.targets", Y, tp)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{key}: {p} has {int(bad.sum())} non-finite values (NaN/inf); clean them first")
    runs, group_labels = None, None
    if gp is not None:
        g = _load_npy("dataset.groups", gp, "groups")
        if g.ndim != 1 or g.shape[0] != n:
            raise ValueError(f"dataset.groups: {gp} must be 1-D with one label per sample ({n}), got shape {g.shape}")
        group_labels, runs = np.unique(g, return_inverse=True)
        runs = runs.astype(np.int64)
    rec = io.Recording(data=Y, kind="behaviour", runs=runs, info={"source": str(tp)})
    info = _info(cfg, paths, shared_sampling=True,
                 group_labels=None if group_labels is None else group_labels.tolist())
    return LoadedDataset("features", None, {GROUP: rec}, features=X, info=info)


# ----------------------------------------------------------------- registry

DATASETS: dict[str, Callable[[Any, _Paths], LoadedDataset]] = {
    "alice": _alice,
    "nifti": _nifti,
    "harry_potter_fmri": _harry_potter_fmri,
    "harry_potter_meg": _harry_potter_meg,
    "mne": _mne,
    "natural_stories": _natural_stories,
    "arrays": _arrays,
}
"""Dataset kind (``[dataset] kind``) -> its adapter ``(config section, paths) -> LoadedDataset``."""


def load_dataset(cfg_dataset, base_dir=None) -> LoadedDataset:
    """Read and check the dataset a ``[dataset]`` section describes.

    Parameters
    ----------
    cfg_dataset : StudyConfig or a ``[dataset]`` section
        A whole study config (its ``dataset``, with relative paths resolved
        against its file's folder) or one of the dataset models of
        :data:`jaxalign.studies.config.DATASET_KINDS`.
    base_dir : str or Path, optional
        Folder relative paths are resolved against (default: the study
        file's folder for a StudyConfig, else the working directory).

    Raises
    ------
    FileNotFoundError, ValueError
        Messages start with the config key at fault (``dataset.root: ...``)
        and name the path.
    """
    if hasattr(cfg_dataset, "dataset") and hasattr(cfg_dataset, "base_dir"):  # a StudyConfig
        if base_dir is None:
            base_dir = cfg_dataset.base_dir
        cfg_dataset = cfg_dataset.dataset
    kind = getattr(cfg_dataset, "kind", None)
    if kind not in DATASETS:
        raise ValueError(f"dataset.kind: no adapter for {kind!r} (registered: {', '.join(DATASETS)})")
    return DATASETS[kind](cfg_dataset, _Paths(base_dir))
