r"""Paired permutation test of two cross-validated models: per-fold correlations, permutations within folds.

Two encoding models evaluated by the same outer CV (``ridge.nested_cv``)
give held-out predictions ``a`` and ``b`` of ``y``, fold by fold. The
statistic is the mean over the ``F`` outer test folds of the difference of
within-fold Pearson correlations,

.. math::

    D = \frac{1}{F} \sum_{f=1}^{F} \bigl[r(y_f, a_f) - r(y_f, b_f)\bigr],

and the null permutes ``y`` within each test fold (the same arrangement for
both predictions), independently across folds: draw ``k`` of the null is
the mean over folds of fold ``f``'s ``k``-th paired null value
(:func:`jaxalign.stats.paired_permutation_test` run on each fold's rows,
its own seed per fold; any scheme it offers). ``p = (\#\{null \ge D\} +
1) / (K + 1)`` as there.

Why not the correlation of the concatenated predictions (the MEG study's
``r(y, pred_ft) - r(y, pred_base)`` over all words)? Each fold's model
chooses its own penalty per target, and the two models choose differently
(about half of the fold x target penalties differ between two equally good
feature sets, measured). A penalty rescales that fold's predictions, and
the correlation of a concatenation depends on the folds' relative scales,
so the concatenated difference moves with how the two models' penalties
happen to vary across folds: a real difference between the two sets of
predictions, with a component along the signal, which permuting ``y``
(that destroys both correlations) does not reproduce. Measured on
simulated MEG where both feature sets are equally good in expectation
(400 words, 5 outer folds, 612 targets): the concatenated difference
varies 3x more across targets than its permutation null, and 27% of
targets reach two-sided p < 0.05; with one fixed penalty it is 1.3%. The
within-fold correlations are invariant to a fold's scale, and the
fold-mean statistic with within-fold permutations gives 1.6%
(``tests/test_analysis_compare.py`` keeps the check).
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxalign._core.seeds import stream_seed
from jaxalign.stats._perm_checks import ALTERNATIVES, TIE_TOL, _check_choice, _check_int, _check_seed
from jaxalign.stats._permutation import PermutationResult, _warn_floor, paired_permutation_test
from jaxalign.stats._tail import normal_tail_p

__all__ = ["fold_paired_permutation_test", "folds_from_splits"]


def folds_from_splits(folds, n_samples: int) -> np.ndarray:
    """Fold id per sample, ``(n_samples,)`` int, from ids or from ``(train, test)`` splits.

    ``folds``: an array of ``n_samples`` fold ids (any labels), or a list of ``(train, test)`` index
    pairs (``NestedCVResult.outer_splits``) whose test sets partition the samples.

    >>> folds_from_splits([([2, 3], [0, 1]), ([0, 1], [2, 3])], 4).tolist()
    [0, 0, 1, 1]
    """
    if isinstance(folds, np.ndarray) and folds.ndim == 1 and folds.dtype != object:
        ids = folds
    elif isinstance(folds, (list, tuple)) and folds and all(
            isinstance(s, (list, tuple)) and len(s) == 2 for s in folds):
        ids = np.full(n_samples, -1, np.int64)
        for k, (_, test) in enumerate(folds):
            test = np.asarray(test)
            if test.dtype.kind not in "iu" or test.ndim != 1:
                raise ValueError(f"folds: split {k}'s test indices must be a 1-D integer array")
            if test.size and (test.min() < 0 or test.max() >= n_samples):
                raise ValueError(f"folds: split {k} tests samples outside 0..{n_samples - 1}")
            if (ids[test] >= 0).any():
                raise ValueError(f"folds: split {k} tests samples another split already tests; the test sets "
                                 "must partition the samples (every sample predicted once)")
            ids[test] = k
        if (ids < 0).any():
            raise ValueError(f"folds: {int((ids < 0).sum())} samples are in no test set; the test sets must "
                             "partition the samples (every sample predicted once)")
        return ids
    else:
        ids = np.asarray(folds)
        if ids.ndim != 1:
            raise ValueError("folds must be one fold id per sample or a list of (train, test) splits "
                             f"(NestedCVResult.outer_splits), got shape {ids.shape}")
    if ids.shape != (n_samples,):
        raise ValueError(f"folds has {ids.shape[0]} fold ids for {n_samples} samples")
    _, inv = np.unique(ids, return_inverse=True)
    return inv.astype(np.int64)


def fold_paired_permutation_test(
    y_true,
    pred_a,
    pred_b,
    folds,
    n_permutations: int = 1000,
    block_size: int | None = None,
    scheme: str | None = None,
    alternative: str = "greater",
    seed: int = 0,
    *,
    return_null: bool = False,
    memory_budget=None,
    tail: str | None = None,
) -> PermutationResult:
    """Is the fold-mean ``r(y, pred_a) - r(y, pred_b)`` larger than chance? Permutations within folds (module doc).

    Parameters
    ----------
    y_true, pred_a, pred_b : (n, T), or ``(..., n, T)`` with leading batch axes (windows), as in
        :func:`paired_permutation_test`.
    folds : fold id per sample (n,), or the outer ``(train, test)`` splits (``NestedCVResult.outer_splits``).
        Each fold needs at least 3 samples.
    n_permutations, block_size, scheme, alternative, seed, return_null, memory_budget, tail :
        as in :func:`paired_permutation_test` (``block_size`` and ``scheme`` apply within each fold).

    Returns
    -------
    PermutationResult: ``statistic`` = fold-mean difference, ``r_a``, ``r_b`` = fold-mean r, ``p``,
    ``null_mean``, ``null_std``, ``null`` (``return_null``), ``constant``.
    """
    _check_choice(alternative, "alternative", ALTERNATIVES)
    _check_choice(tail, "tail", (None, "normal"))
    K = _check_int(n_permutations, "n_permutations", 1)
    seed = _check_seed(seed)
    n = np.shape(y_true)[-2] if np.ndim(y_true) >= 2 else np.shape(y_true)[0]
    ids = folds_from_splits(folds, n)
    F = int(ids.max()) + 1
    sizes = np.bincount(ids, minlength=F)
    if sizes.min() < 3:
        raise ValueError(f"folds: every fold needs at least 3 samples for a correlation, got sizes {sizes.tolist()}")
    total = obs = r_a = r_b = None
    constant = None
    for f in range(F):
        rows = np.flatnonzero(ids == f)
        take = (lambda a: np.take(np.asarray(a), rows, axis=-2 if np.ndim(a) >= 2 else 0))  # noqa: E731
        with warnings.catch_warnings():
            # a fold's own permutation floor is not the test's (checked on the combined p below)
            warnings.filterwarnings("ignore", message=".*smallest p possible", category=UserWarning)
            res = paired_permutation_test(take(y_true), take(pred_a), take(pred_b), n_permutations=K,
                                          block_size=block_size, scheme=scheme, alternative=alternative,
                                          seed=stream_seed(seed, "fold", str(f)), return_null=True,
                                          memory_budget=memory_budget)
        null = res.null.astype(np.float64)
        if total is None:
            total, obs = null, res.statistic.astype(np.float64)
            r_a, r_b = res.r_a.astype(np.float64), res.r_b.astype(np.float64)
            constant = res.constant.copy()
        else:
            total += null
            obs += res.statistic
            r_a += res.r_a
            r_b += res.r_b
            constant |= res.constant
    total /= F
    obs, r_a, r_b = obs / F, r_a / F, r_b / F
    with np.errstate(invalid="ignore"):
        if alternative == "greater":
            count = (total >= obs - TIE_TOL).sum(axis=0)
        elif alternative == "less":
            count = (total <= obs + TIE_TOL).sum(axis=0)
        else:
            count = (np.abs(total) >= np.abs(obs) - TIE_TOL).sum(axis=0)
    mean, std = total.mean(axis=0), total.std(axis=0)
    p = np.where(constant, np.nan, (count + 1.0) / (K + 1.0))
    if tail == "normal":
        p = np.where(constant, np.nan, normal_tail_p(obs, mean, std, count, K, alternative))
    _warn_floor(p, K, tail, stacklevel=3)
    nan = lambda a: np.where(constant, np.nan, a)  # noqa: E731
    return PermutationResult(
        statistic=nan(obs), p=p, n_permutations=K, alternative=alternative, scheme=res.scheme,
        block_size=res.block_size, seed=seed, r_a=nan(r_a), r_b=nan(r_b), null_mean=nan(mean),
        null_std=nan(std), null=total if return_null else None, constant=constant, tail=tail,
    )
