"""Divergence analysis of the MEG study (METHODS.md section 6): where does an encoding model fail, and why?

1. ``word_errors``: per-word squared error of held-out predictions over the
   significant channels (boolean masks), averaged over a window range
   (default ``STUDY_WINDOWS``, 12..16 = 300-425 ms); ``significant_channels``
   gives the mask from held-out r (one-sided p < 0.001).
2. ``segment_sentences`` / ``sentence_scores``: sentences at . ! ? (or given
   ids), each scored by its mean word error and ranked (more than 3 words).
3. ``divergence_sets``: the n worst (divergent) and n best (convergent)
   sentences, each split 80/20 into research (for the proposer) and
   validation (for validity), groups the same way round in both.
4. ``propose_hypotheses``: prompts from sampled divergent / convergent
   sentences, sent to a ``ChatEndpoint`` (any OpenAI-compatible server, with
   retries, timeouts and errors that name the URL) or a local model
   (``jaxalign.lm.generate``), parsed into a deduplicated list;
   failures are kept in the result.
5. ``hypothesis_validity``: a verifier's V(h, x) (``PromptVerifier`` around
   ``jaxalign.lm.answer_logodds``, or any function), validity = mean over
   divergent - mean over convergent, one-sided t-test, FDR over hypotheses.
6. ``plot_divergence``: the ranked sentences with the sets, validity with FDR stars.
"""

from jaxalign.analysis.divergence._errors import (
    STUDY_WINDOWS,
    DivergenceSets,
    Groups,
    divergence_sets,
    segment_sentences,
    sentence_scores,
    significant_channels,
    word_errors,
)
from jaxalign.analysis.divergence._plot import plot_divergence
from jaxalign.analysis.divergence._proposer import (
    PROPOSER_TEMPLATE,
    ChatEndpoint,
    ChatError,
    Proposals,
    ProposerError,
    parse_hypotheses,
    propose_hypotheses,
    proposer_prompt,
)
from jaxalign.analysis.divergence._validity import VERIFIER_TEMPLATE, PromptVerifier, Validity, hypothesis_validity

__all__ = [
    "PROPOSER_TEMPLATE",
    "STUDY_WINDOWS",
    "VERIFIER_TEMPLATE",
    "ChatEndpoint",
    "ChatError",
    "DivergenceSets",
    "Groups",
    "PromptVerifier",
    "Proposals",
    "ProposerError",
    "Validity",
    "divergence_sets",
    "hypothesis_validity",
    "parse_hypotheses",
    "plot_divergence",
    "propose_hypotheses",
    "proposer_prompt",
    "segment_sentences",
    "sentence_scores",
    "significant_channels",
    "word_errors",
]
