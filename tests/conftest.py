"""Test-session settings.

The ``jaxalign`` command keeps a persistent XLA compilation cache
(jaxalign/_compile_cache.py). Tests call ``cli.main`` in-process, so the cache
is off here unless a test turns it on (in a subprocess), and no test writes
to the user's ~/.cache.

Dequantized GGUF files (jaxalign/lm/_gguf_cache.py) are cached in a folder
of this session (removed at exit; subprocesses inherit it through the
environment), so the packaged SmolLM2 is dequantized once per session and no
test writes to the user's ~/.cache either.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAXALIGN_COMPILE_CACHE", "off")
if "JAXALIGN_GGUF_CACHE" not in os.environ:
    _gguf_cache = tempfile.mkdtemp(prefix="jaxalign-test-gguf-")
    os.environ["JAXALIGN_GGUF_CACHE"] = _gguf_cache
    atexit.register(shutil.rmtree, _gguf_cache, ignore_errors=True)


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free jax's compiled programs (and their JIT code memory) after every test module.

    One pytest process compiles thousands of XLA programs over ~1,100 tests; three
    full-suite runs in one process died inside XLA's CPU compiler late in the session
    (a segfault, twice, and an abort) in tests that pass alone. Programs are only
    reused within a module, so clearing between modules costs little.
    """
    yield
    try:
        import jax
    except ImportError:  # pragma: no cover
        return
    jax.clear_caches()
    gc.collect()
