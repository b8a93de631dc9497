"""Words -> tokens: which tokens of the joined text belong to which word.

The text a model reads is the words joined by single spaces. It is tokenized
once, with no special tokens, by a *fast* tokenizer (one backed by the
``tokenizers`` library), whose offset mapping gives each token's character
span in that text. A token belongs to the word that contains its first
non-space character. This handles every convention with one rule:

- leading-space tokenizers (GPT-2's byte-level ``"Ġword"``, SentencePiece's
  ``"▁word"``): the space before a word is part of its first token, whose
  first non-space character lies in the word;
- WordPiece (BERT): tokens never contain spaces; ``"don't"`` -> ``don ' t``
  and ``"“Hello,”"`` -> ``“ hello , ”`` all fall inside the word;
- byte-level pieces of one character (``"“"`` -> ``âĢ`` + ``ľ``) share that
  character's span and so its word;
- a token spanning two words (possible with tokenizers that do not split at
  spaces) goes to the word containing its first non-space character;
- a token that is only whitespace (or has an empty span) goes to the next
  word, following the leading-space convention (to the last word if it ends
  the text).

Offsets are taken from the original text (the tokenizers library tracks them
through normalisation), so lower-casing and accent stripping (``"naïve"`` ->
``naive``) do not disturb the alignment. A word that maps to no token (e.g.
only characters a WordPiece normaliser deletes, such as a zero-width space)
is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Alignment:
    """The tokenized text and the token range of every word.

    text
        the words joined by single spaces.
    input_ids
        (n_tokens,) int64 token ids, no special tokens added.
    offsets
        (n_tokens, 2) character span [start, end) of each token in ``text``.
    token_word
        (n_tokens,) index of the word each token belongs to (non-decreasing).
    word_start, word_stop
        (n_words,) each word's tokens are ``input_ids[word_start:word_stop]``.
    """

    text: str
    input_ids: np.ndarray
    offsets: np.ndarray
    token_word: np.ndarray
    word_start: np.ndarray
    word_stop: np.ndarray

    @property
    def n_words(self) -> int:
        return len(self.word_start)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def word_n_tokens(self) -> np.ndarray:
        """(n_words,) number of tokens of each word."""
        return self.word_stop - self.word_start


def check_words(words) -> list[str]:
    """Validate ``words`` and return them as a list of ``str``.

    Accepts a list, tuple or 1-d numpy array of strings. Raises TypeError for
    a single string or non-string items and ValueError for an empty sequence,
    empty or whitespace-only words, and words with leading or trailing
    whitespace (the joined text would not have single spaces between words).
    """
    if isinstance(words, (str, bytes)):
        raise TypeError("words must be a sequence of strings (one per word), not a single string")
    if isinstance(words, np.ndarray):
        if words.ndim != 1:
            raise ValueError(f"words must be one-dimensional, got an array of shape {words.shape}")
        words = words.tolist()
    if not isinstance(words, Sequence):
        raise TypeError(f"words must be a sequence of strings, got {type(words).__name__}")
    if len(words) == 0:
        raise ValueError("words is empty: nothing to extract")
    out = []
    for i, w in enumerate(words):
        if not isinstance(w, str):
            raise TypeError(f"words[{i}] is {type(w).__name__} {w!r}, expected str")
        if not w or w.isspace():
            raise ValueError(f"words[{i}] is empty or whitespace only ({w!r})")
        if w != w.strip():
            raise ValueError(
                f"words[{i}] = {w!r} has leading or trailing whitespace; strip the words first"
            )
        out.append(str(w))
    return out


def _check_tokenizer(tokenizer) -> None:
    if tokenizer is None:
        raise ValueError("tokenizer is None: jaxalign.lm.load found no tokenizer; pass one explicitly")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: word alignment needs the offset "
            "mapping of a tokenizers-backed (fast) Hugging Face tokenizer"
        )


def tokenize(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, offsets) of ``text`` with no special tokens added."""
    enc = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "longer than model_max_length" warning: we window ourselves
    )
    ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids, offsets


def align_words(tokenizer, words) -> Alignment:
    """Tokenize ``" ".join(words)`` and find each word's tokens (see module doc).

    Raises ValueError for invalid words (see :func:`check_words`) and for
    words that the tokenizer maps to no token; TypeError for a tokenizer
    without an offset mapping.
    """
    words = check_words(words)
    _check_tokenizer(tokenizer)
    text = " ".join(words)
    ids, offsets = tokenize(tokenizer, text)

    # Word index of every character; the separating spaces get -1.
    char_word = np.full(len(text) + 1, -1, dtype=np.int64)
    starts = np.zeros(len(words), dtype=np.int64)
    pos = 0
    for i, w in enumerate(words):
        starts[i] = pos
        char_word[pos : pos + len(w)] = i
        pos += len(w) + 1
    nonspace = np.array([not c.isspace() for c in text] + [False], dtype=bool)

    token_word = np.empty(len(ids), dtype=np.int64)
    for t, (a, b) in enumerate(offsets):
        a, b = max(int(a), 0), min(int(b), len(text))
        hits = np.flatnonzero(nonspace[a:b] & (char_word[a:b] >= 0)) if b > a else ()
        if len(hits):
            token_word[t] = char_word[a + hits[0]]
        elif b > a and np.any(char_word[a:b] >= 0):  # whitespace inside a word
            token_word[t] = char_word[a:b][char_word[a:b] >= 0][0]
        else:  # separator space or empty span: the next word (leading-space convention)
            token_word[t] = min(int(np.searchsorted(starts, a, side="left")), len(words) - 1)
    if np.any(np.diff(token_word) < 0):
        raise RuntimeError(
            "token offsets are not in text order; cannot assign tokens to words "
            f"({type(tokenizer).__name__})"
        )
    counts = np.bincount(token_word, minlength=len(words))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(f"{i}: {words[i]!r}" for i in empty[:10])
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        raise ValueError(
            f"{len(empty)} word(s) map to no token with {type(tokenizer).__name__} "
            f"(the tokenizer drops their characters): {shown}{more}"
        )
    stop = np.cumsum(counts)
    return Alignment(
        text=text,
        input_ids=ids,
        offsets=offsets,
        token_word=token_word,
        word_start=stop - counts,
        word_stop=stop,
    )
