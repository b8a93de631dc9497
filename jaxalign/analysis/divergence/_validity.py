r"""Validity of natural-language hypotheses: does a hypothesis describe the divergent sentences?

A verifier gives every (hypothesis ``h``, sentence ``x``) a score
:math:`V(h, x)`. With a language model as verifier (``PromptVerifier``
around ``jaxalign.lm.answer_logodds``) the prompt asks whether the sentence
has the property, and

.. math::

    s(h, x) = \log p(\text{yes} \mid \text{prompt}) - \log p(\text{no} \mid \text{prompt}),
    \qquad V(h, x) = \sigma(s) = \frac{p(\text{yes})}{p(\text{yes}) + p(\text{no})}

(``scale="probability"``, the verifier's probability of "yes" as in the D5
framework the study uses; ``scale="logodds"`` keeps :math:`s`). The
validity of ``h`` is

.. math::

    \mathrm{validity}(h) = \overline{V(h, D)} - \overline{V(h, C)}

over the divergent sentences :math:`D` and convergent ones :math:`C` (the
validation split), with a one-sided two-sample t-test of
:math:`\overline{V(h, D)} > \overline{V(h, C)}` (Student's by default,
Welch's with ``equal_var=False``; ``jaxalign.stats``, equal to
``scipy.stats.ttest_ind(..., alternative="greater")``) and
Benjamini-Hochberg FDR over the hypotheses (``jaxalign.stats.fdr_correction``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jaxalign.stats import fdr_correction, student_ttest, welch_ttest

__all__ = ["VERIFIER_TEMPLATE", "PromptVerifier", "Validity", "hypothesis_validity"]

#: The verifier's question; ``{hypothesis}`` and ``{sentence}`` are filled in.
#: Hypotheses complete "Compared to Group B, a sentence in Group A ..." (the proposer's prompt).
VERIFIER_TEMPLATE = (
    "Check whether a sentence has a property.\n"
    "Property: the sentence {hypothesis}\n"
    "Sentence: {sentence}\n"
    "Does the sentence have the property? Answer yes or no.\n"
    "Answer:"
)


class PromptVerifier:
    """A verifier from a prompt scorer: ``PromptVerifier(score_prompts)(hypothesis, sentences)``.

    ``score_prompts(list_of_prompts) -> (n,) log-odds of yes vs no``, e.g.
    ``functools.partial(jaxalign.lm.answer_logodds, model, tokenizer)``;
    ``template`` (default ``VERIFIER_TEMPLATE``) must contain ``{hypothesis}``
    and ``{sentence}``. Every (hypothesis, sentence) prompt of one
    hypothesis goes to the scorer in one call.
    """

    def __init__(self, score_prompts: Callable[[list], np.ndarray], template: str = VERIFIER_TEMPLATE):
        if not callable(score_prompts):
            raise TypeError(f"score_prompts must be callable (prompts -> log-odds), got {type(score_prompts).__name__}")
        if not isinstance(template, str) or "{hypothesis}" not in template or "{sentence}" not in template:
            raise ValueError("template must be a str containing '{hypothesis}' and '{sentence}'")
        self.score_prompts = score_prompts
        self.template = template

    def prompts(self, hypothesis: str, sentences: Sequence[str]) -> list:
        return [self.template.format(hypothesis=hypothesis, sentence=s) for s in sentences]

    def __call__(self, hypothesis: str, sentences: Sequence[str]) -> np.ndarray:
        return np.asarray(self.score_prompts(self.prompts(hypothesis, sentences)), dtype=np.float64)


@dataclass(frozen=True)
class Validity:
    """Result of :func:`hypothesis_validity`.

    Attributes
    ----------
    table : DataFrame
        One row per hypothesis, in the given order: ``hypothesis``,
        ``validity``, ``mean_divergent``, ``mean_convergent``, ``se`` (standard
        error of the difference, as the t-test's), ``t``, ``p`` (one-sided),
        ``p_fdr``, ``significant`` (``p_fdr <= alpha``).
    divergent, convergent : ndarray, (n_hypotheses, n_sentences)
        Every V(h, x) on the scale used.
    scale, equal_var, alpha, fdr_method
        The settings.
    """

    table: pd.DataFrame
    divergent: np.ndarray
    convergent: np.ndarray
    scale: str
    equal_var: bool
    alpha: float
    fdr_method: str

    def ranked(self) -> pd.DataFrame:
        """The table sorted by validity, highest first."""
        return self.table.sort_values("validity", ascending=False, kind="stable").reset_index(drop=True)


def _texts(x, name: str, minimum: int) -> list:
    if isinstance(x, str):
        raise TypeError(f"{name} must be a list of str, got one str")
    x = list(x)
    bad = [i for i, s in enumerate(x) if not isinstance(s, str)]
    if bad:
        raise TypeError(f"{name}[{bad[0]}] must be a str, got {type(x[bad[0]]).__name__}")
    if len(x) < minimum:
        raise ValueError(f"{name} needs at least {minimum} entries, got {len(x)}")
    return x


def _scores(verifier, h: str, sentences: list, name: str) -> np.ndarray:
    v = np.asarray(verifier(h, sentences), dtype=np.float64)
    if v.shape != (len(sentences),):
        raise ValueError(f"the verifier returned shape {v.shape} for {len(sentences)} {name} sentences "
                         f"(hypothesis {h!r}); it must return one score per sentence")
    if not np.isfinite(v).all():
        raise ValueError(f"the verifier returned non-finite scores for {name} sentences (hypothesis {h!r})")
    return v


def hypothesis_validity(hypotheses, divergent, convergent, verifier, *, scale: str = "probability",
                        equal_var: bool = True, alpha: float = 0.05, fdr_method: str = "bh") -> Validity:
    """Validity, one-sided t-test and FDR of every hypothesis (module doc).

    Parameters
    ----------
    hypotheses : list of str
    divergent, convergent : list of str
        The sentences of each group (``DivergenceSets.validation``; at least 2 each).
    verifier : callable ``(hypothesis, sentences) -> (n,) log-odds``
        ``PromptVerifier(partial(lm.answer_logodds, model, tok))`` or any
        function giving log p(yes) - log p(no).
    scale : {"probability", "logodds"}
        V = sigmoid(log-odds) (default) or the log-odds themselves.
    equal_var : bool
        Student's t-test (default) or Welch's.
    alpha, fdr_method
        FDR level and method ("bh" | "by") over the hypotheses.
    """
    hypotheses = _texts(hypotheses, "hypotheses", 1)
    divergent = _texts(divergent, "divergent", 2)
    convergent = _texts(convergent, "convergent", 2)
    if not callable(verifier):
        raise TypeError(f"verifier must be callable (hypothesis, sentences) -> scores, got {type(verifier).__name__}")
    if scale not in ("probability", "logodds"):
        raise ValueError(f"scale must be 'probability' or 'logodds', got {scale!r}")
    vd = np.stack([_scores(verifier, h, divergent, "divergent") for h in hypotheses])
    vc = np.stack([_scores(verifier, h, convergent, "convergent") for h in hypotheses])
    if scale == "probability":
        vd, vc = 1.0 / (1.0 + np.exp(-vd)), 1.0 / (1.0 + np.exp(-vc))
    test = student_ttest if equal_var else welch_ttest
    t, p = test(vd, vc, alternative="greater", axis=1)
    t, p = np.atleast_1d(np.asarray(t, np.float64)), np.atleast_1d(np.asarray(p, np.float64))
    reject, p_fdr = fdr_correction(p, alpha=alpha, method=fdr_method)
    diff = vd.mean(1) - vc.mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(t != 0, diff / t, np.nan)
    table = pd.DataFrame({
        "hypothesis": hypotheses, "validity": diff, "mean_divergent": vd.mean(1), "mean_convergent": vc.mean(1),
        "se": se, "t": t, "p": p, "p_fdr": p_fdr, "significant": np.asarray(reject, bool),
    })
    return Validity(table, vd, vc, scale, bool(equal_var), float(alpha), fdr_method)
