"""Natural Stories: linguistic properties probed in, and removed from, SmolLM2's hidden states.

Gold-parse labels of the eight properties of the Pythia study (METHODS.md
section 5) for every word of stories 1-3; probe accuracy before and after
removing each property (one-hot ridge residuals), per property and layer
(every 3rd hidden state by default), chance and the study's criterion of a
successful removal; and the held-out r of a ridge from each layer's original
and residual features to the mean reading time. The pipeline lives in
:mod:`jaxalign.studies.natural_stories_probing` (its docstring lists every
step and setting); this script is its command line.

Writes ``results.csv`` (one row per property x layer x removal: accuracy
before / after, chance, removed, alignment before / after / change),
``removal_effects.png`` and ``settings.json`` to ``--out``; ``--replot``
redraws the figure from those files. ``--agreement`` only compares the
labels of spaCy's parser with the gold ones (binned agreement, Cohen's kappa,
raw agreement per property; gold and spaCy's own sentence boundaries; needs
``pip install "jaxalign[parse]"``), prints the table and writes it to
``--out``/``parser_agreement.csv``.

Run: ``python scripts/probing_natural_stories.py`` (all eight properties,
layers 0, 3, ..., 30 of SmolLM2-135M; ``--properties tense,pos`` and
``--layers 0,15`` for a quick look; ``--removal both`` adds the leak-free
removal fitted inside each outer fold).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from jaxalign.studies.natural_stories import DEFAULT_ROOT
from jaxalign.studies.natural_stories_probing import (
    DEFAULT_LAYER_STEP,
    analyse,
    format_agreement,
    format_table,
    parser_agreement,
    replot,
)


def _ints(text, what):
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--{what} takes comma-separated integers, got {text!r}") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(DEFAULT_ROOT),
                    help="folder with processed_wordinfo*.tsv, all_stories*.tok and parses/")
    ap.add_argument("--out", default="out/probing_natural_stories")
    ap.add_argument("--model", default=None,
                    help="causal LM path for jaxalign.lm.load (default: packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--max-length", type=int, default=None,
                    help="context window in tokens (default 8192 for SmolLM2, else the model's own)")
    ap.add_argument("--layer-step", type=int, default=DEFAULT_LAYER_STEP,
                    help="every k-th hidden state from 0 (the embeddings)")
    ap.add_argument("--layers", default=None, help="comma-separated hidden states (overrides --layer-step)")
    ap.add_argument("--properties", default=None,
                    help="comma-separated properties (default all eight: sentence_length, tree_depth, "
                         "top_constituents, tense, subject_number, object, pos, smallest_constituent; "
                         "'' for none, with --random-controls)")
    ap.add_argument("--random-controls", type=int, default=0,
                    help="add K control properties random_1..K: a random 0/1 label per sentence")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random controls")
    ap.add_argument("--stories", default=None, help="comma-separated story ids (default: all)")
    ap.add_argument("--removal", default="all", choices=["all", "fold", "both"],
                    help="fit the removal on all words (published), inside each outer fold, or both")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="the probe solver's float type")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw removal_effects.png from --out's results.csv and settings.json")
    ap.add_argument("--agreement", action="store_true",
                    help="only compare spaCy's labels with the gold ones (needs jaxalign[parse])")
    args = ap.parse_args(argv)
    if args.agreement:
        t0 = time.time()
        table = parser_agreement(
            args.root, stories=None if args.stories is None else _ints(args.stories, "stories"))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "parser_agreement.csv", index=False, float_format="%.6g")
        print(format_agreement(table))
        print(f"\nwrote {out / 'parser_agreement.csv'} ({time.time() - t0:.0f} s)")
        return 0
    if args.replot:
        print(f"wrote {replot(Path(args.out))}")
        return 0
    t0 = time.time()
    table = analyse(
        args.root, Path(args.out), model_path=args.model, max_length=args.max_length,
        layers=None if args.layers is None else _ints(args.layers, "layers"),
        layer_step=args.layer_step,
        properties=None if args.properties is None else [p for p in args.properties.split(",") if p],
        stories=None if args.stories is None else _ints(args.stories, "stories"),
        removal=("all", "fold") if args.removal == "both" else args.removal, dtype=args.dtype,
        random_controls=args.random_controls, seed=args.seed)
    print("\n" + format_table(table))
    print(f"\nwrote {Path(args.out) / 'results.csv'}, removal_effects.png and settings.json "
          f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("jaxalign").setLevel(logging.INFO)
    sys.exit(main())
