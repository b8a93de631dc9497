"""Functional core of cross-validated multi-target ridge regression.

Algorithm (per target batch; see ``_spectral`` for the decomposition):

1. For each CV fold, once: ``Basis`` of the training design, the evaluation
   matrix ``ev`` centred over the fold's validation rows and, when it has
   more rows than columns, compressed by a QR (``ev_c = Q R``): only the
   ``m = min(n_val, r)`` rows of ``R`` are needed to score, so the cost per
   penalty is ``2 m r`` per target instead of ``2 n_val r``.
2. For each batch of targets and each fold: ``Z = proj^T Y_train`` once;
   the covariance of every penalty's prediction with the validation targets
   through one small GEMM, ``cov = d @ (Z * R^T Yq)``; the centred
   predictions ``P_a = R diag(d_a) Z`` of all penalties in one stacked GEMM,
   reduced at once to their variance; the mean prediction from ``ev_mean``.
   Only these sufficient statistics survive the batch: no (penalties x
   samples x all targets) array ever exists.
3. Average the scores over folds, pick each target's best penalty (ties
   within 1e-6 go to the larger penalty), and refit on all samples in spectral space:
   ``W = coef_map (d_best * Z)``, one pass whatever the grid size.

Everything here is a pure function of arrays; the batching over targets,
sharding over devices and input validation live in ``_engine``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxalign.ridge._scores import center, scores_from_stats
from jaxalign.ridge._spectral import Basis

__all__ = ["FoldPlan", "fold_plan", "cv_batch", "cv_batch_layers", "ridge_cv_flops"]


class FoldPlan(NamedTuple):
    """Per-fold arrays needed to score a batch of targets (a pytree)."""

    proj: jax.Array  # (n_train, r)
    s2: jax.Array  # (r,)
    R: jax.Array  # (m, r)  centred evaluation matrix, QR-compressed if n_val > r
    Q: jax.Array | None  # (n_val, m) or None when not compressed
    ev_mean: jax.Array  # (r,)  mean evaluation row


def _fold_plan(basis: Basis) -> FoldPlan:
    ev_c, ev_mean = center(basis.ev)
    n_val, r = ev_c.shape
    if n_val > r:
        Q, R = jnp.linalg.qr(ev_c)
    else:
        Q, R = None, ev_c
    return FoldPlan(basis.proj, basis.s2, R, Q, ev_mean)


fold_plan = jax.jit(_fold_plan)
fold_plan_layers = jax.jit(jax.vmap(_fold_plan))


def _penalty_factors(s2, alphas):
    """d[a, k] = 1 / (s2[k] + alpha[a])."""
    return 1.0 / (s2[None, :] + alphas[:, None])


def _fold_scores(plan: FoldPlan, train_idx, val_idx, Y, alphas, scoring, fit_intercept):
    """Scores (n_alphas, n_targets) of one fold for a batch of targets."""
    Y_tr = jnp.take(Y, train_idx, axis=0)
    Y_val = jnp.take(Y, val_idx, axis=0)
    n_val = Y_val.shape[0]
    Z = plan.proj.T @ Y_tr  # (r, T)
    d = _penalty_factors(plan.s2, alphas)  # (A, r)

    Yc, y_mean = center(Y_val)
    var_true = jnp.sum(Yc * Yc, axis=0)  # (T,)
    Yq = Yc if plan.Q is None else plan.Q.T @ Yc  # (m, T)

    # cov[a, t] = sum_m P[a, m, t] Yq[m, t] = sum_k d[a, k] Z[k, t] (R^T Yq)[k, t]:
    # one GEMM for all penalties instead of a reduction over every prediction.
    cov = d @ (Z * (plan.R.T @ Yq))
    n_alphas = alphas.shape[0]
    m, r = plan.R.shape
    RD = (plan.R[None, :, :] * d[:, None, :]).reshape(n_alphas * m, r)
    P = (RD @ Z).reshape(n_alphas, m, -1)  # centred predictions, compressed rows
    var_pred = jnp.sum(P * P, axis=1)
    pred_mean = (plan.ev_mean[None, :] * d) @ Z  # (A, T)
    if fit_intercept:
        pred_mean = pred_mean + jnp.mean(Y_tr, axis=0)
    sse = var_true - 2.0 * cov + var_pred + n_val * (y_mean - pred_mean) ** 2
    return scores_from_stats(scoring, cov, var_pred, var_true, sse, n_val)


# Scores closer than this (relative to max(|best|, 1)) are ties: float32
# rounding of the fused statistics is ~1e-7, and a choice decided by rounding
# would change with the batch size or the number of devices.
TIE_TOLERANCE = 1e-6


def _best_alpha_index(mean_scores, alphas):
    """Per-target argmax over penalties; ties (within ``TIE_TOLERANCE``) go to
    the larger penalty, the more regularised model.

    Returns (index, valid); ``valid`` is False where every score is NaN.
    """
    best = jnp.nanmax(mean_scores, axis=0)
    tol = TIE_TOLERANCE * jnp.maximum(jnp.abs(best), 1.0)
    is_best = mean_scores >= (best - tol)[None, :]
    key = jnp.where(is_best, alphas[:, None], -jnp.inf)
    return jnp.argmax(key, axis=0), jnp.any(is_best, axis=0)


def _cv_batch(plans, full: Basis, idx, Y, alphas, scoring, fit_intercept):
    """CV scores, best penalties and refitted coefficients for one batch.

    Parameters
    ----------
    plans : tuple of FoldPlan, one per fold
    full : Basis of the whole design (refit)
    idx : tuple of (train_idx, val_idx) int32 arrays, one per fold
    Y : (n_samples, T) float32
    alphas : (A,) float32

    Returns
    -------
    cv_scores : (A, T) mean over folds (NaN-aware)
    best_idx : (T,) int32, -1 where no score is defined
    coef : (p, T)
    intercept : (T,)
    """
    fold_scores = jnp.stack(
        [
            _fold_scores(plan, tr, va, Y, alphas, scoring, fit_intercept)
            for plan, (tr, va) in zip(plans, idx)
        ]
    )
    n_defined = jnp.sum(~jnp.isnan(fold_scores), axis=0)
    total = jnp.sum(jnp.where(jnp.isnan(fold_scores), 0.0, fold_scores), axis=0)
    cv_scores = jnp.where(n_defined > 0, total / jnp.maximum(n_defined, 1), jnp.nan)
    best_idx, valid = _best_alpha_index(cv_scores, alphas)

    Z = full.proj.T @ Y  # (r, T)
    d_best = _penalty_factors(full.s2, alphas)[best_idx].T  # (r, T)
    coef = full.coef_map @ (d_best * Z)
    coef = jnp.where(valid[None, :], coef, 0.0)
    if fit_intercept:
        intercept = jnp.mean(Y, axis=0) - full.x_mean @ coef
    else:
        intercept = jnp.zeros((Y.shape[1],), Y.dtype)
    best_idx = jnp.where(valid, best_idx, -1).astype(jnp.int32)
    return cv_scores, best_idx, coef, intercept


cv_batch = jax.jit(_cv_batch, static_argnames=("scoring", "fit_intercept"))
def _cv_batch_layers(plans, full, idx, Y, alphas, scoring, fit_intercept):
    """:func:`_cv_batch` vmapped over a leading layer axis of plans/full."""
    one = partial(_cv_batch, scoring=scoring, fit_intercept=fit_intercept)
    return jax.vmap(one, in_axes=(0, 0, None, None, None))(plans, full, idx, Y, alphas)


cv_batch_layers = jax.jit(_cv_batch_layers, static_argnames=("scoring", "fit_intercept"))


def ridge_cv_flops(n_samples, n_features, n_targets, n_alphas, splits, n_layers=1):
    """Floating-point operations of :func:`ridge_cv` (multiply-add = 2).

    Counts the decompositions (Gram matrices, eigendecompositions as
    ``9 r^3``, QR), the per-target GEMMs and the reductions. ``splits`` is a
    list of ``(train_idx, val_idx)`` or of ``(n_train, n_val)`` pairs.
    """
    n, p, T, A = int(n_samples), int(n_features), int(n_targets), int(n_alphas)

    def sizes(split):
        tr, va = split
        return (tr if isinstance(tr, int) else len(tr), va if isinstance(va, int) else len(va))

    def decomposition(n_fit, n_eval):
        r = min(n_fit, p)
        if p <= n_fit:
            f = 2 * n_fit * p * p + 9 * r**3 + 2 * n_fit * p * r + 2 * n_eval * p * r
        else:
            f = 2 * n_fit * n_fit * p + 9 * r**3 + 2 * n_fit * p * r + 2 * n_eval * p * r
        return f, r

    total = 0.0
    for split in splits:
        n_tr, n_val = sizes(split)
        f, r = decomposition(n_tr, n_val)
        m = min(n_val, r)
        qr = 4 * n_val * r * r if n_val > r else 0
        per_target = 2 * n_tr * r + (2 * n_val * m if n_val > r else 0) + 2 * A * m * r
        per_target += 4 * A * m + 2 * A * r + 4 * n_val
        total += f + qr + per_target * T
    f, r = decomposition(n, 0)
    total += f + (2 * n * r + 2 * p * r + r) * T
    return float(total) * n_layers
