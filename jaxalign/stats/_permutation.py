"""Permutation tests for per-target correlations, in pure JAX.

Three tests share one engine:

* :func:`permutation_test` -- is the Pearson r between a prediction and the
  truth larger than chance? Null: the samples of ``y_true`` are shuffled
  (the same shuffle for every target of one draw, as the studies do), either
  sample by sample, block by block (autocorrelated time series) or by
  circular shifts.
* :func:`paired_permutation_test` -- is ``r(y, pred_a) - r(y, pred_b)``
  larger than chance (fine-tuned vs base model, MEG study)? Null: the same
  shuffles of ``y_true``.
* :func:`sign_flip_test` -- is the mean of per-subject (or per-sample)
  differences non-zero? Null: random sign flips (exact enumeration when it
  is small).

p-values
--------
With ``K`` random draws, ``p = (#{null >= observed} + 1) / (K + 1)``
("greater"; "less" counts ``null <= observed``, "two-sided" counts
``|null| >= |observed|``). The +1 counts the observed arrangement itself
and keeps p > 0 and the test exact (valid) for any ``K``. A null value
within ``TIE_TOL`` (1e-5, about 100 float32 epsilons, like the relative
tolerance of ``scipy.stats.permutation_test``; |r| <= 1) of the observed
statistic counts as a tie, i.e. as at least as extreme: float32
rounding must never turn the identity arrangement (or a repeat of it) into a
"win". For sign flips the tolerance is ``TIE_TOL * mean(|d|)``, the scale of
the statistic.

``max_stat=True`` adds ``p_fwe``: each observed statistic is compared to the
distribution of the maximum over targets of the null statistics (minimum
for "less", maximum of absolute values for "two-sided"), which controls the
family-wise error rate over targets (Nichols & Holmes 2002).

How the null is computed (why it is fast)
-----------------------------------------
Each column of ``y_true`` and ``y_pred`` is centred and scaled to unit norm
once (``u``, ``v``); a permuted correlation is then just
``r_k = sum_i u[pi_k(i)] v[i]``, no re-centring (a permutation changes
neither the mean nor the norm). Per scheme:

* ``"permute"``: a compiled loop over the samples (8 per step) accumulates,
  for a chunk of permutations and a batch of targets at once,
  ``acc += sum_i u[pi[:, i]] * v[i]`` (contiguous row gathers; K * n * T
  multiply-adds, the minimum for arbitrary permutations).
* ``"block"``: with blocks of length L the permuted series is a
  concatenation of whole blocks, so the products of every block of ``u``
  with every window of ``v`` where a block can land are tabulated once per
  target batch (``M[a, o] = sum_l u[start_a + l] v[o + l]``, a batched
  matmul; the landing offsets are multiples of L, plus those shifted by the
  partial block when L does not divide n) and each null value is a sum of
  n_blocks table entries: K * n_blocks * T adds instead of K * n * T.
* ``"circular"``: the correlation at every circular shift is one FFT
  cross-correlation per target; the K drawn shifts are read from it.

The null statistics are reduced to counts, sums and per-permutation maxima
chunk by chunk inside the compiled loop (a chunk stays in cache; the (K, T)
null is only materialised on request). Targets are processed in batches
sized from a memory budget (like the ridge engine) and streamed from the
host; permutations are generated on the device, vmapped over keys
``fold_in(key(seed), k)``, so permutation k is the same whatever the batch
sizes. :func:`permutation_indices` and :func:`sign_flip_signs` return the
exact arrangements used, for checking against any reference.

Reproducibility: the same seed gives the same arrangements, hence the same
p-values, whatever the batch sizes, chunking, number of devices or platform,
for a given JAX version (JAX's default threefry PRNG; ``jax.random`` may
change between JAX versions: ``tests/test_stats_permutation.py`` pins the
arrangements of the version in use and says when they move). The data's
scale does not matter either (columns are standardized in float64).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxalign._precision import jit as _jit
from jaxalign.stats._tail import normal_tail_p
from jaxalign._core.memory import default_memory_budget, parse_bytes, target_batch_size
from jaxalign.ridge._scores import center
from jaxalign._core.validation import as_float_array as _as_float_array, check_finite as _check_finite
from jaxalign._core.validation import check_int as _check_int

__all__ = [
    "ALTERNATIVES",
    "SCHEMES",
    "TIE_TOL",
    "PermutationResult",
    "block_layout",
    "paired_permutation_test",
    "permutation_indices",
    "permutation_test",
    "sign_flip_signs",
    "sign_flip_test",
]

SCHEMES = ("permute", "block", "circular")
ALTERNATIVES = ("greater", "less", "two-sided")
TIE_TOL = 1e-5

# Largest target batch per kernel (beyond it, batches only cost memory:
# the per-sample gather loop wants its (K, batch) accumulator near the cache).
_MAX_BATCH = {"gather": 256, "table": 512, "shift": 512, "signs": 1024}
# Bytes of null statistics made and reduced per step of the compiled loop over
# permutation chunks: a (kc, batch) chunk that stays in the L2 cache (larger
# for the per-sample loop, whose inner steps are small).
_CHUNK_BYTES = {"gather": 1 << 20, "table": 1 << 18, "shift": 1 << 18, "signs": 1 << 18}
# Accelerators have no such cache to fit: wide batches and big chunks keep
# thousands of cores busy and cost few kernel launches (within the budget).
_ACCEL_MAX_BATCH = 16384
_ACCEL_CHUNK_BYTES = 1 << 26


def _limits(kind: str) -> tuple[int, int]:
    """(largest target batch, bytes per permutation chunk) for ``kind`` on the default device."""
    if jax.devices()[0].platform == "cpu":
        return _MAX_BATCH[kind], _CHUNK_BYTES[kind]
    return _ACCEL_MAX_BATCH, _ACCEL_CHUNK_BYTES


@dataclass
class PermutationResult:
    """Outcome of a permutation test (numpy arrays; ``()``-shaped for 1-D input).

    Attributes
    ----------
    statistic : (T,) observed statistic: r (``permutation_test``),
        r_a - r_b (``paired_permutation_test``) or the mean
        (``sign_flip_test``); NaN for degenerate targets
    p : (T,) p-value, NaN for degenerate targets
    p_fwe : (T,) max-statistic family-wise corrected p (``max_stat=True``)
    r, r_a, r_b : observed correlations (``r`` for ``permutation_test``,
        ``r_a``/``r_b`` for ``paired_permutation_test``)
    null_mean, null_std : (T,) mean and standard deviation of the null
    null : (K, T) the null statistics (``return_null=True``)
    null_extreme : (K,) max over targets of the null (min for "less", max of
        |null| for "two-sided"), the distribution behind ``p_fwe``
    constant : (T,) bool, targets without a defined statistic
    n_permutations : number of null draws (2**n for exact sign flips)
    exact : True when the null was enumerated exactly (sign flips only); then
        ``p = #{null at least as extreme} / n_permutations`` (identity included)
    tail : "normal" when p-values the counts could not resolve (fewer than 10
        null values at least as extreme) come from a Gaussian with the null's
        mean and standard deviation (``jaxalign.stats._tail``), else None

    Leading batch axes of the inputs (``(..., n, T)``: layers, windows) lead
    every per-target array (``(..., T)``; the null is ``(K, ..., T)``).
    """

    statistic: np.ndarray
    p: np.ndarray
    n_permutations: int
    alternative: str
    scheme: str
    block_size: int | None
    seed: int
    p_fwe: np.ndarray | None = None
    r: np.ndarray | None = None
    r_a: np.ndarray | None = None
    r_b: np.ndarray | None = None
    null_mean: np.ndarray | None = field(default=None, repr=False)
    null_std: np.ndarray | None = field(default=None, repr=False)
    null: np.ndarray | None = field(default=None, repr=False)
    null_extreme: np.ndarray | None = field(default=None, repr=False)
    constant: np.ndarray | None = field(default=None, repr=False)
    exact: bool = False
    batch_size: int = 0
    tail: str | None = None

    def __iter__(self):
        """Unpacks as ``(statistic, p)``: ``r, p = permutation_test(y, pred)``."""
        return iter((self.statistic, self.p))

    def __getitem__(self, index):
        return (self.statistic, self.p)[index]


# --------------------------------------------------------------------------
# validation


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _check_scheme(n_samples, scheme, block_size):
    """Validated ``(scheme, block_size)``; ``block_size`` None for 'permute'.

    ``scheme=None`` means "block" when a ``block_size`` is given, else
    "permute".
    """
    if scheme is None:
        scheme = "permute" if block_size is None else "block"
    _check_choice(scheme, "scheme", SCHEMES)
    if scheme == "permute":
        if block_size is not None:
            raise ValueError(
                "block_size is only used by scheme='block' or 'circular'; "
                f"got block_size={block_size!r} with scheme='permute'"
            )
        return scheme, None
    if scheme == "block" and block_size is None:
        raise ValueError("scheme='block' needs a block_size (e.g. ~10 TRs for fMRI)")
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
            raise ValueError(f"block_size must be an integer, got {block_size!r}")
        block_size = int(block_size)
        if not 1 <= block_size <= n_samples:
            raise ValueError(
                f"block_size must be between 1 and n_samples={n_samples}, got {block_size}"
            )
    if scheme == "block" and math.ceil(n_samples / block_size) < 2:
        raise ValueError(
            f"block_size={block_size} leaves a single block of {n_samples} samples: "
            "nothing to permute; use a smaller block_size"
        )
    if scheme == "circular":
        lo = block_size or 1
        if n_samples - lo < lo:
            raise ValueError(
                f"circular shifts need block_size <= n_samples // 2 = {n_samples // 2} "
                f"(shifts are drawn from [block_size, n_samples - block_size]), got {lo}"
            )
    return scheme, block_size


def _targets(a, name):
    """Numeric 1-D/2-D array. Finiteness is checked by the kernels as the
    batches stream through (no extra pass over the data), then reported by
    :func:`_raise_nonfinite` with the first offending index."""
    return _as_float_array(a, name, (1, 2))


def _raise_nonfinite(arrays, names, cols):
    for a, name in zip(arrays, names):
        _check_finite(a[:, cols] if a.ndim == 2 else a, name)  # raises ValueError
    raise ValueError("non-finite values in the inputs")  # pragma: no cover


def _warn_degenerate(const, what, names, stacklevel=4):
    n = int(const.sum())
    if n:
        first = np.flatnonzero(const)[:5].tolist()
        warnings.warn(
            f"{n} of {const.size} targets have {what} in {' or '.join(names)} "
            f"(first: {first}); their statistic and p-values are NaN.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _check_pair(y_true, preds, names):
    y_true = _targets(y_true, "y_true")
    out = []
    for p, name in zip(preds, names):
        p = _targets(p, name)
        if p.shape != y_true.shape:
            raise ValueError(f"y_true {y_true.shape} and {name} {p.shape} differ in shape")
        out.append(p)
    ravel = y_true.ndim == 1
    if ravel:
        y_true = y_true[:, None]
        out = [p[:, None] for p in out]
    n, t = y_true.shape
    if n < 3:
        raise ValueError(f"need at least 3 samples (axis 0) for a permutation test, got {n}")
    if t < 1:
        raise ValueError(f"y_true has no targets (shape {y_true.shape})")
    return y_true, out, ravel


# --------------------------------------------------------------------------
# arrangements (vmapped over permutation keys)


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


# --------------------------------------------------------------------------
# kernels (one target batch, one chunk of permutations)


def _unit(y):
    """Centred columns scaled to unit norm; zero for constant columns."""
    yc, _ = center(y)
    ss = jnp.sum(yc * yc, axis=0)
    ok = ss > 0
    return yc * jnp.where(ok, lax.rsqrt(jnp.where(ok, ss, 1.0)), 0.0)


_GATHER_GROUP = 8  # samples per step of the per-sample loop (one accumulator pass per group)


def _null_gather(u, v, perm):
    """acc[k, t] = sum_i u[perm[k, i], t] v[i, t]: loop over groups of samples.

    Each step gathers the rows of ``g`` samples for all permutations of the
    chunk and adds their products to the accumulator in one fused pass, so
    the (kc, batch) accumulator is read and written n / g times, not n.
    """
    n, g = u.shape[0], _GATHER_GROUP
    npad = -(-n // g) * g
    # padded samples have v = 0: they add nothing whatever index they gather
    pT = jnp.pad(perm.T, ((0, npad - n), (0, 0))).reshape(npad // g, g, -1)
    vg = jnp.pad(v, ((0, npad - n), (0, 0))).reshape(npad // g, g, -1)

    def body(acc, x):
        p, vv = x  # (g, kc), (g, batch)
        return acc + jnp.sum(u[p] * vv[:, None, :], axis=0), None

    acc0 = jnp.zeros((perm.shape[0], u.shape[1]), u.dtype)
    return lax.scan(body, acc0, (pT, vg))[0]


def _block_table(u, v, src, dst):
    """M[a * O + o, t] = sum_l u[src[a, l], t] v[dst[o, l], t] (padded rows are 0)."""
    L = src.shape[1]
    pad = jnp.zeros((L, u.shape[1]), u.dtype)
    upad = jnp.concatenate([u, pad])
    vpad = jnp.concatenate([v, pad])
    ub = jnp.transpose(upad[src], (2, 0, 1))  # (T, B, L)
    vw = jnp.transpose(vpad[dst], (2, 1, 0))  # (T, L, O)
    m = jnp.matmul(ub, vw, precision=lax.Precision.HIGHEST)  # (T, B, O)
    return jnp.transpose(m, (1, 2, 0)).reshape(-1, u.shape[1])


def _null_table(table, pairs):
    """acc[k, t] = sum_j table[pairs[k, j], t]: loop over block slots."""

    def body(acc, p):
        return acc + table[p], None

    acc0 = jnp.zeros((pairs.shape[0], table.shape[1]), table.dtype)
    return lax.scan(body, acc0, pairs.T)[0]


def _circular_table(u, v):
    """C[s, t] = sum_i u[(i + s) % n, t] v[i, t] for every shift s (FFT)."""
    n = u.shape[0]
    fu = jnp.fft.rfft(u, axis=0)
    fv = jnp.fft.rfft(v, axis=0)
    return jnp.fft.irfft(fu * jnp.conj(fv), n=n, axis=0).astype(u.dtype)


def _side(alternative):
    """(sign, two_sided) so that every alternative reads "x >= observed x"
    with ``x = |null|`` (two-sided) or ``sign * null``. Traced arguments of
    the kernels: one compiled program serves all three alternatives."""
    return np.float32(-1.0 if alternative == "less" else 1.0), np.bool_(alternative == "two-sided")


def _oriented(x, sign, two):
    return jnp.where(two, jnp.abs(x), sign * x)


def _summary(null_fn, arrs, mask, obs, tol, valid, side, return_null):
    """Reduce the null chunk by chunk (each chunk stays in cache).

    ``arrs``: (n_chunks, kc, ...) arrangements; ``mask``: (n_chunks, kc) real
    rows (the last chunk is padded). Returns per-target hit counts, sum and
    sum of squares of the null, the per-permutation maximum over valid
    targets of the oriented null (see :func:`_side`) and, when asked, the
    null itself.
    """
    sign, two = side
    o = _oriented(obs, sign, two) - tol

    def body(carry, x):
        arr, m = x
        null = null_fn(arr)  # (kc, Tb)
        xo = _oriented(null, sign, two)
        m2 = m[:, None]
        cnt, s1, s2 = carry
        cnt = cnt + jnp.sum((xo >= o) & m2, axis=0, dtype=jnp.int32)
        nm = jnp.where(m2, null, 0.0)
        s1 = s1 + jnp.sum(nm, axis=0)
        s2 = s2 + jnp.sum(nm * nm, axis=0)
        ext = jnp.max(jnp.where(valid, xo, -jnp.inf), axis=1)
        ys = (jnp.where(m, ext, -jnp.inf), null if return_null else None)
        return (cnt, s1, s2), ys

    z = jnp.zeros(obs.shape, jnp.float32)
    (cnt, s1, s2), (ext, null) = lax.scan(body, (jnp.zeros(obs.shape, jnp.int32), z, z), (arrs, mask))
    out = {"count": cnt, "s1": s1, "s2": s2, "ext": ext.reshape(-1), "obs": obs}
    if return_null:
        out["null"] = null.reshape(-1, obs.shape[0])
    return out


@partial(_jit, static_argnames=("kind", "return_null", "paired"))
def _corr_batch(yt, ya, yb, arrs, mask, src, dst, side, *, kind, return_null, paired):
    """Observed statistic and null summary for one target batch.

    ``arrs``: (n_chunks, kc, n) sample indices ("gather"), (n_chunks, kc, B)
    table rows ("table") or (n_chunks, kc) shifts ("shift").
    """
    ys = [yt, ya, yb] if paired else [yt, ya]
    ys = [y.astype(jnp.float32) for y in ys]
    finite = functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(y), axis=0) for y in ys])
    # constant (exactly, as np.ptp == 0) in any input: no correlation defined
    valid = finite & ~functools.reduce(
        jnp.logical_or, [jnp.all(y == y[:1], axis=0) for y in ys])
    u, va = (_unit(y) * valid for y in ys[:2])
    extra = {"valid": valid, "finite": finite}
    if paired:
        vb = _unit(ys[2]) * valid
        extra.update(r_a=jnp.sum(u * va, axis=0), r_b=jnp.sum(u * vb, axis=0))
        v = va - vb
    else:
        v = va
    obs = jnp.sum(u * v, axis=0)
    if kind == "gather":
        null_fn = partial(_null_gather, u, v)
    elif kind == "table":
        null_fn = partial(_null_table, _block_table(u, v, src, dst))
    else:
        table = _circular_table(u, v)
        null_fn = lambda s: table[s]  # noqa: E731
    out = _summary(null_fn, arrs, mask, obs, TIE_TOL, valid, side, return_null)
    out.update(extra)
    return out


@partial(_jit, static_argnames=("return_null",))
def _sign_batch(d, signs, mask, side, *, return_null):
    d = d.astype(jnp.float32)
    n = d.shape[0]
    finite = jnp.all(jnp.isfinite(d), axis=0)
    valid = finite & jnp.any(d != 0, axis=0)
    d = jnp.where(valid, d, 0.0)
    obs = jnp.mean(d, axis=0)
    scale = jnp.mean(jnp.abs(d), axis=0)

    def null_fn(s):
        return jnp.matmul(s, d, precision=lax.Precision.HIGHEST) / n

    out = _summary(null_fn, signs, mask, obs, TIE_TOL * scale, valid, side, return_null)
    out.update(valid=valid, finite=finite)
    return out


# --------------------------------------------------------------------------
# driver


class _Plan:
    """How the null arrangements of one test are computed, chunk by chunk."""

    def __init__(self, n, K, scheme, block_size, seed):
        self.n, self.K, self.seed = n, K, seed
        self.scheme, self.block_size = scheme, block_size
        self.src = self.dst = jnp.zeros((1, 1), jnp.int32)
        self.table_rows = 0
        if scheme == "circular":
            self.kind = "shift"
            self.lo = block_size or 1
            self.table_rows = n
            return
        L = block_size or 1
        starts, lengths = block_layout(n, L)
        B = len(starts)
        r = n % L
        offsets = np.arange(B) * L
        if r:  # slots after the partial block start r samples later
            offsets = np.concatenate([offsets, np.arange(B - 1) * L + r])
        O = len(offsets)
        self.starts, self.lengths, self.L, self.B, self.O, self.r = starts, lengths, L, B, O, r
        # tabulate block x offset products when that is cheaper than the
        # per-sample loop (always for realistic blocks and K)
        if L > 1 and B * O * L + K * B < K * n / 2:
            self.kind = "table"
            self.table_rows = B * O
            l = np.arange(L)
            self.src = jnp.asarray(np.where(l < lengths[:, None], starts[:, None] + l, n), jnp.int32)
            self.dst = jnp.asarray(offsets[:, None] + l, jnp.int32)
        else:
            self.kind = "gather"

    def bytes_per_target(self, Kc, return_null):
        """Upper estimate of float32 device bytes per target of a batch."""
        floats = 8 * self.n + 4 * min(Kc, 1024) + (Kc if return_null else 0)
        if self.kind == "table":
            floats += 3 * self.table_rows + 3 * self.B * self.L + 3 * self.O * self.L
        elif self.kind == "shift":
            floats += 4 * self.n
        else:  # rows gathered for one group of samples
            floats += 2 * _GATHER_GROUP * min(Kc, 1024)
        return int(4 * 1.5 * floats)

    def arrangements(self, start, stop):
        if self.kind == "shift":
            return _shifts(self.seed, self.lo, self.n - self.lo, start, stop)
        orders = _orders(self.seed, self.B, start, stop)
        if self.kind == "gather":
            if self.L == 1:
                return orders
            return _indices_from_orders(
                orders, jnp.asarray(self.starts), jnp.asarray(self.lengths), self.n, self.L
            )
        return _table_rows(orders, jnp.asarray(self.lengths), self.L, self.B, self.O, self.r)


@partial(_jit, static_argnames=("L", "B", "O", "r"))
def _table_rows(orders, lengths, L, B, O, r):
    offs, _ = _block_offsets(orders, lengths)
    oi = jnp.where(offs % L == 0, offs // L, B + (offs - r) // L) if r else offs // L
    return (orders * O + oi).astype(jnp.int32)


def _chunked(arr, kc):
    """(K, ...) -> (ceil(K / kc), kc, ...) padded with row 0, and the row mask."""
    K = arr.shape[0]
    nc = -(-K // kc)
    pad = nc * kc - K
    if pad:
        arr = jnp.concatenate([arr, jnp.repeat(arr[:1], pad, axis=0)])
    mask = (jnp.arange(nc * kc) < K).reshape(nc, kc)
    return arr.reshape((nc, kc) + arr.shape[1:]), mask


def _sizes(n_targets, per_target, K, budget, cap, batch_size):
    """(target batch, permutation chunk) within the memory budget."""
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
        return min(batch_size, n_targets), K
    want = min(128, n_targets)
    Kc = K
    while Kc > 1 and per_target(Kc) * want > budget:
        Kc = math.ceil(Kc / 2)
    return target_batch_size(n_targets, per_target(Kc), budget, 1, max_batch=cap), Kc


def _unit_columns(b):
    """Columns centred and scaled to unit root mean square in float64, then
    float32: correlations are unchanged, and data at any finite scale (MEG in
    Tesla, 1e-12; raw units, 1e4 or more) neither underflows nor overflows
    the float32 sums of squares. Non-finite entries pass through (reported
    by the kernels); constant columns become zeros (flagged)."""
    b = np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        c = b - b.mean(axis=0)
        sd = np.sqrt(np.mean(c * c, axis=0))
        ok = (sd > 0) & np.isfinite(sd)
        return np.where(ok | ~np.isfinite(b), c / np.where(ok, sd, 1.0), 0.0).astype(np.float32)


def _run(kind_fn, columns, names, n_targets, K, per_target, kind, arrangements,
         max_stat, return_null, memory_budget, batch_size, standardize=False):
    """Loop over target batches x permutation chunks; gather numpy results.

    ``standardize``: columns go to the device centred and unit-scaled
    (:func:`_unit_columns`; correlation tests).

    Raises ValueError (naming the first offending entry) as soon as a batch
    reports a non-finite input.
    """
    budget = parse_bytes(memory_budget) if memory_budget is not None else default_memory_budget(jax.devices())
    cap, chunk_bytes = _limits(kind)
    Tb, Kc = _sizes(n_targets, per_target, K, budget, cap, batch_size)
    chunks = [(s, min(s + Kc, K)) for s in range(0, K, Kc)]
    kc = max(1, min(Kc, chunk_bytes // (4 * Tb)))
    arrs = [_chunked(arrangements(a, b), kc) for a, b in chunks]
    count = np.zeros(n_targets, np.int64)
    s1 = np.zeros(n_targets, np.float64)
    s2 = np.zeros(n_targets, np.float64)
    obs = {}
    null = np.empty((K, n_targets), np.float32) if return_null else None
    ext = [None] * len(chunks)

    def collect(pending):  # device -> host, one batch behind the dispatch
        start, stop, outs = pending
        width = stop - start
        if not np.asarray(outs[0]["finite"])[:width].all():
            _raise_nonfinite([c for c in columns if c is not None], names, slice(start, stop))
        for (a, b), out in zip(chunks, outs):
            count[start:stop] += np.asarray(out["count"])[:width]
            s1[start:stop] += np.asarray(out["s1"])[:width]
            s2[start:stop] += np.asarray(out["s2"])[:width]
            if return_null:
                null[a:b, start:stop] = np.asarray(out["null"])[: b - a, :width]
        for key in ("obs", "r_a", "r_b", "valid"):
            if key in outs[0]:
                a = np.asarray(outs[0][key])
                obs.setdefault(key, np.empty(n_targets, a.dtype))[start:stop] = a[:width]

    pending = None
    for start in range(0, n_targets, Tb):
        stop = min(start + Tb, n_targets)
        width = stop - start
        batch = []
        for col in columns:
            if col is None:
                batch.append(None)
                continue
            b = _unit_columns(col[:, start:stop]) if standardize else np.asarray(
                col[:, start:stop], np.float32)
            if width < Tb:  # one static shape; padded columns are constant, hence masked
                b = np.pad(b, ((0, 0), (0, Tb - width)))
            batch.append(jax.device_put(b))
        outs = [kind_fn(batch, *arr) for arr in arrs]
        if max_stat:
            ext = [o["ext"] if e is None else jnp.maximum(e, o["ext"]) for e, o in zip(ext, outs)]
        if pending is not None:
            collect(pending)
        pending = (start, stop, outs)
    collect(pending)
    if max_stat:
        ext = np.concatenate([np.asarray(e)[: b - a] for e, (a, b) in zip(ext, chunks)])
    else:
        ext = None
    mean = s1 / K
    std = np.sqrt(np.maximum(s2 / K - mean**2, 0.0))
    return obs, count, mean, std, null, ext, Tb


def _p_fwe(obs, ext, alternative, tol, exact):
    """Max-statistic p: how many permutations' extreme beats each observed value.

    ``ext`` is the per-permutation maximum of the oriented null (see
    :func:`_side`).
    """
    K = len(ext)
    sign, two = _side(alternative)
    obs = obs.astype(np.float64)
    o = np.abs(obs) if two else float(sign) * obs
    c = K - np.searchsorted(np.sort(ext.astype(np.float64)), o - tol, side="left")
    return c / K if exact else (c + 1) / (K + 1)


def _extreme(ext, alternative):
    """Oriented maxima back to the caller's scale: min of the null for "less"."""
    return None if ext is None else (-ext if alternative == "less" else ext)


def _finish(ravel, const, **arrays):
    out = {}
    for k, a in arrays.items():
        if a is None:
            out[k] = None
            continue
        a = np.asarray(a)
        if a.ndim >= 1 and a.shape[-1] == const.size and k != "null_extreme":
            a = a.astype(np.float64) if k in ("p", "p_fwe") else a
            if k not in ("constant",):
                a = np.where(const, np.nan, a)
        if ravel and k != "null_extreme":
            a = a[..., 0]
        out[k] = a
    return out


TAILS = (None, "normal")


def _tail_p(p, count, obs, mean, std, alternative, K, tail):
    """Replace the p-values the counts cannot resolve by the Gaussian tail's
    (see ``_tail``). ``tail=None``: unchanged."""
    if tail is None:
        return p
    return np.where(np.isnan(p), np.nan, normal_tail_p(obs, mean, std, count, K, alternative))


# FDR level for the floor check (the default of fdr_correction).
_FLOOR_Q = 0.05
_TAIL_REMEDY = "Use tail='normal' (p below the floor from a Gaussian fit of each null's tail) or"


def _warn_floor(p, K, tail, exact=False, stacklevel=4, remedy=None):
    """Warn when the permutation floor can hide every discovery.

    With ``K`` draws the smallest p is ``1 / (K + 1)``; BH-FDR at 0.05 over
    ``m`` targets rejects nothing unless at least ``m / (0.05 (K + 1))`` of
    them reach it. Warned when some targets sit at the floor but fewer than
    that, so a correction would silently find nothing; ``tail="normal"`` (p
    below the floor from the null's Gaussian tail) or more permutations lift it.
    """
    if tail is not None or exact:
        return
    p = np.asarray(p, np.float64)
    m = int(np.sum(np.isfinite(p)))
    floor = 1.0 / (K + 1)
    at_floor = int(np.sum(p <= floor * (1 + 1e-9)))
    need = int(np.ceil(m * floor / _FLOOR_Q - 1e-9))
    if 0 < at_floor < need:
        warnings.warn(
            f"{at_floor} of {m} targets reached the smallest p possible with "
            f"n_permutations={K} (1/{K + 1}); BH-FDR at {_FLOOR_Q} over {m} targets can "
            f"only reject if at least {need} do, so it may find nothing whatever the "
            f"effect size. {remedy or _TAIL_REMEDY} "
            f"n_permutations >= {int(np.ceil(m / _FLOOR_Q))}.",
            UserWarning, stacklevel=stacklevel,
        )


def _flatten_lead(arrays, names):
    """Arrays ``(..., n, T)`` with common leading batch axes (a ``(n, T)``
    truth broadcasts) -> ``(n, B*T)`` columns, and the leading shape.

    Leading axes (layers, MEG windows...) are just more targets: every one
    gets the same arrangements, so max-statistic p-values cover them all."""
    lead = ()
    for a, name in zip(arrays, names):
        if a is not None and np.ndim(a) >= 3:
            try:
                lead = np.broadcast_shapes(lead, np.shape(a)[:-2])
            except ValueError:
                raise ValueError(f"{name} of shape {np.shape(a)} does not broadcast to the "
                                 f"leading batch axes {lead} of the other inputs") from None
    if not lead:
        return arrays, lead
    out = []
    for a, name in zip(arrays, names):
        if a is None:
            out.append(None)
            continue
        a = np.asarray(a)
        if a.ndim < 2:
            raise ValueError(f"{name} must have shape (..., n_samples, n_targets) when other "
                             f"inputs have leading batch axes {lead}; got {a.shape}")
        try:
            a = np.broadcast_to(a, lead + a.shape[-2:])
        except ValueError:
            raise ValueError(f"{name} of shape {a.shape} does not broadcast to the leading "
                             f"batch axes {lead}") from None
        n, T = a.shape[-2:]
        out.append(np.moveaxis(a.reshape((-1, n, T)), 0, 1).reshape(n, -1))
    return out, lead


def _unflatten_lead(res: PermutationResult, lead, T):
    """Per-target arrays ``(B*T,)`` -> ``lead + (T,)``; the null ``(K, B*T)`` ->
    ``(K,) + lead + (T,)``."""
    if not lead:
        return res
    for name in ("statistic", "p", "p_fwe", "r", "r_a", "r_b", "null_mean", "null_std",
                 "constant"):
        a = getattr(res, name)
        if a is not None:
            setattr(res, name, np.asarray(a).reshape(lead + (T,)))
    if res.null is not None:
        res.null = res.null.reshape((res.null.shape[0],) + lead + (T,))
    return res


def _correlation_test(y_true, preds, names, n_permutations, block_size, scheme,
                      alternative, seed, max_stat, batch_size, return_null, memory_budget,
                      tail=None):
    _check_choice(tail, "tail", TAILS)
    arrays, lead = _flatten_lead([y_true, *preds], ["y_true", *names])
    if lead:
        T_last = np.shape(preds[0])[-1]
        y_true, preds = arrays[0], arrays[1:]
    res = _correlation_test_2d(y_true, preds, names, n_permutations, block_size, scheme,
                               alternative, seed, max_stat, batch_size, return_null,
                               memory_budget, tail)
    return _unflatten_lead(res, lead, T_last) if lead else res


def _correlation_test_2d(y_true, preds, names, n_permutations, block_size, scheme,
                         alternative, seed, max_stat, batch_size, return_null, memory_budget,
                         tail):
    _check_choice(alternative, "alternative", ALTERNATIVES)
    K = _check_int(n_permutations, "n_permutations", 1)
    seed = _check_seed(seed)
    y_true, preds, ravel = _check_pair(y_true, preds, names)
    n, T = y_true.shape
    scheme, block_size = _check_scheme(n, scheme, block_size)
    plan = _Plan(n, K, scheme, block_size, seed)
    paired = len(preds) == 2
    keep = return_null

    def fn(batch, arr, mask):
        yt, ya, yb = batch
        return _corr_batch(yt, ya, ya if yb is None else yb, arr, mask, plan.src, plan.dst,
                           _side(alternative), kind=plan.kind,
                           return_null=keep, paired=paired)

    columns = [y_true, preds[0], preds[1] if paired else None]
    obs, count, mean, std, null, ext, Tb = _run(
        fn, columns, ["y_true", *names], T, K, lambda kc: plan.bytes_per_target(kc, keep),
        plan.kind, plan.arrangements, max_stat, keep,
        memory_budget, batch_size, standardize=True)
    const = ~obs["valid"]
    _warn_degenerate(const, "zero variance", ["y_true", *names], stacklevel=5)
    p = np.where(const, np.nan, (count + 1) / (K + 1))
    p = _tail_p(p, count, obs["obs"], mean, std, alternative, K, tail)
    _warn_floor(p, K, tail, stacklevel=5)
    p_fwe = _p_fwe(obs["obs"], ext, alternative, TIE_TOL, False) if max_stat else None
    res = _finish(ravel, const, statistic=obs["obs"], p=p, p_fwe=p_fwe, r_a=obs.get("r_a"),
                  r_b=obs.get("r_b"), null_mean=mean, null_std=std, null=null,
                  null_extreme=_extreme(ext, alternative), constant=const)
    return PermutationResult(
        n_permutations=K, alternative=alternative, scheme=scheme, block_size=block_size,
        seed=seed, batch_size=Tb, r=None if paired else res["statistic"], tail=tail, **res,
    )


def permutation_test(
    y_true,
    y_pred,
    n_permutations: int = 1000,
    block_size: int | None = None,
    scheme: str | None = None,
    alternative: str = "greater",
    seed: int = 0,
    max_stat: bool = False,
    batch_size: int | None = None,
    *,
    return_null: bool = False,
    memory_budget=None,
    tail: str | None = None,
) -> PermutationResult:
    """Permutation test of the Pearson r between truth and prediction, per target.

    Parameters
    ----------
    y_true, y_pred : (n_samples, n_targets) or (n_samples,), or with leading
        batch axes ``(..., n_samples, n_targets)`` (layers, MEG windows; a 2-D
        ``y_true`` broadcasts against a batched ``y_pred``): every leading
        index is tested with the same arrangements. Any finite scale (each
        column is standardized in float64 first). NaN or inf raises
        ValueError; a target that is constant in either array warns and gets
        NaN r and p. Held-out predictions of SEVERAL fold models (nested CV)
        must not be tested this way: their fold scores are correlated under
        the null and this test is anti-conservative there (9-10% of p < 0.05
        measured); use :func:`cv_permutation_test`, which refits.
    n_permutations : K >= 1 random draws of the null.
    block_size : block length (samples) for ``scheme="block"``; minimum
        circular shift for ``scheme="circular"``.
    scheme : None | "permute" | "block" | "circular"
        Default None: "block" when ``block_size`` is given, else "permute".
        How ``y_true`` is rearranged (the same arrangement for every target
        of a draw); see :func:`permutation_indices`. Autocorrelated series
        (fMRI, time courses) need "block" or "circular": sample permutation
        is anti-conservative there.
    alternative : "greater" | "less" | "two-sided"
    seed : int; the same seed gives the same arrangements and p-values.
    max_stat : also return ``p_fwe``, family-wise corrected over targets by the
        max statistic.
    batch_size : targets per batch (default: sized from ``memory_budget``).
    return_null : keep the (K, T) null statistics (host memory 4 K T bytes).
    memory_budget : bytes or "4GiB" for one batch on the device (default:
        as the ridge engine, 25% of free RAM up to 8 GiB on CPU).
    tail : None | "normal"
        ``"normal"``: where fewer than 10 null values are at least as
        extreme, p comes from a Gaussian with the null's own mean and
        standard deviation (``jaxalign.stats._tail``: conservative far out
        for correlations, within 0.7-1.7x of 200,000 exact permutations
        at 1e-3..1e-4), so p can go below the floor ``1 / (K + 1)``.
        Without it a warning says when the floor can hide every discovery of
        an FDR correction (too few permutations for the number of targets).

    Returns
    -------
    PermutationResult with ``r`` (= ``statistic``), ``p``, ``p_fwe``,
    ``null_mean``, ``null_std``, optionally ``null`` and ``null_extreme``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((200, 3))
    >>> res = permutation_test(y, y + rng.standard_normal((200, 3)), n_permutations=99)
    >>> res.p.tolist()
    [0.01, 0.01, 0.01]
    """
    return _correlation_test(y_true, [y_pred], ["y_pred"], n_permutations, block_size,
                             scheme, alternative, seed, max_stat, batch_size, return_null,
                             memory_budget, tail)


def paired_permutation_test(
    y_true,
    pred_a,
    pred_b,
    n_permutations: int = 1000,
    block_size: int | None = None,
    scheme: str | None = None,
    alternative: str = "greater",
    seed: int = 0,
    max_stat: bool = False,
    batch_size: int | None = None,
    *,
    return_null: bool = False,
    memory_budget=None,
    tail: str | None = None,
) -> PermutationResult:
    """Is ``r(y_true, pred_a) - r(y_true, pred_b)`` larger than chance, per target?

    The null permutes ``y_true`` across samples (the MEG fine-tuned vs base
    analysis: the true response permuted across words), the SAME arrangement
    for both predictions, and recomputes the difference of correlations.
    With unit-norm centred columns ``u`` (truth), ``a``, ``b`` (predictions)
    the statistic is ``u . (a - b)``, so the null costs what one
    :func:`permutation_test` costs. "better" is ``alternative="greater"``,
    "worse" ``alternative="less"``; p as in :func:`permutation_test`. (The
    study's "worse" p was ``1 - p_better = #{null < observed} / (K + 1)``,
    which can be 0; ``alternative="less"`` is the valid version,
    ``(#{null <= observed} + 1) / (K + 1)``.) Other
    arguments as in :func:`permutation_test`; the result carries ``r_a``,
    ``r_b`` and ``statistic = r_a - r_b``.
    """
    return _correlation_test(y_true, [pred_a, pred_b], ["pred_a", "pred_b"], n_permutations,
                             block_size, scheme, alternative, seed, max_stat, batch_size,
                             return_null, memory_budget, tail)


def sign_flip_test(
    diffs,
    n_permutations: int = 10000,
    alternative: str = "greater",
    seed: int = 0,
    max_stat: bool = False,
    batch_size: int | None = None,
    *,
    return_null: bool = False,
    memory_budget=None,
) -> PermutationResult:
    """One-sample sign-flip permutation test of the mean, per target.

    Parameters
    ----------
    diffs : (n, n_targets) or (n,), or ``(..., n, n_targets)`` with leading
        batch axes (layers, windows; each leading index is more targets)
        Paired differences (e.g. per-subject score of model A minus model B).
        NaN raises; an all-zero target warns and gets NaN.
    n_permutations : random sign patterns. When ``2**n <= n_permutations``
        all ``2**n`` patterns are enumerated instead (``exact=True``,
        ``n_permutations = 2**n``, ``p = #{null at least as extreme} / 2**n``
        with the identity among them); otherwise ``p = (#hits + 1) / (K + 1)``.
        See :func:`sign_flip_signs`.
    alternative, seed, max_stat, batch_size, return_null, memory_budget :
        as in :func:`permutation_test`. (No Gaussian tail here: a mean of
        sign-flipped values over a few subjects can have heavier than normal
        tails; the null is one GEMM per chunk, so use more permutations.)

    The statistic is the mean; the null mean of ``s * d`` for random signs
    ``s`` is one GEMM, ``signs @ diffs / n``, per batch.
    """
    _check_choice(alternative, "alternative", ALTERNATIVES)
    K_req = _check_int(n_permutations, "n_permutations", 1)
    seed = _check_seed(seed)
    (diffs,), lead = _flatten_lead([diffs], ["diffs"])
    T_last = np.shape(diffs)[-1]
    if lead:
        T_last = T_last // int(np.prod(lead))
    d = _targets(diffs, "diffs")
    ravel = d.ndim == 1
    if ravel:
        d = d[:, None]
    n, T = d.shape
    if n < 1 or T < 1:
        raise ValueError(f"diffs has an empty axis: shape {d.shape}")
    exact = _exact_signs(n, K_req)
    K = 2**n if exact else K_req
    # one scale for all targets (the max statistic compares targets): the
    # root mean square in float64, so float32 neither under- nor overflows
    with np.errstate(over="ignore", invalid="ignore"):
        ms = float(np.mean(np.square(d, dtype=np.float64)))
    unit = math.sqrt(ms) if ms > 0 and math.isfinite(ms) else 1.0
    d_unit = d / unit if unit != 1.0 else d

    keep = return_null

    def fn(batch, signs, mask):
        return _sign_batch(batch[0], signs, mask, _side(alternative), return_null=keep)

    per_target = lambda kc: int(4 * 1.5 * (4 * n + 4 * min(kc, 1024) + (kc if keep else 0)))  # noqa: E731
    obs, count, mean, std, null, ext, Tb = _run(
        fn, [d_unit], ["diffs"], T, K, per_target, "signs",
        lambda a, b: _signs(n, K_req, seed, a, b), max_stat, keep,
        memory_budget, batch_size)
    const = ~obs["valid"]
    _warn_degenerate(const, "all-zero values", ["diffs"], stacklevel=3)
    p = count / K if exact else (count + 1) / (K + 1)
    p = np.where(const, np.nan, p)
    _warn_floor(p, K, None, exact=exact, stacklevel=3, remedy="Use")
    p_fwe = None
    if max_stat:
        tol = TIE_TOL * np.abs(d_unit).mean(axis=0)
        p_fwe = _p_fwe(obs["obs"], ext, alternative, tol, exact)
    back = (lambda a: None if a is None else np.asarray(a, np.float64) * unit)  # noqa: E731
    res = _finish(ravel, const, statistic=back(obs["obs"]), p=p, p_fwe=p_fwe,
                  null_mean=back(mean), null_std=back(std), null=back(null),
                  null_extreme=back(_extreme(ext, alternative)), constant=const)
    out = PermutationResult(
        n_permutations=K, alternative=alternative, scheme="sign-flip", block_size=None,
        seed=seed, exact=exact, batch_size=Tb, **res,
    )
    return _unflatten_lead(out, lead, T_last)
