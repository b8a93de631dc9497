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
defined score and gets NaN, never a number borrowed from its neighbours;
neg MSE is defined for any truth (also one sample or a constant one).

Scale. Every score is computed from columns divided by their largest absolute
(centred) value first, so the float32 sums neither underflow nor overflow:
MEG in Tesla (~1e-12), raw scanner units (~1e4) or anything finite in float32
gives the same r and R^2 as the data in unit scale (tested from 1e-25 to
1e20 against float64 numpy). neg MSE, which carries the data's units squared,
is finished in float64 on the host (1e-50 is no float32 number).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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


def _unit_scale(x, axis=0):
    """Largest absolute value along ``axis`` (keepdims), 1 where it is 0."""
    m = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
    return jnp.where(m > 0, m, 1.0)


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
    if scoring == "pearson":  # two square roots: the product of the variances under/overflows sooner
        return _safe_div(cov, jnp.sqrt(var_true) * jnp.sqrt(var_pred))
    if scoring == "r2":
        return jnp.where(var_true > 0, 1.0 - _safe_div(sse, var_true), jnp.nan)
    if scoring == "neg_mse":  # defined whatever the truth (one sample, constant)
        return -sse / n
    raise ValueError(f"unknown scoring {scoring!r}")


@_jit
def _moments(y_true, y_pred):
    """Sums over axis 0 of unit-scaled columns, and the truth's scale.

    Truth and prediction are centred, then divided by their own largest
    absolute centred value (``cov`` and ``var_pred`` are those of the scaled
    columns: Pearson r is unchanged). ``sse`` and ``var_true`` are in units
    of the truth's scale ``sy`` (R^2 is unchanged; MSE = sse * sy^2 / n).
    """
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    yc, _ = center(y_true)
    fc, _ = center(y_pred)
    sy, sf = _unit_scale(yc), _unit_scale(fc)
    yn, fn = yc / sy, fc / sf
    cov = jnp.sum(yn * fn, axis=0)
    var_true = jnp.sum(yn * yn, axis=0)
    var_pred = jnp.sum(fn * fn, axis=0)
    # constant truth: sy = 1 and the raw residual's own scale is used instead
    se = _unit_scale(y_true - y_pred)
    sy_sse = jnp.where(jnp.max(jnp.abs(yc), axis=0, keepdims=True) > 0, sy, se)
    sse = jnp.sum(((y_true - y_pred) / sy_sse) ** 2, axis=0)
    return cov, var_pred, var_true, sse, jnp.squeeze(sy_sse, 0)


def _host_shift(scoring, y_true, y_pred):
    """Float64 inputs lose their offsets in float64 before float32 sees them:
    a prediction that is nearly its intercept (1000 + 1e-5 * signal) keeps its
    variation. Pearson centres each column by its own mean; R^2 and MSE shift
    both by the truth's mean (the residual is unchanged)."""
    if not any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in (y_true, y_pred)):
        return y_true, y_pred
    y = np.asarray(y_true, np.float64)
    f = np.asarray(y_pred, np.float64)
    if y.shape != f.shape or y.ndim == 0:
        return y_true, y_pred  # reported below
    shift = y.mean(axis=0)
    return y - shift, f - (f.mean(axis=0) if scoring == "pearson" else shift)


def _is_f64(a):
    return isinstance(a, np.ndarray) and a.dtype == np.float64


def _score64(scoring, y, f):
    """The same scores in float64 numpy, for float64 host inputs (exact to
    float64 rounding; the unit scaling keeps any finite scale in range)."""
    n = y.shape[0]
    yc, fc = y - y.mean(axis=0), f - f.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # constant columns exactly (a float64 mean of 0.4s is not exactly 0.4)
        sy = np.where(np.ptp(y, axis=0) > 0, np.max(np.abs(yc), axis=0), 0.0)
        sf = np.where(np.ptp(f, axis=0) > 0, np.max(np.abs(fc), axis=0), 0.0)
        if scoring == "pearson":
            yn = np.where(sy > 0, yc / np.where(sy > 0, sy, 1), 0.0)
            fn = np.where(sf > 0, fc / np.where(sf > 0, sf, 1), 0.0)
            den = np.sqrt(np.sum(yn * yn, axis=0)) * np.sqrt(np.sum(fn * fn, axis=0))
            return np.where(den > 0, np.sum(yn * fn, axis=0) / np.where(den > 0, den, 1), np.nan)
        res = y - f
        s = np.where(sy > 0, sy, np.max(np.abs(res), axis=0))
        s = np.where(s > 0, s, 1.0)
        sse = np.sum(np.square(res / s), axis=0)
        if scoring == "r2":
            vt = np.sum(np.square(yc / s), axis=0)
            return np.where(sy > 0, 1.0 - sse / np.where(sy > 0, vt, 1), np.nan)
        return -sse * s * s / n


def _score(scoring, y_true, y_pred):
    if _is_f64(y_true) and _is_f64(y_pred) and y_true.shape == y_pred.shape and (
            y_true.ndim >= 1 and y_true.shape[0] >= (1 if scoring == "neg_mse" else 2)):
        return _score64(scoring, y_true, y_pred)
    y_true, y_pred = _host_shift(scoring, y_true, y_pred)
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    n_min = 1 if scoring == "neg_mse" else 2
    if y_true.ndim == 0 or y_true.shape[0] < n_min:
        raise ValueError(f"need at least {n_min} sample(s) along axis 0 to score {scoring}")
    cov, var_pred, var_true, sse, scale = _moments(y_true, y_pred)
    n = y_true.shape[0]
    if scoring == "neg_mse":  # back to the data's units, in float64 (may leave float32's range)
        s = np.asarray(scale, np.float64)
        return -np.asarray(sse, np.float64) * s * s / n
    return scores_from_stats(scoring, cov, var_pred, var_true, sse, n)


def pearson_r(y_true, y_pred):
    """Pearson correlation per target (column); NaN for constant columns.

    Float64 numpy inputs are scored in float64 on the host (float64 out);
    anything else in float32 with JAX (jit, any device).

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
    """Negative mean squared error per target (float64 numpy: the data's units
    squared may leave float32's range); defined for any truth."""
    return _score("neg_mse", y_true, y_pred)
