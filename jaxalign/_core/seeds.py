"""Random streams derived from one user seed, in one place.

A study takes one ``seed``; its parts (synthetic onsets, planted responses,
the random-vector control, ...) each need their own independent stream.
Deriving them as ``seed + 1`` or ``seed + 12345`` makes streams of
neighbouring seeds collide (seed 0's second stream is seed 1's first) and
scatters magic numbers through the code. Here a stream is named instead:
``rng(seed, "random control")`` is numpy's ``SeedSequence(seed,
spawn_key=(crc32("random control"),))``, independent of every other name
and of every other seed, and the same on every platform and numpy version
that keeps ``SeedSequence`` (its output is part of numpy's stability
promise for ``PCG64``).
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["rng", "stream_seed"]


def _key(name: str) -> int:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a stream name must be a non-empty string, got {name!r}")
    return zlib.crc32(name.encode("utf-8"))


def _sequence(seed, names) -> np.random.SeedSequence:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=tuple(_key(n) for n in names))


def rng(seed: int, *names: str) -> np.random.Generator:
    """A numpy Generator for the stream ``names`` of ``seed``.

    >>> a = rng(0, "onsets").standard_normal(3)
    >>> b = rng(0, "onsets").standard_normal(3)
    >>> bool((a == b).all()), bool((a == rng(0, "control").standard_normal(3)).all())
    (True, False)
    """
    return np.random.default_rng(_sequence(seed, names))


def stream_seed(seed: int, *names: str) -> int:
    """A 32-bit integer seed for APIs that take an int (e.g. a JAX key)."""
    return int(_sequence(seed, names).generate_state(1, np.uint32)[0])
