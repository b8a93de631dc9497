"""Base vs fine-tuned SmolLM2 on the Alice fMRI: did fine-tuning change brain alignment?

The MEG study's question (Zhou et al. 2024: fine-tuning on PIQA / Social IQa
made models predict MEG better) asked of the Alice fMRI (Brennan et al.
2016) instead. The study layer's Alice protocol (``examples/alice.toml``:
every listener, 6 ROIs, TR averaging, FIR delays 1-4, confounds regressed out
within the folds, one nested ridge CV per model and layer) is run on the base
model and on each fine-tuned model, in one results store (the base model's
units are computed once and reused by later runs; a killed run resumes). Then
per tuned model, layer and ROI: the paired sign-flip test over listeners of
r(tuned) - r(base), two-sided, Benjamini-Hochberg over layers x ROIs (the
study file's ``[compare]`` section, which this script adds;
:func:`jaxalign.analysis.compare.listener_change`).

Writes to ``--out``: the study's own outputs (``results.csv``,
``results.json``, figures, ``store/``) and ``compare/<name>_vs_base.csv``
(per layer and ROI: mean r of both models, the change, its s.e.m.,
listeners better, p, p_fdr, direction) and ``.png``.

Run (after ``jaxalign finetune examples/finetune_piqa.toml``)::

    .venv/bin/python scripts/finetuned_alice.py --tuned piqa=out/finetune_piqa/model \
        --tuned siqa=out/finetune_siqa/model --out out/finetuned_alice

``--config`` takes another study file (its models are replaced by the base
and the tuned ones); ``--base PATH`` another base model (default: the packaged
SmolLM2-135M-Instruct, the weights fine-tuning starts from).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from jaxalign.studies import StudyConfig
from jaxalign.studies.runner import run_study

REPO = Path(__file__).resolve().parents[1]
BASE_NAME = "base"


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--tuned takes NAME=PATH (e.g. piqa=out/finetune_piqa/model), got {text!r}")
    if name == BASE_NAME:
        raise argparse.ArgumentTypeError(f"the name {BASE_NAME!r} is the base model's")
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"--tuned {name}: {p} does not exist (a folder jaxalign finetune exported)")
    return name, p


def study_config(config: Path, tuned: list[tuple[str, Path]], out: Path, base: Path | None = None, *,
                 n_permutations: int = 10000, seed: int = 0) -> StudyConfig:
    """``config`` with its models replaced by the base model and the tuned ones, a ``[compare]`` section
    (each tuned model against the base) and its output folder ``out``."""
    base_model = {"name": BASE_NAME, **({"path": str(base)} if base else {"packaged": "SmolLM2-135M-Instruct"})}
    cfg = StudyConfig.from_toml(config)
    data = cfg.to_dict()
    data["models"] = [base_model] + [{"name": n, "path": str(p)} for n, p in tuned]
    data["compare"] = {"base": BASE_NAME, "tuned": [n for n, _ in tuned], "n_permutations": n_permutations,
                       "seed": seed}
    data.setdefault("output", {})["dir"] = str(out)
    new = type(cfg).model_validate(data)
    new._base_dir, new._source = cfg._base_dir, cfg._source
    return new


def format_change(name: str, res: pd.DataFrame) -> str:
    lines = [f"{name} vs base: mean r(tuned) - r(base) over {int(res.n_listeners.iloc[0])} listeners "
             f"(two-sided sign-flip p, BH-FDR over {len(res)} layer x ROI tests)",
             "| layer | ROI | base r | tuned r | change | listeners better | p | p_fdr |",
             "|--:|---|--:|--:|--:|--:|--:|--:|"]
    for _, r in res.iterrows():
        star = " *" if r.significant else ""
        lines.append(f"| {r.layer} | {r.target} | {r.base_mean:.4f} | {r.tuned_mean:.4f} | {r.change:+.4f}{star} | "
                     f"{r.n_better}/{r.n_listeners} | {r.p:.3g} | {r.p_fdr:.3g} |")
    counts = res.direction.value_counts()
    lines.append(f"better: {counts.get('better', 0)}, worse: {counts.get('worse', 0)}, "
                 f"unchanged: {counts.get('unchanged', 0)} of {len(res)}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tuned", type=_named, action="append", required=True, metavar="NAME=PATH",
                    help="a fine-tuned model folder (jaxalign finetune's OUT/model); repeat for several")
    ap.add_argument("--config", type=Path, default=REPO / "examples" / "alice.toml",
                    help="the study file whose protocol is used (default: examples/alice.toml)")
    ap.add_argument("--base", type=Path, default=None,
                    help="base model folder or .gguf (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--out", type=Path, default=Path("out/finetuned_alice"))
    ap.add_argument("--permutations", type=int, default=10000, help="sign patterns (all 2^n when fewer)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    names = [n for n, _ in args.tuned]
    if len(set(names)) != len(names):
        ap.error(f"--tuned names must differ, got {names}")
    out = args.out.resolve()
    cfg = study_config(args.config, args.tuned, out, base=args.base.resolve() if args.base else None,
                       n_permutations=args.permutations, seed=args.seed)
    results = run_study(cfg, progress=not args.quiet).compare
    for name, res in results.items():
        print(format_change(name, res), end="\n\n")
    print(f"written to {out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
