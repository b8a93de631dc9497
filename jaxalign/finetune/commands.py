"""The ``jaxalign finetune`` command (registered in ``jaxalign._core.commands``).

Imported by ``jaxalign.cli`` when it builds its parser: nothing heavy is
imported until the command runs.
"""

from __future__ import annotations

from jaxalign._core.commands import Command, register_command

__all__: list[str] = []


def _arguments(p):
    p.add_argument("config", help="the fine-tuning file (TOML; see examples/finetune_piqa.toml)")
    p.add_argument("--out", default=None, help="run folder (overrides the config's output.dir)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N optimizer steps (a quick check; overrides train.max_steps)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _check(args):
    from jaxalign.finetune._config import FinetuneConfig
    from jaxalign.finetune._run import check_inputs

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
    cfg = FinetuneConfig.from_toml(args.config)  # FinetuneConfigError (a ValueError) lists every problem
    check_inputs(cfg, args.out)  # data files, packaged weights and the run folder, before any model loads
    args._cfg = cfg


def _run(args):
    from jaxalign.finetune._run import format_summary, run_config

    summary = run_config(args._cfg, out=args.out, progress=False if args.quiet else None, max_steps=args.max_steps)
    print(format_summary(summary))
    return 0


register_command(Command(
    "finetune", "fine-tune a causal LM on multiple choice (PIQA, Social IQa, JSONL) and/or text",
    "Fine-tune a language model as a TOML file says: AdamW with warmup and decay, gradient accumulation and "
    "clipping, an evaluation per epoch (accuracy and loss for multiple choice, perplexity for text), early "
    "stopping, the best evaluation kept. Writes OUT/log.jsonl (one line per step and evaluation), "
    "OUT/curve.png, OUT/result.json, Orbax checkpoints (a killed run resumes exactly where it stopped when "
    "run again) and OUT/model, the kept model as a Hugging Face folder that transformers and "
    "jaxalign.lm.load read.",
    _arguments, _run, _check,
    epilog="examples:\n  jaxalign finetune examples/finetune_piqa.toml\n"
           "  jaxalign finetune examples/finetune_piqa.toml --max-steps 20 --out out/piqa_smoke\n"
           "  jaxalign finetune run.toml --quiet      # output.dir from the file, no progress bar"))
