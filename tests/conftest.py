"""Test-session settings.

The tests run on two processes (pytest-xdist, ``-n 2 --dist loadfile`` in
pyproject.toml: a module's tests, and so its module-scoped fixtures, stay on
one process; ``-n 0`` runs them in this one). Most of the suite's time is
XLA compiling and single-threaded Python, which one core each serves.

Compiled XLA programs are kept in a folder of this session (jaxalign's
persistent compilation cache, ``jaxalign/_compile_cache.py``; removed at
exit): the test processes, and every ``jaxalign`` command a test starts as a
subprocess, load a program another one compiled instead of compiling it
again (the same program, so the same numbers). No test writes to the user's
~/.cache. Set ``JAXALIGN_COMPILE_CACHE=off`` to run without it.

Dequantized GGUF files (jaxalign/lm/_gguf_cache.py) are cached in a folder
of this session too (subprocesses inherit both folders through the
environment), so the packaged SmolLM2 is dequantized once per session.
"""

import atexit
import os
import shutil
import tempfile

if "JAXALIGN_COMPILE_CACHE" not in os.environ:
    _xla_cache = tempfile.mkdtemp(prefix="jaxalign-test-xla-")
    os.environ["JAXALIGN_COMPILE_CACHE"] = _xla_cache
    atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)
if "JAXALIGN_GGUF_CACHE" not in os.environ:
    _gguf_cache = tempfile.mkdtemp(prefix="jaxalign-test-gguf-")
    os.environ["JAXALIGN_GGUF_CACHE"] = _gguf_cache
    atexit.register(shutil.rmtree, _gguf_cache, ignore_errors=True)


import gc  # noqa: E402

import pytest  # noqa: E402

from jaxalign._compile_cache import enable_compilation_cache  # noqa: E402

enable_compilation_cache(min_compile_secs=0.3)


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
