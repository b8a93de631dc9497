"""Per-target scores, computed from fused sufficient statistics.

One home for the scores of the whole library. Two entry points:

* :func:`scores_from_stats` turns the statistics accumulated by the CV solver
  (never the predictions themselves) into a score per (penalty, target);
* :func:`pearson_r`, :func:`r2_score`, :func:`neg_mse` score explicit
  predictions ``(n_samples, n_targets)``.

Definitions, for one target with ``n`` samples, truth ``y``, prediction ``f``:

* Pearson r = sum((y - ybar)(f - fbar)) / sqrt(sum((y - ybar)^2) sum((f - fbar)^2))
* R^2       = 1 - sum((y - f)^2) / sum((y - ybar)^2)
* neg MSE   = -sum((y - f)^2) / n

A target with zero variance (or a constant prediction, for Pearson) has no
defined score and gets NaN, never a number borrowed from its neighbours.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxalign._precision import jit as _jit

__all__ = ["SCORINGS", "center", "check_scoring", "pearson_r", "r2_score", "neg_mse", "scores_from_stats"]

SCORINGS = ("pearson", "r2", "neg_mse")


def center(x, axis=0):
    """``(x - mean, mean)`` with the corrected two-pass algorithm.

    A second pass removes the rounding error of the float32 mean, which
    matters when the offset is large relative to the variation (raw BOLD
    around 1000, a prediction that is nearly its intercept).
    """
    mean = jnp.mean(x, axis=axis, keepdims=True)
    xc = x - mean
    fix = jnp.mean(xc, axis=axis, keepdims=True)
    return xc - fix, jnp.squeeze(mean + fix, axis)


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


def _safe_div(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), jnp.nan)


def scores_from_stats(scoring: str, cov, var_pred, var_true, sse, n):
    """Score from sums over samples (all arrays broadcast together).

    Parameters
    ----------
    cov : sum((y - ybar)(f - fbar))
    var_pred : sum((f - fbar)^2)
    var_true : sum((y - ybar)^2)
    sse : sum((y - f)^2)
    n : number of samples
    """
    if scoring == "pearson":
        return _safe_div(cov, jnp.sqrt(var_true * var_pred))
    if scoring == "r2":
        return jnp.where(var_true > 0, 1.0 - _safe_div(sse, var_true), jnp.nan)
    if scoring == "neg_mse":
        return jnp.where(var_true > 0, -sse / n, jnp.nan)
    raise ValueError(f"unknown scoring {scoring!r}")


@_jit
def _moments(y_true, y_pred):
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    yc, _ = center(y_true)
    fc, _ = center(y_pred)
    cov = jnp.sum(yc * fc, axis=0)
    var_true = jnp.sum(yc * yc, axis=0)
    var_pred = jnp.sum(fc * fc, axis=0)
    sse = jnp.sum((y_true - y_pred) ** 2, axis=0)
    return cov, var_pred, var_true, sse


def _score(scoring, y_true, y_pred):
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.ndim == 0 or y_true.shape[0] < 2:
        raise ValueError("need at least 2 samples along axis 0 to score")
    return scores_from_stats(scoring, *_moments(y_true, y_pred), y_true.shape[0])


def pearson_r(y_true, y_pred):
    """Pearson correlation per target (column); NaN for constant columns.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(6.0).reshape(3, 2)
    >>> np.asarray(pearson_r(y, 2 * y + 1)).round(6).tolist()
    [1.0, 1.0]
    """
    return _score("pearson", y_true, y_pred)


def r2_score(y_true, y_pred):
    """Coefficient of determination per target; NaN for constant truths."""
    return _score("r2", y_true, y_pred)


def neg_mse(y_true, y_pred):
    """Negative mean squared error per target; NaN for constant truths."""
    return _score("neg_mse", y_true, y_pred)
