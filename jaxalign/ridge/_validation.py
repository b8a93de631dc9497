"""Input validation for the ridge engine: clear errors before any XLA work."""

from __future__ import annotations

import warnings

import numpy as np

from jaxalign._core.validation import as_float_array, check_finite

__all__ = ["check_design", "check_targets", "check_alphas", "constant_targets"]


def check_design(X, name: str = "X") -> np.ndarray:
    """(n, p) or (n_layers, n, p) float array, finite, at least one feature."""
    X = as_float_array(X, name, (2, 3))
    if X.shape[-1] < 1 or X.shape[-2] < 1:
        raise ValueError(f"{name} has an empty axis: shape {X.shape}")
    check_finite(X, name)
    return X


def check_targets(Y, n_samples: int, name: str = "Y") -> tuple[np.ndarray, bool]:
    """(n, T) float array (1-D promoted), finite, matching sample count.

    Returns the 2-D array and whether the input was 1-D.
    """
    Y = as_float_array(Y, name, (1, 2))
    ravel = Y.ndim == 1
    if ravel:
        Y = Y[:, None]
    if Y.shape[0] != n_samples:
        raise ValueError(
            f"X and {name} have different numbers of samples: {n_samples} vs {Y.shape[0]}"
        )
    if Y.shape[1] < 1:
        raise ValueError(f"{name} has no targets (shape {Y.shape})")
    check_finite(Y, name)
    return Y, ravel


def check_alphas(alphas) -> np.ndarray:
    if isinstance(alphas, (str, bytes)):
        raise ValueError(f"alphas must be a sequence of positive numbers (e.g. "
                         f"np.logspace(-2, 8, 11)), got the string {alphas!r}")
    try:
        a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"alphas must be a sequence of positive numbers, got {alphas!r} "
                         f"({err})") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D sequence, got shape {a.shape}")
    if not np.isfinite(a).all() or (a <= 0).any():
        raise ValueError(f"alphas must be finite and > 0, got {a.tolist()}")
    return a


def constant_targets(Y: np.ndarray, warn: bool = True) -> np.ndarray:
    """Boolean mask of zero-variance targets, with a warning when any exist."""
    const = np.ptp(Y, axis=0) == 0
    n = int(const.sum())
    if n and warn:
        first = np.flatnonzero(const)[:5].tolist()
        warnings.warn(
            f"{n} of {Y.shape[1]} targets have zero variance (first: {first}); "
            "their scores are NaN, their coefficients 0 and best alpha NaN.",
            UserWarning,
            stacklevel=3,
        )
    return const
