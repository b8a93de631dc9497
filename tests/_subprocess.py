"""Environment for the ``jaxalign`` processes that tests start to check process
logic (resume after kill -9, job arrays, several processes in one computation).

Those processes run tiny problems: nearly all their time is XLA compiling
programs, not running them. ``FAST_COMPILE`` asks XLA's CPU backend for no
LLVM optimisation (``--xla_backend_optimization_level=0``): the same HLO
programs, so the same arithmetic, compiled in about half the time (kill -9
test: 82 s -> 55 s on 2 cores). It is not used in-process: heavy numerical
tests ran 1.7x slower with it.
"""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def fast_compile_env(base=None, **extra) -> dict:
    """``base`` (default ``os.environ``) plus ``extra``, with ``FAST_COMPILE``
    appended to XLA_FLAGS (after any flags already there or given in ``extra``)."""
    env = dict(os.environ if base is None else base, **extra)
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS", ""), FAST_COMPILE]))
    return env
