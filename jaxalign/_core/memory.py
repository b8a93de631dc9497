"""How much memory a computation may use, and how many targets fit in it.

One home for the memory budget of every batched computation (the ridge
engine's target batches, the permutation tests' chunks): ``parse_bytes``
reads a user's budget, ``default_memory_budget`` picks one from the device,
``target_batch_size`` turns bytes per target into a batch size.

Units: bare ``K``/``M``/``G``/``T`` and ``KiB``/``MiB``/``GiB``/``TiB`` are
binary (powers of 1024, what memory is sold and reported in); ``KB``/``MB``/
``GB``/``TB`` are decimal (powers of 1000).
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

__all__ = ["default_memory_budget", "keep_freed_memory", "parse_bytes", "target_batch_size"]

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 10**3, "KIB": 2**10, "M": 2**20, "MB": 10**6,
          "MIB": 2**20, "G": 2**30, "GB": 10**9, "GIB": 2**30, "T": 2**40, "TB": 10**12,
          "TIB": 2**40}


def parse_bytes(value) -> int:
    """``4 * 2**30``, ``"4GiB"``, ``"512MB"`` or ``"1.5G"`` -> bytes.

    Bare ``G`` (and ``K``, ``M``, ``T``) is binary, as ``GiB``; ``GB`` is
    decimal. ValueError for anything else, or a size that is not positive.

    >>> parse_bytes("4G") == parse_bytes("4GiB") == 4 * 2**30
    True
    >>> parse_bytes("1.5 MB")
    1500000
    """
    if isinstance(value, (int, float, np.integer, np.floating)):
        out = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).upper() not in _UNITS:
            raise ValueError(f"cannot parse a memory size from {value!r} (try '4GiB')")
        out = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if out <= 0:
        raise ValueError(f"memory budget must be positive, got {value!r}")
    return out


def default_memory_budget(devices) -> int:
    """Bytes the engine may use per device for one target batch.

    Accelerators: 60% of the free device memory (from ``memory_stats``).
    CPU: 25% of the available host RAM, at most 8 GiB (larger batches do not
    run faster on CPU, they only compete with the rest of the process).
    """
    dev = devices[0]
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # pragma: no cover - backend without stats
        stats = None
    if dev.platform != "cpu" and stats and "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        return _steady(int(0.6 * free))
    import psutil

    return _steady(int(min(0.25 * psutil.virtual_memory().available / len(devices), 8 * 2**30)))


def _steady(nbytes: int) -> int:
    """``nbytes`` rounded down to the grid 2^(k/4) (steps of 19%).

    Free memory moves by a few percent from one fit to the next; a budget
    that followed it would give each fit another batch size, so another
    shape, so another XLA compilation (~2 s per fold of a study unit,
    measured). On the grid it changes only when free memory does by a step.

    >>> _steady(2**30) == 2**30 and _steady(2**30 + 10**8) == 2**30
    True
    """
    if nbytes <= 0:
        return int(nbytes)
    return int(2 ** (math.floor(4 * math.log2(nbytes)) / 4))


def target_batch_size(n_targets, bytes_per_target, budget, n_devices=1, max_batch=16384):
    """Largest batch that fits ``budget`` per device, a multiple of ``n_devices``.

    Batches are then balanced: ``ceil(T / n_batches)`` rounded up to a
    multiple of 128 * n_devices (fewer distinct shapes, aligned GEMMs); where
    that would exceed the budget, rounded down to one (one batch more), not
    cut to whatever the budget allows, which would change with every byte
    of it.

    >>> target_batch_size(6000, 10**6, 2013 * 10**6), target_batch_size(6000, 10**6, 2040 * 10**6)
    (1536, 1536)
    """
    per_device = budget // max(bytes_per_target, 1)
    mem_cap = min(per_device * n_devices, max_batch * n_devices)
    cap = min(mem_cap, max(n_targets, n_devices))
    if per_device < 1:
        raise MemoryError(
            f"memory budget {budget} bytes is too small for even one target per device "
            f"({bytes_per_target} bytes each); raise memory_budget"
        )
    n_batches = math.ceil(n_targets / cap)
    size = math.ceil(n_targets / n_batches)
    quantum = 128 * n_devices
    if size > quantum:
        up = math.ceil(size / quantum) * quantum
        if up <= mem_cap or n_batches == 1:  # (one batch of all targets: its shape is the targets')
            size = min(up, cap - cap % n_devices or n_devices)
        else:  # more batches, each a multiple of the quantum, balanced again
            size = mem_cap // quantum * quantum
            size = math.ceil(math.ceil(n_targets / math.ceil(n_targets / size)) / quantum) * quantum
    size = math.ceil(size / n_devices) * n_devices
    return int(size)


_KEEP_ENV = "JAXALIGN_KEEP_FREED_MEMORY"
_kept = False


def keep_freed_memory() -> bool:
    """Keep the memory this process frees for its own next allocations (glibc's malloc).

    By default glibc gives every large block (over 32 MiB at most) its own
    ``mmap`` and hands it back to the kernel when freed, so the next one is
    fresh memory that the kernel must fault in and zero, page by page. A
    ridge fit allocates and frees gigabytes of temporaries (XLA's buffers,
    the host's batches): measured here, 1 million page faults and 6 of 10 s
    in the kernel per fit of the sweep benchmark's shape. On a virtual
    machine that hands freed pages back to its host (free page reporting,
    as on this project's machines) fresh memory costs ~5-10 s per GiB.
    After this call freed memory stays in the process (``M_MMAP_MAX = 0``:
    no block gets its own mapping, except requests over 64 MiB from a
    thread's own arena, which glibc still maps; ``M_TRIM_THRESHOLD``: the
    heap is never trimmed) and is reused: kernel time per fit fell to ~1 s, and
    one outer fold of the sweep benchmark from 11.1 to 7.9 s on one core
    (``benchmarks/sweep.py --probe-only --malloc keep|default``).

    The cost: the process keeps its peak memory until it exits. So the
    ``jaxalign`` command and its workers call this (a study's process
    reaches its peak again and again), not the library on import. Set
    ``JAXALIGN_KEEP_FREED_MEMORY=0`` to leave malloc as it is. Returns
    whether the setting took (False on other C libraries, macOS, Windows,
    or when disabled); calling it again is harmless.
    """
    global _kept
    if os.environ.get(_KEEP_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _kept:
        return True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    _kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept
