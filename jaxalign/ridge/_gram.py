"""The many-samples path of the ridge engine: every fold from sums over blocks
of samples, so the work that grows with n is done once, not once per fold.

Partition the samples into blocks that no fold splits (k contiguous folds:
the k validation blocks; gaps, groups and unused samples add a few) and form,
once, in float64

    G_b = X_b^T X_b   (p x p),    s_b = X_b^T 1   (p,)       design, once
    C_b = X_b^T Y_b   (p x T),    y_b = Y_b^T 1   (T,)       per target batch

A fold's training and validation sums are sums of blocks (or, when fewer
samples are left out than kept, the total minus the left-out blocks'), and
everything the spectral CV of ``_solve`` needs follows from them, with no
further pass over the samples (``m_tr``, ``m_va`` the training and validation
feature means; ``m_tr = 0`` without an intercept):

    G_tr - n_tr m_tr m_tr^T = V diag(s2) V^T            eigh, float64
    Z = V^T (C_tr - m_tr y_tr^T)                        training targets, spectral
    W = V^T (C_va - m_va y_va^T) = ev_c^T Y_va,c
    H = V^T (G_va - n_va m_va m_va^T) V = ev_c^T ev_c

with ``ev_c = (X_va - m_va) V`` the centred evaluation matrix of ``_solve``.
The penalty sweep uses ``ev_c`` only through ``ev_c^T Y`` (``W``, the
covariance of every penalty's prediction with the truth) and ``ev_c^T ev_c``
(the prediction variances), so its ``R`` (r x r) is any factor with
``R^T R = H``: its Cholesky factor, or where ``H`` is only semi-definite
(fewer validation rows than features, collinear features) and Cholesky
fails, ``diag(sqrt(lam)) Q^T`` from ``H = Q diag(lam) Q^T``. The refit decomposes
``sum_b G_b`` and projects ``sum_b C_b``. The same sums over
samples are what a run whose samples are split over devices or hosts would
add up (psum); the delayed designs of ``jaxalign.timing.lagged_gram`` give
them for MEG without materialising the delays.

Cost (k folds, n samples, p features). The row-wise path (``_spectral``)
decomposes each fold's ``n_tr x p`` block: a float64 Gram and projection
``(X_tr V)`` (``4 n_tr p^2``), a float32 QR of the ``n_va x p`` validation
block (``4 n_va p^2``), and per target a projection of the training rows
(``2 n_tr p``): ~``4 k n p^2`` and ``2 (k - 1) n p`` per target in all.
Here: ``2 n p^2`` once and ``O(k p^3)`` for the eigendecompositions; per
target ``2 n p`` (float64) + ``O(k p^2)``. At n = 27,500, p = 400, 5 folds
the design's share drops from ~110 to ~9 GFLOP.

Precision. Products of float32 numbers are exact in float64, so ``G_b`` and
``C_b`` carry float64 rounding only; the eigendecomposition is that of a
float64 Gram, as on the accurate row-wise path (singular values resolved to
~1e-8 of the largest: the Gram squares the condition number, float64 has
the room). ``Z``'s error is ~``eps64 s_max |y|`` per component, below the
accurate path's ``eps32 s_j |y|`` while ``s_max / s_j < ~1e8``; a total minus
the left-out blocks (taken only when ``n_out < n_tr``) loses at most
``eps64 |G_total| <~ 2 eps64 |G_tr|`` to cancellation. ``Z``, ``W`` and ``R``
are rounded to float32 for the sweep, each entry to its own relative
precision, and the partial-fraction sweep takes ``Z`` in float64. Float64
GEMMs over the samples make this a CPU path (``folds_from="auto"``); GPUs
(float64 at 1/2 to 1/64 of float32) and TPUs (none) keep the row-wise path.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._precision import jit as _jit
from jaxalign.ridge._scores import center
from jaxalign.ridge._solve import FoldPlan, finish_batch, score_fold

__all__ = ["BlockLayout", "FoldBlocks", "GramFull", "sample_blocks", "gram_decompose",
           "cv_batch_gram", "cv_batch_gram_layers", "MAX_BLOCKS_PER_FOLD"]

# A layout with more blocks than this per fold (random splits such as
# ShuffleSplit: up to 3^k signatures) keeps the row-wise path.
MAX_BLOCKS_PER_FOLD = 4


class FoldBlocks(NamedTuple):
    """Which blocks make up one fold (static, hashable)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    out: tuple[int, ...]  # every block not in training (validation, gaps, unused)
    n_train: int
    n_val: int
    by_difference: bool  # training sums as the total minus the ``out`` blocks'


class BlockLayout(NamedTuple):
    """Blocks of the reordered samples (static, hashable): block ``b`` is
    rows ``bounds[b][0]:bounds[b][1]`` of ``X[order]``."""

    bounds: tuple[tuple[int, int], ...]
    folds: tuple[FoldBlocks, ...]


class GramFull(NamedTuple):
    """The whole design's decomposition, for the refit (a pytree)."""

    V64: jax.Array  # (p, p) float64
    s2: jax.Array  # (p,) float32
    coef_map: jax.Array  # (p, p) float32, V
    x_mean: jax.Array  # (p,) float32 (zeros without intercept)
    x_mean64: jax.Array  # (p,) float64


def sample_blocks(splits, n: int, max_blocks_per_fold: int = MAX_BLOCKS_PER_FOLD):
    """The coarsest partition of the samples that every fold's training and
    validation sets are unions of.

    Returns ``(layout, order, val_idx)``: the :class:`BlockLayout`, the sample
    order that makes each block contiguous (``None`` when it is the identity,
    as for contiguous folds) and, per fold, the validation rows' positions in
    that order. Returns ``None`` when a fold repeats a sample or the layout
    needs more than ``max_blocks_per_fold * k + 2`` blocks.
    """
    k = len(splits)
    code = np.zeros((n, k), np.int8)  # 0 unused, 1 train, 2 validation
    for f, (tr, va) in enumerate(splits):
        if np.unique(tr).size != len(tr) or np.unique(va).size != len(va):
            return None
        code[tr, f] = 1
        code[va, f] = 2
    if k <= 39:  # one base-3 integer per sample: a 1-D unique (fast)
        key = code.astype(np.int64) @ (3 ** np.arange(k, dtype=np.int64))
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        keys = code[first]
    else:
        keys, first, inv = np.unique(code, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if len(keys) > max_blocks_per_fold * k + 2:
        return None
    rank = np.empty(len(keys), np.int64)  # blocks in order of first appearance
    rank[np.argsort(first, kind="stable")] = np.arange(len(keys))
    keys = keys[np.argsort(first, kind="stable")]
    block = rank[inv]
    order = np.argsort(block, kind="stable")
    counts = np.bincount(block, minlength=len(keys))
    stops = np.cumsum(counts)
    bounds = tuple((int(a), int(b)) for a, b in zip(stops - counts, stops))
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    folds, val_idx = [], []
    for f, (tr, va) in enumerate(splits):
        col = keys[:, f]
        train = tuple(int(b) for b in np.flatnonzero(col == 1))
        val = tuple(int(b) for b in np.flatnonzero(col == 2))
        out = tuple(int(b) for b in np.flatnonzero(col != 1))
        n_tr, n_va = len(tr), len(va)
        folds.append(FoldBlocks(train, val, out, n_tr, n_va, n - n_tr < n_tr))
        val_idx.append(np.sort(pos[va]))
    identity = bool(np.all(order == np.arange(n)))
    return BlockLayout(bounds, tuple(folds)), (None if identity else order), val_idx


def _sum(parts, blocks):
    out = parts[blocks[0]]
    for b in blocks[1:]:
        out = out + parts[b]
    return out


def _fold_sums(parts, total, fb: FoldBlocks):
    """Training and validation sums of one fold from the per-block ones."""
    if fb.by_difference:
        tr = total - _sum(parts, fb.out) if fb.out else total
    else:
        tr = _sum(parts, fb.train)
    return tr, _sum(parts, fb.val)


def _eigh(G):
    s2, V = jnp.linalg.eigh((G + G.T) / 2)
    return jnp.clip(s2, 0.0, None), V


def _factor(H):
    """Upper-triangular ``R`` with ``R^T R = H``: the Cholesky factor (~p^3/3
    flops, a fraction of an eigendecomposition's). Where ``H`` is only
    semi-definite (fewer validation rows than features, collinear features)
    Cholesky fails, and ``R = diag(sqrt(lam)) Q^T`` from its eigh is taken
    instead (a ``cond``: only then is the eigh computed)."""
    H = (H + H.T) / 2
    L = jax.lax.linalg.cholesky(H, symmetrize_input=False)

    def from_eigh(_):
        lam, Q = jnp.linalg.eigh(H)
        return jnp.sqrt(jnp.clip(lam, 0.0, None))[:, None] * Q.T

    return jax.lax.cond(jnp.all(jnp.isfinite(L)), lambda _: L.T, from_eigh, None)


def _gram(X):
    """``X^T X`` from its upper block triangle (3/4 of the flops of one GEMM)."""
    h = X.shape[1] // 2
    if h < 32:  # small: one GEMM
        return X.T @ X
    A, B = X[:, :h], X[:, h:]
    AB = A.T @ B
    return jnp.block([[A.T @ A, AB], [AB.T, B.T @ B]])


def _xty(Xb, Yb):
    """``Xb^T Yb`` without a transposed copy of ``Xb``."""
    return jax.lax.dot_general(Xb, Yb, (((0,), (0,)), ((), ())))


def _decompose(X, layout: BlockLayout, fit_intercept: bool):
    """Traced under x64: X (n, p) float32 in block order. Returns the fold
    plans and the whole design's ``GramFull``."""
    f32, f64 = jnp.float32, jnp.float64
    G, S = [], []
    for a, b in layout.bounds:
        Xb = X[a:b].astype(f64)
        G.append(_gram(Xb))
        S.append(jnp.sum(Xb, axis=0))
    G_all, S_all = sum(G[1:], G[0]), sum(S[1:], S[0])
    n, p = X.shape
    zeros = jnp.zeros((p,), f64)
    plans = []
    for fb in layout.folds:
        (G_tr, G_va), (s_tr, s_va) = _fold_sums(G, G_all, fb), _fold_sums(S, S_all, fb)
        xm = s_tr / fb.n_train if fit_intercept else zeros
        s2, V = _eigh(G_tr - fb.n_train * jnp.outer(xm, xm) if fit_intercept else G_tr)
        vm = s_va / fb.n_val
        H = V.T @ (G_va - fb.n_val * jnp.outer(vm, vm)) @ V
        R = _factor(H).astype(f32)  # (r, r)
        plans.append(FoldPlan(
            projT=None, Vt=None, x_mean=xm.astype(f32), s2=s2.astype(f32), R=R, Rt=R.T,
            Q=None, ev_mean=((vm - xm) @ V).astype(f32), V64=V, train_mean64=xm,
            val_mean64=vm))
    xm = S_all / n if fit_intercept else zeros
    s2, V = _eigh(G_all - n * jnp.outer(xm, xm) if fit_intercept else G_all)
    full = GramFull(V, s2.astype(f32), V.astype(f32), xm.astype(f32), xm)
    return tuple(plans), full


_decompose_jit = _jit(_decompose, static_argnames=("layout", "fit_intercept"))


def _decompose_layers(X, layout, fit_intercept):
    # one layer at a time: a float64 block of one layer lives at once
    return jax.lax.map(lambda x: _decompose(x, layout, fit_intercept), X)


_decompose_layers_jit = _jit(_decompose_layers, static_argnames=("layout", "fit_intercept"))


def gram_decompose(Xj, layout: BlockLayout, fit_intercept: bool):
    """Fold plans and refit basis of a float32 design in block order,
    ``(n, p)`` or ``(L, n, p)`` (leading layer axis on every output)."""
    fn = _decompose_layers_jit if Xj.ndim == 3 else _decompose_jit
    with jax.enable_x64(True):
        return fn(Xj, layout, fit_intercept)


def _cv_batch_gram(plans, full: GramFull, X, order, val_idx, Y, alphas, scoring,
                   fit_intercept, direct, layout: BlockLayout):
    """Like ``_solve._cv_batch``, every fold from per-block cross-products.

    ``X`` (n, p) float32 in block order; ``order`` the permutation into
    block order (None: identity); ``val_idx`` per fold the validation rows
    in block order. Traced under x64.
    """
    f32, f64 = jnp.float32, jnp.float64
    y_offset = None
    if fit_intercept:
        Y, y_offset = center(Y)
    if order is not None:
        Y = jnp.take(Y, order, axis=0)
    C, ys = [], []
    for a, b in layout.bounds:
        Yb = Y[a:b].astype(f64)
        C.append(_xty(X[a:b].astype(f64), Yb))
        ys.append(jnp.sum(Yb, axis=0))
    C_all, y_all = sum(C[1:], C[0]), sum(ys[1:], ys[0])
    direct = direct or ((),) * len(plans)
    scores = []
    for plan, fb, vi, dr in zip(plans, layout.folds, val_idx, direct):
        (C_tr, C_va), (y_tr, y_va) = _fold_sums(C, C_all, fb), _fold_sums(ys, y_all, fb)
        if fit_intercept:
            C_tr = C_tr - plan.train_mean64[:, None] * y_tr[None, :]
        Z = plan.V64.T @ C_tr
        W = plan.V64.T @ (C_va - plan.val_mean64[:, None] * y_va[None, :])
        if len(fb.val) == 1:  # one block: a slice, no gather
            a, b = layout.bounds[fb.val[0]]
            Y_val = Y[a:b]
        else:
            Y_val = jnp.take(Y, vi, axis=0)
        Yc, y_mean = center(Y_val)
        scores.append(score_fold(plan, Z, W.astype(f32), Yc, y_mean, y_tr.astype(f32),
                                 fb.n_train, alphas, scoring, fit_intercept, dr))
    if fit_intercept:
        C_all = C_all - full.x_mean64[:, None] * y_all[None, :]
    Z = (full.V64.T @ C_all).astype(f32)
    return finish_batch(jnp.stack(scores), alphas, full.s2, full.coef_map, Z, full.x_mean,
                        y_all.astype(f32), Y.shape[0], y_offset)


_STATIC = ("scoring", "fit_intercept", "direct", "layout")
cv_batch_gram = _jit(_cv_batch_gram, static_argnames=_STATIC)


def _cv_batch_gram_layers(plans, full, X, order, val_idx, Y, alphas, scoring, fit_intercept,
                          direct, layout):
    """:func:`_cv_batch_gram` over a leading layer axis of plans/full/X, one
    layer at a time (its float64 cross-products live one layer at once)."""
    one = partial(_cv_batch_gram, order=order, val_idx=val_idx, Y=Y, alphas=alphas,
                  scoring=scoring, fit_intercept=fit_intercept, direct=direct, layout=layout)
    return jax.lax.map(lambda xs: one(*xs), (plans, full, X))


cv_batch_gram_layers = _jit(_cv_batch_gram_layers, static_argnames=_STATIC)
