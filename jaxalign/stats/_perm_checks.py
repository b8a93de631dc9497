"""Argument checks and shared constants of the permutation tests.

Validation happens before any device work and names the argument; the
constants (schemes, alternatives, the tie tolerance) are the tests' contract.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from jaxalign._core.validation import as_float_array as _as_float_array, check_finite as _check_finite
from jaxalign._core.validation import check_int as _check_int  # noqa: F401  (re-exported)

SCHEMES = ("permute", "block", "circular")
ALTERNATIVES = ("greater", "less", "two-sided")
TIE_TOL = 1e-5

def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _check_scheme(n_samples, scheme, block_size):
    """Validated ``(scheme, block_size)``; ``block_size`` None for 'permute'.

    ``scheme=None`` means "block" when a ``block_size`` is given, else
    "permute".
    """
    if scheme is None:
        scheme = "permute" if block_size is None else "block"
    _check_choice(scheme, "scheme", SCHEMES)
    if scheme == "permute":
        if block_size is not None:
            raise ValueError(
                "block_size is only used by scheme='block' or 'circular'; "
                f"got block_size={block_size!r} with scheme='permute'"
            )
        return scheme, None
    if scheme == "block" and block_size is None:
        raise ValueError("scheme='block' needs a block_size (e.g. ~10 TRs for fMRI)")
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
            raise ValueError(f"block_size must be an integer, got {block_size!r}")
        block_size = int(block_size)
        if not 1 <= block_size <= n_samples:
            raise ValueError(
                f"block_size must be between 1 and n_samples={n_samples}, got {block_size}"
            )
    if scheme == "block" and math.ceil(n_samples / block_size) < 2:
        raise ValueError(
            f"block_size={block_size} leaves a single block of {n_samples} samples: "
            "nothing to permute; use a smaller block_size"
        )
    if scheme == "circular":
        lo = block_size or 1
        if n_samples - lo < lo:
            raise ValueError(
                f"circular shifts need block_size <= n_samples // 2 = {n_samples // 2} "
                f"(shifts are drawn from [block_size, n_samples - block_size]), got {lo}"
            )
    return scheme, block_size


def _targets(a, name):
    """Numeric 1-D/2-D array. Finiteness is checked by the kernels as the
    batches stream through (no extra pass over the data), then reported by
    :func:`_raise_nonfinite` with the first offending index."""
    return _as_float_array(a, name, (1, 2))


def _raise_nonfinite(arrays, names, cols):
    for a, name in zip(arrays, names):
        _check_finite(a[:, cols] if a.ndim == 2 else a, name)  # raises ValueError
    raise ValueError("non-finite values in the inputs")  # pragma: no cover


def _warn_degenerate(const, what, names, stacklevel=4):
    n = int(const.sum())
    if n:
        first = np.flatnonzero(const)[:5].tolist()
        warnings.warn(
            f"{n} of {const.size} targets have {what} in {' or '.join(names)} "
            f"(first: {first}); their statistic and p-values are NaN.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _check_pair(y_true, preds, names):
    y_true = _targets(y_true, "y_true")
    out = []
    for p, name in zip(preds, names):
        p = _targets(p, name)
        if p.shape != y_true.shape:
            raise ValueError(f"y_true {y_true.shape} and {name} {p.shape} differ in shape")
        out.append(p)
    ravel = y_true.ndim == 1
    if ravel:
        y_true = y_true[:, None]
        out = [p[:, None] for p in out]
    n, t = y_true.shape
    if n < 3:
        raise ValueError(f"need at least 3 samples (axis 0) for a permutation test, got {n}")
    if t < 1:
        raise ValueError(f"y_true has no targets (shape {y_true.shape})")
    return y_true, out, ravel
