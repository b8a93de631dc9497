"""The stateful-free driver of the ridge engine: validation, target batching
sized from a memory budget, sharding over devices, progress.

``ridge_cv`` is what :class:`~jaxalign.ridge.RidgeCV` calls; use it directly
for the functional interface (several feature sets sharing targets, custom
splits, a memory cap).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxalign._core.memory import default_memory_budget, parse_bytes, target_batch_size
from jaxalign.ridge._cv import check_cv
from jaxalign.ridge._gram import cv_batch_gram, cv_batch_gram_layers, gram_decompose, sample_blocks
from jaxalign.ridge._fractions import MAX_AMPLIFICATION, amplification, fractions, has_ties
from jaxalign.ridge._scores import check_scoring
from jaxalign.ridge._solve import (
    cv_batch,
    cv_batch_layers,
    fold_plan,
    fold_plan_layers,
    stack_plan,
    stack_plan_layers,
)
from jaxalign.ridge._spectral import choose_method, fast_path_ok, spectral_basis
from jaxalign.ridge._validation import (
    check_alphas,
    check_design,
    check_targets,
    constant_targets,
)

__all__ = ["RidgeCVResult", "ridge_cv", "parse_bytes", "default_memory_budget", "target_batch_size"]

def _bytes_per_target(n, p, n_alphas, splits, n_layers, method, float64_sweep=False):
    """Upper estimate of device bytes per target in one batch (float32)."""
    floats_layer = 0
    floats_shared = n  # the batch of Y
    for tr, va in splits:
        n_tr, n_val = len(tr), len(va)
        r = min(n_tr, p) if method == "primal" else n_tr
        m = min(n_val, r)
        floats_layer += 2 * r + 3 * m + 2 * p + 8 * n_alphas
        if float64_sweep:  # partial fractions: float64 Z, M Z, u, and the tie product
            floats_layer += 8 * r + 4 * n_alphas
        floats_shared += n + n_val  # gathered training or out-of-training rows, validation rows
    r_full = min(n, p) if method == "primal" else n
    floats_layer += 2 * r_full + 2 * p + 2
    return int(4 * 1.5 * (floats_shared + n_layers * floats_layer))


def _bytes_per_target_grams(n, p, n_alphas, layout, n_layers):
    """Upper estimate of device bytes per target in one batch of the Gram
    path (float32 units; float64 counts twice). Layers run one at a time."""
    n_blocks = len(layout.bounds)
    max_val = max(fb.n_val for fb in layout.folds)
    shared = 4 * n + 2 * max_val  # Y, its float64 copy and block order, validation rows
    per_layer = 2 * (n_blocks + 2) * p + 8 * p  # block cross-products, sums, refit
    per_layer += len(layout.folds) * (2 * 4 * p + 8 * n_alphas)  # Z, W (float64), scores
    outputs = n_layers * (p + 2 * n_alphas + 4)
    return int(4 * 1.5 * (shared + per_layer + outputs))


FOLDS_FROM = ("auto", "grams", "rows")


def _grams_pay(n, p, splits, n_targets, platform) -> bool:
    """Whether ``folds_from="auto"`` takes the Gram path (``_gram``): on CPUs
    (float64 GEMMs over the samples), when its flop count (float64 counted
    twice) is below the row-wise accurate path's by ``_MIN_SAVED_FLOPS``."""
    if platform != "cpu":
        return False
    k = len(splits)
    eigh = 9 * p**3
    grams = 2 * (2 * n * p * p) + k * 2 * (2 * eigh + 4 * p**3) + 2 * (eigh)
    grams += n_targets * (2 * (2 * n * p) + k * 2 * (4 * p * p))
    rows = 2 * (4 * n * p * p) + 2 * eigh
    for tr, va in splits:
        n_tr, n_va = len(tr), len(va)
        m = min(n_va, p)
        rows += 2 * (4 * n_tr * p * p + eigh) + 2 * n_va * p * p
        rows += 4 * n_va * p * p if n_va > p else 0
        rows += n_targets * (2 * n_tr * p + (2 * n_va * m if n_va > p else 0) + 2 * p * m)
    rows += n_targets * 2 * n * p
    return rows - grams >= _MIN_SAVED_FLOPS


@dataclass
class RidgeCVResult:
    """Outputs of :func:`ridge_cv` (numpy arrays, optional leading layer axis).

    Attributes
    ----------
    best_alphas : ([L,] T) chosen penalty per target (NaN for undefined targets)
    best_alpha_index : ([L,] T) its index in ``alphas`` (-1 if undefined)
    cv_scores : ([L,] A, T) score of every penalty, averaged over folds
        (float64 for "neg_mse", which is in the targets' units squared)
    coef : ([L,] p, T) coefficients refitted on all samples with each
        target's own penalty (float32; float64 when the ratio of the targets'
        units to the features' would leave float32's range)
    intercept : ([L,] T) float64 (a small signal on a large offset survives);
        zeros unless ``fit_intercept``
    alphas, splits, scoring, method, precision, batch_size, constant : the
        settings used
    shared_folds : number of folds whose training targets came from the whole
        design's projection (accurate primal path; see ``_use_shared``)
    folds_from : "grams" (every fold from per-block Gram matrices and
        cross-products, ``_gram``) or "rows" (each fold's decomposition from
        its rows)
    penalty_sweep : how the penalty grid was scored: "partial_fractions"
        (every fold, every penalty), "direct", or "mixed" (some folds or
        penalties direct; see :func:`ridge_cv`)
    stacked_folds : number of folds whose direct sweep was stacked: every
        penalty's validation predictions straight from the training targets
        (``_solve.stack_plan``; chosen where it saves flops, e.g. the dual
        method with many targets)
    """

    best_alphas: np.ndarray
    best_alpha_index: np.ndarray
    cv_scores: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    alphas: np.ndarray
    splits: list = field(repr=False)
    scoring: str = "pearson"
    method: str = "primal"
    precision: str = "accurate"
    batch_size: int = 0
    constant: np.ndarray | None = field(default=None, repr=False)
    penalty_sweep: str = "direct"
    shared_folds: int = 0
    folds_from: str = "rows"
    stacked_folds: int = 0


PENALTY_SWEEPS = ("auto", "partial_fractions", "direct")
# Float64 matrices of the partial-fraction sweep kept on the device, all folds.
_FRACTIONS_MAX_BYTES = 1 << 30


# "auto" takes a cheaper path only when it saves at least this many flops in
# all (~10 ms of a 2-core CPU): below that the extra set-up and host
# round-trips cost more than they save (tiny problems, a few ROIs).
_MIN_SAVED_FLOPS = 1e9


def _plan_sweeps(plans, alphas, penalty_sweep, platform, n_targets=None):
    """Give each fold's plan a partial-fraction sweep where it is cheaper and
    accurate (see ``_fractions``).

    Returns ``(plans, direct, kind)``: ``direct`` holds per fold the penalty
    indices still swept directly (their partial-fraction amplification
    exceeds ``MAX_AMPLIFICATION``); ``kind`` is "partial_fractions", "direct"
    or "mixed". With ``n_targets``, "auto" also asks that the sweep saves at
    least ``_MIN_SAVED_FLOPS`` over all targets.
    """
    n_folds = len(plans)
    # TPUs have no float64. On GPUs "auto" keeps the direct sweep: float64
    # runs at 1/2 (H100) to 1/64 (consumer cards) of the float32 rate there
    # and the partial-fraction sweep has not been measured on one yet.
    if penalty_sweep == "direct" or platform == "tpu" or (
            penalty_sweep == "auto" and platform != "cpu"):
        return plans, ((),) * n_folds, "direct"
    A = len(alphas)
    total = 0
    out, direct, used = [], [], []

    def worth_it(cost, n_direct, m, r, n_layers):
        # cost: flops per target; float64 products counted twice (half rate on CPU)
        direct_cost = 2 * A * m * r
        ok = cost < 0.8 * direct_cost and n_direct < A
        if n_targets is not None:
            ok &= (direct_cost - cost) * n_targets * n_layers >= _MIN_SAVED_FLOPS
        return ok

    for plan in plans:
        m, r = plan.R.shape[-2:]
        n_layers = plan.R.shape[0] if plan.R.ndim == 3 else 1
        forced = penalty_sweep == "partial_fractions"
        base = 2 * (2 * r * r) + 8 * A * r  # no ties, no penalty swept directly
        use, bad = False, ()
        if forced or worth_it(base, 0, m, r, n_layers):  # else skip the spectrum checks
            amp = amplification(plan.s2, alphas)
            bad = tuple(int(i) for i in np.flatnonzero(~(amp <= MAX_AMPLIFICATION)))
            ties = has_ties(plan.s2)
            cost = base + 2 * (2 * r * r) * ties + 2 * len(bad) * m * r
            nbytes = 8 * r * r * (2 if ties else 1) * n_layers
            use = (forced or worth_it(cost, len(bad), m, r, n_layers)) and (
                total + nbytes <= _FRACTIONS_MAX_BYTES)
        if use:
            plan = plan._replace(fr=fractions(plan.R, plan.s2, alphas, ties))
            total += nbytes
        out.append(plan)
        direct.append(bad if use else ())
        used.append((len(bad) == 0) if use else None)
    if all(u is True for u in used):
        kind = "partial_fractions"
    elif all(u is None for u in used):
        kind = "direct"
    else:
        kind = "mixed"
    return tuple(out), tuple(direct), kind


# Stacked sweep matrices (A x m x n_train float32 per fold and layer) kept on the device, all folds.
_STACK_MAX_BYTES = 1 << 30


def _stack_pays(A, m, r, n_train, n_targets, n_layers=1) -> bool:
    """Whether the stacked sweep (``_solve.stack_plan``) saves at least ``_MIN_SAVED_FLOPS`` on a
    fold: per target ``2 A m n_train`` flops instead of ``2 (n_train r + r m + A m r)``, for
    ``2 A m r n_train`` once."""
    per_target = 2 * (n_train * r + r * m + A * m * r - A * m * n_train)
    return per_target > 0 and (per_target * n_targets - 2 * A * m * r * n_train) * n_layers >= _MIN_SAVED_FLOPS


def _plan_stacks(plans, alphas_j, n_targets, max_bytes=_STACK_MAX_BYTES):
    """Stack the direct sweep of each fold where it pays (see :func:`_stack_pays`) and its matrices
    fit in ``max_bytes`` (all folds): folds projected through ``projT`` (dual, primal accurate)
    whose every penalty is swept directly, taken from the last fold (``ridge_cv_flops`` counts
    them so). Returns ``(plans, count, bytes)``."""
    A = int(alphas_j.shape[0])
    out, total, count = [], 0, 0
    for plan in reversed(plans):
        ok = plan.fr is None and plan.projT is not None and plan.K is None
        if ok:
            m, r = plan.R.shape[-2:]
            n_train = plan.projT.shape[-1]
            n_layers = plan.R.shape[0] if plan.R.ndim == 3 else 1
            nbytes = 4 * A * (m + 1) * n_train * n_layers
            ok = _stack_pays(A, m, r, n_train, n_targets, n_layers) and total + nbytes <= max_bytes
        if ok:
            plan = (stack_plan_layers if plan.R.ndim == 3 else stack_plan)(plan, alphas_j)
            total += nbytes
            count += 1
        out.append(plan)
    return tuple(reversed(out)), count, total


def _resolve_devices(devices):
    if devices is None:
        return jax.devices()
    if isinstance(devices, int):
        devs = jax.devices()
        if devices < 1 or devices > len(devs):
            raise ValueError(f"devices={devices} but {len(devs)} available")
        return devs[:devices]
    return list(devices)


def _multiprocess(devs) -> bool:
    """Whether ``devs`` span several processes (``jax.distributed``)."""
    return len({d.process_index for d in devs}) > 1


def _agree_across_processes(batch_size: int, decisions) -> int:
    """The batch size every process can hold (the smallest), after checking
    that every process took the same host-side decisions (precision, sweep,
    shared projections): one SPMD program must run everywhere.
    """
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(repr(decisions).encode()).digest()[:8]
    mine = np.concatenate([[batch_size], np.frombuffer(digest, np.uint8)]).astype(np.int64)
    every = np.asarray(multihost_utils.process_allgather(mine.astype(np.int32)))
    if not (every[:, 1:] == every[0, 1:]).all():
        raise RuntimeError(
            "ridge_cv: the processes of this jax.distributed run decided differently how to fit "
            "(precision, penalty sweep or shared projections, which depend on the design's "
            "eigenvalues): pass the same X, Y, alphas and cv in every process, on the same kind "
            "of hardware, or fix precision= and penalty_sweep= explicitly")
    return int(every[:, 0].min())


def _decompose(X, x_offset, splits, alphas, method, fit_intercept, precision, n_targets=None,
               x_scale=1.0):
    """Spectral plans of every fold and of the whole design (for the refit).

    With an intercept, X is first centred over all samples (exactly, in
    float64): the solution is unchanged and float32 products keep their
    precision. Returns ``(plans, full, XT, idx, precision)`` where ``XT`` is
    the transposed design for the fast primal path (else None) and ``idx``
    holds ``(train, val, out-of-train)`` indices per fold. ``X`` is divided
    by ``x_scale`` (``alphas`` must already be in those units).
    """
    n, p = X.shape[-2:]
    Xc = X - x_offset[..., None, :] if x_offset is not None else X
    # scaled on the host in X's own dtype (float64 designs before float32 sees
    # them; a float32 design stays float32: no float64 copy)
    Xj = jnp.asarray(Xc / x_scale if x_scale != 1.0 else Xc, jnp.float32)
    primal = method == "primal"
    full = spectral_basis(Xj, Xj[..., :1, :], method=method, fit_intercept=fit_intercept,
                          keep_v64=primal)
    if precision == "auto":
        precision = "fast" if fast_path_ok(full.s2, alphas.min()) else "accurate"
    project = precision == "accurate" or method == "dual"
    shared = primal and project  # candidates for the shared projection (Basis.K)
    V_ref = full.V64 if shared else None
    full = full._replace(ev=None, projT=full.projT if project else None,  # refit needs no ev
                         coef_mapT=None if project else full.coef_map.swapaxes(-1, -2),
                         V64=None)
    plan_fn = fold_plan_layers if Xj.ndim == 3 else fold_plan
    plans, idx = [], []
    for tr, va in splits:
        tr_j, va_j = jnp.asarray(tr, jnp.int32), jnp.asarray(va, jnp.int32)
        out = np.setdiff1d(np.arange(n), tr, assume_unique=True)
        out_j = jnp.asarray(out, jnp.int32)
        # Shared projection: cheaper when p + n_out < n_train (see _use_shared),
        # by enough to pay for K and EoutT when n_targets is given
        try_shared = shared and p + out.size < tr.size and (
            n_targets is None
            or 2 * p * (tr.size - p - out.size) * n_targets >= _MIN_SAVED_FLOPS)
        X_tr, X_va = jnp.take(Xj, tr_j, axis=-2), jnp.take(Xj, va_j, axis=-2)
        basis = None
        if try_shared:
            basis = spectral_basis(X_tr, X_va, method=method, fit_intercept=fit_intercept,
                                   V_ref=V_ref, X_out=jnp.take(Xj, out_j, axis=-2))
            if not _use_shared(basis):
                basis = None
        if basis is None:  # (a fold is scored, never refitted: no coef_map in the dual)
            basis = spectral_basis(X_tr, X_va, method=method, fit_intercept=fit_intercept,
                                   project=project, with_coef=False)
        plans.append(plan_fn(basis))
        idx.append((tr_j, va_j, out_j))
    XT = None if project else jnp.swapaxes(Xj, -1, -2).copy()
    return tuple(plans), full, XT, tuple(idx), precision


def _decompose_grams(X, x_offset, blocks, fit_intercept, x_scale=1.0):
    """Fold plans and refit basis from per-block sums (``_gram``): returns
    ``(plans, full, Xj, idx, layout)`` with ``Xj`` the float32 design in block
    order and ``idx = (order, val_idx)``."""
    layout, order, val_idx = blocks
    Xc = X - x_offset[..., None, :] if x_offset is not None else X
    Xj = jnp.asarray(Xc / x_scale if x_scale != 1.0 else Xc, jnp.float32)
    if order is not None:
        Xj = jnp.take(Xj, jnp.asarray(order, jnp.int32), axis=-2)
    plans, full = gram_decompose(Xj, layout, fit_intercept)
    idx = (None if order is None else jnp.asarray(order, jnp.int32),
           tuple(jnp.asarray(v, jnp.int32) for v in val_idx))
    return plans, full, Xj, idx, layout


# Error of the shared projection relative to the per-fold one, at most.
_SHARED_MAX_ERROR_RATIO = 4.0


def _use_shared(basis) -> bool:
    """Whether a fold's training targets may come from the whole design's
    projection, ``Z = K P - EoutT Y_out``, instead of ``(X_train V)^T Y_train``.

    Both are float32 products. The per-fold one errs by ~``eps s_j |y|`` in
    component ``j`` (``s_j`` its singular value); the shared one by
    ~``eps sqrt(s_j^2 + |X_out v_j|^2) |y|``: the rows left out of training
    enter through ``P``. Accept it when that ratio is at most
    ``_SHARED_MAX_ERROR_RATIO`` in every component (and every layer); a
    direction nearly absent from the training rows (rank deficiency, small
    folds) keeps the per-fold projection.
    """
    s2 = np.asarray(basis.s2, np.float64)
    eo = np.sum(np.square(np.asarray(basis.EoutT, np.float64)), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio2 = 1.0 + np.where(eo > 0, eo / s2, 0.0)
    return bool(np.all(ratio2 <= _SHARED_MAX_ERROR_RATIO**2))


# Coefficients beyond this (or nonzero below its inverse) are kept in float64.
_F32_SAFE = 1e30
# Penalties this far above the design's largest eigenvalue shrink coefficients
# and predictions below float32's range (~1e-38 relative).
_MAX_RELATIVE_PENALTY = 1e30


def _design_scale(X, x_offset, rows=4096) -> float:
    """Root mean square of the (centred) design over all layers, float64; 1 for zeros.

    Accumulated over blocks of rows, so no float64 copy of a large design
    (layers x samples x features) is made."""
    total = 0.0
    for start in range(0, X.shape[-2], rows):
        block = np.asarray(X[..., start:start + rows, :], np.float64)
        if x_offset is not None:
            block = block - x_offset[..., None, :]
        flat = block.reshape(-1)
        total += float(np.dot(flat, flat))
    ms = total / max(X.size, 1)
    return math.sqrt(ms) if ms > 0 and math.isfinite(ms) else 1.0


def _target_scales(Yb, fit_intercept):
    """A batch of targets in unit scale: ``((Y - shift) / scale)`` as float32,
    with ``shift`` (the mean with an intercept, else 0) and ``scale`` (root
    mean square after the shift; 1 for all-zero columns) per target, float64.

    Ridge is equivariant: coefficients scale with the target and every
    score chooses the same penalty, so fitting in unit scale and scaling back
    is exact, and float32 neither underflows (MEG in Tesla, ~1e-12) nor
    overflows; the float64 shift keeps a small signal on a large offset
    (``1000 + 1e-4 * signal``) that float32 alone would round away.
    """
    Yb = np.asarray(Yb, np.float64)
    shift = Yb.mean(axis=0) if fit_intercept else np.zeros(Yb.shape[1])
    Yc = Yb - shift
    scale = np.sqrt(np.mean(Yc * Yc, axis=0))
    scale = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
    return (Yc / scale).astype(np.float32), shift, scale


def _limit_penalties(s2_full, alphas_s, alphas):
    """``alphas_s`` (the penalties in the units of the scaled design) at most
    ``_MAX_RELATIVE_PENALTY`` x the design's largest eigenvalue, with a
    warning when that clips: beyond it coefficients underflow float32 (and
    1e45 is no float32)."""
    top = float(np.max(np.asarray(s2_full, np.float64)))
    if top > 0 and alphas_s.max() > _MAX_RELATIVE_PENALTY * top:
        warnings.warn(
            f"alphas up to {alphas.max():.3g} exceed the design's largest eigenvalue "
            f"(in X's own units) by more than {_MAX_RELATIVE_PENALTY:.0e}: their "
            "coefficients underflow float32 and may be exactly zero; use a grid "
            "nearer the spectrum (e.g. np.logspace(-2, 8, 11) for z-scored features)",
            UserWarning, stacklevel=3,
        )
    return np.minimum(alphas_s, _MAX_RELATIVE_PENALTY * max(top, 1e-30))


def _warn_dropped(n_dropped, const, n_folds, scoring):
    """Warn about targets some of whose folds had no defined score (constant
    validation truth, for Pearson and R^2), left out of their CV mean."""
    bad = (n_dropped > 0) & ~const
    if bad.any():
        idx = np.flatnonzero(bad.reshape(-1, bad.shape[-1]).any(axis=0))
        warnings.warn(
            f"{idx.size} target(s) (first: {idx[:5].tolist()}) had validation folds where "
            f"{scoring} is undefined (constant truth in the fold); up to "
            f"{int(n_dropped.max())} of {n_folds} folds were left out of their CV mean",
            UserWarning, stacklevel=3,
        )


def ridge_cv(
    X,
    Y,
    alphas=np.logspace(-2, 8, 11),
    cv=5,
    *,
    groups=None,
    scoring: str = "pearson",
    fit_intercept: bool = False,
    method: str = "auto",
    memory_budget=None,
    batch_size: int | None = None,
    devices=None,
    progress: bool | None = None,
    precision: str = "auto",
    penalty_sweep: str = "auto",
    folds_from: str = "auto",
) -> RidgeCVResult:
    """Multi-target ridge with a per-target penalty chosen by cross-validation.

    Parameters
    ----------
    X : (n, p) or (L, n, p)
        Features; a leading axis stacks L feature sets (e.g. layers) that
        share the targets: all are fitted in one vmapped pass.
    Y : (n, T) or (n,)
        Targets (voxels, channels...). Kept on the host and streamed to the
        devices batch by batch, so T is limited by host memory only.
    alphas : 1-D sequence of penalties (> 0)
    cv : int, splitter or list of (train, val) index pairs
        ``int k`` means k contiguous folds (no shuffling).
    groups : optional group labels for group splitters
    scoring : "pearson" | "r2" | "neg_mse"
        Score maximised (mean over folds) to choose each target's penalty.
    fit_intercept : bool
        Centre X and Y on each training set and fit an intercept.
    method : "auto" | "primal" | "dual"
        Eigendecomposition of X^T X (primal) or X X^T (dual); auto picks the
        smaller one.
    memory_budget : bytes or str like "4GiB", per device; default from the
        device's free memory (see :func:`default_memory_budget`).
    batch_size : force a number of targets per batch (overrides the budget).
    devices : None (all), an int (the first k) or a list of jax devices;
        with several devices targets are sharded across them.
    progress : show a progress bar over target batches (default: when there
        is more than one batch).
    precision : "auto" | "accurate" | "fast"
        Primal method only. "accurate" projects targets through ``X V``
        formed in float64 (float64-grade answers for ill-conditioned or
        collinear designs); "fast" through ``V^T X^T Y``, sharing one GEMM
        across folds (~10% faster, float32 error ~ eps * cond(X)). "auto"
        takes "fast" only when that error bound is below 1e-5.
    penalty_sweep : "auto" | "partial_fractions" | "direct"
        How each fold scores the penalty grid. "direct": one prediction GEMM
        per penalty (``2 A m r`` flops per target). "partial_fractions": the
        variance of every penalty's predictions from one float64 ``r x r``
        product per target (``jaxalign.ridge._fractions``), exact to float64
        rounding; penalties whose partial fractions would lose precision
        (nearly equal eigenvalues) are still swept directly. "auto" (default)
        uses partial fractions on CPUs where they cost less than the direct
        sweep (large grids, ``r`` not much above the validation size) by at
        least ~1e9 flops in all (not worth it for a handful of targets); on
        GPUs (float64 rate varies, not yet measured there) it keeps the
        direct sweep, and TPUs (no float64) always do.
        ``RidgeCVResult.penalty_sweep`` says what ran.
    folds_from : "auto" | "grams" | "rows"
        Primal method only. "grams": the Gram matrix and target
        cross-products of each block of samples that no fold splits are
        formed once in float64, and every fold's decomposition and projection
        is a sum of blocks (``jaxalign.ridge._gram``): the work that grows
        with the number of samples is done once instead of once per fold, at
        the accurate path's precision or better (``precision`` does not
        apply). "rows": each fold is decomposed from its rows. "auto" takes
        "grams" on CPUs where it needs fewer flops (many more samples than
        features: n = 27,500, p = 400, 5 folds ran ~9x faster than "rows"), else "rows";
        splits with many distinct train/validation patterns (ShuffleSplit)
        always take "rows". ``RidgeCVResult.folds_from`` says what ran.

    Returns
    -------
    RidgeCVResult
    """
    X = check_design(X)
    n, p = X.shape[-2:]
    n_layers = X.shape[0] if X.ndim == 3 else None
    Y, _ = check_targets(Y, n)
    alphas = check_alphas(alphas)
    scoring = check_scoring(scoring)
    if precision not in ("auto", "accurate", "fast"):
        raise ValueError(f"precision must be 'auto', 'accurate' or 'fast', got {precision!r}")
    if penalty_sweep not in PENALTY_SWEEPS:
        raise ValueError(f"penalty_sweep must be one of {PENALTY_SWEEPS}, got {penalty_sweep!r}")
    if folds_from not in FOLDS_FROM:
        raise ValueError(f"folds_from must be one of {FOLDS_FROM}, got {folds_from!r}")
    splits = check_cv(cv, n, groups=groups)
    small = min(len(va) for _, va in splits)
    if small < 2 and scoring != "neg_mse":
        raise ValueError(
            f"cv has a validation fold of {small} sample(s): scoring={scoring!r} is undefined "
            "on fewer than 2 samples (it would choose no penalty and leave a zero model); "
            "use folds of >= 2 samples or scoring='neg_mse', which one sample defines"
        )
    method = choose_method(min(len(tr) for tr, _ in splits), p, method)
    n_targets = Y.shape[1]
    const = constant_targets(Y)

    devs = _resolve_devices(devices)
    n_dev = len(devs)
    multi = _multiprocess(devs)
    L = n_layers or 1
    if batch_size is not None:
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = math.ceil(batch_size / n_dev) * n_dev
    budget = None
    if batch_size is None:  # parse the budget before the decompositions' work
        # per device: this process's own devices set the budget
        local = [d for d in devs if d.process_index == jax.process_index()] or devs
        budget = parse_bytes(memory_budget) if memory_budget is not None else default_memory_budget(local)

    x_offset = X.mean(axis=-2, dtype=np.float64) if fit_intercept else None
    # Scale-free: X in units of its root mean square (penalties with it), each
    # target in units of its own (see _target_scales); undone on the outputs.
    x_scale = _design_scale(X, x_offset)
    alphas_s = alphas / x_scale**2
    blocks = None
    if folds_from != "rows" and method == "primal":
        blocks = sample_blocks(splits, n)
        if blocks is not None and folds_from == "auto" and not _grams_pay(
                n, p, splits, n_targets * L, devs[0].platform):
            blocks = None
    if folds_from == "grams" and blocks is None:
        raise ValueError(
            "folds_from='grams' needs the primal method (p <= training samples; got "
            f"method={method!r}) and splits whose train/validation sets are unions of a few "
            "blocks of samples (k-fold, groups, gaps; not repeated random splits)")
    layout = None
    if blocks is not None:
        plans, full, XT, idx, layout = _decompose_grams(X, x_offset, blocks, fit_intercept,
                                                        x_scale=x_scale)
        precision = "accurate"
    else:
        plans, full, XT, idx, precision = _decompose(X, x_offset, splits, alphas_s, method,
                                                     fit_intercept, precision, n_targets * L,
                                                     x_scale=x_scale)
    alphas_s = _limit_penalties(full.s2, alphas_s, alphas)
    shared_folds = sum(plan.K is not None for plan in plans)
    plans, direct, sweep_kind = _plan_sweeps(plans, alphas_s, penalty_sweep, devs[0].platform,
                                             n_targets)
    stacked_folds = 0
    if layout is None:
        # (a budget from free memory may differ between processes; their decisions must not)
        max_bytes = _STACK_MAX_BYTES if budget is None or multi else min(_STACK_MAX_BYTES, budget // 4)
        plans, stacked_folds, stacked_bytes = _plan_stacks(plans, jnp.asarray(alphas_s, jnp.float32),
                                                           n_targets, max_bytes)
        if budget is not None:  # the stacked matrices stay on the device with the batches
            budget = max(budget - stacked_bytes, 1)
    use_x64 = sweep_kind != "direct" or layout is not None
    if batch_size is None:
        if layout is not None:
            bpt = _bytes_per_target_grams(n, p, len(alphas), layout, L)
        else:
            bpt = _bytes_per_target(n, p, len(alphas), splits, L, method,
                                    float64_sweep=use_x64)
        batch_size = target_batch_size(n_targets, bpt, budget, n_dev)
    if multi:  # one program in every process: the same batches and the same plan
        batch_size = _agree_across_processes(
            batch_size, (precision, sweep_kind, direct, shared_folds,
                         tuple(plan.K is not None for plan in plans),
                         tuple(plan.B is not None for plan in plans)))
    alphas_j = jnp.asarray(alphas_s, jnp.float32)
    if n_dev > 1:
        mesh = Mesh(np.asarray(devs), ("targets",))
        rep = NamedSharding(mesh, PartitionSpec())
        y_sharding = NamedSharding(mesh, PartitionSpec(None, "targets"))
        arrays = (plans, full, XT, idx, alphas_j)
        if multi:  # host copies, replicated onto every process's devices
            arrays = jax.tree.map(np.asarray, arrays)
        plans, full, XT, idx, alphas_j = jax.device_put(arrays, rep)
    else:
        y_sharding = devs[0]
        plans, full, XT, idx, alphas_j = jax.device_put((plans, full, XT, idx, alphas_j), devs[0])

    if layout is not None:
        gram_fn = cv_batch_gram_layers if n_layers else cv_batch_gram

        def fn(plans, full, XT, idx, Yb, alphas_j, **kw):
            return gram_fn(plans, full, XT, idx[0], idx[1], Yb, alphas_j, layout=layout, **kw)
    else:
        fn = cv_batch_layers if n_layers else cv_batch
    lead = (n_layers,) if n_layers else ()
    A = len(alphas)
    y_shift = np.zeros(n_targets, np.float64)
    y_scale = np.ones(n_targets, np.float64)
    # neg MSE carries the targets' units squared; coefficients their ratio to
    # X's: float64 where float32 could not hold them
    cv_scores = np.empty(lead + (A, n_targets), np.float64 if scoring == "neg_mse" else np.float32)
    best_idx = np.empty(lead + (n_targets,), np.int32)
    n_dropped = np.zeros(lead + (n_targets,), np.int32)
    coef = np.empty(lead + (p, n_targets), np.float32)
    intercept = np.empty(lead + (n_targets,), np.float64)

    starts = list(range(0, n_targets, batch_size))
    show = progress if progress is not None else len(starts) > 1
    show = show and jax.process_index() == 0  # one bar for a multi-process fit
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_targets, desc="ridge CV", unit="target")

    def collect(pending):
        nonlocal coef
        sl, width, out = pending
        if multi:  # every process gets every target's results
            from jax.experimental import multihost_utils

            out = multihost_utils.process_allgather(out, tiled=True)
        s, b, c, i, nd = (np.asarray(o) for o in out)
        scale = y_scale[sl]
        s = s[..., :width]
        cv_scores[..., sl] = s * scale**2 if scoring == "neg_mse" else s
        best_idx[..., sl] = b[..., :width]
        n_dropped[..., sl] = nd[..., :width]
        factor = scale / x_scale
        c = c[..., :width].astype(np.float64) * factor
        if coef.dtype == np.float32 and (np.any(np.abs(c) > _F32_SAFE) or np.any(
                (c != 0) & (np.abs(c) < 1 / _F32_SAFE))):
            coef = coef.astype(np.float64)  # out of float32's comfortable range
        coef[..., sl] = c
        intercept[..., sl] = y_shift[sl] + i[..., :width] * scale
        if bar is not None:
            bar.update(width)

    pending = None
    for start in starts:
        stop = min(start + batch_size, n_targets)
        width = stop - start
        Yb, y_shift[start:stop], y_scale[start:stop] = _target_scales(Y[:, start:stop],
                                                                       fit_intercept)
        if width < batch_size:  # pad to one static shape; padded columns are dropped
            Yb = np.pad(Yb, ((0, 0), (0, batch_size - width)))
        Yb = jax.device_put(Yb, y_sharding)
        with jax.enable_x64(use_x64):  # the partial-fraction sweep runs in float64
            out = fn(plans, full, XT, idx, Yb, alphas_j, scoring=scoring,
                     fit_intercept=fit_intercept, direct=direct)
        if pending is not None:  # overlap host transfer with the next batch
            collect(pending)
        pending = (slice(start, stop), width, out)
    collect(pending)
    if bar is not None:
        bar.close()
    if fit_intercept:  # back to the caller's (uncentred) features
        intercept -= np.einsum("...p,...pt->...t", x_offset, coef)
    _warn_dropped(n_dropped, const, len(splits), scoring)

    # Undefined targets: constant overall, or no fold with a defined score.
    undefined = best_idx < 0
    if const.any():
        cv_scores[..., const] = np.nan
        undefined |= const
        best_idx[undefined] = -1
        coef = np.where(undefined[..., None, :], np.float32(0), coef)
        if fit_intercept:
            intercept[..., const] = Y[0, const]
    best_alphas = np.where(undefined, np.nan, alphas[np.maximum(best_idx, 0)])
    return RidgeCVResult(
        best_alphas=best_alphas,
        best_alpha_index=best_idx,
        cv_scores=cv_scores,
        coef=coef,
        intercept=intercept,
        alphas=alphas,
        splits=splits,
        scoring=scoring,
        method=method,
        precision=precision if method == "primal" else "accurate",
        batch_size=batch_size,
        constant=const,
        penalty_sweep=sweep_kind,
        shared_folds=shared_folds,
        folds_from="rows" if layout is None else "grams",
        stacked_folds=stacked_folds,
    )
