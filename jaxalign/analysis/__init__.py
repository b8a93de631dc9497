"""Analyses built on the engine: arrays (and labels) in, results out.

The layer between the engine (``jaxalign.ridge``, ``jaxalign.stats``) and
the studies (``jaxalign.studies``): each analysis is functions a study kind
calls, usable on their own. It imports the engine and ``_core`` only (no
models, recordings or files of a study; import contracts in pyproject.toml).

Modules
-------
probing
    Linguistic properties of words from gold parses, their removal from word
    features (ridge residuals on one-hot labels), logistic-regression probes
    with nested CV, and the Pythia study's criterion of a successful removal.
reading
    Reading times (instruction-tuning study): held-out regression of reading
    time on control predictors (word length, log frequency) and surprisal
    with spillover, folds over stories, the gain over the controls and its
    tests; word controls (``wordfreq``, extra ``jaxalign[reading]``); the
    split-half ceiling from per-reader data.
models
    Model-level correlations: alignment scores across models vs model
    properties (log parameters, benchmark scores), Pearson r, p and FDR over
    all pairs, and a labelled scatter figure.

divergence
    MEG study: per-word prediction error over significant channels,
    sentences ranked into divergent / convergent sets (research and
    validation splits), hypotheses proposed by an LLM (OpenAI-compatible
    endpoint or a local model) and their validity from a verifier, with
    t-tests and FDR. Models enter as callables (``jaxalign.lm.generate`` /
    ``answer_logodds``), so this layer still imports no model code.

compare
    Base vs fine-tuned models (MEG study): per target and window the paired
    permutation test of r(y, pred_ft) - r(y, pred_base), BH-FDR over all
    targets x windows, % better / worse / unchanged per window, the
    word-category test of per-word error improvement, and the figures
    (% per window, MNE sensor topomaps, category curves); over listeners
    (fMRI), ``listener_change``: per layer and ROI the sign-flip test of
    per-listener r(tuned) - r(base), BH-FDR, and its figure.
"""

from jaxalign.analysis import compare, divergence, models, probing, reading

__all__ = ["compare", "divergence", "models", "probing", "reading"]
