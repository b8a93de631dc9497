r"""Prompted use of a causal LM: text generation and yes/no answer scores.

``generate(model, tokenizer, prompt)`` continues a prompt token by token,
greedily (``temperature=0``) or by sampling from
:math:`\mathrm{softmax}(\ell / T)` (optionally the ``top_k`` largest logits
only), until ``max_new_tokens`` or the end-of-sequence token. There is no
key/value cache: every step runs the model on the whole sequence, right
padded to a fixed length (a causal model's logits at position p only see
tokens <= p), so one compiled program serves every step of a prompt and all
prompts of the same padded length. Fine for the short proposals of a small
local model; a large proposer belongs behind an HTTP endpoint.

``answer_logodds(model, tokenizer, prompts)`` scores how strongly the model
answers "yes" rather than "no" after each prompt:

.. math::

    s(x) = \log p(a_\text{yes} \mid x) - \log p(a_\text{no} \mid x),
    \qquad \log p(a \mid x) = \sum_{t \in a} \log p(a_t \mid x, a_{<t}),

with :math:`a` the answer's tokens (the tokenizer's ids of ``yes`` / ``no``
appended to the prompt's ids, no special tokens): shifted next-token
log-likelihoods in float32 from a float32 log-softmax, summed in float64.
``sigmoid(s)`` is the probability of "yes" given that the answer is one of
the two. Prompts run in right-padded batches of a few lengths (a multiple of
16 tokens), which needs no attention mask with a causal model.

Both take ``chat=True`` to wrap each prompt in the tokenizer's chat template
(a user turn plus the generation prompt), as instruction-tuned models expect.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign._precision import jit as _jit
from jaxalign.lm._facts import is_causal, max_length, model_facts

__all__ = ["answer_logodds", "generate"]

#: Padded lengths are multiples of this (few compiled shapes).
BUCKET = 16


def _check_causal(model, what: str) -> None:
    if not model_facts(model).has_logits or not is_causal(model):
        raise ValueError(f"{type(model).__module__}.{type(model).__name__} is not a causal language model "
                         f"with an LM head: {what} needs next-token probabilities")


def _prompt_text(tokenizer, prompt, chat: bool, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a str, got {type(prompt).__name__}")
    if not chat:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"chat=True but the tokenizer {type(tokenizer).__name__} has no chat template; "
                         "pass chat=False for a plain-text prompt")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def _ids(tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _bos(tokenizer) -> list[int]:
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (int, np.integer)):
            return [int(value)]
    return []


def _padded(n: int, limit: int | None) -> int:
    length = -(-n // BUCKET) * BUCKET
    return length if limit is None else min(length, limit)


@functools.partial(_jit, static_argnums=0)
def _logits_at(graphdef, state, ids, pos):
    """float32 logits (batch, vocab) at position ``pos`` (batch,) of right-padded ``ids``."""
    logits = nnx.merge(graphdef, state)(ids).logits
    return jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0].astype(jnp.float32)


@functools.partial(_jit, static_argnums=0)
def _answer_logprob(graphdef, state, ids, target):
    """Summed log p(ids[:, p] | ids[:, :p]) over positions p where ``target`` (batch,)."""
    logits = nnx.merge(graphdef, state)(ids).logits[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    tok = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.where(target[:, 1:], tok, 0.0)


def generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.0,
             top_k: int | None = None, seed: int = 0, chat: bool = False, stop_at_eos: bool = True) -> str:
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens; returns the new text only (module doc).

    temperature
        0 (default) picks the most likely token (greedy, ties to the lowest
        id, as ``argmax``); > 0 samples with a seeded numpy generator.
    top_k
        sample among the ``top_k`` most likely tokens only (temperature > 0).
    chat
        wrap the prompt in the tokenizer's chat template.
    stop_at_eos
        stop at the tokenizer's end-of-sequence token (not included in the text).

    A prompt longer than the model's maximum length minus ``max_new_tokens``
    keeps its last tokens.
    """
    _check_causal(model, "generate")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    text = _prompt_text(tokenizer, prompt, chat)
    ids = _ids(tokenizer, text) or _bos(tokenizer)
    if not ids:
        raise ValueError("prompt is empty and the tokenizer has no BOS/EOS token to start from")
    limit = max_length(model)
    if limit is not None:
        if max_new_tokens >= limit:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be below the model's maximum length {limit}")
        ids = ids[-(limit - max_new_tokens):]
    eos = getattr(tokenizer, "eos_token_id", None) if stop_at_eos else None
    total = _padded(len(ids) + max_new_tokens, limit)
    buf = np.zeros((1, total), np.int32)
    buf[0, : len(ids)] = ids
    n = len(ids)
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(seed)
    new: list[int] = []
    for _ in range(int(max_new_tokens)):
        logits = np.asarray(_logits_at(graphdef, state, buf, np.array([n - 1], np.int32)))[0].astype(np.float64)
        if temperature == 0:
            token = int(np.argmax(logits))
        else:
            z = logits / temperature
            if top_k is not None and top_k < z.size:
                cut = np.partition(z, -top_k)[-top_k]
                z = np.where(z >= cut, z, -np.inf)
            p = np.exp(z - z.max())
            token = int(rng.choice(z.size, p=p / p.sum()))
        if eos is not None and token == eos:
            break
        new.append(token)
        buf[0, n] = token
        n += 1
    return tokenizer.decode(new, skip_special_tokens=True)


def answer_logodds(model, tokenizer, prompts, *, yes: str | None = None, no: str | None = None,
                   chat: bool = False, batch_size: int = 16) -> np.ndarray:
    """``log p(yes | prompt) - log p(no | prompt)`` for every prompt, (n,) float64 (module doc).

    yes, no
        the answers' text, appended to the prompt as token ids; default
        ``" yes"`` / ``" no"`` (after a plain prompt ending in e.g. "Answer:"),
        or ``"yes"`` / ``"no"`` with ``chat=True`` (the assistant's turn
        starts on a fresh line).
    batch_size
        sequences per forward pass (two per prompt: yes and no).
    """
    _check_causal(model, "answer_logodds")
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of str, got one str (wrap it in a list)")
    prompts = list(prompts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    yes = ("yes" if chat else " yes") if yes is None else yes
    no = ("no" if chat else " no") if no is None else no
    answers = []
    for name, a in (("yes", yes), ("no", no)):
        if not isinstance(a, str) or not a:
            raise ValueError(f"{name} must be a non-empty str, got {a!r}")
        ids = _ids(tokenizer, a)
        if not ids:
            raise ValueError(f"{name}={a!r} encodes to no tokens")
        answers.append(ids)
    if answers[0] == answers[1]:
        raise ValueError(f"yes={yes!r} and no={no!r} encode to the same tokens {answers[0]}")
    limit = max_length(model)
    seqs, targets = [], []
    for i, prompt in enumerate(prompts):
        head = _ids(tokenizer, _prompt_text(tokenizer, prompt, chat, f"prompts[{i}]")) or _bos(tokenizer)
        if not head:
            raise ValueError(f"prompts[{i}] is empty and the tokenizer has no BOS/EOS token to condition on")
        for a in answers:
            if limit is not None and len(head) + len(a) > limit:
                head = head[-(limit - len(a)):]
            seqs.append(head + a)
            targets.append(len(head))
    out = np.zeros(len(seqs), np.float64)
    if not seqs:
        return np.zeros(0, np.float64)
    graphdef, state = nnx.split(model)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    rows = min(batch_size, len(seqs))  # every batch has this many rows (unused ones stay padding): fewer shapes
    for start in range(0, len(order), rows):
        members = order[start: start + rows]
        length = _padded(max(len(seqs[m]) for m in members), limit)
        ids = np.zeros((rows, length), np.int32)
        target = np.zeros((rows, length), bool)
        for r, m in enumerate(members):
            ids[r, : len(seqs[m])] = seqs[m]
            target[r, targets[m]: len(seqs[m])] = True
        tok = np.asarray(_answer_logprob(graphdef, state, ids, target)).astype(np.float64)
        out[members] = tok.sum(axis=1)[: len(members)]
    pairs = out.reshape(len(prompts), 2)
    return pairs[:, 0] - pairs[:, 1]
