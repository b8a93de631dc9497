"""Argument validation shared by every layer: clear errors before any work.

One home for the checks that several packages used to write for
themselves with slightly different rules and messages (``check_int`` had
four copies, one with its arguments swapped). Messages name the argument
and what it must be, as scikit-learn's do.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_float_array", "check_finite", "check_int"]


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as a Python int, or ValueError when it is not an integer >= ``minimum``.

    Bools are refused (``True`` is an ``int`` in Python, never a count here);
    numpy integers are accepted.

    >>> check_int(3, "n_splits", 2)
    3
    >>> check_int(1, "n_splits", 2)
    Traceback (most recent call last):
    ...
    ValueError: n_splits must be an integer >= 2, got 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} "
            f"({type(value).__name__})."
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return value


def as_float_array(a, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """A numeric array with one of ``ndims`` dimensions, float32 unless already float32/float64.

    Integers and bools become float32 (what the engine computes in); float64
    stays float64 (callers that need its precision get it). TypeError for
    non-numeric input, ValueError for the wrong number of dimensions.
    """
    try:
        arr = np.asarray(a)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} could not be converted to an array: {err}") from err
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == bool
    ):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """ValueError counting the NaN/inf values of ``arr`` and where the first is, if any."""
    if not np.isfinite(arr).all():
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
        where = np.argwhere(bad)[0].tolist()
        kind = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(
            f"{name} contains {n_bad} non-finite value(s) ({kind}), first at index {where}. "
            "Impute or drop them before fitting (e.g. drop NaN voxels/channels)."
        )
