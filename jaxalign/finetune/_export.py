"""Export a model of :mod:`jaxalign.lm` as a Hugging Face folder.

``save_pretrained(model, tokenizer, folder)`` writes ``config.json``
(``Config.to_hf()`` of the architecture), ``model.safetensors`` and the
tokenizer's files, which ``transformers.AutoModelForCausalLM.from_pretrained``
and ``jaxalign.lm.load`` both read.

The tensor names are not written by hand: each architecture's checkpoint-name
table (Hugging Face name -> parameter path, layer, transform; the table
``load_state`` fills the model from) is inverted. A table entry
``name -> Target(path, layer, transform)`` is exported as::

    tensors[prefix + name] = inverse(transform)(parameter[path][layer])

where the only transform the tables use, the (out, in) <-> (in, out)
transpose of PyTorch ``nn.Linear`` weights, is its own inverse, and
``prefix`` is the base-model prefix that the architecture's ``_rename``
strips on load (``transformer.`` for GPT-2, ``gpt_neox.`` for GPT-NeoX; Llama's
table holds full names); the LM heads live outside the base model. Tied
embeddings are written once, as transformers writes them.

The safetensors file is written directly (an 8-byte header length, a JSON
header of dtypes, shapes and offsets padded to 8 bytes, then the raw
little-endian data), with ``{"format": "pt"}`` metadata, which transformers
expects; each file is written atomically.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxalign._core.files import atomic_write, atomic_write_text
from jaxalign.finetune._lora import merged_params
from jaxalign.lm import MODEL_TYPES
from jaxalign.lm._common import transpose
from jaxalign.lm._registry import architecture

__all__ = ["hf_tensors", "save_pretrained"]

# model_type -> (base-model prefix the loader strips, names outside the base model)
_PREFIX = {
    "gpt2": ("transformer.", ("lm_head.weight",)),
    "gpt_neox": ("gpt_neox.", ("embed_out.weight",)),
    "llama": ("", ()),
}

_DTYPE_NAMES = {
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype("<f8"): "F64",
}


def model_type(model) -> str:
    """The Hugging Face ``model_type`` of a jaxalign model (from the module implementing it)."""
    module = type(model).__module__
    for name, path in MODEL_TYPES.items():
        if path == module:
            return name
    raise ValueError(f"{module}.{type(model).__name__} is not an architecture of jaxalign.lm "
                     f"(known: {', '.join(sorted(MODEL_TYPES))})")


def _name_table(arch, config):
    table = getattr(arch, "name_table", None) or getattr(arch, "state_table", None)
    if table is None:
        raise ValueError(f"{arch.__name__} has no checkpoint-name table")
    return table(config)


def hf_tensors(model) -> dict[str, np.ndarray]:
    """Every parameter of ``model`` under its Hugging Face checkpoint name (host numpy arrays).

    The inverse of the architecture's ``load_state`` (see the module
    docstring); every parameter is covered exactly once, or ValueError.
    LoRA adapters (``add_lora``) are merged into their kernels first
    (``W + (alpha / r) A B``): the export is a plain model.
    """
    kind = model_type(model)
    if kind not in _PREFIX:
        raise ValueError(f"exporting model_type {kind!r} is not supported (supported: {', '.join(sorted(_PREFIX))})")
    prefix, outside = _PREFIX[kind]
    arch = architecture(kind)
    params = {path: np.asarray(v) for path, v in merged_params(model).items()}  # LoRA adapters merged
    table = _name_table(arch, model.config)
    out, used = {}, set()
    for name, target in table.items():
        if target.path not in params:
            raise ValueError(f"{arch.__name__}'s name table maps {name!r} to {'.'.join(target.path)}, "
                             "which the model lacks")
        value = params[target.path]
        if target.layer is not None:
            value = value[target.layer]
        if target.transform is transpose:
            value = value.T
        elif target.transform is not None:
            raise ValueError(f"cannot invert the transform {target.transform!r} of {name!r}")
        out[name if name in outside else prefix + name] = np.ascontiguousarray(value)
        used.add(target.path)
    missed = sorted(".".join(p) for p in params if p not in used)
    if missed:
        raise ValueError(f"parameters no checkpoint name covers (not exported): {missed}")
    return out


def _safetensors_bytes(tensors: dict[str, np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        x = np.ascontiguousarray(tensors[name])
        dtype = x.dtype.newbyteorder("<") if x.dtype.byteorder == ">" else x.dtype
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has dtype {x.dtype}, which is not exported")
        x = x.astype(dtype, copy=False)
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(x.shape),
                        "data_offsets": [offset, offset + x.nbytes]}
        offset += x.nbytes
        blobs.append(x)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, blobs


def write_safetensors(path, tensors: dict[str, np.ndarray]) -> Path:
    """``tensors`` as one ``.safetensors`` file (atomic), in name order, ``{"format": "pt"}`` metadata."""
    head, blobs = _safetensors_bytes(tensors)

    def write(f):
        f.write(head)
        for x in blobs:
            f.write(memoryview(x.reshape(-1).view(np.uint8)))

    return atomic_write(path, write)


def save_pretrained(model, tokenizer, folder) -> Path:
    """Write ``model`` (and ``tokenizer``) as a Hugging Face folder; returns the folder.

    Files: ``config.json`` (the architecture's ``Config.to_hf()``, with the
    tokenizer's bos / eos / pad ids and the parameters' dtype),
    ``model.safetensors`` (names from the inverted checkpoint-name table) and
    the tokenizer's files (``tokenizer.save_pretrained``; skipped when
    ``tokenizer`` is None). Both ``transformers.AutoModelForCausalLM
    .from_pretrained(folder)`` and ``jaxalign.lm.load(folder)`` read it and
    give the same logits; a model with LoRA adapters is written merged (a
    plain model). Supported: GPT-2, GPT-NeoX and Llama (causal
    models). Raises ValueError for other models, or configs Hugging Face
    cannot express (a GGUF-only rope table).

    Examples
    --------
    >>> from jaxalign import lm, finetune
    >>> model, tok = lm.load(lm.packaged_model("SmolLM2-135M-Instruct"))  # doctest: +SKIP
    >>> finetune.save_pretrained(model, tok, "out/smollm2-hf")  # doctest: +SKIP
    >>> import transformers  # doctest: +SKIP
    >>> hf = transformers.AutoModelForCausalLM.from_pretrained("out/smollm2-hf")  # doctest: +SKIP
    """
    folder = Path(os.fspath(folder)).expanduser()
    tensors = hf_tensors(model)  # errors before anything is written
    config = dict(model.config.to_hf())
    dtypes = {str(x.dtype) for x in tensors.values()}
    config["torch_dtype"] = "bfloat16" if dtypes == {"bfloat16"} else "float32"
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None:
                config[key] = int(value)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    write_safetensors(folder / "model.safetensors", tensors)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder
