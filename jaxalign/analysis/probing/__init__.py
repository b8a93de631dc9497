"""Linguistic-property probing and removal (the Pythia study, METHODS.md section 5).

- labels: :func:`labels_from_penn` (per-word labels from gold Penn Treebank
  trees, optionally with the matching UD parse), :func:`property_classes`
  (the study's class bins, :data:`STUDY_BINS`);
- probing: :class:`LogisticRegression` (scikit-learn's L2 objective, JAX
  L-BFGS), :func:`probe_accuracy` (nested CV over C, majority-class chance);
- removal: :func:`remove_property` / :func:`fit_removal` (ridge residuals on
  one-hot labels, on all words or inside a CV fold), and
  :func:`removal_successful` (the study's criterion).
"""

from jaxalign.analysis.probing._labels import (
    PHRASE_LABELS,
    STUDY_BINS,
    labels_from_penn,
    property_classes,
    read_conllx,
    sentence_length_bin,
    upos_of,
)
from jaxalign.analysis.probing._logistic import LogisticRegression
from jaxalign.analysis.probing._probe import ProbeResult, probe_accuracy, removal_successful
from jaxalign.analysis.probing._removal import PropertyRemoval, fit_removal, remove_property
from jaxalign.analysis.probing._trees import Tree, parse_trees, read_trees

__all__ = [
    "PHRASE_LABELS",
    "STUDY_BINS",
    "LogisticRegression",
    "ProbeResult",
    "PropertyRemoval",
    "Tree",
    "fit_removal",
    "labels_from_penn",
    "parse_trees",
    "probe_accuracy",
    "property_classes",
    "read_conllx",
    "read_trees",
    "remove_property",
    "removal_successful",
    "sentence_length_bin",
    "upos_of",
]
