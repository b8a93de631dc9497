"""Probing accuracy by nested cross-validation, and the study's criterion of
a successful property removal.

For each outer fold, ``C`` is chosen by the mean accuracy over ``inner``
folds of the outer training rows (ties: the first ``C`` in ``Cs``, as
scikit-learn's ``GridSearchCV``), refitted on the outer training rows and
scored on the outer test rows; ``accuracy`` is the mean over outer folds.
Every fit of the nested CV (outer x (inner + 1) x len(Cs) problems) shares
the features and differs in its sample weights (0/1 fold masks) and ``C``:
one batched L-BFGS call per feature set (``_logistic.fit_batch``).

Chance is the share of the most frequent class over all words, the study's
"proportion of the biggest class". Integer ``outer``/``inner`` mean
contiguous folds (``jaxalign.ridge.check_cv``): words of one sentence share
their sentence-level labels and much of their context, so shuffled folds
would let a probe recognise the sentence rather than the property. Pass
splitters (``GroupKFold``) with ``groups=`` sentence ids to keep sentences
whole. The study used 4 x 4 folds and ``C`` in 10^-3..10^0 (METHODS.md;
its paper says 10^-3..10^1); the defaults here are 5 outer x 3 inner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jaxalign._core.validation import as_float_array, check_finite
from jaxalign.analysis.probing._logistic import fit_batch
from jaxalign.ridge import check_cv

__all__ = ["ProbeResult", "probe_accuracy", "removal_successful"]


@dataclass
class ProbeResult:
    """Outputs of :func:`probe_accuracy` (a leading layer axis when X had one).

    Attributes
    ----------
    accuracy : ([L]) mean held-out accuracy over the outer folds
    chance : majority-class share over all samples
    fold_accuracy : ([L,] outer) held-out accuracy of each outer fold
    best_C : ([L,] outer) the C chosen in each outer fold
    inner_accuracy : ([L,] outer, len(Cs)) mean inner-CV accuracy of each C
    Cs, classes, splits : the grid, the sorted class labels, the outer folds
    """

    accuracy: np.ndarray
    chance: float
    fold_accuracy: np.ndarray
    best_C: np.ndarray
    inner_accuracy: np.ndarray
    Cs: np.ndarray
    classes: np.ndarray
    splits: list = field(repr=False, default_factory=list)

    @property
    def above_chance(self):
        return self.accuracy > self.chance


def probe_accuracy(X, y, Cs=np.logspace(-3, 0, 4), outer=5, inner=3, *, groups=None,
                   tol=1e-10, max_iter=2000, dtype=None) -> ProbeResult:
    """Held-out accuracy of an L2 logistic-regression probe, ``C`` chosen by nested CV.

    Parameters
    ----------
    X : (n, p) or (L, n, p) features (L feature sets, e.g. layers, each probed)
    y : (n,) class labels (any sortable values)
    Cs : inverse penalty strengths to choose from
    outer, inner : int (contiguous folds), a splitter, or a list of
        ``(train, test)`` pairs (``inner`` indexes the outer training rows)
    groups : (n,) optional group labels for group splitters (inner folds get
        the outer training rows' groups)
    tol, max_iter, dtype : solver settings (:class:`LogisticRegression`)

    Returns
    -------
    ProbeResult
    """
    X = as_float_array(X, "X", (2, 3))
    check_finite(X, "X")
    single = X.ndim == 2
    Xl = X[None] if single else X
    n = Xl.shape[1]
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"probing needs at least 2 classes, got only {classes}")
    Cs = np.atleast_1d(np.asarray(Cs, np.float64))
    if Cs.ndim != 1 or not np.all(Cs > 0):
        raise ValueError(f"Cs must be a 1-D sequence of positive numbers, got {Cs}")
    groups = None if groups is None else np.asarray(groups)
    outer_splits = check_cv(outer, n, groups=groups)
    inner_splits = []
    for tr, _ in outer_splits:
        g = None if groups is None else groups[tr]
        inner_splits.append([(tr[a], tr[b]) for a, b in check_cv(inner, len(tr), groups=g)])

    # the batch: per outer fold, every (inner fold, C) then every C on the whole training set
    masks, C_of, evals = [], [], []
    for o, (tr, te) in enumerate(outer_splits):
        for i, (itr, iva) in enumerate(inner_splits[o]):
            for c in Cs:
                masks.append(itr)
                C_of.append(c)
                evals.append(iva)
        for c in Cs:
            masks.append(tr)
            C_of.append(c)
            evals.append(te)
    W = np.zeros((len(masks), n))
    for b, rows in enumerate(masks):
        W[b, rows] = 1.0

    n_out, n_c = len(outer_splits), len(Cs)
    fold_acc = np.zeros((len(Xl), n_out))
    best_C = np.zeros((len(Xl), n_out))
    inner_acc = np.zeros((len(Xl), n_out, n_c))
    for layer, Xi in enumerate(Xl):
        coef, icpt, _, _ = fit_batch(Xi, y_idx, len(classes), W, np.asarray(C_of), tol=tol,
                                     max_iter=max_iter, dtype=dtype)
        acc = np.array([_accuracy(Xi[rows], y_idx[rows], coef[b], icpt[b])
                        for b, rows in enumerate(evals)])
        b = 0
        for o in range(n_out):
            k = len(inner_splits[o])
            inner_acc[layer, o] = acc[b:b + k * n_c].reshape(k, n_c).mean(axis=0)
            b += k * n_c
            j = int(np.argmax(inner_acc[layer, o]))  # first best: ties go to the earlier C
            best_C[layer, o] = Cs[j]
            fold_acc[layer, o] = acc[b + j]
            b += n_c
    chance = float(np.bincount(y_idx).max() / n)
    out = ProbeResult(accuracy=fold_acc.mean(axis=1), chance=chance, fold_accuracy=fold_acc,
                      best_C=best_C, inner_accuracy=inner_acc, Cs=Cs, classes=classes,
                      splits=outer_splits)
    if single:
        out.accuracy = float(out.accuracy[0])
        out.fold_accuracy, out.best_C, out.inner_accuracy = (
            fold_acc[0], best_C[0], inner_acc[0])
    return out


def _accuracy(X, y_idx, coef, intercept):
    z = X @ coef.T + intercept
    pred = (z[:, 0] > 0).astype(int) if coef.shape[0] == 1 else z.argmax(axis=1)
    return float(np.mean(pred == y_idx))


def removal_successful(before, after, chance=None):
    """The study's criterion (section 3.1.5, Table 1 in bold): a property was
    removed successfully when probing accuracy is above chance before the
    removal and below chance after it.

    ``before``/``after`` are :class:`ProbeResult` (their ``chance`` is used
    unless ``chance`` is given) or accuracies (arrays broadcast: layers,
    checkpoints, subjects); returns a boolean (array). The study asks it of
    every layer, checkpoint and participant: ``np.all`` of the result.

    >>> removal_successful(0.64, 0.30, chance=0.59), removal_successful(0.79, 0.79, chance=0.79)
    (True, False)
    """
    if chance is None:
        if not isinstance(before, ProbeResult):
            raise ValueError("chance is required when before/after are accuracies")
        chance = before.chance
    b = before.accuracy if isinstance(before, ProbeResult) else before
    a = after.accuracy if isinstance(after, ProbeResult) else after
    ok = (np.asarray(b) > chance) & (np.asarray(a) < chance)
    return bool(ok) if np.ndim(ok) == 0 else ok
