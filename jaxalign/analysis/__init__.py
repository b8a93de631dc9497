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

Planned here (ARCHITECTURE.md): divergence analysis, reading-time
alignment, base-vs-fine-tuned comparisons, model-level correlations.
"""

from jaxalign.analysis import probing

__all__ = ["probing"]
