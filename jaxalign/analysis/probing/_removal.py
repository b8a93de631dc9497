"""Removing a linguistic property from word features: residuals of a ridge
regression of the features on the property's one-hot labels.

For features ``F`` (n words x p) and a property with classes ``1..K``, ``T``
the (n x K) one-hot labels, the study (section 3.1.2, after Oota et al.
2022) fits

    min_{theta, b}  || F - T theta - 1 b ||_F^2 + lambda || theta ||_F^2

with an unpenalised intercept ``b`` and keeps the residual ``F - T theta -
1 b``. The penalty is chosen by K-fold CV from ``alphas`` (the study: 4
folds, 10^-3..10^5 in METHODS.md; its paper says 10^-5..10^5 and its code
10 folds, 10^-6..10^9). With one-hot labels and a small penalty the residual
is the features minus their class means: every feature's class means become
equal, so no classifier, linear or not, can read the property from a shift
of the class means (what a class-conditional spread or shape carries is not
removed, by any linear method).

Differences from the published code, on purpose: its design is the class
*index* as one numeric column (POS 0..4 regressed as if ordinal, sentence
length classes 0, 1, 3), which removes only a linear trend across classes;
here each class has its own column. It chooses one penalty for all features
(mean R^2); here each feature gets its own (the ridge engine's per-target
CV; ``scoring="r2"`` by default).

Engine: ``jaxalign.ridge.ridge_cv`` with ``fit_intercept=True``. Several
properties are one call (their one-hot designs stacked along the engine's
leading axis, padded with zero columns, which change nothing: a zero column
gets a zero coefficient); layers and checkpoints are targets of that call,
``X`` of shape (..., n, p) flattened to n x (... * p).

Leakage. Fitting the removal on all words (the published convention,
``train=None``) lets the test words of a later brain-alignment CV shape the
class means subtracted from them. ``train=`` fits on those rows only and
applies the fit to every row, so the removal can be refitted inside each
outer fold of the alignment CV (the studies layer maps folds of scans to
their words). A class absent from the training rows gets no coefficient:
its words have only the intercept removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jaxalign._core.validation import as_float_array, check_finite
from jaxalign.ridge import ridge_cv

__all__ = ["PropertyRemoval", "fit_removal", "remove_property"]


def _label_matrix(labels, n=None):
    """(P, n) object array of labels, property names and whether one was given."""
    if isinstance(labels, pd.DataFrame):
        return labels.to_numpy(object).T, list(labels.columns), False
    if isinstance(labels, pd.Series):
        return labels.to_numpy(object)[None], [labels.name], True
    if isinstance(labels, dict):
        names = list(labels)
        return np.array([np.asarray(labels[k], object) for k in names]), names, False
    arr = np.asarray(labels, object)
    if arr.ndim == 1:
        return arr[None], [None], True
    if arr.ndim == 2:
        return arr, list(range(arr.shape[0])), False
    raise ValueError(f"labels must be (n,) or (P, n), got shape {arr.shape}")


@dataclass
class PropertyRemoval:
    """A fitted removal (from :func:`fit_removal`).

    Attributes
    ----------
    classes : list (one per property) of the class labels seen in fitting
    coef : (P, K_max, T) each class's coefficient for each target (T = the
        flattened feature axes, ``prod(feature_shape)``), float64
    intercept : (P, T) float64
    best_alphas : (P, T) the penalty chosen for each target
    feature_shape : the shape of one word's features (``X.shape`` without n)
    names : property names (DataFrame columns, dict keys) or None
    single : whether one property was given (outputs then have no P axis)
    """

    classes: list
    coef: np.ndarray
    intercept: np.ndarray
    best_alphas: np.ndarray
    feature_shape: tuple
    names: list
    single: bool

    def transform(self, X, labels) -> np.ndarray:
        """Residual features of ``X`` (..., n, p) given the words' ``labels``.

        Returns an array like ``X`` (float64), with a leading property axis
        when several properties were fitted.
        """
        X = as_float_array(X, "X", (2, 3, 4, 5))
        Y, n = _targets(X)
        if X.shape[:-2] + X.shape[-1:] != self.feature_shape:
            raise ValueError(f"X has word features of shape {X.shape[:-2] + X.shape[-1:]}, "
                             f"the removal was fitted on {self.feature_shape}")
        L, _, _ = _label_matrix(labels)
        if L.shape != (len(self.classes), n):
            raise ValueError(f"labels must be ({len(self.classes)}, {n}) for this removal "
                             f"and X, got {L.shape}")
        out = np.empty((len(self.classes),) + X.shape)
        for k, (cls, lab) in enumerate(zip(self.classes, L)):
            idx = np.searchsorted(cls, lab) if len(cls) else np.zeros(n, int)
            seen = (idx < len(cls)) & (cls[np.minimum(idx, len(cls) - 1)] == lab)
            fitted = np.where(seen[:, None], self.coef[k][np.where(seen, idx, 0)], 0.0)
            out[k] = _untargets(Y - fitted - self.intercept[k], X.shape)
        return out[0] if self.single else out


def _targets(X):
    """(..., n, p) -> (n, prod(...) * p) and n."""
    n = X.shape[-2]
    Y = np.moveaxis(X, -2, 0).reshape(n, -1)
    return Y.astype(np.float64, copy=False), n


def _untargets(Y, shape):
    lead = shape[:-2] + shape[-1:]
    return np.moveaxis(Y.reshape((shape[-2],) + lead), 0, -2)


def fit_removal(X, labels, alphas=np.logspace(-3, 5, 9), cv=5, *, scoring="r2",
                **ridge_kwargs) -> PropertyRemoval:
    """Fit the ridge regression of features on one-hot property labels.

    Parameters
    ----------
    X : (n, p), (L, n, p) or (C, L, n, p) word features (leading axes:
        layers, checkpoints... every one is its own set of targets)
    labels : (n,) one property, or (P, n) / DataFrame (n rows, one column
        per property) / dict of (n,) for several (one engine call)
    alphas, cv, scoring : the penalty grid, CV folds (int: contiguous) and
        the score maximised to choose each target's penalty
    ridge_kwargs : passed to :func:`jaxalign.ridge.ridge_cv` (memory_budget...)
    """
    X = as_float_array(X, "X", (2, 3, 4, 5))
    check_finite(X, "X")
    Y, n = _targets(X)
    L, names, single = _label_matrix(labels)
    if L.shape[1] != n:
        raise ValueError(f"labels have {L.shape[1]} words, X has {n}")
    classes, onehots = [], []
    for lab in L:
        try:
            cls, idx = np.unique(lab, return_inverse=True)
        except TypeError as err:  # mixed types
            raise ValueError(f"labels of one property must be comparable values: {err}") from err
        if pd.isna(cls).any():
            raise ValueError("labels contain missing values (NaN/None): label them or drop those words")
        classes.append(cls)
        onehots.append(np.eye(len(cls))[idx])
    k_max = max(len(c) for c in classes)
    P, T = len(L), Y.shape[1]
    coef = np.zeros((P, k_max, T))
    intercept = np.repeat(Y.mean(axis=0)[None], P, axis=0)  # one class: remove the mean
    best = np.full((P, T), np.nan)
    fit = [k for k in range(P) if len(classes[k]) > 1]
    if fit:
        design = np.zeros((len(fit), n, k_max))
        for j, k in enumerate(fit):
            design[j, :, : len(classes[k])] = onehots[k]
        res = ridge_cv(design[0] if len(fit) == 1 else design, Y, alphas=alphas, cv=cv,
                       fit_intercept=True, scoring=scoring, **ridge_kwargs)
        b = np.asarray(res.best_alphas, np.float64).reshape(len(fit), T)
        c = np.asarray(res.coef, np.float64).reshape(len(fit), k_max, T)
        i = np.asarray(res.intercept, np.float64).reshape(len(fit), T)
        # a target the engine leaves undefined (constant over the training
        # words, no penalty chosen) keeps only its mean removed
        ok = np.isfinite(b)
        coef[fit] = np.where(ok[:, None, :], c, 0.0)
        intercept[fit] = np.where(ok, i, intercept[fit])
        best[fit] = b
    return PropertyRemoval(classes=classes, coef=coef, intercept=intercept, best_alphas=best,
                           feature_shape=X.shape[:-2] + X.shape[-1:], names=names,
                           single=single)


def remove_property(X, labels, alphas=np.logspace(-3, 5, 9), cv=5, *, train=None,
                    scoring="r2", **ridge_kwargs) -> np.ndarray:
    """Word features with a linguistic property regressed out (one-hot ridge residuals).

    Parameters
    ----------
    X : (..., n, p) word features; leading axes (layers, checkpoints) are
        fitted in the same engine call, each feature with its own penalty
    labels : (n,) one property; (P, n), a DataFrame or a dict for several
        (the result then has a leading property axis of length P)
    alphas : ridge penalties to choose from by CV (the study: 10^-3..10^5).
        CV keeps a feature's class-mean differences when they do not predict
        held-out words (a large penalty wins there); one tiny penalty
        (``alphas=[1e-6]``) is the exact linear removal: equal class means
        in every feature
    cv : CV folds for the penalty (int: contiguous; the study: 4)
    train : row indices (or a boolean mask) to fit on. None (the published
        convention): fit on all words. Given: fit on those rows, remove from
        every row (the fold-internal variant, no test word in the fit).

    Returns
    -------
    residuals : float64, ``X.shape`` (one property) or ``(P, *X.shape)``
    """
    X = as_float_array(X, "X", (2, 3, 4, 5))
    n = X.shape[-2]
    L, _, single = _label_matrix(labels)
    if train is None:
        rows = np.arange(n)
    else:
        rows = np.asarray(train)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)
    fit = fit_removal(np.take(X, rows, axis=-2), L[0][rows] if single else L[:, rows],
                      alphas, cv, scoring=scoring, **ridge_kwargs)
    return fit.transform(X, L[0] if single else L)
