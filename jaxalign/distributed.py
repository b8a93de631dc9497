"""One computation across several processes and hosts (``jax.distributed``).

Call :func:`initialize` once in every process, before any other JAX work;
afterwards ``jax.devices()`` lists every process's devices and the ridge
engine shards its targets over all of them:

>>> import jaxalign.distributed, jaxalign.ridge          # doctest: +SKIP
>>> jaxalign.distributed.initialize()                     # doctest: +SKIP
>>> model = jaxalign.ridge.RidgeCV().fit(X, Y)            # doctest: +SKIP

Every process passes the same ``X`` and ``Y`` (host arrays); each process's
devices fit their own slice of the targets, and every process ends with the
full fitted attributes (``best_alphas_``, ``coef_``, ``cv_scores_``), equal to
a single-process fit.

On SLURM, TPU pods and Open MPI the coordinator, process count and process
id are detected from the environment (``jax.distributed``'s cluster
detection); elsewhere give them explicitly, or through the environment
variables ``JAXALIGN_COORDINATOR`` (``host:port``), ``JAXALIGN_NUM_PROCESSES``
and ``JAXALIGN_PROCESS_ID``.

Faults are answered, never waited on forever: a coordinator that cannot be
reached fails after ``timeout`` seconds with a message naming its address;
a process that dies makes the others fail after ``heartbeat_timeout``
seconds (JAX's coordination service); processes running different jax,
jaxlib or jaxalign versions are refused at start-up, naming each process's
versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import jax
import numpy as np

__all__ = ["initialize", "is_initialized", "process_index", "process_count", "shutdown",
           "versions"]

_ENV = ("JAXALIGN_COORDINATOR", "JAXALIGN_NUM_PROCESSES", "JAXALIGN_PROCESS_ID")


def versions() -> dict:
    """The versions that must agree across the processes of one computation."""
    import jaxlib

    import jaxalign

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "jaxalign": jaxalign.__version__}


def is_initialized() -> bool:
    """Whether ``jax.distributed`` is running in this process."""
    return jax.distributed.is_initialized()


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def _env_int(name):
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator_address must be 'host:port', got {address!r}")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None, timeout: int = 120,
               heartbeat_timeout: int = 100) -> None:
    """Start ``jax.distributed`` in this process (call once, before JAX work).

    Parameters
    ----------
    coordinator_address : "host:port" of process 0's coordination service;
        default ``$JAXALIGN_COORDINATOR``, else detected (SLURM, TPU, MPI).
    num_processes, process_id : default ``$JAXALIGN_NUM_PROCESSES`` and
        ``$JAXALIGN_PROCESS_ID``, else detected.
    local_device_ids : restrict this process to some of its local devices
        (e.g. one GPU per process).
    timeout : seconds to wait for every process to join; past it, a clear
        error naming the coordinator.
    heartbeat_timeout : seconds after which a silent (dead) process makes the
        others fail instead of waiting forever.

    On CPU the processes exchange results through Gloo collectives (set
    here). Raises ``RuntimeError`` when the processes run different versions
    of jax, jaxlib or jaxalign.
    """
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialized in this process")
    coordinator_address = coordinator_address or os.environ.get("JAXALIGN_COORDINATOR") or None
    if num_processes is None:
        num_processes = _env_int("JAXALIGN_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAXALIGN_PROCESS_ID")
    if coordinator_address is not None:
        _check_address(coordinator_address)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    for name, value in (("timeout", timeout), ("heartbeat_timeout", heartbeat_timeout)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1 second, got {value}")
    if coordinator_address is not None and process_id not in (None, 0):
        _wait_for_coordinator(coordinator_address, timeout, process_id, num_processes)
    try:
        # CPU devices of different processes talk through Gloo (the default,
        # "none", has no cross-process collectives at all)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # pragma: no cover - an option a later JAX renames
        pass
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes,
            process_id=process_id, local_device_ids=local_device_ids,
            initialization_timeout=int(timeout), heartbeat_timeout_seconds=int(heartbeat_timeout))
    except Exception as exc:
        where = coordinator_address or "the detected coordinator"
        raise RuntimeError(
            f"jax.distributed could not start: process {process_id} of {num_processes} did not "
            f"reach {where} with every process within {timeout} s ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Check the address and port, that "
            "every process was started with the same coordinator_address and num_processes, and "
            "that a firewall lets the port through."
        ) from exc
    _check_versions()


def _wait_for_coordinator(address: str, timeout: float, process_id, num_processes) -> None:
    """Wait until process 0's coordinator accepts connections, or fail clearly.

    JAX aborts the whole process (no Python exception) when its coordinator
    cannot be reached, so the address is tried here first.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, timeout)):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(
        f"jax.distributed: process {process_id} of {num_processes} could not reach the "
        f"coordinator {address} within {timeout:g} s ({last}). Start process 0 (which serves "
        "it) with the same coordinator_address, check the host name and port, and that a "
        "firewall lets the port through.")


def _check_versions() -> None:
    """Refuse processes whose jax / jaxlib / jaxalign versions differ."""
    from jax.experimental import multihost_utils

    mine = versions()
    blob = json.dumps(mine, sort_keys=True).encode()
    digest = np.frombuffer(hashlib.sha256(blob).digest()[:8], np.uint8).astype(np.int32)
    # fixed-size payloads: a digest from every process, then the texts
    digests = np.asarray(multihost_utils.process_allgather(digest))
    if (digests == digests[0]).all():
        return
    text = np.zeros(256, np.int32)
    text[:len(blob)] = np.frombuffer(blob[:256], np.uint8)
    texts = np.asarray(multihost_utils.process_allgather(text))
    seen = [bytes(t[t > 0].astype(np.uint8)).decode(errors="replace") for t in texts]
    lines = "; ".join(f"process {i}: {s}" for i, s in enumerate(seen))
    raise RuntimeError(f"the processes run different versions (every process needs the same "
                       f"jax, jaxlib and jaxalign): {lines}")


def shutdown() -> None:
    """Stop ``jax.distributed`` in this process (no-op when not running)."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()
