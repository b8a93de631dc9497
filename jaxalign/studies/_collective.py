"""A study run as one computation over several processes (``jax.distributed``).

Every process runs :func:`~jaxalign.studies.runner.run_study` on the same
config; each ridge fit shards its targets over every process's devices
(``jaxalign.ridge`` does that by itself once ``jax.distributed`` runs).
What must not be done by every process, this module does once:

- process 0 alone reads and writes the results store (claims, units,
  tables, figures); the others follow its decisions, which it broadcasts, so
  that every process runs the same units in the same order (one SPMD
  program per fit: a process that took another branch would wait forever);
- the store must be one folder that every process sees (a shared
  filesystem): checked at the start, with a clear error otherwise.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import numpy as np

__all__ = ["CollectiveStore", "is_writer", "barrier", "check_shared_folder"]


def _active() -> bool:
    import jax

    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes files (process 0; always true alone)."""
    import jax

    return jax.process_index() == 0


def _broadcast(value: int) -> int:
    """Process 0's integer, in every process."""
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op alone)."""
    if _active():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_shared_folder(folder: Path) -> None:
    """Fail clearly unless every process sees the same ``folder``.

    Process 0 writes a random token there; every other process must read it
    back. Raises ``RuntimeError`` in every process otherwise.
    """
    if not _active():
        return
    import jax

    token_file = Path(folder) / ".distributed-check"
    token = secrets.token_hex(8)
    if is_writer():
        Path(folder).mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
    barrier("jaxalign-shared-folder-write")
    seen = 1
    if not is_writer():
        try:
            seen = int(token_file.read_text() != "")
        except OSError:
            seen = 0
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.int32(seen)))
    barrier("jaxalign-shared-folder-read")
    if is_writer():
        with contextlib.suppress(OSError):
            token_file.unlink()
    blind = [i for i, ok in enumerate(every.ravel()) if not ok]
    if blind:
        raise RuntimeError(
            f"run_study(distributed): process(es) {blind} of {jax.process_count()} cannot see the "
            f"results folder {folder} that process 0 writes: a distributed run needs one folder "
            "on a filesystem every process shares (e.g. the cluster's shared home or scratch)")


class _FollowerClaim:
    """What a process other than 0 holds while process 0 holds the claim."""

    def renew(self, lease_seconds=None):
        return 0.0

    def release(self):
        pass

    @contextlib.contextmanager
    def kept_alive(self, *args, **kwargs):
        yield self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class CollectiveStore:
    """A :class:`ResultsStore` that process 0 owns and every process follows.

    ``is_done``, ``claim`` and ``write_unit`` are decided (and done) by
    process 0 and broadcast; reads (``read_unit``, ``keys``) go to the shared
    folder directly. Alone (one process), it is the store itself.
    """

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def is_done(self, key: str) -> bool:
        if not _active():
            return self._store.is_done(key)
        return bool(_broadcast(int(self._store.is_done(key)) if is_writer() else 0))

    def claim(self, key: str, lease_seconds: float = 3600.0):
        if not _active():
            return self._store.claim(key, lease_seconds)
        got = self._store.claim(key, lease_seconds) if is_writer() else None
        if not _broadcast(int(got is not None) if is_writer() else 0):
            return None
        return got if is_writer() else _FollowerClaim()

    def write_unit(self, key, arrays, labels, meta=None, **kwargs):
        if not _active():
            return self._store.write_unit(key, arrays, labels, meta, **kwargs)
        wrote = self._store.write_unit(key, arrays, labels, meta, **kwargs) if is_writer() else False
        wrote = bool(_broadcast(int(bool(wrote)) if is_writer() else 0))
        barrier(f"jaxalign-unit-{key[:16]}")  # the unit is on disk before anyone reads it
        return wrote
