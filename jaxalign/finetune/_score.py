"""Score the options of multiple-choice items with a causal LM (no training).

``score_choices(model, tokenizer, mc)`` returns, for every item and option,
the summed shifted log-likelihood (nats) of the option's tokens given the
prompt and the option tokens before them (``_encode`` for the template and
which tokens count, ``_losses`` for the arithmetic). The texts are sorted by
length and run in right-padded batches of a few bucketed lengths
(``jaxalign.features._batching.make_batches``, the shape plan of feature
extraction), so a data set compiles a handful of shapes. By default an
item's options are packed after their shared prefix in one row
(``_encode``: the prompt runs once); otherwise each option's text is a row.
Right padding needs no attention mask with a causal model: a real token
only sees the real tokens before it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign._precision import jit as _jit
from jaxalign.features._batching import check_batch_size, make_batches, progress_bar
from jaxalign.finetune._encode import (
    EncodedChoices,
    encode_choices,
    fine_bucket,
    pack_choices,
    packed_lengths,
    packed_mask,
)
from jaxalign.finetune._losses import sequence_logprob
from jaxalign.lm import is_causal, max_length

__all__ = ["score_choices", "score_encoded"]

#: Bytes of float32 logits one scoring batch may hold (sets the auto batch size).
LOGITS_BUDGET = 1 << 28


def merged(graphdef, state):
    """The model of a split ``(graphdef, state)``; ``state`` may be a tuple of states (``nnx.split`` with filters)."""
    return nnx.merge(graphdef, *state) if isinstance(state, tuple) else nnx.merge(graphdef, state)


@functools.partial(_jit, static_argnums=0)
def _sequence_scores(graphdef, state, ids, target):
    logits = merged(graphdef, state)(ids).logits
    return sequence_logprob(logits, ids, target)


def packed_scores(model, ids, segment, positions, source, token, option):
    """Option scores (rows, n_options) of packed rows (``_encode.pack_choices``' arrays): the final hidden
    states that predict option tokens go through the vocabulary projection, their tokens' shifted
    log-likelihoods (float32) are summed per option."""
    out = model(ids, packed_mask(segment), positions)
    final = jnp.take_along_axis(out.hidden_states[-1], source[..., None], axis=1)
    logits = model.unembed(final).astype(jnp.float32)
    lp = jnp.take_along_axis(logits, token[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)
    return jnp.einsum("bs,bsk->bk", lp, option)


@functools.partial(_jit, static_argnums=0)
def _packed_scores(graphdef, state, arrays):
    keys = ("ids", "segment", "positions", "source", "token", "option")
    return packed_scores(merged(graphdef, state), *(arrays[k] for k in keys))


def _token_budget(vocab: int) -> int:
    return int(np.clip(LOGITS_BUDGET // (4 * max(1, vocab)), 16, 4096))


def check_causal(model) -> None:
    if not is_causal(model):
        raise ValueError(f"{type(model).__module__}.{type(model).__name__} is not a causal language model: "
                         "options are scored by next-token log-likelihoods")


def score_encoded(graphdef, state, enc: EncodedChoices, *, vocab_size: int, context: int,
                  batch_size: int | None = None, progress: bool | None = False, pack: bool = True) -> np.ndarray:
    """Option scores (n_items, n_options) of already-encoded items, for a split model ``(graphdef, state)``
    (``state`` a state or a tuple of the states of ``nnx.split`` with filters); ``pack``: an item per
    row, its options packed after their shared prefix (``_encode``), else a text per row."""
    if pack:
        return _score_packed(graphdef, state, enc, vocab_size, batch_size, progress)
    lengths = enc.lengths.ravel()
    out = np.zeros(lengths.size, np.float64)
    batches = make_batches(lengths, context, check_batch_size(batch_size), budget=_token_budget(vocab_size))
    with progress_bar(len(batches), progress, "scoring options") as bar:
        for length, rows, members in batches:
            ids = np.zeros((rows, length), np.int32)
            target = np.zeros((rows, length), bool)
            for r, m in enumerate(members):
                ids[r, : lengths[m]] = enc.ids[m]
                target[r, : lengths[m]] = enc.target[m]
            got = _sequence_scores(graphdef, state, jax.numpy.asarray(ids), jax.numpy.asarray(target))
            out[members] = np.asarray(got)[: len(members)]
            bar.update(1)
    return out.reshape(enc.n_items, enc.n_options)


def _score_packed(graphdef, state, enc: EncodedChoices, vocab_size: int, batch_size, progress) -> np.ndarray:
    """score_encoded with packed rows: items sorted into batches of one padded row length (make_batches),
    scored tokens padded to ``fine_bucket``."""
    length = packed_lengths(enc, np.arange(enc.n_items))
    out = np.zeros((enc.n_items, enc.n_options), np.float64)
    batches = make_batches(length, int(length.max()), check_batch_size(batch_size),
                           budget=_token_budget(vocab_size))
    with progress_bar(len(batches), progress, "scoring options") as bar:
        for size, rows, members in batches:
            items = np.full(rows, -1, np.int64)
            items[: len(members)] = members
            arrays = pack_choices(enc, items, size, bucket=fine_bucket)
            got = _packed_scores(graphdef, state, {k: jnp.asarray(v) for k, v in arrays.items()})
            out[members] = np.asarray(got)[: len(members)]
            bar.update(1)
    return out


def score_choices(model, tokenizer, mc, *, batch_size: int | None = None, progress: bool | None = None,
                  pack: bool = True) -> np.ndarray:
    """Each option's summed shifted log-likelihood in nats: array (n_items, n_options).

    model, tokenizer
        a causal language model of :mod:`jaxalign.lm` and its fast tokenizer
        (``jaxalign.lm.load``).
    mc
        a :class:`jaxalign.io.MultipleChoice` (e.g. ``jaxalign.io.read_piqa``).

    The text of option j of item i is ``prompt + " " + option``, encoded
    without special tokens; the option's tokens are those whose character
    span overlaps the option (the joining space belongs to its first token:
    the continuation ``" " + option`` is scored), each scored given every
    token before it::

        score[i, j] = sum over option tokens t of log p(token t | tokens 0..t-1)

    ``score.argmax(1)`` is the model's zero-shot answer; the multiple-choice
    loss of fine-tuning is the cross-entropy of ``softmax(score)``.
    ``batch_size``: items (``pack``) or texts per forward pass (default:
    about 256 MiB of logits). ``pack`` (default): each item's options are
    packed after their shared prefix (the prompt) in one row, so the prompt
    runs once; the same scores as one text per option (``pack=False``) to
    float32 rounding. Raises ValueError for a model that is not causal, a tokenizer
    without character offsets, an empty data set or option, an empty prompt,
    or a text longer than the model's context (each naming the item).

    Examples
    --------
    >>> from jaxalign import io, lm, finetune
    >>> model, tok = lm.load(lm.packaged_model("SmolLM2-135M-Instruct"))  # doctest: +SKIP
    >>> mc = io.read_piqa("../shared/data/piqa")  # doctest: +SKIP
    >>> scores = finetune.score_choices(model, tok, mc)  # doctest: +SKIP
    >>> (scores.argmax(1) == mc.labels).mean()  # zero-shot accuracy  # doctest: +SKIP
    """
    check_causal(model)
    enc = encode_choices(tokenizer, mc, max_length(model))
    graphdef, state = nnx.split(model)
    return score_encoded(graphdef, state, enc, vocab_size=int(model.config.vocab_size), context=max_length(model),
                         batch_size=batch_size, progress=progress, pack=pack)
