"""Tests for jaxalign.ridge._cv (cross-validation splitters, pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign.ridge._cv import (
    ContiguousKFold,
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    ShuffleSplit,
    check_cv,
    is_partition,
)

# Fresh but reproducible random sizes: (n_samples, n_splits, gap).
_rng = np.random.default_rng(20240611)
RANDOM_NKG = [
    (int(n), int(k), int(g))
    for n, k, g in zip(
        _rng.integers(40, 400, size=6),
        _rng.integers(2, 9, size=6),
        _rng.integers(0, 4, size=6),
    )
]
FIXED_NKG = [(10, 2, 0), (10, 3, 1), (11, 5, 2), (7, 7, 0), (100, 4, 10), (23, 10, 0)]
NKG = FIXED_NKG + RANDOM_NKG


def _run_labels(rng, n_groups, min_len=3, max_len=15):
    """Contiguous runs of samples, one label per run (labels not sorted)."""
    lengths = rng.integers(min_len, max_len + 1, size=n_groups)
    labels = rng.permutation(n_groups) * 7 + 100  # arbitrary, unsorted values
    return np.repeat(labels, lengths)


def _assert_well_formed(splits, n):
    for train, test in splits:
        for idx in (train, test):
            assert idx.dtype == np.int64
            assert idx.ndim == 1
            assert np.all(np.diff(idx) > 0), "indices must be sorted and unique"
            assert idx.size == 0 or (idx.min() >= 0 and idx.max() < n)
        assert train.size > 0 and test.size > 0
        assert np.intersect1d(train, test).size == 0


def _expected_train(test, n, gap):
    """Brute force: samples not in test and farther than gap from every test index."""
    test_set = set(test.tolist())
    keep = [
        i
        for i in range(n)
        if i not in test_set and all(abs(i - t) > gap for t in test_set)
    ]
    return np.array(keep, dtype=np.int64)


# --------------------------------------------------------------------------
# ContiguousKFold
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,gap", NKG)
def test_contiguous_kfold_structure(n, k, gap):
    cv = ContiguousKFold(k, gap=gap)
    splits = list(cv.split(n))
    assert len(splits) == k == cv.get_n_splits()
    _assert_well_formed(splits, n)
    assert is_partition(splits, n)
    expected_blocks = np.array_split(np.arange(n), k)
    for (train, test), block in zip(splits, expected_blocks):
        np.testing.assert_array_equal(test, block)  # contiguous, array_split sizes
        start, stop = block[0], block[-1] + 1
        # exactly `gap` samples dropped on each side (fewer at the data edges)
        dropped = np.setdiff1d(np.arange(n), np.concatenate((train, test)))
        expected_dropped = np.concatenate(
            (np.arange(max(start - gap, 0), start), np.arange(stop, min(stop + gap, n)))
        )
        np.testing.assert_array_equal(dropped, expected_dropped)
        # no training sample within gap of the test block
        dist = np.abs(train[:, None] - test[None, :]).min(axis=1)
        assert np.all(dist > gap)
        np.testing.assert_array_equal(train, _expected_train(test, n, gap))


@pytest.mark.parametrize("X_kind", ["int", "array", "list"])
def test_contiguous_kfold_accepts_int_or_arrays(X_kind):
    n = 13
    X = {"int": n, "array": np.zeros((n, 3)), "list": list(range(n))}[X_kind]
    splits = list(ContiguousKFold(4, gap=1).split(X, y=np.zeros(n), groups=np.zeros(n)))
    ref = list(ContiguousKFold(4, gap=1).split(n))
    for (a, b), (c, d) in zip(splits, ref):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_contiguous_kfold_matches_sklearn_kfold_without_gap():
    sk = pytest.importorskip("sklearn.model_selection")
    rng = np.random.default_rng(1)
    for n, k in zip(rng.integers(10, 200, size=5), rng.integers(2, 10, size=5)):
        X = np.zeros((int(n), 1))
        for (a, b), (c, d) in zip(
            ContiguousKFold(int(k)).split(X), sk.KFold(int(k)).split(X)
        ):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


def test_contiguous_kfold_repr_and_example():
    assert repr(ContiguousKFold(3, gap=2)) == "ContiguousKFold(n_splits=3, gap=2)"
    splits = list(ContiguousKFold(3, gap=1).split(np.zeros((10, 2))))
    assert [t.tolist() for t, _ in splits] == [
        [5, 6, 7, 8, 9],
        [0, 1, 2, 8, 9],
        [0, 1, 2, 3, 4, 5],
    ]


def test_contiguous_kfold_errors():
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 2"):
        ContiguousKFold(1)
    with pytest.raises(ValueError, match=r"n_splits must be an integer"):
        ContiguousKFold(2.5)
    with pytest.raises(ValueError, match=r"gap must be an integer >= 0"):
        ContiguousKFold(3, gap=-1)
    with pytest.raises(ValueError, match=r"fewer samples \(4\) than folds \(5\)"):
        ContiguousKFold(5).split(4)
    # n=10, 2 folds of 5, gap 5 removes the whole other block
    with pytest.raises(ValueError, match=r"fold 0 .*no training samples.*smaller gap"):
        ContiguousKFold(2, gap=5).split(10)
    with pytest.raises(ValueError, match=r"number of samples"):
        ContiguousKFold(2).split(None)
    # the error is raised when split() is called, before any fold is used
    with pytest.raises(ValueError, match=r"no training samples"):
        ContiguousKFold(3, gap=4).split(9)
    # but a gap that just fits is fine
    assert len(list(ContiguousKFold(2, gap=4).split(10))) == 2


# --------------------------------------------------------------------------
# LeaveOneGroupOut
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gap", [0, 1, 3])
def test_leave_one_group_out_contiguous_runs(seed, gap):
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(2, 9))
    groups = _run_labels(rng, n_groups, min_len=gap + 2)
    n = groups.size
    cv = LeaveOneGroupOut(gap=gap)
    splits = list(cv.split(np.zeros((n, 2)), groups=groups))
    assert len(splits) == n_groups == cv.get_n_splits(groups=groups)
    _assert_well_formed(splits, n)
    assert is_partition(splits, n)
    # folds in order of first appearance
    _, first = np.unique(groups, return_index=True)
    first_order = groups[np.sort(first)]
    for (train, test), label in zip(splits, first_order):
        np.testing.assert_array_equal(test, np.flatnonzero(groups == label))
        np.testing.assert_array_equal(train, _expected_train(test, n, gap))
        # exactly gap samples dropped at each internal boundary
        n_dropped = n - train.size - test.size
        n_boundaries = int(test[0] > 0) + int(test[-1] < n - 1)
        assert n_dropped == gap * n_boundaries


def test_leave_one_group_out_interleaved_groups_and_gap():
    groups = np.array([0, 0, 1, 1, 0, 0, 2, 2, 1, 1, 1, 0])
    splits = list(LeaveOneGroupOut(groups=groups, gap=1).split(groups.size))
    test0, train0 = splits[0][1], splits[0][0]
    np.testing.assert_array_equal(test0, [0, 1, 4, 5, 11])
    # dropped: 2, 3 (neighbours of 1 and 4), 6 (after 5), 10 (before 11)
    np.testing.assert_array_equal(train0, [7, 8, 9])
    for train, test in splits:
        np.testing.assert_array_equal(train, _expected_train(test, groups.size, 1))
    assert is_partition(splits, groups.size)


def test_leave_one_group_out_constructor_vs_split_groups():
    groups = np.repeat(["b", "a", "c"], 4)
    a = list(LeaveOneGroupOut(groups).split(12))
    b = list(LeaveOneGroupOut().split(np.zeros(12), groups=groups))
    assert len(a) == len(b) == 3
    for (x, y), (z, w) in zip(a, b):
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(y, w)
    np.testing.assert_array_equal(a[0][1], [0, 1, 2, 3])  # "b" first
    # split() groups take precedence over the constructor's
    other = np.repeat([1, 2], 6)
    assert len(list(LeaveOneGroupOut(groups).split(12, groups=other))) == 2
    assert "LeaveOneGroupOut(groups=<12 labels>, gap=0)" == repr(LeaveOneGroupOut(groups))


def test_leave_one_group_out_errors():
    with pytest.raises(ValueError, match=r"needs group labels.*groups="):
        LeaveOneGroupOut().split(10)
    with pytest.raises(ValueError, match=r"needs group labels"):
        LeaveOneGroupOut().get_n_splits()
    with pytest.raises(ValueError, match=r"groups has 9 labels but X has 10 samples"):
        LeaveOneGroupOut(np.zeros(9)).split(10)
    with pytest.raises(ValueError, match=r"at least 2 distinct groups, got 1"):
        LeaveOneGroupOut(np.zeros(10)).split(10)
    with pytest.raises(ValueError, match=r"1-D"):
        LeaveOneGroupOut(np.zeros((5, 2))).split(5)
    with pytest.raises(ValueError, match=r"gap must be an integer >= 0"):
        LeaveOneGroupOut(gap=-2)
    with pytest.raises(ValueError, match=r"group 0 has no training samples.*smaller gap"):
        LeaveOneGroupOut(np.repeat([0, 1], [5, 3]), gap=3).split(8)


# --------------------------------------------------------------------------
# GroupKFold
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gap", [0, 2])
def test_group_kfold_whole_contiguous_groups(seed, gap):
    rng = np.random.default_rng(100 + seed)
    n_groups = int(rng.integers(3, 14))
    k = int(rng.integers(2, n_groups + 1))
    groups = _run_labels(rng, n_groups, min_len=gap + 2)
    n = groups.size
    cv = GroupKFold(k, gap=gap)
    splits = list(cv.split(n, groups=groups))
    assert len(splits) == k == cv.get_n_splits()
    _assert_well_formed(splits, n)
    assert is_partition(splits, n)
    _, first = np.unique(groups, return_index=True)
    order = list(groups[np.sort(first)])
    seen = []
    for train, test in splits:
        test_groups = set(groups[test].tolist())
        # whole groups only
        for g in test_groups:
            assert np.all(np.isin(np.flatnonzero(groups == g), test))
        # contiguous in order of first appearance
        ranks = sorted(order.index(g) for g in test_groups)
        assert ranks == list(range(ranks[0], ranks[-1] + 1))
        seen.extend(ranks)
        np.testing.assert_array_equal(train, _expected_train(test, n, gap))
    assert seen == list(range(n_groups))


def test_group_kfold_equal_groups_is_array_split():
    groups = np.repeat(np.arange(12), 5)
    splits = list(GroupKFold(4, groups=groups).split(groups.size))
    for (_, test), chunk in zip(splits, np.array_split(np.arange(12), 4)):
        np.testing.assert_array_equal(test, np.flatnonzero(np.isin(groups, chunk)))


def test_group_kfold_balances_sample_counts():
    # one big group first, then many small ones: balance by count, not by group
    groups = np.repeat(np.arange(7), [30, 5, 5, 5, 5, 5, 5])
    splits = list(GroupKFold(2, groups=groups).split(groups.size))
    assert [t.size for _, t in splits] == [30, 30]


def test_group_kfold_errors():
    groups = np.repeat([0, 1, 2], 4)
    with pytest.raises(ValueError, match=r"fewer groups \(3\) than folds \(4\)"):
        GroupKFold(4, groups=groups).split(12)
    with pytest.raises(ValueError, match=r"needs group labels"):
        GroupKFold(2).split(12)
    with pytest.raises(ValueError, match=r"groups has 12 labels but X has 11 samples"):
        GroupKFold(2, groups=groups).split(11)
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 2"):
        GroupKFold(1)
    with pytest.raises(ValueError, match=r"fold 0 has no training samples"):
        GroupKFold(2, groups=np.repeat([0, 1], [6, 2]), gap=2).split(8)
    assert repr(GroupKFold(3)) == "GroupKFold(n_splits=3, groups=None, gap=0)"


# --------------------------------------------------------------------------
# KFold
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,_gap", NKG)
def test_kfold_equals_sklearn(n, k, _gap):
    sk = pytest.importorskip("sklearn.model_selection")
    X = np.zeros((n, 2))
    ours = list(KFold(k).split(X))
    theirs = list(sk.KFold(k).split(X))
    assert len(ours) == len(theirs) == KFold(k).get_n_splits()
    for (a, b), (c, d) in zip(ours, theirs):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert is_partition(ours, n)


@pytest.mark.parametrize("n,k,_gap", RANDOM_NKG)
def test_kfold_shuffle_deterministic(n, k, _gap):
    a = list(KFold(k, shuffle=True, seed=3).split(n))
    b = list(KFold(k, shuffle=True, seed=3).split(n))
    c = list(KFold(k, shuffle=True, seed=4).split(n))
    _assert_well_formed(a, n)
    assert is_partition(a, n) and is_partition(c, n)
    for (x, y), (z, w) in zip(a, b):
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(y, w)
    assert any(not np.array_equal(y, w) for (_, y), (_, w) in zip(a, c))
    # fold sizes as array_split
    assert [t.size for _, t in a] == [len(b) for b in np.array_split(np.arange(n), k)]
    # the tests are not contiguous blocks any more
    assert any(np.any(np.diff(t) > 1) for _, t in a)


def test_kfold_errors_and_repr():
    with pytest.raises(ValueError, match=r"fewer samples \(3\) than folds \(4\)"):
        KFold(4).split(3)
    with pytest.raises(ValueError, match=r"seed has no effect since shuffle is False"):
        KFold(3, seed=0)
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 2"):
        KFold(0)
    with pytest.raises(ValueError, match=r"shuffle must be True or False"):
        KFold(3, shuffle="yes")
    assert repr(KFold(3, shuffle=True, seed=1)) == "KFold(n_splits=3, shuffle=True, seed=1)"


# --------------------------------------------------------------------------
# ShuffleSplit
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,test_size,n_test",
    [(100, 0.1, 10), (101, 0.1, 11), (50, 0.25, 13), (37, 5, 5), (10, 9, 9), (3, 0.5, 2)],
)
def test_shuffle_split_sizes(n, test_size, n_test):
    cv = ShuffleSplit(7, test_size=test_size, seed=0)
    splits = list(cv.split(np.zeros((n, 1))))
    assert len(splits) == 7 == cv.get_n_splits()
    _assert_well_formed(splits, n)
    for train, test in splits:
        assert test.size == n_test
        assert train.size == n - n_test
        np.testing.assert_array_equal(np.union1d(train, test), np.arange(n))


def test_shuffle_split_deterministic_given_seed():
    n = int(np.random.default_rng(7).integers(50, 500))
    a = list(ShuffleSplit(5, test_size=0.2, seed=11).split(n))
    b = list(ShuffleSplit(5, test_size=0.2, seed=11).split(n))
    c = list(ShuffleSplit(5, test_size=0.2, seed=12).split(n))
    cv = ShuffleSplit(5, test_size=0.2, seed=11)
    d1, d2 = list(cv.split(n)), list(cv.split(n))  # same object, repeated calls
    for (x, y), (z, w), (u, v), (s, t) in zip(a, b, d1, d2):
        np.testing.assert_array_equal(y, w)
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(y, v)
        np.testing.assert_array_equal(v, t)
    assert any(not np.array_equal(y, w) for (_, y), (_, w) in zip(a, c))
    # successive splits differ from one another
    assert not np.array_equal(a[0][1], a[1][1])


def test_shuffle_split_errors_and_repr():
    with pytest.raises(ValueError, match=r"test_size as a fraction must be in \(0, 1\)"):
        ShuffleSplit(test_size=1.0)
    with pytest.raises(ValueError, match=r"test_size as a fraction must be in \(0, 1\)"):
        ShuffleSplit(test_size=0.0)
    with pytest.raises(ValueError, match=r"test_size \(a sample count\) must be an integer >= 1"):
        ShuffleSplit(test_size=0)
    with pytest.raises(ValueError, match=r"test_size must be a float in \(0, 1\) or a positive int"):
        ShuffleSplit(test_size="10%")
    with pytest.raises(ValueError, match=r"leaves no training samples out of 10"):
        ShuffleSplit(test_size=10).split(10)
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 1"):
        ShuffleSplit(0)
    assert (
        repr(ShuffleSplit(3, test_size=0.2, seed=5))
        == "ShuffleSplit(n_splits=3, test_size=0.2, seed=5)"
    )


# --------------------------------------------------------------------------
# check_cv / is_partition
# --------------------------------------------------------------------------


def _same_splits(a, b):
    assert len(a) == len(b)
    for (x, y), (z, w) in zip(a, b):
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(y, w)


def test_check_cv_int_is_contiguous_kfold():
    splits = check_cv(4, 22)
    _same_splits(splits, list(ContiguousKFold(4).split(22)))
    _same_splits(check_cv(np.int64(4), 22), splits)
    assert is_partition(splits, 22)


@pytest.mark.parametrize(
    "cv",
    [
        ContiguousKFold(3, gap=2),
        KFold(5, shuffle=True, seed=0),
        ShuffleSplit(4, test_size=0.3, seed=1),
        GroupKFold(3),
        LeaveOneGroupOut(gap=1),
    ],
    ids=repr,
)
def test_check_cv_our_splitters(cv):
    n = 40
    groups = np.repeat(np.arange(5), 8)
    got = check_cv(cv, n, groups=groups)
    _same_splits(got, list(cv.split(n, groups=groups)))
    _assert_well_formed(got, n)


def test_check_cv_sklearn_splitters():
    sk = pytest.importorskip("sklearn.model_selection")
    n = 30
    X = np.zeros((n, 1))
    groups = np.repeat(np.arange(6), 5)
    _same_splits(check_cv(sk.KFold(3), n), list(sk.KFold(3).split(X)))
    _same_splits(
        check_cv(sk.LeaveOneGroupOut(), n, groups=groups),
        list(sk.LeaveOneGroupOut().split(X, groups=groups)),
    )
    _same_splits(
        check_cv(sk.TimeSeriesSplit(3, gap=2), n),
        list(sk.TimeSeriesSplit(3, gap=2).split(X)),
    )
    # our LeaveOneGroupOut agrees with scikit-learn's when labels are sorted runs
    _same_splits(
        check_cv(LeaveOneGroupOut(), n, groups=groups),
        list(sk.LeaveOneGroupOut().split(X, groups=groups)),
    )


def test_our_splitters_work_inside_sklearn():
    sk = pytest.importorskip("sklearn.model_selection")
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(60)
    for cv in (ContiguousKFold(4, gap=2), KFold(3), ShuffleSplit(3, seed=0)):
        scores = sk.cross_val_score(linear_model.Ridge(alpha=1.0), X, y, cv=cv)
        assert scores.shape == (cv.get_n_splits(),)
        assert np.all(scores > 0.9)


def test_check_cv_explicit_lists():
    splits = [([2, 3, 4, 5], [0, 1]), (np.array([0, 1, 4, 5]), np.array([2, 3]))]
    got = check_cv(splits, 6)
    assert all(t.dtype == np.int64 and s.dtype == np.int64 for s, t in got)
    np.testing.assert_array_equal(got[1][1], [2, 3])
    assert not is_partition(got, 6)
    got = check_cv(splits + [([0, 1, 2, 3], [4, 5])], 6)
    assert is_partition(got, 6)
    # generators and boolean masks are accepted too
    gen = ((np.arange(6) != i, np.arange(6) == i) for i in range(6))
    got = check_cv(gen, 6)
    assert len(got) == 6 and is_partition(got, 6)
    np.testing.assert_array_equal(got[2][1], [2])


@pytest.mark.parametrize(
    "splits,match",
    [
        ([([0, 1, 2], [3, 4]), ([0, 1, 6], [2])], r"fold 1: train index 6 is outside \[0, 5\)"),
        ([([0, 1, 2], [-1])], r"fold 0: test index -1 is outside \[0, 5\)"),
        ([([0, 1, 2], [2, 3])], r"fold 0: 1 sample\(s\) are in both train and test"),
        ([([0, 1], [2]), ([], [3, 4])], r"fold 1: the train set is empty"),
        ([([0, 1, 2], [])], r"fold 0: the test set is empty"),
        ([([0, 1], [2.0])], r"fold 0: test must hold integer sample indices"),
        ([([0, 1], [[2]])], r"fold 0: test must be a 1-D index array"),
        ([([True, False], [2])], r"fold 0: train is a boolean mask of length 2, expected 5"),
        ([([0, 1], [2], [3])], r"fold 0: expected a \(train, test\) pair"),
        ([], r"no folds"),
    ],
)
def test_check_cv_rejects_bad_splits(splits, match):
    with pytest.raises(ValueError, match=match):
        check_cv(splits, 5)


def test_check_cv_other_errors():
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 2"):
        check_cv(1, 10)
    with pytest.raises(ValueError, match=r"fewer samples \(3\) than folds \(5\)"):
        check_cv(5, 3)
    with pytest.raises(ValueError, match=r"needs group labels"):
        check_cv(LeaveOneGroupOut(), 10)
    with pytest.raises(TypeError, match=r"cv must be an int"):
        check_cv(2.5, 10)
    with pytest.raises(TypeError, match=r"cv must be an int"):
        check_cv("abc", 10)
    with pytest.raises(TypeError, match=r"cv must be an int"):
        check_cv(True, 10)
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 1"):
        check_cv(3, 0)


def test_is_partition():
    assert is_partition([(np.array([1, 2]), np.array([0])), ([0], [1, 2])], 3)
    assert not is_partition([([1, 2], [0]), ([0, 2], [1])], 3)  # 2 never tested
    assert not is_partition([([1, 2], [0, 1]), ([0], [1, 2])], 3)  # 1 twice
    assert not is_partition([([1], [0, 3]), ([0], [1, 2])], 3)  # out of range
    assert is_partition(list(ShuffleSplit(1, test_size=0.5, seed=0).split(4))[:1], 4) is False
