"""BERT encoder (BERT, MiniLM, all-MiniLM-L6-v2, ...) in Flax NNX.

Numerically follows ``transformers.BertModel`` (transformers 5.x) without the
pooler:

* embeddings = word + token type (zeros by default) + absolute position
  (``0 .. seq-1``), then LayerNorm;
* post-LN encoder layers: ``LN(x + attn(x))`` then ``LN(h + W2 act(W1 h))``;
* ``attention_mask`` (1 = real token, 0 = padding) masks *keys*, exactly like
  transformers; outputs at padded positions are computed but meaningless.

``Model(...)(input_ids, attention_mask, token_type_ids=None)`` returns
:class:`LMOutput` with ``hidden_states`` of shape
``(n_layers + 1, batch, seq, hidden)`` (index 0 = embeddings after their
LayerNorm, index ``i`` = output of encoder layer ``i``, as transformers'
``output_hidden_states=True``) and ``logits=None`` (no language-model head).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign._precision import jit as _jit
from jaxalign.lm._common import (
    ACTIVATIONS,
    LMOutput,
    Target,
    attention_mask_4d,
    check_activation,
    dot_product_attention,
    fill_params,
)

__all__ = ["Config", "Model", "load_state", "state_table", "LMOutput"]

@dataclasses.dataclass(frozen=True)
class Config:
    """Architecture of a BERT encoder (hashable: a static jit argument)."""

    #: An encoder: every token sees the whole sequence (``jaxalign.lm.is_causal``).
    causal: ClassVar[bool] = False

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        check_activation(self.hidden_act)

    @property
    def max_length(self) -> int:
        """The longest sequence the model accepts, ``max_position_embeddings``
        (the common name every architecture's Config gives its maximum length)."""
        return self.max_position_embeddings

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf_config: Mapping[str, Any]) -> Config:
        """Translate a Hugging Face BERT ``config.json`` dictionary.

        Raises ``ValueError`` naming options not reproduced here: other model
        types, relative position embeddings, decoder / cross-attention use,
        activations outside ``jaxalign.lm._common.ACTIVATIONS``
        (gelu, gelu_new, gelu_fast, gelu_pytorch_tanh, relu).
        """
        c = dict(hf_config)
        model_type = c.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"jaxalign.lm.bert handles model_type 'bert', got {model_type!r}")
        pos_type = c.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {pos_type!r} (only 'absolute')")
        for key in ("is_decoder", "add_cross_attention"):
            if c.get(key):
                raise ValueError(f"unsupported bert option {key}=True (encoder only)")
        act = c.get("hidden_act", "gelu")
        if not isinstance(act, str):
            raise ValueError(f"unsupported hidden_act {act!r} for bert")
        check_activation(act)
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size"):
            if key not in c:
                raise ValueError(f"bert config is missing {key!r}")
        return cls(
            vocab_size=int(c["vocab_size"]),
            hidden_size=int(c["hidden_size"]),
            num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=int(c["num_attention_heads"]),
            intermediate_size=int(c["intermediate_size"]),
            max_position_embeddings=int(c.get("max_position_embeddings", 512)),
            type_vocab_size=int(c.get("type_vocab_size", 2)),
            layer_norm_eps=float(c.get("layer_norm_eps", 1e-12)),
            hidden_act=act,
        )


def _layer_shapes(c: Config) -> dict[str, tuple[str, tuple[int, ...]]]:
    """attribute -> (HF name inside ``encoder.layer.{i}``, shape). HF layouts."""
    d, f = c.hidden_size, c.intermediate_size
    return {
        "q_weight": ("attention.self.query.weight", (d, d)),
        "q_bias": ("attention.self.query.bias", (d,)),
        "k_weight": ("attention.self.key.weight", (d, d)),
        "k_bias": ("attention.self.key.bias", (d,)),
        "v_weight": ("attention.self.value.weight", (d, d)),
        "v_bias": ("attention.self.value.bias", (d,)),
        "attn_out_weight": ("attention.output.dense.weight", (d, d)),
        "attn_out_bias": ("attention.output.dense.bias", (d,)),
        "attn_ln_weight": ("attention.output.LayerNorm.weight", (d,)),
        "attn_ln_bias": ("attention.output.LayerNorm.bias", (d,)),
        "inter_weight": ("intermediate.dense.weight", (f, d)),
        "inter_bias": ("intermediate.dense.bias", (f,)),
        "out_weight": ("output.dense.weight", (d, f)),
        "out_bias": ("output.dense.bias", (d,)),
        "out_ln_weight": ("output.LayerNorm.weight", (d,)),
        "out_ln_bias": ("output.LayerNorm.bias", (d,)),
    }


def _top_shapes(c: Config) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HF name -> (attribute, shape) for the embeddings."""
    d = c.hidden_size
    return {
        "embeddings.word_embeddings.weight": ("word_embeddings", (c.vocab_size, d)),
        "embeddings.position_embeddings.weight": ("position_embeddings", (c.max_position_embeddings, d)),
        "embeddings.token_type_embeddings.weight": ("token_type_embeddings", (c.type_vocab_size, d)),
        "embeddings.LayerNorm.weight": ("embeddings_ln_weight", (d,)),
        "embeddings.LayerNorm.bias": ("embeddings_ln_bias", (d,)),
    }


def _init(rngs: nnx.Rngs, attr: str, shape: tuple[int, ...], dtype: Any) -> nnx.Param:
    if attr.endswith("ln_weight"):
        return nnx.Param(jnp.ones(shape, dtype))
    if attr.endswith("bias"):
        return nnx.Param(jnp.zeros(shape, dtype))
    return nnx.Param(0.02 * jax.random.normal(rngs.params(), shape, dtype))


class EncoderLayers(nnx.Module):
    """All encoder layers, each parameter stacked along a leading layer axis."""

    def __init__(self, config: Config, *, dtype: Any, rngs: nnx.Rngs):
        for attr, (_, shape) in _layer_shapes(config).items():
            setattr(self, attr, _init(rngs, attr, (config.num_hidden_layers, *shape), dtype))


class Model(nnx.Module):
    """BERT encoder. ``Model(config, dtype=jnp.float32, rngs=nnx.Rngs(0))``.

    Randomly initialised (normal std 0.02, LayerNorm one/zero, biases zero) in
    ``dtype``, also the compute dtype (LayerNorm and softmax in float32);
    ``rngs`` defaults to ``nnx.Rngs(0)``. Fill real weights with
    :func:`load_state`. The pooler is not implemented.
    """

    def __init__(self, config: Config, *, dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None):
        if rngs is None:
            rngs = nnx.Rngs(0)
        self.config = config
        self.dtype = jnp.dtype(dtype)
        for attr, shape in _top_shapes(config).values():
            setattr(self, attr, _init(rngs, attr, shape, self.dtype))
        self.layers = EncoderLayers(config, dtype=self.dtype, rngs=rngs)

    def __call__(
        self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None
    ) -> LMOutput:
        """Encode ``input_ids`` (batch, seq).

        ``attention_mask`` (1 = token, 0 = padding) defaults to all ones,
        ``token_type_ids`` to zeros. Returns ``LMOutput(hidden_states, None)``
        with hidden_states (n_layers + 1, batch, seq, hidden).
        """
        ids = jnp.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {ids.shape}")
        if ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        mask = jnp.ones(ids.shape, jnp.bool_) if attention_mask is None else jnp.asarray(attention_mask)
        types = jnp.zeros(ids.shape, jnp.int32) if token_type_ids is None else jnp.asarray(token_type_ids)
        for name, arr in (("attention_mask", mask), ("token_type_ids", types)):
            if arr.shape != ids.shape:
                raise ValueError(f"{name} shape {arr.shape} differs from input_ids shape {ids.shape}")
        params = {attr: getattr(self, attr).get_value() for attr, _ in _top_shapes(self.config).values()}
        params["layers"] = {
            attr: getattr(self.layers, attr).get_value() for attr in _layer_shapes(self.config)
        }
        hidden = _forward(
            params, ids.astype(jnp.int32), mask.astype(jnp.bool_), types.astype(jnp.int32),
            config=self.config,
        )
        return LMOutput(hidden_states=hidden, logits=None)


def _layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def _linear(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum("...i,oi->...o", x, w) + b


@partial(_jit, static_argnames=("config",))
def _forward(
    params: dict, ids: jax.Array, mask: jax.Array, types: jax.Array, *, config: Config
) -> jax.Array:
    c = config
    batch, seq = ids.shape
    heads, hd = c.num_attention_heads, c.head_dim
    act = ACTIVATIONS[c.hidden_act]
    emb = (
        params["word_embeddings"][ids]
        + params["token_type_embeddings"][types]
        + params["position_embeddings"][:seq][None]
    )
    h0 = _layer_norm(emb, params["embeddings_ln_weight"], params["embeddings_ln_bias"], c.layer_norm_eps)
    allowed = attention_mask_4d(mask, seq, causal=False)  # padded keys hidden
    scale = hd**-0.5

    def layer(h: jax.Array, p: dict) -> tuple[jax.Array, jax.Array]:
        q = _linear(h, p["q_weight"], p["q_bias"]).reshape(batch, seq, heads, hd)
        k = _linear(h, p["k_weight"], p["k_bias"]).reshape(batch, seq, heads, hd)
        v = _linear(h, p["v_weight"], p["v_bias"]).reshape(batch, seq, heads, hd)
        ctx = dot_product_attention(q, k, v, allowed, scale).reshape(batch, seq, heads * hd)
        attn = _linear(ctx, p["attn_out_weight"], p["attn_out_bias"])
        h = _layer_norm(attn + h, p["attn_ln_weight"], p["attn_ln_bias"], c.layer_norm_eps)
        inter = act(_linear(h, p["inter_weight"], p["inter_bias"]))
        out = _linear(inter, p["out_weight"], p["out_bias"])
        h = _layer_norm(out + h, p["out_ln_weight"], p["out_ln_bias"], c.layer_norm_eps)
        return h, h

    _, per_layer = jax.lax.scan(layer, h0, params["layers"])
    return jnp.concatenate([h0[None], per_layer], axis=0)


# Tensor-parallel layout for ``load(devices=...)`` (see jaxalign.lm._shard):
# attribute path -> the axis split over the devices, counted from the end (the
# layers' leading axis does not count). Weights keep the Hugging Face
# (out, in) layout: column-parallel q/k/v and intermediate weights split their
# outputs (-2), row-parallel output weights their inputs (-1), embeddings
# their hidden dimension. LayerNorms and biases are replicated.
SHARDING = {
    r"(word|position|token_type)_embeddings": -1,
    r"layers\.(q|k|v|inter)_weight": -2,
    r"layers\.(attn_out|out)_weight": -1,
}


# Documented, harmless extras: the position_ids / token_type_ids buffers, the
# pooler (not implemented: hidden states do not depend on it) and the heads of
# BertFor* checkpoints ("cls.*": masked-LM / next-sentence heads, not used).
_IGNORED = (
    r"embeddings\.position_ids",
    r"embeddings\.token_type_ids",
    r"pooler\..+",
    r"cls\..+",
)


def state_table(config: Config) -> dict[str, Target]:
    """Hugging Face tensor name -> parameter (path in ``nnx.state``, layer)."""
    table = {hf: Target((attr,)) for hf, (attr, _) in _top_shapes(config).items()}
    for i in range(config.num_hidden_layers):
        for attr, (hf, _) in _layer_shapes(config).items():
            table[f"encoder.layer.{i}.{hf}"] = Target(("layers", attr), i)
    return table


def _normalise_name(name: str) -> str:
    if name.startswith("bert."):
        name = name[len("bert."):]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def load_state(model: Model, tensors: Mapping[str, np.ndarray], *, place=None) -> None:
    """Fill ``model`` in place from a Hugging Face BERT state dict.

    Name table (``i`` = layer; a leading ``bert.`` as in ``BertFor*``
    checkpoints is stripped and legacy ``LayerNorm.gamma/beta`` read as
    ``weight/bias``):

    * ``embeddings.word_embeddings.weight`` -> ``word_embeddings``
    * ``embeddings.position_embeddings.weight`` -> ``position_embeddings``
    * ``embeddings.token_type_embeddings.weight`` -> ``token_type_embeddings``
    * ``embeddings.LayerNorm.{weight,bias}`` -> ``embeddings_ln_{weight,bias}``
    * ``encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}`` ->
      ``layers.{q,k,v}_{weight,bias}[i]``
    * ``encoder.layer.{i}.attention.output.dense.{weight,bias}`` -> ``layers.attn_out_*[i]``
    * ``encoder.layer.{i}.attention.output.LayerNorm.{weight,bias}`` -> ``layers.attn_ln_*[i]``
    * ``encoder.layer.{i}.intermediate.dense.{weight,bias}`` -> ``layers.inter_*[i]``
    * ``encoder.layer.{i}.output.dense.{weight,bias}`` -> ``layers.out_*[i]``
    * ``encoder.layer.{i}.output.LayerNorm.{weight,bias}`` -> ``layers.out_ln_*[i]``

    Matrices keep the Hugging Face (out, in) layout (no transposes).

    Ignored (documented, do not affect the hidden states): the
    ``embeddings.position_ids`` / ``embeddings.token_type_ids`` buffers,
    ``pooler.*`` (the pooler is not implemented) and ``cls.*`` pre-training
    heads. Raises ``ValueError`` listing unmapped tensors, unfilled parameters
    and shape mismatches; the model is left untouched in that case
    (``jaxalign.lm._common.fill_params``). ``model`` may be abstract
    (``nnx.eval_shape``).
    """
    fill_params(
        model, tensors, state_table(model.config), rename=_normalise_name, ignore=_IGNORED, place=place
    )
