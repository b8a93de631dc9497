"""Statistics engine: permutation tests, FDR, model comparison, noise ceilings.

Arrays in, arrays out (pure JAX at the core); knows nothing of models or files.
"""

from jaxalign.stats._fdr import fdr_correction
from jaxalign.stats._parametric import (
    correlate_across_models,
    pearson_pvalue,
    student_ttest,
    welch_ttest,
)
from jaxalign.stats._ceiling import (
    extrapolation_ceiling,
    normalize_scores,
    split_half_ceiling,
)
from jaxalign.stats._refit import cv_permutation_test
from jaxalign.stats._folds import fold_paired_permutation_test, folds_from_splits
from jaxalign.stats._permutation import (
    paired_permutation_test,
    permutation_indices,
    permutation_test,
    sign_flip_signs,
    sign_flip_test,
)

__all__ = [
    "correlate_across_models",
    "cv_permutation_test",
    "extrapolation_ceiling",
    "fdr_correction",
    "fold_paired_permutation_test",
    "folds_from_splits",
    "normalize_scores",
    "paired_permutation_test",
    "pearson_pvalue",
    "permutation_indices",
    "permutation_test",
    "sign_flip_signs",
    "sign_flip_test",
    "split_half_ceiling",
    "student_ttest",
    "welch_ttest",
]
