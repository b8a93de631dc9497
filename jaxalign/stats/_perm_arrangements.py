"""The null arrangements: permutations, block orders, circular shifts and sign
flips, generated on the device from ``fold_in(key(seed), k)`` so that
arrangement k is the same whatever the batching (see ``_permutation``)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._precision import jit as _jit
from jaxalign.stats._perm_checks import _check_int, _check_scheme, _check_seed

def block_layout(n_samples: int, block_size: int):
    """``(starts, lengths)`` of the contiguous blocks of ``block_size`` samples.

    When ``block_size`` does not divide ``n_samples`` the last block is the
    partial remainder ``n_samples % block_size``; it is permuted like any other
    block (so the permuted series keeps whole blocks contiguous and every
    sample exactly once).
    """
    starts = np.arange(0, n_samples, block_size)
    lengths = np.minimum(block_size, n_samples - starts)
    return starts.astype(np.int32), lengths.astype(np.int32)


def _keys(seed, ks):
    base = jax.random.key(seed)
    return jax.vmap(lambda k: jax.random.fold_in(base, k))(ks)


def _ks(start, stop):
    """Permutation numbers start..stop-1 (traced: one compile per chunk length)."""
    return jnp.arange(start, stop, dtype=jnp.uint32)


def _orders(seed, n_items, start, stop):
    """(stop - start, n_items) random orders (permutation k from key k)."""
    return _orders_jit(np.uint32(seed), _ks(start, stop), n_items)


@partial(_jit, static_argnames=("n_items",))
def _orders_jit(seed, ks, n_items):
    keys = _keys(seed, ks)
    return jax.vmap(lambda k: jax.random.permutation(k, n_items))(keys).astype(jnp.int32)


def _shifts(seed, lo, hi, start, stop):
    """(stop - start,) circular shifts uniform on [lo, hi]."""
    return _shifts_jit(np.uint32(seed), _ks(start, stop), lo, hi)


@partial(_jit, static_argnames=("lo", "hi"))
def _shifts_jit(seed, ks, lo, hi):
    keys = _keys(seed, ks)
    return jax.vmap(lambda k: jax.random.randint(k, (), lo, hi + 1))(keys).astype(jnp.int32)


def _block_offsets(orders, lengths):
    """Where each slot of a block order begins in the permuted series, and its length."""
    lens = lengths[orders]
    return jnp.cumsum(lens, axis=-1) - lens, lens


@partial(_jit, static_argnames=("n_samples", "block_size"))
def _indices_from_orders(orders, starts, lengths, n_samples, block_size):
    offs, lens = _block_offsets(orders, lengths)
    l = jnp.arange(block_size, dtype=jnp.int32)
    pos = offs[..., None] + l
    val = starts[orders][..., None] + l
    pos = jnp.where(l < lens[..., None], pos, n_samples).reshape(orders.shape[0], -1)
    val = val.reshape(orders.shape[0], -1)

    def one(p, v):
        return jnp.zeros(n_samples, jnp.int32).at[p].set(v, mode="drop")

    return jax.vmap(one)(pos, val)


def permutation_indices(
    n_samples: int,
    n_permutations: int,
    scheme: str | None = None,
    block_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The ``(n_permutations, n_samples)`` arrangements the tests use.

    Row k gives the permuted truth as ``y_true[idx[k]]`` (``idx[k, i]`` is the
    sample moved to position i). Same arguments, same indices, whatever the
    batch sizes of a test.

    * ``"permute"``: uniform random permutations of the samples.
    * ``"block"``: the samples are cut into contiguous blocks of
      ``block_size`` (the last one partial when ``block_size`` does not divide
      ``n_samples``, see :func:`block_layout`) and the ORDER of the blocks is
      permuted uniformly, without replacement: each row is a true permutation
      in which every block stays contiguous and in its internal order (unlike
      the block bootstrap that draws blocks with replacement).
    * ``"circular"``: ``idx[k, i] = (i + s_k) % n_samples`` with the shift
      ``s_k`` uniform on ``[m, n_samples - m]``, ``m = block_size or 1``
      (shifts closer than ``m`` to zero, which leave the series nearly
      aligned with itself, are excluded). Only ``n_samples - 2m + 1``
      distinct nulls exist; draws repeat when ``n_permutations`` exceeds that.

    Draws are with replacement across rows (a Monte Carlo test); permutation
    k is derived from ``jax.random.fold_in(jax.random.key(seed), k)``.
    """
    n_samples = _check_int(n_samples, "n_samples", 2)
    n_permutations = _check_int(n_permutations, "n_permutations", 1)
    scheme, block_size = _check_scheme(n_samples, scheme, block_size)
    seed = _check_seed(seed)
    if scheme == "circular":
        lo = block_size or 1
        s = _shifts(seed, lo, n_samples - lo, 0, n_permutations)
        return np.asarray((jnp.arange(n_samples)[None] + s[:, None]) % n_samples, np.int64)
    L = block_size or 1
    starts, lengths = block_layout(n_samples, L)
    orders = _orders(seed, len(starts), 0, n_permutations)
    if L == 1:
        return np.asarray(orders, np.int64)
    return np.asarray(
        _indices_from_orders(orders, jnp.asarray(starts), jnp.asarray(lengths), n_samples, L),
        np.int64,
    )


def sign_flip_signs(n_samples: int, n_permutations: int, seed: int = 0) -> np.ndarray:
    """The ``(K, n_samples)`` +-1 sign patterns used by :func:`sign_flip_test`.

    When ``2**n_samples <= n_permutations`` all ``K = 2**n_samples`` patterns
    are enumerated (row k has sign ``-1`` at sample b when bit b of k is set;
    row 0 is the identity). Otherwise ``K = n_permutations`` independent
    Rademacher draws from ``fold_in(key(seed), k)``.
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_permutations = _check_int(n_permutations, "n_permutations", 1)
    seed = _check_seed(seed)
    return np.asarray(_signs(n_samples, n_permutations, seed, 0, None))


def _exact_signs(n_samples, n_permutations):
    return n_samples < 31 and 2**n_samples <= n_permutations


def _signs(n_samples, n_permutations, seed, start, stop):
    if _exact_signs(n_samples, n_permutations):
        k = np.arange(2**n_samples)[start:stop, None]
        bits = (k >> np.arange(n_samples)[None]) & 1
        return jnp.asarray(1 - 2 * bits, jnp.float32)
    stop = n_permutations if stop is None else stop
    return _rademacher(np.uint32(seed), _ks(start, stop), n_samples)


@partial(_jit, static_argnames=("n_samples",))
def _rademacher(seed, ks, n_samples):
    keys = _keys(seed, ks)
    return jax.vmap(lambda k: jax.random.rademacher(k, (n_samples,), jnp.float32))(keys)
