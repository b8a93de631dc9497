"""Guards against known-broken JAX releases, applied when jaxalign is imported.

jaxlib 0.10.2 on CPU (the newest release for Python 3.11) computes some
jitted reductions over large arrays wrongly (upstream jax issue 39103: an
experimental XLA:CPU "YNN" fusion). The error appears only at realistic sizes,
e.g. a per-target Pearson reduction over an (11, 600, T) float32 array with
T >= 3000, exactly the shape of "score every lambda for every target".

jaxalign protects its users twice:

1. ``pyproject.toml`` excludes the release (``jax!=0.10.2``), so a normal
   install never gets it.
2. If it is present anyway (a pre-existing environment), this module adds
   ``--xla_cpu_experimental_ynn_fusion_type=`` (which disables the faulty
   fusion and is correct) to ``XLA_FLAGS`` before the backend starts, and warns.
   The flag is only ever set for that exact release: a flag that a later XLA
   does not know makes XLA abort at start-up, so it is never set blindly.

``tests/test_platform.py`` keeps a reduction at the realistic size that would
catch the bug.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata

BROKEN_JAXLIB = ("0.10.2",)
_FIX_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def _jaxlib_version() -> str | None:
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - jax not installed
        return None


def guard_broken_jaxlib() -> str:
    """Apply the XLA flag for a known-broken jaxlib; return what was done.

    Returns one of ``"ok"`` (release not affected), ``"flag-set"`` (flag added
    before the backend started), ``"flag-present"`` (user already set it) or
    ``"too-late"`` (backend already started without the flag: warned).
    """
    version = _jaxlib_version()
    if version not in BROKEN_JAXLIB:
        return "ok"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return "flag-present"
    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except Exception:  # pragma: no cover - private API moved
        started = False
    if started:
        warnings.warn(
            f"jaxlib {version} computes large jitted reductions wrongly on CPU "
            "(jax issue 39103) and its backend was started before jaxalign "
            "could disable the faulty fusion. Import jaxalign before using jax, "
            f"set XLA_FLAGS={_FIX_FLAG} yourself, or install jax!=0.10.2.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "too-late"
    os.environ["XLA_FLAGS"] = (flags + " " + _FIX_FLAG).strip()
    warnings.warn(
        f"jaxlib {version} has a known CPU miscompilation (jax issue 39103); "
        f"jaxalign set XLA_FLAGS={_FIX_FLAG} to avoid it. Prefer installing "
        "jax!=0.10.2 (jaxalign's own requirement).",
        RuntimeWarning,
        stacklevel=3,
    )
    return "flag-set"
