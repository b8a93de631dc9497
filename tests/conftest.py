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
