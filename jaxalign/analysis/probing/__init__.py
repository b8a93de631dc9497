"""Linguistic-property probing and removal (the Pythia study, METHODS.md section 5).

- labels: :func:`labels_from_penn` (per-word labels from gold Penn Treebank
  trees, optionally with the matching UD parse), :func:`labels_from_spacy`
  (the same labels for any text from a spaCy parse: ``pip install
  "jaxalign[parse]"``), :func:`property_classes` (the study's class bins,
  :data:`STUDY_BINS`), :func:`label_agreement` (how often two label sets
  give the same classes: share of words, Cohen's kappa);
- probing: :class:`LogisticRegression` (scikit-learn's L2 objective, JAX
  L-BFGS), :func:`probe_accuracy` (nested CV over C, majority-class chance);
- removal: :func:`remove_property` / :func:`fit_removal` (ridge residuals on
  one-hot labels, on all words or inside a CV fold), and
  :func:`removal_successful` (the study's criterion);
- the study: :func:`removal_effects` (probe accuracy before / after removal
  per property x layer, chance, the criterion, and the held-out alignment of
  original vs residual features with a target), :func:`alignment_r`,
  :func:`plot_removal_effects`.
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
from jaxalign.analysis.probing._spacy import label_agreement, labels_from_spacy
from jaxalign.analysis.probing._study import (
    REMOVALS,
    alignment_r,
    plot_removal_effects,
    removal_effects,
)
from jaxalign.analysis.probing._trees import Tree, parse_trees, read_trees

__all__ = [
    "PHRASE_LABELS",
    "STUDY_BINS",
    "LogisticRegression",
    "ProbeResult",
    "PropertyRemoval",
    "REMOVALS",
    "Tree",
    "alignment_r",
    "fit_removal",
    "label_agreement",
    "labels_from_penn",
    "labels_from_spacy",
    "parse_trees",
    "plot_removal_effects",
    "probe_accuracy",
    "property_classes",
    "read_conllx",
    "read_trees",
    "removal_effects",
    "remove_property",
    "removal_successful",
    "sentence_length_bin",
    "upos_of",
]
