"""Compiled kernels of the permutation tests: one target batch, one chunk of
arrangements, reduced to counts, sums and maxima inside the loop (see the
algorithm notes in ``_permutation``)."""

from __future__ import annotations

import functools
from functools import partial

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxalign._precision import jit as _jit
from jaxalign.ridge._scores import center
from jaxalign.stats._perm_checks import TIE_TOL

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
