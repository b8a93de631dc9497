"""Spectral multi-target ridge regression with per-target CV penalties.

The engine of jaxalign: arrays in, arrays out, no knowledge of models or
files. ``RidgeCV`` is the scikit-learn style estimator; ``ridge_cv`` the
functional interface (several feature sets, custom splits, memory caps);
``nested_cv`` gives held-out predictions for every sample;
``ridge_cv_moments`` the same CV from sums over samples, for recordings whose
samples are spread over devices and hosts; ``ridge_cv_from_moments`` from
per-atom sums formed elsewhere (a delayed design that is never built:
``jaxalign.timing.lagged_ridge_cv``).
"""

from jaxalign._core.memory import parse_bytes
from jaxalign.ridge._cv import (
    ContiguousKFold,
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    ShuffleSplit,
    check_cv,
    is_partition,
)
from jaxalign.ridge._engine import RidgeCVResult, ridge_cv
from jaxalign.ridge._estimator import RidgeCV
from jaxalign.ridge._moments import AtomMoments, ridge_cv_from_moments, ridge_cv_moments, split_atoms
from jaxalign.ridge._nested import NestedCVResult, nested_cv
from jaxalign.ridge._scores import neg_mse, pearson_r, r2_score
from jaxalign.ridge._solve import ridge_cv_flops
from jaxalign.ridge._spectral import spectral_basis

__all__ = [
    "AtomMoments",
    "ContiguousKFold",
    "GroupKFold",
    "KFold",
    "LeaveOneGroupOut",
    "NestedCVResult",
    "RidgeCV",
    "RidgeCVResult",
    "ShuffleSplit",
    "check_cv",
    "is_partition",
    "neg_mse",
    "nested_cv",
    "parse_bytes",
    "pearson_r",
    "r2_score",
    "ridge_cv",
    "ridge_cv_flops",
    "ridge_cv_from_moments",
    "ridge_cv_moments",
    "spectral_basis",
    "split_atoms",
]
