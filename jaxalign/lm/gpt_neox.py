"""GPT-NeoX / Pythia (Black et al. 2022; Biderman et al. 2023) in Flax NNX.

Pre-LayerNorm decoder with rotary position embeddings on the first
``rotary_pct`` of each head's dimensions, an untied LM head (``embed_out``)
and a ``final_layer_norm``. Each block is either parallel
(``use_parallel_residual``, Pythia's setting)::

    x + attn(input_layernorm(x)) + mlp(post_attention_layernorm(x))

or sequential::

    y = x + attn(input_layernorm(x));  y + mlp(post_attention_layernorm(y))

Matches ``transformers.GPTNeoXForCausalLM`` with ``output_hidden_states=True``
(index 0 the token embedding, the last after ``final_layer_norm``; Pythia-160M:
13 states). Position ids are ``arange(seq)`` whatever the padding, as in
transformers when no ``position_ids`` are given.

Checkpoint layout: ``query_key_value`` is fused and *head-interleaved*: its
3 * hidden outputs are [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], head_size each
(transformers views them as (..., heads, 3 * head_size) and chunks the last
axis in three). Linear weights are ``nn.Linear`` (out, in) and are transposed.
Pythia hub checkpoints name the LM head ``embed_out.weight``; transformers 5
calls the module ``lm_head``: both are accepted.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxalign.lm._common import (
    ACTIVATIONS,
    LMOutput,
    Target,
    apply_rotary,
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

MODEL_TYPE = "gpt_neox"


@dataclasses.dataclass(frozen=True)
class Config:
    """GPT-NeoX hyper-parameters (Hugging Face ``GPTNeoXConfig`` names)."""

    #: Causal mask: a token sees only those before it (``jaxalign.lm.is_causal``).
    causal: ClassVar[bool] = True

    vocab_size: int = 50432
    hidden_size: int = 6144
    num_hidden_layers: int = 44
    num_attention_heads: int = 64
    intermediate_size: int = 24576
    max_position_embeddings: int = 2048  # trained context (rotary: no table, no hard limit)
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    rotary_pct: float = 0.25  # transformers 5: rope_parameters["partial_rotary_factor"]
    rotary_emb_base: float = 10000.0  # transformers 5: rope_parameters["rope_theta"]
    attention_bias: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self):
        check_activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )

    @property
    def max_length(self) -> int:
        """The longest sequence the model was trained on (the common name
        every architecture's Config gives its maximum length)."""
        return self.max_position_embeddings

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_size * self.rotary_pct)  # int() truncates, as transformers

    @classmethod
    def from_hf(cls, hf_config: dict) -> Config:
        """Build from a Hugging Face ``config.json`` dict.

        Reads both the transformers 4 keys of the Pythia checkpoints
        (``rotary_pct``, ``rotary_emb_base``, ``rope_scaling``) and the
        transformers 5 ``rope_parameters`` dict. Missing keys take
        GPTNeoXConfig's defaults. Raises ValueError for RoPE scaling other
        than the default rope, an unknown activation or another model_type.
        ``max_position_embeddings`` (the trained context: rotary has no table)
        is kept as ``max_length``; dropouts and cache options are ignored.
        """
        model_type = hf_config.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"gpt_neox.Config.from_hf got model_type {model_type!r}")
        rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(
                f"unsupported GPT-NeoX rope type {rope_type!r} (rope_scaling/rope_parameters); "
                "only the default rotary embedding is implemented"
            )
        values = dict(hf_config)
        if "partial_rotary_factor" in rope:
            values["rotary_pct"] = rope["partial_rotary_factor"]
        if "rope_theta" in rope:
            values["rotary_emb_base"] = rope["rope_theta"]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (``from_hf``'s inverse).

        The rotary settings are written both ways: transformers 4's
        ``rotary_pct`` / ``rotary_emb_base`` and transformers 5's
        ``rope_parameters``, so either version reads the file.
        ``Config.from_hf(c.to_hf()) == c``.
        """
        rope = {"rope_type": "default", "rope_theta": self.rotary_emb_base,
                "partial_rotary_factor": self.rotary_pct}
        return {"model_type": MODEL_TYPE, "architectures": ["GPTNeoXForCausalLM"],
                **dataclasses.asdict(self), "rope_parameters": rope}


def rotary_cos_sin(positions: jax.Array, ndims: int, base: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape (*positions.shape, ndims) for rotating the first ``ndims`` dims.

    inv_freq_j = base^(-2j / ndims), angle = position * inv_freq, repeated
    twice ([f_0..f_{n/2-1}, f_0..f_{n/2-1}]) to pair dim j with dim j + n/2.
    """
    inv_freq = 1.0 / (base ** (jnp.arange(0, ndims, 2, dtype=jnp.float32) / ndims))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class Attention(nnx.Module):
    def __init__(self, config: Config, *, dtype, rngs: nnx.Rngs):
        d = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query_key_value = nnx.Linear(
            d, 3 * d, use_bias=config.attention_bias, dtype=dtype, param_dtype=dtype, rngs=rngs
        )
        self.dense = nnx.Linear(d, d, use_bias=config.attention_bias, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, cos, sin):
        b, s, d = x.shape
        head = d // self.n_head
        qkv = self.query_key_value(x).reshape(b, s, self.n_head, 3 * head)  # head-interleaved
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = dot_product_attention(q, k, v, mask, head**-0.5, causal=True)
        return self.dense(out.reshape(b, s, d))


class MLP(nnx.Module):
    def __init__(self, config: Config, *, dtype, rngs: nnx.Rngs):
        d, inner = config.hidden_size, config.intermediate_size
        self.act = ACTIVATIONS[config.hidden_act]
        self.dense_h_to_4h = nnx.Linear(d, inner, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.dense_4h_to_h = nnx.Linear(inner, d, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return in_row_chunks(lambda r: self.dense_4h_to_h(self.act(self.dense_h_to_4h(r))), x)


class Block(nnx.Module):
    def __init__(self, config: Config, *, dtype, rngs: nnx.Rngs):
        d, eps = config.hidden_size, config.layer_norm_eps
        self.parallel = config.use_parallel_residual
        self.input_layernorm = layer_norm(d, eps, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = layer_norm(d, eps, dtype=dtype, rngs=rngs)
        self.attention = Attention(config, dtype=dtype, rngs=rngs)
        self.mlp = MLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, cos, sin):
        attn = self.attention(self.input_layernorm(x), mask, cos, sin)
        if self.parallel:
            return x + attn + self.mlp(self.post_attention_layernorm(x))
        y = x + attn
        return y + self.mlp(self.post_attention_layernorm(y))


class Model(nnx.Module):
    """GPT-NeoX with its LM head. ``layers`` holds the blocks stacked on axis 0."""

    #: Rematerialise each block in the backward pass (``_common.run_block``); set by training loops.
    remat: bool = False

    def __init__(self, config: Config, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = config
        d = config.hidden_size
        self.embed_in = nnx.Embed(config.vocab_size, d, dtype=dtype, param_dtype=dtype, rngs=rngs)

        self.layers = stacked_blocks(lambda r: Block(config, dtype=dtype, rngs=r), config.num_hidden_layers, rngs)
        self.final_layer_norm = layer_norm(d, config.layer_norm_eps, dtype=dtype, rngs=rngs)
        if not config.tie_word_embeddings:
            self.embed_out = nnx.Linear(d, config.vocab_size, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> LMOutput:
        """See :meth:`jaxalign.lm.llama.Model.__call__` (the same inputs and outputs)."""
        cfg = self.config
        input_ids = jnp.asarray(input_ids)
        check_inputs(input_ids, attention_mask, position_ids)
        seq = input_ids.shape[1]
        x = self.embed_in(input_ids)
        mask = attention_mask_4d(attention_mask, seq)
        positions = jnp.arange(seq) if position_ids is None else jnp.asarray(position_ids)
        cos, sin = rotary_cos_sin(positions, cfg.rotary_ndims, cfg.rotary_emb_base)

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def run(h, block):
            h = run_block(block, h, mask, cos, sin, remat=self.remat)
            return h, h

        out, per_block = run(x, self.layers)
        final = self.final_layer_norm(out)
        hidden = jnp.concatenate([x[None], per_block[:-1], final[None]], axis=0)
        return LMOutput(hidden, self.unembed(final))

    def unembed(self, final: jax.Array) -> jax.Array:
        """Logits of final hidden states (``hidden_states[-1]``): (..., hidden) -> (..., vocab)."""
        return self.embed_in.attend(final) if self.config.tie_word_embeddings else self.embed_out(final)


# Linear projections of a block by group (LoRA targets, ``jaxalign.finetune.add_lora``):
# dotted paths of ``nnx.Linear`` modules of the stacked blocks.
PROJECTIONS = {
    "attention": ("layers.attention.query_key_value", "layers.attention.dense"),
    "mlp": ("layers.mlp.dense_h_to_4h", "layers.mlp.dense_4h_to_h"),
}


# ------------------------------------------------------------------ sharding

# Tensor-parallel layout for ``load(devices=...)`` (see jaxalign.lm._shard):
# dotted parameter path -> the axis split over the devices, counted from the
# end (the blocks' leading layer axis does not count). Kernels are (in, out):
# column-parallel layers split outputs (-1; the fused, head-interleaved
# query_key_value keeps whole heads together when heads divide evenly),
# row-parallel ones inputs (-2), the embedding its hidden dimension. Norms and
# biases are replicated.
SHARDING = {
    r"embed_in\.embedding": -1,
    r"layers\.attention\.query_key_value\.kernel": -1,
    r"layers\.mlp\.dense_h_to_4h\.kernel": -1,
    r"layers\.attention\.dense\.kernel": -2,
    r"layers\.mlp\.dense_4h_to_h\.kernel": -2,
    r"embed_out\.kernel": -2,
}


# ------------------------------------------------------------------ loading

# Non-weight buffers found in GPT-NeoX checkpoints: the causal mask
# ``attention.bias``, ``attention.masked_bias`` and the rotary ``inv_freq``
# (recomputed from the config here).
IGNORED = (
    r"layers\.\d+\.attention\.bias",
    r"layers\.\d+\.attention\.masked_bias",
    r"layers\.\d+\.attention\.rotary_emb\.inv_freq",
    r"rotary_emb\.inv_freq",
)


def _rename(name: str) -> str:
    # GPTNeoXForCausalLM saves "gpt_neox.layers.0..." and "embed_out.weight"
    # (transformers 5 names the module lm_head and may write that name).
    name = name.removeprefix("gpt_neox.")
    return "embed_out.weight" if name == "lm_head.weight" else name


def name_table(config: Config) -> dict[str, Target]:
    """Hugging Face checkpoint name (prefix stripped) -> parameter target."""
    table = {
        "embed_in.weight": Target(("embed_in", "embedding")),
        "final_layer_norm.weight": Target(("final_layer_norm", "scale")),
        "final_layer_norm.bias": Target(("final_layer_norm", "bias")),
    }
    per_block = {  # name -> (path, transform)
        "input_layernorm.weight": (("input_layernorm", "scale"), None),
        "input_layernorm.bias": (("input_layernorm", "bias"), None),
        "post_attention_layernorm.weight": (("post_attention_layernorm", "scale"), None),
        "post_attention_layernorm.bias": (("post_attention_layernorm", "bias"), None),
        "attention.query_key_value.weight": (("attention", "query_key_value", "kernel"), transpose),
        "attention.dense.weight": (("attention", "dense", "kernel"), transpose),
        "mlp.dense_h_to_4h.weight": (("mlp", "dense_h_to_4h", "kernel"), transpose),
        "mlp.dense_h_to_4h.bias": (("mlp", "dense_h_to_4h", "bias"), None),
        "mlp.dense_4h_to_h.weight": (("mlp", "dense_4h_to_h", "kernel"), transpose),
        "mlp.dense_4h_to_h.bias": (("mlp", "dense_4h_to_h", "bias"), None),
    }
    if config.attention_bias:
        per_block["attention.query_key_value.bias"] = (("attention", "query_key_value", "bias"), None)
        per_block["attention.dense.bias"] = (("attention", "dense", "bias"), None)
    for i in range(config.num_hidden_layers):
        for hf, (path, fn) in per_block.items():
            table[f"layers.{i}.{hf}"] = Target(("layers", *path), layer=i, transform=fn)
    if not config.tie_word_embeddings:
        table["embed_out.weight"] = Target(("embed_out", "kernel"), transform=transpose)
    return table


def load_state(model: Model, tensors: dict, *, place=None) -> None:
    """Fill ``model`` from Hugging Face GPT-NeoX tensors (see ``fill_params``).

    With tied embeddings an LM head in the checkpoint is the tied copy of
    ``embed_in.weight`` and is skipped.
    """
    ignored = IGNORED + ((r"embed_out\.weight",) if model.config.tie_word_embeddings else ())
    fill_params(model, tensors, name_table(model.config), rename=_rename, ignore=ignored, place=place)
