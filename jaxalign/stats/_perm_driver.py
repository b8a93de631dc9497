"""The batching driver of the permutation tests: target batches sized from a
memory budget and streamed from the host, arrangement chunks, one batch in
flight while the previous one is collected."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._core.memory import default_memory_budget, parse_bytes, target_batch_size
from jaxalign._precision import jit as _jit
from jaxalign.stats._perm_arrangements import (
    _indices_from_orders,
    _block_offsets,
    _orders,
    _shifts,
    block_layout,
)
from jaxalign.stats._perm_checks import _check_int, _raise_nonfinite
from jaxalign.stats._perm_kernels import _GATHER_GROUP

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
