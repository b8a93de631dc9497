"""The penalty sweep by partial fractions: every penalty's prediction variance
from one matrix-vector product per target, whatever the grid size.

Scoring a penalty ``a`` on a validation fold needs, per target, the squared
norm of the centred validation predictions

    v(a) = || R diag(d_a) z ||^2 = sum_kl G_kl d_ak d_al z_k z_l,

with ``z`` the target in spectral coordinates (r,), ``R`` the centred
evaluation matrix (m x r), ``G = R^T R`` (r x r) and ``d_ak = 1 / (s2_k + a)``.
Done directly (``_solve``) that is one ``m x r`` GEMM per penalty: ``2 A m r``
flops per target and fold, most of the engine's work. But for
``s2_k != s2_l`` the product of two penalty factors splits into a difference
(partial fractions)

    d_ak d_al = (d_ak - d_al) / (s2_l - s2_k)                       (R form)
              = -(rho_ak - rho_al) / (a (s2_l - s2_k)),  rho = s2 d (rho form)

so, with the antisymmetric ``M_kl = G_kl / (s2_l - s2_k)`` (zero where
``s2_k == s2_l``) and ``u = z * (M z)``,

    v(a) = 2 d_a . u  + sum_k d_ak^2 z_k (G_tie z)_k                (R form)
         = -(2 / a) rho_a . u + ...                                 (rho form)

where ``G_tie`` keeps the pairs with equal eigenvalues (the diagonal, and
exact ties such as the zero eigenvalues of a rank-deficient design). The
grid then costs one ``r x r`` product per target (``M z``) plus ``O(A r)``:
with 11 penalties on a 768-feature design and 600 validation samples, a
quarter of the direct sweep's flops.

Precision. The two pieces of a split term are each larger than the term by
at most ``(max(s2_k, s2_l) + a) / |s2_k - s2_l|`` (R form) or
``(s2_k s2_l / a + max(s2_k, s2_l)) / |s2_k - s2_l|`` (rho form); the R form
suits penalties below the spectrum, the rho form those above it. For each
penalty the form with the smaller worst case over all pairs is used (the
worst pair is always a neighbour in sorted order, so this is ``O(r)`` per
penalty), and ``M z`` and the sums are done in float64. On the designs in
``tests/test_ridge.py`` the worst amplification is 1e3-1e5, which leaves
float64 results ~1e-11 relative, more accurate than the float32 direct sweep
(~1e-6). A penalty whose amplification exceeds ``MAX_AMPLIFICATION`` (near
but not exactly equal eigenvalues) is swept directly instead; exact ties are
carried by ``G_tie``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._precision import jit as _jit

__all__ = ["MAX_AMPLIFICATION", "Fractions", "amplification", "fractions", "variance"]

# eps64 * 1e9 ~ 1e-7: still below the float32 rounding of the direct sweep.
MAX_AMPLIFICATION = 1e9


class Fractions(NamedTuple):
    """Per-fold float64 arrays of the partial-fraction sweep (a pytree)."""

    M: jax.Array  # (r, r) G_kl / (s2_l - s2_k), zero on ties
    tie: jax.Array | None  # (r, r) G on tied pairs (incl. diagonal), None: diagonal only
    gdiag: jax.Array  # (r,) diag(G)
    C: jax.Array  # (A, r) off-diagonal weights: 2 d (R form) or -2 rho / a (rho form)
    D2: jax.Array  # (A, r) d^2


def _amplification(s2, alphas):
    """Worst-pair amplification of the R and rho forms, (A,) each (float64).

    ``s2`` is (r,), any order. Pairs with equal eigenvalues are exact (ties)
    and excluded.
    """
    s = jnp.sort(s2)[::-1]
    big, small = s[:-1], s[1:]
    gap = big - small
    ok = gap > 0
    gap = jnp.where(ok, gap, 1.0)
    a = alphas[:, None]
    amp_r = jnp.where(ok, (big + a) / gap, 0.0).max(axis=1)
    amp_rho = jnp.where(ok, (big * small / a + big) / gap, 0.0).max(axis=1)
    return amp_r, amp_rho


def _fractions(R, s2, alphas, with_ties: bool) -> Fractions:
    """Traced under ``jax.enable_x64(True)``: R (m, r) and s2 (r,) float32,
    alphas (A,) float64."""
    f64 = jnp.float64
    R = R.astype(f64)
    s2 = s2.astype(f64)
    G = R.T @ R
    diff = s2[None, :] - s2[:, None]  # diff[k, l] = s2_l - s2_k
    tied = diff == 0
    M = jnp.where(tied, 0.0, G / jnp.where(tied, 1.0, diff))
    tie = jnp.where(tied, G, 0.0) if with_ties else None
    d = 1.0 / (s2[None, :] + alphas[:, None])  # (A, r)
    amp_r, amp_rho = _amplification(s2, alphas)
    use_r = (amp_r <= amp_rho)[:, None]
    C = jnp.where(use_r, 2.0 * d, -2.0 * (s2[None, :] * d) / alphas[:, None])
    # the variance of the predictions scaled by the direct sweep's gain
    # (``_solve.penalty_gain``: large penalties must not underflow float32)
    g2 = jnp.square(jnp.maximum(1.0, alphas / jnp.max(s2)))[:, None]
    return Fractions(M, tie, jnp.diagonal(G), C * g2, d * d * g2)


_fractions_jit = _jit(_fractions, static_argnames=("with_ties",))
_fractions_layers = _jit(jax.vmap(_fractions, in_axes=(0, 0, None, None)),
                         static_argnames=("with_ties",))


def amplification(s2, alphas) -> np.ndarray:
    """Per-penalty amplification of the better form, ``(A,)`` (max over a
    leading layer axis of ``s2`` if any), computed in float64 on the host."""
    s2 = np.asarray(s2, np.float64)
    alphas = np.asarray(alphas, np.float64)
    with jax.enable_x64(True):
        fn = jax.vmap(_amplification, in_axes=(0, None)) if s2.ndim == 2 else _amplification
        amp_r, amp_rho = fn(jnp.asarray(s2), jnp.asarray(alphas))
        amp = np.minimum(np.asarray(amp_r), np.asarray(amp_rho))
    return amp.reshape(-1, alphas.size).max(axis=0)


def has_ties(s2) -> bool:
    """Whether some eigenvalues (of any layer) are exactly equal."""
    s = np.sort(np.asarray(s2), axis=-1)
    return bool(np.any(s[..., 1:] == s[..., :-1]))


def fractions(R, s2, alphas, with_ties: bool) -> Fractions:
    """Float64 arrays of the sweep for one fold (leading layer axis allowed)."""
    with jax.enable_x64(True):
        fn = _fractions_layers if jnp.ndim(s2) == 2 else _fractions_jit
        return fn(R, s2, jnp.asarray(np.asarray(alphas, np.float64)), with_ties)


def variance(fr: Fractions, Z):
    """``v[a, t] = || R diag(d_a) Z[:, t] ||^2 g_a^2`` for every penalty, (A, T)
    float32, with ``g_a`` the sweep's gain (``_solve.penalty_gain``). Must be traced with x64 enabled (``M Z`` runs in float64)."""
    x = Z.astype(jnp.float64)
    u = x * (fr.M @ x)
    tx = fr.tie @ x if fr.tie is not None else fr.gdiag[:, None] * x
    v = fr.C @ u + fr.D2 @ (x * tx)
    return jnp.maximum(v, 0.0).astype(jnp.float32)
