"""``encode``: one stimulus, one fMRI recording, one encoding analysis, as a function call.

The library entry point under the CLI (issue 11) for people who script::

    from jaxalign import io, lm
    from jaxalign.studies import StudyConfig, encode

    model = lm.load(lm.packaged_model("SmolLM2-135M-Instruct"))     # (model, tokenizer)
    cfg = StudyConfig.from_toml("study.toml")                        # or None: defaults
    res = encode(stimulus, recording, model, layers=[0, 6, 12], config=cfg)
    res.r, res.p_fdr, res.to_xarray()

The config's sections decide every step, exactly as a study file would:
``[features]`` (pooling, context) makes per-word hidden states of the
``layers``; ``[timing]`` (fmri) averages (or Lanczos-resamples) them per TR
at the recording's scan times, adds the FIR delays (never across runs),
trims run edges and z-scores per run; ``[encoding]`` (ridge) fits the nested
ridge CV with its outer/inner splitters, penalties and standardization;
``[stats]`` tests each target with :func:`jaxalign.stats.cv_permutation_test`
(the valid test of a nested-CV score on one recording) and corrects over all
layers x targets with BH / BY FDR.

Word-locked MEG (``recording.kind == "meg"``, epochs (words, channels,
time) with ``sfreq``, and ``[timing] kind = "meg"``): each word's own
features (no delays) against every channel's mean in each time window after
onset; the windows are flattened into targets inside the library
(``timing.windows_to_targets``), fitted in one multi-target pass, and every
result comes back per window, (layers, windows, channels), with the FDR over
layers x windows x channels. Continuous and behavioural recordings are
refused with a ValueError naming the recording's kind.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass

import numpy as np

from jaxalign.studies.config import StudyConfig

__all__ = ["EncodeResult", "encode"]


@dataclass(frozen=True)
class EncodeResult:
    """Held-out scores and their tests, per layer x target.

    Attributes
    ----------
    r : (n_layers, n_targets) mean over outer folds of the held-out Pearson r
        (``nested_cv(...).fold_scores.mean(-2)``, the statistic
        ``cv_permutation_test`` tests); MEG: (n_layers, n_windows, n_targets).
    p, p_fdr : like ``r``: permutation p-values and their FDR adjustment
        over all layers x (windows x) targets; None with stats test "none".
    reject : like ``r``, bool, ``p_fdr <= stats.fdr_alpha``; None with stats
        test "none".
    best_alphas : (n_layers, n_folds, [n_windows,] n_targets) penalty chosen in
        each outer fold.
    layers : tuple of the hidden-state indices (or the labels of given features).
    target_names : tuple of str, the recording's target names (MEG: channels).
    settings : dict, the config sections used (for provenance) and their hash.
    windows : MEG: tuple of each window's start (s after word onset); else None.
    """

    r: np.ndarray
    p: np.ndarray | None
    p_fdr: np.ndarray | None
    reject: np.ndarray | None
    best_alphas: np.ndarray
    layers: tuple
    target_names: tuple
    settings: dict
    windows: tuple | None = None

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims (layer, [window,] target) (and fold for ``best_alphas``).

        ``settings`` is kept as JSON text in ``attrs["settings"]`` (netCDF
        attributes cannot hold nested dicts).
        """
        import xarray as xr

        dims = ("layer", "target") if self.windows is None else ("layer", "window", "target")
        data = {"r": (dims, self.r)}
        for name in ("p", "p_fdr", "reject"):
            value = getattr(self, name)
            if value is not None:
                data[name] = (dims, value)
        data["best_alphas"] = ((dims[0], "fold") + dims[1:], self.best_alphas)
        coords = {"layer": list(self.layers), "target": list(self.target_names),
                  "fold": np.arange(self.best_alphas.shape[1])}
        if self.windows is not None:
            coords["window"] = list(self.windows)
        return xr.Dataset(data, coords=coords, attrs={"settings": json.dumps(self.settings, sort_keys=True)})


def _default_config(kind: str = "fmri") -> StudyConfig:
    # one recording: the per-target refitted permutation test, not the group sign flip;
    # the drift fitted on each outer training set (the schema's default)
    cfg = StudyConfig().updated({"stats": {"test": "cv_permutation"}})
    if kind == "meg":  # the Harry Potter MEG windows: 20 x 25 ms after onset (the dataset: the recording given)
        cfg = cfg.updated({"dataset": {"kind": "mne", "path": "(the recording given to encode)"},
                           "timing": {"kind": "meg"}})
    return cfg


def _check_config(cfg: StudyConfig, kind: str = "fmri") -> None:
    if not isinstance(cfg, StudyConfig):
        raise TypeError(f"config must be a StudyConfig or None, got {type(cfg).__name__}")
    if cfg.timing.kind != kind:
        raise ValueError(f"timing.kind: a recording of kind {kind!r} needs timing {kind!r} "
                         f"([timing] kind = \"{kind}\"), the config has {cfg.timing.kind!r}")
    if cfg.encoding.method != "ridge":
        raise ValueError(f"encoding.method: encode fits ridge only, the config has {cfg.encoding.method!r}")
    enc = cfg.encoding
    if enc.confounds:
        raise ValueError(f"encoding.confounds: encode takes no confound regressors yet, the config names "
                         f"{enc.confounds} (remove them, or regress them out of the recording first)")
    if cfg.features.baseline != "none" or cfg.features.control != "none":
        raise ValueError("features.baseline / features.control: encode fits the given layers only; set both "
                         "to 'none'")
    test = cfg.stats.test
    if test not in ("cv_permutation", "none"):
        raise ValueError(f"stats.test: {test!r} is a group-level test over several subjects' scores; one "
                         "recording is tested with 'cv_permutation' (or 'none' for r only)")


def _layer_list(layers):
    try:
        return [operator.index(x) for x in layers]
    except TypeError:
        raise TypeError(f"layers must be a sequence of integers, got {layers!r}") from None


def _design(per_word, stimulus, times, timing_cfg, runs):
    """(L, n_words, dim) word features -> (L, n_trs, n_delays * dim) at the scans, delayed within runs.

    When the words and the scans both carry runs, each run's words go to that
    run's scans only (NIfTI runs restart their clock at 0; a global
    assignment would pool run 2's words into run 1's scans).
    """
    return word_design(per_word, stimulus, times, runs, timing_cfg)


def word_design(per_word, stimulus, times, runs, timing_cfg, *, counts: bool = False):
    """Per-scan word features (or, with ``counts``, words per scan) with FIR delays, run by run.

    ``per_word`` (L, n_words, dim); ``times``/``runs`` of the scans (runs may
    be None). Returns (L, n_scans, n_delays * dim) float64.
    """
    from jaxalign import timing

    per_word = np.asarray(per_word)
    onsets = np.asarray(stimulus.onsets, np.float64)
    times = np.asarray(times, np.float64)
    if counts:
        per_word = np.zeros((1, len(onsets), 1))

    def resample(feats, word_times, scan_times):
        if counts:
            _, c = timing.average_per_tr(feats[0], word_times, scan_times, return_counts=True)
            return c.astype(np.float64)[None, :, None]
        if timing_cfg.method == "lanczos":
            return timing.lanczos_resample(feats, word_times, scan_times, window=timing_cfg.lanczos_window or 3,
                                           cutoff=timing_cfg.lanczos_cutoff)
        return timing.average_per_tr(feats, word_times, scan_times)

    if stimulus.runs is not None and runs is not None:
        runs = np.asarray(runs)
        word_runs = np.asarray(stimulus.runs)
        X = np.zeros(per_word.shape[:1] + (len(times), 1 if counts else per_word.shape[-1]))
        for r in np.unique(runs):
            scans, words = runs == r, word_runs == r
            X[:, scans] = resample(per_word[:, words], onsets[words], times[scans])
    else:
        X = resample(per_word, onsets, times)
    return timing.fir_delays(X, timing_cfg.delays, runs, axis=-2)


def encode(stimulus, recording, model=None, layers=None, *, features=None, config=None,
           progress=False) -> EncodeResult:
    """Fit and test an encoding model of one fMRI or word-locked MEG recording from LM layers, as a
    study config says.

    ``recording.kind`` "fmri": targets sampled at scan times
    ``recording.times`` (optional ``recording.runs``). "meg": word-locked
    epochs (words, channels, time) with ``sfreq`` (and ``epoch_times``), one
    per stimulus word; results per window (see the module docstring).
    Continuous and behavioural recordings raise a ValueError.

    Parameters
    ----------
    stimulus : io.Stimulus with ``onsets`` on the recording's clock.
    recording : io.Recording of kind "fmri", (n_trs, n_targets).
    model : (model, tokenizer) as returned by ``jaxalign.lm.load``; the
        ``[features]`` section (hidden_states: pooling, context,
        context_size, max_length) makes the per-word features. None when
        ``features`` is given.
    layers : hidden-state indices (0 = embeddings, negative from the end);
        None = the config's ``layers``. With ``features``: labels of its
        layers (default 0, 1, ...).
    features : (n_layers, n_words, dim) per-word features instead of a model.
    config : StudyConfig, or None for the defaults with stats test
        "cv_permutation" (one recording; MEG: timing "meg", 20 windows of
        25 ms); the drift (``encoding.detrend``)
        is fitted on each outer training set (``confound_fit = "train"``)
        or once on the whole series (``"whole_series"``).
        Its ``[timing]`` must match the recording ("fmri" or "meg"), ``[encoding]`` ridge, ``[stats]``
        test "cv_permutation" or "none".
    progress : progress bars of the feature extraction and the permutations.

    Returns
    -------
    EncodeResult (``.to_xarray()`` for a labelled Dataset).

    Raises
    ------
    ValueError
        Before any fit: a recording that is not fMRI, stimulus without onsets,
        a layer beyond the model (``layers: ...``), features whose word count
        does not match the stimulus, non-finite features, a recording with
        fewer samples than outer folds, settings encode does not support.
    """
    from jaxalign import io, ridge, stats, timing

    if not isinstance(recording, io.Recording):
        raise TypeError(f"recording must be an io.Recording, got {type(recording).__name__}")
    if not isinstance(stimulus, io.Stimulus):
        raise TypeError(f"stimulus must be an io.Stimulus, got {type(stimulus).__name__}")
    meg = recording.kind == "meg"
    cfg = _default_config(recording.kind) if config is None else config
    if recording.kind not in ("fmri", "meg"):
        raise ValueError(f"encode handles fMRI and word-locked MEG recordings; this recording is of kind "
                         f"{recording.kind!r} (behaviour: jaxalign.analysis.reading)")
    if meg:
        if recording.data.ndim != 3 or recording.sfreq is None:
            raise ValueError(f"the MEG recording must be word-locked epochs (words, channels, time) with sfreq, "
                             f"got shape {recording.data.shape} and sfreq {recording.sfreq} (continuous MEG: "
                             "epoch it at the word onsets first, e.g. io.read_mne_epochs)")
        if recording.data.shape[0] != len(stimulus):
            raise ValueError(f"the MEG recording has {recording.data.shape[0]} epochs, the stimulus "
                             f"{len(stimulus)} words: one epoch per word")
    elif recording.data.ndim != 2:
        raise ValueError(f"the fMRI recording must be (n_trs, n_targets), got shape {recording.data.shape}")
    if not meg and stimulus.onsets is None:
        raise ValueError("stimulus has no onsets: fMRI features are placed at the scans by word onset")
    _check_config(cfg, recording.kind)
    enc, tcfg, scfg = cfg.encoding, cfg.timing, cfg.stats

    n_trs, n_targets = recording.data.shape[:2]
    runs = np.zeros(n_trs, np.int64) if recording.runs is None else np.asarray(recording.runs)
    trim = (tcfg.trim_start, tcfg.trim_end) if not meg else (0, 0)
    grid = None  # (times, runs, rows kept) when the array comes trimmed: features and delays on every scan
    if recording.info.get("trimmed") and recording.info.get("full_times") is not None:
        if tuple(recording.info.get("trim") or ()) != trim:
            raise ValueError(f"timing.trim_start / trim_end: the recording comes trimmed by "
                             f"{tuple(recording.info['trim'])} TRs per run; set the same values (the config has "
                             f"{trim})")
        full_runs = np.asarray(recording.info["full_runs"])
        grid = (np.asarray(recording.info["full_times"], np.float64), full_runs, timing.trim_mask(full_runs, *trim))
        trim = (0, 0)
    keep = timing.trim_mask(runs, *trim)
    n = int(keep.sum())
    groups = runs[keep]
    if enc.outer.kind == "group":
        n_groups = len(np.unique(groups))
        need = enc.outer.effective_n_splits or 2
        if n_groups < need:
            raise ValueError(f"encoding.outer: group folds need >= {need} runs, the recording has {n_groups}")
    n_folds = enc.outer.effective_n_splits
    if n_folds is not None and enc.outer.kind != "shuffle" and n < n_folds:
        raise ValueError(f"the recording has {n} samples (after trimming), fewer than the "
                         f"{n_folds} outer folds (encoding.outer.n_splits)")

    # ------------------------------------------------------ features, checked
    if (model is None) == (features is None):
        raise ValueError("give exactly one of model (a (model, tokenizer) pair) and features")
    if features is not None:
        per_word = np.asarray(features)
        if per_word.ndim != 3:
            raise ValueError(f"features must be (n_layers, n_words, dim), got shape {per_word.shape}")
        if per_word.shape[1] != len(stimulus):
            raise ValueError(f"features have {per_word.shape[1]} words, the stimulus has {len(stimulus)}")
        labels = list(range(per_word.shape[0])) if layers is None else _layer_list(layers)
        if len(labels) != per_word.shape[0]:
            raise ValueError(f"layers has {len(labels)} labels for {per_word.shape[0]} feature layers")
        source = {"features": "given", "shape": list(per_word.shape)}
    else:
        from jaxalign import features as feats
        from jaxalign import lm

        try:
            lm_model, tokenizer = model
        except (TypeError, ValueError):
            raise TypeError("model must be the (model, tokenizer) pair returned by jaxalign.lm.load") from None
        fcfg = cfg.features
        if fcfg.kind != "hidden_states":
            raise ValueError(f"features.kind: encode uses hidden states, the config has {fcfg.kind!r}")
        n_layers = lm.model_facts(lm_model).n_states - 1
        chosen = cfg if layers is None else cfg.updated({"layers": _layer_list(layers)})
        labels = chosen.resolved_layers(n_layers)
        per_word = np.asarray(feats.word_features(
            lm_model, tokenizer, list(stimulus.words), pooling=fcfg.pooling, context=fcfg.context,
            layers=labels, context_size=fcfg.context_size, min_context=fcfg.min_context,
            max_length=fcfg.max_length, progress=progress))
        source = {"features": fcfg._canonical(), "model": type(lm_model).__name__, "n_model_layers": n_layers}
    bad = ~np.isfinite(per_word).all(axis=(0, 2))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} word(s) have non-finite features (e.g. words skipped by "
                         "min_context): they cannot be averaged into TRs")

    # ------------------------------------------------------ design and targets
    windows = None
    if meg:  # one sample per word: the word's own vector, no delays
        X = np.asarray(per_word, np.float64)
        tmin = float(recording.epoch_times[0]) if recording.epoch_times is not None else 0.0
        try:
            Yw = timing.word_locked_windows(recording.data, recording.sfreq, n_windows=tcfg.n_windows,
                                            width=tcfg.width, start=tcfg.start, tmin=tmin)
        except ValueError as error:
            raise ValueError(f"timing: windows {tcfg.start}..{tcfg.stop} s of {tcfg.width} s do not fit the "
                             f"epochs ({tmin:g} s from onset, {recording.data.shape[2]} samples at "
                             f"{recording.sfreq:g} Hz): {error}") from None
        windows = tuple(round(tcfg.start + k * tcfg.width, 6) for k in range(Yw.shape[0]))
        Y = timing.windows_to_targets(Yw).astype(np.float64)  # (words, windows x channels)
    elif grid is None:
        X = _design(per_word, stimulus, recording.times, tcfg, runs)[:, keep]
    else:
        X = _design(per_word, stimulus, grid[0], tcfg, grid[1])[:, grid[2]]
    X = timing.zscore_per_run(X, groups, axis=-2)
    if not meg:
        Y = np.asarray(recording.data, np.float64)
    fold_targets = None
    if enc.detrend != "none" and enc.confound_fit == "whole_series":
        Y = timing.detrend(Y, runs, kind=enc.detrend, order=enc.detrend_order)
    elif enc.detrend != "none":  # fitted on each outer training set, applied to its test set
        fold_targets = timing.fold_residualizer(
            timing.nuisance_design(n, groups, kind=enc.detrend, order=enc.detrend_order))
    Y = timing.zscore_per_run(Y[keep], groups)

    alphas = enc.alpha_grid()
    outer, inner = enc.outer_splitter(), enc.inner_splitter()
    use_groups = groups if "group" in (enc.outer.kind, enc.inner.kind) else None
    common = dict(groups=use_groups, fit_intercept=enc.fit_intercept, standardize=enc.standardize_arg,
                  fold_targets=fold_targets)
    res = ridge.nested_cv(X, Y, alphas, outer, inner, scoring=enc.scoring, **common)
    r = np.asarray(res.fold_scores, np.float64).mean(axis=-2)
    best = np.asarray(res.best_alphas, np.float64)

    p = p_fdr = reject = None
    if scfg.test == "cv_permutation":
        if enc.scoring != "pearson":
            raise ValueError(f"stats.test 'cv_permutation' tests the held-out Pearson r; encoding.scoring is "
                             f"{enc.scoring!r}")
        perm = stats.cv_permutation_test(
            X, Y, alphas, outer, inner, n_permutations=scfg.n_permutations, scheme=scfg.effective_scheme,
            block_size=scfg.block_size, alternative=scfg.alternative, seed=scfg.seed, tail=scfg.tail_arg,
            progress=progress, **common)
        p = np.asarray(perm.p, np.float64)
        reject, p_fdr = stats.fdr_correction(p, alpha=scfg.fdr_alpha, method=scfg.fdr)
        reject, p_fdr = np.asarray(reject, bool), np.asarray(p_fdr, np.float64)

    if meg:  # (..., windows x channels) -> (..., windows, channels)
        W = len(windows)
        r, best = timing.targets_to_windows(r, W), timing.targets_to_windows(best, W)
        if p is not None:
            p, p_fdr, reject = (timing.targets_to_windows(a, W) for a in (p, p_fdr, reject))
    names = recording.target_names or tuple(str(i) for i in range(n_targets))
    settings = {
        "source": source,
        "layers": list(labels),
        "timing": tcfg._canonical(),
        "encoding": enc._canonical(),
        "stats": scfg._canonical(),
        "settings_hash": cfg.hash_settings("features", "timing", "encoding", "stats"),
        "n_samples": n,
        "n_words": len(stimulus),
    }
    return EncodeResult(r=r, p=p, p_fdr=p_fdr, reject=reject, best_alphas=best, layers=tuple(labels),
                        target_names=tuple(names), settings=settings, windows=windows)
