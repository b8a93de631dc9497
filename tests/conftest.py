"""Test-session settings.

The ``jaxalign`` command keeps a persistent XLA compilation cache
(jaxalign/_compile_cache.py). Tests call ``cli.main`` in-process, so the cache
is off here unless a test turns it on (in a subprocess), and no test writes
to the user's ~/.cache.
"""

import os

os.environ.setdefault("JAXALIGN_COMPILE_CACHE", "off")
