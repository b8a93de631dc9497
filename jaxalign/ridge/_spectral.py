"""Spectral decomposition of a ridge problem, shared by every solver.

For a training design ``X`` (n x p) and any evaluation design ``E`` (m x p),
ridge regression with penalty ``a`` has the closed form

    W_a = (X^T X + a I)^-1 X^T Y            (primal, cheap when p <= n)
        = X^T (X X^T + a I)^-1 Y            (dual,   cheap when p >  n)

Both are written through one eigendecomposition of the smaller Gram matrix:

* primal: ``X^T X = V diag(s2) V^T``; ``coef_map = V`` (p x p),
  ``ev = E V`` (m x p), and either ``projT = (X V)^T`` (p x n, accurate) or
  no ``projT`` and ``Z = V^T (X^T Y)`` (fast: ``X^T Y`` of a training fold is
  the full data's minus the validation rows', so all folds share one GEMM;
  its float32 error grows with the design's condition number, so the engine
  uses it only for well-conditioned designs, see ``fast_path_ok``);
* dual:   ``X X^T = U diag(s2) U^T``; ``projT = U^T`` (n x n),
  ``coef_map = X^T U`` (p x n), ``ev = E X^T U`` (m x n);

and then, for every penalty at once (``d_a = 1 / (s2 + a)``):

    Z     = projT Y  or  V^T X^T Y        (r x T, computed once)
    W_a   = coef_map diag(d_a) Z
    E W_a = ev diag(d_a) Z

so scoring a whole grid of penalties costs one projection of ``Y`` plus one
small GEMM per penalty, and refitting each target with its own penalty costs
one elementwise scaling of ``Z``.

Precision: the Gram matrix and its eigendecomposition are computed in float64
(products of float32 numbers are exact in float64), which resolves singular
values down to ~1e-8 of the largest, better than a float32 SVD, and makes
ill-conditioned or collinear designs give the float64 closed form's answer.
``projT = (X V)^T`` is formed in float64 too, so that a direction with a tiny
singular value keeps its relative precision. The primal fast path (no
``projT``), used only for designs whose regularised condition number is below
~100 (``fast_path_ok``, checked in float64 on the whole design), decomposes in
float32, accurate there to ``eps32 * cond``. Everything that scales with the
number of targets stays float32. The float64
part runs inside ``jax.enable_x64``; only these small (p x p or n x n)
decompositions are float64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxalign._precision import jit as _jit

__all__ = ["Basis", "choose_method", "fast_path_ok", "spectral_basis"]


class Basis(NamedTuple):
    """Spectral form of one training design (a JAX pytree).

    Attributes
    ----------
    projT : (r, n_train) float32, or None (primal)
        Dual: ``Z = projT @ Y_train`` gives the targets in spectral
        coordinates (stored transposed: a contiguous left operand runs
        faster). Primal: ``Z = coef_map^T (X_train^T Y_train)``.
    s2 : (r,) float32
        Eigenvalues of the Gram matrix (squared singular values of X), >= 0.
    coef_map : (p, r) float32
        Coefficients are ``coef_map @ (d * Z)``.
    ev : (n_eval, r) float32
        Predictions on the evaluation design are ``ev @ (d * Z)``.
    x_mean : (p,) float32
        Training feature mean removed before the decomposition (zeros when no
        intercept is fitted).
    coef_mapT : (r, p) float32 or None
        Primal fast path: ``V^T`` stored contiguous, for ``Z = V^T (X^T Y)``.
    V64 : (p, p) float64 or None
        The eigenvectors in float64 (``keep_v64=True``; the whole design's
        basis, which the folds' ``K`` refer to).
    K : (r, p) float32 or None
        Shared projection (``V_ref`` given): ``V^T V_ref``, formed in float64.
        With ``P = V_ref^T X_all^T Y`` (the whole design's accurate
        projection), the training targets in this basis are
        ``K P - EoutT Y_out - mean_proj (sum Y_train)``.
    EoutT : (r, n_out) float32 or None
        ``(X_out V)^T`` for the rows outside the training set (``X_out``).
    mean_proj : (r,) float32 or None
        ``V^T x_mean`` (with ``V_ref``).
    """

    projT: jax.Array | None
    s2: jax.Array
    coef_map: jax.Array
    ev: jax.Array
    x_mean: jax.Array
    coef_mapT: jax.Array | None = None
    V64: jax.Array | None = None
    K: jax.Array | None = None
    EoutT: jax.Array | None = None
    mean_proj: jax.Array | None = None


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


def _basis(X: jax.Array, E: jax.Array, method: str, fit_intercept: bool, project: bool,
           V_ref=None, X_out=None, keep_v64: bool = False, with_coef: bool = True) -> Basis:
    """Traced under ``jax.enable_x64(True)``; inputs are float32 (``V_ref``
    float64)."""
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
    if method == "primal" and not project:
        # Fast path, taken only for designs found well-conditioned in float64
        # (fast_path_ok): float32 Gram and eigh are accurate to eps * cond.
        s2, V = _eigh64(X.T @ X)
        V32 = V
        projT = None
        coef_map = V32
        ev = E @ V32
    elif method == "primal":
        s2, V = _eigh64(X64.T @ X64)
        V32 = V.astype(f32)
        # with V_ref the fold is projected through the shared K (no projT)
        projT = jnp.dot(V.T, X64.T).astype(f32) if project and V_ref is None else None
        coef_map = V32
        ev = E @ V32
    else:
        s2, U = _eigh64(X64 @ X64.T)
        U32 = U.astype(f32)
        projT = U32.T
        if with_coef:
            coef_map = jnp.dot(X64.T, U).astype(f32)
            ev = E @ coef_map
        else:  # a CV fold: no refit, so no (p x n) coef_map; ev = (E X^T) U, in float64
            coef_map = None
            ev = jnp.dot(jnp.dot(E.astype(f64), X64.T), U).astype(f32)
    coef_mapT = coef_map.T if projT is None and V_ref is None else None
    V64 = K = EoutT = mean_proj = None
    if method == "primal" and project:
        V64 = V if keep_v64 else None
        if V_ref is not None:  # shared projection (see Basis.K)
            K = jnp.dot(V.T, V_ref).astype(f32)
            EoutT = jnp.dot(V.T, X_out.astype(f64).T).astype(f32)
            mean_proj = jnp.dot(V.T, x_mean.astype(f64)).astype(f32)
    return Basis(projT, s2.astype(f32), coef_map, ev, x_mean, coef_mapT, V64, K, EoutT, mean_proj)


_STATIC = ("method", "fit_intercept", "project", "keep_v64", "with_coef")
_basis_jit = _jit(_basis, static_argnames=_STATIC)
_basis_jit_layers = _jit(jax.vmap(_basis, in_axes=(0, 0, None, None, None, 0, 0, None, None)),
                         static_argnames=_STATIC)


def fast_path_ok(s2, alpha_min, tolerance=1e-5) -> bool:
    """Whether ``Z = V^T (X^T Y)`` is accurate enough for this design.

    Its float32 error, relative to the coefficients, is about ``eps32`` times
    the condition number of the regularised system,
    ``(s2_max + alpha_min) / (s2_min + alpha_min)``; accept it when that is
    below ``tolerance``. ``s2`` may carry a leading layer axis (all layers
    must pass).
    """
    import numpy as np

    s2 = np.maximum(np.asarray(s2, np.float64), 0.0)
    cond = (s2.max(axis=-1) + alpha_min) / (s2.min(axis=-1) + alpha_min)
    return bool(np.all(np.finfo(np.float32).eps * cond < tolerance))


def spectral_basis(
    X_train, X_eval, *, method: str = "auto", fit_intercept: bool = False,
    project: bool = True,
    V_ref=None,
    X_out=None,
    keep_v64: bool = False,
    with_coef: bool = True,
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
    project : bool
        Primal only: also form ``projT = (X V)^T`` (accurate path). Without
        it, targets are projected as ``V^T (X^T Y)`` (fast path).
    V_ref, X_out : optional, primal with ``project`` only
        The whole design's float64 eigenvectors (``keep_v64=True`` of its
        basis) and this fold's rows outside the training set: the shared
        projection ``K``, ``EoutT``, ``mean_proj`` (see :class:`Basis`)
        replaces ``projT``.
    keep_v64 : bool
        Keep the float64 eigenvectors (``Basis.V64``; primal with ``project``).
    with_coef : bool
        Dual only: form ``coef_map = X^T U`` (p x n float64 GEMM), which only
        a refit needs. Without it (CV folds) ``coef_map`` is None and ``ev`` is
        ``(E X^T) U``, a cheaper product.

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
    if V_ref is not None:
        X_out = jnp.asarray(X_out, jnp.float32)
    with jax.enable_x64(True):
        return fn(X_train, X_eval, method, fit_intercept, project, V_ref, X_out, keep_v64, with_coef)
