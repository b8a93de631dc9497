"""jaxalign: fast, trustworthy alignment of language models with brains.

Subpackages
-----------
ridge
    Spectral multi-target ridge regression with per-target cross-validated
    regularisation (``from jaxalign.ridge import RidgeCV``).
"""

from jaxalign._platform import guard_broken_jaxlib as _guard

_guard()
del _guard

from jaxalign._compile_cache import enable_compilation_cache  # noqa: E402

__version__ = "0.1.0"
