"""On-disk cache of extracted features, so a sweep never recomputes.

An entry is ``<cache_dir>/<key>.npy`` (the array) plus ``<key>.json`` (what
produced it, for people browsing the folder). The key is the SHA-256 of

- the model's identity (:func:`model_fingerprint`): class, config and a
  checksum of its parameters;
- the tokenized input: the token ids and every word's token range (this
  covers the words, the text and the tokenizer's behaviour exactly);
- the settings (pooling, context, layers, window sizes, max length, ...);
- the model's dtype (:func:`model_dtype`: its parameters' dtypes), always,
  also when a ``model_id`` names the model (the same checkpoint loaded in
  bfloat16 gives other features than in float32);
- ``FORMAT``, the cache format version, bumped whenever the computation or
  the key changes.

Files are written atomically (``jaxalign._core.files.atomic_write``): ``np.save``
to a temporary file in the same folder, flushed and fsynced, then renamed
onto the final name with ``os.replace``, so an interrupted run leaves either a
complete entry or none. A cached entry that
cannot be read (truncated by a full disk, say) is reported and recomputed.
Temporary files are named ``.<entry>.<host>-<pid>.<random>.tmp``; a run killed
mid-write leaves one behind, and the next run (:func:`prepare`) removes those
of this host whose writer process no longer exists (``remove_orphans``,
re-exported from ``jaxalign._core.files``).

:func:`prepare` is called before any model work: a cache folder that is a
file, cannot be created or is not writable fails at once, not after the
features are computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxalign._core.files import atomic_write, remove_orphans, writable_dir

#: Cache format version: part of every key, bumped whenever the computation
#: or the key changes (2: the model dtype joined the key).
FORMAT = 2
# Elements read from each parameter for the checksum (evenly strided over the
# flattened tensor). Any real change of weights (another checkpoint, a
# fine-tuning step) changes all of them; to tell apart models that differ in a
# handful of weights only, pass ``model_id`` explicitly.
SAMPLES_PER_PARAM = 4096


def _hash_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _config_dict(config: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return config
    return repr(config)


def model_fingerprint(model) -> str:
    """A hex digest identifying a model: class, config and parameter checksum.

    The checksum hashes, for every parameter (in ``nnx.state`` order), its
    path, shape, dtype and the bytes of ``SAMPLES_PER_PARAM`` evenly strided
    elements (the whole tensor when it is smaller). The strided read happens
    on the device, so only a few kilobytes per parameter travel to the host.
    """
    import jax.numpy as jnp
    from flax import nnx

    cls = type(model)
    config = getattr(model, "config", None)
    head = json.dumps(
        {"class": f"{cls.__module__}.{cls.__qualname__}", "config": _config_dict(config)},
        sort_keys=True,
        default=str,
    ).encode()
    parts = [head]
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        x = variable.get_value()
        flat = jnp.ravel(x)
        step = max(1, -(-flat.size // SAMPLES_PER_PARAM))
        sample = np.asarray(flat[::step])
        parts.append(
            json.dumps([list(map(str, path)), list(x.shape), str(x.dtype)]).encode()
            + sample.tobytes()
        )
    return _hash_bytes(*parts)


def model_dtype(model) -> str:
    """The dtypes of a model's parameters (``"float32"``, ``"bfloat16"``, or several joined by ``+``)."""
    from flax import nnx

    dtypes = {str(variable.get_value().dtype) for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    return "+".join(sorted(dtypes)) or "none"


def cache_key(kind: str, model_id: str, arrays: dict[str, np.ndarray], settings: dict, *, dtype: str) -> str:
    """SHA-256 hex key of a computation (see module doc); ``dtype`` is :func:`model_dtype`."""
    payload = json.dumps(
        {
            "format": FORMAT,
            "kind": kind,
            "model": model_id,
            "dtype": str(dtype),
            "arrays": {
                k: _hash_bytes(str(v.dtype).encode(), str(v.shape).encode(), np.ascontiguousarray(v).tobytes())
                for k, v in sorted(arrays.items())
            },
            "settings": settings,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def entry_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"{key}.npy"


def load(cache_dir: str | os.PathLike, key: str) -> np.ndarray | None:
    """The cached array for ``key``, or None when absent or unreadable."""
    path = entry_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except Exception as error:  # truncated or corrupt: recompute
        warnings.warn(f"ignoring unreadable cache entry {path} ({error}); recomputing", stacklevel=3)
        return None


def prepare(cache_dir: str | os.PathLike) -> Path:
    """Check ``cache_dir`` before any work: create it, check it is writable, clean orphaned temporaries.

    Raises ``NotADirectoryError`` when it (or a parent) is a file and
    ``PermissionError`` when it cannot be created or written, naming it.
    """
    path = writable_dir(cache_dir, "cache_dir")
    remove_orphans(path)
    return path


def save(cache_dir: str | os.PathLike, key: str, array: np.ndarray, meta: dict) -> Path:
    """Write ``array`` (and ``meta`` as JSON) under ``key``, atomically."""
    path = entry_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path.with_suffix(".json"), lambda f: f.write(text))
    atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))
    return path
