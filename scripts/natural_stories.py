"""Natural Stories self-paced reading (Futrell et al. 2018): LM surprisal vs reading time.

SmolLM2-135M-Instruct surprisal (bits per word, whole story so far as
context) against the mean reading time over readers, first words of
sentences excluded; Pearson r with a 95% bootstrap CI over words, per story
and pooled. The pipeline lives in :mod:`jaxalign.studies.natural_stories`
(its docstring lists every step and setting); this script is its command
line.

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
import logging
import sys
from pathlib import Path

from jaxalign.studies.natural_stories import DEFAULT_ROOT, analyse, format_summary


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
    print("\n" + format_summary(res))
    print(f"\nwrote {Path(args.out) / 'results.json'}, per_word.tsv and surprisal_rt.png")
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")  # other libraries: warnings and up
    logging.getLogger("jaxalign").setLevel(logging.INFO)  # the study's progress lines
    sys.exit(main())
