"""Per-word surprisal in bits: ``word_surprisal``.

The surprisal of word i is ``-sum_t log2 p(token_t | tokens before t)`` over
the word's tokens (Futrell 2018 as used in Brain-Score: whole story so far as
context, summed over the word's tokens). The text and the word -> token
assignment are those of ``word_features`` (words joined by single spaces, no
special tokens; see ``jaxalign.features._align``).

No BOS token by default: the first token of the text has no preceding token
and no probability, so the first word's surprisal is NaN (and any word whose
tokens include it). ``bos=True`` prepends the tokenizer's BOS token id
(``bos_token_id``, else ``eos_token_id`` as GPT-2 uses ``<|endoftext|>`` for
both), giving the first word a surprisal conditioned on BOS.

Long stories: with ``n`` tokens (BOS included) above the model's max length
``M``, windows of ``M`` tokens advance by ``stride`` (default ``M // 2``)
and every token is scored once, in the first window whose newly covered part
contains it: tokens of the first window see all their previous tokens, later
ones see between ``M - stride`` and ``M - 1`` previous tokens (the standard
strided-perplexity scheme; ``stride=1`` gives every token a full
``M - 1``-token context, at one pass per token).
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign._precision import jit as _jit
from jaxalign.features import _cache
from jaxalign.features._align import align_words
from jaxalign.features._batching import check_batch_size, make_batches, progress_bar
from jaxalign.features._extract import fallback_max_length, resolve_max_length
from jaxalign.features._parallel import BatchPlacement, batch_placement
from jaxalign.lm import is_causal, model_facts

# Auto batch size: about this many logits (tokens x vocabulary) per pass.
LOGITS_PER_BATCH = 1 << 28


@functools.partial(_jit, static_argnums=0)
def _next_token_logprobs(graphdef, state, ids, mask):
    """(batch, seq - 1) natural-log probability of ``ids[:, p + 1]`` given ``ids[:, :p + 1]``."""
    logits = nnx.merge(graphdef, state)(ids, mask).logits[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]


def _logprob_forward(graphdef, state, ids, mask) -> np.ndarray:
    """One forward batch on the host (tests count calls here)."""
    return np.asarray(_next_token_logprobs(graphdef, state, ids, mask))


def sliding_windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``[(start, stop, first_scored)]`` covering tokens 1..n-1 once each (module doc)."""
    if n <= max_length:
        return [(0, n, 1)]
    windows = [(0, max_length, 1)]
    scored = max_length
    start = 0
    while scored < n:
        start += stride
        stop = min(start + max_length, n)
        windows.append((start, stop, scored))
        scored = stop
    return windows


def _bos_id(tokenizer) -> int:
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (int, np.integer)):
            return int(value)
    raise ValueError(f"bos=True but {type(tokenizer).__name__} has neither a BOS nor an EOS token id")


def word_surprisal(
    model,
    tokenizer,
    words,
    context: str = "passage",
    *,
    bos: bool = False,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    model_id: str | None = None,
    devices=None,
) -> np.ndarray:
    """Surprisal of every word in bits, (n_words,) float64 (module doc).

    context
        ``"passage"``: the whole story so far (sliding windows beyond the
        max length). The only choice for now.
    bos
        prepend the tokenizer's BOS token (default False: the first word is NaN).
    max_length, stride
        window length (default the model's max length) and step between
        windows for long stories (default ``max_length // 2``).
    batch_size, cache_dir, progress, model_id, devices
        as in ``word_features`` (``devices``: windows of a long story
        sharded over several devices; a story within the max length is one
        window, one row).

    Raises ValueError for encoders (no causal mask or no LM head).
    """
    if cache_dir is not None:  # a cache that cannot be written fails now, not after the computation
        cache_dir = _cache.prepare(cache_dir)
    align = align_words(tokenizer, words)
    if context != "passage":
        raise ValueError(f"unknown context {context!r} for word_surprisal; only 'passage' is supported")
    batch_size = check_batch_size(batch_size)
    placement = batch_placement(model, devices)
    facts = model_facts(model)
    if not facts.has_logits:
        raise ValueError(f"{type(model).__name__} has no LM head (logits is None): surprisal needs a causal LM")
    if not is_causal(model):
        raise ValueError(f"{type(model).__name__} is not causal: surprisal needs a left-to-right LM")
    max_len = resolve_max_length(model, tokenizer, max_length)
    if max_len is None:
        max_len = fallback_max_length(model, align.n_tokens + int(bool(bos)))
    if stride is None:
        stride = max(1, max_len // 2)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride < max_len:
        raise ValueError(f"stride must be an integer in [1, max_length={max_len}), got {stride!r}")
    stride = int(stride)

    ids = align.input_ids
    offset = 0
    if bos:
        ids = np.concatenate([[_bos_id(tokenizer)], ids])
        offset = 1

    key = None
    if cache_dir is not None:
        dtype = _cache.model_dtype(model)
        settings = {"context": context, "bos": bool(bos), "max_length": max_len, "stride": stride}
        key = _cache.cache_key(
            "word_surprisal",
            model_id if model_id is not None else _cache.model_fingerprint(model),
            {"input_ids": ids, "word_stop": align.word_stop},
            settings,
            dtype=dtype,
        )
        cached = _cache.load(cache_dir, key)
        if cached is not None and cached.shape == (align.n_words,):
            return cached

    token_bits = _token_surprisal(model, ids, max_len, stride, batch_size, progress, placement)
    token_bits = token_bits[offset:]
    # Sum per word; a NaN token (the first, without BOS) makes its word NaN.
    out = np.add.reduceat(token_bits, align.word_start)
    if key is not None:
        meta = {
            "kind": "word_surprisal", "model_class": f"{type(model).__module__}.{type(model).__name__}",
            "model_id": model_id, "dtype": dtype, "n_words": align.n_words, "n_tokens": int(len(ids)),
            **settings,
        }
        _cache.save(cache_dir, key, out, meta)
    return out


def _token_surprisal(model, ids, max_len, stride, batch_size, progress, placement=BatchPlacement()) -> np.ndarray:
    """(n,) surprisal in bits of each token given the previous ones; NaN for token 0."""
    n = len(ids)
    bits = np.full(n, np.nan, dtype=np.float64)
    if n < 2:
        return bits
    windows = sliding_windows(n, max_len, stride)
    graphdef, state = nnx.split(model)
    state = placement.put_state(state)
    vocab = int(getattr(model.config, "vocab_size", 0) or 50_000)
    lengths = np.array([b - a for a, b, _ in windows])
    budget = max(1, LOGITS_PER_BATCH // vocab)
    batches = make_batches(lengths, max_len, batch_size, budget=budget, shards=placement.shards)
    bar = progress_bar(len(batches), progress, "surprisal")
    try:
        for length, rows, members in batches:
            x = np.zeros((rows, length), dtype=np.int32)
            mask = np.zeros((rows, length), dtype=np.int32)
            mask[:, 0] = 1
            for r, m in enumerate(members):
                a, b, _ = windows[m]
                x[r, : b - a] = ids[a:b]
                mask[r, : b - a] = 1
            logp = _logprob_forward(graphdef, state, *placement.put_batch(x, mask))  # (rows, length - 1)
            for r, m in enumerate(members):
                a, b, first = windows[m]
                # logp[r, p - 1 - a] scores token p
                bits[first:b] = -logp[r, first - 1 - a : b - 1 - a].astype(np.float64) / math.log(2.0)
            bar.update(1)
    finally:
        bar.close()
    return bits
