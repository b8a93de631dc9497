"""Functional core of cross-validated multi-target ridge regression.

Algorithm (per target batch; see ``_spectral`` for the decomposition):

1. For each CV fold, once: ``Basis`` of the training design, the evaluation
   matrix ``ev`` centred over the fold's validation rows and, when it has
   more rows than columns, compressed by a QR (``ev_c = Q R``): only the
   ``m = min(n_val, r)`` rows of ``R`` are needed to score, so the cost per
   penalty is ``2 m r`` per target instead of ``2 n_val r``.
2. For each batch of targets and each fold: the targets in spectral
   coordinates ``Z`` once (primal: ``V^T X_train^T Y_train``, where
   ``X_train^T Y_train`` is the batch's ``X^T Y`` minus the validation rows'
   product, so folds share one GEMM; dual: ``U^T Y_train``);
   the covariance of every penalty's prediction with the validation targets
   through one small GEMM, ``cov = d @ (Z * R^T Yq)``; the variance of every
   penalty's centred predictions ``P_a = R diag(d_a) Z``, either from one
   float64 product ``M Z`` by partial fractions (``_fractions``; the plan
   carries ``fr``) or directly, penalty by penalty (``lax.map``), each ``P_a``
   reduced at once; the mean prediction from ``ev_mean``.
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

from jaxalign._precision import jit as _jit
from jaxalign.ridge._scores import center, scores_from_stats
from jaxalign.ridge._fractions import Fractions, variance as _fraction_variance
from jaxalign.ridge._spectral import Basis

__all__ = ["FoldPlan", "fold_plan", "cv_batch", "cv_batch_layers", "ridge_cv_flops"]


class FoldPlan(NamedTuple):
    """Per-fold arrays needed to score a batch of targets (a pytree)."""

    projT: jax.Array | None  # dual / accurate primal: (r, n_train); fast primal: None
    Vt: jax.Array | None  # (r, p) fast primal: Z = Vt (X^T Y); None otherwise
    x_mean: jax.Array  # (p,) training feature mean (zeros without intercept)
    s2: jax.Array  # (r,)
    R: jax.Array  # (m, r)  centred evaluation matrix, QR-compressed if n_val > r
    Rt: jax.Array  # (r, m)  R^T stored contiguous (faster GEMM operand)
    Q: jax.Array | None  # (n_val, m) or None when not compressed
    ev_mean: jax.Array  # (r,)  mean evaluation row
    fr: Fractions | None = None  # partial-fraction sweep (float64), or None: direct
    K: jax.Array | None = None  # (r, p) shared projection (see _spectral.Basis.K), or None
    EoutT: jax.Array | None = None  # (r, n_out)
    mean_proj: jax.Array | None = None  # (r,)
    # Gram path (``_gram``): targets projected from per-block cross-products
    V64: jax.Array | None = None  # (p, r) float64 eigenvectors of the training Gram
    train_mean64: jax.Array | None = None  # (p,) float64 training feature mean
    val_mean64: jax.Array | None = None  # (p,) float64 validation feature mean
    # Stacked sweep (``stack_plan``): every penalty's centred validation predictions straight
    # from the training targets, no spectral coordinates (projT, Rt dropped)
    B: jax.Array | None = None  # (A, m, n_train)  R diag(gain_a d_a) projT
    b_mean: jax.Array | None = None  # (A, n_train)  mean prediction row, gain_a ev_mean diag(d_a) projT


def _fold_plan(basis: Basis) -> FoldPlan:
    ev_c, ev_mean = center(basis.ev)
    n_val, r = ev_c.shape
    if n_val > r:
        Q, R = jnp.linalg.qr(ev_c)
    else:
        Q, R = None, ev_c
    return FoldPlan(basis.projT, basis.coef_mapT, basis.x_mean, basis.s2, R, R.T, Q, ev_mean,
                    None, basis.K, basis.EoutT, basis.mean_proj)


fold_plan = _jit(_fold_plan)
fold_plan_layers = _jit(jax.vmap(_fold_plan))


def _stack_plan(plan: FoldPlan, alphas) -> FoldPlan:
    """The plan with the stacked sweep: ``B[a] = R diag(gain_a d_a) projT`` (A x m x n_train), so
    that a penalty's centred validation predictions are ``B[a] @ Y_train``. Per target that is
    ``2 A m n_train`` flops instead of ``2 n_train r`` (``Z``) + ``2 r m`` + ``2 A m r``: in the
    dual (``r = n_train``) the projection ``Z = U^T Y_train`` is saved, a third of the work when
    the validation block is ~10% of the fold. Forming ``B`` costs ``2 A m r n_train`` once per
    fold, paid back by about ``A m`` targets (``_engine._stack_pays``)."""
    d = _penalty_factors(plan.s2, alphas) * penalty_gain(plan.s2, alphas)[:, None]  # (A, r)
    B = jnp.einsum("mk,ak,kn->amn", plan.R, d, plan.projT)
    b_mean = (plan.ev_mean[None, :] * d) @ plan.projT
    return plan._replace(B=B, b_mean=b_mean, projT=None, Rt=None)


stack_plan = _jit(_stack_plan)
stack_plan_layers = _jit(jax.vmap(_stack_plan, in_axes=(0, None)))


def _penalty_factors(s2, alphas):
    """d[a, k] = 1 / (s2[k] + alpha[a])."""
    return 1.0 / (s2[None, :] + alphas[:, None])


def penalty_gain(s2, alphas):
    """``max(1, alpha / max(s2))`` per penalty: the factor by which the sweep
    scales ``d_a`` (and ``_fractions`` its variance weights, squared)."""
    return jnp.maximum(1.0, alphas / jnp.max(s2).astype(alphas.dtype))


def _spectral_targets(Vt, x_mean, XtY, y_sum, fit_intercept):
    """Primal fast path: Z = V^T X_c^T Y from a precomputed ``XtY = X^T Y``,
    where ``X_c^T Y = X^T Y - x_mean (sum y)^T``."""
    if fit_intercept:
        XtY = XtY - x_mean[:, None] * y_sum[None, :]
    return Vt @ XtY


def _fold_scores(plan: FoldPlan, fold_idx, XT, Y, XtY, y_sum, alphas, scoring, fit_intercept,
                 direct=(), P=None):
    """Scores (n_alphas, n_targets) of one fold for a batch of targets.

    ``fold_idx = (train, val, out)`` where ``out`` is every sample not in the
    training set (validation, gaps, unused), so that training sums are the
    full sums minus the ``out`` rows' when ``out`` is the smaller set.
    """
    train_idx, val_idx, out_idx = fold_idx
    Y_val = jnp.take(Y, val_idx, axis=0)
    n_tr = train_idx.shape[0]
    by_difference = out_idx.shape[0] < n_tr or plan.K is not None
    if by_difference:
        Y_out = jnp.take(Y, out_idx, axis=0)
        y_tr_sum = y_sum - jnp.sum(Y_out, axis=0)
    else:
        Y_tr = jnp.take(Y, train_idx, axis=0)
        y_tr_sum = jnp.sum(Y_tr, axis=0)
    Yc, y_mean = center(Y_val)
    Yq = Yc if plan.Q is None else plan.Q.T @ Yc  # (m, T)
    if plan.B is not None:  # stacked sweep: predictions straight from the training targets
        Y_tr = jnp.take(Y, train_idx, axis=0)

        def stats(B_a):  # one penalty's centred predictions, reduced at once (cache-sized, as below)
            P = B_a @ Y_tr
            return jnp.sum(P * P, axis=0), jnp.sum(P * Yq, axis=0)

        var_pred, cov = jax.lax.map(stats, plan.B)
        pred_mean = plan.b_mean @ Y_tr
        return _finish_scores(cov, var_pred, pred_mean, penalty_gain(plan.s2, alphas), Yc, y_mean,
                              y_tr_sum, n_tr, scoring, fit_intercept)
    if plan.K is not None:  # primal, accurate, from the whole design's projection P
        Z = plan.K @ P - plan.EoutT @ Y_out
        if fit_intercept:  # (the whole design's own mean is ~0: X was centred)
            Z = Z - plan.mean_proj[:, None] * y_tr_sum[None, :]
    elif plan.projT is not None:  # dual, or primal through (X V)^T
        Z = plan.projT @ (Y_tr if not by_difference else jnp.take(Y, train_idx, axis=0))
    else:  # primal, fast: training X^T Y from the shared product
        if by_difference:
            XtY_tr = XtY - jnp.take(XT, out_idx, axis=1) @ Y_out
        else:
            XtY_tr = jnp.take(XT, train_idx, axis=1) @ Y_tr
        Z = _spectral_targets(plan.Vt, plan.x_mean, XtY_tr, y_tr_sum, fit_intercept)
    return score_fold(plan, Z, plan.Rt @ Yq, Yc, y_mean, y_tr_sum, n_tr, alphas, scoring,
                      fit_intercept, direct)


def score_fold(plan: FoldPlan, Z, RtYq, Yc, y_mean, y_tr_sum, n_tr, alphas, scoring,
               fit_intercept, direct=()):
    """Scores (n_alphas, n_targets) of one fold from the targets in spectral
    coordinates ``Z`` (r, T), ``RtYq = ev_c^T Yc`` (r, T; ``ev_c`` the
    evaluation matrix centred over the validation rows), the centred
    validation targets ``Yc`` (n_val, T) and their mean, and the training
    targets' sum (intercept only). ``Z`` may be float64 (the partial-fraction
    sweep then keeps it; the rest runs in float32)."""
    n_val = Yc.shape[0]
    Z64, Z = Z, Z.astype(jnp.float32)
    d = _penalty_factors(plan.s2, alphas)  # (A, r)
    # Penalties above the spectrum shrink every prediction by ~1/alpha: score
    # with d * gain (gain = alpha / max s2 there, 1 below) so that the float32
    # sums of squares cannot underflow; Pearson is unchanged, the other scores
    # divide the gain back out.
    gain = penalty_gain(plan.s2, alphas)  # (A,)
    d = d * gain[:, None]
    var_true = jnp.sum(Yc * Yc, axis=0)  # (T,)

    # cov[a, t] = sum_m P[a, m, t] Yq[m, t] = sum_k d[a, k] Z[k, t] (R^T Yq)[k, t]:
    # one GEMM for all penalties instead of a reduction over every prediction.
    cov = d @ (Z * RtYq)

    # Centred predictions of one penalty, P_a = R diag(d_a) Z (m x T), reduced
    # to their variance at once; one penalty at a time keeps the GEMM output
    # cache-sized (faster on CPU than one stacked GEMM) and memory at m x T.
    def variance(d_a):
        P = (plan.R * d_a[None, :]) @ Z
        return jnp.sum(P * P, axis=0)

    if plan.fr is None:
        var_pred = jax.lax.map(variance, d)  # (A, T)
    else:  # every penalty from one float64 product (see _fractions)
        var_pred = _fraction_variance(plan.fr, Z64)
        if direct:  # penalties too close to a near-tie for partial fractions
            sel = jnp.asarray(direct)
            var_pred = var_pred.at[sel].set(jax.lax.map(variance, d[sel]))
    pred_mean = (plan.ev_mean[None, :] * d) @ Z  # (A, T)
    return _finish_scores(cov, var_pred, pred_mean, gain, Yc, y_mean, y_tr_sum, n_tr, scoring,
                          fit_intercept, var_true)


def _finish_scores(cov, var_pred, pred_mean, gain, Yc, y_mean, y_tr_sum, n_tr, scoring,
                   fit_intercept, var_true=None):
    """Scores (A, T) from the statistics of the penalties' centred predictions, each scaled by
    its penalty's ``gain`` (see :func:`score_fold`)."""
    n_val = Yc.shape[0]
    if var_true is None:
        var_true = jnp.sum(Yc * Yc, axis=0)
    if scoring == "pearson":  # scale-free: the gain cancels
        return scores_from_stats(scoring, cov, var_pred, var_true, None, n_val)
    g = gain[:, None]
    cov, var_pred, pred_mean = cov / g, var_pred / (g * g), pred_mean / g
    if fit_intercept:
        pred_mean = pred_mean + y_tr_sum / n_tr
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


def _cv_batch(plans, full: Basis, XT, idx, Y, alphas, scoring, fit_intercept, direct=None):
    """CV scores, best penalties and refitted coefficients for one batch.

    Parameters
    ----------
    plans : tuple of FoldPlan, one per fold
    full : Basis of the whole design (refit)
    XT : (p, n_samples) float32 transposed design (used by the fast primal
        path; stored transposed so that ``X^T Y`` is a plain GEMM)
    idx : tuple of (train_idx, val_idx, out_idx) int32 arrays, one per fold
        (``out_idx``: the samples outside the training set)
    Y : (n_samples, T) float32
    alphas : (A,) float32

    With ``fit_intercept`` the caller has centred ``X`` over all samples;
    ``Y`` is centred here (over all samples) before any product, so large
    offsets (raw BOLD) cost no float32 precision.

    Returns
    -------
    cv_scores : (A, T) mean over folds (NaN-aware)
    best_idx : (T,) int32, -1 where no score is defined
    coef : (p, T)
    intercept : (T,)
    n_dropped : (T,) int32, folds without a defined score (constant validation
        truth) at the penalty defined on the most folds
    """
    y_offset = None
    if fit_intercept:
        Y, y_offset = center(Y)
    primal = full.projT is None
    XtY = XT @ Y if primal else None  # shared by every fold and the refit
    P = None if primal else full.projT @ Y  # (r, T): the refit's, and the shared folds'
    y_sum = jnp.sum(Y, axis=0)
    direct = direct or ((),) * len(plans)
    fold_scores = jnp.stack(
        [
            _fold_scores(plan, fold_idx, XT, Y, XtY, y_sum, alphas, scoring, fit_intercept, dr, P)
            for plan, fold_idx, dr in zip(plans, idx, direct)
        ]
    )
    if primal:
        Z = _spectral_targets(full.coef_mapT, full.x_mean, XtY, y_sum, fit_intercept)
    else:
        Z = P  # (r, T)
    return finish_batch(fold_scores, alphas, full.s2, full.coef_map, Z, full.x_mean, y_sum,
                        Y.shape[0], y_offset)


def finish_batch(fold_scores, alphas, s2, coef_map, Z, x_mean, y_sum, n, y_offset=None):
    """Mean fold scores, each target's best penalty and the refit on all
    samples (``Z`` the targets in the whole design's spectral coordinates;
    ``y_offset`` the targets' removed mean with an intercept, else None).
    Returns the outputs of :func:`_cv_batch`."""
    fit_intercept = y_offset is not None
    n_defined = jnp.sum(~jnp.isnan(fold_scores), axis=0)
    total = jnp.sum(jnp.where(jnp.isnan(fold_scores), 0.0, fold_scores), axis=0)
    cv_scores = jnp.where(n_defined > 0, total / jnp.maximum(n_defined, 1), jnp.nan)
    best_idx, valid = _best_alpha_index(cv_scores, alphas)
    n_dropped = fold_scores.shape[0] - jnp.max(n_defined, axis=0).astype(jnp.int32)

    d_best = _penalty_factors(s2, alphas)[best_idx].T  # (r, T)
    coef = coef_map @ (d_best * Z)
    coef = jnp.where(valid[None, :], coef, 0.0)
    if fit_intercept:
        intercept = y_offset + y_sum / n - x_mean @ coef
    else:
        intercept = jnp.zeros((Z.shape[1],), Z.dtype)
    best_idx = jnp.where(valid, best_idx, -1).astype(jnp.int32)
    return cv_scores, best_idx, coef, intercept, n_dropped


_STATIC = ("scoring", "fit_intercept", "direct")
cv_batch = _jit(_cv_batch, static_argnames=_STATIC)


def _cv_batch_layers(plans, full, XT, idx, Y, alphas, scoring, fit_intercept, direct=None):
    """:func:`_cv_batch` vmapped over a leading layer axis of plans/full/XT."""
    one = partial(_cv_batch, scoring=scoring, fit_intercept=fit_intercept, direct=direct)
    return jax.vmap(one, in_axes=(0, 0, 0, None, None, None))(plans, full, XT, idx, Y, alphas)


cv_batch_layers = _jit(_cv_batch_layers, static_argnames=_STATIC)


def ridge_cv_flops(n_samples, n_features, n_targets, n_alphas, splits, n_layers=1,
                   precision="fast", penalty_sweep="direct", float64_part=False,
                   shared_folds=0, stacked_folds=0):
    """Floating-point operations of :func:`ridge_cv` (multiply-add = 2).

    Counts the decompositions (Gram matrices, eigendecompositions as
    ``9 r^3``, QR), the per-target GEMMs and the reductions. ``splits`` is a
    list of ``(train_idx, val_idx)`` or of ``(n_train, n_val)`` pairs;
    ``precision`` and ``penalty_sweep`` are the paths the engine took
    (``RidgeCVResult.precision`` / ``.penalty_sweep``; "mixed" is counted as
    partial fractions; ``shared_folds``: how many folds, counted from the
    first, took the shared projection, ``RidgeCVResult.shared_folds``;
    ``stacked_folds``: how many folds, counted from the last, took the
    stacked sweep, ``RidgeCVResult.stacked_folds``).
    With ``float64_part=True`` returns
    ``(total, float64_flops)``: the partial-fraction sweep's ``M Z`` products
    run in float64, at about half the float32 rate on CPUs.
    """
    n, p, T, A = int(n_samples), int(n_features), int(n_targets), int(n_alphas)
    sizes = [tuple(x if isinstance(x, int) else len(x) for x in split) for split in splits]
    primal = p <= min(n_tr for n_tr, _ in sizes)  # as the engine chooses
    fast = primal and precision == "fast"
    fractions = penalty_sweep in ("partial_fractions", "mixed")

    def decomposition(n_fit, n_eval, refit=False):
        r = p if primal else n_fit
        proj = 2 * n_fit * p * r if primal and not fast else 0  # (X V)^T
        if primal:
            return 2 * n_fit * p * p + proj + 9 * r**3 + 2 * n_eval * p * r, r
        if refit:  # coef_map = X^T U
            return 2 * n_fit * n_fit * p + 2 * n_fit * p * r + 9 * r**3, r
        # a CV fold: ev = (E X^T) U, no coef_map
        return 2 * n_fit * n_fit * p + 9 * r**3 + 2 * n_eval * p * n_fit + 2 * n_eval * n_fit * r, r

    total = 2.0 * n * p * T if fast else 0.0  # X^T Y, shared by folds and refit
    f64 = 0.0
    for fold, (n_tr, n_val) in enumerate(sizes):
        shared = fold < shared_folds
        f, r = decomposition(n_tr, n_val)
        m = min(n_val, r)
        qr = 4 * n_val * r * r if n_val > r else 0
        z = 2 * (n - n_tr) * p + 2 * p * r if fast or shared else 2 * n_tr * r
        if shared:  # K and EoutT replace (X V)^T
            f += 2 * p * r * (n - n_tr) + 2 * p * p * r - 2 * n_tr * p * r
        per_target = z + (2 * n_val * m if n_val > r else 0) + 2 * r * m
        if fold >= len(sizes) - stacked_folds:  # B = R diag(d) projT once; P_a = B_a Y_train per target
            f += 2 * A * m * r * n_tr + A * m * r
            per_target = (2 * n_val * m if n_val > r else 0) + 2 * A * m * n_tr + 4 * A * m + 2 * A * n_tr
            per_target += 4 * n_val
            total += f + qr + per_target * T
            continue
        if fractions:  # G = R^T R and M once; M Z, u, and four (A x r) products per target
            f += 2 * m * r * r
            per_target += 2 * r * r + 2 * r + 8 * A * r
            f64 += (2 * m * r * r + (2 * r * r + 2 * r + 8 * A * r) * T) * n_layers
        else:
            per_target += 2 * A * m * r
        per_target += 2 * A * m + 4 * A * r + r + 4 * n_val
        total += f + qr + per_target * T
    f, r = decomposition(n, 0, refit=True)
    total += f + ((2 * p * r) if fast else (2 * n * r)) * T + (2 * p * r + r) * T
    total = float(total) * n_layers
    return (total, float(f64)) if float64_part else total
