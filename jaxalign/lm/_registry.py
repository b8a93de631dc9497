"""Hugging Face ``model_type`` -> the module implementing that architecture.

Modules are imported lazily, by path, so adding an architecture is one line
here and one file next to this one. Each module provides ``Config`` (with
``Config.from_hf``, a ``max_length`` and a ``causal`` class attribute, read by
``jaxalign.lm.is_causal`` / ``max_length``), ``Model``, ``load_state`` (with a
``place`` keyword, see ``jaxalign.lm._common.fill_params``) and ``SHARDING``
(for ``load(devices=...)``, see ``jaxalign.lm._shard``). Causal architectures
also give ``PROJECTIONS`` (their blocks' linear layers by group, the LoRA
targets of ``jaxalign.finetune.add_lora``) and a ``Model.remat`` attribute
(rematerialised blocks, ``_common.run_block``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODEL_TYPES: dict[str, str] = {
    "gpt2": "jaxalign.lm.gpt2",
    "gpt_neox": "jaxalign.lm.gpt_neox",
    "llama": "jaxalign.lm.llama",
    "bert": "jaxalign.lm.bert",
}


def architecture(model_type: str | None) -> ModuleType:
    """The architecture module for a config's ``model_type``.

    Raises ValueError naming the supported types when ``model_type`` is
    unknown, and ImportError when a registered module cannot be imported.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    module_path = MODEL_TYPES[model_type]
    try:
        return importlib.import_module(module_path)
    except ImportError as error:
        raise ImportError(
            f"model_type {model_type!r} is registered but {module_path} cannot be imported: {error}"
        ) from error
