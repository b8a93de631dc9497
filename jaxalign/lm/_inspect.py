"""What a model is, read from its files without loading a weight: ``inspect(name_or_path, revision)``.

A sweep needs to know, before any work, that every model and revision it
names exists locally, is an architecture jaxalign implements, and how many
layers it has (to check the requested ones); and it needs the files that
determine its outputs, to key cached features without loading the model.
:func:`inspect` answers all of that from ``config.json`` (or a GGUF file's
metadata and tensor index) in milliseconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from jaxalign.lm._registry import MODEL_TYPES

__all__ = ["ModelSource", "inspect"]


@dataclass(frozen=True)
class ModelSource:
    """A model located and described, nothing loaded.

    Attributes
    ----------
    name : what was asked for (path or Hub id)
    revision : the Hub revision asked for, or None
    path : the GGUF file, or the local checkpoint folder (a Hub id's cached snapshot)
    format : "gguf" or "hf"
    model_type : Hugging Face ``model_type`` (a key of ``lm.MODEL_TYPES``)
    n_layers : transformer blocks; hidden states are 0..n_layers
    files : the files that determine the model's outputs (weights, config,
        tokenizer), sorted; for a GGUF file, the file itself
    """

    name: str
    revision: str | None
    path: Path
    format: str
    model_type: str
    n_layers: int
    files: tuple[Path, ...]


def inspect(name_or_path: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """Locate a model as :func:`jaxalign.lm.load` would and read its config, loading no weight.

    Raises FileNotFoundError (missing file or folder, a Hub id or revision
    not in the local cache when offline; the message names it) and
    ValueError (an architecture jaxalign does not implement, a config without
    a layer count).

    Examples
    --------
    >>> from jaxalign import lm
    >>> src = lm.inspect(lm.packaged_model("SmolLM2-135M-Instruct"))  # doctest: +SKIP
    >>> src.format, src.model_type, src.n_layers  # doctest: +SKIP
    ('gguf', 'llama', 30)
    """
    from jaxalign.lm._load import resolve

    name = os.fspath(name_or_path)
    if name.lower().endswith(".gguf"):
        from jaxalign.lm._gguf import read_gguf_config

        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        config = read_gguf_config(path)
        return ModelSource(name, revision, path.resolve(), "gguf", _model_type(config, path),
                           _n_layers(config, path), (path.resolve(),))
    directory = resolve(name, revision)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{config_file} is not readable JSON: {error}") from None
    files = tuple(sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
                         and p.suffix.lower() not in (".md", ".txt", ".png", ".jpg")))
    return ModelSource(name, revision, directory, "hf", _model_type(config, config_file),
                       _n_layers(config, config_file), files)


def _model_type(config: dict, where) -> str:
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{where}: unsupported model_type {model_type!r}; supported: "
                         f"{', '.join(sorted(MODEL_TYPES))}")
    return model_type


def _n_layers(config: dict, where) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise ValueError(f"{where}: no layer count (num_hidden_layers / n_layer) in the config")
