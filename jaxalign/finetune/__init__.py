"""Fine-tuning the causal language models of :mod:`jaxalign.lm`: Optax training, Orbax checkpoints, export.

``score_choices(model, tokenizer, mc)``
    every option's summed shifted log-likelihood (nats), array (n_items,
    n_options), for a :class:`jaxalign.io.MultipleChoice` (``io.read_piqa``,
    ``io.read_siqa``, ``io.read_multiple_choice``): the text is
    ``prompt + " " + option`` without special tokens, the option's tokens
    those whose character span overlaps it (the joining space belongs to its
    first token), each scored given every token before it.
``fit(model, tokenizer, train, eval, *, text=None, lm_ratio=0, settings=TrainConfig(), out=None, ...)``
    AdamW (warmup + constant / linear / cosine decay), gradient accumulation,
    global-norm clipping, bfloat16 compute on float32 master weights and
    rematerialised blocks (``TrainConfig.compute_dtype``, ``remat``),
    jit-compiled steps over bucketed lengths (each item's shared prompt run
    once, its options packed after it: ``TrainConfig.pack``), an
    evaluation per epoch (accuracy and loss for multiple choice, loss and
    perplexity for text), early stopping, the best evaluation kept; a JSON-lines
    log, a curve PNG and Orbax checkpoints in ``out``, from which a killed run
    resumes bit for bit. Returns a :class:`TrainResult`.
``save_pretrained(model, tokenizer, folder)``
    a Hugging Face folder (config.json, model.safetensors, tokenizer files)
    that transformers and ``jaxalign.lm.load`` both read, with the same logits.
``add_lora(model, rank=8, alpha=16, targets=("attention", "mlp"), dropout=0)`` / ``merge_lora``
    LoRA adapters on the attention / MLP projections (B = 0: the model is
    unchanged until trained); ``fit`` then trains only them, and
    ``save_pretrained`` writes them merged into the weights.
``FinetuneConfig`` / ``run_config``
    a run as a TOML file (``jaxalign finetune CONFIG.toml``).
Losses as pure functions: ``token_logprobs``, ``sequence_logprob``,
``multiple_choice_loss``, ``multiple_choice_accuracy``, ``causal_lm_loss``,
``mixed_loss``.

Names are imported when first used, so that ``jaxalign --help`` (which
registers the ``finetune`` command from ``jaxalign.finetune.commands``) does
not load Flax, Optax or Orbax.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EncodedChoices": "_encode",
    "EncodedText": "_encode",
    "encode_choices": "_encode",
    "encode_text": "_encode",
    "pack_choices": "_encode",
    "FinetuneConfig": "_config",
    "FinetuneConfigError": "_config",
    "TrainConfig": "_config",
    "LoraSection": "_config",
    "LoRALinear": "_lora",
    "add_lora": "_lora",
    "has_lora": "_lora",
    "merge_lora": "_lora",
    "causal_lm_loss": "_losses",
    "mixed_loss": "_losses",
    "multiple_choice_accuracy": "_losses",
    "multiple_choice_loss": "_losses",
    "sequence_logprob": "_losses",
    "token_logprobs": "_losses",
    "score_choices": "_score",
    "save_pretrained": "_export",
    "TrainResult": "_train",
    "fit": "_train",
    "split_items": "_train",
    "run_config": "_run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jaxalign.finetune.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxalign.finetune' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
