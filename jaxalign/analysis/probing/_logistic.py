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
no further progress is measurable; on a quasi-Newton direction this first
clears the L-BFGS memory and tries steepest descent, and stops only when
that stalls too), or ``max_iter`` iterations (a ``UserWarning``).

The solver: L-BFGS (memory 30, two-loop recursion) with a line search from
the unit step that accepts a step with sufficient decrease (Armijo, c1 =
1e-4) that does not overshoot the minimum along the direction (slope there
below 0.9 times the initial slope's size), else shrinks it by safeguarded
cubic interpolation (an Armijo point is the fallback), written for a batch of problems that
share ``X`` and differ in sample weights and ``C``: a nested cross-validation
over a grid of ``C`` is one compiled call (:func:`fit_batch`), converged
problems frozen while the others finish. Every objective evaluation of the
batch is one ``(n, r) x (r, B m)`` product. It replaced ``jax.vmap`` over
``optax.lbfgs`` with its zoom line search, which found the same minimisers
in as many iterations but 10-25x slower: the zoom line search branches with
``lax.cond`` on a per-problem predicate, and under ``vmap`` that becomes a
select whose operands, the shared ``X`` included, are broadcast to every
problem, a ``(B, n, r)`` copy at every line-search step.

Precision: float64 by default (float32 on TPUs, which have none). Against
scikit-learn's converged solution the tests measure 1e-7..2e-6 relative on
coefficients and 1e-7..1e-6 on probabilities (stated tolerances 1e-5), the
same at feature scales from 1e-25 to 1e20 (``tests/test_scale.py``). The
batched solver and the vmapped optax one agree with it equally well (on the
tests' data at C = 1e-3..10: coefficients 1e-9..7e-8 relative, against
2e-10..8e-8 for the optax solver).
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._core.validation import as_float_array, check_finite
from jaxalign._precision import jit

__all__ = ["LogisticRegression", "fit_batch", "default_dtype"]

_FTOL_EPS = 1
_MAX_LINESEARCH = 40


def default_dtype() -> str:
    """float64, except on TPUs (no float64 there)."""
    return "float32" if jax.default_backend() == "tpu" else "float64"


def _values(params, Xs, Y, W, LAM, D, Q, binary, intercept):
    """(B,) objectives of B problems sharing ``Xs``: params ``V`` (B, r, m), ``c`` (B, m)."""
    V, c = params
    Ws = V * D[:, :, None]
    z = jnp.einsum("nr,brm->bnm", Xs, Ws)  # one (n, r) x (r, B m) product for the batch
    if intercept:
        z = z + c[:, None, :]
    if binary:
        z = jnp.concatenate([jnp.zeros_like(z), z], axis=2)
    else:
        z = z @ Q.T
    ce = jax.nn.logsumexp(z, axis=2) - jnp.sum(Y[None] * z, axis=2)
    return (jnp.sum(W * ce, axis=1) / jnp.sum(W, axis=1)
            + 0.5 * jnp.sum(LAM[:, :, None] * Ws * Ws, axis=(1, 2)))


def _dot(a, b):
    """Per-problem inner products of two (V, c) pairs: (B,)."""
    return jnp.sum(a[0] * b[0], axis=(1, 2)) + jnp.sum(a[1] * b[1], axis=1)


def _axpy(t, p, x):
    """``x + t p`` per problem (t: (B,))."""
    return x[0] + t[:, None, None] * p[0], x[1] + t[:, None] * p[1]


def _max_abs(g):
    """Per-problem largest absolute entry of a (V, c) pair: (B,)."""
    return jnp.maximum(jnp.max(jnp.abs(g[0]), axis=(1, 2)), jnp.max(jnp.abs(g[1]), axis=1))


def _where(mask, new, old):
    """Per-problem choice between two pytrees with a leading batch axis."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b),
                        new, old)


@partial(jit, static_argnames=("binary", "intercept", "max_iter", "memory_size"))
def _solve_batch(Xs, Y, Q, W, LAM, C0, tol, *, binary, intercept, max_iter, memory_size):
    """L-BFGS on B problems at once, explicitly batched (see the module docstring).

    Starts at the class priors (zero coefficients, intercepts ``C0``).
    Returns the coefficients, intercepts, iterations, final largest absolute
    gradient and objective of every problem.
    """
    B, r = LAM.shape
    dt = Xs.dtype
    D = 1.0 / jnp.sqrt(0.25 + LAM)
    obj = partial(_values, Xs=Xs, Y=Y, W=W, LAM=LAM, D=D, Q=Q, binary=binary, intercept=intercept)

    def value_and_grad(x):  # the problems are separable: the gradient of the sum is theirs
        (_, v), g = jax.value_and_grad(lambda x: (lambda f: (jnp.sum(f), f))(obj(x)),
                                       has_aux=True)(x)
        return v, g

    x0 = (jnp.zeros((B, r, C0.shape[1]), dt), C0)
    v0, g0 = value_and_grad(x0)
    gtol = tol * jnp.maximum(_max_abs(g0), jnp.finfo(dt).tiny)
    ftol = _FTOL_EPS * jnp.finfo(dt).eps
    M = memory_size
    mem = (jnp.zeros((M,) + x0[0].shape, dt), jnp.zeros((M,) + x0[1].shape, dt))
    state0 = dict(x=x0, v=v0, g=g0, S=mem, Yd=mem, rho=jnp.zeros((M, B), dt), gamma=jnp.ones(B, dt),
                  k=jnp.zeros(B, jnp.int32), done=_max_abs(g0) == 0,
                  trip=jnp.zeros((), jnp.int32))

    def direction(st):
        """-H g by the two-loop recursion over the last M pairs (rho = 0: empty slot)."""
        trip = st["trip"]

        def newest_first(j, carry):
            q, alphas = carry
            i = (trip - 1 - j) % M
            a = st["rho"][i] * _dot((st["S"][0][i], st["S"][1][i]), q)
            return _axpy(-a, (st["Yd"][0][i], st["Yd"][1][i]), q), alphas.at[i].set(a)

        q, alphas = jax.lax.fori_loop(0, M, newest_first, (st["g"], jnp.zeros((M, B), dt)))
        q = (q[0] * st["gamma"][:, None, None], q[1] * st["gamma"][:, None])

        def oldest_first(j, q):
            i = (trip - M + j) % M
            b = st["rho"][i] * _dot((st["Yd"][0][i], st["Yd"][1][i]), q)
            return _axpy(alphas[i] - b, (st["S"][0][i], st["S"][1][i]), q)

        q = jax.lax.fori_loop(0, M, oldest_first, q)
        return -q[0], -q[1]

    def line_search(st, p, gp, active):
        """A step from the unit step with sufficient decrease (c1 = 1e-4) that does
        not overshoot (slope <= 0.9 |initial slope|), by safeguarded cubic
        interpolation; an Armijo point is the fallback. All problems step
        together: one objective and gradient of the batch per trial."""
        def cond(c):
            return jnp.any(~c["ok"]) & (c["i"] < _MAX_LINESEARCH)

        def body(c):
            t = c["t"]
            xn = _axpy(t, p, st["x"])
            vn, gn = value_and_grad(xn)
            dn = _dot(gn, p)
            armijo = ~c["ok"] & jnp.isfinite(vn) & (vn <= st["v"] + 1e-4 * t * gp)
            # curvature small, or still descending (short of the minimum along p)
            take = armijo & ((jnp.abs(dn) <= 0.9 * jnp.abs(gp)) | (dn < 0))
            first = armijo & ~c["fb"]
            d1 = gp + dn - 3.0 * (vn - st["v"]) / t  # the cubic through (0, v, gp), (t, vn, dn)
            d2sq = d1 * d1 - gp * dn
            d2 = jnp.sqrt(jnp.maximum(d2sq, 0.0))
            tc = t - t * (dn + d2 - d1) / (dn - gp + 2.0 * d2)
            tc = jnp.where(jnp.isfinite(tc) & (d2sq >= 0), tc, 0.5 * t)
            ok = c["ok"] | take
            return dict(t=jnp.where(ok, t, jnp.clip(tc, 0.1 * t, 0.9 * t)), ok=ok, i=c["i"] + 1,
                        x=_where(take, xn, c["x"]), v=jnp.where(take, vn, c["v"]),
                        g=_where(take, gn, c["g"]), fb=c["fb"] | first,
                        fx=_where(first, xn, c["fx"]), fv=jnp.where(first, vn, c["fv"]),
                        fg=_where(first, gn, c["fg"]))

        c = jax.lax.while_loop(cond, body, dict(
            t=jnp.ones(B, dt), ok=~active, i=jnp.zeros((), jnp.int32), x=st["x"], v=st["v"],
            g=st["g"], fb=jnp.zeros(B, bool), fx=st["x"], fv=st["v"], fg=st["g"]))
        fall = ~c["ok"] & c["fb"]
        return (_where(fall, c["fx"], c["x"]), jnp.where(fall, c["fv"], c["v"]),
                _where(fall, c["fg"], c["g"]), c["ok"] | c["fb"])

    def cond(st):
        return jnp.any(~st["done"] & (st["k"] < max_iter))

    def body(st):
        active = ~st["done"] & (st["k"] < max_iter)
        g = st["g"]
        p = direction(st)
        gp = _dot(g, p)
        ascent = ~(gp < 0)  # rounding: fall back to steepest descent
        p = _where(ascent, (-g[0], -g[1]), p)
        gp = jnp.where(ascent, -_dot(g, g), gp)
        x_new, v_new, g_new, moved = line_search(st, p, gp, active)
        moved = moved & active
        s = (x_new[0] - st["x"][0], x_new[1] - st["x"][1])
        y = (g_new[0] - g[0], g_new[1] - g[1])
        sy, yy = _dot(s, y), _dot(y, y)
        keep = moved & (sy > jnp.finfo(dt).eps * jnp.sqrt(_dot(s, s) * yy))
        slot = st["trip"] % M
        S = tuple(m.at[slot].set(_where(keep, a, m[slot])) for m, a in zip(st["S"], s))
        Yd = tuple(m.at[slot].set(_where(keep, a, m[slot])) for m, a in zip(st["Yd"], y))
        rho = st["rho"].at[slot].set(
            jnp.where(keep, 1.0 / jnp.where(keep, sy, 1.0), jnp.where(active, 0.0, st["rho"][slot])))
        gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.0), st["gamma"])
        # convergence (module docstring); a stall on a quasi-Newton direction first
        # forgets the memory and tries steepest descent
        fresh = jnp.all(st["rho"] == 0, axis=0)
        small = (st["v"] - v_new) <= ftol * jnp.maximum(jnp.maximum(jnp.abs(st["v"]), jnp.abs(v_new)), 1.0)
        gconv = _max_abs(g_new) <= gtol
        forget = active & small & ~fresh & ~gconv
        rho = jnp.where(forget[None, :], 0.0, rho)
        gamma = jnp.where(forget, 1.0, gamma)
        done_new = gconv | (small & fresh) | ~jnp.isfinite(v_new)
        return dict(x=x_new, v=v_new, g=g_new, S=S, Yd=Yd, rho=rho, gamma=gamma,
                    k=jnp.where(active, st["k"] + 1, st["k"]), done=st["done"] | (active & done_new),
                    trip=st["trip"] + 1)

    st = jax.lax.while_loop(cond, body, state0)
    V, c = st["x"]
    return V * D[:, :, None], c, st["k"], _max_abs(st["g"]), st["v"]


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
