"""Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama, ...) in Flax NNX.

Numerically follows ``transformers.LlamaForCausalLM`` (transformers 5.x):

* RMSNorm computed in float32 and cast back (as ``LlamaRMSNorm``);
* grouped-query attention (``num_key_value_heads`` <= ``num_attention_heads``,
  head ``h`` reads key/value head ``h // (heads // kv_heads)`` as
  ``repeat_kv``), ``head_dim`` may differ from ``hidden_size // heads``,
  optional q/k/v/o biases (``attention_bias``);
* rotary embeddings in the "rotate half" layout with ``rope_theta`` and the
  ``"linear"`` and ``"llama3"`` frequency scalings (anything else is refused);
* SwiGLU MLP (``silu(gate(x)) * up(x)``), optional biases (``mlp_bias``);
* tied or untied output head (``tie_word_embeddings``).

Positions are ``0 .. seq-1`` whatever the padding, exactly like transformers
when no ``position_ids`` are given; ``attention_mask`` only masks keys. Use right
padding (the usual case) so every real token keeps the positions it would have
alone; with left padding the real tokens are shifted, as in transformers.

``Model(...)(input_ids, attention_mask)`` returns :class:`LMOutput` whose
``hidden_states`` has shape ``(n_layers + 1, batch, seq, hidden)`` with the
``output_hidden_states=True`` convention of transformers: index 0 is the token
embeddings, index ``i`` the output of decoder layer ``i`` and the last entry the
output of the last layer *after* the final RMSNorm.

The decoder layers are stored stacked (leading axis = layer) and run with
``jax.lax.scan``, so a model compiles one layer whatever its depth.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.lm._common import LMOutput, Target, attention_mask_4d, fill_params

__all__ = ["Config", "Model", "load_state", "state_table", "rope_inv_freq", "LMOutput"]

_SUPPORTED_ROPE = ("default", "linear", "llama3")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Architecture of a Llama-family model (hashable: a static jit argument).

    Build it from a Hugging Face ``config.json`` dictionary with
    :meth:`from_hf`. Rotary scaling is stored flat: ``rope_type`` is
    ``"default"``, ``"linear"`` (uses ``rope_factor``) or ``"llama3"`` (uses
    ``rope_factor``, ``rope_low_freq_factor``, ``rope_high_freq_factor`` and
    ``rope_original_max_position_embeddings``). ``rope_freq_factors``
    (head_dim // 2 divisors of the inverse frequencies, llama.cpp's
    ``rope_freqs.weight``) comes from GGUF files only, see
    :mod:`jaxalign.lm._gguf`.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    rope_freq_factors: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.rope_type not in _SUPPORTED_ROPE:
            raise ValueError(
                f"unsupported rope type {self.rope_type!r}; supported: {', '.join(_SUPPORTED_ROPE)}"
            )
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            raise ValueError(
                f"rope_freq_factors has {len(self.rope_freq_factors)} entries, expected "
                f"head_dim // 2 = {self.head_dim // 2}"
            )

    @classmethod
    def from_hf(cls, hf_config: Mapping[str, Any]) -> Config:
        """Translate a Hugging Face Llama ``config.json`` dictionary.

        Accepts both the transformers 5 layout (``rope_parameters`` holding
        ``rope_theta`` and ``rope_type``) and the legacy one (top-level
        ``rope_theta`` plus ``rope_scaling``). Raises ``ValueError`` naming any
        option this implementation does not reproduce (another model type, an
        activation other than SiLU, rope types other than default/linear/llama3,
        partial rotary factors). The non-Hugging-Face key ``rope_freq_factors``
        (written by :func:`jaxalign.lm._gguf.read_gguf`) is honoured.
        """
        c = dict(hf_config)
        model_type = c.get("model_type", "llama")
        if model_type != "llama":
            raise ValueError(f"jaxalign.lm.llama handles model_type 'llama', got {model_type!r}")
        act = c.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"unsupported hidden_act {act!r} for llama (only 'silu')")
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads"):
            if key not in c:
                raise ValueError(f"llama config is missing {key!r}")
        heads = int(c["num_attention_heads"])
        kv_heads = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or c["hidden_size"] // heads)
        max_pos = int(c.get("max_position_embeddings", 2048))

        # transformers: `rope_scaling` (legacy) wins over `rope_parameters`;
        # rope_theta is taken from the dict, else top level, else 10000.
        rope = dict(c.get("rope_scaling") or c.get("rope_parameters") or {})
        theta = float(rope.get("rope_theta", c.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in _SUPPORTED_ROPE:
            raise ValueError(
                f"unsupported rope scaling {rope_type!r} for llama; supported: "
                f"{', '.join(_SUPPORTED_ROPE)}"
            )
        partial_factor = rope.get("partial_rotary_factor", c.get("partial_rotary_factor"))
        if partial_factor not in (None, 1, 1.0):
            raise ValueError(f"unsupported partial_rotary_factor {partial_factor!r} for llama")
        kwargs: dict[str, Any] = {}
        if rope_type in ("linear", "llama3"):
            if "factor" not in rope:
                raise ValueError(f"rope scaling {rope_type!r} needs a 'factor'")
            kwargs["rope_factor"] = float(rope["factor"])
        if rope_type == "llama3":
            for key in ("low_freq_factor", "high_freq_factor"):
                if key not in rope:
                    raise ValueError(f"rope scaling 'llama3' needs {key!r}")
            kwargs["rope_low_freq_factor"] = float(rope["low_freq_factor"])
            kwargs["rope_high_freq_factor"] = float(rope["high_freq_factor"])
            kwargs["rope_original_max_position_embeddings"] = int(
                c.get("original_max_position_embeddings")
                or rope.get("original_max_position_embeddings")
                or max_pos
            )
        factors = c.get("rope_freq_factors")
        if factors is not None:
            kwargs["rope_freq_factors"] = tuple(float(x) for x in factors)
        return cls(
            vocab_size=int(c["vocab_size"]),
            hidden_size=int(c["hidden_size"]),
            intermediate_size=int(c["intermediate_size"]),
            num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_type=rope_type,
            attention_bias=bool(c.get("attention_bias", False)),
            mlp_bias=bool(c.get("mlp_bias", False)),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            **kwargs,
        )


def rope_inv_freq(config: Config) -> np.ndarray:
    """Rotary inverse frequencies (head_dim // 2,), float32, as transformers."""
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if config.rope_type == "linear":
        inv = inv / config.rope_factor
    elif config.rope_type == "llama3":
        factor = config.rope_factor
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        old_ctx = config.rope_original_max_position_embeddings
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    if config.rope_freq_factors is not None:  # llama.cpp: theta / freq_factor
        inv = inv / np.asarray(config.rope_freq_factors, dtype=np.float64)
    return inv.astype(np.float32)


# --------------------------------------------------------------------------- model

# Stacked decoder-layer parameters: attribute -> (HF name inside layer i, shape).
# All matrices keep the Hugging Face (out_features, in_features) layout.
def _layer_shapes(c: Config) -> dict[str, tuple[str, tuple[int, ...]]]:
    d, hd, f = c.hidden_size, c.head_dim, c.intermediate_size
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    shapes = {
        "input_layernorm": ("input_layernorm.weight", (d,)),
        "q_proj": ("self_attn.q_proj.weight", (q, d)),
        "k_proj": ("self_attn.k_proj.weight", (kv, d)),
        "v_proj": ("self_attn.v_proj.weight", (kv, d)),
        "o_proj": ("self_attn.o_proj.weight", (d, q)),
        "post_attention_layernorm": ("post_attention_layernorm.weight", (d,)),
        "gate_proj": ("mlp.gate_proj.weight", (f, d)),
        "up_proj": ("mlp.up_proj.weight", (f, d)),
        "down_proj": ("mlp.down_proj.weight", (d, f)),
    }
    if c.attention_bias:
        shapes |= {
            "q_bias": ("self_attn.q_proj.bias", (q,)),
            "k_bias": ("self_attn.k_proj.bias", (kv,)),
            "v_bias": ("self_attn.v_proj.bias", (kv,)),
            "o_bias": ("self_attn.o_proj.bias", (d,)),
        }
    if c.mlp_bias:
        shapes |= {
            "gate_bias": ("mlp.gate_proj.bias", (f,)),
            "up_bias": ("mlp.up_proj.bias", (f,)),
            "down_bias": ("mlp.down_proj.bias", (d,)),
        }
    return shapes


class DecoderLayers(nnx.Module):
    """All decoder layers, each parameter stacked along a leading layer axis."""

    def __init__(self, config: Config, *, dtype: Any, rngs: nnx.Rngs):
        n = config.num_hidden_layers
        for attr, (_, shape) in _layer_shapes(config).items():
            full = (n, *shape)
            if attr.endswith("layernorm"):
                value = jnp.ones(full, dtype)
            elif attr.endswith("bias"):
                value = jnp.zeros(full, dtype)
            else:
                value = 0.02 * jax.random.normal(rngs.params(), full, dtype)
            setattr(self, attr, nnx.Param(value))


class Model(nnx.Module):
    """Llama causal LM. ``Model(config, dtype=jnp.float32, rngs=nnx.Rngs(0))``.

    Parameters are randomly initialised (normal, std 0.02; norms one, biases
    zero) in ``dtype``, which is also the compute dtype (RMSNorm and softmax run
    in float32). ``rngs`` defaults to ``nnx.Rngs(0)``. Fill real weights with
    :func:`load_state`.
    """

    def __init__(
        self,
        config: Config,
        *,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        if rngs is None:
            rngs = nnx.Rngs(0)
        self.config = config
        self.dtype = jnp.dtype(dtype)
        d, v = config.hidden_size, config.vocab_size
        self.embed_tokens = nnx.Param(0.02 * jax.random.normal(rngs.params(), (v, d), self.dtype))
        self.layers = DecoderLayers(config, dtype=self.dtype, rngs=rngs)
        self.norm = nnx.Param(jnp.ones((d,), self.dtype))
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nnx.Param(0.02 * jax.random.normal(rngs.params(), (v, d), self.dtype))
        )

    def __call__(self, input_ids: Any, attention_mask: Any = None) -> LMOutput:
        """Run the model on ``input_ids`` (batch, seq) of token ids.

        ``attention_mask`` (batch, seq), 1 for real tokens and 0 for padding,
        defaults to all ones. Returns ``LMOutput(hidden_states, logits)`` with
        hidden_states (n_layers + 1, batch, seq, hidden) and logits
        (batch, seq, vocab), both in the model dtype.
        """
        ids = jnp.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {ids.shape}")
        if attention_mask is None:
            mask = jnp.ones(ids.shape, jnp.bool_)
        else:
            mask = jnp.asarray(attention_mask)
            if mask.shape != ids.shape:
                raise ValueError(
                    f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}"
                )
            mask = mask.astype(jnp.bool_)
        params = {
            "embed_tokens": self.embed_tokens.get_value(),
            "norm": self.norm.get_value(),
            "lm_head": None if self.lm_head is None else self.lm_head.get_value(),
            "layers": {
                attr: getattr(self.layers, attr).get_value() for attr in _layer_shapes(self.config)
            },
        }
        inv_freq = jnp.asarray(rope_inv_freq(self.config))
        hidden, logits = _forward(params, inv_freq, ids.astype(jnp.int32), mask, config=self.config)
        return LMOutput(hidden_states=hidden, logits=logits)


def _rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
    return weight * (x32 * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    y = jnp.einsum("...i,oi->...o", x, w)
    return y if b is None else y + b


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


@partial(jax.jit, static_argnames=("config",))
def _forward(
    params: dict, inv_freq: jax.Array, ids: jax.Array, mask: jax.Array, *, config: Config
) -> tuple[jax.Array, jax.Array]:
    c = config
    batch, seq = ids.shape
    heads, kv_heads, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    groups = heads // kv_heads
    h0 = params["embed_tokens"][ids]
    dtype = h0.dtype

    positions = jnp.arange(seq, dtype=jnp.float32)
    freqs = positions[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # (seq, hd)
    cos = jnp.cos(emb).astype(dtype)[None, :, None, :]
    sin = jnp.sin(emb).astype(dtype)[None, :, None, :]

    # (batch, 1, query, key) -> (batch, 1, 1, query, key): over kv heads and groups
    allowed = attention_mask_4d(mask, seq, causal=True)[:, :, None]
    scale = hd**-0.5
    neg = jnp.finfo(jnp.float32).min

    def layer(h: jax.Array, p: dict) -> tuple[jax.Array, jax.Array]:
        x = _rms_norm(h, p["input_layernorm"], c.rms_norm_eps)
        q = _linear(x, p["q_proj"], p.get("q_bias")).reshape(batch, seq, heads, hd)
        k = _linear(x, p["k_proj"], p.get("k_bias")).reshape(batch, seq, kv_heads, hd)
        v = _linear(x, p["v_proj"], p.get("v_bias")).reshape(batch, seq, kv_heads, hd)
        q = _rotate(q, cos, sin).reshape(batch, seq, kv_heads, groups, hd)
        k = _rotate(k, cos, sin)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) * scale
        scores = jnp.where(allowed, scores, neg)
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        attn = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(batch, seq, heads * hd)
        h = h + _linear(attn, p["o_proj"], p.get("o_bias"))
        x = _rms_norm(h, p["post_attention_layernorm"], c.rms_norm_eps)
        gate = _linear(x, p["gate_proj"], p.get("gate_bias"))
        up = _linear(x, p["up_proj"], p.get("up_bias"))
        h = h + _linear(jax.nn.silu(gate) * up, p["down_proj"], p.get("down_bias"))
        return h, h

    h_last, per_layer = jax.lax.scan(layer, h0, params["layers"])
    final = _rms_norm(h_last, params["norm"], c.rms_norm_eps)
    hidden = jnp.concatenate([h0[None], per_layer[:-1], final[None]], axis=0)
    head = params["embed_tokens"] if params["lm_head"] is None else params["lm_head"]
    logits = jnp.einsum("bsd,vd->bsv", final, head)
    return hidden, logits


# --------------------------------------------------------------------------- loading

# Harmless buffers some checkpoints carry: rotary inverse frequencies, which
# are recomputed from the config (old Llama checkpoints saved them per layer).
_IGNORED = (r".*rotary_emb\.inv_freq",)


def state_table(config: Config) -> dict[str, Target]:
    """Hugging Face tensor name -> parameter (path in ``nnx.state``, layer)."""
    table = {
        "model.embed_tokens.weight": Target(("embed_tokens",)),
        "model.norm.weight": Target(("norm",)),
    }
    if not config.tie_word_embeddings:
        table["lm_head.weight"] = Target(("lm_head",))
    for i in range(config.num_hidden_layers):
        for attr, (hf, _) in _layer_shapes(config).items():
            table[f"model.layers.{i}.{hf}"] = Target(("layers", attr), i)
    return table


def load_state(model: Model, tensors: Mapping[str, np.ndarray]) -> None:
    """Fill ``model`` in place from a Hugging Face Llama state dict.

    Name table (:func:`state_table`; ``i`` = layer; matrices keep the
    Hugging Face (out, in) layout, no transposes):

    * ``model.embed_tokens.weight`` -> ``embed_tokens``
    * ``model.norm.weight`` -> ``norm``
    * ``lm_head.weight`` -> ``lm_head`` (untied configs only)
    * ``model.layers.{i}.input_layernorm.weight`` -> ``layers.input_layernorm[i]``
    * ``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`` -> ``layers.{q,k,v,o}_proj[i]``
    * ``model.layers.{i}.self_attn.{q,k,v,o}_proj.bias`` -> ``layers.{q,k,v,o}_bias[i]``
      (``attention_bias``)
    * ``model.layers.{i}.post_attention_layernorm.weight`` -> ``layers.post_attention_layernorm[i]``
    * ``model.layers.{i}.mlp.{gate,up,down}_proj.weight`` -> ``layers.{gate,up,down}_proj[i]``
    * ``model.layers.{i}.mlp.{gate,up,down}_proj.bias`` -> ``layers.{gate,up,down}_bias[i]``
      (``mlp_bias``)

    A checkpoint of the bare ``LlamaModel`` (names without the ``model.``
    prefix) is accepted too. Ignored: ``*rotary_emb.inv_freq`` buffers (rebuilt
    from the config). With tied embeddings an ``lm_head.weight`` is accepted
    only if it equals the embeddings (transformers would silently replace it).
    Raises ``ValueError`` listing every unmapped checkpoint tensor, every
    parameter left unfilled and every shape mismatch; the model is left
    untouched in that case (``jaxalign.lm._common.fill_params``). ``model`` may
    be abstract (``nnx.eval_shape``).
    """
    c = model.config
    tensors = dict(tensors)
    bare = not any(k.startswith("model.") for k in tensors)
    if c.tie_word_embeddings and "lm_head.weight" in tensors:
        head = tensors.pop("lm_head.weight")
        embed = tensors.get("embed_tokens.weight" if bare else "model.embed_tokens.weight")
        if embed is not None and not np.array_equal(np.asarray(head), np.asarray(embed)):
            raise ValueError(
                "checkpoint has an lm_head.weight different from model.embed_tokens.weight but the "
                "config ties them (tie_word_embeddings=True)"
            )

    def rename(name: str) -> str:
        return f"model.{name}" if bare and name != "lm_head.weight" else name

    fill_params(model, tensors, state_table(c), rename=rename, ignore=_IGNORED)
