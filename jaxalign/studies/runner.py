"""The study runner: one config -> a resumable sweep of units -> a results store, tables and figures.

``run_study(cfg, out=...)`` (``jaxalign run study.toml --out DIR``) executes a
:class:`~jaxalign.studies.config.StudyConfig` in four stages:

1. **Check everything that can fail, before any work.** The output folder
   is writable; the dataset is read and checked (``load_dataset``); every
   model and revision is located locally and its config read without
   loading a weight (``lm.inspect``): a revision missing from the cache, an
   unsupported architecture or a layer beyond the model fails here, naming
   the config key.
2. **Plan units of work**, each keyed by a content hash of everything that
   determines it:

   * features: one per (model, revision), the per-word hidden states of all
     requested layers, cached in ``<out>/cache/features/`` under a key made
     of the weight files' hashes, the dtype, the ``[features]`` settings,
     the layers and the words. A unit whose features are cached never loads
     the model. ``[features] devices = "auto"`` (or a number k) runs the
     extraction data parallel: the model is loaded onto every local device
     (the first k) of a ``features.batch_mesh`` and each batch of windows
     split over them (``features.word_features(devices="auto")``); it is not
     part of the key.
   * fits: one per (model, revision) x recording group: all layers fitted
     together (one vmapped nested ridge CV over ``(layers, n, p)``) and all
     subjects that share a stimulus and sampling (``info["shared_sampling"]``)
     fitted as one multi-target problem; subjects with their own sampling
     get a unit each. The baseline (word rate) and the random control are
     units of their own. A per-target test (``stats.test =
     "cv_permutation"``) runs inside the fit unit.
   * property removal (``[features] remove``): for every model unit, one
     unit per removed property (``feature_set = "removed"``, label
     ``property``) whose per-word features are the ridge residuals of the
     unit's features on the property's one-hot labels (METHODS.md section 5:
     intercept, per-feature penalty by 4-fold CV over 10^-3..10^5, all
     layers in one engine call, :data:`REMOVAL`), fitted on all words of the
     stimulus, the published convention; everything after that is the model
     unit's fit. The labels come from ``[features] labels`` ("spacy": a
     spaCy parse of the stimulus words, each run its own text), checked
     before any work and cached per stimulus in ``<out>/cache/labels/``.
     The leak-free variant (the removal refitted inside each outer training
     fold, ``analysis.probing.removal_effects(removal="fold")``) is in the
     library, not here: the runner builds its per-TR design once, after the
     removal. Removal units are not in the group units' FDR family (a study
     keeps its group rows with or without removal); after the units,
     :func:`_removal_table` tests original vs residual alignment per layer x
     property (two-sided paired t-test over subjects, over targets with one
     subject; BH/BY FDR) into ``<out>/removal/removal.csv``, ``removal.png``,
     ``results.json`` ("removal") and lines of :func:`format_summary`.
   * group statistics: with ``stats.test = "sign_flip"``, one unit per
     feature set with ``subject = "group"``: the mean r over subjects, its
     SEM, the one-sided sign-flip p over subjects and BH/BY FDR over every
     feature set x target of the study (and the test against the baseline,
     on the paired differences). They depend on every fit unit.

3. **Execute** units not yet in the store (``ResultsStore``): each is claimed
   (a lease file; processes sharing the store split the work and take over a
   dead process's units), computed and written atomically as soon as it
   finishes; a heartbeat renews the claim while a unit runs, so a short
   lease (a job array's workers, :func:`jaxalign.studies.launch`) never
   lapses under a live process. A process that finds the remaining units
   claimed by others waits, and takes over a unit whose holder died or let
   its lease lapse. The group units are computed together by one process
   under one claim (they depend on every fit and share one FDR family);
   the others wait for them. A run killed with ``kill -9`` resumes where it
   stopped; changing a setting recomputes only the units whose key it enters.
4. **Report**: ``results.csv`` (and ``.parquet``), ``results.json`` (the
   group table, settings, versions), the config as run (``study.toml``) and
   the figures of :mod:`jaxalign.studies.report` when it is installed.

Targets are cleaned as ``[encoding]`` says: drift (``detrend``) and
``confounds`` regressed out either inside every outer fold, fitted on its
training rows only (``confound_fit = "train"``, the default:
``timing.fold_residualizer`` as the ``fold_targets`` hook of
``ridge.nested_cv``), or once on the whole series (``"whole_series"``, the
convention of the original Alice analysis).

What runs today: fMRI datasets (alice, nifti, harry_potter_fmri) and the
"arrays" dataset, with stats tests sign_flip, cv_permutation and none.
Continuous MEG/EEG recordings are refused with an error naming the config
key (they come next).

Noise ceilings (``[stats.ceiling]``, with group tests): ``split_half``
(Spearman-Brown split-half reliability of the group-mean response over
random subject splits), ``extrapolation`` (Brain-Score's held-out-subject
consistency extrapolated to infinitely many subjects, per target: the scale
of a per-subject r) or ``fixed``; computed once from the whole-series
cleaned targets and cached in ``<out>/cache/ceilings`` by a key of the data
and the settings; the group units then carry ``ceiling`` and
``score_over_ceiling``.

Progress goes to stderr through tqdm bars (units, then the stages inside a
unit: feature extraction, outer folds, permutations); ``quiet=True`` turns
them off. Library messages go through ``logging`` (logger
``jaxalign.studies.runner``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxalign._core import seeds
from jaxalign._core.hashing import array_digest
from jaxalign._core.files import atomic_write, atomic_write_text, writable_dir
from jaxalign.studies import _collective
from jaxalign.studies.config import ConfigError, StudyConfig, settings_hash
from jaxalign.studies.datasets import GROUP, LoadedDataset, load_dataset
from jaxalign.studies.encode import word_design
from jaxalign.studies.store import ClaimLost, ResultsStore, load_results

__all__ = ["RunSummary", "extract_features", "format_summary", "plan_study", "run_study"]

log = logging.getLogger(__name__)

#: Bumped when what a unit computes changes (part of every key).
RUNNER_FORMAT = 1
BASELINE_MODEL = "word rate"
CONTROL_MODEL = "random vectors"
NO_REVISION = "-"
# the named random stream of the control vectors: the one jaxalign.studies.alice
# draws from, so that the runner reproduces that study's table row for row
CONTROL_STREAM = "alice random control"
_MOTION = ("rp_x", "rp_y", "rp_z", "rp_pitch", "rp_roll", "rp_yaw")
_WAIT_S = 2.0
#: [features] remove: the removal fit of every removed property (METHODS.md 5: ridge on one-hot labels with an
#: intercept, penalty chosen per feature by 4-fold CV over 10^-3..10^5), part of the removal units' keys.
#: keep_mean: the words' mean is added back to the residuals, so that only the property's class differences go:
#: centring alone changes a per-TR design (a TR without words averages to 0, which is the mean after centring
#: but not before) and, on Alice, cost every property the same 0.01 of r at layers 0 and 30.
REMOVAL = {"alphas": [float(a) for a in np.logspace(-3, 5, 9)], "cv": 4, "scoring": "r2", "fit_on": "all_words",
           "keep_mean": True}
REMOVED = "removed"


# ---------------------------------------------------------------- planning


@dataclass
class _ModelRun:
    """One (model, revision): where its weights are and what keys its features."""

    label: str
    revision: str
    source: object  # lm.ModelSource
    dtype: str
    layers: list[int]
    features_key: str = ""


@dataclass
class _FitUnit:
    key: str
    feature_set: str  # model | baseline | control
    model: str
    revision: str
    layers: list[int]
    subjects: list[str]
    run: _ModelRun | None = None  # feature_set "model" / "removed" (and "control": the shape it copies)
    property: str | None = None  # feature_set "removed": the property regressed out of run's features


@dataclass
class _Plan:
    cfg: StudyConfig
    out: Path
    dataset: LoadedDataset
    models: list[_ModelRun]
    groups: list[list[str]]  # subjects fitted together
    fits: list[_FitUnit]
    group_keys: dict = field(default_factory=dict)  # (model, revision) -> key of the group unit
    label_source: str | None = None  # [features] remove: who labels the words (e.g. the spaCy pipeline)


def _sha256_file(path: Path, memo: dict) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if ident in memo:
        return memo[ident]
    target = Path(os.path.realpath(path))
    # a Hugging Face cache blob is named by its content hash already
    if target.parent.name == "blobs" and len(target.name) == 64:
        digest = target.name
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
    memo[ident] = digest
    return digest


def _weights_fingerprint(source, cache_dir: Path) -> str:
    """sha256 over the model's files (names and contents), memoized by path, size and mtime."""
    memo_path = cache_dir / "file_hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    before = dict(memo)
    parts = {p.name: _sha256_file(p, memo) for p in source.files}
    if memo != before:
        atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
    return settings_hash(parts)


def _extraction_settings(cfg: StudyConfig) -> dict:
    """The ``[features]`` settings the extracted features depend on (not ``remove`` / ``labels``, which act on
    them afterwards: a study with removal shares the features cache and the model units of one without)."""
    out = cfg.features._canonical()
    out.pop("remove", None)
    out.pop("labels", None)
    return out


def _model_path(spec, cfg: StudyConfig) -> str:
    from jaxalign import lm

    if spec.packaged is not None:
        return str(lm.packaged_model(spec.packaged))
    if spec.path is not None:
        return str(cfg.resolve_path(spec.path))
    return spec.hub


def _resolve_models(cfg: StudyConfig, cache_dir: Path, words: str) -> list[_ModelRun]:
    """Every (model, revision) located and described without loading weights; layers checked.

    ``words``: digest of the stimulus words (and their runs, which set the
    surprisal contexts), part of every features key.
    """
    from jaxalign import lm

    runs = []
    for i, spec in enumerate(cfg.models):
        where = f"models[{i}]"
        for revision in spec.revisions or [None]:
            try:
                path = _model_path(spec, cfg)
                source = lm.inspect(path, revision)
            except FileNotFoundError as error:
                what = f"{where}.revisions: {revision!r}" if revision else where
                raise FileNotFoundError(f"{what}: {error}") from None
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            try:
                layers = cfg.resolved_layers(source.n_layers) if cfg.features.kind != "surprisal" else [0]
            except ConfigError as error:
                raise ConfigError([f"{p} ({spec.label})" for p in error.problems], cfg._source) from None
            if cfg.features.kind == "surprisal":
                from jaxalign.lm._registry import architecture

                if not getattr(architecture(source.model_type).Config, "causal", True):
                    raise ValueError(f"{where}: surprisal needs a causal language model; {spec.label} is a "
                                     f"{source.model_type!r} (bidirectional) model")
                layers = [0]  # one column, from the LM head (label 0 in the results)
            run = _ModelRun(spec.label, revision or "main", source, spec.dtype, layers)
            run.features_key = settings_hash({
                "weights": _weights_fingerprint(source, cache_dir), "dtype": spec.dtype,
                "features": _extraction_settings(cfg), "layers": layers, "format": RUNNER_FORMAT,
                "words": words,
            })
            runs.append(run)
    return runs


def _recording_digest(ds: LoadedDataset, subjects) -> str:
    parts = []
    for s in subjects:
        rec = ds.recordings[s]
        conf = None if ds.confounds is None else ds.confounds.get(s)
        parts.append(array_digest(rec.data, rec.times, rec.runs, conf,
                                   np.asarray(rec.target_names or (), dtype=str)))
    return settings_hash(parts)


def _words_digest(ds: LoadedDataset) -> str:
    """What per-word features depend on in a stimulus: its words (and runs: stories for surprisal)."""
    if ds.stimulus is None:
        return "none"
    return array_digest(np.asarray(ds.stimulus.words, dtype=str), ds.stimulus.runs)


def _stimulus_digest(ds: LoadedDataset) -> str:
    if ds.stimulus is None:
        return array_digest(ds.features)
    return array_digest(np.asarray(ds.stimulus.words, dtype=str), ds.stimulus.onsets, ds.stimulus.runs)


def _check_supported(cfg: StudyConfig, ds: LoadedDataset) -> None:
    problems = []
    behaviour = ds.kind == "behaviour"
    if ds.kind not in ("fmri", "meg", "features", "behaviour"):
        problems.append(f"dataset.kind: {cfg.dataset.kind!r} gives {ds.kind} data; the runner fits fMRI, "
                        "word-locked MEG, reading-time and 'arrays' datasets")
    if ds.kind == "meg" and cfg.timing.kind == "continuous":
        for name, rec in ds.recordings.items():
            if rec.data.ndim != 2 or rec.sfreq is None:
                problems.append(f"dataset: timing 'continuous' needs (samples, channels) data with a sample rate; "
                                f"subject {name}'s recording has shape {rec.data.shape} and sfreq {rec.sfreq}")
    if behaviour:
        if cfg.features.kind != "surprisal" or cfg.encoding.method != "correlation":
            problems.append("features.kind / encoding.method: reading times are scored by the runner as "
                            "surprisal correlated with the reading time (features kind 'surprisal', encoding "
                            "method 'correlation')")
        if cfg.stats.test not in ("pearson_t", "none"):
            problems.append(f"stats.test: reading times take 'pearson_t' or 'none', not {cfg.stats.test!r}")
        if cfg.stats.ceiling.method not in ("none", "fixed"):
            problems.append(f"stats.ceiling.method: the runner takes 'none' or 'fixed' for reading times, "
                            f"not {cfg.stats.ceiling.method!r}")
        if cfg.features.control != "none":
            problems.append("features.control: no random control for reading times (set 'none')")
    else:
        if cfg.encoding.method != "ridge":
            problems.append(f"encoding.method: the runner fits 'ridge' to {ds.kind} data, not "
                            f"{cfg.encoding.method!r}")
        if cfg.features.kind != "hidden_states" and ds.kind != "features":
            problems.append(f"features.kind: the runner uses 'hidden_states' for {ds.kind} data, not "
                            f"{cfg.features.kind!r}")
        method = cfg.stats.ceiling.method
        if method != "none" and cfg.stats.test != "sign_flip":
            problems.append(f"stats.ceiling.method: {method!r} normalises the group scores, which need "
                            "stats.test 'sign_flip' (several subjects); set 'none'")
        elif method in ("split_half", "extrapolation"):
            need = 2 if method == "split_half" else 3
            if len(ds.recordings) < need or len(_groups(ds)) != 1:
                problems.append(f"stats.ceiling.method: {method!r} needs >= {need} subjects sharing one stimulus, "
                                f"sampling and targets (the dataset has {len(ds.recordings)} subject(s) in "
                                f"{len(_groups(ds))} group(s))")
    if cfg.stats.test == "sign_flip" and (len(ds.recordings) < 2 or len(_groups(ds)) != 1):
        problems.append("stats.test: 'sign_flip' tests each target over subjects, which needs >= 2 subjects "
                        f"sharing the same targets (the dataset has {len(ds.recordings)} subject(s) in "
                        f"{len(_groups(ds))} group(s) of shared targets, e.g. voxels in each subject's own "
                        "space); use 'cv_permutation' (per target) or 'none'")
    if cfg.stats.test == "cv_permutation" and cfg.encoding.scoring != "pearson":
        problems.append("stats.test: 'cv_permutation' tests the held-out Pearson r; set encoding.scoring "
                        "to 'pearson'")
    if cfg.output.predictions:
        if behaviour:
            problems.append("output.predictions: reading times are correlated with surprisal, nothing is predicted "
                            "(set false)")
        elif cfg.encoding.method == "ridge" and cfg.encoding.outer.kind == "shuffle":
            problems.append("output.predictions: outer kind 'shuffle' does not test every sample exactly once, so "
                            "there is no held-out prediction per sample (use 'contiguous', 'kfold' or 'group')")
    if ds.kind == "features" and (cfg.features.baseline != "none" or cfg.features.control != "none"):
        problems.append("features.baseline / features.control: not available with the 'arrays' dataset")
    if problems:
        raise ConfigError(problems, cfg._source)


def _groups(ds: LoadedDataset) -> list[list[str]]:
    """Subjects fitted together: those sharing stimulus, sampling and targets (same names); else one each."""
    subjects = ds.subjects
    if not ds.info.get("shared_sampling", False) or len(subjects) == 1:
        return [[s] for s in subjects]
    groups: dict = {}
    for s in subjects:
        rec = ds.recordings[s]
        groups.setdefault((rec.data.shape[1:], tuple(rec.target_names or ())), []).append(s)
    return list(groups.values())


def _synthetic_alice_wanted(cfg: StudyConfig) -> bool:
    if cfg.dataset.kind != "alice" or cfg.dataset.source == "real":
        return False
    if cfg.dataset.source == "synthetic":
        return True
    from jaxalign.studies.alice import find_root

    root = None if cfg.dataset.root is None else cfg.resolve_path(cfg.dataset.root)
    try:
        return find_root(root) is None  # 'auto' without the data (a given root that is missing is an error)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"dataset.root: {error}") from None


def _synthetic_alice(cfg: StudyConfig, out: Path, cache_dir: Path):
    """The synthetic Alice-format study (``jaxalign.studies.alice.synthetic_data``): the embedded text,
    responses planted from the first model's middle requested layer; its features are cached as usual."""
    from jaxalign import io
    from jaxalign.studies import alice

    words = np.asarray(alice._TEXT.read_text().split())
    onsets = alice.story_timing(words, seed=cfg.stats.seed)
    stimulus = io.Stimulus(words=words, onsets=onsets)
    if cfg.encoding.method == "ridge" and cfg.encoding.confounds:
        log.warning("the synthetic Alice study has no confound regressors: encoding.confounds %s not used",
                    cfg.encoding.confounds)
        cfg = cfg.updated({"encoding": {"confounds": []}})
    placeholder = LoadedDataset("fmri", stimulus, {"pending": io.Recording(np.zeros((2, 1)), "fmri",
                                                                           times=np.array([0.0, 2.0]))})
    models = _resolve_models(cfg, cache_dir, _words_digest(placeholder))
    if not models:
        raise ConfigError(["models: the synthetic Alice study plants its responses from a model's features"],
                          cfg._source)
    first = models[0]
    planted = len(first.layers) // 2  # the middle one of the layers asked for, as `jaxalign alice`
    log.info("Alice data not found or not asked for: the synthetic Alice-format study (%d-word embedded text, "
             "responses planted from %s layer %d)", len(words), first.label, first.layers[planted])
    per_word = _Features(_Plan(cfg, out, placeholder, models, [], []), False).get(first)
    data = alice.synthetic_data(per_word[planted], words=words, onsets=onsets,
                                n_subjects=cfg.dataset.n_subjects or 12, seed=cfg.stats.seed)
    data.info["planted"].update(layer=first.layers[planted], model=first.label)
    recordings = {s: io.Recording(y, "fmri", times=data.tr_times, target_names=list(data.rois), tr=io.ALICE_TR)
                  for s, y in zip(data.subjects, data.Y)}
    ds = LoadedDataset("fmri", stimulus, recordings,
                       info={"shared_sampling": True, "source": "synthetic", "planted": data.info["planted"]})
    return cfg, ds, models


def _check_devices(cfg: StudyConfig) -> None:
    """``[features] devices``: no more than this host's devices (before any work)."""
    asked = cfg.features.devices
    if isinstance(asked, int):
        import jax

        have = len(jax.local_devices())
        if asked > have:
            raise ConfigError([f"features.devices: {asked} devices asked for, this host has {have} "
                               f"({jax.local_devices()[0].platform}); use 'auto' for all of them"], cfg._source)


def _check_removal(cfg: StudyConfig, ds: LoadedDataset) -> str:
    """``[features] remove``, before any work: words to label, hidden states, a labeller that loads.

    Returns the label source's identity (part of the removal units' keys), e.g. the spaCy pipeline and version.
    """
    problems = []
    if ds.stimulus is None or ds.kind == "features":
        problems.append(f"features.remove: the {cfg.dataset.kind!r} dataset has no words (its features are "
                        "given), so there is nothing to label and no word features to remove a property from")
    elif ds.kind == "behaviour" or cfg.features.kind != "hidden_states":
        problems.append("features.remove: properties are removed from per-word hidden states (features kind "
                        "'hidden_states', an fMRI or MEG dataset)")
    if problems:
        raise ConfigError(problems, cfg._source)
    return _label_source(cfg)


def _label_source(cfg: StudyConfig) -> str:
    """The labeller of ``[features] labels``, loaded once here so that a missing one fails before any work."""
    from jaxalign.analysis.probing._spacy import load_english

    try:
        nlp = load_english()
    except ImportError as error:
        raise ConfigError([f"features.labels: 'spacy' labels the words of features.remove with a spaCy parse: "
                           f"{error}"], cfg._source) from None
    meta = nlp.meta
    return f"spacy {meta.get('lang', '')}_{meta.get('name', '')} {meta.get('version', '')}"


def _label_words(plan: _Plan):
    """The stimulus words' labels from the study's label source (one text per run): labels_from_spacy's
    DataFrame, one row per word."""
    import pandas as pd

    from jaxalign.analysis.probing import labels_from_spacy

    stim = plan.dataset.stimulus
    # spaCy reads presented words, one whitespace-free token each
    words = np.asarray([("_".join(str(w).split()) or "_") for w in stim.words], dtype=object)
    runs = np.zeros(len(words), np.int64) if stim.runs is None else np.asarray(stim.runs)
    parts = []
    for run in dict.fromkeys(runs.tolist()):
        idx = np.flatnonzero(runs == run)
        part = labels_from_spacy(list(words[idx]))
        part.index = idx
        part["run"] = run
        parts.append(part)
    return pd.concat(parts).sort_index()


def _property_labels(plan: _Plan):
    """(n_words, 8) int classes of every STUDY_BINS property (``property_classes``), cached per stimulus and
    label source in ``<out>/cache/labels`` (the words' labels beside them, for reading)."""
    import pandas as pd

    from jaxalign.analysis.probing import property_classes

    key = settings_hash({"words": _words_digest(plan.dataset), "labels": plan.label_source,
                         "format": RUNNER_FORMAT})
    path = plan.out / "cache" / "labels" / f"{key}.csv"
    if path.is_file():
        return pd.read_csv(path)
    t0 = time.perf_counter()
    labels = _label_words(plan)
    classes = property_classes(labels).reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.with_name(f"{key}_words.csv"), labels.to_csv(index=False))
    atomic_write_text(path, classes.to_csv(index=False))
    log.info("labelled %d words with %s in %.1f s", len(classes), plan.label_source, time.perf_counter() - t0)
    return classes


def plan_study(cfg: StudyConfig, out=None) -> _Plan:
    """Stage 1 and 2 of :func:`run_study`: every check, every unit's key; nothing computed."""
    if not isinstance(cfg, StudyConfig):
        raise TypeError(f"cfg must be a StudyConfig, got {type(cfg).__name__}")
    _check_devices(cfg)
    out = writable_dir(cfg.resolve_path(cfg.output.dir) if out is None else Path(out).expanduser(),
                       "output.dir (or --out)")
    cache_dir = out / "cache"
    writable_dir(cache_dir / "features", "features cache")
    removed = list(getattr(cfg.features, "remove", None) or [])
    label_source = None
    if _synthetic_alice_wanted(cfg):
        if removed:  # the labeller before the planted features are extracted
            _label_source(cfg)
        cfg, ds, models = _synthetic_alice(cfg, out, cache_dir)
        _check_supported(cfg, ds)
        label_source = _check_removal(cfg, ds) if removed else None
    else:
        ds = load_dataset(cfg)
        _check_supported(cfg, ds)
        label_source = _check_removal(cfg, ds) if removed else None
        models = [] if ds.kind == "features" else _resolve_models(cfg, cache_dir, _words_digest(ds))
    _check_compare(cfg, ds)
    groups = _groups(ds)
    enc = cfg.encoding
    fit_settings = {
        "timing": cfg.timing._canonical(), "encoding": enc._canonical(), "format": RUNNER_FORMAT,
        "stimulus": _stimulus_digest(ds), "dataset": cfg.dataset._canonical(),
    }
    if cfg.stats.test == "cv_permutation" or ds.kind == "behaviour":  # computed inside the fit units
        fit_settings["stats"] = cfg.stats._canonical()
    if cfg.output.predictions and ds.kind != "behaviour":  # units that keep their predictions (absent: old keys)
        fit_settings["predictions"] = True
    fits = []
    for subjects in groups:
        rec_digest = _recording_digest(ds, subjects)

        def key(**extra):
            return settings_hash(dict(fit_settings, recording=rec_digest, subjects=subjects, **extra))

        if ds.kind == "features":
            n_layers = ds.features.shape[0] if ds.features.ndim == 3 else 1
            fits.append(_FitUnit(key(features="given"), "model", "features", NO_REVISION,
                                 list(range(n_layers)), subjects))
            continue
        if cfg.features.baseline == "word_rate":
            fits.append(_FitUnit(key(baseline="word_rate"), "baseline", BASELINE_MODEL, NO_REVISION, [0],
                                 subjects))
        for run in models:
            fits.append(_FitUnit(key(features=run.features_key), "model", run.label, run.revision,
                                 run.layers, subjects, run))
        if cfg.features.control == "random":
            fits.append(_FitUnit(key(control="random", seed=cfg.stats.seed, shape_of=models[0].features_key),
                                 "control", CONTROL_MODEL, NO_REVISION, [0], subjects, models[0]))
        for run in models:  # [features] remove: one unit per model x property, after the others
            for prop in removed:
                fits.append(_FitUnit(key(features=run.features_key, removed=prop, labels=label_source,
                                         removal=REMOVAL), "removed", run.label, run.revision, run.layers,
                                     subjects, run, prop))
    plan = _Plan(cfg, out, ds, models, groups, fits, label_source=label_source)
    if cfg.stats.test == "sign_flip":  # the removal units are compared with their model's in _removal_table
        tested = [u for u in fits if u.feature_set != "removed"]
        family = settings_hash({"fits": sorted(u.key for u in tested), "stats": cfg.stats._canonical(),
                                "format": RUNNER_FORMAT})
        for u in tested:
            plan.group_keys.setdefault((u.model, u.revision), settings_hash({"family": family, "model": u.model,
                                                                          "revision": u.revision}))
    return plan


# ---------------------------------------------------------------- features


class _Features:
    """Per-word features of each (model, revision): from the cache, else from the model (loaded once)."""

    def __init__(self, plan: _Plan, progress: bool):
        self.plan = plan
        self.dir = plan.out / "cache" / "features"
        self.progress = progress
        self.memory: dict[str, np.ndarray] = {}
        self.removed: dict[str, np.ndarray] = {}
        self.loaded_models = 0

    def path(self, run: _ModelRun) -> Path:
        return self.dir / f"{run.features_key}.npy"

    def get(self, run: _ModelRun) -> np.ndarray:
        if run.features_key in self.memory:
            return self.memory[run.features_key]
        path = self.path(run)
        per_word = None
        if path.is_file():
            try:
                per_word = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                log.warning("cached features %s unreadable (%s): recomputing", path, error)
        if per_word is None:
            per_word = self._compute(run)
            atomic_write(path, lambda f: np.save(f, per_word, allow_pickle=False))
            atomic_write_text(path.with_suffix(".json"), json.dumps({
                "model": run.label, "revision": run.revision, "source": str(run.source.path),
                "dtype": run.dtype, "layers": run.layers, "shape": list(per_word.shape),
                "features": _extraction_settings(self.plan.cfg)}, indent=1))
        self.memory = {run.features_key: per_word}  # one model's features in memory at a time
        return per_word

    def residuals(self, run: _ModelRun, prop: str) -> np.ndarray:
        """(L, n_words, dim) features of ``run`` with property ``prop`` regressed out (``[features] remove``).

        Every removed property of the study is fitted in one engine call over all the run's layers (each
        feature its own penalty), on all words of the stimulus; one run's residuals are kept in memory."""
        from jaxalign.analysis.probing import fit_removal

        props = list(self.plan.cfg.features.remove)
        if run.features_key not in self.removed:
            per_word = self.get(run)
            _check_finite_words(per_word, run.label)
            classes = _property_labels(self.plan)
            t0 = time.perf_counter()
            fit = fit_removal(per_word, classes[props], np.asarray(REMOVAL["alphas"]), REMOVAL["cv"],
                              scoring=REMOVAL["scoring"])
            res = fit.transform(per_word, classes[props])  # (P, L, n, dim), centred
            res = (res + per_word.mean(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)  # keep_mean
            log.info("%s (%s): %d propert%s regressed out of %d layer(s) in %.1f s", run.label, run.revision,
                     len(props), "y" if len(props) == 1 else "ies", per_word.shape[0], time.perf_counter() - t0)
            self.removed = {run.features_key: res}  # one run's residuals in memory at a time
        return self.removed[run.features_key][props.index(prop)]

    def _compute(self, run: _ModelRun) -> np.ndarray:
        import jax.numpy as jnp

        from jaxalign import features, lm

        cfg = self.plan.cfg
        log.info("loading %s (%s)", run.label, run.revision)
        t0 = time.perf_counter()
        fcfg = cfg.features
        # data parallel: the weights are loaded once onto every device (a ("batch", "model") mesh)
        # and each batch of windows is split over them (features.word_features(devices="auto"))
        mesh = None if fcfg.devices is None else features.batch_mesh(fcfg.devices)
        model, tokenizer = lm.load(run.source.path if run.source.format == "gguf" else run.source.path,
                                   dtype=jnp.bfloat16 if run.dtype == "bfloat16" else jnp.float32, devices=mesh)
        self.loaded_models += 1
        log.info("loaded %s in %.1f s%s", run.label, time.perf_counter() - t0,
                 "" if mesh is None else f" on {mesh.size} devices")
        devices = None if mesh is None else "auto"
        if fcfg.kind == "surprisal":  # (n_words,) bits; each story (run) its own context
            stim = self.plan.dataset.stimulus
            words = np.asarray(stim.words, dtype=object)
            runs = np.zeros(len(words), np.int64) if stim.runs is None else np.asarray(stim.runs)
            out = np.full(len(words), np.nan)
            for story in dict.fromkeys(runs.tolist()):
                idx = np.flatnonzero(runs == story)
                out[idx] = features.word_surprisal(model, tokenizer, list(words[idx]), context="passage",
                                                   bos=fcfg.bos, max_length=fcfg.max_length, stride=fcfg.stride,
                                                   progress=self.progress, devices=devices)
            return out
        per_word = np.asarray(features.word_features(
            model, tokenizer, list(self.plan.dataset.stimulus.words), pooling=fcfg.pooling,
            context=fcfg.context, layers=run.layers, context_size=fcfg.context_size,
            min_context=fcfg.min_context, max_length=fcfg.max_length, progress=self.progress,
            devices=devices))
        return per_word.astype(np.float32, copy=False)


def extract_features(cfg, out=None, *, progress: bool | None = None) -> list[tuple]:
    """Stage 1 and the feature units only: every (model, revision)'s per-word features cached in ``out``.

    For a GPU node ahead of the fits (``jaxalign extract``); ``run_study``
    on the same folder then loads no model. Returns one tuple per model
    revision: (label, revision, cache path, shape, was it cached already).
    """
    if not isinstance(cfg, StudyConfig):
        cfg = StudyConfig.from_toml(cfg)
    plan = plan_study(cfg, out)
    feats = _Features(plan, _isatty() if progress is None else bool(progress))
    done = []
    for run in plan.models:
        cached = feats.path(run).is_file()
        per_word = feats.get(run)
        done.append((run.label, run.revision, feats.path(run), per_word.shape, cached))
    return done


# ---------------------------------------------------------------- fitting


def _confound_columns(cfg: StudyConfig, ds: LoadedDataset) -> list[int] | None:
    names = cfg.encoding.confounds
    if not names:
        return None
    have = list(ds.info.get("confound_names") or [])
    cols = []
    for name in names:
        for n in (_MOTION if name == "motion" else (name,)):
            if n not in have:
                raise ConfigError([f"encoding.confounds: {n!r} is not provided by the dataset (it has "
                                   f"{have})"], cfg._source)
            cols.append(have.index(n))
    return list(dict.fromkeys(cols))


class _Targets:
    """The targets of one recording group, cleaned as ``[encoding]`` says, and their fold hook."""

    def __init__(self, plan: _Plan, subjects: list[str]):
        from jaxalign import timing

        cfg, ds = plan.cfg, plan.dataset
        enc = cfg.encoding
        recs = [ds.recordings[s] for s in subjects]
        first = recs[0]
        n = first.n_samples
        self.runs = np.zeros(n, np.int64) if first.runs is None else np.asarray(first.runs)
        tcfg = cfg.timing
        trim = (tcfg.trim_start, tcfg.trim_end) if tcfg.kind == "fmri" else (0, 0)
        if first.info.get("trimmed"):  # the reader's array is trimmed already (Harry Potter): not twice
            if tuple(first.info.get("trim") or ()) != trim:
                raise ConfigError([f"timing.trim_start / trim_end: the recording of {subjects[0]} comes trimmed by "
                                   f"{tuple(first.info.get('trim') or ())} TRs per run; set the same values "
                                   f"(the config has {trim})"], cfg._source)
            trim = (0, 0)
        self.keep = timing.trim_mask(self.runs, *trim)
        self.groups = self.runs[self.keep]
        self.target_names = list(first.target_names or [str(i) for i in range(first.data.shape[1])])
        self.windows = None  # MEG: the start time (s) of each window
        cols = _confound_columns(cfg, ds)
        self.fold_targets = None
        blocks, designs = [], []
        for s, rec in zip(subjects, recs):
            Y = np.asarray(rec.data, np.float64)
            if tcfg.kind == "meg":  # (words, channels, time) -> (words, windows x channels)
                Y = self._windows(rec, tcfg, s)
            C = None if cols is None else np.asarray(ds.confounds[s], np.float64)[:, cols]
            if enc.confound_fit == "whole_series":
                if enc.detrend != "none":
                    Y = timing.detrend(Y, self.runs, kind=enc.detrend, order=enc.detrend_order, confounds=C)
                elif C is not None:
                    Y = timing.detrend(Y, self.runs, kind="poly", order=0, confounds=C)
                Y = timing.zscore_per_run(Y[self.keep], self.groups)
            else:
                Y = Y[self.keep]
                if enc.detrend != "none" or C is not None:
                    designs.append(timing.nuisance_design(
                        int(self.keep.sum()), self.groups, kind=enc.detrend, order=enc.detrend_order,
                        confounds=None if C is None else C[self.keep]))
            blocks.append(Y)
        self.Y = np.concatenate(blocks, axis=1)  # (n, S * T), subject-major (T = windows x channels for MEG)
        self.n_subjects, self.n_targets = len(subjects), blocks[0].shape[1]
        if designs:
            self.fold_targets = timing.fold_residualizer(
                np.stack(designs), np.repeat(np.arange(len(subjects)), self.n_targets))

    @property
    def n_windows(self) -> int:
        return 1 if self.windows is None else len(self.windows)

    def _windows(self, rec, tcfg, subject) -> np.ndarray:
        from jaxalign import timing

        if rec.data.ndim != 3 or rec.sfreq is None:
            raise ValueError(f"dataset: subject {subject}'s MEG recording must be word-locked epochs (words, "
                             f"channels, time) with a sample rate, got shape {rec.data.shape}")
        tmin = float(rec.epoch_times[0]) if rec.epoch_times is not None else 0.0
        try:
            windows = timing.word_locked_windows(rec.data, rec.sfreq, n_windows=tcfg.n_windows, width=tcfg.width,
                                                 start=tcfg.start, tmin=tmin)
        except ValueError as error:
            raise ValueError(f"timing: windows {tcfg.start}..{tcfg.stop} s of {tcfg.width} s do not fit subject "
                             f"{subject}'s epochs ({tmin:g} s from onset, {rec.data.shape[2]} samples at "
                             f"{rec.sfreq:g} Hz): {error}") from None
        self.windows = [round(tcfg.start + k * tcfg.width, 6) for k in range(windows.shape[0])]
        return timing.windows_to_targets(windows).astype(np.float64)


def _scan_grid(rec, targets: _Targets):
    """(times, runs, rows to keep) of the grid features and delays are built on.

    Every scan of the session for a recording whose array comes trimmed
    (``info["full_times"]``), else the recording's own scans.
    """
    from jaxalign import timing

    if rec.info.get("trimmed") and rec.info.get("full_times") is not None:
        runs = np.asarray(rec.info["full_runs"])
        return np.asarray(rec.info["full_times"], np.float64), runs, timing.trim_mask(runs, *rec.info["trim"])
    return rec.times, targets.runs, targets.keep


def _design(plan: _Plan, per_word, targets: _Targets, subjects) -> np.ndarray:
    """(L, n_words, dim) word features -> (L, n_kept, n_delays * dim) on the recording's samples."""
    from jaxalign import timing

    cfg = plan.cfg
    rec = plan.dataset.recordings[subjects[0]]
    stim = plan.dataset.stimulus
    tcfg = cfg.timing
    if tcfg.kind == "meg":  # one sample per word: the word's own vector, no delays
        X = np.asarray(per_word)[:, targets.keep]
        return timing.zscore_per_run(X, targets.groups, axis=-2).astype(np.float32)
    if tcfg.kind == "continuous":
        return _continuous_design(plan, _word_pca(per_word, tcfg.pca), targets, subjects)
    times, runs, keep = _scan_grid(rec, targets)
    X = word_design(per_word, stim, times, runs if rec.runs is not None or rec.info.get("trimmed") else None,
                    tcfg)[:, keep]
    return timing.zscore_per_run(X, targets.groups, axis=-2).astype(np.float32)


def _word_pca(per_word, k: int | None) -> np.ndarray:
    """(L, n_words, dim) -> (L, n_words, k): each layer's first k principal components over the words
    (float64 SVD of the centred features; the stimulus only, no recording involved)."""
    X = np.asarray(per_word, np.float64)
    if k is None or k >= min(X.shape[1:]):
        return X
    out = np.empty(X.shape[:2] + (k,))
    for i, layer in enumerate(X):
        U, S, _ = np.linalg.svd(layer - layer.mean(0), full_matrices=False)
        out[i] = U[:, :k] * S[:k]
    return out


def _continuous_impulses(plan: _Plan, per_word, subjects) -> tuple[np.ndarray, np.ndarray | None]:
    """Continuous MEG/EEG: each word's features (or a 1: the word rate) as an impulse at its onset sample,
    undelayed: ((L, n_samples, dim) float64, the recording's run labels or None)."""
    from jaxalign import timing

    rec = plan.dataset.recordings[subjects[0]]
    stim = plan.dataset.stimulus
    n = rec.data.shape[0]
    t0 = float(rec.times[0]) if rec.times is not None else 0.0
    runs = None if rec.runs is None else np.asarray(rec.runs)
    layers = [None] if per_word is None else list(np.asarray(per_word))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # words after the recording: counted once, by the reader
        X = np.stack([timing.onset_impulses(stim.onsets, f, rec.sfreq, n, t0=t0).reshape(n, -1) for f in layers])
    return X, runs


def _continuous_design(plan: _Plan, per_word, targets: _Targets, subjects) -> np.ndarray:
    """The materialised delayed design of :func:`_continuous_impulses`: (L, n_kept, n_delays * dim), z-scored
    per run. Only the refitted permutation test uses it (it refits on permuted targets); the fits themselves
    go through ``timing.lagged_nested_cv`` and never build it (:func:`_fit`)."""
    from jaxalign import timing

    X0, runs = _continuous_impulses(plan, per_word, subjects)
    X = np.stack([timing.sample_delays(x, plan.cfg.timing.delays, runs) for x in X0])[:, targets.keep]
    return timing.zscore_per_run(X, targets.groups, axis=-2).astype(np.float32)


def _word_rate(plan: _Plan, targets: _Targets, subjects) -> np.ndarray:
    """(1, n_kept, n_delays) words per scan, FIR-delayed on the scan grid, z-scored per run."""
    from jaxalign import timing

    if plan.cfg.timing.kind == "continuous":  # words per sample: impulses of ones, sample delays
        return _continuous_design(plan, None, targets, subjects)
    rec = plan.dataset.recordings[subjects[0]]
    times, runs, keep = _scan_grid(rec, targets)
    X = word_design(None, plan.dataset.stimulus, times, runs if rec.runs is not None or rec.info.get("trimmed")
                    else None, plan.cfg.timing, counts=True)[:, keep]
    return timing.zscore_per_run(X, targets.groups, axis=-2).astype(np.float32)


def _fit(plan: _Plan, unit: _FitUnit, features: _Features, bar_factory) -> tuple[dict, dict, dict, list]:
    """Compute one fit unit: arrays, dims, meta and target names for the store."""
    from jaxalign import ridge, stats, timing

    cfg, ds = plan.cfg, plan.dataset
    if ds.kind == "behaviour":
        return _fit_reading_times(plan, unit, features)
    enc, scfg = cfg.encoding, cfg.stats
    t0 = time.perf_counter()
    targets = _Targets(plan, unit.subjects)
    # continuous MEG/EEG: the delayed design is never built for the fit (timing.lagged_nested_cv); the
    # refitted permutation test refits on permuted targets from the materialised one
    lagged = cfg.timing.kind == "continuous" and ds.kind != "features" and scfg.test != "cv_permutation"
    if ds.kind == "features":
        X = np.asarray(ds.features, np.float32)
        X = X[None] if X.ndim == 2 else X
        X = X[:, targets.keep]
    else:
        if unit.feature_set == "baseline":
            per_word = None
        elif unit.feature_set == "control":
            shape = features.get(unit.run).shape[1:]
            per_word = seeds.rng(scfg.seed, CONTROL_STREAM).standard_normal((1,) + shape).astype(np.float32)
        elif unit.feature_set == REMOVED:
            per_word = features.residuals(unit.run, unit.property)
        else:
            per_word = features.get(unit.run)
        if per_word is not None:
            _check_finite_words(per_word, unit.model)
            X = (_continuous_impulses(plan, _word_pca(per_word, cfg.timing.pca), unit.subjects) if lagged
                 else _design(plan, per_word, targets, unit.subjects))
        else:
            X = _continuous_impulses(plan, None, unit.subjects) if lagged else _word_rate(plan, targets, unit.subjects)
    alphas = enc.alpha_grid()
    outer, inner = enc.outer_splitter(), enc.inner_splitter()
    use_groups = targets.groups if "group" in (enc.outer.kind, enc.inner.kind) else None
    common = dict(groups=use_groups, fit_intercept=enc.fit_intercept, standardize=enc.standardize_arg,
                  fold_targets=targets.fold_targets)
    bar = bar_factory(desc="outer folds", unit="fold")
    on_fold = lambda k, total: (setattr(bar, "total", total), bar.update(1))  # noqa: E731
    if lagged:
        X, runs = X
        res = timing.lagged_nested_cv(X, targets.Y, cfg.timing.delays, runs, alphas, outer, inner,
                                      rows=targets.keep, zscore_runs=True, scoring=enc.scoring, on_fold=on_fold,
                                      **common)
        n_features = X.shape[-1] * len(cfg.timing.delays)
    else:
        res = ridge.nested_cv(X, targets.Y, alphas, outer, inner, scoring=enc.scoring, progress=False,
                              on_fold=on_fold, **common)
        n_features = X.shape[-1]
    bar.close()
    L, S, W = X.shape[0], targets.n_subjects, targets.n_windows
    T = targets.n_targets // W  # targets per window (channels for MEG)
    fold = np.asarray(res.fold_scores, np.float64)  # (L, K, S * W * T)
    K = fold.shape[1]
    fold = fold.reshape(L, K, S, W, T).transpose(0, 2, 3, 1, 4)  # (L, S, W, K, T)
    score = np.nanmean(fold, axis=3) if enc.scoring != "neg_mse" else fold.mean(axis=3)
    alpha = np.asarray(res.best_alphas, np.float64).reshape(L, K, S, W, T).transpose(0, 2, 3, 1, 4)
    per_fold = ("layer", "subject", "window", "fold", "target")
    if targets.windows is None:  # no window axis
        fold, score, alpha = fold[:, :, 0], score[:, :, 0], alpha[:, :, 0]
        per_fold = ("layer", "subject", "fold", "target")
    arrays = {"score": score, "fold_score": fold, "alpha": alpha}
    dims = {"fold_score": per_fold, "alpha": per_fold}
    if cfg.output.predictions:  # (L, n, S * W * T) -> (L, S, W, n, T); the targets as scored -> (S, W, n, T)
        n = targets.Y.shape[0]
        pred = np.asarray(res.predictions, np.float32).reshape(L, n, S, W, T).transpose(0, 2, 3, 1, 4)
        seen = np.asarray(res.targets, np.float32).reshape(n, S, W, T).transpose(1, 2, 0, 3)
        arrays.update(prediction=pred if targets.windows is not None else pred[:, :, 0],
                      observed=seen if targets.windows is not None else seen[:, 0])
        if targets.windows is not None:
            dims.update(prediction=("layer", "subject", "window", "sample", "target"),
                        observed=("subject", "window", "sample", "target"))
        else:
            dims.update(prediction=("layer", "subject", "sample", "target"), observed=("subject", "sample", "target"))
    if scfg.test == "cv_permutation":
        perm = stats.cv_permutation_test(
            X, targets.Y, alphas, outer, inner, n_permutations=scfg.n_permutations,
            scheme=scfg.effective_scheme, block_size=scfg.block_size, alternative=scfg.alternative,
            seed=scfg.seed, tail=scfg.tail_arg, progress=bar_factory.enabled, **common)
        p = np.asarray(perm.p, np.float64).reshape((L, S, W, T) if targets.windows is not None else (L, S, T))
        p_fdr = np.empty_like(p)
        for i in range(S):  # FDR over layers x (windows x) targets of each subject
            _, adj = stats.fdr_correction(p[:, i].ravel(), alpha=scfg.fdr_alpha, method=scfg.fdr)
            p_fdr[:, i] = np.asarray(adj, np.float64).reshape(p[:, i].shape)
        arrays.update(p=p, p_fdr=p_fdr)
    meta = {"seconds": time.perf_counter() - t0, "n_samples": int(targets.Y.shape[0]),
            "n_features": int(n_features), "feature_set": unit.feature_set,
            "settings": {"timing": cfg.timing._canonical(), "encoding": enc._canonical(),
                         "stats": cfg.stats._canonical(), "features": cfg.features._canonical()},
            "seeds": {"stats": scfg.seed}}
    if unit.feature_set == REMOVED:
        meta["removal"] = dict(REMOVAL, property=unit.property, labels=plan.label_source)
    if unit.run is not None and unit.feature_set in ("model", REMOVED):
        meta["model"] = {"source": str(unit.run.source.path), "format": unit.run.source.format,
                         "model_type": unit.run.source.model_type, "n_layers": unit.run.source.n_layers,
                         "features_key": unit.run.features_key, "dtype": unit.run.dtype}
    return arrays, dims, meta, (targets.target_names, targets.windows)


def _check_finite_words(per_word, model: str) -> None:
    bad = ~np.isfinite(per_word).all(axis=(0, 2))
    if bad.any():
        raise ValueError(f"{model}: {int(bad.sum())} word(s) have non-finite features (e.g. words "
                         "skipped by features.min_context): they cannot be averaged into TRs")


def _fit_reading_times(plan: _Plan, unit: _FitUnit, features: _Features):
    """Surprisal vs reading time (``jaxalign.studies.natural_stories``): pooled and per story, one unit."""
    from jaxalign import stats
    from jaxalign.studies import natural_stories

    cfg, scfg = plan.cfg, plan.cfg.stats
    t0 = time.perf_counter()
    surprisal = np.asarray(features.get(unit.run), np.float64)
    details = plan.out / "details" / _safe(f"{unit.model}@{unit.revision}")
    res = natural_stories.analyse_dataset(
        plan.dataset, surprisal, n_resamples=scfg.ci_resamples or 1000, seed=scfg.seed, model=unit.model,
        settings={"max_length": cfg.features.max_length}, out=details)
    parts = [("pooled", res["pooled"])] + [(f"story {k}", v) for k, v in res["per_story"].items()]
    names = [name for name, _ in parts]
    r = np.array([[v["r"] for _, v in parts]])
    n = np.array([[v["n"] for _, v in parts]], np.int64)
    arrays = {"score": r, "n_words": n}
    if scfg.ci_resamples is not None:
        arrays["ci_low"] = np.array([[v["ci"][0] for _, v in parts]])
        arrays["ci_high"] = np.array([[v["ci"][1] for _, v in parts]])
    if scfg.test == "pearson_t":
        p = np.asarray(stats.pearson_pvalue(r, n, alternative=scfg.alternative), np.float64)
        _, adj = stats.fdr_correction(p.ravel(), alpha=scfg.fdr_alpha, method=scfg.fdr)
        arrays.update(p=p, p_fdr=np.asarray(adj, np.float64).reshape(p.shape))
    if scfg.ceiling.method == "fixed":
        arrays["ceiling"] = np.full(len(names), scfg.ceiling.value)
        arrays["score_over_ceiling"] = r / scfg.ceiling.value
    meta = {"seconds": time.perf_counter() - t0, "feature_set": unit.feature_set, "excluded": res["excluded"],
            "details": str(details), "settings": {"features": cfg.features._canonical(),
                                                  "stats": scfg._canonical(), "dataset": cfg.dataset._canonical()},
            "seeds": {"bootstrap": scfg.seed}}
    return arrays, ({"ceiling": ("target",)} if "ceiling" in arrays else {}), meta, (names, None)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)


def _labels(plan: _Plan, unit: _FitUnit, names) -> dict:
    target_names, windows = names
    subject = GROUP if plan.dataset.kind == "behaviour" else list(unit.subjects)
    extra = {} if windows is None else {"window": list(windows)}
    if unit.property is not None:
        extra["property"] = unit.property
    return {**extra, "model": unit.model, "revision": unit.revision, "layer": list(unit.layers),
            "subject": subject, "target": list(target_names), "feature_set": unit.feature_set,
            "dataset": plan.cfg.dataset.kind,
            "features": "given" if plan.dataset.kind == "features" else plan.cfg.features.kind}


# ------------------------------------------------------------ group stats


def _ceiling(plan: _Plan):
    """Per-target noise ceiling of the study's subjects ((T,) or (W, T) for MEG), cached; None without one."""
    import dataclasses

    from jaxalign import stats

    c = plan.cfg.stats.ceiling
    if c.method == "none":
        return None
    subjects = plan.groups[0]
    whole = dataclasses.replace(plan, cfg=plan.cfg.updated({"encoding": {"confound_fit": "whole_series"}}))
    targets = _Targets(whole, subjects)
    shape = (targets.n_windows, targets.n_targets // targets.n_windows)
    if c.method == "fixed":
        return np.full(shape, c.value).squeeze(0) if targets.windows is None else np.full(shape, c.value)
    key = settings_hash({"recording": _recording_digest(plan.dataset, subjects), "ceiling": c._canonical(),
                         "encoding": plan.cfg.encoding._canonical(), "timing": plan.cfg.timing._canonical(),
                         "seed": plan.cfg.stats.seed, "format": RUNNER_FORMAT})
    path = plan.out / "cache" / "ceilings" / f"{key}.npy"
    if path.is_file():
        values = np.load(path, allow_pickle=False)
        log.info("noise ceiling from the cache (%s)", path.name[:12])
    else:
        t0 = time.perf_counter()
        n, S = targets.Y.shape[0], targets.n_subjects
        data = targets.Y.reshape(n, S, targets.n_targets).transpose(1, 0, 2)  # (S, n, T)
        if c.method == "split_half":
            values = np.asarray(stats.split_half_ceiling(data, n_splits=c.n_splits or 10,
                                                         seed=plan.cfg.stats.seed).ceiling, np.float64)
        else:
            values = np.asarray(stats.extrapolation_ceiling(data, n_bootstraps=c.n_bootstraps or 100,
                                                            seed=plan.cfg.stats.seed).target_ceiling, np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.save(f, values, allow_pickle=False))
        atomic_write_text(path.with_suffix(".json"), json.dumps({"method": c.method, "subjects": subjects,
                                                                 "settings": c._canonical()}, indent=1))
        log.info("noise ceiling (%s over %d subjects) in %.1f s", c.method, S, time.perf_counter() - t0)
    values = values.reshape(shape)
    return values[0] if targets.windows is None else values


def _group_units(plan: _Plan, store: ResultsStore) -> list[tuple[str, dict, dict, dict]]:
    """Sign-flip tests over subjects for every feature set of the study, FDR over all of them."""
    from jaxalign import stats

    scfg = plan.cfg.stats
    tested = [u for u in plan.fits if u.feature_set != REMOVED]
    units = [(u, store.read_unit(u.key)) for u in tested]
    # one row block per (model, revision): (S, L, T); a study's subjects are in every fit unit's group
    blocks: dict[tuple, list] = {}
    for u, done in units:
        blocks.setdefault((u.model, u.revision), []).append((u, done))
    entries = []  # (model, revision, unit, r (S, L, T))
    for (model, revision), parts in blocks.items():
        r = np.concatenate([np.moveaxis(d.arrays["score"], 1, 0) for _, d in parts], axis=0)
        entries.append((model, revision, parts[0][0], parts[0][1], r))
    S = entries[0][4].shape[0]
    flat = np.concatenate([e[4].reshape(S, -1) for e in entries], axis=1)
    p_all = np.asarray(stats.sign_flip_test(flat, n_permutations=scfg.n_permutations,
                                            alternative=scfg.alternative, seed=scfg.seed).p, np.float64)
    _, fdr_all = stats.fdr_correction(p_all, alpha=scfg.fdr_alpha, method=scfg.fdr)
    fdr_all = np.asarray(fdr_all, np.float64)
    base = next((e for e in entries if e[2].feature_set == "baseline"), None)
    vs = {}
    if base is not None:
        others = [e for e in entries if e is not base]
        diff = np.concatenate([(e[4] - base[4]).reshape(S, -1) for e in others], axis=1)
        p_vs = np.asarray(stats.sign_flip_test(diff, n_permutations=scfg.n_permutations,
                                               alternative=scfg.alternative, seed=scfg.seed).p, np.float64)
        _, fdr_vs = stats.fdr_correction(p_vs, alpha=scfg.fdr_alpha, method=scfg.fdr)
        fdr_vs = np.asarray(fdr_vs, np.float64)
        at = 0
        for e in others:
            size = e[4][0].size
            vs[(e[0], e[1])] = (p_vs[at:at + size].reshape(e[4].shape[1:]),
                                fdr_vs[at:at + size].reshape(e[4].shape[1:]))
            at += size
    ceiling = _ceiling(plan)
    out, at = [], 0
    for model, revision, u, done, r in entries:
        size = r[0].size
        arrays = {"score": r.mean(axis=0), "sem": r.std(axis=0, ddof=1) / np.sqrt(S),
                  "p": p_all[at:at + size].reshape(r.shape[1:]), "p_fdr": fdr_all[at:at + size].reshape(r.shape[1:]),
                  "n_subjects": np.full(r.shape[1:], S, np.int64)}
        at += size
        if (model, revision) in vs:
            arrays["p_vs_baseline"], arrays["p_vs_baseline_fdr"] = vs[(model, revision)]
        dims = {}
        if ceiling is not None:
            arrays["ceiling"] = ceiling
            with np.errstate(divide="ignore", invalid="ignore"):
                arrays["score_over_ceiling"] = np.where(ceiling > 0, arrays["score"] / ceiling, np.nan)
            dims["ceiling"] = ("target",) if ceiling.ndim == 1 else ("window", "target")
        labels = {"model": model, "revision": revision, "layer": list(u.layers), "subject": GROUP,
                  "target": list(done.labels["target"]), "feature_set": u.feature_set,
                  "dataset": plan.cfg.dataset.kind, "features": done.labels.get("features", "hidden_states")}
        if "window" in done.labels:
            labels["window"] = list(done.labels["window"])
        meta = {"test": "sign_flip over subjects", "fdr": f"{scfg.fdr} over all feature sets x targets",
                "settings": {"stats": scfg._canonical()}, "seeds": {"stats": scfg.seed},
                "from_units": sorted(x.key for x in tested)}
        if ceiling is not None:
            meta["ceiling"] = plan.cfg.stats.ceiling._canonical()
        out.append((plan.group_keys[(model, revision)], arrays, labels, meta, dims))
    return out


# ------------------------------------------------------------------ running


class _Bars:
    """tqdm bars on stderr, or silent ones."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, **kwargs):
        from tqdm.auto import tqdm

        return tqdm(disable=not self.enabled, leave=False, **kwargs)


@dataclass
class RunSummary:
    """What :func:`run_study` did.

    Attributes
    ----------
    out : the results folder (the store, tables, figures)
    computed, reused : unit keys computed by this run / found done
    models_loaded : how many models were loaded (0 when all features were cached)
    table : the tidy results table (pandas), as ``load_results(out).table``
    files : the tables and figures written
    seconds : wall time
    tasks : with a job array (:func:`jaxalign.studies.launch`), what each task
        did: task, job_id, host, pid, computed, reused, state, log (a file)
    """

    out: Path
    computed: list
    reused: list
    models_loaded: int
    table: object
    files: list
    seconds: float
    group: dict | None = None
    fdr_alpha: float = 0.05
    tasks: list = field(default_factory=list)
    compare: dict | None = None
    removal: object = None  # [features] remove: the table of _removal_table (pandas), else None


STAGES = ("fit", "stats")


def _check_compare(cfg: StudyConfig, ds) -> None:
    """[compare] pairs subjects: refuse a dataset with fewer than 2 before any work."""
    if cfg.compare is not None and len(ds.subjects) < 2:
        raise ValueError(f"compare: the paired test over subjects needs at least 2 subjects; the dataset has "
                         f"{len(ds.subjects)} ({ds.subjects})")


def _compare(cfg: StudyConfig, table) -> dict | None:
    """[compare]: ``{tuned: listener_change table}`` against the base model (per layer and target)."""
    if cfg.compare is None or table is None:
        return None
    from jaxalign.analysis.compare import listener_change

    c = cfg.compare
    rows = table[table["feature_set"] == "model"] if "feature_set" in table.columns else table
    by = ["layer", "target"] + (["window"] if "window" in rows.columns and rows["window"].notna().any() else [])
    return {name: listener_change(rows, c.base, name, by=by, n_permutations=c.n_permutations,
                                  alternative=c.alternative, fdr=c.fdr, alpha=c.fdr_alpha, seed=c.seed)
            for name in cfg.compared}


def _removal_table(cfg: StudyConfig, table):
    """``[features] remove``: the alignment of each property's residual features vs the original ones.

    One row per model, revision, layer, property and target, plus a row ``target = "mean"`` (the mean over
    targets): mean r of the original and residual features, their change, and a two-sided paired t-test of
    the change (METHODS.md 5): over subjects (each subject's r, or its mean over targets for the "mean" row)
    when there are several, over targets when there is one subject (then only the "mean" row). FDR
    (``stats.fdr``, ``stats.fdr_alpha``) over the "mean" rows of the study, and apart over the per-target rows.
    """
    import pandas as pd
    from scipy import stats as st

    from jaxalign import stats

    if table is None or "feature_set" not in table.columns or not (table["feature_set"] == REMOVED).any():
        return None
    rows = table[table["subject"] != GROUP]
    on = ["model", "revision", "layer", "subject", "target"]
    if "window" in rows.columns and rows["window"].notna().any():
        on.append("window")
    orig = rows[rows["feature_set"] == "model"][on + ["score"]].rename(columns={"score": "r_original"})
    rem = rows[rows["feature_set"] == REMOVED][on + ["property", "score"]].rename(columns={"score": "r_removed"})
    both = rem.merge(orig, on=on, how="inner")
    n_subjects = both["subject"].nunique()
    over = "subjects" if n_subjects > 1 else "targets"
    spots = [c for c in ("target", "window") if c in on]

    def test(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if len(a) < 2 or not np.isfinite(a).all() or not np.isfinite(b).all() or np.allclose(a, b):
            return np.nan, np.nan
        res = st.ttest_rel(b, a, alternative="two-sided")
        return float(res.statistic), float(res.pvalue)

    out = []
    for (model, revision, layer, prop), g in both.groupby(["model", "revision", "layer", "property"], sort=False):
        head = {"model": model, "revision": revision, "layer": int(layer), "property": prop}
        if n_subjects > 1:
            per = g.groupby("subject", sort=False)[["r_original", "r_removed"]].mean()
        else:
            per = g[["r_original", "r_removed"]]
        t, p = test(per["r_original"], per["r_removed"])
        out.append({**head, "target": "mean", "n": len(per), "over": over, "r_original": per["r_original"].mean(),
                    "r_removed": per["r_removed"].mean(), "t": t, "p": p})
        if n_subjects > 1:
            for spot, h in g.groupby(spots, sort=False):
                t, p = test(h["r_original"], h["r_removed"])
                where = dict(zip(spots, spot if isinstance(spot, tuple) else (spot,)))
                out.append({**head, **where, "n": len(h), "over": over, "r_original": h["r_original"].mean(),
                            "r_removed": h["r_removed"].mean(), "t": t, "p": p})
    res = pd.DataFrame(out)
    res["change"] = res["r_removed"] - res["r_original"]
    res["p_fdr"] = np.nan
    for mean in (True, False):
        sel = (res["target"] == "mean") == mean
        if sel.any():
            _, adj = stats.fdr_correction(res.loc[sel, "p"].to_numpy(np.float64), alpha=cfg.stats.fdr_alpha,
                                          method=cfg.stats.fdr)
            res.loc[sel, "p_fdr"] = np.asarray(adj, np.float64)
    res["significant"] = res["p_fdr"] < cfg.stats.fdr_alpha
    cols = ["model", "revision", "layer", "property", "target"] + (["window"] if "window" in res.columns else [])
    res = res[cols + ["n", "over", "r_original", "r_removed", "change", "t", "p", "p_fdr", "significant"]]
    res.attrs.update(test=f"two-sided paired t-test over {over}", over=over, n_subjects=n_subjects,
                     fdr=cfg.stats.fdr, alpha=cfg.stats.fdr_alpha)
    return res


def _write_removal(plan: _Plan, removal) -> list:
    """``<out>/removal/removal.csv`` (every row of :func:`_removal_table`) and, with ``png`` in
    ``output.formats``, ``removal.png`` (alignment per layer, original and each residual; the change)."""
    folder = plan.out / "removal"
    folder.mkdir(exist_ok=True)
    files = [atomic_write_text(folder / "removal.csv", removal.to_csv(index=False))]
    if "png" in plan.cfg.output.formats:
        from jaxalign.studies.report import plot_removal

        fig = plot_removal(removal)
        files.append(atomic_write(folder / "removal.png", lambda f: fig.savefig(f, format="png", dpi=130)))
    return files


def _write_compare(out: Path, compared: dict) -> list:
    """``<out>/compare/<tuned>_vs_<base>.csv`` and ``.png`` (the change per layer, a panel per target)."""
    from jaxalign.analysis.compare import plot_listener_change

    folder = out / "compare"
    folder.mkdir(exist_ok=True)
    files = []
    for name, res in compared.items():
        stem = f"{_safe(name)}_vs_{_safe(res.attrs['base'])}"
        files.append(atomic_write_text(folder / f"{stem}.csv", res.to_csv(index=False)))
        if res["target"].nunique() <= 12 and "window" not in res.columns:  # a panel per target (ROIs);
            fig = plot_listener_change(res)                                    # voxels, channels: the table
            files.append(atomic_write(folder / f"{stem}.png", lambda f, fig=fig: fig.savefig(f, format="png",
                                                                                            dpi=120)))
    return files


def run_study(cfg, out=None, *, progress: bool | None = None, lease_seconds: float = 3600.0,
              stages=STAGES, outputs: bool = True, distributed: bool = False) -> RunSummary:
    """Run a study config end to end (see the module docstring); resumable and shareable between processes.

    Parameters
    ----------
    cfg : StudyConfig, or a path to a TOML study file
    out : results folder (overrides ``output.dir``)
    progress : tqdm bars on stderr (None: on a terminal only)
    lease_seconds : claim lease of a unit (renewed between stages)
    stages : what to compute: "fit" (features and fit units; ``jaxalign
        fit``) and / or "stats" (the group units; ``jaxalign stats``, which
        needs every fit unit done and raises ValueError naming how many are
        missing otherwise). Tables and figures are written either way.
    outputs : False: compute and store units only, write no tables or
        figures, and return a summary whose ``table`` is None (a worker of
        a job array, :func:`jaxalign.studies.launch`, whose launching
        process writes them once the workers are done)
    distributed : run as one computation over every process of a
        ``jax.distributed`` job (started here with
        :func:`jaxalign.distributed.initialize`'s detection unless it runs
        already): each ridge fit's targets are sharded over every process's
        devices; process 0 claims and writes the units, tables and figures,
        the others follow (``jaxalign.studies._collective``). ``out`` must
        be one folder on a filesystem every process sees (checked).

    Returns
    -------
    RunSummary; the results are in ``out`` (``load_results(out)``).

    Raises
    ------
    ConfigError, FileNotFoundError, ValueError before any work for bad
    configs, missing files, models or revisions, unwritable folders.
    """
    t0 = time.perf_counter()
    stages = tuple(stages)
    if not stages or any(s not in STAGES for s in stages):
        raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {stages}")
    if not isinstance(cfg, StudyConfig):
        cfg = StudyConfig.from_toml(cfg)
    if distributed:
        import jaxalign.distributed

        if not jaxalign.distributed.is_initialized():
            jaxalign.distributed.initialize()
    plan = plan_study(cfg, out)
    cfg = plan.cfg  # as run (the synthetic Alice study drops confounds it does not have)
    writer = _collective.is_writer()  # process 0 writes files (always true alone)
    _collective.check_shared_folder(plan.out)
    show = progress if progress is not None else None
    bars = _Bars(writer and (bool(show) if show is not None else _isatty()))
    store = _collective.CollectiveStore(ResultsStore(plan.out / "store"))
    if writer:
        cfg.to_toml(plan.out / "study.toml")
        _write_geometry(plan)
    feats = _Features(plan, bars.enabled)
    computed, reused = [], []
    all_units = [(u.key, u) for u in plan.fits]
    total = len(all_units) + len(set(plan.group_keys.values()))
    overall = bars(total=total, desc="units", unit="unit")
    pending = [k for k, _ in all_units if not store.is_done(k)]
    reused += [k for k, _ in all_units if store.is_done(k)]
    overall.update(len(reused))
    log.info("%d fit unit(s): %d done already, %d to compute", len(all_units), len(reused), len(pending))
    if pending and "fit" not in stages:
        overall.close()
        raise ValueError(f"{len(pending)} of {len(all_units)} fit unit(s) of this study are not in {store.root} yet: "
                         "run 'jaxalign fit' (or 'jaxalign run') on the same config and folder first")
    by_key = dict(all_units)
    told = None
    while pending:
        waiting = []
        for key in pending:
            if store.is_done(key):
                reused.append(key)
                overall.update(1)
                continue
            claim = store.claim(key, lease_seconds)
            if claim is None:
                if not store.is_done(key):
                    waiting.append(key)
                else:
                    reused.append(key)
                    overall.update(1)
                continue
            unit = by_key[key]
            with claim, claim.kept_alive():  # renewed while the unit runs, however long it takes
                overall.set_postfix_str(f"{unit.model} {unit.revision} ({len(unit.subjects)} subj.)")
                log.info("unit %s (%s %s): computing", key[:12], unit.model, unit.revision)
                arrays, dims, meta, names = _fit(plan, unit, feats, bars)
                try:
                    claim.renew()
                except ClaimLost:  # this process was stalled past its lease: write anyway, first writer wins
                    log.warning("unit %s: the claim lapsed while computing (another process may compute it "
                                "too); the first finished copy is kept", key[:12])
                written = store.write_unit(key, arrays, _labels(plan, unit, names), meta, dims=dims)
            (computed if written else reused).append(key)
            overall.update(1)
            log.info("unit %s (%s %s) done in %.1f s", key[:12], unit.model, unit.revision, meta["seconds"])
        if waiting and len(waiting) != told:  # once per change, not every poll
            log.info("%d unit(s) held by other processes: waiting", len(waiting))
            told = len(waiting)
        pending = waiting
        if pending:
            time.sleep(_WAIT_S)
    group = None
    group_keys = sorted(set(plan.group_keys.values())) if "stats" in stages else []
    if group_keys:
        # the group units depend on every fit and share one FDR family: one process computes them all,
        # under one claim; the others wait (taking the claim over if its holder dies)
        stats_claim = "stats-" + settings_hash({"group_units": group_keys})
        told = False
        while any(not store.is_done(k) for k in group_keys):
            claim = store.claim(stats_claim, lease_seconds)
            if claim is None:
                if not told:
                    log.info("the group units are being computed by another process: waiting")
                    told = True
                time.sleep(_WAIT_S)
                continue
            with claim, claim.kept_alive():
                for key, arrays, labels, meta, dims in _group_units(plan, store):
                    if store.write_unit(key, arrays, labels, meta, dims=dims):
                        computed.append(key)
        reused += [k for k in group_keys if k not in computed]
        overall.update(len(group_keys))
    overall.close()
    if not outputs:  # a worker of a job array: the launching process writes the tables and figures
        return RunSummary(plan.out, computed, reused, feats.loaded_models, None, [], time.perf_counter() - t0,
                          None, cfg.stats.fdr_alpha)
    keys = [u.key for u in plan.fits] + group_keys
    results = load_results(store.root, keys=keys)
    table = results.table
    files = _write_outputs(plan, table) if writer else []
    if group_keys:
        group = _group_table(table)
    compared = _compare(cfg, table)
    if writer and compared:
        files += _write_compare(plan.out, compared)
    removal = _removal_table(cfg, table)
    if writer and removal is not None:
        files += _write_removal(plan, removal)
    summary = RunSummary(plan.out, computed, reused, feats.loaded_models, table, files,
                         time.perf_counter() - t0, group, cfg.stats.fdr_alpha, compare=compared, removal=removal)
    if writer:
        atomic_write_text(plan.out / "results.json", json.dumps(_json_summary(plan, summary), indent=1))
        summary.files.append(plan.out / "results.json")
    _collective.barrier("jaxalign-run-study-end")  # nobody leaves before the outputs are written
    return summary


def _write_geometry(plan: _Plan) -> None:
    """Where the targets are, for maps of the results: ``<out>/geometry/<subject>_mask.nii.gz`` (NIfTI
    voxels: the mask whose True voxels, in C order, are the targets, with its affine) and
    ``<subject>-info.fif`` (MNE channel info: names, positions). Written once, atomically."""
    folder = plan.out / "geometry"
    for subject, rec in plan.dataset.recordings.items():
        if rec.mask is not None and rec.affine is not None:
            path = folder / f"{subject}_mask.nii.gz"
            if not path.is_file():
                import nibabel as nib

                folder.mkdir(exist_ok=True)
                img = nib.Nifti1Image(np.asarray(rec.mask, np.uint8), np.asarray(rec.affine, np.float64))
                atomic_write(path, lambda f, img=img: f.write(gzip.compress(img.to_bytes())))
        info = rec.channel_info
        if info is not None and type(info).__module__.startswith("mne"):
            path = folder / f"{subject}-info.fif"
            if not path.is_file():
                import mne

                folder.mkdir(exist_ok=True)
                tmp = folder / f".{subject}.{os.getpid()}.tmp-info.fif"
                mne.io.write_info(tmp, info, overwrite=True)
                os.replace(tmp, path)


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


def _write_outputs(plan: _Plan, table) -> list[Path]:
    files = []
    formats = plan.cfg.output.formats
    if "csv" in formats:
        atomic_write_text(plan.out / "results.csv", table.to_csv(index=False))
        files.append(plan.out / "results.csv")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            log.warning("output.formats: parquet needs pyarrow (pip install 'jaxalign[results]'): skipped")
        else:
            atomic_write(plan.out / "results.parquet", lambda f: table.to_parquet(f, index=False))
            files.append(plan.out / "results.parquet")
    if "png" in formats or "nifti" in formats:
        try:
            from jaxalign.studies import report
        except ImportError:  # pragma: no cover - the module ships with the package
            report = None
        if report is not None and hasattr(report, "make_report"):
            files += list(report.make_report(plan.out / "store", out=plan.out / "figures",
                                             formats=[f for f in ("png", "nifti") if f in formats]))
        files += sorted((plan.out / "details").glob("*/*.png")) if (plan.out / "details").is_dir() else []
    return files


def _group_table(table) -> dict:
    """{feature set label: {target: (mean r, p, p_fdr, p_vs_baseline_fdr)}} from the group rows."""
    rows = table[table["subject"] == GROUP]
    out = {}
    for _, row in rows.iterrows():
        name = _row_name(row)
        out.setdefault(name, {})[row["target"]] = {
            k: (None if k not in row or (isinstance(row[k], float) and np.isnan(row[k])) else float(row[k]))
            for k in ("score", "sem", "p", "p_fdr", "p_vs_baseline", "p_vs_baseline_fdr")}
    return out


def _row_name(row) -> str:
    if row["feature_set"] == "baseline":
        return BASELINE_MODEL
    if row["feature_set"] == "control":
        return CONTROL_MODEL
    rev = "" if row["revision"] in ("main", NO_REVISION) else f"@{row['revision']}"
    if row.get("features") == "surprisal":
        return f"{row['model']}{rev} surprisal"
    return f"{row['model']}{rev} layer {int(row['layer'])}"


def _json_summary(plan: _Plan, s: RunSummary) -> dict:
    from jaxalign import __version__

    return {
        "study": plan.cfg.to_dict(),
        "settings_hash": plan.cfg.hash_settings(),
        "dataset": {"kind": plan.dataset.kind, "subjects": plan.dataset.subjects,
                    "skipped": plan.dataset.info.get("skipped", {}),
                    "source": plan.dataset.info.get("source", "files"),
                    "planted": plan.dataset.info.get("planted")},
        "models": [{"model": r.label, "revision": r.revision, "source": str(r.source.path), "layers": r.layers,
                    "features_key": r.features_key} for r in plan.models],
        "units": {"computed": s.computed, "reused": s.reused},
        "group": s.group,
        "compare": None if not s.compare else {name: json.loads(res.to_json(orient="records"))
                                                for name, res in s.compare.items()},
        "removal": None if s.removal is None else {
            "test": s.removal.attrs["test"], "fdr": s.removal.attrs["fdr"], "labels": plan.label_source,
            "removal": REMOVAL, "rows": json.loads(s.removal.to_json(orient="records"))},
        "seconds": s.seconds,
        "jaxalign": __version__,
    }


def format_summary(summary: RunSummary, max_targets: int = 8) -> str:
    """The table printed at the end of a run: group rows when there are some, else per subject."""
    table = summary.table
    if "feature_set" in table.columns:  # the removal units: their own lines, below
        table = table[table["feature_set"] != REMOVED]
    group = table[table["subject"] == GROUP]
    rows = group if len(group) else table
    order = {"baseline": 0, "model": 1, "control": 2}
    rows = rows.assign(_order=rows["feature_set"].map(order).fillna(1)).sort_values("_order", kind="stable")
    targets = list(dict.fromkeys(rows["target"]))
    has_p = "p_fdr" in rows.columns
    head = (f"{summary.out}: {len(summary.computed)} unit(s) computed, {len(summary.reused)} reused, "
            f"{summary.models_loaded} model(s) loaded, {summary.seconds:.0f} s")
    lines = [head]
    has_base = "p_vs_baseline_fdr" in rows.columns and rows["p_vs_baseline_fdr"].notna().any()
    surprisal = "features" in rows.columns and (rows["features"] == "surprisal").all()
    if surprisal:
        lines.append(f"Pearson r of surprisal with the reading time (no fit; * FDR < {summary.fdr_alpha})")
    elif len(group) and "n_subjects" in group.columns:
        n = int(group["n_subjects"].max())
        lines.append(f"held-out r, mean over {n} subjects (* FDR < {summary.fdr_alpha})"
                     + ("; '>base': targets where the layer beats the baseline after FDR" if has_base else ""))
    windowed = "window" in rows.columns and rows["window"].notna().any()
    if len(targets) <= max_targets and not windowed:
        names = []
        for _, row in rows.iterrows():
            name = _row_name(row) + ("" if len(group) else f" {row['subject']}")
            if name not in names:
                names.append(name)
        width = max(12, max(len(n) for n in names) + 2)
        lines.append(f"{'':<{width}}" + "".join(f"{t:>10}" for t in targets) + ("  >base" if has_base else ""))
        cells: dict = {}
        for _, row in rows.iterrows():
            name = _row_name(row) + ("" if len(group) else f" {row['subject']}")
            star = "*" if has_p and np.isfinite(row.get("p_fdr", np.nan)) and row["p_fdr"] < summary.fdr_alpha else " "
            cells.setdefault(name, {})[row["target"]] = f"{row['score']:>9.3f}{star}"
            vs = row.get("p_vs_baseline_fdr", np.nan)
            if isinstance(vs, float) and np.isfinite(vs):
                cells[name].setdefault("_vs", []).append(vs < summary.fdr_alpha)
        for name in names:
            c = cells[name]
            vs = c.get("_vs")
            tail = "" if not vs else f"  {sum(vs)}/{len(vs)}"
            lines.append(f"{name:<{width}}" + "".join(c.get(t, f"{'':>10}") for t in targets) + tail)
    else:
        per = rows.groupby(["model", "revision", "layer", "subject"], sort=False)
        what = "windows x targets" if windowed else "targets"
        lines.append(f"one line per layer and subject, over {what}: mean and max held-out r"
                     + (", the max's window (s after onset)" if windowed else "")
                     + (f", how many have FDR p < {summary.fdr_alpha}" if has_p else ""))
        lines.append(f"{'':<40}{'mean r':>9}{'max r':>9}" + (f"{'window':>8}" if windowed else "")
                     + (f"{'FDR<a':>8}" if has_p else ""))
        for (model, revision, layer, subject), g in per:
            sig = f"{int((g['p_fdr'] < summary.fdr_alpha).sum()):>8}" if has_p else ""
            peak = g.loc[g["score"].idxmax()]
            win = f"{peak['window']:>8.3f}" if windowed else ""
            lines.append(f"{f'{model} {revision} layer {layer} {subject}':<40}{g['score'].mean():>9.3f}"
                         f"{g['score'].max():>9.3f}{win}{sig}")
    for name, res in (summary.compare or {}).items():
        counts = res["direction"].value_counts()
        lines.append(f"{name} vs {res.attrs['base']}: r changed in {counts.get('better', 0)} (up) and "
                     f"{counts.get('worse', 0)} (down) of {len(res)} layer x target tests (sign flips over "
                     f"{int(res['n_listeners'].iloc[0])} subjects, {res.attrs['fdr'].upper()} FDR < "
                     f"{res.attrs['alpha']}); mean change {res['change'].mean():+.4f}")
    if summary.removal is not None:
        lines += _removal_lines(summary.removal)
    return "\n".join(lines)


def _removal_lines(removal) -> list[str]:
    """format_summary's removal block: per model and layer, each property's change in mean r (* FDR)."""
    rows = removal[removal["target"] == "mean"]
    props = list(dict.fromkeys(rows["property"]))
    a = removal.attrs
    lines = [f"property removal: change in mean r over targets, residual - original ({a['test']}, "
             f"{a['fdr'].upper()} FDR < {a['alpha']}: *)"]
    width = max(12, max(len(p) for p in props) + 1)
    lines.append(f"{'':<28}" + "".join(f"{p:>{width}}" for p in props))
    for (model, revision, layer), g in rows.groupby(["model", "revision", "layer"], sort=False):
        rev = "" if revision in ("main", NO_REVISION) else f"@{revision}"
        cells = {r["property"]: f"{r['change']:+.4f}{'*' if r['significant'] else ' '}" for _, r in g.iterrows()}
        lines.append(f"{f'{model}{rev} layer {int(layer)}':<28}"
                     + "".join(f"{cells.get(p, ''):>{width}}" for p in props))
    return lines


