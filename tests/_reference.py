"""Float64 numpy references shared by test modules (imported as ``_reference``)."""

from __future__ import annotations

import numpy as np


def score64(scoring, y, f):
    yc, fc = y - y.mean(0), f - f.mean(0)
    if scoring == "pearson":
        return (yc * fc).sum(0) / np.sqrt((yc**2).sum(0) * (fc**2).sum(0))
    sse = ((y - f) ** 2).sum(0)
    if scoring == "r2":
        return 1 - sse / (yc**2).sum(0)
    return -sse / len(y)


def ridge_cv64(X, Y, alphas, splits, scoring):
    """Closed-form float64 ridge CV: mean fold score per penalty, best penalty
    (scores within 1e-6 are ties, to the larger penalty), coefficients
    refitted on all samples."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    p = X.shape[1]
    scores = np.zeros((len(alphas), Y.shape[1]))
    for tr, va in splits:
        G, B = X[tr].T @ X[tr], X[tr].T @ Y[tr]
        for i, a in enumerate(alphas):
            W = np.linalg.solve(G + a * np.eye(p), B)
            scores[i] += score64(scoring, Y[va], X[va] @ W) / len(splits)
    # the engine's rule: scores within 1e-6 of the best are ties, won by the larger penalty
    top = scores.max(0)
    tied = scores >= top - 1e-6 * np.maximum(np.abs(top), 1)
    best = len(alphas) - 1 - np.argmax(tied[::-1], axis=0)
    coef = np.stack([np.linalg.solve(X.T @ X + alphas[b] * np.eye(p), X.T @ Y[:, t])
                     for t, b in enumerate(best)], axis=1)
    return scores, np.asarray(alphas)[best], coef
