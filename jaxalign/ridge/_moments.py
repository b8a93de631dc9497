"""Ridge CV from sums over samples: samples sharded over devices and hosts.

Everything the spectral CV needs of the data is a sum over samples: for each
fold, the Gram matrix ``X^T X``, the cross-products ``X^T Y``, the column
sums and ``sum(y^2)``. Sums split over any partition of the samples, so the
samples can live on many devices and many processes (a long recording:
continuous MEG, many runs) and only ``p x p`` and ``p x T`` matrices ever
meet: ``n`` is bounded by the cluster, not by one device.

How (``ridge_cv_moments``):

1. The CV splits cut the samples into *atoms*: groups of samples that every
   split treats alike (in training, in validation, or left out, e.g. gap
   rows). Contiguous k folds with gaps give about 2k atoms.
2. Pass 1: per column sums and sums of squares (global means and scales);
   pass 2: per atom, the moments of the standardized data (``n_a``, ``s_a =
   sum x``, ``G_a = X^T X``, ``t_a = sum y``, ``C_a = X^T Y``, ``q_a = sum
   y^2``). Each process computes its own rows' sums on its local devices
   (rows sharded, XLA adds the all-reduce), then the processes add theirs
   (``jax.distributed``).
3. Per split, the training moments are the sums of its training atoms; the
   eigendecomposition of the (centred) training Gram gives every penalty's
   coefficients, and the validation moments give every penalty's
   validation score (Pearson r, R^2 or MSE) without a single prediction:
   ``sum f y = W . V^T C_val``, ``sum f^2 = W^T (V^T G_val V) W`` in the
   training eigenbasis. Penalty choice (ties within 1e-6 go to the larger
   penalty) and the refit on all samples are those of :func:`ridge_cv`.

Squaring the design into a Gram matrix squares its condition number, so the
moments and the solve are float64 (CPU; on accelerators the moments are
float32 products of standardized data, accumulated in float32, and the
``p``-space solve float64 on the host); use :func:`ridge_cv` when all samples
fit one host and the design is ill-conditioned.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from jaxalign._precision import jit as _jit
from jaxalign.ridge._cv import check_cv
from jaxalign.ridge._engine import RidgeCVResult
from jaxalign.ridge._scores import check_scoring
from jaxalign.ridge._solve import TIE_TOLERANCE
from jaxalign.ridge._validation import check_alphas

__all__ = ["AtomMoments", "ridge_cv_from_moments", "ridge_cv_moments", "split_atoms"]


def split_atoms(splits, n: int):
    """Atoms of ``splits`` over ``n`` samples: ``(atom_of_sample, train, val)``.

    ``atom_of_sample`` (n,) int: the atom of every sample; ``train`` and
    ``val`` (n_splits, n_atoms) bool: which atoms each split trains and
    validates on. Samples used by no split (in neither set of any) still get
    an atom (they count in the refit on all samples).
    """
    code = np.zeros((n, len(splits)), np.int8)  # 0 out, 1 train, 2 validation
    for j, (tr, va) in enumerate(splits):
        code[np.asarray(tr), j] = 1
        code[np.asarray(va), j] = 2
    patterns, atom_of_sample = np.unique(code, axis=0, return_inverse=True)
    return atom_of_sample.ravel().astype(np.int32), (patterns == 1).T, (patterns == 2).T


class AtomMoments(NamedTuple):
    """Sums over the samples of each atom ``a`` (:func:`split_atoms`) of a design ``X`` and targets ``Y``
    as given (float64; any scale and offset).

    counts : (n_atoms,) samples ``n_a``
    x_sums : (n_atoms, p) ``X_a^T 1``
    grams : (n_atoms, p, p) ``X_a^T X_a``
    y_sums : (n_atoms, T) ``Y_a^T 1``
    crosses : (n_atoms, p, T) ``X_a^T Y_a``
    y_squares : (n_atoms, T) ``sum(Y_a**2, axis=0)``
    """

    counts: np.ndarray
    x_sums: np.ndarray
    grams: np.ndarray
    y_sums: np.ndarray
    crosses: np.ndarray
    y_squares: np.ndarray


def _local_sums(X, Y, atoms, n_atoms, devices, dtype):
    """This process's per-atom moments on its local devices (rows sharded over them)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    n = X.shape[0]
    devs = list(devices)
    pad = (-n) % len(devs)
    if pad:  # padded rows belong to no atom (index n_atoms: every mask is False there)
        X = np.concatenate([X, np.zeros((pad, X.shape[1]), X.dtype)])
        Y = np.concatenate([Y, np.zeros((pad, Y.shape[1]), Y.dtype)])
        atoms = np.concatenate([atoms, np.full(pad, n_atoms, atoms.dtype)])
    rows = NamedSharding(Mesh(np.asarray(devs), ("samples",)), P("samples"))
    hi = jax.lax.Precision.HIGHEST

    @_jit
    def sums(X, Y, atoms):
        def one(a):  # one atom at a time: memory of one masked copy of the rows, not atoms x rows
            m = (atoms == a).astype(X.dtype)
            Xm, Ym = X * m[:, None], Y * m[:, None]
            return (m.sum(), Xm.sum(0), jnp.dot(Xm.T, X, precision=hi), Ym.sum(0),
                    jnp.dot(Xm.T, Y, precision=hi), (Ym * Y).sum(0))

        return jax.lax.map(one, jnp.arange(n_atoms))

    with jax.enable_x64(dtype == np.float64):
        out = sums(jax.device_put(np.asarray(X, dtype), rows), jax.device_put(np.asarray(Y, dtype), rows),
                   jax.device_put(np.asarray(atoms, np.int32), rows))
        return tuple(np.asarray(o, np.float64) for o in out)


def _across_processes(arrays):
    """Sum each array over the processes of a ``jax.distributed`` run (no-op alone)."""
    import jax

    if jax.process_count() == 1:
        return arrays
    from jax.experimental import multihost_utils

    with jax.enable_x64(True):  # float64 across the wire (without it, jax would send float32)
        return tuple(np.asarray(multihost_utils.process_allgather(np.asarray(a, np.float64)), np.float64).sum(0)
                     for a in arrays)


def _best(mean_scores, alphas):
    """Per-target argmax over penalties; ties within TIE_TOLERANCE go to the larger penalty."""
    with np.errstate(invalid="ignore"):
        best = np.nanmax(np.where(np.isnan(mean_scores), -np.inf, mean_scores), axis=0)
    tol = TIE_TOLERANCE * np.maximum(np.abs(best), 1.0)
    is_best = mean_scores >= (best - tol)[None, :]
    key = np.where(is_best, alphas[:, None], -np.inf)
    return np.argmax(key, axis=0), is_best.any(axis=0)


def ridge_cv_moments(X, Y, alphas=np.logspace(-2, 8, 11), cv=5, *, groups=None, scoring: str = "pearson",
                     fit_intercept: bool = False, n_samples: int | None = None, rows=None,
                     devices=None) -> RidgeCVResult:
    """Ridge CV with per-target penalties from per-fold moments (samples sharded).

    Same answers as :func:`ridge_cv` (to the float64 rounding of a Gram
    matrix), but the samples never have to be in one place: each process
    passes only its own rows.

    Parameters
    ----------
    X : (n_local, p) this process's rows of the design.
    Y : (n_local, T) the same rows of the targets.
    alphas, cv, groups, scoring, fit_intercept : as :func:`ridge_cv`; ``cv``
        splits the *global* sample indices 0..n_samples-1 (an int means that
        many contiguous folds).
    n_samples : total samples over every process (default: ``len(X)``,
        one process holding all rows).
    rows : (n_local,) global indices of this process's rows (default
        ``arange(n_local)``; with several processes, e.g. its contiguous
        chunk ``arange(start, stop)``).
    devices : this process's devices to shard the rows over (default all
        local devices).

    Returns
    -------
    RidgeCVResult (``method="moments"``), identical in every process.

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.ridge import ridge_cv_moments
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 8)); Y = X @ rng.standard_normal((8, 3)) + rng.standard_normal((500, 3))
    >>> res = ridge_cv_moments(X, Y, np.logspace(-2, 4, 7), cv=5)
    >>> res.coef.shape, res.cv_scores.shape
    ((8, 3), (7, 3))
    """
    import jax

    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2:
        raise ValueError(f"X must be (n_samples, n_features), got shape {X.shape}")
    ravel = Y.ndim == 1
    Y = Y[:, None] if ravel else Y
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (n_samples, n_targets) with X's {X.shape[0]} rows, got shape {Y.shape}")
    if X.dtype.kind not in "fiu" or Y.dtype.kind not in "fiu":
        raise ValueError("X and Y must be numeric arrays")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X and Y must be finite (NaN or inf found)")
    alphas = check_alphas(alphas)
    scoring = check_scoring(scoring)
    n_local, p = X.shape
    n = n_local if n_samples is None else int(n_samples)
    rows = np.arange(n_local) if rows is None else np.asarray(rows)
    if rows.shape != (n_local,) or rows.dtype.kind not in "iu" or (n_local and (rows.min() < 0 or rows.max() >= n)):
        raise ValueError(f"rows must be {n_local} integer indices in [0, n_samples={n}), one per row of X")
    multi = jax.process_count() > 1
    if n != n_local and not multi:
        raise ValueError(f"n_samples={n} but X has {n_local} rows and this is the only process "
                         "(n_samples counts the rows of every process of a jax.distributed run)")
    splits = check_cv(cv, n, groups=groups)
    small = min(len(va) for _, va in splits)
    if small < 2 and scoring != "neg_mse":
        raise ValueError(f"cv has a validation fold of {small} sample(s): scoring={scoring!r} is undefined")
    atom_of, train, val = split_atoms(splits, n)
    n_atoms = train.shape[1]
    local_atoms = atom_of[rows]
    devs = jax.local_devices() if devices is None else list(devices)
    cpu = devs[0].platform == "cpu"
    dtype = np.float64 if cpu else np.float32

    # pass 1: global means (with an intercept) and scales: X in units of its root mean square, each target
    # in its own (scale-free: MEG in tesla and BOLD in raw units alike); the penalties follow X's unit
    Xf, Yf = X.astype(np.float64), Y.astype(np.float64)
    total, sx, sxx, sy, syy = _across_processes((np.asarray([n_local], np.float64), Xf.sum(0),
                                                 (Xf * Xf).sum(0), Yf.sum(0), (Yf * Yf).sum(0)))
    if int(total[0]) != n:
        raise ValueError(f"the processes hold {int(total[0])} rows in all, n_samples is {n}")
    mx, my = (sx / n, sy / n) if fit_intercept else (np.zeros(p), np.zeros(Y.shape[1]))
    x_unit = np.sqrt(max(float(np.mean(sxx / n - mx**2)), 0.0)) or 1.0
    y_var = np.maximum(syy / n - my**2, 0.0)
    spread = np.maximum(syy / n - (sy / n) ** 2, 0.0)  # constant targets: no spread at all
    const = spread <= (1e-12 * np.abs(sy / n)) ** 2
    y_unit = np.where(y_var > 0, np.sqrt(y_var), 1.0)
    Xs = (Xf - mx) / x_unit
    Ys = (Yf - my) / y_unit
    sums = _across_processes(_local_sums(Xs, Ys, local_atoms, n_atoms, devs, dtype))
    return _cv_from_sums(sums, splits, train, val, alphas, scoring, fit_intercept, x_unit=x_unit, y_unit=y_unit,
                         mx=mx, my=my, const=const, precision="float64" if cpu else "float32 moments")


def _cv_from_sums(sums, splits, train, val, alphas, scoring, fit_intercept, *, x_unit, y_unit, mx, my, const,
                  precision):
    """The CV, penalty choice and refit from per-atom moments ``sums`` = (n_a, s_a, G_a, t_a, C_a, q_a) of the
    standardized data ``(X - mx) / x_unit``, ``(Y - my) / y_unit``."""
    cnt, sd, Gd, t, Cd, q = sums
    n_atoms = train.shape[1]
    p = Gd.shape[-1]
    alphas_c = alphas / x_unit**2

    A, T = len(alphas), Cd.shape[-1]

    def fit_side(mask):
        """Means and the training eigenbasis of the atoms in ``mask``: (mu, ybar, e, V, V^T C)."""
        n_m, s_m, G_m, t_m, C_m = cnt[mask].sum(), sd[mask].sum(0), Gd[mask].sum(0), t[mask].sum(0), Cd[mask].sum(0)
        mu, ybar = (s_m / n_m, t_m / n_m) if fit_intercept else (np.zeros(p), np.zeros(T))
        if fit_intercept:  # centred on these rows
            G_m, C_m = G_m - n_m * np.outer(mu, mu), C_m - n_m * np.outer(mu, ybar)
        e, V = np.linalg.eigh(G_m)
        return mu, ybar, np.maximum(e, 0.0), V, V.T @ C_m

    fold_scores = np.empty((len(splits), A, T))
    for j in range(len(splits)):  # a handful of folds: p x p work each, vectorized over penalties and targets
        mu, ybar, e, V, Z = fit_side(train[j])  # Z: (p, T)
        n_va = cnt[val[j]].sum()
        s_va, G_va = sd[val[j]].sum(0), Gd[val[j]].sum(0)
        t_va, C_va, q_va = t[val[j]].sum(0), Cd[val[j]].sum(0), q[val[j]].sum(0)
        W = Z[None] / (e[None, :, None] + alphas_c[:, None, None])  # (A, p, T) eigen-coordinates
        Gv, Cv, sv = V.T @ G_va @ V, V.T @ C_va, V.T @ s_va
        fy = np.einsum("pt,apt->at", Cv, W)  # sum f y (f = X_va beta)
        f1 = np.einsum("p,apt->at", sv, W)  # sum f
        ff = np.einsum("apt,pq,aqt->at", W, Gv, W, optimize=True)  # sum f^2
        if fit_intercept:  # f + b, b = ybar - mu . beta
            b = ybar[None] - np.einsum("p,apt->at", V.T @ mu, W)
            ff, fy, f1 = ff + 2 * b * f1 + n_va * b**2, fy + b * t_va[None], f1 + n_va * b
        cov = fy - f1 * t_va[None] / n_va
        var_pred = ff - f1**2 / n_va
        var_true = q_va - t_va**2 / n_va
        sse = q_va[None] - 2 * fy + ff
        with np.errstate(divide="ignore", invalid="ignore"):
            if scoring == "pearson":
                sc = np.where((var_pred > 0) & (var_true[None] > 0),
                              cov / (np.sqrt(np.maximum(var_pred, 0)) * np.sqrt(var_true)[None]), np.nan)
            elif scoring == "r2":
                sc = np.where(var_true[None] > 0, 1.0 - sse / var_true[None], np.nan)
            else:
                sc = -sse / n_va  # in units of each target's scale: chosen scale-free, reported in Y's units
        fold_scores[j] = sc
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN targets: NaN, reported as undefined
        cv_scores = np.nanmean(fold_scores, axis=0)
    best_idx, valid = _best(cv_scores, alphas)
    if scoring == "neg_mse":
        cv_scores = cv_scores * y_unit[None] ** 2
    undefined = ~valid | const

    # refit on every sample with each target's penalty
    mu, ybar, e, V, Z = fit_side(np.ones(n_atoms, bool))
    beta_s = V @ (Z / (e[:, None] + alphas_c[best_idx][None, :]))  # coefficients of the scaled problem
    coef = beta_s / x_unit * y_unit[None, :]  # of X as given, in Y's units
    intercept = my + y_unit * ybar - mx @ coef if fit_intercept else np.zeros(T)
    coef = np.where(undefined[None, :], 0.0, coef)
    cv_out = np.where(const[None, :], np.nan, cv_scores)
    best_alphas = np.where(undefined, np.nan, alphas[np.maximum(best_idx, 0)])
    best_idx = np.where(undefined, -1, best_idx)
    res = RidgeCVResult(best_alphas=best_alphas, best_alpha_index=best_idx, cv_scores=cv_out,
                        coef=coef, intercept=intercept, alphas=alphas, splits=splits, scoring=scoring,
                        method="moments", precision=precision,
                        batch_size=T, constant=const, penalty_sweep="direct")
    return res


def ridge_cv_from_moments(moments: AtomMoments, splits, alphas=np.logspace(-2, 8, 11), *, scoring: str = "pearson",
                          fit_intercept: bool = False) -> RidgeCVResult:
    """:func:`ridge_cv_moments` from moments that were summed elsewhere.

    For designs that are never materialised: ``jaxalign.timing.lagged_ridge_cv``
    forms the moments of a delayed (FIR) design from lagged products of the
    undelayed features. The moments are of the data as given (float64);
    they are standardized here exactly as :func:`ridge_cv_moments`
    standardizes rows (X in units of its root mean square, each target in
    its own; centred with an intercept), by the algebra of sums, so the
    same penalties are chosen.

    Parameters
    ----------
    moments : :class:`AtomMoments`, one entry per atom of ``split_atoms(splits, n)``
    splits : list of ``(train, val)`` index arrays over the ``n`` samples (``ridge.check_cv``)
    alphas, scoring, fit_intercept : as :func:`ridge_cv`

    Returns
    -------
    RidgeCVResult (``method="moments"``); ``coef`` of the design as given.
    """
    alphas = check_alphas(alphas)
    scoring = check_scoring(scoring)
    m = AtomMoments(*(np.asarray(a, np.float64) for a in moments))
    n = int(round(float(m.counts.sum())))
    _, train, val = split_atoms(splits, n)
    n_atoms = train.shape[1]
    p, T = m.grams.shape[-1], m.y_sums.shape[-1]
    shapes = {"counts": (n_atoms,), "x_sums": (n_atoms, p), "grams": (n_atoms, p, p), "y_sums": (n_atoms, T),
              "crosses": (n_atoms, p, T), "y_squares": (n_atoms, T)}
    for name, shape in shapes.items():
        if getattr(m, name).shape != shape:
            raise ValueError(f"moments.{name} has shape {getattr(m, name).shape}, expected {shape} "
                             f"({n_atoms} atoms of the splits over {n} samples, {p} features, {T} targets)")
    if not all(np.isfinite(a).all() for a in m):
        raise ValueError("moments must be finite (NaN or inf found)")
    small = min(len(va) for _, va in splits)
    if small < 2 and scoring != "neg_mse":
        raise ValueError(f"splits have a validation fold of {small} sample(s): scoring={scoring!r} is undefined")
    cnt, sx_a, G, sy_a, C, q = m
    sx, sy, syy = sx_a.sum(0), sy_a.sum(0), q.sum(0)
    sxx = np.einsum("aii->i", G)
    mx, my = (sx / n, sy / n) if fit_intercept else (np.zeros(p), np.zeros(T))
    x_unit = np.sqrt(max(float(np.mean(sxx / n - mx**2)), 0.0)) or 1.0
    y_var = np.maximum(syy / n - my**2, 0.0)
    spread = np.maximum(syy / n - (sy / n) ** 2, 0.0)
    const = spread <= (1e-12 * np.abs(sy / n)) ** 2
    y_unit = np.where(y_var > 0, np.sqrt(y_var), 1.0)
    # the moments of (X - mx) / x_unit and (Y - my) / y_unit, atom by atom
    c = cnt[:, None]
    sd = (sx_a - c * mx) / x_unit
    Gs = (G - sx_a[:, :, None] * mx[None, None, :] - mx[None, :, None] * sx_a[:, None, :]
          + cnt[:, None, None] * np.outer(mx, mx)[None]) / x_unit**2
    t = (sy_a - c * my) / y_unit
    Cs = (C - sx_a[:, :, None] * my[None, None, :] - mx[None, :, None] * sy_a[:, None, :]
          + cnt[:, None, None] * np.outer(mx, my)[None]) / (x_unit * y_unit[None, None, :])
    qs = (q - 2 * my * sy_a + c * my**2) / y_unit**2
    return _cv_from_sums((cnt, sd, Gs, t, Cs, qs), splits, train, val, alphas, scoring, fit_intercept,
                         x_unit=x_unit, y_unit=y_unit, mx=mx, my=my, const=const, precision="float64")
