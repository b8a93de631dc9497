"""GPT-2 (Radford et al. 2019) in Flax NNX, loading Hugging Face checkpoints.

Pre-LayerNorm decoder: learned token and position embeddings, ``n_layer``
blocks ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, a final ``ln_f``, and
an LM head tied to the token embedding (``tie_word_embeddings``, the default).

Matches ``transformers.GPT2LMHeadModel`` with ``output_hidden_states=True``:
``hidden_states[0]`` is token + position embedding, ``hidden_states[i]`` the
output of block i, and the last one is after ``ln_f`` (GPT-2 XL: 49 states).
Position ids are ``arange(seq)`` whatever the padding, as in transformers when
no ``position_ids`` are given; with left padding the real tokens therefore do
not start at position 0 (transformers' ``generate`` would shift them: we do not).

Checkpoint layout: GPT-2 uses ``Conv1D`` layers whose weights are stored
(in, out), the transpose of ``nn.Linear``, which is already Flax's kernel
layout, so they load without a transpose. ``c_attn`` is fused: its output
columns are [queries of all heads | keys | values].

Blocks are stacked along a leading layer axis and run with ``nnx.scan`` so a
48-layer model compiles once per input shape in about the time of one block.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.lm._common import (
    ACTIVATIONS,
    LMOutput,
    Target,
    attention_mask_4d,
    check_activation,
    check_inputs,
    dot_product_attention,
    fill_params,
    in_row_chunks,
    layer_norm,
    run_block,
    stacked_blocks,
    transpose,
)

MODEL_TYPE = "gpt2"


@dataclasses.dataclass(frozen=True)
class Config:
    """GPT-2 hyper-parameters (Hugging Face ``GPT2Config`` names)."""

    #: Causal mask: a token sees only those before it (``jaxalign.lm.is_causal``).
    causal: ClassVar[bool] = True

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True

    def __post_init__(self):
        check_activation(self.activation_function)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) is not divisible by n_head ({self.n_head})")

    @property
    def max_length(self) -> int:
        """The longest sequence the model accepts, ``n_positions`` (the
        common name every architecture's Config gives its maximum length)."""
        return self.n_positions

    @property
    def mlp_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_hf(cls, hf_config: dict) -> Config:
        """Build from a Hugging Face ``config.json`` dict.

        Missing keys take GPT2Config's defaults. Raises ValueError for options
        this implementation does not support (cross-attention, an unknown
        activation, another model_type). Training-only options (dropouts,
        ``reorder_and_upcast_attn``, which only changes mixed-precision
        numerics: our softmax is always float32) and the sequence-summary head
        of GPT2DoubleHeadsModel are ignored.
        """
        model_type = hf_config.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"gpt2.Config.from_hf got model_type {model_type!r}")
        if hf_config.get("add_cross_attention", False):
            raise ValueError("unsupported GPT-2 option add_cross_attention=True (encoder-decoder use)")
        aliases = {  # GPT2Config.attribute_map: either spelling may appear
            "hidden_size": "n_embd",
            "max_position_embeddings": "n_positions",
            "num_attention_heads": "n_head",
            "num_hidden_layers": "n_layer",
        }
        values = {aliases.get(k, k): v for k, v in hf_config.items()}
        if "n_positions" not in values and "n_ctx" in values:  # old configs' spelling
            values["n_positions"] = values["n_ctx"]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})


    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (``from_hf``'s inverse).

        ``Config.from_hf(c.to_hf()) == c``; ``model_type`` and
        ``architectures`` let ``transformers.AutoModelForCausalLM`` pick
        ``GPT2LMHeadModel``.
        """
        return {"model_type": MODEL_TYPE, "architectures": ["GPT2LMHeadModel"], **dataclasses.asdict(self)}


class Attention(nnx.Module):
    def __init__(self, config: Config, *, dtype, rngs: nnx.Rngs):
        d = config.n_embd
        self.n_head = config.n_head
        self.c_attn = nnx.Linear(d, 3 * d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.c_proj = nnx.Linear(d, d, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, scale):
        b, s, d = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)  # [q all heads | k | v]
        q, k, v = (t.reshape(b, s, self.n_head, d // self.n_head) for t in (q, k, v))
        out = dot_product_attention(q, k, v, mask, scale, causal=True)
        return self.c_proj(out.reshape(b, s, d))


class MLP(nnx.Module):
    def __init__(self, config: Config, *, dtype, rngs: nnx.Rngs):
        self.act = ACTIVATIONS[config.activation_function]
        self.c_fc = nnx.Linear(config.n_embd, config.mlp_dim, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.c_proj = nnx.Linear(config.mlp_dim, config.n_embd, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return in_row_chunks(lambda r: self.c_proj(self.act(self.c_fc(r))), x)


class Block(nnx.Module):
    def __init__(self, config: Config, *, dtype, rngs: nnx.Rngs):
        eps = config.layer_norm_epsilon
        self.ln_1 = layer_norm(config.n_embd, eps, dtype=dtype, rngs=rngs)
        self.attn = Attention(config, dtype=dtype, rngs=rngs)
        self.ln_2 = layer_norm(config.n_embd, eps, dtype=dtype, rngs=rngs)
        self.mlp = MLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, scale):
        x = x + self.attn(self.ln_1(x), mask, scale)
        return x + self.mlp(self.ln_2(x))


class Model(nnx.Module):
    """GPT-2 with its LM head. ``h`` holds the blocks stacked on axis 0."""

    #: Rematerialise each block in the backward pass (``_common.run_block``); set by training loops.
    remat: bool = False

    def __init__(self, config: Config, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = config
        d = config.n_embd
        self.wte = nnx.Embed(config.vocab_size, d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.wpe = nnx.Embed(config.n_positions, d, dtype=dtype, param_dtype=dtype, rngs=rngs)

        self.h = stacked_blocks(lambda r: Block(config, dtype=dtype, rngs=r), config.n_layer, rngs)
        self.ln_f = layer_norm(d, config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
        if not config.tie_word_embeddings:
            self.lm_head = nnx.Linear(d, config.vocab_size, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> LMOutput:
        """See :meth:`jaxalign.lm.llama.Model.__call__` (the same inputs and outputs)."""
        cfg = self.config
        input_ids = jnp.asarray(input_ids)
        check_inputs(input_ids, attention_mask, position_ids)
        seq = input_ids.shape[1]
        if position_ids is None and seq > cfg.n_positions:
            raise ValueError(f"sequence length {seq} exceeds GPT-2's n_positions={cfg.n_positions}")
        if position_ids is not None and not isinstance(position_ids, jax.core.Tracer) and (
                np.size(position_ids) and int(np.max(position_ids)) >= cfg.n_positions):
            raise ValueError(f"position_ids reach {int(np.max(position_ids))}, beyond GPT-2's "
                             f"n_positions={cfg.n_positions}")
        positions = jnp.arange(seq)[None] if position_ids is None else jnp.asarray(position_ids)
        x = self.wte(input_ids) + self.wpe(positions)
        mask = attention_mask_4d(attention_mask, seq)

        head_dim = cfg.n_embd // cfg.n_head
        scale = jnp.full((cfg.n_layer,), head_dim**-0.5 if cfg.scale_attn_weights else 1.0, jnp.float32)
        if cfg.scale_attn_by_inverse_layer_idx:
            scale = scale / jnp.arange(1, cfg.n_layer + 1, dtype=jnp.float32)

        @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
        def run(h, block, s):
            h = run_block(block, h, mask, s, remat=self.remat)
            return h, h

        out, per_block = run(x, self.h, scale)
        final = self.ln_f(out)
        hidden = jnp.concatenate([x[None], per_block[:-1], final[None]], axis=0)
        return LMOutput(hidden, self.unembed(final))

    def unembed(self, final: jax.Array) -> jax.Array:
        """Logits of final hidden states (``hidden_states[-1]``): (..., hidden) -> (..., vocab)."""
        return self.wte.attend(final) if self.config.tie_word_embeddings else self.lm_head(final)


# Linear projections of a block by group (LoRA targets, ``jaxalign.finetune.add_lora``):
# dotted paths of ``nnx.Linear`` modules of the stacked blocks.
PROJECTIONS = {
    "attention": ("h.attn.c_attn", "h.attn.c_proj"),
    "mlp": ("h.mlp.c_fc", "h.mlp.c_proj"),
}


# ------------------------------------------------------------------ sharding

# Tensor-parallel layout for ``load(devices=...)`` (see jaxalign.lm._shard):
# dotted parameter path -> the axis split over the devices, counted from the
# end (the blocks' leading layer axis does not count). Kernels are (in, out):
# column-parallel layers split outputs (-1), row-parallel ones inputs (-2),
# embeddings their hidden dimension. Norms and biases are replicated.
SHARDING = {
    r"wte\.embedding": -1,
    r"wpe\.embedding": -1,
    r"h\.attn\.c_attn\.kernel": -1,
    r"h\.mlp\.c_fc\.kernel": -1,
    r"h\.attn\.c_proj\.kernel": -2,
    r"h\.mlp\.c_proj\.kernel": -2,
    r"lm_head\.kernel": -2,
}


# ------------------------------------------------------------------ loading

# Buffers some GPT-2 checkpoints carry that are not weights: the causal mask
# ``attn.bias`` (a lower-triangular 0/1 matrix) and ``attn.masked_bias`` (-1e4).
IGNORED = (r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias")


def _rename(name: str) -> str:
    # GPT2LMHeadModel saves "transformer.h.0..." and "lm_head.weight"; the
    # original OpenAI-converted checkpoints (hub "gpt2", "gpt2-xl") and
    # GPT2Model save "h.0..." without the prefix.
    return name.removeprefix("transformer.")


def name_table(config: Config) -> dict[str, Target]:
    """Hugging Face checkpoint name (prefix stripped) -> parameter target."""
    table = {
        "wte.weight": Target(("wte", "embedding")),
        "wpe.weight": Target(("wpe", "embedding")),
        "ln_f.weight": Target(("ln_f", "scale")),
        "ln_f.bias": Target(("ln_f", "bias")),
    }
    per_block = {  # Conv1D weights are (in, out): Flax kernels as they are
        "ln_1.weight": ("ln_1", "scale"),
        "ln_1.bias": ("ln_1", "bias"),
        "attn.c_attn.weight": ("attn", "c_attn", "kernel"),
        "attn.c_attn.bias": ("attn", "c_attn", "bias"),
        "attn.c_proj.weight": ("attn", "c_proj", "kernel"),
        "attn.c_proj.bias": ("attn", "c_proj", "bias"),
        "ln_2.weight": ("ln_2", "scale"),
        "ln_2.bias": ("ln_2", "bias"),
        "mlp.c_fc.weight": ("mlp", "c_fc", "kernel"),
        "mlp.c_fc.bias": ("mlp", "c_fc", "bias"),
        "mlp.c_proj.weight": ("mlp", "c_proj", "kernel"),
        "mlp.c_proj.bias": ("mlp", "c_proj", "bias"),
    }
    for i in range(config.n_layer):
        for hf, path in per_block.items():
            table[f"h.{i}.{hf}"] = Target(("h", *path), layer=i)
    if not config.tie_word_embeddings:
        table["lm_head.weight"] = Target(("lm_head", "kernel"), transform=transpose)
    return table


def load_state(model: Model, tensors: dict, *, place=None) -> None:
    """Fill ``model`` from Hugging Face GPT-2 tensors (see ``fill_params``).

    With tied embeddings an ``lm_head.weight`` in the checkpoint is the tied
    copy of ``wte.weight`` and is skipped.
    """
    ignored = IGNORED + ((r"lm_head\.weight",) if model.config.tie_word_embeddings else ())
    fill_params(model, tensors, name_table(model.config), rename=_rename, ignore=ignored, place=place)
