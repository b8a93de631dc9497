"""LoRA: low-rank adapters on the linear projections of a causal LM (Hu et al. 2021).

A projection ``y = x W + b`` (W: d_in x d_out, frozen) becomes::

    y = x W + b + (alpha / r) * drop(x) A B          A: d_in x r,  B: r x d_out

with rank ``r`` much smaller than d_in and d_out; only A and B are trained.
A starts uniform in +-1/sqrt(d_in) (PEFT's ``kaiming_uniform(a=sqrt(5))``), B
at zero, so the adapted model *is* the base model at the start: ``x A B`` is
exactly 0 and ``y + 0`` is exactly ``y``, logit for logit. ``drop`` is
inverted dropout of rate ``dropout`` on the adapter's input only, in
training steps only (evaluation, scoring and export are deterministic); its
mask is drawn from the layer's key with the training step and the input's
sum folded in, so it is a function of the step and the data (a resumed run
draws the same masks).

Merging: ``W' = W + (alpha / r) A B`` (computed in float64 on the host) gives a plain
model with the adapted model's function; it differs from the unmerged
forward pass only by float rounding (``x W' `` vs ``x W + s (x A) B``).
``save_pretrained`` merges, so exports are plain Hugging Face models.

Cost: per projection and token ``2 r (d_in + d_out)`` extra flops against
``2 d_in d_out`` (SmolLM2, r = 8 on every projection: ~2%); trainable
parameters ``r (d_in + d_out)`` per projection (SmolLM2-135M, r = 8,
attention + MLP: 2.4 M of 135 M, 1.8%), and so are the gradients and the two
Adam moments, which is what lets a large model fit one accelerator.

The blocks of :mod:`jaxalign.lm` are stacked on a leading layer axis
(``nnx.scan``), so an adapter of a stacked projection is stacked too: A is
(n_layers, d_in, r), B (n_layers, r, d_out). :class:`LoRALinear` keeps the
projection's ``kernel`` and ``bias`` at their paths (``h.attn.c_attn.kernel``)
and adds ``lora_a`` / ``lora_b`` (``nnx.LoRAParam``, a kind of ``nnx.Param``)
beside them, so sharding rules and checkpoint-name tables still apply.
Which projections exist is each architecture's ``PROJECTIONS`` table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign._core.seeds import rng

__all__ = ["LoRAKey", "LoRALinear", "add_lora", "has_lora", "lora_settings", "merge_lora", "merged_params",
           "projections"]


class LoRAKey(nnx.Variable):
    """Raw uint32 PRNG keys of a :class:`LoRALinear`'s dropout (one per stacked layer); not trained, not exported."""


class LoRALinear(nnx.Linear):
    """An ``nnx.Linear`` with a low-rank adapter: ``x W + b + (alpha / rank) drop(x) A B`` (module docstring).

    Built around an existing layer (its variables are taken over, not
    copied): ``LoRALinear(linear, rank=8, alpha=16, rng=np.random.default_rng(0))``;
    ``rng`` (numpy) draws A and the dropout keys on the host.
    ``deterministic`` (default True) turns the adapter's dropout off;
    training steps set it False.
    """

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, dropout: float = 0.0,
                 rng: np.random.Generator):
        for name, value in vars(base).items():
            if not name.startswith("_"):
                setattr(self, name, value)
        kernel = self.kernel
        lead, (d_in, d_out) = kernel.shape[:-2], kernel.shape[-2:]
        dtype = kernel.dtype
        bound = 1.0 / math.sqrt(d_in)
        a = rng.uniform(-bound, bound, (*lead, d_in, rank)).astype(dtype)
        self.lora_a = nnx.LoRAParam(jnp.asarray(a))
        self.lora_b = nnx.LoRAParam(jnp.zeros((*lead, rank, d_out), dtype))
        self.lora_rank = int(rank)
        self.lora_alpha = float(alpha)
        self.lora_dropout = float(dropout)
        self.deterministic = True
        if dropout > 0:  # raw key data of the default PRNG (threefry: 2 x uint32), drawn on the host
            width = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape[-1]
            self.dropout_key = LoRAKey(jnp.asarray(rng.integers(0, 2**32, (*lead, width), dtype=np.uint32)))

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    def __call__(self, inputs, out_sharding=None):
        y = super().__call__(inputs, out_sharding)
        x, a, b = self.promote_dtype((inputs, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        if self.lora_dropout > 0 and not self.deterministic:
            keep = 1.0 - self.lora_dropout
            # the input's sum (its float32 bits) is folded in too: MLPs run blocks of rows through the layer
            # (lm._common.in_row_chunks), each with the same key, and must not repeat one mask per block
            salt = jax.lax.bitcast_convert_type(jnp.sum(jax.lax.stop_gradient(x), dtype=jnp.float32), jnp.uint32)
            key = jax.random.fold_in(jax.random.wrap_key_data(self.dropout_key[...]), salt)
            mask = jax.random.bernoulli(key, keep, x.shape)
            x = jnp.where(mask, x / keep, 0).astype(x.dtype)
        return y + (self.lora_scale * ((x @ a) @ b)).astype(y.dtype)


def fold_dropout_keys(keys, salt):
    """Every :class:`LoRAKey` leaf of ``keys`` (a pure dict) with ``salt`` (an int, e.g. the micro-step) folded in."""
    def fold(k):
        flat = k.reshape(-1, k.shape[-1])
        out = jax.vmap(lambda r: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(r), salt)))(flat)
        return out.reshape(k.shape)

    return jax.tree.map(fold, keys)


# ------------------------------------------------------------------ targets


def _architecture(model):
    from jaxalign.lm import MODEL_TYPES
    from jaxalign.lm._registry import architecture

    module = type(model).__module__
    for kind, path in MODEL_TYPES.items():
        if path == module:
            return kind, architecture(kind)
    raise ValueError(f"{module}.{type(model).__name__} is not an architecture of jaxalign.lm "
                     f"(known: {', '.join(sorted(MODEL_TYPES))})")


def projections(model, targets: str | Iterable[str] = ("attention", "mlp"), *, key: str = "targets") -> list[str]:
    """Dotted paths of the projections ``targets`` names in ``model``'s architecture (``PROJECTIONS``).

    A target is a group (``"attention"``, ``"mlp"``), a projection's path
    (``"h.attn.c_attn"``) or its end (``"attn.c_attn"``, ``"c_attn"``; GPT-2's
    ``"c_proj"`` is both the attention's and the MLP's output). Raises
    ValueError naming ``key`` and what the architecture offers for an
    unknown name, an empty list, or an architecture without projections.
    """
    kind, arch = _architecture(model)
    table = getattr(arch, "PROJECTIONS", None)
    if not table:
        raise ValueError(f"{key}: {kind} models have no LoRA projections (LoRA is for the causal models "
                         "jaxalign.finetune trains: gpt2, gpt_neox, llama)")
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{key}: give one or more group or projection names, got {targets!r}")
    every = [p for group in table.values() for p in group]
    chosen: list[str] = []
    for name in names:
        found = list(table[name]) if name in table else [p for p in every if p == name or p.endswith("." + name)]
        if not found:
            short = sorted({p.rsplit(".", 1)[-1] for p in every})
            raise ValueError(f"{key}: unknown LoRA target {name!r} for {kind}; groups: {', '.join(table)}; "
                             f"projections: {', '.join(every)} (or their last part: {', '.join(short)})")
        chosen += [p for p in found if p not in chosen]
    return chosen


def _modules(model):
    """(dotted path, parent, attribute, module) of every LoRALinear in ``model``."""
    out = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, LoRALinear):
            parent = model
            for part in path[:-1]:
                parent = getattr(parent, part)
            out.append((".".join(map(str, path)), parent, path[-1], node))
    return out


def has_lora(model) -> bool:
    """Whether ``model`` carries LoRA adapters (:func:`add_lora`)."""
    return any(isinstance(node, LoRALinear) for _, node in nnx.iter_graph(model))


def lora_settings(model) -> dict | None:
    """``{"rank", "alpha", "dropout", "projections"}`` of ``model``'s adapters (None without adapters)."""
    mods = _modules(model)
    if not mods:
        return None
    first = mods[0][3]
    return {"rank": first.lora_rank, "alpha": first.lora_alpha, "dropout": first.lora_dropout,
            "projections": [p for p, *_ in mods]}


def add_lora(model, *, rank: int = 8, alpha: float = 16.0, targets: str | Iterable[str] = ("attention", "mlp"),
             dropout: float = 0.0, seed: int = 0):
    """Put LoRA adapters on ``model``'s projections ``targets`` (in place); returns ``model``.

    rank, alpha
        the adapters' rank r and scale numerator: the update is
        ``(alpha / r) A B`` (module docstring).
    targets
        groups (``"attention"``, ``"mlp"``) or projection names, see
        :func:`projections`.
    dropout
        dropout rate on the adapters' inputs during training (0: none).
    seed
        the A initialisations (and dropout keys), one independent stream
        per projection (``_core.seeds.rng(seed, "lora", path)``).

    The model's outputs do not change (B = 0). :func:`jaxalign.finetune.fit`
    then trains the adapters only; :func:`jaxalign.finetune.save_pretrained`
    merges them into the weights. Raises ValueError for a bad rank, alpha or
    dropout, an unknown target, a model that already has adapters, or a
    model without projections (BERT).
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank: must be an integer >= 1, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not alpha > 0:
        raise ValueError(f"alpha: must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout: must be in [0, 1), got {dropout!r}")
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters (merge_lora gives a plain model)")
    for path in projections(model, targets):
        parent = model
        *head, attr = path.split(".")
        for part in head:
            parent = getattr(parent, part)
        base = getattr(parent, attr)
        if not type(base) is nnx.Linear:
            raise ValueError(f"{path} is a {type(base).__name__}, not an nnx.Linear")
        d_in, d_out = base.kernel.shape[-2:]
        if rank > min(d_in, d_out):
            raise ValueError(f"rank: {rank} exceeds {path}'s smaller dimension ({min(d_in, d_out)})")
        setattr(parent, attr, LoRALinear(base, rank=int(rank), alpha=float(alpha), dropout=float(dropout),
                                         rng=rng(seed, "lora", path)))
    return model


def _merged_kernel(mod: LoRALinear) -> np.ndarray:
    """``W + (alpha / r) A B`` on the host, in float64, cast back to W's dtype."""
    w = np.asarray(mod.kernel[...])
    a, b = (np.asarray(v[...], np.float64) for v in (mod.lora_a, mod.lora_b))
    return (w.astype(np.float64) + mod.lora_scale * np.matmul(a, b)).astype(w.dtype)


def merged_params(model) -> dict[tuple[str, ...], jax.Array]:
    """Flat ``{path: value}`` of ``model``'s plain parameters, each adapter merged into its kernel.

    Without adapters: ``nnx.to_flat_state(nnx.state(model, nnx.Param))``'s
    values. The export path (``save_pretrained``) reads this.
    """
    params = {path: v.get_value() for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    for dotted, _, _, mod in _modules(model):
        path = tuple(dotted.split("."))
        params[path + ("kernel",)] = _merged_kernel(mod)
        del params[path + ("lora_a",)], params[path + ("lora_b",)]
    return params


def merge_lora(model):
    """A plain model (``nnx.Linear`` projections, ``W + (alpha / r) A B``) with ``model``'s function.

    ``model`` is left as it is (the new model shares its unchanged arrays).
    A model without adapters is returned as a copy.
    """
    plain = nnx.clone(model)
    for _, parent, attr, mod in _modules(plain):
        linear = nnx.eval_shape(lambda: nnx.Linear(
            1, 1, use_bias=mod.use_bias, dtype=mod.dtype, param_dtype=mod.param_dtype, precision=mod.precision,
            dot_general=mod.dot_general, promote_dtype=mod.promote_dtype,
            preferred_element_type=mod.preferred_element_type, rngs=nnx.Rngs(0)))
        linear.in_features, linear.out_features = mod.in_features, mod.out_features
        linear.kernel = nnx.Param(jnp.asarray(_merged_kernel(mod)))
        if mod.use_bias:
            linear.bias = nnx.Param(mod.bias[...])
        setattr(parent, attr, linear)
    return plain
