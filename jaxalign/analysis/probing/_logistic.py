"""L2-regularised logistic regression in JAX: scikit-learn's objective,
solved to convergence by L-BFGS, many problems at once.

The objective is scikit-learn's ``LogisticRegression(penalty="l2")`` (the
default, solver "lbfgs"), with class labels ``0..K-1``, one-hot ``Y``,
sample weights ``w`` (ones by default) and unpenalised intercepts:

    binary (K = 2):  min_{w, b}  C sum_i w_i [log(1 + e^{z_i}) - y_i z_i] + ||w||^2 / 2,
                     z_i = x_i . w + b                      (coef (1, p), intercept (1,))
    K >= 3:          min_{W, b}  C sum_i w_i [logsumexp(z_i) - z_{i, y_i}] + ||W||_F^2 / 2,
                     z_i = W x_i + b                        (coef (K, p), intercept (K,))

Both are the softmax cross-entropy of logits ``z`` (the binary one with the
logits ``(0, z)``). Divided by ``C sum_i w_i`` (same minimiser) it reads
``mean_w(loss) + ||W||^2 / (2 C n_w)``, the form scikit-learn's solvers use.

Change of variables (exact: the minimiser does not depend on it, so
computing it from all rows of a cross-validation leaks nothing): the
columns are centred (``mu``; not without an intercept, which would change
that problem) and rotated and scaled onto the principal axes of the data, ``Xs = (X - mu) V / sigma`` (``V`` orthonormal, from a
float64 ``eigh`` of the smaller Gram matrix; directions with variance under
1e-12 of the largest, which float64 cannot resolve, are dropped). As ``V``
is orthonormal, ``||W||^2`` stays a sum of squares, each direction ``k``
weighted by ``lambda_k = 1 / (C n_w sigma_k^2)``; each row of coefficients
is then scaled by ``d_k = 1 / sqrt(1/4 + lambda_k)`` (1/4 bounds the loss
curvature of a unit-variance column). The multinomial coefficients and
intercepts live in the (K-1)-dimensional space of class vectors summing to
zero (the loss ignores a shift common to all classes and the penalty is
smallest without one; scikit-learn's converged solutions sum to zero too),
so no flat direction is left. The result: features at 1e-6 or 1e4, offsets
and correlated columns converge in as many iterations as standardised ones,
where L-BFGS on the raw objective stalls (scikit-learn's lbfgs at its default
``tol=1e-4``, ``max_iter=100`` stopped up to 0.09 off in probabilities on
such features in the tests; its "newton-cholesky" solver does not and is the reference in the
tests). What remains is the problem's own conditioning: a confident model
under a weak penalty (large ``C``) has little curvature along its strongest
directions and takes a few hundred iterations.

Convergence: the largest absolute gradient in the new variables below
``tol`` times its value at the start (the class priors), or a step that
lowers the objective by less than one machine epsilon relative (rounding:
no further progress is measurable), or ``max_iter`` iterations (a
``UserWarning``). The solver (``optax.lbfgs`` with its zoom line search) is
``vmap``-ed over a batch of problems sharing ``X`` and differing in sample
weights and ``C``: a nested cross-validation over a grid of ``C`` is one
compiled call (:func:`fit_batch`), converged problems frozen while the
others finish.

Precision: float64 by default (float32 on TPUs, which have none). Against
scikit-learn's converged solution the tests measure 1e-7..2e-6 relative on
coefficients and 1e-7..1e-6 on probabilities (stated tolerances 1e-5), the
same at feature scales from 1e-25 to 1e20 (``tests/test_scale.py``).
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign._core.validation import as_float_array, check_finite
from jaxalign._precision import jit

__all__ = ["LogisticRegression", "fit_batch", "default_dtype"]

_FTOL_EPS = 1


def default_dtype() -> str:
    """float64, except on TPUs (no float64 there)."""
    return "float32" if jax.default_backend() == "tpu" else "float64"


def _objective(params, Xs, Y, w, lam, d, Q, binary, intercept):
    V, c = params
    Ws = V * d[:, None]
    z = Xs @ Ws + c if intercept else Xs @ Ws
    if binary:
        z = jnp.concatenate([jnp.zeros_like(z), z], axis=1)
    else:
        z = z @ Q.T
    ce = jax.nn.logsumexp(z, axis=1) - jnp.sum(Y * z, axis=1)
    return jnp.sum(w * ce) / jnp.sum(w) + 0.5 * jnp.sum(lam[:, None] * Ws * Ws)


def _max_abs(tree):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)]))


def _solve_one(Xs, Y, Q, w, lam, c0, *, binary, intercept, tol, max_iter, memory_size):
    p = Xs.shape[1]
    m = c0.shape[0]
    d = 1.0 / jnp.sqrt(0.25 + lam)
    fun = partial(_objective, Xs=Xs, Y=Y, w=w, lam=lam, d=d, Q=Q, binary=binary,
                  intercept=intercept)
    opt = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=40),
    )
    x0 = (jnp.zeros((p, m), Xs.dtype), c0)  # m = 1 (binary) or K - 1
    v0, g0 = jax.value_and_grad(fun)(x0)
    ftol = _FTOL_EPS * jnp.finfo(Xs.dtype).eps
    gtol = tol * jnp.maximum(_max_abs(g0), jnp.finfo(Xs.dtype).tiny)

    def cond(carry):
        _, _, k, _, _, done = carry
        return (~done) & (k < max_iter)

    def body(carry):
        x, st, k, v, g, done = carry
        upd, st_new = opt.update(g, st, x, value=v, grad=g, value_fn=fun)
        x_new = optax.apply_updates(x, upd)
        v_new = optax.tree_utils.tree_get(st_new, "value")
        g_new = optax.tree_utils.tree_get(st_new, "grad")
        small = (v - v_new) <= ftol * jnp.maximum(jnp.maximum(jnp.abs(v), jnp.abs(v_new)), 1.0)
        done_new = (_max_abs(g_new) <= gtol) | small | ~jnp.isfinite(v_new)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(done, b, a), new, old)  # noqa: E731
        return (keep(x_new, x), keep(st_new, st), jnp.where(done, k, k + 1),
                jnp.where(done, v, v_new), keep(g_new, g), done | done_new)

    done0 = _max_abs(g0) == 0
    x, _, k, v, g, _ = jax.lax.while_loop(
        cond, body, (x0, opt.init(x0), jnp.zeros((), jnp.int32), v0, g0, done0))
    V, c = x
    return V * d[:, None], c, k, _max_abs(g), v


@partial(jit, static_argnames=("binary", "intercept", "max_iter", "memory_size"))
def _solve_batch(Xs, Y, Q, W, LAM, C0, tol, *, binary, intercept, max_iter, memory_size):
    f = partial(_solve_one, binary=binary, intercept=intercept, tol=tol, max_iter=max_iter,
                memory_size=memory_size)
    return jax.vmap(f, in_axes=(None, None, None, 0, 0, 0))(Xs, Y, Q, W, LAM, C0)


def fit_batch(X, y, n_classes, weights, Cs, *, tol=1e-10, max_iter=2000, dtype=None,
              fit_intercept=True, memory_size=30):
    """Fit one logistic regression per row of ``weights`` / entry of ``Cs``, all sharing ``X``.

    Parameters
    ----------
    X : (n, p) features
    y : (n,) int class index in ``0..n_classes-1``
    n_classes : int >= 2 (2: binary model with one coefficient row)
    weights : (B, n) non-negative sample weights (0 leaves a sample out:
        cross-validation folds as masks over one ``X``)
    Cs : (B,) inverse penalty strengths (> 0)

    Returns
    -------
    coef : (B, m, p) float64, m = 1 (binary) or n_classes
    intercept : (B, m) float64
    n_iter : (B,) int
    grad_max : (B,) final largest absolute gradient (preconditioned variables)
    """
    dtype = np.dtype(dtype or default_dtype())
    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    Cs = np.broadcast_to(np.asarray(Cs, np.float64), (weights.shape[0],))
    if np.any(weights < 0) or not np.all(weights.sum(axis=1) > 0):
        raise ValueError("sample weights must be >= 0 with a positive sum in every problem")
    if not np.all(Cs > 0) or not np.all(np.isfinite(Cs)):
        raise ValueError(f"C must be positive and finite, got {Cs}")
    binary = n_classes == 2
    n, p = X.shape
    # without an intercept to absorb it, centring would change the problem
    mu = X.mean(axis=0) if fit_intercept else np.zeros(p)
    basis, sigma = _whitening(X - mu)
    Xs = ((X - mu) @ basis) / sigma
    Y = np.eye(n_classes)[y]
    n_w = weights.sum(axis=1)
    LAM = 1.0 / (Cs[:, None] * n_w[:, None] * sigma[None, :] ** 2)
    # start at the (smoothed) class priors of each problem's weighted samples
    counts = weights @ Y + 1.0
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    Q = _sum_zero_basis(n_classes)
    C0 = (logp[:, 1:] - logp[:, :1]) if binary else logp @ Q
    if not fit_intercept:
        C0 = np.zeros_like(C0)
    with jax.enable_x64(dtype == np.float64):
        Ws, c, k, gmax, _ = _solve_batch(
            jnp.asarray(Xs, dtype), jnp.asarray(Y, dtype), jnp.asarray(Q, dtype),
            jnp.asarray(weights, dtype),
            jnp.asarray(LAM, dtype), jnp.asarray(C0, dtype), jnp.asarray(tol, dtype),
            binary=binary, intercept=bool(fit_intercept), max_iter=int(max_iter),
            memory_size=int(memory_size))
        Ws, c = np.asarray(Ws, np.float64), np.asarray(c, np.float64)
        k, gmax = np.asarray(k), np.asarray(gmax, np.float64)
    Wp = basis @ (Ws / sigma[None, :, None])  # (B, p, m)
    if not binary:  # back from the sum-zero coordinates to one row per class
        Wp, c = Wp @ Q.T, c @ Q.T
    coef = np.swapaxes(Wp, 1, 2)  # (B, m, p)
    intercept = c - coef @ mu
    return coef, intercept, k, gmax


def _sum_zero_basis(k):
    """(k, k-1) orthonormal columns spanning the vectors that sum to zero."""
    if k < 2:
        return np.ones((max(k, 1), 1))
    u, _, _ = np.linalg.svd(np.eye(k) - 1.0 / k)
    return u[:, : k - 1]


def _whitening(Xc):
    """Orthonormal directions ``basis`` (p, r) of the rows of ``Xc`` and the
    standard deviation ``sigma`` (r,) of ``Xc`` along each (float64 eigh of the
    smaller Gram matrix; directions with variance below 1e-12 of the largest,
    which float64 cannot resolve, are dropped)."""
    n, p = Xc.shape
    if p <= n:
        s2, basis = np.linalg.eigh(Xc.T @ Xc / n)
    else:  # dual: X X^T = U S^2 U^T, directions X^T U / S
        s2, U = np.linalg.eigh(Xc @ Xc.T / n)
        keep = s2 > 0
        s2, U = s2[keep], U[:, keep]
        basis = (Xc.T @ U) / np.sqrt(n * s2)
    top = s2.max(initial=0.0)
    keep = s2 > 1e-12 * top if top > 0 else np.zeros(s2.shape, bool)
    if not keep.any():  # all features constant: a zero direction keeps shapes valid
        return np.zeros((p, 1)), np.ones(1)
    return basis[:, keep], np.sqrt(s2[keep])


class LogisticRegression:
    """L2-regularised logistic regression (binary or multinomial), scikit-learn's API.

    Minimises scikit-learn's ``LogisticRegression`` objective (see the module
    docstring) to convergence in JAX; ``coef_``, ``intercept_`` and
    probabilities agree with scikit-learn's converged solution.

    Parameters
    ----------
    C : float > 0
        Inverse penalty strength (larger: less regularisation).
    fit_intercept : bool
        Fit unpenalised intercepts (default True). False fixes them at 0.
    tol : float
        Largest absolute gradient at convergence (preconditioned variables,
        objective divided by ``C n``). Tighter than scikit-learn's 1e-4: the
        answer, not the solver, should be what is compared.
    max_iter : int
        L-BFGS iterations at most (a warning says when they ran out).
    dtype : "float64" (default; "float32" on TPUs) or "float32"

    Attributes
    ----------
    classes_ : (K,) the sorted class labels seen in ``fit``
    coef_ : (1, p) for two classes, else (K, p)
    intercept_ : (1,) or (K,)
    n_iter_ : (1,) iterations used
    n_features_in_ : int
    """

    def __init__(self, C=1.0, *, fit_intercept=True, tol=1e-10, max_iter=2000, dtype=None):
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.dtype = dtype

    # scikit-learn's clone / grid search need these
    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in ("C", "fit_intercept", "tol", "max_iter", "dtype")}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"invalid parameter {k!r} for LogisticRegression")
            setattr(self, k, v)
        return self

    def __repr__(self):
        return f"LogisticRegression(C={self.C!r})"

    def fit(self, X, y, sample_weight=None):
        X = _check_X(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with {X.shape[0]} labels, got shape {y.shape}")
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"LogisticRegression needs samples of at least 2 classes, got only {classes}")
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if w.shape != y.shape:
            raise ValueError(f"sample_weight must have shape {y.shape}, got {w.shape}")
        coef, intercept, k, _ = fit_batch(
            X, y_idx, len(classes), w[None], np.array([float(self.C)]), tol=self.tol,
            max_iter=self.max_iter, dtype=self.dtype, fit_intercept=self.fit_intercept)
        if k[0] >= self.max_iter:
            warnings.warn(
                f"LogisticRegression did not converge in max_iter={self.max_iter} "
                "iterations; increase max_iter", UserWarning, stacklevel=2)
        self.classes_ = classes
        self.coef_ = coef[0]
        self.intercept_ = intercept[0]
        self.n_iter_ = np.asarray(k[:1], np.int32)
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self, X):
        if not hasattr(self, "coef_"):
            raise RuntimeError("this LogisticRegression is not fitted yet: call fit(X, y) first")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on "
                             f"{self.n_features_in_}")
        return X

    def decision_function(self, X):
        X = self._check_fitted(X)
        z = X @ self.coef_.T + self.intercept_
        return z[:, 0] if len(self.classes_) == 2 else z

    def predict_log_proba(self, X):
        z = self.decision_function(X)
        if z.ndim == 1:
            z = np.column_stack([np.zeros_like(z), z])
        zmax = z.max(axis=1, keepdims=True)
        return z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))

    def predict_proba(self, X):
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        z = self.decision_function(X)
        idx = (z > 0).astype(int) if z.ndim == 1 else z.argmax(axis=1)
        return self.classes_[idx]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy (weighted by ``sample_weight`` when given)."""
        hit = self.predict(X) == np.asarray(y)
        return float(np.average(hit, weights=sample_weight))


def _check_X(X):
    X = as_float_array(X, "X", (2,))
    check_finite(X, "X")
    return X
