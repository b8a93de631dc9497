"""Small pieces shared by the architecture modules.

Only what several architectures really share lives here: the output type,
the attention mask, scaled dot-product attention, the activation table, a
LayerNorm configured like PyTorch's, and ``fill_params``, the loader that
copies checkpoint tensors into parameters through an explicit name table and
refuses partial loads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class LMOutput(NamedTuple):
    """What every model returns.

    hidden_states
        (n_layers + 1, batch, seq, dim), transformers' ``output_hidden_states``
        convention: index 0 the embeddings (plus positions), index i the output
        of block i, the last one after the final norm for decoder models.
    logits
        (batch, seq, vocab), or None for encoders without an LM head.
    """

    hidden_states: jax.Array
    logits: jax.Array | None


# --------------------------------------------------------------------- masks


def attention_mask_4d(
    attention_mask: jax.Array | None, seq_len: int, *, causal: bool = True
) -> jax.Array:
    """Boolean mask (batch or 1, 1, seq, seq): True where query q may see key k.

    ``attention_mask`` is transformers' (batch, seq) 0/1 padding mask (None:
    no padding), or a (batch, seq, seq) mask of which keys each query may
    see (nonzero: visible), e.g. several continuations packed after one
    shared prompt (``jaxalign.finetune``). Keys at padded positions are
    hidden; with ``causal`` keys after the query are too. Queries at padded
    positions are not masked themselves (like transformers); their rows may
    be all False, which ``dot_product_attention`` turns into a finite uniform
    average, so no NaN ever reaches the real positions.
    """
    mask = jnp.ones((1, 1, seq_len, seq_len), dtype=bool)
    if causal:
        mask = jnp.tril(mask)
    if attention_mask is not None:
        am = jnp.asarray(attention_mask).astype(bool)
        mask = mask & (am[:, None, None, :] if am.ndim == 2 else am[:, None])
    return mask


def check_inputs(ids: jax.Array, attention_mask, position_ids) -> None:
    """Shape checks of a causal LM's inputs: ids (batch, seq), a (batch, seq) or (batch, seq, seq) mask,
    position_ids (batch, seq) or (seq,)."""
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, seq), got shape {ids.shape}")
    if attention_mask is not None:
        shape = tuple(jnp.shape(attention_mask))
        if shape not in (ids.shape, (*ids.shape, ids.shape[1])):
            raise ValueError(f"attention_mask shape {shape} is neither input_ids' shape {ids.shape} nor "
                             f"(batch, seq, seq) = {(*ids.shape, ids.shape[1])}")
    if position_ids is not None and tuple(jnp.shape(position_ids)) not in (ids.shape, ids.shape[1:]):
        raise ValueError(f"position_ids shape {tuple(jnp.shape(position_ids))} differs from input_ids shape "
                         f"{ids.shape}")


#: Query rows per block in :func:`dot_product_attention` on CPU (0: never block).
ATTENTION_BLOCK = 128


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float | jax.Array,
    *, causal: bool = False,
) -> jax.Array:
    """softmax(scale * q k^T, masked) v, heads kept apart.

    q: (batch, seq, heads, head_dim); k, v: (batch, seq, kv_heads, head_dim)
    with ``heads`` a multiple of ``kv_heads`` (grouped-query attention: query
    head h reads key/value head ``h // (heads // kv_heads)``, transformers'
    ``repeat_kv``); mask broadcastable
    to (batch, heads, seq_q, seq_k). Scores and softmax are computed in float32
    whatever the input dtype (transformers upcasts the softmax too); masked
    scores are *set* to the float32 minimum rather than added to it, so a fully
    masked row gives a uniform, finite average.

    Long sequences on CPU (more than :data:`ATTENTION_BLOCK` queries) run in
    blocks of that many queries, so each block's (heads, block, keys) scores
    stay near the cache instead of one (heads, seq, seq) array per layer
    (SmolLM2 on a 3,072-token passage: 33.6 -> 14.1 s, RESULTS.md). With
    ``causal=True`` (the caller guarantees ``mask`` hides every key after its
    query), a block also skips the keys after its last query, which the mask
    would zero anyway: the same softmax over the same visible keys, about half
    the work. Fully masked rows then average the keys up to the block's end.
    """
    s, heads = q.shape[1:3]
    kv_heads = k.shape[2]
    if kv_heads != heads:
        if heads % kv_heads:
            raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
        # Repeating the (small) keys and values is faster on XLA:CPU than a
        # grouped einsum ("bqkgd,bskd->bkgqs": ~25% slower for SmolLM2's
        # attention), and the arithmetic is the same.
        group = heads // kv_heads
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    block = ATTENTION_BLOCK
    if block <= 0 or s <= block or jax.default_backend() != "cpu":
        return _attend(q, k, v, mask, scale)
    outs = []
    for q0 in range(0, s, block):
        q1 = min(s, q0 + block)
        k1 = q1 if causal else k.shape[1]
        m = mask if mask.shape[-2] == 1 else mask[..., q0:q1, :]
        m = m if m.shape[-1] == 1 else m[..., :k1]
        outs.append(_attend(q[:, q0:q1], k[:, :k1], v[:, :k1], m, scale))
    return jnp.concatenate(outs, axis=1)


def _attend(q, k, v, mask, scale):
    neg = jnp.finfo(jnp.float32).min
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * scale
    scores = jnp.where(mask, scores, neg)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


#: Rows per block for :func:`in_row_chunks` (0 disables chunking).
ROW_CHUNK = 512


def in_row_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array, rows: int | None = None) -> jax.Array:
    """``fn(x)`` for a row-wise ``fn`` (an MLP), run over blocks of ``rows`` rows on CPU.

    ``x`` is (..., d); every row (all leading axes flattened) is processed
    independently by ``fn``, so running blocks of rows through ``lax.map``
    gives the same values while the (rows, 4 d) intermediate stays in the CPU
    cache: measured 144 -> 171 GFLOP/s for SmolLM2's MLP on 4,096 rows (2-core
    EPYC), where transformers' PyTorch gets 164. Rows are zero-padded to a
    multiple of ``rows`` and the padding dropped. On other backends (GPU, TPU:
    large GEMMs are better there), or with ``rows`` <= 0, or when ``x`` has
    at most ``rows`` rows, this is just ``fn(x)``.
    """
    rows = ROW_CHUNK if rows is None else int(rows)
    lead, d = x.shape[:-1], x.shape[-1]
    n = math.prod(lead)
    if rows <= 0 or n <= rows or jax.default_backend() != "cpu":
        return fn(x)
    flat = x.reshape(n, d)
    pad = (-n) % rows
    if pad:
        flat = jnp.pad(flat, ((0, pad), (0, 0)))
    out = jax.lax.map(fn, flat.reshape(-1, rows, d))
    out = out.reshape(-1, out.shape[-1])
    return (out[:n] if pad else out).reshape(*lead, out.shape[-1])


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate the first cos.shape[-1] dims of x (batch, seq, heads, head_dim).

    x_rot * cos + rotate_half(x_rot) * sin with rotate_half([a, b]) = [-b, a]
    (the "rotate half" layout of GPT-NeoX and Llama); the remaining dims pass
    through (GPT-NeoX's partial rotary). cos/sin, (seq, n_rot) or (batch,
    seq, n_rot) with every frequency repeated twice ([f_0..f_{n/2-1},
    f_0..f_{n/2-1}]), are cast to x's dtype first, as transformers does.
    """
    n = cos.shape[-1]
    rot, rest = x[..., :n], x[..., n:]
    if cos.ndim == 2:
        cos, sin = cos[None], sin[None]
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    a, b = rot[..., : n // 2], rot[..., n // 2 :]
    rotated = rot * cos + jnp.concatenate([-b, a], axis=-1) * sin
    return jnp.concatenate([rotated, rest], axis=-1) if n < x.shape[-1] else rotated


# ---------------------------------------------------------------- activations


def _gelu_tanh(x: jax.Array) -> jax.Array:
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): transformers' gelu_new,
    # gelu_fast and gelu_pytorch_tanh are all this formula.
    return jax.nn.gelu(x, approximate=True)


def _gelu_erf(x: jax.Array) -> jax.Array:
    # 0.5 x (1 + erf(x / sqrt(2))): transformers' (and PyTorch's) "gelu".
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": _gelu_erf,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": jax.nn.relu,
}


def check_activation(name: str) -> str:
    """Return ``name`` if ``ACTIVATIONS`` knows it, else raise ValueError."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unsupported activation function {name!r}; supported: {sorted(ACTIVATIONS)}"
        )
    return name


# ---------------------------------------------------------------- layer norm


def stacked_blocks(make_block, n_layers: int, rngs: nnx.Rngs):
    """``n_layers`` blocks built by ``make_block(rngs)``, every parameter
    stacked on a leading layer axis (run them with ``nnx.scan``)."""

    @nnx.split_rngs(splits=n_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def blocks(rngs):
        return make_block(rngs)

    return blocks(rngs)


def run_block(block, *args, remat: bool = False):
    """``block(*args)``; with ``remat`` under ``nnx.remat`` (``jax.checkpoint``).

    Rematerialisation: the backward pass recomputes the block's activations
    from its input instead of keeping them from the forward pass, so a
    training step holds one block's intermediates at a time (plus each
    block's input) for about a third more compute. The values and gradients
    are those of ``block(*args)``. Models call it inside their ``nnx.scan``
    over the stacked blocks with their ``remat`` attribute (False unless a
    training loop sets it, ``jaxalign.finetune``); ``prevent_cse=False`` is
    safe there (a scan body is not merged with other code).
    """
    if not remat:
        return block(*args)
    return nnx.remat(lambda b, *a: b(*a), prevent_cse=False)(block, *args)


def layer_norm(dim: int, eps: float, *, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm with PyTorch's numerics: two-pass variance, stats in float32.

    Parameters are ``scale`` and ``bias`` (Hugging Face ``weight`` and ``bias``).
    """
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


# ------------------------------------------------------------- weight loading


class NonFiniteWeightError(ValueError):
    """A checkpoint tensor holds NaN or inf values (``tensor``: its checkpoint name)."""

    def __init__(self, message: str, tensor: str):
        super().__init__(message)
        self.tensor = tensor


#: Elements per ``np.isfinite`` block in :func:`check_finite` (bounds the
#: temporary boolean array to a few MiB whatever the tensor's size).
FINITE_CHUNK = 1 << 22


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise :class:`NonFiniteWeightError` naming ``name`` when ``x`` holds NaN or inf.

    One pass over ``x`` in blocks of about :data:`FINITE_CHUNK` elements along
    its first axis (works on strided views, e.g. a transposed memory map,
    without copying them whole).
    """
    x = np.asarray(x)
    if x.ndim == 0:
        x = x.reshape(1)
    if x.size == 0:
        return
    step = max(1, FINITE_CHUNK // max(1, x[0].size))
    for i in range(0, x.shape[0], step):
        if not np.isfinite(x[i : i + step]).all():
            n_nan = int(np.count_nonzero(np.isnan(x)))
            n_inf = int(np.count_nonzero(np.isinf(x)))
            raise NonFiniteWeightError(
                f"checkpoint tensor {name!r} {tuple(x.shape)} holds non-finite values "
                f"({n_nan} NaN, {n_inf} inf): the checkpoint is corrupt (or overflowed when cast to {x.dtype})",
                name,
            )


class Target(NamedTuple):
    """Where one checkpoint tensor goes.

    path
        the parameter's path in ``nnx.state(model)``, e.g. ("h", "ln_1", "scale").
    layer
        index along the parameter's leading axis for blocks stacked for
        ``nnx.scan`` (None: the tensor is the whole parameter).
    transform
        applied to the numpy tensor first (e.g. ``np.transpose`` for a
        PyTorch ``nn.Linear`` weight, stored (out, in) where Flax wants (in, out)).
    """

    path: tuple[str, ...]
    layer: int | None = None
    transform: Callable[[np.ndarray], np.ndarray] | None = None


def transpose(x: np.ndarray) -> np.ndarray:
    """(out, in) -> (in, out): PyTorch nn.Linear weight to a Flax kernel."""
    return x.T


def fill_params(
    model: nnx.Module,
    tensors: Mapping[str, np.ndarray],
    table: Mapping[str, Target],
    *,
    rename: Callable[[str], str] = lambda name: name,
    ignore: Iterable[str] = (),
    place: Callable[[tuple[str, ...], np.ndarray], jax.Array] | None = None,
) -> None:
    """Copy checkpoint tensors into ``model``'s parameters, all or nothing.

    ``rename`` maps a checkpoint name to the canonical name used in ``table``
    (e.g. strips a ``transformer.`` prefix); names matching one of the
    ``ignore`` regular expressions (documented harmless buffers) are skipped.
    Before anything is written, every problem is collected and raised in one
    ValueError: checkpoint tensors the table does not map, table entries the
    checkpoint lacks, parameters no table entry fills, and shape mismatches.

    Each parameter is set whole (``Variable.set_value``), cast to the
    parameter's dtype on the host and placed by ``place(path, host_array)``:
    by default ``jax.device_put`` on the default device; ``load(devices=...)``
    passes one that puts each parameter straight from the host onto its
    devices with its ``NamedSharding`` (``jaxalign.lm._shard``). So ``model``
    may be an abstract model from ``nnx.eval_shape`` whose values are only
    ``jax.ShapeDtypeStruct`` placeholders (this is how ``load`` builds models:
    no random initialisation, no second copy of the weights).

    Every tensor is checked for NaN / inf as it is cast (:func:`check_finite`,
    one pass): a corrupt checkpoint raises :class:`NonFiniteWeightError` (a
    ValueError naming the tensor) instead of giving all-NaN hidden states.
    """
    ignore_re = [re.compile(p) for p in ignore]
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    errors: list[str] = []

    found: dict[str, str] = {}  # canonical name -> checkpoint name
    unmapped: list[str] = []
    for name in tensors:
        canonical = rename(name)
        if canonical in table:
            if canonical in found:
                errors.append(
                    f"checkpoint tensors {found[canonical]!r} and {name!r} both map to {canonical!r}"
                )
            found[canonical] = name
        elif not any(r.fullmatch(canonical) for r in ignore_re):
            unmapped.append(name)
    if unmapped:
        errors.append(f"checkpoint tensors not mapped to any parameter: {sorted(unmapped)}")
    missing = [c for c in table if c not in found]
    if missing:
        errors.append(f"parameters missing from the checkpoint: {missing}")

    targeted = {t.path for t in table.values()}
    unknown_paths = sorted(".".join(p) for p in targeted if p not in params)
    if unknown_paths:  # a bug in an architecture's table, not in the checkpoint
        errors.append(f"name table points to parameters the model lacks: {unknown_paths}")
    unfilled = sorted(".".join(p) for p in params if p not in targeted)
    if unfilled:
        errors.append(f"model parameters no checkpoint tensor fills: {unfilled}")

    # Group slices per parameter and check shapes.
    slices: dict[tuple[str, ...], dict[int | None, tuple[str, Target]]] = {}
    for canonical, name in found.items():
        target = table[canonical]
        if target.path not in params:
            continue
        slices.setdefault(target.path, {})[target.layer] = (name, target)
        shape = tuple(params[target.path].get_value().shape)
        want = shape[1:] if target.layer is not None else shape
        raw = tuple(tensors[name].shape)
        got = raw
        if target.transform is not None:  # transforms are views (.T, reshape): cheap
            got = tuple(target.transform(np.asarray(tensors[name])).shape)
        if got != want:
            after = f" (after transform {got})" if got != raw else ""
            where = ".".join(target.path) + (f"[{target.layer}]" if target.layer is not None else "")
            errors.append(
                f"shape mismatch for {name!r}: checkpoint {raw}{after}, parameter {where} expects {want}"
            )
    for path, parts in slices.items() if not missing else ():
        layers = sorted(i for i in parts if i is not None)
        n = params[path].get_value().shape[0] if layers else 0
        if layers and (None in parts or layers != list(range(n))):
            errors.append(f"name table fills {'.'.join(path)} inconsistently: slices {layers} of {n}")
    if errors:
        raise ValueError(
            f"cannot load checkpoint into {type(model).__module__}.{type(model).__name__}:\n  "
            + "\n  ".join(errors)
        )

    for path, parts in slices.items():
        variable = params[path]
        dtype = np.dtype(variable.get_value().dtype)

        def host(item: tuple[str, Target]) -> np.ndarray:
            name, target = item
            x = np.asarray(tensors[name])
            if target.transform is not None:
                x = target.transform(x)
            x = np.asarray(x, dtype=dtype)
            check_finite(x, name)
            return x

        if None in parts:
            value = host(parts[None])
            # On CPU, device_put wraps a numpy buffer without copying (even
            # with may_alias=False): the model would share memory with the
            # caller's tensors or a memory-mapped checkpoint file (changed
            # weights, or SIGBUS if the file is rewritten). Copy first.
            if np.may_share_memory(value, np.asarray(tensors[parts[None][0]])):
                value = value.copy()
        else:
            value = np.stack([host(parts[i]) for i in range(len(parts))])  # a new array
        variable.set_value(jax.device_put(value) if place is None else place(path, value))
