"""Windows into batches: padded lengths, row counts, batch sizes, progress.

The shape plan of a feature extraction (``word_features``, ``word_surprisal``):
windows are right-padded, sequence lengths bucketed to powers of two (at
least 16; multiples of 256 above 512; never above the longest window) and the
last batch of each length padded to a few row counts (4, 5, 6 or 7 times a
power of two), so that a whole story compiles a handful of shapes. Pure
numpy on the host: nothing here touches a model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bucket_length", "check_batch_size", "make_batches", "progress_bar"]

# Auto batch size: about this many (padded) tokens per forward pass.
TOKENS_PER_BATCH = 4096
MAX_AUTO_BATCH = 64
MIN_BUCKET = 16
# Show a progress bar (progress=None) from this many batches on.
PROGRESS_MIN_BATCHES = 8


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def bucket_length(n: int, max_length: int) -> int:
    """Padded length for a window of ``n`` tokens (see module doc)."""
    if n <= 512:
        p = max(MIN_BUCKET, _next_pow2(n))
    else:
        p = -(-n // 256) * 256
    return min(p, max_length) if n <= max_length else n


def _round_rows(n: int) -> int:
    """Smallest of 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ... >= n.

    That is 4, 5, 6 or 7 times a power of two: at most 4 row counts per
    octave (few compiled shapes), and a last batch padded by less than 25%
    (25 windows run as 28 rows, not 32: the padded rows cost as much as real
    ones).
    """
    n = int(n)
    if n <= 4:
        return max(1, n)
    step = _next_pow2(n) // 8  # n in (4 step, 8 step]
    return -(-n // step) * step


def _auto_batch(length: int, budget: int = TOKENS_PER_BATCH) -> int:
    b = max(1, budget // max(1, length))
    return max(1, min(MAX_AUTO_BATCH, 1 << (b.bit_length() - 1)))


def make_batches(
    lengths: np.ndarray, max_length: int, batch_size: int | None, budget: int = TOKENS_PER_BATCH,
    shards: int = 1,
) -> list[tuple[int, int, np.ndarray]]:
    """Group windows into batches: ``[(padded_length, padded_batch, indices)]``.

    Lengths are bucketed by ``bucket_length``, capped at the longest window
    (a lone passage is not padded at all; ``context_size=50`` windows are
    padded to 50, not 64). Windows are sorted by padded length (stable, so
    text order within a length); each batch holds windows of one padded length, at most
    ``batch_size`` of them (auto: about ``budget`` tokens), and its row count
    is full but for the last one, whose rows are padded with dummy rows to
    the next of 4, 5, 6 or 7 times a power of two (at most the batch size;
    ``_round_rows``): under 25% padding, and at most two compiled shapes per
    length.

    ``shards`` (data parallel over that many devices, ``_parallel``): every
    row count is a multiple of it. ``batch_size`` is rounded up to one, the
    automatic size is the one-device size times ``shards``, and the last
    batch of a length gets ``shards`` times the padded rows of one shard
    (``_round_rows`` of its share, rounded up).
    """
    shards = int(shards)
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    lengths = np.asarray(lengths)
    cap = min(int(max_length), int(lengths.max()))  # no window is longer: pad no further
    padded = np.array([bucket_length(int(n), cap) for n in lengths], dtype=np.int64)
    order = np.argsort(padded, kind="stable")
    batches = []
    for length in np.unique(padded):
        members = order[padded[order] == length]
        if batch_size is not None:
            size = -(-batch_size // shards) * shards
        else:
            size = _auto_batch(int(length), budget) * shards
        for i in range(0, len(members), size):
            chunk = members[i : i + size]
            rows = shards * _round_rows(-(-len(chunk) // shards))
            batches.append((int(length), min(size, rows), chunk))
    return batches


def check_batch_size(batch_size) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None (auto), got {batch_size!r}")
    return int(batch_size)


def progress_bar(total: int, progress: bool | None, desc: str):
    """A tqdm bar over ``total`` batches, or a no-op.

    ``progress=None``: shown from ``PROGRESS_MIN_BATCHES`` batches on, and
    only on a terminal (tqdm's ``disable=None``); True: always; False: never.
    """
    from tqdm.auto import tqdm

    if progress is None:
        disable = None if total >= PROGRESS_MIN_BATCHES else True
    else:
        disable = not progress
    return tqdm(total=total, desc=desc, unit="batch", disable=disable, leave=False)
