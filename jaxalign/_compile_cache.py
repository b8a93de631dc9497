"""A persistent XLA compilation cache for jaxalign's command line (and for you).

JAX compiles each function once per process and input shape. A study run
pays that again in every new process: on a 2-core CPU a second
``jaxalign alice`` run with the cache fitted in 12-17 s instead of 20-21 s
(two trials), and on a GPU a
float32 first call has taken 12-90 s. JAX can keep compiled programs on disk
(``jax_compilation_cache_dir``), keyed by the program, the compiler flags and
the jax/jaxlib versions, so a later process with the same shapes loads
instead of compiling. Results are unchanged: the cached program is the one
that would have been compiled.

``enable_compilation_cache()`` turns it on; the ``jaxalign`` command calls it
first thing. Where the cache lives:

- on a CPU backend only when asked for (``$JAXALIGN_COMPILE_CACHE`` set to a
  folder, or ``path=`` given): jaxlib's CPU loader logs an error with a
  "could lead to SIGILL" warning for every cached program it reads, because
  its host feature list omits tuning features (``+prefer-no-gather``) that
  the compiled program records. Harmless, but 14 such lines on a second
  ``jaxalign alice`` run (measured 2026-12-01, jax 0.10.1) would alarm
  anyone, for ~5 s saved;

- ``$JAXALIGN_COMPILE_CACHE`` if set: a folder, or ``off`` (also ``0``,
  ``false``, ``no``, ``none`` or empty) to disable it;
- else ``$XDG_CACHE_HOME/jaxalign/xla`` (``~/.cache/jaxalign/xla``).

A cache folder the user already gave JAX (``jax_compilation_cache_dir``,
e.g. through ``JAX_COMPILATION_CACHE_DIR``) is kept. A folder that cannot
be created gives a warning and no cache, never an error.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV = "JAXALIGN_COMPILE_CACHE"
_OFF = {"", "0", "off", "false", "no", "none"}


def default_cache_dir() -> Path | None:
    """The cache folder from ``$JAXALIGN_COMPILE_CACHE`` / ``$XDG_CACHE_HOME``, or None (disabled)."""
    env = os.environ.get(ENV)
    if env is not None:
        if env.strip().lower() in _OFF:
            return None
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "jaxalign" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None, min_compile_secs: float = 0.5) -> Path | None:
    """Keep compiled XLA programs on disk; return the folder used, or None.

    Parameters
    ----------
    path : folder for the cache (default: :func:`default_cache_dir`).
    min_compile_secs : only programs that took at least this long to compile
        are stored (JAX's default is 1 s; many of jaxalign's take 0.5-1 s).

    Call it before the first compilation you want cached. Example::

        >>> import jaxalign
        >>> jaxalign.enable_compilation_cache("/tmp/my-xla-cache")  # doctest: +SKIP
        PosixPath('/tmp/my-xla-cache')
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:  # the user's own choice
        return Path(current)
    folder = default_cache_dir() if path is None else Path(path).expanduser()
    if folder is None:
        return None
    if path is None and os.environ.get(ENV) is None and jax.default_backend() == "cpu":
        return None  # not by default on CPU (see the module docstring)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as exc:
        warnings.warn(f"no compilation cache: cannot use {folder} ({exc}); set {ENV} to another folder "
                      "or to 'off'", RuntimeWarning, stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    return folder
