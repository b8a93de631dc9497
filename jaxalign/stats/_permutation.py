"""Permutation tests for per-target correlations, in pure JAX.

Three tests share one engine:

* :func:`permutation_test` -- is the Pearson r between a prediction and the
  truth larger than chance? Null: the samples of ``y_true`` are shuffled
  (the same shuffle for every target of one draw, as the studies do), either
  sample by sample, block by block (autocorrelated time series) or by
  circular shifts.
* :func:`paired_permutation_test` -- is ``r(y, pred_a) - r(y, pred_b)``
  larger than chance (fine-tuned vs base model, MEG study)? Null: the same
  shuffles of ``y_true``.
* :func:`sign_flip_test` -- is the mean of per-subject (or per-sample)
  differences non-zero? Null: random sign flips (exact enumeration when it
  is small).

p-values
--------
With ``K`` random draws, ``p = (#{null >= observed} + 1) / (K + 1)``
("greater"; "less" counts ``null <= observed``, "two-sided" counts
``|null| >= |observed|``). The +1 counts the observed arrangement itself
and keeps p > 0 and the test exact (valid) for any ``K``. A null value
within ``TIE_TOL`` (1e-5, about 100 float32 epsilons, like the relative
tolerance of ``scipy.stats.permutation_test``; |r| <= 1) of the observed
statistic counts as a tie, i.e. as at least as extreme: float32
rounding must never turn the identity arrangement (or a repeat of it) into a
"win". For sign flips the tolerance is ``TIE_TOL * mean(|d|)``, the scale of
the statistic.

``max_stat=True`` adds ``p_fwe``: each observed statistic is compared to the
distribution of the maximum over targets of the null statistics (minimum
for "less", maximum of absolute values for "two-sided"), which controls the
family-wise error rate over targets (Nichols & Holmes 2002).

How the null is computed (why it is fast)
-----------------------------------------
Each column of ``y_true`` and ``y_pred`` is centred and scaled to unit norm
once (``u``, ``v``); a permuted correlation is then just
``r_k = sum_i u[pi_k(i)] v[i]``, no re-centring (a permutation changes
neither the mean nor the norm). Per scheme:

* ``"permute"``: a compiled loop over the samples (8 per step) accumulates,
  for a chunk of permutations and a batch of targets at once,
  ``acc += sum_i u[pi[:, i]] * v[i]`` (contiguous row gathers; K * n * T
  multiply-adds, the minimum for arbitrary permutations).
* ``"block"``: with blocks of length L the permuted series is a
  concatenation of whole blocks, so the products of every block of ``u``
  with every window of ``v`` where a block can land are tabulated once per
  target batch (``M[a, o] = sum_l u[start_a + l] v[o + l]``, a batched
  matmul; the landing offsets are multiples of L, plus those shifted by the
  partial block when L does not divide n) and each null value is a sum of
  n_blocks table entries: K * n_blocks * T adds instead of K * n * T.
* ``"circular"``: the correlation at every circular shift is one FFT
  cross-correlation per target; the K drawn shifts are read from it.

The null statistics are reduced to counts, sums and per-permutation maxima
chunk by chunk inside the compiled loop (a chunk stays in cache; the (K, T)
null is only materialised on request). Targets are processed in batches
sized from a memory budget (like the ridge engine) and streamed from the
host; permutations are generated on the device, vmapped over keys
``fold_in(key(seed), k)``, so permutation k is the same whatever the batch
sizes. :func:`permutation_indices` and :func:`sign_flip_signs` return the
exact arrangements used, for checking against any reference.

Reproducibility: the same seed gives the same arrangements, hence the same
p-values, whatever the batch sizes, chunking, number of devices or platform,
for a given JAX version (JAX's default threefry PRNG; ``jax.random`` may
change between JAX versions: ``tests/test_stats_permutation.py`` pins the
arrangements of the version in use and says when they move). The data's
scale does not matter either (columns are standardized in float64).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from jaxalign.stats._perm_arrangements import (  # noqa: F401  (public, and re-exported)
    _exact_signs,
    _signs,
    block_layout,
    permutation_indices,
    sign_flip_signs,
)
from jaxalign.stats._perm_checks import (  # noqa: F401
    ALTERNATIVES,
    SCHEMES,
    TIE_TOL,
    _check_choice,
    _check_int,
    _check_pair,
    _check_scheme,
    _check_seed,
    _targets,
    _warn_degenerate,
)
from jaxalign.stats._perm_driver import (  # noqa: F401  (tests and benchmarks read these)
    _ACCEL_CHUNK_BYTES,
    _ACCEL_MAX_BATCH,
    _CHUNK_BYTES,
    _MAX_BATCH,
    _Plan,
    _limits,
    _run,
)
from jaxalign.stats._perm_kernels import _corr_batch, _side, _sign_batch
from jaxalign.stats._tail import normal_tail_p

__all__ = [
    "ALTERNATIVES",
    "SCHEMES",
    "TIE_TOL",
    "PermutationResult",
    "block_layout",
    "paired_permutation_test",
    "permutation_indices",
    "permutation_test",
    "sign_flip_signs",
    "sign_flip_test",
]


@dataclass
class PermutationResult:
    """Outcome of a permutation test (numpy arrays; ``()``-shaped for 1-D input).

    Attributes
    ----------
    statistic : (T,) observed statistic: r (``permutation_test``),
        r_a - r_b (``paired_permutation_test``) or the mean
        (``sign_flip_test``); NaN for degenerate targets
    p : (T,) p-value, NaN for degenerate targets
    p_fwe : (T,) max-statistic family-wise corrected p (``max_stat=True``)
    r, r_a, r_b : observed correlations (``r`` for ``permutation_test``,
        ``r_a``/``r_b`` for ``paired_permutation_test``)
    null_mean, null_std : (T,) mean and standard deviation of the null
    null : (K, T) the null statistics (``return_null=True``)
    null_extreme : (K,) max over targets of the null (min for "less", max of
        |null| for "two-sided"), the distribution behind ``p_fwe``
    constant : (T,) bool, targets without a defined statistic
    n_permutations : number of null draws (2**n for exact sign flips)
    exact : True when the null was enumerated exactly (sign flips only); then
        ``p = #{null at least as extreme} / n_permutations`` (identity included)
    tail : "normal" when p-values the counts could not resolve (fewer than 10
        null values at least as extreme) come from a Gaussian with the null's
        mean and standard deviation (``jaxalign.stats._tail``), else None

    Leading batch axes of the inputs (``(..., n, T)``: layers, windows) lead
    every per-target array (``(..., T)``; the null is ``(K, ..., T)``).
    """

    statistic: np.ndarray
    p: np.ndarray
    n_permutations: int
    alternative: str
    scheme: str
    block_size: int | None
    seed: int
    p_fwe: np.ndarray | None = None
    r: np.ndarray | None = None
    r_a: np.ndarray | None = None
    r_b: np.ndarray | None = None
    null_mean: np.ndarray | None = field(default=None, repr=False)
    null_std: np.ndarray | None = field(default=None, repr=False)
    null: np.ndarray | None = field(default=None, repr=False)
    null_extreme: np.ndarray | None = field(default=None, repr=False)
    constant: np.ndarray | None = field(default=None, repr=False)
    exact: bool = False
    batch_size: int = 0
    tail: str | None = None

    def __iter__(self):
        """Unpacks as ``(statistic, p)``: ``r, p = permutation_test(y, pred)``."""
        return iter((self.statistic, self.p))

    def __getitem__(self, index):
        return (self.statistic, self.p)[index]


def _p_fwe(obs, ext, alternative, tol, exact):
    """Max-statistic p: how many permutations' extreme beats each observed value.

    ``ext`` is the per-permutation maximum of the oriented null (see
    :func:`_side`).
    """
    K = len(ext)
    sign, two = _side(alternative)
    obs = obs.astype(np.float64)
    o = np.abs(obs) if two else float(sign) * obs
    c = K - np.searchsorted(np.sort(ext.astype(np.float64)), o - tol, side="left")
    return c / K if exact else (c + 1) / (K + 1)


def _extreme(ext, alternative):
    """Oriented maxima back to the caller's scale: min of the null for "less"."""
    return None if ext is None else (-ext if alternative == "less" else ext)


def _finish(ravel, const, **arrays):
    out = {}
    for k, a in arrays.items():
        if a is None:
            out[k] = None
            continue
        a = np.asarray(a)
        if a.ndim >= 1 and a.shape[-1] == const.size and k != "null_extreme":
            a = a.astype(np.float64) if k in ("p", "p_fwe") else a
            if k not in ("constant",):
                a = np.where(const, np.nan, a)
        if ravel and k != "null_extreme":
            a = a[..., 0]
        out[k] = a
    return out


TAILS = (None, "normal")


def _tail_p(p, count, obs, mean, std, alternative, K, tail):
    """Replace the p-values the counts cannot resolve by the Gaussian tail's
    (see ``_tail``). ``tail=None``: unchanged."""
    if tail is None:
        return p
    return np.where(np.isnan(p), np.nan, normal_tail_p(obs, mean, std, count, K, alternative))


# FDR level for the floor check (the default of fdr_correction).
_FLOOR_Q = 0.05
_TAIL_REMEDY = "Use tail='normal' (p below the floor from a Gaussian fit of each null's tail) or"


def _warn_floor(p, K, tail, exact=False, stacklevel=4, remedy=None):
    """Warn when the permutation floor can hide every discovery.

    With ``K`` draws the smallest p is ``1 / (K + 1)``; BH-FDR at 0.05 over
    ``m`` targets rejects nothing unless at least ``m / (0.05 (K + 1))`` of
    them reach it. Warned when some targets sit at the floor but fewer than
    that, so a correction would silently find nothing; ``tail="normal"`` (p
    below the floor from the null's Gaussian tail) or more permutations lift it.
    """
    if tail is not None or exact:
        return
    p = np.asarray(p, np.float64)
    m = int(np.sum(np.isfinite(p)))
    floor = 1.0 / (K + 1)
    at_floor = int(np.sum(p <= floor * (1 + 1e-9)))
    need = int(np.ceil(m * floor / _FLOOR_Q - 1e-9))
    if 0 < at_floor < need:
        warnings.warn(
            f"{at_floor} of {m} targets reached the smallest p possible with "
            f"n_permutations={K} (1/{K + 1}); BH-FDR at {_FLOOR_Q} over {m} targets can "
            f"only reject if at least {need} do, so it may find nothing whatever the "
            f"effect size. {remedy or _TAIL_REMEDY} "
            f"n_permutations >= {int(np.ceil(m / _FLOOR_Q))}.",
            UserWarning, stacklevel=stacklevel,
        )


def _flatten_lead(arrays, names):
    """Arrays ``(..., n, T)`` with common leading batch axes (a ``(n, T)``
    truth broadcasts) -> ``(n, B*T)`` columns, and the leading shape.

    Leading axes (layers, MEG windows...) are just more targets: every one
    gets the same arrangements, so max-statistic p-values cover them all."""
    lead = ()
    for a, name in zip(arrays, names):
        if a is not None and np.ndim(a) >= 3:
            try:
                lead = np.broadcast_shapes(lead, np.shape(a)[:-2])
            except ValueError:
                raise ValueError(f"{name} of shape {np.shape(a)} does not broadcast to the "
                                 f"leading batch axes {lead} of the other inputs") from None
    if not lead:
        return arrays, lead
    out = []
    for a, name in zip(arrays, names):
        if a is None:
            out.append(None)
            continue
        a = np.asarray(a)
        if a.ndim < 2:
            raise ValueError(f"{name} must have shape (..., n_samples, n_targets) when other "
                             f"inputs have leading batch axes {lead}; got {a.shape}")
        try:
            a = np.broadcast_to(a, lead + a.shape[-2:])
        except ValueError:
            raise ValueError(f"{name} of shape {a.shape} does not broadcast to the leading "
                             f"batch axes {lead}") from None
        n, T = a.shape[-2:]
        out.append(np.moveaxis(a.reshape((-1, n, T)), 0, 1).reshape(n, -1))
    return out, lead


def _unflatten_lead(res: PermutationResult, lead, T):
    """Per-target arrays ``(B*T,)`` -> ``lead + (T,)``; the null ``(K, B*T)`` ->
    ``(K,) + lead + (T,)``."""
    if not lead:
        return res
    for name in ("statistic", "p", "p_fwe", "r", "r_a", "r_b", "null_mean", "null_std",
                 "constant"):
        a = getattr(res, name)
        if a is not None:
            setattr(res, name, np.asarray(a).reshape(lead + (T,)))
    if res.null is not None:
        res.null = res.null.reshape((res.null.shape[0],) + lead + (T,))
    return res


def _correlation_test(y_true, preds, names, n_permutations, block_size, scheme,
                      alternative, seed, max_stat, batch_size, return_null, memory_budget,
                      tail=None):
    _check_choice(tail, "tail", TAILS)
    arrays, lead = _flatten_lead([y_true, *preds], ["y_true", *names])
    if lead:
        T_last = np.shape(preds[0])[-1]
        y_true, preds = arrays[0], arrays[1:]
    res = _correlation_test_2d(y_true, preds, names, n_permutations, block_size, scheme,
                               alternative, seed, max_stat, batch_size, return_null,
                               memory_budget, tail)
    return _unflatten_lead(res, lead, T_last) if lead else res


def _correlation_test_2d(y_true, preds, names, n_permutations, block_size, scheme,
                         alternative, seed, max_stat, batch_size, return_null, memory_budget,
                         tail):
    _check_choice(alternative, "alternative", ALTERNATIVES)
    K = _check_int(n_permutations, "n_permutations", 1)
    seed = _check_seed(seed)
    y_true, preds, ravel = _check_pair(y_true, preds, names)
    n, T = y_true.shape
    scheme, block_size = _check_scheme(n, scheme, block_size)
    plan = _Plan(n, K, scheme, block_size, seed)
    paired = len(preds) == 2
    keep = return_null

    def fn(batch, arr, mask):
        yt, ya, yb = batch
        return _corr_batch(yt, ya, ya if yb is None else yb, arr, mask, plan.src, plan.dst,
                           _side(alternative), kind=plan.kind,
                           return_null=keep, paired=paired)

    columns = [y_true, preds[0], preds[1] if paired else None]
    obs, count, mean, std, null, ext, Tb = _run(
        fn, columns, ["y_true", *names], T, K, lambda kc: plan.bytes_per_target(kc, keep),
        plan.kind, plan.arrangements, max_stat, keep,
        memory_budget, batch_size, standardize=True)
    const = ~obs["valid"]
    _warn_degenerate(const, "zero variance", ["y_true", *names], stacklevel=5)
    p = np.where(const, np.nan, (count + 1) / (K + 1))
    p = _tail_p(p, count, obs["obs"], mean, std, alternative, K, tail)
    _warn_floor(p, K, tail, stacklevel=5)
    p_fwe = _p_fwe(obs["obs"], ext, alternative, TIE_TOL, False) if max_stat else None
    res = _finish(ravel, const, statistic=obs["obs"], p=p, p_fwe=p_fwe, r_a=obs.get("r_a"),
                  r_b=obs.get("r_b"), null_mean=mean, null_std=std, null=null,
                  null_extreme=_extreme(ext, alternative), constant=const)
    return PermutationResult(
        n_permutations=K, alternative=alternative, scheme=scheme, block_size=block_size,
        seed=seed, batch_size=Tb, r=None if paired else res["statistic"], tail=tail, **res,
    )


def permutation_test(
    y_true,
    y_pred,
    n_permutations: int = 1000,
    block_size: int | None = None,
    scheme: str | None = None,
    alternative: str = "greater",
    seed: int = 0,
    max_stat: bool = False,
    batch_size: int | None = None,
    *,
    return_null: bool = False,
    memory_budget=None,
    tail: str | None = None,
) -> PermutationResult:
    """Permutation test of the Pearson r between truth and prediction, per target.

    Parameters
    ----------
    y_true, y_pred : (n_samples, n_targets) or (n_samples,), or with leading
        batch axes ``(..., n_samples, n_targets)`` (layers, MEG windows; a 2-D
        ``y_true`` broadcasts against a batched ``y_pred``): every leading
        index is tested with the same arrangements. Any finite scale (each
        column is standardized in float64 first). NaN or inf raises
        ValueError; a target that is constant in either array warns and gets
        NaN r and p. Held-out predictions of SEVERAL fold models (nested CV)
        must not be tested this way: their fold scores are correlated under
        the null and this test is anti-conservative there (9-10% of p < 0.05
        measured); use :func:`cv_permutation_test`, which refits.
    n_permutations : K >= 1 random draws of the null.
    block_size : block length (samples) for ``scheme="block"``; minimum
        circular shift for ``scheme="circular"``.
    scheme : None | "permute" | "block" | "circular"
        Default None: "block" when ``block_size`` is given, else "permute".
        How ``y_true`` is rearranged (the same arrangement for every target
        of a draw); see :func:`permutation_indices`. Autocorrelated series
        (fMRI, time courses) need "block" or "circular": sample permutation
        is anti-conservative there.
    alternative : "greater" | "less" | "two-sided"
    seed : int; the same seed gives the same arrangements and p-values.
    max_stat : also return ``p_fwe``, family-wise corrected over targets by the
        max statistic.
    batch_size : targets per batch (default: sized from ``memory_budget``).
    return_null : keep the (K, T) null statistics (host memory 4 K T bytes).
    memory_budget : bytes or "4GiB" for one batch on the device (default:
        as the ridge engine, 25% of free RAM up to 8 GiB on CPU).
    tail : None | "normal"
        ``"normal"``: where fewer than 10 null values are at least as
        extreme, p comes from a Gaussian with the null's own mean and
        standard deviation (``jaxalign.stats._tail``: conservative far out
        for correlations, within 0.7-1.7x of 200,000 exact permutations
        at 1e-3..1e-4), so p can go below the floor ``1 / (K + 1)``.
        Without it a warning says when the floor can hide every discovery of
        an FDR correction (too few permutations for the number of targets).

    Returns
    -------
    PermutationResult with ``r`` (= ``statistic``), ``p``, ``p_fwe``,
    ``null_mean``, ``null_std``, optionally ``null`` and ``null_extreme``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((200, 3))
    >>> res = permutation_test(y, y + rng.standard_normal((200, 3)), n_permutations=99)
    >>> res.p.tolist()
    [0.01, 0.01, 0.01]
    """
    return _correlation_test(y_true, [y_pred], ["y_pred"], n_permutations, block_size,
                             scheme, alternative, seed, max_stat, batch_size, return_null,
                             memory_budget, tail)


def paired_permutation_test(
    y_true,
    pred_a,
    pred_b,
    n_permutations: int = 1000,
    block_size: int | None = None,
    scheme: str | None = None,
    alternative: str = "greater",
    seed: int = 0,
    max_stat: bool = False,
    batch_size: int | None = None,
    *,
    return_null: bool = False,
    memory_budget=None,
    tail: str | None = None,
) -> PermutationResult:
    """Is ``r(y_true, pred_a) - r(y_true, pred_b)`` larger than chance, per target?

    The null permutes ``y_true`` across samples (the MEG fine-tuned vs base
    analysis: the true response permuted across words), the SAME arrangement
    for both predictions, and recomputes the difference of correlations.
    With unit-norm centred columns ``u`` (truth), ``a``, ``b`` (predictions)
    the statistic is ``u . (a - b)``, so the null costs what one
    :func:`permutation_test` costs. "better" is ``alternative="greater"``,
    "worse" ``alternative="less"``; p as in :func:`permutation_test`. (The
    study's "worse" p was ``1 - p_better = #{null < observed} / (K + 1)``,
    which can be 0; ``alternative="less"`` is the valid version,
    ``(#{null <= observed} + 1) / (K + 1)``.) Other
    arguments as in :func:`permutation_test`; the result carries ``r_a``,
    ``r_b`` and ``statistic = r_a - r_b``.
    """
    return _correlation_test(y_true, [pred_a, pred_b], ["pred_a", "pred_b"], n_permutations,
                             block_size, scheme, alternative, seed, max_stat, batch_size,
                             return_null, memory_budget, tail)


def sign_flip_test(
    diffs,
    n_permutations: int = 10000,
    alternative: str = "greater",
    seed: int = 0,
    max_stat: bool = False,
    batch_size: int | None = None,
    *,
    return_null: bool = False,
    memory_budget=None,
) -> PermutationResult:
    """One-sample sign-flip permutation test of the mean, per target.

    Parameters
    ----------
    diffs : (n, n_targets) or (n,), or ``(..., n, n_targets)`` with leading
        batch axes (layers, windows; each leading index is more targets)
        Paired differences (e.g. per-subject score of model A minus model B).
        NaN raises; an all-zero target warns and gets NaN.
    n_permutations : random sign patterns. When ``2**n <= n_permutations``
        all ``2**n`` patterns are enumerated instead (``exact=True``,
        ``n_permutations = 2**n``, ``p = #{null at least as extreme} / 2**n``
        with the identity among them); otherwise ``p = (#hits + 1) / (K + 1)``.
        See :func:`sign_flip_signs`.
    alternative, seed, max_stat, batch_size, return_null, memory_budget :
        as in :func:`permutation_test`. (No Gaussian tail here: a mean of
        sign-flipped values over a few subjects can have heavier than normal
        tails; the null is one GEMM per chunk, so use more permutations.)

    The statistic is the mean; the null mean of ``s * d`` for random signs
    ``s`` is one GEMM, ``signs @ diffs / n``, per batch.
    """
    _check_choice(alternative, "alternative", ALTERNATIVES)
    K_req = _check_int(n_permutations, "n_permutations", 1)
    seed = _check_seed(seed)
    (diffs,), lead = _flatten_lead([diffs], ["diffs"])
    T_last = np.shape(diffs)[-1]
    if lead:
        T_last = T_last // int(np.prod(lead))
    d = _targets(diffs, "diffs")
    ravel = d.ndim == 1
    if ravel:
        d = d[:, None]
    n, T = d.shape
    if n < 1 or T < 1:
        raise ValueError(f"diffs has an empty axis: shape {d.shape}")
    exact = _exact_signs(n, K_req)
    K = 2**n if exact else K_req
    # one scale for all targets (the max statistic compares targets): the
    # root mean square in float64, so float32 neither under- nor overflows
    with np.errstate(over="ignore", invalid="ignore"):
        ms = float(np.mean(np.square(d, dtype=np.float64)))
    unit = math.sqrt(ms) if ms > 0 and math.isfinite(ms) else 1.0
    d_unit = d / unit if unit != 1.0 else d

    keep = return_null

    def fn(batch, signs, mask):
        return _sign_batch(batch[0], signs, mask, _side(alternative), return_null=keep)

    per_target = lambda kc: int(4 * 1.5 * (4 * n + 4 * min(kc, 1024) + (kc if keep else 0)))  # noqa: E731
    obs, count, mean, std, null, ext, Tb = _run(
        fn, [d_unit], ["diffs"], T, K, per_target, "signs",
        lambda a, b: _signs(n, K_req, seed, a, b), max_stat, keep,
        memory_budget, batch_size)
    const = ~obs["valid"]
    _warn_degenerate(const, "all-zero values", ["diffs"], stacklevel=3)
    p = count / K if exact else (count + 1) / (K + 1)
    p = np.where(const, np.nan, p)
    _warn_floor(p, K, None, exact=exact, stacklevel=3, remedy="Use")
    p_fwe = None
    if max_stat:
        tol = TIE_TOL * np.abs(d_unit).mean(axis=0)
        p_fwe = _p_fwe(obs["obs"], ext, alternative, tol, exact)
    back = (lambda a: None if a is None else np.asarray(a, np.float64) * unit)  # noqa: E731
    res = _finish(ravel, const, statistic=back(obs["obs"]), p=p, p_fwe=p_fwe,
                  null_mean=back(mean), null_std=back(std), null=back(null),
                  null_extreme=back(_extreme(ext, alternative)), constant=const)
    out = PermutationResult(
        n_permutations=K, alternative=alternative, scheme="sign-flip", block_size=None,
        seed=seed, exact=exact, batch_size=Tb, **res,
    )
    return _unflatten_lead(out, lead, T_last)
