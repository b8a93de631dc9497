"""A GGUF file dequantized once: its float32 tensors, config and tokenizer kept on disk.

Loading a quantized GGUF costs a dequantization of every tensor (3.7 s for
SmolLM2-135M Q4_1 on 2 CPU cores) and building the tokenizer from the file's
vocabulary (4.9 s). :func:`load_gguf_cached` does both once per file and
keeps the result in ``<cache>/<key>/``: ``config.json``, one ``.npy`` per
tensor (read back into memory, never memory-mapped) and the tokenizer saved by
transformers (``save_pretrained``), read back in well under a second.

The key is the sha256 of the file's resolved path, size and modification
time and of :data:`FORMAT` (bumped when the dequantization or the layout
changes), so a replaced file is read afresh. Entries are written into a
temporary folder and renamed into place whole (a ``DONE`` marker last), so a
killed load leaves nothing that is ever read.

Where: ``$JAXALIGN_GGUF_CACHE`` (a folder, or ``off``), else
``$XDG_CACHE_HOME/jaxalign/gguf`` (``~/.cache/jaxalign/gguf``). A folder that
cannot be written falls back to reading the file, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "gguf_cache_dir", "load_gguf_cached", "read_cached", "write_cached"]

#: Part of every key: bumped when what is cached changes.
FORMAT = 1
_ENV = "JAXALIGN_GGUF_CACHE"


def gguf_cache_dir() -> Path | None:
    """The cache folder, or None when ``$JAXALIGN_GGUF_CACHE`` is ``off``."""
    value = os.environ.get(_ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxalign" / "gguf"


def _key(path: Path) -> str:
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _safe(name: str) -> str:
    return name.replace("/", "__")


def _folder(cache_dir):
    return gguf_cache_dir() if isinstance(cache_dir, str) and cache_dir == "default" else cache_dir


def read_cached(path: str | os.PathLike[str], cache_dir: Path | None | str = "default"):
    """``(hf_config, tensors, tokenizer)`` from the cache, or None when it does not hold this file."""
    path = Path(path)
    folder = _folder(cache_dir)
    if folder is None:
        return None
    entry = Path(folder) / _key(path)
    if not (entry / "DONE").is_file():
        return None
    try:
        return _read(entry)
    except (OSError, ValueError) as error:  # unreadable entry: read the file again
        warnings.warn(f"GGUF cache entry {entry} unreadable ({error}): reading {path}", RuntimeWarning,
                      stacklevel=3)
        return None


def write_cached(path: str | os.PathLike[str], config, tensors, tokenizer,
                 cache_dir: Path | None | str = "default") -> None:
    """Keep a GGUF's dequantized tensors and tokenizer (call it once the model was built from them:
    weights that fail the checks are never cached). A folder that cannot be written warns."""
    path = Path(path)
    folder = _folder(cache_dir)
    if folder is None or not hasattr(tokenizer, "save_pretrained"):
        return
    entry = Path(folder) / _key(path)
    if (entry / "DONE").is_file():
        return
    try:
        _write(entry, path, config, tensors, tokenizer)
    except OSError as error:
        warnings.warn(f"could not cache the dequantized {path.name} in {folder} ({error}); it will be "
                      f"dequantized again next time (set ${_ENV} to a writable folder, or 'off')",
                      RuntimeWarning, stacklevel=3)


def load_gguf_cached(path: str | os.PathLike[str], cache_dir: Path | None | str = "default"
                     ) -> tuple[dict, dict[str, np.ndarray], Any]:
    """``(hf_config, tensors, tokenizer)`` of a GGUF file, from the cache when it holds it (else read
    from the file and cached). ``cache_dir``: a folder, None (no cache: read the file), or "default"
    (:func:`gguf_cache_dir`). ``lm.load`` uses
    :func:`read_cached` / :func:`write_cached` itself, so that the weights are checked first."""
    from jaxalign.lm import _gguf

    hit = read_cached(path, cache_dir)
    if hit is not None:
        return hit
    config, tensors, _ = _gguf.read_gguf(Path(path), with_tokenizer=False)
    tokenizer = _gguf.gguf_tokenizer(Path(path))
    write_cached(path, config, tensors, tokenizer, cache_dir)
    return config, tensors, tokenizer


def _read(entry: Path):
    from transformers import AutoTokenizer

    doc = json.loads((entry / "entry.json").read_text())
    # read into memory, not memory-mapped: on CPU jax may alias a host buffer, and a read-only
    # file mapping must never end up inside a device array
    tensors = {name: np.load(entry / "tensors" / f"{_safe(name)}.npy", allow_pickle=False)
               for name in doc["tensors"]}
    tokenizer = AutoTokenizer.from_pretrained(str(entry / "tokenizer"))
    return doc["config"], tensors, tokenizer


def _write(entry: Path, source: Path, config, tensors, tokenizer) -> None:
    from jaxalign._core.files import atomic_write_text, host_tag

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.{host_tag()}-{os.getpid()}.",
                                suffix=".tmp"))
    try:
        (tmp / "tensors").mkdir()
        for name, value in tensors.items():
            np.save(tmp / "tensors" / f"{_safe(name)}.npy", np.asarray(value), allow_pickle=False)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        atomic_write_text(tmp / "entry.json", json.dumps({"source": str(source.resolve()), "format": FORMAT,
                                                          "config": config, "tensors": sorted(tensors)}))
        atomic_write_text(tmp / "DONE", "ok\n")
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "DONE").is_file():  # another process won the race with a whole entry: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
