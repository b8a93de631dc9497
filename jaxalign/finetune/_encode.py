"""Text to token ids for fine-tuning: multiple-choice options and raw-text windows.

Multiple choice (the default template of :func:`jaxalign.finetune.score_choices`):
each option j of item i becomes the text ``prompt + " " + option``, encoded
without special tokens, with the character offsets of a fast (Rust)
tokenizer. The option's tokens are those whose character span overlaps the
option together with its joining space, ``[len(prompt), len(text))``: the
continuation ``" " + option``, as language-model evaluation harnesses score
it. Byte-level BPE and SentencePiece tokenizers carry the joining space on
the option's first token (``"Ġword"``, ``"▁word"``), so the space belongs to
that token; where a tokenizer splits it off as a token of its own (a rare
first character), that token is the option's first. Each option token is
scored given every token before it (``_losses.sequence_logprob``), so the
first token of the text, which has nothing before it, can never be an option
token: an empty prompt is refused.

Packed options (training steps, ``TrainConfig.pack``): the texts of one
item's options begin with the same tokens (the prompt's, at least), which a
causal model encodes identically for every option. A packed row holds that
shared prefix once, then each option's remaining tokens, every token at its
position in its own text (``position_ids``), attending to the prefix and to
the earlier tokens of its own option only (a (seq, seq) mask): every hidden
state, and so every option token's log-likelihood, is the one of the
option's own text, for about the prompt's tokens fewer per extra option
(SmolLM2's tokenizer: 46 instead of 63 tokens per PIQA item, 36 instead of
85 per Social IQa item).
Only the final hidden states that predict an option token go through the
vocabulary projection.

Raw text (causal-LM loss): documents are encoded without special tokens,
joined with the tokenizer's end-of-sequence token when it has one, and cut
into windows of ``seq_len`` tokens (the last one shorter, padded).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["EncodedChoices", "EncodedText", "encode_choices", "encode_text", "pack_choices"]


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedChoices:
    """Token ids of every ``prompt + " " + option`` and which of its tokens are the option's.

    ``ids[i * n_options + j]`` and ``target[...]`` (bool, same length) belong
    to option j of item i; ``labels`` are the 0-based correct options (or None).
    """

    ids: tuple[np.ndarray, ...]
    target: tuple[np.ndarray, ...]
    n_items: int
    n_options: int
    labels: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text, (n_items, n_options)."""
        return np.array([len(x) for x in self.ids], dtype=np.int64).reshape(self.n_items, self.n_options)

    def subset(self, items) -> EncodedChoices:
        """The same encoding restricted to ``items`` (indices), in that order."""
        items = np.asarray(items, dtype=np.int64)
        rows = (items[:, None] * self.n_options + np.arange(self.n_options)).ravel()
        return EncodedChoices(
            tuple(self.ids[r] for r in rows), tuple(self.target[r] for r in rows), len(items), self.n_options,
            None if self.labels is None else self.labels[items],
        )


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedText:
    """Raw text as windows: ``ids`` (n_windows, seq_len) int32, ``mask`` (n_windows, seq_len) 1 = real token."""

    ids: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def _check_fast(tokenizer) -> None:
    if tokenizer is None:
        raise ValueError("a tokenizer is needed (the model was loaded without one)")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer: scoring options needs the "
            "character offsets of each token (return_offsets_mapping); load one with use_fast=True"
        )


def encode_choices(tokenizer, mc, max_length: int | None = None) -> EncodedChoices:
    """Tokenize every option of a :class:`jaxalign.io.MultipleChoice` (see the module docstring).

    Raises ValueError naming the item and option for an empty data set, an
    empty option (or one of white space), an empty prompt (the
    option would start the text) and a text longer than ``max_length``
    tokens (the model's context).
    """
    _check_fast(tokenizer)
    n, k = len(mc), mc.n_choices
    if n == 0:
        name = f" {mc.name!r}" if mc.name else ""
        raise ValueError(f"the multiple-choice data set{name} has no items")
    if k < 2:
        raise ValueError(f"multiple choice needs at least 2 options per item, got {k}")
    texts, starts = [], []
    for i, (prompt, options) in enumerate(zip(mc.prompts, mc.choices)):
        for j, option in enumerate(options):
            if not option.strip():
                raise ValueError(f"item {i}{f' ({mc.ids[i]})' if mc.ids is not None else ''} option {j}: "
                                 f"the option {option!r} is empty")
            texts.append(f"{prompt} {option}")
            starts.append(len(prompt))  # the joining space starts the option's span
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    ids, target = [], []
    for r, (text, start) in enumerate(zip(texts, starts)):
        i, j = divmod(r, k)
        where = f"item {i}{f' ({mc.ids[i]})' if mc.ids is not None else ''} option {j}"
        offsets = np.asarray(enc["offset_mapping"][r], dtype=np.int64).reshape(-1, 2)
        s, e = offsets[:, 0], offsets[:, 1]
        t = (s < len(text)) & (e > start) & (e > s)
        if not t.any():
            raise ValueError(f"{where}: the option {mc.choices[i][j]!r} has no token of its own")
        if t[0]:
            raise ValueError(f"{where}: the option starts the text, with nothing to condition it on "
                             f"(empty prompt {mc.prompts[i]!r}?)")
        if max_length is not None and len(t) > max_length:
            raise ValueError(f"{where}: prompt + option is {len(t)} tokens, longer than the model's context "
                             f"of {max_length} tokens")
        ids.append(np.asarray(enc["input_ids"][r], dtype=np.int32))
        target.append(t)
    return EncodedChoices(tuple(ids), tuple(target), n, k, mc.labels)


def _shared_prefix(seqs) -> int:
    """Length of the longest token prefix all of ``seqs`` share."""
    n = min(len(x) for x in seqs)
    same = np.all([x[:n] == seqs[0][:n] for x in seqs[1:]], axis=0) if len(seqs) > 1 else np.ones(n, bool)
    return int(n if same.all() else np.argmin(same))


def fine_bucket(n: int) -> int:
    """Padded size of packed rows (or of their scored tokens): at least 8, else 4, 5, 6 or 7 times a power
    of two (under 25% padding, a few compiled shapes per octave)."""
    from jaxalign.features._batching import _round_rows

    return max(8, _round_rows(n))


def packed_lengths(enc: EncodedChoices, items) -> np.ndarray:
    """Each item's packed row length (:func:`pack_choices`), without padding."""
    k = enc.n_options
    out = []
    for i in np.asarray(items, np.int64).ravel():
        seqs = [enc.ids[i * k + o] for o in range(k)]
        p = _shared_prefix(seqs)
        out.append(p + sum(x.size - p for x in seqs))
    return np.array(out, np.int64)


def pack_choices(enc: EncodedChoices, items: np.ndarray, length: int | None = None,
                 scored: int | None = None, bucket=None) -> dict:
    """Packed rows of ``items`` (int array of any shape; -1 = padding): the module docstring's layout.

    Returns host arrays, each with ``items.shape`` leading:

    ``ids`` (..., L) int32; ``segment`` (..., L) int32: 0 the shared prefix,
    j + 1 option j, -1 padding; ``positions`` (..., L) int32: each token's
    position in its own text; ``source`` (..., S) int32: the row position
    whose final hidden state predicts scored token s; ``token`` (..., S)
    int32: that token; ``option`` (..., S, n_options) float32: one-hot of
    its option (all 0 for padding). L and S are the longest of ``items``
    unless given (larger: more padding), rounded up by ``bucket`` (a function,
    e.g. :func:`fine_bucket`) when it is given.
    """
    items = np.asarray(items, np.int64)
    k = enc.n_options
    rows = []
    for i in items.ravel():
        if i < 0:
            rows.append(None)
            continue
        seqs = [enc.ids[i * k + o] for o in range(k)]
        p = _shared_prefix(seqs)
        ids, seg, pos = [seqs[0][:p]], [np.zeros(p, np.int32)], [np.arange(p, dtype=np.int32)]
        src, tok, opt, offset = [], [], [], p
        for o, x in enumerate(seqs):
            ids.append(x[p:])
            seg.append(np.full(x.size - p, o + 1, np.int32))
            pos.append(np.arange(p, x.size, dtype=np.int32))
            t = np.flatnonzero(enc.target[i * k + o])  # option tokens, t >= 1: predicted at row of t - 1
            src.append(np.where(t - 1 < p, t - 1, offset + t - 1 - p))
            tok.append(x[t])
            opt.append(np.full(t.size, o, np.int32))
            offset += x.size - p
        rows.append(tuple(np.concatenate(a) for a in (ids, seg, pos, src, tok, opt)))
    real = [r for r in rows if r is not None]
    need_l = max(r[0].size for r in real)
    need_s = max(r[3].size for r in real)
    fit = (lambda n: n) if bucket is None else bucket
    length = fit(need_l) if length is None else length
    scored = fit(need_s) if scored is None else scored
    if length < need_l or scored < need_s:
        raise ValueError(f"packed rows need length >= {need_l} and scored >= {need_s}, got {length}, {scored}")
    n = len(rows)
    out = {"ids": np.zeros((n, length), np.int32), "segment": np.full((n, length), -1, np.int32),
           "positions": np.zeros((n, length), np.int32), "source": np.zeros((n, scored), np.int32),
           "token": np.zeros((n, scored), np.int32), "option": np.zeros((n, scored, k), np.float32)}
    for r, row in enumerate(rows):
        if row is None:
            continue
        ids, seg, pos, src, tok, opt = row
        out["ids"][r, : ids.size], out["segment"][r, : ids.size], out["positions"][r, : ids.size] = ids, seg, pos
        out["source"][r, : src.size], out["token"][r, : src.size] = src, tok
        out["option"][r, np.arange(src.size), opt] = 1.0
    return {key: v.reshape(*items.shape, *v.shape[1:]) for key, v in out.items()}


def packed_mask(segment):
    """(..., L, L) bool of packed rows' ``segment`` (:func:`pack_choices`): key k visible to query q when
    both are real and k is in the shared prefix or in q's option (causality is the model's)."""
    q, key = segment[..., :, None], segment[..., None, :]
    return (key >= 0) & (q >= 0) & ((key == 0) | (key == q))


def encode_text(tokenizer, texts, seq_len: int) -> EncodedText:
    """Windows of ``seq_len`` tokens over one text or a list of documents (see the module docstring)."""
    if tokenizer is None:
        raise ValueError("a tokenizer is needed (the model was loaded without one)")
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no text to train on (empty)")
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (a token and its successor), got {seq_len}")
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for doc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        if stream and eos is not None:
            stream.append(int(eos))
        stream.extend(int(x) for x in doc)
    n = -(-len(stream) // seq_len)
    ids = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.int32)
    flat = np.asarray(stream, np.int32)
    ids.reshape(-1)[: flat.size] = flat
    mask.reshape(-1)[: flat.size] = 1
    if mask[-1].sum() < 2:  # a lone last token predicts nothing
        ids, mask = ids[:-1], mask[:-1]
    if len(ids) == 0:
        raise ValueError("the text is a single token: nothing to predict")
    return EncodedText(ids, mask)
