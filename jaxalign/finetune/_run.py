"""Run a :class:`FinetuneConfig`: load the model and data it names, fit, export (``jaxalign finetune``).

The command line only parses flags and prints :func:`format_summary`; this
module is what a script calls::

    from jaxalign.finetune import FinetuneConfig, run_config
    summary = run_config(FinetuneConfig.from_toml("examples/finetune_piqa.toml"))
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from jaxalign._core.files import writable_dir
from jaxalign.finetune._config import FinetuneConfig, FinetuneConfigError

__all__ = ["RunSummary", "format_summary", "load_data", "run_config"]


@dataclasses.dataclass
class RunSummary:
    """What :func:`run_config` did: the training result, the data sizes, where things went."""

    result: object  # TrainResult
    model_label: str
    data_label: str
    n_train: int
    n_eval: int
    out: Path
    exported: Path | None


def _read_choices(cfg: FinetuneConfig, path):
    from jaxalign import io

    d = cfg.data
    path = cfg.resolve_path(path)
    if d.kind == "piqa":
        return io.read_piqa(path, split=d.split)
    if d.kind == "siqa":
        return io.read_siqa(path, split=d.split)
    labels = None if d.labels is None else cfg.resolve_path(d.labels)
    return io.read_multiple_choice(path, labels, prompt_keys=d.prompt_keys, choice_keys=d.choice_keys,
                                   label_base=d.label_base, name=Path(path).stem, split=d.split)


def _read_text(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"text file {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file ({error})") from None


def _split_text(text: str, fraction: float) -> tuple[str, str | None]:
    """(training part, held-out tail): the last ``fraction`` of the characters, cut at white space."""
    if fraction == 0:
        return text, None
    cut = int(len(text) * (1 - fraction))
    space = text.rfind(" ", 0, cut)
    cut = space if space > 0 else cut
    if not text[:cut].strip() or not text[cut:].strip():
        raise ValueError(f"the text is too short to hold out {fraction:.0%} of it for validation")
    return text[:cut], text[cut:]


def load_data(cfg: FinetuneConfig) -> dict:
    """The data of a config, as :func:`fit` takes it: ``train, eval, text, eval_text, lm_ratio, seq_len``.

    The validation set is ``data.eval_path`` or a seeded held-out
    ``eval_fraction`` of the training file (``split_items``; for text, its last
    ``eval_fraction``); ``data.limit`` keeps the first N items first.
    """
    from jaxalign.finetune._train import split_items

    d = cfg.data
    if d.kind == "text":
        text = _read_text(cfg.resolve_path(d.path))
        if d.limit:
            text = text[: d.limit]
        if d.eval_path is not None:
            train_text, eval_text = text, _read_text(cfg.resolve_path(d.eval_path))
        else:
            train_text, eval_text = _split_text(text, d.eval_fraction)
        return {"train": None, "eval": None, "text": train_text, "eval_text": eval_text, "lm_ratio": 1.0,
                "seq_len": d.seq_len}
    full = _read_choices(cfg, d.path)
    if full.labels is None:
        raise ValueError(f"{cfg.resolve_path(d.path)}: no labels found (give the label file)")
    if d.limit:
        full = full.subset(np.arange(min(d.limit, len(full))))
    if d.eval_path is not None:
        train, eval_ = full, _read_choices(cfg, d.eval_path)
    elif d.eval_fraction > 0:
        keep, held = split_items(len(full), d.eval_fraction, cfg.train.seed)
        train, eval_ = full.subset(keep), full.subset(held)
    else:
        train, eval_ = full, None
    text = eval_text = None
    if d.text is not None:
        text, eval_text = _split_text(_read_text(cfg.resolve_path(d.text)), d.eval_fraction)
    return {"train": train, "eval": eval_, "text": text, "eval_text": eval_text, "lm_ratio": d.lm_ratio,
            "seq_len": d.seq_len}


def check_inputs(cfg: FinetuneConfig, out=None) -> Path:
    """Before any model loads: the data files exist and the run folder is writable; returns the folder."""
    from jaxalign import lm

    d = cfg.data
    paths = [("data.path", d.path)] + [(k, getattr(d, k, None)) for k in ("eval_path", "text", "labels")]
    for key, path in paths:
        if path is not None and not cfg.resolve_path(path).exists():
            raise FileNotFoundError(f"{key}: {cfg.resolve_path(path)} does not exist")
    m = cfg.model
    if m.packaged is not None:
        lm.packaged_model(m.packaged)  # FileNotFoundError naming what to install
    elif m.path is not None and not cfg.resolve_path(m.path).exists():
        raise FileNotFoundError(f"model.path: {cfg.resolve_path(m.path)} does not exist")
    return writable_dir(cfg.resolve_path(cfg.output.dir) if out is None else Path(os.fspath(out)),
                        "--out / output.dir")


def _load_model(cfg: FinetuneConfig):
    from jaxalign import lm

    m = cfg.model
    if m.packaged is not None:
        return lm.load(lm.packaged_model(m.packaged)), m.packaged
    if m.hub is not None:
        return lm.load(m.hub, revision=m.revision), m.hub + (f"@{m.revision}" if m.revision else "")
    path = cfg.resolve_path(m.path)
    return lm.load(path), Path(path).name


def run_config(cfg: FinetuneConfig, out=None, progress: bool | None = None, max_steps: int | None = None,
               callback=None) -> RunSummary:
    """Fine-tune as ``cfg`` says; ``out`` overrides ``output.dir``, ``max_steps`` ``train.max_steps``.

    Writes into the run folder what :func:`fit` writes (log, curve,
    checkpoints, result.json) and, with ``output.export``, the kept model as
    a Hugging Face folder ``model/``. A folder holding checkpoints of the same
    run resumes from them.
    """
    from jaxalign.finetune._export import save_pretrained
    from jaxalign.finetune._train import fit

    if max_steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": int(max_steps)})})
    folder = check_inputs(cfg, out)
    data = load_data(cfg)
    (model, tokenizer), label = _load_model(cfg)
    if tokenizer is None:
        raise FinetuneConfigError([f"model: {label} has no tokenizer files"], cfg._source)
    if cfg.lora is not None:
        from jaxalign.finetune._lora import add_lora

        lo = cfg.lora
        try:
            add_lora(model, rank=lo.rank, alpha=lo.alpha, targets=lo.targets, dropout=lo.dropout, seed=lo.seed)
        except ValueError as error:
            keyed = str(error).split(":", 1)[0] in ("rank", "alpha", "dropout", "targets")
            raise FinetuneConfigError([f"lora.{error}" if keyed else f"lora: {error}"], cfg._source) from None
    result = fit(model, tokenizer, data["train"], data["eval"], text=data["text"], eval_text=data["eval_text"],
                 lm_ratio=data["lm_ratio"], seq_len=data["seq_len"], settings=cfg.train, out=folder,
                 checkpoint_every=cfg.output.checkpoint_every, keep_checkpoints=cfg.output.keep_checkpoints,
                 progress=progress, callback=callback, name=label)
    exported = save_pretrained(result.model, tokenizer, folder / "model") if cfg.output.export else None
    n_train = len(data["train"]) if data["train"] is not None else 0
    n_eval = len(data["eval"]) if data["eval"] is not None else 0
    return RunSummary(result, label, cfg.data.kind, n_train, n_eval, folder, exported)


def format_summary(summary: RunSummary) -> str:
    """A small table: the base model (step 0), the kept evaluation and the last one; time and throughput."""
    r = summary.result
    lines = []
    what = (f"{summary.n_train} training / {summary.n_eval} validation items" if summary.n_train
            else "text")
    lines.append(f"fine-tuned {summary.model_label} on {summary.data_label} ({what}): {r.steps} optimizer steps"
                 + (", stopped early" if r.stopped_early else "")
                 + (f", resumed from step {r.resumed_from}" if r.resumed_from else ""))
    rows = []
    if r.history and r.history[0]["step"] == 0:
        rows.append(("before (step 0)", r.history[0]))
    if r.best is not None:
        rows.append((f"best (step {r.best['step']})", r.best))
    if r.history and r.history[-1]["step"] not in (0, (r.best or {}).get("step")):
        rows.append((f"last (step {r.history[-1]['step']})", r.history[-1]))
    if rows:
        has_acc = any(h.get("accuracy") is not None for _, h in rows)
        has_ppl = any(h.get("perplexity") is not None for _, h in rows)
        header = f"{'validation':<22}{'loss':>9}" + (f"{'accuracy':>10}" if has_acc else "") + (
            f"{'perplexity':>12}" if has_ppl else "")
        lines += [header, "-" * len(header)]
        for name, h in rows:
            line = f"{name:<22}{h['loss']:>9.4f}"
            if has_acc:
                line += f"{100 * h['accuracy']:>9.1f}%" if h.get("accuracy") is not None else f"{'':>10}"
            if has_ppl:
                line += f"{h['perplexity']:>12.2f}" if h.get("perplexity") is not None else ""
            lines.append(line)
    else:
        lines.append("no validation data: the last parameters are kept")
    speed = f", {r.tokens_per_s:,.0f} tokens/s in training steps" if r.tokens_per_s else ""
    lines.append(f"{r.seconds:.0f} s{speed}; wrote {summary.out} (log.jsonl, curve.png, result.json, checkpoints/"
                 + (", model/: Hugging Face folder" if summary.exported else "") + ")")
    return "\n".join(lines)
