"""Log-likelihoods and losses of causal language models: pure, jit-able functions.

Notation: ``logits`` (batch, seq, vocab) are a causal LM's outputs for token
ids ``ids`` (batch, seq), so ``logits[:, t]`` predicts ``ids[:, t + 1]``.

Shifted next-token log-likelihood of token t >= 1 (nats)::

    lp[t] = logits[t - 1, ids[t]] - logsumexp(logits[t - 1, :])

The first token has no prediction (nothing before it). The public code of
the MEG fine-tuning study sums raw, unshifted logits of the option tokens
(``docs/METHODS.md`` section 4): neither normalised nor predicting the right
token. Here every term is a proper log-probability of token t given tokens
0..t-1, computed in float32 whatever the model's dtype.

Multiple choice: option j of an item scores ``s_j = sum of lp[t]`` over its
tokens (``target`` marks them); the loss is the cross-entropy of the options'
softmax::

    loss = -log softmax(s)[label] = logsumexp_j s_j - s_label

Causal LM: the mean of ``-lp[t]`` over the scored tokens, perplexity
``exp(loss)``. A mix with ratio r: ``(1 - r) * mc_loss + r * lm_loss``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "causal_lm_loss",
    "mixed_loss",
    "multiple_choice_accuracy",
    "multiple_choice_loss",
    "sequence_logprob",
    "token_logprobs",
]


def token_logprobs(logits: jax.Array, ids: jax.Array) -> jax.Array:
    """``lp[:, t - 1] = log p(ids[:, t] | ids[:, :t])`` for t = 1..seq-1: shape (batch, seq - 1), float32."""
    logits = logits[:, :-1].astype(jnp.float32)
    picked = jnp.take_along_axis(logits, ids[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def sequence_logprob(logits: jax.Array, ids: jax.Array, target: jax.Array) -> jax.Array:
    """Sum of the shifted log-likelihoods of the tokens where ``target`` (batch, seq) is true: (batch,).

    ``target[:, 0]`` must be false (the first token has no prediction); it is ignored.
    """
    return jnp.sum(jnp.where(target[:, 1:], token_logprobs(logits, ids), 0.0), axis=-1)


def multiple_choice_loss(scores: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy of the options: ``logsumexp(scores) - scores[label]`` per item.

    scores: (items, options), e.g. :func:`sequence_logprob` of each option;
    labels: (items,) 0-based; weights: (items,) (default 1; 0 drops an item,
    e.g. batch padding). The mean is weighted: ``sum(w * nll) / sum(w)``.
    """
    scores = scores.astype(jnp.float32)
    nll = jax.nn.logsumexp(scores, axis=-1) - jnp.take_along_axis(scores, labels[:, None], axis=-1)[:, 0]
    w = jnp.ones_like(nll) if weights is None else weights.astype(jnp.float32)
    return jnp.sum(w * nll) / jnp.sum(w)


def multiple_choice_accuracy(scores: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted share of items whose highest-scoring option is the label (ties: the first option)."""
    hit = (jnp.argmax(scores, axis=-1) == labels).astype(jnp.float32)
    w = jnp.ones_like(hit) if weights is None else weights.astype(jnp.float32)
    return jnp.sum(w * hit) / jnp.sum(w)


def causal_lm_loss(logits: jax.Array, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood (nats per token) of tokens 1..seq-1 where ``mask`` (batch, seq) is 1.

    ``mask`` is the padding mask (default: every token); a token is scored
    when it and the token before it are real. Perplexity is ``exp`` of this.
    """
    lp = token_logprobs(logits, ids)
    if mask is None:
        return -jnp.mean(lp)
    m = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    return -jnp.sum(jnp.where(m, lp, 0.0)) / jnp.sum(m)


def mixed_loss(mc_loss: jax.Array, lm_loss: jax.Array, lm_ratio: float) -> jax.Array:
    """``(1 - lm_ratio) * mc_loss + lm_ratio * lm_loss`` (lm_ratio in [0, 1])."""
    return (1.0 - lm_ratio) * mc_loss + lm_ratio * lm_loss
