"""Noise ceilings: split-half consistency and Brain-Score's extrapolated ceiling.

Both ceilings estimate how well the *average* subject's responses can be
predicted at all, given inter-subject noise, so that model scores can be
reported as a fraction of that (:func:`normalize_scores`).

Data layout: ``(n_subjects, n_samples, n_targets)`` (targets: voxels,
channels, or a single reading-time column; a 2-D ``(n_subjects, n_samples)``
array is one target, and the per-target outputs then lose their target axis).
Data must be finite: drop or impute NaN first (Brain-Score's xarray means skip
NaN; here a NaN is an error, never silently averaged over).

Every correlation is :func:`jaxalign.ridge.pearson_r` (per target, float32;
NaN for a constant target, which then gets a NaN ceiling). Averages over
subjects are products with weight matrices (one row per split or draw),
computed with the correlations in one jitted JAX step per batch of splits or
draws (no Python loop over targets).

Random number conventions (so that results can be reproduced exactly, and the
indices are also returned):

* :func:`split_half_ceiling`: ``rng = np.random.default_rng(seed)``;
  ``splits = np.argsort(rng.random((n_splits, n_subjects)), axis=1)``; split
  ``i`` averages subjects ``splits[i, :n_subjects // 2]`` against
  ``splits[i, n_subjects // 2:]``.
* :func:`extrapolation_ceiling`: ``rng = np.random.default_rng(seed)``;
  ``perms = np.argsort(rng.random((P, n_draws, n_subjects)), axis=-1)``, then
  ``boot = rng.integers(0, n_draws, size=(n_bootstraps, P, n_draws))``; draw
  ``(j, d)`` holds out subject ``perms[j, d, 0]`` and predicts it from the mean
  of ``perms[j, d, 1:1 + pool_sizes[j]]``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign._core.validation import check_int
from jaxalign._precision import jit as _jit
from jaxalign.ridge import pearson_r

__all__ = [
    "ExtrapolationCeiling",
    "SplitHalfCeiling",
    "extrapolation_ceiling",
    "fit_saturating_curve",
    "normalize_scores",
    "saturating_curve",
    "spearman_brown",
    "split_half_ceiling",
]

# Elements of one (n_samples, batch, n_targets) operand handed to pearson_r.
_MAX_BATCH_ELEMENTS = 2**23


# --------------------------------------------------------------------------- #
# validation and the shared kernel
# --------------------------------------------------------------------------- #


def _check_subject_data(data, min_subjects: int, axis_subjects: int = 0):
    """(n_subjects, n_samples, n_targets) finite float array, and whether 2-D."""
    arr = np.asarray(data)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"data must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(
            "data must be (n_subjects, n_samples, n_targets) or (n_subjects, n_samples), "
            f"got shape {arr.shape}"
        )
    try:
        arr = np.moveaxis(arr, axis_subjects, 0)
    except np.exceptions.AxisError as err:
        raise ValueError(f"axis_subjects={axis_subjects} out of range for shape {arr.shape}") from err
    single = arr.ndim == 2
    if single:
        arr = arr[:, :, None]
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    S, n, T = arr.shape
    if S < min_subjects:
        raise ValueError(f"need at least {min_subjects} subjects, got {S}")
    if n < 3:
        raise ValueError(f"need at least 3 samples per subject to correlate, got {n}")
    if T < 1:
        raise ValueError("data has no targets")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"data contains {bad} non-finite value(s) (NaN/inf); drop or impute them first "
            "(e.g. remove targets or samples with missing responses)"
        )
    return arr, single


@_jit
def _mixed_pearson(w_left, w_right, data_nst):
    """pearson_r between two batches of subject mixtures of ``data_nst`` (n, S, T)."""
    left = jnp.einsum("ds,nst->ndt", w_left, data_nst)
    right = jnp.einsum("ds,nst->ndt", w_right, data_nst)
    return pearson_r(left, right)


def _weighted_mean_pearson(data: np.ndarray, w_left: np.ndarray, w_right: np.ndarray) -> np.ndarray:
    """Pearson r per target between ``w_left[d] @ data`` and ``w_right[d] @ data``.

    ``data`` is (S, n, T); the weights are (D, S) rows (subject averages or
    one-hot selections). Returns (D, T) float64. The data go to the device
    once; mixtures and correlations are computed in one jitted float32 step
    per batch of D, with a fixed batch size (one compilation) that bounds
    memory.
    """
    S, n, T = data.shape
    D = w_left.shape[0]
    # Pearson r is shift invariant: centring each subject's targets first (mean
    # in float64) keeps float32 mixtures accurate for data with large offsets.
    centred = data - data.mean(axis=1, keepdims=True, dtype=np.float64).astype(data.dtype)
    data_nst = jnp.asarray(np.moveaxis(centred, 0, 1), dtype=jnp.float32)
    del centred
    w_left = np.asarray(w_left, np.float32)
    w_right = np.asarray(w_right, np.float32)
    batch = int(max(1, min(D, _MAX_BATCH_ELEMENTS // (n * T))))
    out = np.empty((D, T))
    for start in range(0, D, batch):
        idx = np.arange(start, min(start + batch, D))
        take = np.concatenate([idx, np.full(batch - idx.size, idx[-1])])
        r = _mixed_pearson(w_left[take], w_right[take], data_nst)
        out[idx] = np.asarray(r, dtype=np.float64)[: idx.size]
    return out


def _nanmedian(a, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN
        return np.nanmedian(a, axis=axis)


def _nanpercentile(a, q, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(a, q, axis=axis)


# --------------------------------------------------------------------------- #
# split-half
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class SplitHalfCeiling:
    """Result of :func:`split_half_ceiling`.

    Attributes
    ----------
    ceiling : ndarray (n_targets,) or float
        Median over splits of the Spearman-Brown corrected consistency
        (NaN-skipping; NaN if every split is NaN).
    per_split : ndarray (n_splits, n_targets)
        Spearman-Brown corrected consistency of each split.
    per_split_raw : ndarray (n_splits, n_targets)
        Uncorrected Pearson r between the two half-averages.
    splits : ndarray of int (n_splits, n_subjects)
        Subject permutation of each split; the first ``n_first`` subjects form
        the first half, the rest the second.
    n_first : int
        ``n_subjects // 2``.
    """

    ceiling: np.ndarray
    per_split: np.ndarray
    per_split_raw: np.ndarray
    splits: np.ndarray
    n_first: int


def spearman_brown(r, factor: float = 2.0):
    r"""Spearman-Brown prophecy :math:`k r / (1 + (k - 1) r)`; NaN where undefined.

    Examples
    --------
    >>> float(spearman_brown(0.5))
    0.6666666666666666
    """
    r = np.asarray(r, dtype=np.float64)
    den = 1.0 + (factor - 1.0) * r
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, factor * r / den, np.nan)


def split_half_ceiling(data, n_splits: int = 10, seed=0, axis_subjects: int = 0) -> SplitHalfCeiling:
    r"""Split-half noise ceiling with Spearman-Brown correction (Brain-Score Futrell2018).

    For each of ``n_splits`` random splits of the subjects into halves
    :math:`A, B` (sizes :math:`\lfloor S/2 \rfloor` and :math:`\lceil S/2 \rceil`
    for an odd number of subjects ``S``, the larger half second, as in
    Brain-Score), per target:

    .. math::

        \bar y_A = \frac{1}{|A|}\sum_{s \in A} y_s, \quad
        r = \operatorname{corr}(\bar y_A, \bar y_B), \quad
        c = \frac{2 r}{1 + r},

    and the ceiling is the median of ``c`` over splits. ``c`` estimates the
    reliability of the average over all subjects (the target that models are
    scored against). Identical to Brain-Score's ``SplitHalvesConsistency``
    except for the random generator (numpy ``default_rng(seed)``, see the
    module docstring, instead of ``RandomState(0).choice``) and NaN handling
    (NaN data is an error here).

    Parameters
    ----------
    data : array_like, (n_subjects, n_samples, n_targets) or (n_subjects, n_samples)
        Finite responses; at least 2 subjects and 3 samples.
    n_splits : int, default 10
    seed : int or None, default 0
        Seed for ``numpy.random.default_rng``; the same seed gives the same splits.
    axis_subjects : int, default 0
        Axis of ``data`` that indexes subjects (moved to the front).

    Returns
    -------
    SplitHalfCeiling

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.standard_normal((500, 3))
    >>> data = signal + rng.standard_normal((8, 500, 3))   # 8 subjects, SNR 1
    >>> res = split_half_ceiling(data, n_splits=10, seed=0)
    >>> res.ceiling.shape, res.per_split.shape
    ((3,), (10, 3))
    >>> bool(np.all(np.abs(res.ceiling - 8 / 9) < 0.05))   # reliability of the 8-subject mean
    True
    """
    arr, single = _check_subject_data(data, min_subjects=2, axis_subjects=axis_subjects)
    n_splits = check_int(n_splits, "n_splits", 1)
    S = arr.shape[0]
    rng = np.random.default_rng(seed)
    splits = np.argsort(rng.random((n_splits, S)), axis=1)
    h = S // 2
    rows = np.arange(n_splits)[:, None]
    w_a = np.zeros((n_splits, S))
    w_b = np.zeros((n_splits, S))
    w_a[rows, splits[:, :h]] = 1.0 / h
    w_b[rows, splits[:, h:]] = 1.0 / (S - h)
    raw = _weighted_mean_pearson(arr, w_a, w_b)
    corrected = spearman_brown(raw)
    ceiling = _nanmedian(corrected, axis=0)
    if single:
        ceiling, corrected, raw = ceiling[0], corrected[:, 0], raw[:, 0]
    return SplitHalfCeiling(
        ceiling=ceiling, per_split=corrected, per_split_raw=raw, splits=splits, n_first=h
    )


# --------------------------------------------------------------------------- #
# extrapolation
# --------------------------------------------------------------------------- #


def saturating_curve(x, v0, tau):
    r"""Brain-Score's extrapolation model :math:`v_0 (1 - e^{-x/\tau})`.

    Examples
    --------
    >>> round(float(saturating_curve(2.0, 0.8, 2.0)), 6)
    0.505696
    """
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(v0) * -np.expm1(-x / np.asarray(tau))


def _profile_fit(u, Y, x, lo, hi):
    """Best v0 and SSE for log-tau ``u`` (R,), rows ``Y`` (R, P)."""
    g = -np.expm1(-x[None, :] / np.exp(u)[:, None])
    v0 = np.clip((Y * g).sum(1) / (g * g).sum(1), lo, hi)
    sse = ((Y - v0[:, None] * g) ** 2).sum(1)
    return sse, v0


def fit_saturating_curve(x, y, v0_bounds=(0.0, 1.0), n_grid: int = 256, n_iter: int = 40):
    r"""Least-squares fit of :math:`y = v_0 (1 - e^{-x/\tau})`, vectorised over curves.

    Solves

    .. math::

        \min_{v_0 \in [a, b],\; \tau > 0} \sum_j \bigl(y_j - v_0 (1 - e^{-x_j/\tau})\bigr)^2

    for every row of ``y`` at once. For fixed :math:`\tau` the problem is
    linear in :math:`v_0` (convex): :math:`v_0^*(\tau) = \operatorname{clip}(\sum y g /
    \sum g^2, a, b)` with :math:`g = 1 - e^{-x/\tau}`. The profile error is
    minimised over :math:`\log\tau` by a grid search (``n_grid`` points from
    ``min(x) / 50`` to ``1000 max(x)``) refined by golden-section search in the
    bracket around the best grid point (``n_iter`` iterations shrink it by
    0.618 each: relative precision of :math:`\tau` ~1e-9 with the defaults). Same optimum as
    ``scipy.optimize.curve_fit(v, x, y, bounds=([a, 0], [b, inf]))`` (Brain-Score
    leaves tau unbounded; negative tau, growing curves, are not searched here),
    without a per-curve Python loop. When :math:`v_0 = 0` (non-positive data)
    tau is arbitrary.

    Parameters
    ----------
    x : array_like, (P,)
        Positive, distinct abscissae; P >= 2.
    y : array_like, (..., P)
        Curves to fit; a row with any NaN gets NaN parameters.
    v0_bounds : (float, float), default (0, 1)
        Brain-Score's bounds on the asymptote.
    n_grid, n_iter : int
        Grid size and golden-section iterations.

    Returns
    -------
    v0, tau : ndarray, shape ``y.shape[:-1]``

    Examples
    --------
    >>> x = np.arange(2, 9)
    >>> v0, tau = fit_saturating_curve(x, saturating_curve(x, 0.7, 3.0))
    >>> round(float(v0), 8), round(float(tau), 6)
    (0.7, 3.0)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"x must be 1-D with at least 2 points, got shape {x.shape}")
    if not np.isfinite(x).all() or (x <= 0).any() or np.unique(x).size != x.size:
        raise ValueError("x must be finite, positive and distinct")
    if y.ndim < 1 or y.shape[-1] != x.size:
        raise ValueError(f"y must have shape (..., {x.size}), got {y.shape}")
    lo, hi = (float(b) for b in v0_bounds)
    if not lo <= hi:
        raise ValueError(f"v0_bounds must be (low, high) with low <= high, got {v0_bounds}")
    n_grid = check_int(n_grid, "n_grid", 3)
    n_iter = check_int(n_iter, "n_iter", 0)

    lead = y.shape[:-1]
    Y = y.reshape(-1, x.size)
    valid = np.isfinite(Y).all(1)
    v0_out = np.full(Y.shape[0], np.nan)
    tau_out = np.full(Y.shape[0], np.nan)

    grid = np.linspace(np.log(x.min() / 50.0), np.log(x.max() * 1e3), n_grid)
    G = -np.expm1(-x[None, :] / np.exp(grid)[:, None])  # (K, P)
    Sgg = (G * G).sum(1)
    gr = (np.sqrt(5.0) - 1.0) / 2.0
    rows = np.flatnonzero(valid)
    for start in range(0, rows.size, 8192):
        r_idx = rows[start : start + 8192]
        Yc = Y[r_idx]
        Syg = Yc @ G.T  # (R, K)
        v = np.clip(Syg / Sgg, lo, hi)
        sse_grid = (Yc * Yc).sum(1)[:, None] - 2.0 * v * Syg + v * v * Sgg
        k = np.argmin(sse_grid, axis=1)
        a = grid[np.maximum(k - 1, 0)]
        b = grid[np.minimum(k + 1, n_grid - 1)]
        for _ in range(n_iter):
            c = b - gr * (b - a)
            d = a + gr * (b - a)
            fc, _ = _profile_fit(c, Yc, x, lo, hi)
            fd, _ = _profile_fit(d, Yc, x, lo, hi)
            left = fc <= fd
            b = np.where(left, d, b)
            a = np.where(left, a, c)
        u = 0.5 * (a + b)
        sse_u, v0_u = _profile_fit(u, Yc, x, lo, hi)
        sse_k, v0_k = _profile_fit(grid[k], Yc, x, lo, hi)
        use_grid = sse_k < sse_u
        v0_out[r_idx] = np.where(use_grid, v0_k, v0_u)
        tau_out[r_idx] = np.exp(np.where(use_grid, grid[k], u))
    return v0_out.reshape(lead)[()], tau_out.reshape(lead)[()]


@dataclass(frozen=True)
class ExtrapolationCeiling:
    """Result of :func:`extrapolation_ceiling`.

    Attributes
    ----------
    ceiling : float
        The ceiling. ``per_target=True``: median over targets of
        ``target_ceiling`` (Brain-Score's aggregate). ``per_target=False``:
        median over bootstraps of the v0 fitted to the median-over-targets curve.
    ceiling_ci : ndarray (2,)
        2.5 and 97.5 percentiles over bootstraps of the aggregate (per
        bootstrap: median over targets of v0, or the v0 of the median curve).
    target_ceiling : ndarray (n_targets,) or float, or None
        Per target, median over bootstraps of v0 (``per_target=True`` only).
    target_ci : ndarray (2, n_targets) or None
        Per target, 2.5 and 97.5 bootstrap percentiles of v0.
    v0_bootstrap, tau_bootstrap : ndarray
        Fitted parameters per bootstrap: (n_bootstraps, n_targets) per target,
        (n_bootstraps,) for the median curve.
    pool_sizes : ndarray of int (P,)
        Number of subjects averaged to predict the held-out subject.
    x : ndarray (P,)
        Abscissa of the fit, ``pool_sizes + 1`` (subjects involved, Brain-Score's
        ``num_subjects``).
    consistency : ndarray (P, n_targets)
        Mean over draws of the held-out consistency, per pool size.
    draw_consistency : ndarray (P, n_draws, n_targets)
        Pearson r of each draw.
    permutations : ndarray of int (P, n_draws, n_subjects)
        Draw ``(j, d)`` holds out ``permutations[j, d, 0]`` and averages
        ``permutations[j, d, 1:1 + pool_sizes[j]]``.
    bootstrap_index : ndarray of int (n_bootstraps, P, n_draws)
        Draws resampled (with replacement) by each bootstrap, per pool size.
    """

    ceiling: float
    ceiling_ci: np.ndarray
    target_ceiling: np.ndarray | None
    target_ci: np.ndarray | None
    v0_bootstrap: np.ndarray
    tau_bootstrap: np.ndarray
    pool_sizes: np.ndarray
    x: np.ndarray
    consistency: np.ndarray
    draw_consistency: np.ndarray
    permutations: np.ndarray
    bootstrap_index: np.ndarray


def extrapolation_ceiling(
    data,
    n_bootstraps: int = 100,
    seed=0,
    pool_sizes=None,
    n_draws: int = 50,
    per_target: bool = True,
) -> ExtrapolationCeiling:
    r"""Brain-Score style neural ceiling, extrapolated to infinitely many subjects.

    1. For every pool size ``p`` (default ``1 .. n_subjects - 1``) make
       ``n_draws`` random draws of a held-out subject ``h`` and a pool
       :math:`\mathcal P` of ``p`` other subjects, and compute per target the
       consistency :math:`c = \operatorname{corr}(y_h, \frac{1}{p}\sum_{s \in
       \mathcal P} y_s)`.
    2. Bootstrap (``n_bootstraps`` times): for each pool size resample its
       draws with replacement and average,
       :math:`\bar c_b(x)`, with :math:`x = p + 1` (the number of subjects
       involved, Brain-Score's ``num_subjects``, so the default abscissae are
       ``2 .. n_subjects``).
    3. Fit :math:`v_0 (1 - e^{-x/\tau})` to :math:`\bar c_b(x)`
       (:func:`fit_saturating_curve`, :math:`v_0 \in [0, 1]`) per target and
       bootstrap; the target's ceiling is the median of :math:`v_0` over
       bootstraps, the overall ceiling the median over targets.

    Differences from Brain-Score's ``ExtrapolationCeiling`` +
    ``HoldoutSubjectCeiling`` (language, Pereira2018):

    * the held-out subject is predicted by the pool's *mean* response (Pearson
      r), not by a cross-validated linear regression from the pool's voxels;
      this is the natural consistency for targets shared across subjects
      (reading times, or data already in a common space);
    * draws are independent random (held-out, pool) pairs, ``n_draws`` per
      pool size (Brain-Score: up to 10 distinct subject subsets per size, each
      with several held-out subjects, averaged per subset before bootstrapping);
    * the bootstrap indices are shared by all targets (so are Brain-Score's,
      whose generator restarts at ``RandomState(0)`` for every neuroid);
    * tau is restricted to tau > 0 and the fit is an exact vectorised least
      squares instead of one ``curve_fit`` per target and bootstrap;
    * the spread reported is the 95% percentile interval of the bootstrapped
      v0, not Brain-Score's interval of the curve at its asymptote end-point.

    Parameters
    ----------
    data : array_like, (n_subjects, n_samples, n_targets) or (n_subjects, n_samples)
        Finite responses of at least 3 subjects to the same samples.
    n_bootstraps : int, default 100
    seed : int or None, default 0
        Seed for ``numpy.random.default_rng`` (draws, then bootstraps).
    pool_sizes : sequence of int, optional
        Distinct pool sizes in ``1 .. n_subjects - 1``, at least 2 of them.
    n_draws : int, default 50
        Random (held-out, pool) draws per pool size.
    per_target : bool, default True
        Fit every target (Brain-Score). ``False`` fits only the median over
        targets of the bootstrapped consistency curve (faster for very many
        targets; ``target_ceiling``/``target_ci`` are then None).

    Returns
    -------
    ExtrapolationCeiling

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = rng.standard_normal((300, 4)) + rng.standard_normal((6, 300, 4))
    >>> res = extrapolation_ceiling(data, n_bootstraps=20, seed=0, n_draws=10)
    >>> res.x.tolist(), res.v0_bootstrap.shape
    ([2.0, 3.0, 4.0, 5.0, 6.0], (20, 4))
    >>> 0.5 < res.ceiling < 0.9   # held-out r tends to sqrt(1/2) = 0.71 here
    True
    """
    arr, single = _check_subject_data(data, min_subjects=3)
    n_bootstraps = check_int(n_bootstraps, "n_bootstraps", 1)
    n_draws = check_int(n_draws, "n_draws", 1)
    S, _, T = arr.shape
    if pool_sizes is None:
        pools = np.arange(1, S)
    else:
        pools = np.asarray(pool_sizes)
        if pools.ndim != 1 or not np.issubdtype(pools.dtype, np.integer):
            raise ValueError(f"pool_sizes must be a 1-D sequence of integers, got {pool_sizes!r}")
        if np.unique(pools).size != pools.size or pools.size < 2:
            raise ValueError(f"pool_sizes must hold at least 2 distinct sizes, got {pools.tolist()}")
        if pools.min() < 1 or pools.max() > S - 1:
            raise ValueError(f"pool_sizes must lie in 1..{S - 1} (n_subjects - 1), got {pools.tolist()}")
        pools = np.sort(pools)
    P = pools.size

    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((P, n_draws, S)), axis=-1)
    boot = rng.integers(0, n_draws, size=(n_bootstraps, P, n_draws))

    # weights of every draw: one-hot held-out subject, 1/p on the pool
    D = P * n_draws
    flat_perms = perms.reshape(D, S)
    sizes = np.repeat(pools, n_draws)
    w_held = np.zeros((D, S))
    w_held[np.arange(D), flat_perms[:, 0]] = 1.0
    rank = np.empty_like(flat_perms)
    np.put_along_axis(rank, flat_perms, np.arange(S)[None, :], axis=1)  # position of each subject
    w_pool = ((rank >= 1) & (rank <= sizes[:, None])) / sizes[:, None].astype(np.float64)
    draw_r = _weighted_mean_pearson(arr, w_held, w_pool).reshape(P, n_draws, T)

    # bootstrap means via selection counts; a NaN draw poisons only the
    # bootstraps that select it
    counts = np.zeros((n_bootstraps, P, n_draws))
    b_idx, p_idx = np.meshgrid(np.arange(n_bootstraps), np.arange(P), indexing="ij")
    np.add.at(counts, (b_idx[..., None], p_idx[..., None], boot), 1.0)
    nan_draw = np.isnan(draw_r)
    boot_mean = np.einsum("bpd,pdt->bpt", counts, np.where(nan_draw, 0.0, draw_r)) / n_draws
    boot_nan = np.einsum("bpd,pdt->bpt", counts, nan_draw.astype(np.float64)) > 0
    boot_mean = np.where(boot_nan, np.nan, boot_mean)  # (B, P, T)

    x = pools.astype(np.float64) + 1.0
    if per_target:
        v0, tau = fit_saturating_curve(x, boot_mean.transpose(0, 2, 1))  # (B, T)
        v0, tau = np.asarray(v0).reshape(n_bootstraps, T), np.asarray(tau).reshape(n_bootstraps, T)
        target_ceiling = _nanmedian(v0, axis=0)
        target_ci = _nanpercentile(v0, [2.5, 97.5], axis=0)
        ceiling = float(_nanmedian(target_ceiling, axis=0))
        aggregate_boot = _nanmedian(v0, axis=1)
    else:
        v0, tau = fit_saturating_curve(x, _nanmedian(boot_mean, axis=2))  # (B,)
        v0, tau = np.atleast_1d(v0), np.atleast_1d(tau)
        target_ceiling = target_ci = None
        ceiling = float(_nanmedian(v0, axis=0))
        aggregate_boot = v0
    ceiling_ci = _nanpercentile(aggregate_boot, [2.5, 97.5], axis=0)

    consistency = np.mean(draw_r, axis=1)
    if single:
        consistency, draw_r = consistency[:, 0], draw_r[..., 0]
        if per_target:
            v0, tau, target_ci = v0[:, 0], tau[:, 0], target_ci[:, 0]
            target_ceiling = float(target_ceiling[0])
    return ExtrapolationCeiling(
        ceiling=ceiling,
        ceiling_ci=ceiling_ci,
        target_ceiling=target_ceiling,
        target_ci=target_ci,
        v0_bootstrap=v0,
        tau_bootstrap=tau,
        pool_sizes=pools,
        x=x,
        consistency=consistency,
        draw_consistency=draw_r,
        permutations=perms,
        bootstrap_index=boot,
    )


# --------------------------------------------------------------------------- #
# normalisation
# --------------------------------------------------------------------------- #


def normalize_scores(scores, ceiling, clip: bool = False):
    r"""Ceiling-normalised scores :math:`s / c`, returned with the ceiling.

    Parameters
    ----------
    scores : array_like
        Raw scores (e.g. Pearson r per target, or an aggregate).
    ceiling : array_like or ceiling result
        Broadcastable with ``scores``; a :class:`SplitHalfCeiling` /
        :class:`ExtrapolationCeiling` contributes its ``ceiling`` attribute.
    clip : bool, default False
        Clip the normalised scores to [0, 1], as brainscore-language's
        ``ceiling_normalize`` does (Brain-Score vision does not clip).

    Returns
    -------
    normalized : ndarray of float64
        NaN where the ceiling is <= 0 (with a ``RuntimeWarning``) or NaN.
    ceiling : ndarray of float64
        The ceiling, broadcast to the shape of ``normalized``.

    Examples
    --------
    >>> norm, c = normalize_scores([0.2, 0.4], 0.8)
    >>> norm.tolist(), c.tolist()
    ([0.25, 0.5], [0.8, 0.8])
    """
    if hasattr(ceiling, "ceiling") and not isinstance(ceiling, np.ndarray):
        ceiling = ceiling.ceiling
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(ceiling, dtype=np.float64)
    try:
        s, c = np.broadcast_arrays(s, c)
    except ValueError as err:
        raise ValueError(f"scores {s.shape} and ceiling {c.shape} do not broadcast") from err
    bad = c <= 0
    if bad.any():
        warnings.warn(
            f"{int(bad.sum())} ceiling value(s) <= 0: their normalised scores are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(bad, np.nan, s / np.where(bad, 1.0, c))
    if clip:
        norm = np.clip(norm, 0.0, 1.0)
    return norm[()], c.copy()[()]
