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

Like ``gpt2`` and ``gpt_neox``, the decoder layers are ``nnx`` modules
stacked along a leading layer axis (``stacked_blocks``) and run with
``nnx.scan``, so a model compiles one layer whatever its depth. Linear layers
are ``nnx.Linear`` with Flax's (in, out) kernels: the Hugging Face
``nn.Linear`` weights (out, in) are transposed on load.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.lm._common import (
    LMOutput,
    Target,
    apply_rotary,
    attention_mask_4d,
    check_inputs,
    dot_product_attention,
    fill_params,
    in_row_chunks,
    run_block,
    stacked_blocks,
    transpose,
)

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

    #: Causal mask: a token sees only those before it (``jaxalign.lm.is_causal``).
    causal: ClassVar[bool] = True

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 2048  # trained context (rotary: no table, no hard limit)
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

    @property
    def max_length(self) -> int:
        """The longest sequence the model was trained on (the common name
        every architecture's Config gives its maximum length): Hugging Face
        ``max_position_embeddings``, a GGUF file's ``llama.context_length``."""
        return self.max_position_embeddings

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
            max_position_embeddings=max_pos,
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_type=rope_type,
            attention_bias=bool(c.get("attention_bias", False)),
            mlp_bias=bool(c.get("mlp_bias", False)),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            **kwargs,
        )


    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (``from_hf``'s inverse).

        Rotary scaling is written in the legacy layout (top-level
        ``rope_theta`` plus ``rope_scaling`` for "linear" / "llama3"), which
        transformers 4 and 5 both read. ``Config.from_hf(c.to_hf()) == c``.
        Raises ValueError for GGUF-only ``rope_freq_factors``, which no
        Hugging Face config can express.
        """
        if self.rope_freq_factors is not None:
            raise ValueError("this Llama config has GGUF rope_freq_factors (llama.cpp's rope_freqs.weight), "
                             "which a Hugging Face config.json cannot express")
        out = {
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim, "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "attention_bias": self.attention_bias, "mlp_bias": self.mlp_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        if self.rope_type != "default":
            scaling = {"rope_type": self.rope_type, "factor": self.rope_factor}
            if self.rope_type == "llama3":
                scaling |= {"low_freq_factor": self.rope_low_freq_factor,
                            "high_freq_factor": self.rope_high_freq_factor,
                            "original_max_position_embeddings": self.rope_original_max_position_embeddings}
            out["rope_scaling"] = scaling
        return out

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

_init = nnx.initializers.normal(0.02)


def rotary_cos_sin(config: Config, seq: int, positions: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """cos, sin (seq, head_dim), float32, of positions ``0 .. seq-1`` (or of ``positions``, (..., seq):
    then (..., seq, head_dim)) times :func:`rope_inv_freq`, every frequency repeated twice (rotate-half
    layout)."""
    inv_freq = jnp.asarray(rope_inv_freq(config))
    pos = jnp.arange(seq) if positions is None else jnp.asarray(positions)
    freqs = pos.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class RMSNorm(nnx.Module):
    """transformers' ``LlamaRMSNorm``: statistics in float32, the normalised
    values cast back to the input dtype, then times ``scale`` (HF ``weight``)."""

    def __init__(self, dim: int, eps: float, *, dtype: Any):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        # the scale in x's dtype: float32 master weights under bfloat16 compute stay bfloat16 (same values
        # otherwise: the scale already has x's dtype)
        return self.scale[...].astype(x.dtype) * (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)


def _linear(n_in: int, n_out: int, bias: bool, *, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        n_in, n_out, use_bias=bias, dtype=dtype, param_dtype=dtype, kernel_init=_init, rngs=rngs
    )


class Attention(nnx.Module):
    """Grouped-query attention with rotary queries and keys."""

    def __init__(self, config: Config, *, dtype: Any, rngs: nnx.Rngs):
        c = config
        d, hd, bias = c.hidden_size, c.head_dim, c.attention_bias
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, hd
        self.q_proj = _linear(d, self.heads * hd, bias, dtype=dtype, rngs=rngs)
        self.k_proj = _linear(d, self.kv_heads * hd, bias, dtype=dtype, rngs=rngs)
        self.v_proj = _linear(d, self.kv_heads * hd, bias, dtype=dtype, rngs=rngs)
        self.o_proj = _linear(self.heads * hd, d, bias, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, cos, sin):
        b, s, _ = x.shape
        hd = self.head_dim
        q = self.q_proj(x).reshape(b, s, self.heads, hd)
        k = self.k_proj(x).reshape(b, s, self.kv_heads, hd)
        v = self.v_proj(x).reshape(b, s, self.kv_heads, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = dot_product_attention(q, k, v, mask, hd**-0.5, causal=True)
        return self.o_proj(out.reshape(b, s, self.heads * hd))


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: Config, *, dtype: Any, rngs: nnx.Rngs):
        d, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = _linear(d, f, bias, dtype=dtype, rngs=rngs)
        self.up_proj = _linear(d, f, bias, dtype=dtype, rngs=rngs)
        self.down_proj = _linear(f, d, bias, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return in_row_chunks(lambda r: self.down_proj(jax.nn.silu(self.gate_proj(r)) * self.up_proj(r)), x)


class Block(nnx.Module):
    """One decoder layer: ``h = x + attn(norm(x))``, then ``h + mlp(norm(h))``."""

    def __init__(self, config: Config, *, dtype: Any, rngs: nnx.Rngs):
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype)
        self.self_attn = Attention(config, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype)
        self.mlp = MLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), mask, cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Model(nnx.Module):
    """Llama causal LM. ``Model(config, dtype=jnp.float32, rngs=nnx.Rngs(0))``.

    ``layers`` holds the decoder layers stacked on axis 0. Parameters are
    randomly initialised (normal, std 0.02; norms one, biases zero) in
    ``dtype``, which is also the compute dtype (RMSNorm and softmax run in
    float32). ``rngs`` defaults to ``nnx.Rngs(0)``. Fill real weights with
    :func:`load_state`.
    """

    #: Rematerialise each block in the backward pass (``_common.run_block``); set by training loops.
    remat: bool = False

    def __init__(self, config: Config, *, dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = config
        d, v = config.hidden_size, config.vocab_size
        self.embed_tokens = nnx.Embed(v, d, dtype=dtype, param_dtype=dtype, embedding_init=_init, rngs=rngs)
        self.layers = stacked_blocks(
            lambda r: Block(config, dtype=dtype, rngs=r), config.num_hidden_layers, rngs
        )
        self.norm = RMSNorm(d, config.rms_norm_eps, dtype=dtype)
        if not config.tie_word_embeddings:
            self.lm_head = _linear(d, v, False, dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> LMOutput:
        """Run the model on ``input_ids`` (batch, seq) of token ids.

        ``attention_mask`` (batch, seq), 1 for real tokens and 0 for padding,
        defaults to all ones; or (batch, seq, seq), which keys each query may
        see (on top of the causal mask). ``position_ids`` (batch, seq)
        default to ``0 .. seq-1``. Returns ``LMOutput(hidden_states, logits)``
        with hidden_states (n_layers + 1, batch, seq, hidden) and logits
        (batch, seq, vocab), both in the model dtype.
        """
        cfg = self.config
        ids = jnp.asarray(input_ids)
        check_inputs(ids, attention_mask, position_ids)
        seq = ids.shape[1]
        x = self.embed_tokens(ids)
        mask = attention_mask_4d(attention_mask, seq)
        cos, sin = rotary_cos_sin(cfg, seq, position_ids)

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def run(h, block):
            h = run_block(block, h, mask, cos, sin, remat=self.remat)
            return h, h

        out, per_block = run(x, self.layers)
        final = self.norm(out)
        hidden = jnp.concatenate([x[None], per_block[:-1], final[None]], axis=0)
        return LMOutput(hidden_states=hidden, logits=self.unembed(final))

    def unembed(self, final: jax.Array) -> jax.Array:
        """Logits of final hidden states (``hidden_states[-1]``): (..., hidden) -> (..., vocab)."""
        return self.embed_tokens.attend(final) if self.config.tie_word_embeddings else self.lm_head(final)


# Linear projections of a decoder layer by group (LoRA targets, ``jaxalign.finetune.add_lora``):
# dotted paths of ``nnx.Linear`` modules of the stacked layers.
PROJECTIONS = {
    "attention": ("layers.self_attn.q_proj", "layers.self_attn.k_proj", "layers.self_attn.v_proj",
                  "layers.self_attn.o_proj"),
    "mlp": ("layers.mlp.gate_proj", "layers.mlp.up_proj", "layers.mlp.down_proj"),
}


# --------------------------------------------------------------------------- sharding

# Tensor-parallel layout for ``load(devices=...)`` (see jaxalign.lm._shard):
# dotted parameter path -> the axis split over the devices, counted from the
# end (the layers' leading axis does not count). Kernels are (in, out):
# column-parallel q/k/v, gate and up projections split outputs (heads, MLP
# units), row-parallel o and down projections and the LM head their inputs,
# the embedding its hidden dimension. Norms and biases are replicated.
SHARDING = {
    r"embed_tokens\.embedding": -1,
    r"layers\.self_attn\.[qkv]_proj\.kernel": -1,
    r"layers\.mlp\.(gate|up)_proj\.kernel": -1,
    r"layers\.self_attn\.o_proj\.kernel": -2,
    r"layers\.mlp\.down_proj\.kernel": -2,
    r"lm_head\.kernel": -2,
}


# --------------------------------------------------------------------------- loading

# Harmless buffers some checkpoints carry: rotary inverse frequencies, which
# are recomputed from the config (old Llama checkpoints saved them per layer).
_IGNORED = (r".*rotary_emb\.inv_freq",)


def state_table(config: Config) -> dict[str, Target]:
    """Hugging Face tensor name -> parameter (path in ``nnx.state``, layer, transform)."""
    table = {
        "model.embed_tokens.weight": Target(("embed_tokens", "embedding")),
        "model.norm.weight": Target(("norm", "scale")),
    }
    if not config.tie_word_embeddings:
        table["lm_head.weight"] = Target(("lm_head", "kernel"), transform=transpose)
    per_block = {"input_layernorm.weight": (("input_layernorm", "scale"), None),
                 "post_attention_layernorm.weight": (("post_attention_layernorm", "scale"), None)}
    linears = [("self_attn", n, config.attention_bias) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [("mlp", n, config.mlp_bias) for n in ("gate_proj", "up_proj", "down_proj")]
    for module, name, bias in linears:
        per_block[f"{module}.{name}.weight"] = ((module, name, "kernel"), transpose)
        if bias:
            per_block[f"{module}.{name}.bias"] = ((module, name, "bias"), None)
    for i in range(config.num_hidden_layers):
        for hf, (path, fn) in per_block.items():
            table[f"model.layers.{i}.{hf}"] = Target(("layers", *path), layer=i, transform=fn)
    return table


def load_state(
    model: Model,
    tensors: Mapping[str, np.ndarray],
    *,
    place: Callable[[tuple[str, ...], np.ndarray], jax.Array] | None = None,
) -> None:
    """Fill ``model`` in place from a Hugging Face Llama state dict.

    Name table (:func:`state_table`; ``i`` = layer; ``nn.Linear`` weights
    (out, in) are transposed to Flax kernels (in, out)):

    * ``model.embed_tokens.weight`` -> ``embed_tokens.embedding``
    * ``model.norm.weight`` -> ``norm.scale``
    * ``lm_head.weight`` -> ``lm_head.kernel`` (untied configs only)
    * ``model.layers.{i}.input_layernorm.weight`` -> ``layers.input_layernorm.scale[i]``
    * ``model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}`` ->
      ``layers.self_attn.{q,k,v,o}_proj.{kernel,bias}[i]`` (biases with ``attention_bias``)
    * ``model.layers.{i}.post_attention_layernorm.weight`` ->
      ``layers.post_attention_layernorm.scale[i]``
    * ``model.layers.{i}.mlp.{gate,up,down}_proj.{weight,bias}`` ->
      ``layers.mlp.{gate,up,down}_proj.{kernel,bias}[i]`` (biases with ``mlp_bias``)

    A checkpoint of the bare ``LlamaModel`` (names without the ``model.``
    prefix) is accepted too. Ignored: ``*rotary_emb.inv_freq`` buffers (rebuilt
    from the config). With tied embeddings an ``lm_head.weight`` is accepted
    only if it equals the embeddings (transformers would silently replace it).
    Raises ``ValueError`` listing every unmapped checkpoint tensor, every
    parameter left unfilled and every shape mismatch; the model is left
    untouched in that case (``jaxalign.lm._common.fill_params``, which also
    documents ``place``). ``model`` may be abstract (``nnx.eval_shape``).
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

    fill_params(model, tensors, state_table(c), rename=rename, ignore=_IGNORED, place=place)
