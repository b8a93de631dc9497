"""Spectral decomposition of a ridge problem, shared by every solver.

For a training design ``X`` (n x p) and any evaluation design ``E`` (m x p),
ridge regression with penalty ``a`` has the closed form

    W_a = (X^T X + a I)^-1 X^T Y            (primal, cheap when p <= n)
        = X^T (X X^T + a I)^-1 Y            (dual,   cheap when p >  n)

Both are written through one eigendecomposition of the smaller Gram matrix:

* primal: ``X^T X = V diag(s2) V^T``; ``proj = X V`` (n x p),
  ``coef_map = V`` (p x p), ``ev = E V`` (m x p);
* dual:   ``X X^T = U diag(s2) U^T``; ``proj = U`` (n x n),
  ``coef_map = X^T U`` (p x n), ``ev = E X^T U`` (m x n);

and then, for every penalty at once (``d_a = 1 / (s2 + a)``):

    Z     = proj^T Y                      (r x T, computed once)
    W_a   = coef_map diag(d_a) Z
    E W_a = ev diag(d_a) Z

so scoring a whole grid of penalties costs one projection of ``Y`` plus one
small GEMM per penalty, and refitting each target with its own penalty costs
one elementwise scaling of ``Z``.

Precision: the Gram matrix and its eigendecomposition are computed in float64
(products of float32 numbers are exact in float64), which resolves singular
values down to ~1e-8 of the largest, better than a float32 SVD, and makes
ill-conditioned or collinear designs give the float64 closed form's answer.
Everything that scales with the number of targets stays float32. The float64
part runs inside ``jax.enable_x64``; only these small (p x p or n x n)
decompositions are float64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Basis", "choose_method", "spectral_basis"]


class Basis(NamedTuple):
    """Spectral form of one training design (a JAX pytree).

    Attributes
    ----------
    proj : (n_train, r) float32
        ``Z = proj^T Y_train`` gives the targets in spectral coordinates.
    s2 : (r,) float32
        Eigenvalues of the Gram matrix (squared singular values of X), >= 0.
    coef_map : (p, r) float32
        Coefficients are ``coef_map @ (d * Z)``.
    ev : (n_eval, r) float32
        Predictions on the evaluation design are ``ev @ (d * Z)``.
    x_mean : (p,) float32
        Training feature mean removed before the decomposition (zeros when no
        intercept is fitted).
    """

    proj: jax.Array
    s2: jax.Array
    coef_map: jax.Array
    ev: jax.Array
    x_mean: jax.Array


def choose_method(n_samples: int, n_features: int, method: str = "auto") -> str:
    """Return ``"primal"`` (eigh of X^T X) or ``"dual"`` (eigh of X X^T).

    ``"auto"`` picks the smaller Gram matrix: primal when p <= n.
    """
    if method == "auto":
        return "primal" if n_features <= n_samples else "dual"
    if method not in ("primal", "dual"):
        raise ValueError(f"method must be 'auto', 'primal' or 'dual', got {method!r}")
    return method


def _eigh64(gram64: jax.Array) -> tuple[jax.Array, jax.Array]:
    s2, vecs = jnp.linalg.eigh(gram64)
    # Rounding can make eigenvalues of a PSD matrix slightly negative.
    return jnp.clip(s2, 0.0, None), vecs


def _basis(X: jax.Array, E: jax.Array, method: str, fit_intercept: bool) -> Basis:
    """Traced under ``jax.enable_x64(True)``; inputs are float32."""
    f32, f64 = jnp.float32, jnp.float64
    if fit_intercept:
        x_mean = jnp.mean(X.astype(f64), axis=0)
        X64 = X.astype(f64) - x_mean
        X = X64.astype(f32)
        E = (E.astype(f64) - x_mean).astype(f32)
        x_mean = x_mean.astype(f32)
    else:
        X64 = X.astype(f64)
        x_mean = jnp.zeros((X.shape[1],), f32)
    if method == "primal":
        s2, V = _eigh64(X64.T @ X64)
        V32 = V.astype(f32)
        proj = jnp.dot(X64, V).astype(f32)
        coef_map = V32
        ev = E @ V32
    else:
        s2, U = _eigh64(X64 @ X64.T)
        U32 = U.astype(f32)
        proj = U32
        coef_map = jnp.dot(X64.T, U).astype(f32)
        ev = E @ coef_map
    return Basis(proj, s2.astype(f32), coef_map, ev, x_mean)


_basis_jit = jax.jit(_basis, static_argnames=("method", "fit_intercept"))
_basis_jit_layers = jax.jit(
    jax.vmap(_basis, in_axes=(0, 0, None, None)), static_argnames=("method", "fit_intercept")
)


def spectral_basis(
    X_train, X_eval, *, method: str = "auto", fit_intercept: bool = False
) -> Basis:
    """Decompose a training design once for all penalties and targets.

    Parameters
    ----------
    X_train : array (n_train, p) or (n_layers, n_train, p)
        Training design; a leading axis stacks several feature sets (layers)
        that share the same targets.
    X_eval : array (n_eval, p) or (n_layers, n_eval, p)
        Design on which predictions will be scored (validation fold).
    method : {"auto", "primal", "dual"}
    fit_intercept : bool
        Centre features by the training mean (the targets' training mean is
        handled by the caller).

    Returns
    -------
    Basis
        Arrays with a leading layer axis when the inputs had one.
    """
    X_train = jnp.asarray(X_train, jnp.float32)
    X_eval = jnp.asarray(X_eval, jnp.float32)
    n, p = X_train.shape[-2:]
    method = choose_method(n, p, method)
    fn = _basis_jit_layers if X_train.ndim == 3 else _basis_jit
    with jax.enable_x64(True):
        return fn(X_train, X_eval, method, fit_intercept)
