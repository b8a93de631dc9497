"""Cross-validation splitters for brain-encoding models (pure numpy).

Every splitter follows the scikit-learn protocol: ``split(X, y=None,
groups=None)`` yields ``(train, test)`` pairs of sorted ``int64`` index arrays
and ``get_n_splits(X=None, y=None, groups=None)`` says how many. ``X`` may be
the number of samples (an ``int``) or any array-like with ``shape[0]`` or
``len()``. The splitters can therefore be passed to scikit-learn
(``cross_val_score(..., cv=ContiguousKFold(5))``) and scikit-learn splitters
can be passed to :func:`check_cv`.

Splitters
---------
ContiguousKFold
    K contiguous blocks in sample order, with an optional ``gap`` of samples
    removed from training on each side of the test block (time series such
    as fMRI, where neighbouring samples are autocorrelated).
LeaveOneGroupOut
    One fold per group (run, story, session), optional ``gap``.
GroupKFold
    Whole groups assigned to K contiguous folds balanced by sample count,
    optional ``gap``.
KFold
    scikit-learn's ``KFold``; with ``shuffle=True`` a seeded numpy
    ``Generator`` permutes the samples.
ShuffleSplit
    Repeated random train/test partitions.

Helpers
-------
check_cv
    Turn an ``int``, a splitter or an explicit list of ``(train, test)``
    pairs into a validated list of index arrays.
is_partition
    Whether every sample is in exactly one test set.

About ``gap``: a training sample is dropped when it lies within ``gap``
positions (in index order) of any test sample, i.e. up to ``gap`` samples are
removed on each side of every contiguous run of test samples. Nothing is
dropped where the neighbour is the start/end of the data or another test
sample.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator

import numpy as np

from jaxalign._core.validation import check_int

__all__ = [
    "ContiguousKFold",
    "GroupKFold",
    "KFold",
    "LeaveOneGroupOut",
    "ShuffleSplit",
    "check_cv",
    "is_partition",
]

Split = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _num_samples(X) -> int:
    """Number of samples in ``X``: an int, or an array-like's first axis."""
    if X is None:
        raise ValueError(
            "X is required to know the number of samples: pass the data, or "
            "the number of samples as an int."
        )
    if isinstance(X, bool):
        raise ValueError(f"X must be an int n_samples or an array-like, got {X!r}.")
    if isinstance(X, numbers.Integral):
        n = int(X)
        if n < 0:
            raise ValueError(f"n_samples must be >= 0, got {n}.")
        return n
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        raise ValueError(
            f"Cannot tell the number of samples of {type(X).__name__!r}: pass "
            "an int n_samples or an array-like with shape[0] or len()."
        ) from None


def _as_index(idx: np.ndarray) -> np.ndarray:
    return np.asarray(idx, dtype=np.int64)


def _train_from_test_mask(test_mask: np.ndarray, gap: int) -> np.ndarray:
    """Indices not in the test set and farther than ``gap`` from every test index."""
    if gap == 0:
        return _as_index(np.flatnonzero(~test_mask))
    n = test_mask.shape[0]
    # c[i] = number of test samples among the first i samples.
    c = np.concatenate(([0], np.cumsum(test_mask, dtype=np.int64)))
    i = np.arange(n)
    lo = np.maximum(i - gap, 0)
    hi = np.minimum(i + gap + 1, n)
    near_test = (c[hi] - c[lo]) > 0  # a test sample within [i-gap, i+gap]
    return _as_index(np.flatnonzero(~near_test))


def _ordered_groups(groups, n_samples: int, who: str):
    """Validate ``groups``; return (codes, n_groups, labels).

    ``codes[i]`` is the rank of sample ``i``'s group in order of first
    appearance; ``labels`` are the unique group values in that order.
    """
    if groups is None:
        raise ValueError(
            f"{who} needs group labels: pass groups=... to the constructor or "
            "to split()/get_n_splits()."
        )
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(
            f"groups must be a 1-D array of one label per sample, got shape "
            f"{groups.shape}."
        )
    if groups.shape[0] != n_samples:
        raise ValueError(
            f"groups has {groups.shape[0]} labels but X has {n_samples} samples: "
            "give exactly one group label per sample."
        )
    labels, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique labels by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codes = rank[np.asarray(inverse).reshape(-1)]
    return codes, int(labels.size), labels[order]


def _groups_repr(groups) -> str:
    if groups is None:
        return "None"
    n = len(groups)
    return f"<{n} labels>"


# --------------------------------------------------------------------------
# splitters
# --------------------------------------------------------------------------


class _BaseSplitter:
    """Shared scikit-learn style plumbing."""

    def split(self, X, y=None, groups=None) -> Iterator[Split]:  # pragma: no cover
        raise NotImplementedError

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits


class ContiguousKFold(_BaseSplitter):
    """K-fold cross-validation over contiguous blocks, with an optional gap.

    The samples are cut, in order, into ``n_splits`` contiguous blocks whose
    sizes follow :func:`numpy.array_split` (the first ``n_samples % n_splits``
    blocks have one more sample), exactly as scikit-learn's ``KFold`` without
    shuffling. Fold ``k`` tests on block ``k`` and trains on every other
    sample except the ``gap`` samples on *each* side of the block, which are
    dropped so that the autocorrelation of time series (e.g. the slow
    hemodynamic response of fMRI) does not leak from test into train.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    gap : int, default=0
        Number of samples dropped from training on each side of the test
        block (fewer at the start/end of the data).

    Raises
    ------
    ValueError
        On ``n_splits < 2``, ``gap < 0``, fewer samples than folds, or a fold
        whose training set would be empty after removing the gap (raised by
        :meth:`split` before the first fold is yielded).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.ridge._cv import ContiguousKFold
    >>> cv = ContiguousKFold(n_splits=3, gap=1)
    >>> for train, test in cv.split(np.zeros((10, 2))):
    ...     print(train, test)
    [5 6 7 8 9] [0 1 2 3]
    [0 1 2 8 9] [4 5 6]
    [0 1 2 3 4 5] [7 8 9]
    """

    def __init__(self, n_splits: int = 5, gap: int = 0):
        self.n_splits = check_int(n_splits, "n_splits", 2)
        self.gap = check_int(gap, "gap", 0)

    def __repr__(self) -> str:
        return f"ContiguousKFold(n_splits={self.n_splits}, gap={self.gap})"

    def _bounds(self, n: int) -> np.ndarray:
        k = self.n_splits
        if n < k:
            raise ValueError(
                f"ContiguousKFold: fewer samples ({n}) than folds ({k}); use "
                f"n_splits <= {n} or more samples."
            )
        sizes = np.full(k, n // k, dtype=np.int64)
        sizes[: n % k] += 1
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        # Check every fold's training set before yielding anything.
        for fold in range(k):
            start, stop = int(bounds[fold]), int(bounds[fold + 1])
            n_train = max(start - self.gap, 0) + max(n - stop - self.gap, 0)
            if n_train == 0:
                raise ValueError(
                    f"ContiguousKFold: fold {fold} (test samples {start}..{stop - 1} "
                    f"of {n}) has no training samples left after dropping "
                    f"gap={self.gap} samples on each side; use a smaller gap, "
                    "more folds or more samples."
                )
        return bounds

    def split(self, X, y=None, groups=None) -> Iterator[Split]:
        """Yield ``(train, test)`` index arrays, one pair per fold.

        ``y`` and ``groups`` are ignored (accepted for scikit-learn
        compatibility). Parameters are validated when ``split`` is called.
        """
        n = _num_samples(X)
        bounds = self._bounds(n)
        return self._iter(n, bounds)

    def _iter(self, n: int, bounds: np.ndarray) -> Iterator[Split]:
        g = self.gap
        for fold in range(self.n_splits):
            start, stop = int(bounds[fold]), int(bounds[fold + 1])
            test = np.arange(start, stop, dtype=np.int64)
            train = np.concatenate(
                (
                    np.arange(0, max(start - g, 0), dtype=np.int64),
                    np.arange(min(stop + g, n), n, dtype=np.int64),
                )
            )
            yield train, test


class LeaveOneGroupOut(_BaseSplitter):
    """Leave-one-group-out cross-validation (one fold per run or story).

    Each unique group value is the test set of one fold, in order of first
    appearance in ``groups``; training uses every other sample, minus an
    optional ``gap`` of samples adjacent (in index order) to the test samples.

    Parameters
    ----------
    groups : array-like of shape (n_samples,), optional
        Group label per sample. May instead be given to :meth:`split`
        (labels given to :meth:`split` take precedence).
    gap : int, default=0
        Training samples within ``gap`` positions of a test sample are dropped,
        i.e. up to ``gap`` samples on each side of every contiguous stretch of
        test samples. Only training neighbours are dropped: nothing happens at
        the start/end of the data.

    Raises
    ------
    ValueError
        If no groups are given, ``len(groups) != n_samples``, there are fewer
        than 2 groups, ``gap < 0``, or a fold's training set would be empty.
    """

    def __init__(self, groups=None, gap: int = 0):
        self.groups = None if groups is None else np.asarray(groups)
        self.gap = check_int(gap, "gap", 0)

    def __repr__(self) -> str:
        return f"LeaveOneGroupOut(groups={_groups_repr(self.groups)}, gap={self.gap})"

    def _codes(self, n: int, groups):
        groups = self.groups if groups is None else groups
        codes, n_groups, labels = _ordered_groups(groups, n, "LeaveOneGroupOut")
        if n_groups < 2:
            raise ValueError(
                f"LeaveOneGroupOut needs at least 2 distinct groups, got "
                f"{n_groups}; label the runs/stories differently or use "
                "ContiguousKFold."
            )
        return codes, n_groups, labels

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Number of distinct groups (from ``groups`` or the constructor)."""
        groups = self.groups if groups is None else groups
        if groups is None:
            raise ValueError(
                "LeaveOneGroupOut needs group labels: pass groups=... to the "
                "constructor or to get_n_splits()."
            )
        n = len(groups) if X is None else _num_samples(X)
        return self._codes(n, groups)[1]

    def split(self, X, y=None, groups=None) -> Iterator[Split]:
        """Yield ``(train, test)`` index arrays, one pair per group."""
        n = _num_samples(X)
        codes, n_groups, labels = self._codes(n, groups)
        folds = [np.array([g]) for g in range(n_groups)]
        names = [f"group {labels[g].tolist()!r}" for g in range(n_groups)]
        _check_group_folds(codes, folds, names, self.gap, "LeaveOneGroupOut")
        return _iter_group_folds(codes, folds, self.gap)


class GroupKFold(_BaseSplitter):
    """K-fold over whole groups, contiguous in order of first appearance.

    The unique groups, ordered by first appearance, are cut into
    ``n_splits`` contiguous runs of groups. The cuts are placed greedily,
    one after the other: cut ``j`` goes after the group whose cumulative
    sample count is closest to ``j * n_samples / n_splits`` (ties go to the
    earlier cut), while leaving at least one group for each remaining fold.
    With equally sized groups and ``n_groups`` divisible by ``n_splits`` this
    is the same as ``numpy.array_split`` of the ordered groups.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    groups : array-like of shape (n_samples,), optional
        Group label per sample. May instead be given to :meth:`split`
        (labels given to :meth:`split` take precedence).
    gap : int, default=0
        As in :class:`LeaveOneGroupOut`.

    Raises
    ------
    ValueError
        If no groups are given, ``len(groups) != n_samples``, there are fewer
        groups than folds, ``n_splits < 2``, ``gap < 0``, or a fold's training
        set would be empty.
    """

    def __init__(self, n_splits: int = 5, groups=None, gap: int = 0):
        self.n_splits = check_int(n_splits, "n_splits", 2)
        self.groups = None if groups is None else np.asarray(groups)
        self.gap = check_int(gap, "gap", 0)

    def __repr__(self) -> str:
        return (
            f"GroupKFold(n_splits={self.n_splits}, "
            f"groups={_groups_repr(self.groups)}, gap={self.gap})"
        )

    def _fold_groups(self, codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
        k = self.n_splits
        if n_groups < k:
            raise ValueError(
                f"GroupKFold: fewer groups ({n_groups}) than folds ({k}); use "
                f"n_splits <= {n_groups} or LeaveOneGroupOut."
            )
        sizes = np.bincount(codes, minlength=n_groups)
        cum = np.concatenate(([0], np.cumsum(sizes)))  # cum[c]: first c groups
        n = int(cum[-1])
        cuts = [0]
        for j in range(1, k):
            lo = cuts[-1] + 1  # at least one group in this fold
            hi = n_groups - (k - j)  # at least one group for each later fold
            cand = np.arange(lo, hi + 1)
            err = np.abs(cum[cand] * k - j * n)  # |cum - j n / k| * k, exact
            cuts.append(int(cand[np.argmin(err)]))
        cuts.append(n_groups)
        return [np.arange(cuts[f], cuts[f + 1]) for f in range(k)]

    def split(self, X, y=None, groups=None) -> Iterator[Split]:
        """Yield ``(train, test)`` index arrays, one pair per fold."""
        n = _num_samples(X)
        groups = self.groups if groups is None else groups
        codes, n_groups, _ = _ordered_groups(groups, n, "GroupKFold")
        folds = self._fold_groups(codes, n_groups)
        names = [f"fold {f}" for f in range(len(folds))]
        _check_group_folds(codes, folds, names, self.gap, "GroupKFold")
        return _iter_group_folds(codes, folds, self.gap)


def _check_group_folds(codes, folds, names, gap, who) -> None:
    """Raise before yielding anything if a fold would have no training data."""
    if gap == 0:
        return  # >= 2 non-empty folds, so every training set is non-empty
    for name, fold in zip(names, folds):
        test_mask = np.isin(codes, fold)
        if _train_from_test_mask(test_mask, gap).size == 0:
            raise ValueError(
                f"{who}: {name} has no training samples left after dropping "
                f"gap={gap} samples next to its test samples; use a smaller gap."
            )


def _iter_group_folds(codes, folds, gap) -> Iterator[Split]:
    for fold in folds:
        test_mask = np.isin(codes, fold)
        yield _train_from_test_mask(test_mask, gap), _as_index(np.flatnonzero(test_mask))


class KFold(_BaseSplitter):
    """K-fold cross-validation, like scikit-learn's ``KFold``.

    With ``shuffle=False`` the splits are identical to
    ``sklearn.model_selection.KFold(n_splits)`` (and to
    :class:`ContiguousKFold` with ``gap=0``). With ``shuffle=True`` the
    samples are permuted by ``numpy.random.default_rng(seed)`` before being
    cut into folds; the permutation is drawn afresh at every :meth:`split`
    call, so an integer ``seed`` gives the same splits every time and
    ``seed=None`` gives different ones.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=False
        Whether to permute the samples before cutting them into folds.
    seed : int, numpy.random.SeedSequence or None, default=None
        Seed for the permutation. Only allowed with ``shuffle=True``.
    """

    def __init__(self, n_splits: int = 5, shuffle: bool = False, seed=None):
        self.n_splits = check_int(n_splits, "n_splits", 2)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"shuffle must be True or False, got {shuffle!r}.")
        self.shuffle = bool(shuffle)
        if seed is not None and not self.shuffle:
            raise ValueError(
                "KFold: setting a seed has no effect since shuffle is False; "
                "set shuffle=True or leave seed=None."
            )
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"KFold(n_splits={self.n_splits}, shuffle={self.shuffle}, "
            f"seed={self.seed!r})"
        )

    def split(self, X, y=None, groups=None) -> Iterator[Split]:
        """Yield ``(train, test)`` index arrays, one pair per fold."""
        n = _num_samples(X)
        k = self.n_splits
        if n < k:
            raise ValueError(
                f"KFold: fewer samples ({n}) than folds ({k}); use "
                f"n_splits <= {n} or more samples."
            )
        if self.shuffle:
            order = np.random.default_rng(self.seed).permutation(n)
        else:
            order = np.arange(n)
        return self._iter(n, order)

    def _iter(self, n: int, order: np.ndarray) -> Iterator[Split]:
        for block in np.array_split(order, self.n_splits):
            test_mask = np.zeros(n, dtype=bool)
            test_mask[block] = True
            yield _as_index(np.flatnonzero(~test_mask)), _as_index(
                np.flatnonzero(test_mask)
            )


class ShuffleSplit(_BaseSplitter):
    """Random train/test partitions (Monte-Carlo cross-validation).

    Each of the ``n_splits`` splits draws a fresh random permutation and puts
    its first ``n_test`` samples in the test set and the rest in training.
    The generator is ``numpy.random.default_rng(seed)``, created at every
    :meth:`split` call, so an integer ``seed`` gives the same splits every time.

    Parameters
    ----------
    n_splits : int, default=10
        Number of splits, at least 1.
    test_size : float or int, default=0.1
        A float in (0, 1) is the fraction of samples in the test set (rounded
        up, as in scikit-learn); an int is the number of test samples.
    seed : int, numpy.random.SeedSequence or None, default=None
        Seed for the random permutations.
    """

    def __init__(self, n_splits: int = 10, test_size=0.1, seed=None):
        self.n_splits = check_int(n_splits, "n_splits", 1)
        if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
            raise ValueError(
                f"test_size must be a float in (0, 1) or a positive int, got "
                f"{test_size!r}."
            )
        if isinstance(test_size, numbers.Integral):
            test_size = check_int(test_size, "test_size (a sample count)", 1)
        else:
            test_size = float(test_size)
            if not 0.0 < test_size < 1.0:
                raise ValueError(
                    f"test_size as a fraction must be in (0, 1), got {test_size}; "
                    "pass an int for a number of samples."
                )
        self.test_size = test_size
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"ShuffleSplit(n_splits={self.n_splits}, test_size={self.test_size!r}, "
            f"seed={self.seed!r})"
        )

    def _n_test(self, n: int) -> int:
        if isinstance(self.test_size, int):
            n_test = self.test_size
        else:
            n_test = int(np.ceil(self.test_size * n))
        if n_test >= n:
            raise ValueError(
                f"ShuffleSplit: test_size={self.test_size!r} leaves no training "
                f"samples out of {n}; use a smaller test_size."
            )
        return n_test

    def split(self, X, y=None, groups=None) -> Iterator[Split]:
        """Yield ``(train, test)`` index arrays, ``n_splits`` times."""
        n = _num_samples(X)
        n_test = self._n_test(n)
        return self._iter(n, n_test)

    def _iter(self, n: int, n_test: int) -> Iterator[Split]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n_splits):
            perm = rng.permutation(n)
            yield _as_index(np.sort(perm[n_test:])), _as_index(np.sort(perm[:n_test]))


# --------------------------------------------------------------------------
# check_cv / is_partition
# --------------------------------------------------------------------------


def _to_indices(idx, n_samples: int, what: str) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D index array, got shape {arr.shape}.")
    if arr.dtype == bool:
        if arr.shape[0] != n_samples:
            raise ValueError(
                f"{what} is a boolean mask of length {arr.shape[0]}, expected "
                f"{n_samples} (n_samples)."
            )
        return _as_index(np.flatnonzero(arr))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{what} must hold integer sample indices, got dtype {arr.dtype}."
        )
    return _as_index(arr)


def _validate_split(train, test, n_samples: int, fold: int) -> Split:
    train = _to_indices(train, n_samples, f"fold {fold}: train")
    test = _to_indices(test, n_samples, f"fold {fold}: test")
    for name, idx in (("train", train), ("test", test)):
        if idx.size == 0:
            raise ValueError(f"fold {fold}: the {name} set is empty.")
        bad = idx[(idx < 0) | (idx >= n_samples)]
        if bad.size:
            raise ValueError(
                f"fold {fold}: {name} index {int(bad[0])} is outside "
                f"[0, {n_samples}) (n_samples={n_samples})."
            )
    overlap = np.intersect1d(train, test)
    if overlap.size:
        raise ValueError(
            f"fold {fold}: {overlap.size} sample(s) are in both train and test "
            f"(e.g. index {int(overlap[0])})."
        )
    return train, test


def check_cv(cv, n_samples: int, groups=None) -> list[Split]:
    """Turn ``cv`` into a validated list of ``(train, test)`` index arrays.

    Parameters
    ----------
    cv : int, splitter or iterable of (train, test)
        - an int ``k``: :class:`ContiguousKFold` with ``k`` folds;
        - any object with a ``split`` method (these splitters or
          scikit-learn's): ``cv.split(np.zeros((n_samples, 1)), groups=groups)``
          (``groups`` is passed only when not None);
        - an iterable of ``(train, test)`` pairs of integer index arrays (or
          boolean masks of length ``n_samples``).
    n_samples : int
        Number of samples.
    groups : array-like of shape (n_samples,), optional
        Group labels, forwarded to ``cv.split``.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``int64`` train and test indices per fold, in the order given.

    Raises
    ------
    ValueError
        If a fold has an empty train or test set, an index outside
        ``[0, n_samples)`` or a sample in both train and test (the message
        names the fold), if there are no folds, or if ``cv`` is an invalid int.
    TypeError
        If ``cv`` is none of the accepted kinds.
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    if isinstance(cv, bool):
        raise TypeError(f"cv must be an int, a splitter or a list of (train, test); got {cv!r}.")
    if isinstance(cv, numbers.Integral):
        cv = ContiguousKFold(int(cv))
    if hasattr(cv, "split") and not isinstance(cv, (str, bytes)):
        X = np.zeros((n_samples, 1))
        splits = cv.split(X) if groups is None else cv.split(X, groups=groups)
    elif isinstance(cv, Iterable) and not isinstance(cv, (str, bytes, np.ndarray)):
        splits = cv
    else:
        raise TypeError(
            "cv must be an int (number of contiguous folds), an object with a "
            "split() method, or an iterable of (train, test) index pairs; got "
            f"{type(cv).__name__}."
        )
    out = []
    for fold, pair in enumerate(splits):
        try:
            train, test = pair
        except (TypeError, ValueError):
            raise ValueError(
                f"fold {fold}: expected a (train, test) pair, got "
                f"{type(pair).__name__}."
            ) from None
        out.append(_validate_split(train, test, n_samples, fold))
    if not out:
        raise ValueError("cv produced no folds; give at least one (train, test) pair.")
    return out


def is_partition(splits: Iterable[Split], n_samples: int) -> bool:
    """Whether every sample in ``range(n_samples)`` is in exactly one test set.

    Test indices outside ``[0, n_samples)`` make the answer ``False``.
    """
    counts = np.zeros(int(n_samples), dtype=np.int64)
    for _, test in splits:
        test = np.asarray(test)
        if test.dtype == bool:
            test = np.flatnonzero(test)
        test = test.astype(np.int64, copy=False).ravel()
        if test.size and (test.min() < 0 or test.max() >= n_samples):
            return False
        np.add.at(counts, test, 1)
    return bool(np.all(counts == 1))
