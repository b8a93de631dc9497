"""Nested cross-validation: held-out predictions for every sample.

The outer splitter holds out test samples; on each outer training set the
inner splitter chooses every target's penalty and the model is refitted there;
the test samples are then predicted. This is the standard encoding-model
evaluation (e.g. Toneva & Wehbe: 4 outer contiguous folds with a gap, 10
inner folds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jaxalign._core.zscore import zscore_columns
from jaxalign.ridge._cv import check_cv, is_partition
from jaxalign.ridge._engine import ridge_cv
from jaxalign.ridge._scores import check_scoring, neg_mse, pearson_r, r2_score
from jaxalign.ridge._validation import check_design, check_targets

__all__ = ["NestedCVResult", "nested_cv"]


@dataclass
class NestedCVResult:
    """Outputs of :func:`nested_cv` (optional leading layer axis ``L``).

    Attributes
    ----------
    predictions : ([L,] n, T) held-out prediction of every sample, or None
        when the outer splitter does not test each sample exactly once.
    scores : ([L,] T) score of the concatenated held-out predictions
        (None when ``predictions`` is None). With slow drifts in the data and
        ``standardize=None`` this pools between-fold offsets into the score
        (see :func:`nested_cv`); ``fold_scores.mean(-2)`` does not.
    fold_scores : ([L,] n_outer, T) score within each outer test fold (NaN
        for Pearson / R^2 on a one-sample test fold, e.g. leave-one-out).
    best_alphas : ([L,] n_outer, T) penalty chosen in each outer fold.
    outer_splits : list of (train, test) index arrays.
    targets : (n, T) the held-out targets ``predictions`` are scored against:
        ``Y`` itself, or as each outer fold's ``fold_targets`` and
        ``standardize`` made its test rows (the units of ``predictions``);
        None when ``predictions`` is None.
    """

    predictions: np.ndarray | None
    scores: np.ndarray | None
    fold_scores: np.ndarray
    best_alphas: np.ndarray
    outer_splits: list = field(repr=False)
    scoring: str = "pearson"
    targets: np.ndarray | None = field(default=None, repr=False)


def _standardize(train, test, how):
    """Z-score columns of train (and test: own or training statistics), float32 out.

    ``jaxalign._core.zscore`` (the z-score ``timing`` uses too); the
    constant-column tolerance is float32's, the precision the engine fits in.
    """
    out_train, mean, scale = zscore_columns(train, tol_dtype=np.float32)
    if how == "separate":
        out_test, _, _ = zscore_columns(test, tol_dtype=np.float32)
    else:
        out_test, _, _ = zscore_columns(test, mean, scale)
    return out_train, out_test


_SCORERS = {"pearson": pearson_r, "r2": r2_score, "neg_mse": neg_mse}


def _score(scoring, y, pred):
    """Scale-free score per target (see ``_scores``); float64 for neg MSE."""
    return np.asarray(_SCORERS[scoring](y, pred))


def _fold_targets(fn, Y, train, test):
    """Call the ``fold_targets`` hook and check what it returns (shapes, finite values)."""
    out = fn(Y, train, test)
    try:
        Y_train, Y_test = out
    except (TypeError, ValueError):
        raise ValueError(f"fold_targets must return (Y_train, Y_test), got {type(out).__name__}") from None
    Y_train, Y_test = np.asarray(Y_train), np.asarray(Y_test)
    for name, a, rows in (("Y_train", Y_train, len(train)), ("Y_test", Y_test, len(test))):
        if a.shape != (rows, Y.shape[1]):
            raise ValueError(f"fold_targets returned {name} of shape {a.shape}, expected {(rows, Y.shape[1])}")
        if not np.isfinite(a).all():
            raise ValueError(f"fold_targets returned non-finite values in {name}")
    dtype = Y.dtype if Y.dtype in (np.float32, np.float64) else np.float32
    return Y_train.astype(dtype, copy=False), Y_test.astype(dtype, copy=False)


def _fold_y(Y, train, test, fold_targets, standardize):
    """An outer fold's training and test targets: ``fold_targets`` (or row selection), then ``standardize``."""
    if fold_targets is None:
        Y_train, Y_test = Y[train], Y[test]
    else:
        Y_train, Y_test = _fold_targets(fold_targets, Y, train, test)
    if standardize is not None:
        Y_train, Y_test = _standardize(Y_train, Y_test, standardize)
    return Y_train, Y_test


def nested_cv(
    X,
    Y,
    alphas=np.logspace(-2, 8, 11),
    outer_cv=5,
    inner_cv=5,
    *,
    groups=None,
    scoring: str = "pearson",
    fit_intercept: bool = False,
    standardize: str | None = None,
    fold_targets=None,
    on_fold=None,
    **engine_kwargs,
) -> NestedCVResult:
    """Held-out predictions with penalties chosen by an inner CV.

    Parameters
    ----------
    X : (n, p) or (L, n, p)
    Y : (n, T)
    alphas : penalties to choose from
    outer_cv, inner_cv : int, splitter or explicit splits. Inner splits
        are made on the outer training set (indices relative to it); an int
        means contiguous folds. ``groups`` is passed to both (sliced for the
        inner one).
    scoring : score used for the inner choice and reported on held-out data
    fit_intercept : bool
    standardize : None, "separate" or "train"
        Column z-scoring inside the outer loop (X and Y; float64 statistics,
        ddof 0; constant columns become zeros). ``None``: data used as given.
        ``"separate"``: the outer training set and the test set are each
        z-scored with their own statistics (the convention of METHODS.md
        1.4, "train and test are z-scored separately"). ``"train"``: the
        test set is z-scored with the training statistics. The inner CV
        sees the (standardized) outer training set.

        Why it matters: with slowly drifting targets (fMRI) and data z-scored
        once over all samples, each test fold's target mean is minus the
        training set's, and an intercept-free model's test predictions carry
        an offset that tracks it (through the features' own fold means, or
        through a fitted intercept). The concatenated ``scores`` then reward
        these fold offsets: on the Alice fMRI data, random features scored a
        held-out r of about 0.15 that way. ``"separate"`` removes every fold
        offset; ``fold_scores`` are immune either way.
    fold_targets : callable ``(Y, train, test) -> (Y_train, Y_test)``, optional
        Per-fold preprocessing of the targets, applied in every outer fold
        before ``standardize``: e.g. confound regression and detrending
        fitted on the training rows only and applied to both (the default is
        plain row selection, ``Y[train], Y[test]``). It must return arrays
        of shapes ``(len(train), T)`` and ``(len(test), T)`` and treat the
        columns of ``Y`` independently (the refitted permutation test calls
        it on permuted copies of the targets side by side).
    on_fold : callable ``(k, n_folds)``, optional
        Called after outer fold ``k`` (1-based) is done (progress bars).
    **engine_kwargs : forwarded to :func:`ridge_cv` (memory_budget, devices...)

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.ridge import nested_cv, ContiguousKFold
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((120, 5))
    >>> Y = X @ rng.standard_normal((5, 4)) + rng.standard_normal((120, 4))
    >>> res = nested_cv(X, Y, np.logspace(-1, 3, 5), ContiguousKFold(4, gap=2), 3)
    >>> res.predictions.shape, res.best_alphas.shape
    ((120, 4), (4, 4))
    """
    X = check_design(X)
    n = X.shape[-2]
    Y, _ = check_targets(Y, n)
    scoring = check_scoring(scoring)
    if standardize not in (None, "separate", "train"):
        raise ValueError(f"standardize must be None, 'separate' or 'train', got {standardize!r}.")
    outer = check_cv(outer_cv, n, groups=groups)
    partition = is_partition(outer, n)
    layered = X.ndim == 3
    lead = (X.shape[0],) if layered else ()
    T = Y.shape[1]
    out_dtype = np.float64 if Y.dtype == np.float64 else np.float32
    preds = np.full(lead + (n, T), np.nan, out_dtype) if partition else None
    fold_scores = np.empty(lead + (len(outer), T), np.float64 if scoring == "neg_mse" else np.float32)
    # the targets as scored (standardized and / or preprocessed per fold), for ``scores``
    y_dtype = np.float32 if standardize is not None else out_dtype
    y_std = np.empty((n, T), y_dtype) if ((standardize is not None or fold_targets is not None)
                                          and preds is not None) else None
    best_alphas = np.empty(lead + (len(outer), T), np.float64)
    for k, (train, test) in enumerate(outer):
        inner_groups = None if groups is None else np.asarray(groups)[train]
        X_train, X_test = X[..., train, :], X[..., test, :]
        Y_train, Y_test = _fold_y(Y, train, test, fold_targets, standardize)
        if standardize is not None:
            X_train, X_test = _standardize(X_train, X_test, standardize)
        res = ridge_cv(
            X_train, Y_train, alphas, inner_cv, groups=inner_groups,
            scoring=scoring, fit_intercept=fit_intercept, **engine_kwargs,
        )
        # float64 on the host: coefficients carry the ratio of Y's units to
        # X's, which float32 products could under- or overflow at extreme scales
        pred = np.matmul(np.asarray(X_test, np.float64), res.coef.astype(np.float64))
        pred += res.intercept[..., None, :]
        best_alphas[..., k, :] = res.best_alphas
        y_test = np.asarray(Y_test)
        if y_std is not None:
            y_std[test] = y_test
        if len(test) < 2 and scoring != "neg_mse":  # r and R^2 need 2 samples: NaN, not 0
            fold_scores[..., k, :] = np.nan
        else:
            fold_scores[..., k, :] = _score(scoring, y_test, pred) if not layered else np.stack(
                [_score(scoring, y_test, pl) for pl in pred]
            )
        if preds is not None:
            preds[..., test, :] = pred
        if on_fold is not None:
            on_fold(k + 1, len(outer))
    scores = y = None
    if preds is not None:
        y = Y if y_std is None else y_std
        scores = _score(scoring, y, preds) if not layered else np.stack(
            [_score(scoring, y, pl) for pl in preds]
        )
    return NestedCVResult(preds, scores, fold_scores, best_alphas, outer, scoring, targets=y)
