"""Read llama.cpp GGUF checkpoints of Llama-architecture models.

:func:`read_gguf` returns what a Hugging Face checkpoint directory would give:
a ``config.json``-like dictionary, the tensors (dequantised to float32 numpy)
under Hugging Face Llama names, and the tokenizer (built by transformers from
the GGUF metadata). It follows transformers' own GGUF loader
(``transformers/modeling_gguf_pytorch_utils.py`` and ``integrations/ggml.py``):

* the same metadata -> config keys (``llama.block_count`` ->
  ``num_hidden_layers``, ``llama.rope.dimension_count`` -> ``head_dim``, ...)
  and ``tie_word_embeddings = "output.weight" not in the file``;
* the same dequantisation (``gguf.quants.dequantize``, exact for every
  ggml type that gguf-py implements: F32/F16/BF16, Q4_0/1, Q5_0/1, Q8_0, K-quants, ...);
* the same undoing of llama.cpp's row permutation of the query and key
  projections (llama.cpp's converter interleaves the two rotary halves of every
  head; ``_reverse_permute`` restores the "rotate half" order).

Where the file says more than transformers reads, jaxalign follows llama.cpp
(the format's reference) instead of silently ignoring it:

* ``rope_freqs.weight`` (Llama 3.x rotary frequency factors, llama.cpp divides
  each inverse frequency by them) becomes ``hf_config["rope_freq_factors"]``,
  honoured by :class:`jaxalign.lm.llama.Config`; transformers drops it;
* ``attention_bias`` / ``mlp_bias`` are set when the file holds such biases
  (transformers would leave them False and drop the biases);
* ``llama.rope.scaling.type == "linear"`` (or the older
  ``llama.rope.scale_linear``) becomes a linear ``rope_parameters`` entry;
  other scaling types (yarn, longrope) raise ``ValueError``.

Only the ``llama`` GGUF architecture is supported (it also covers Mistral,
SmolLM, TinyLlama... converted as ``llama``); anything else raises
``ValueError``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_gguf", "read_gguf_config", "GGUF_TO_HF_LLAMA", "gguf_name", "gguf_tokenizer"]

SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF metadata key (without the "llama." prefix) -> HF config key, as
# transformers.integrations.ggml.GGUF_CONFIG_MAPPING["llama"].
_CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.dimension_count": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}

# GGUF tensor name -> Hugging Face Llama name (gguf-py's MODEL_TENSORS for
# MODEL_ARCH.LLAMA, restricted to what a dense Llama has).
GGUF_TO_HF_LLAMA = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_gate.bias": "mlp.gate_proj.bias",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_up.bias": "mlp.up_proj.bias",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_down.bias": "mlp.down_proj.bias",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
# Harmless: old converters stored the rotary inverse frequencies per block.
_IGNORED_BLOCK = {"attn_rot_embd"}


def gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of a Hugging Face Llama tensor name (``hf_name`` itself if unknown)."""
    for gguf, hf in GGUF_TO_HF_LLAMA.items():
        if hf == hf_name:
            return gguf
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", hf_name)
    if m is not None:
        for part, hf in _BLOCK_TO_HF.items():
            if hf == m.group(2):
                return f"blk.{m.group(1)}.{part}"
    return hf_name


def _reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of q/k rows (transformers' reverse permute)."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _open(path: str | os.PathLike[str]) -> tuple[Path, Any, str]:
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        reader = GGUFReader(path)  # memory-mapped: metadata and tensor index only
    except Exception as error:  # gguf-py fails with bare numpy / mmap / struct messages
        raise ValueError(
            f"{path}: cannot read this GGUF file: it looks truncated or corrupt "
            f"({path.stat().st_size} bytes; {type(error).__name__}: {error})"
        ) from error
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ValueError(
                f"{path}: GGUF tensor {tensor.name} ends at byte {tensor.data_offset + tensor.n_bytes} "
                f"but the file has {size} bytes: it looks truncated"
            )
    arch = _field(reader, "general.architecture")
    if arch is None:
        raise ValueError(f"{path} has no general.architecture: not a model GGUF file")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported by jaxalign (supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}); convert the model to a Hugging Face "
            "checkpoint instead"
        )
    return path, reader, arch


def _config(path: Path, reader: Any, arch: str) -> dict[str, Any]:
    from gguf.quants import dequantize

    config: dict[str, Any] = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                              "hidden_act": "silu"}
    for key, hf_key in _CONFIG_KEYS.items():
        value = _field(reader, f"{arch}.{key}")
        if value is not None:
            config[hf_key] = value
    for key, hf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                        ("padding_token_id", "pad_token_id")):
        value = _field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            config[hf_key] = value
    if "vocab_size" not in config and "tokenizer.ggml.tokens" in reader.fields:
        config["vocab_size"] = len(reader.fields["tokenizer.ggml.tokens"].data)
    config.setdefault("num_key_value_heads", config.get("num_attention_heads"))
    key_length = _field(reader, f"{arch}.attention.key_length")
    if "head_dim" not in config and key_length is not None:
        config["head_dim"] = key_length
    elif key_length is not None and key_length != config["head_dim"]:
        raise ValueError(
            f"rope.dimension_count {config['head_dim']} != attention.key_length {key_length}: "
            "partial rotary embeddings are not supported"
        )
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(config.pop("rope_theta", 10000.0))}
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    scale_linear = _field(reader, f"{arch}.rope.scale_linear")
    if scaling == "linear" or (scaling is None and scale_linear not in (None, 1.0)):
        factor = _field(reader, f"{arch}.rope.scaling.factor", scale_linear)
        if factor is None:
            raise ValueError("GGUF declares linear rope scaling without a factor")
        rope.update(rope_type="linear", factor=float(factor))
    elif scaling not in (None, "none"):
        raise ValueError(f"unsupported GGUF rope scaling type {scaling!r} (supported: none, linear)")
    config["rope_parameters"] = rope

    missing = [k for k in ("num_hidden_layers", "num_attention_heads", "hidden_size") if k not in config]
    if missing:
        raise ValueError(f"{path} lacks the metadata for {', '.join(missing)}")

    names = {t.name for t in reader.tensors}
    config["tie_word_embeddings"] = "output.weight" not in names
    # not in the metadata: inferred from the tensors present (transformers does
    # not, and silently drops such biases)
    config["attention_bias"] = any(re.search(r"\.attn_(q|k|v|output)\.bias$", n) for n in names)
    config["mlp_bias"] = any(re.search(r"\.ffn_(gate|up|down)\.bias$", n) for n in names)
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":  # head_dim // 2 numbers
            config["rope_freq_factors"] = [float(x) for x in _dequantize(dequantize, tensor).ravel()]
    return config


def read_gguf_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The Hugging Face style config dictionary of a Llama GGUF file, from its
    metadata and tensor index only (no weight is read), as :func:`read_gguf`
    returns it.

    Examples
    --------
    >>> from jaxalign import lm
    >>> from jaxalign.lm import llama
    >>> path = lm.packaged_model("SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> llama.Config.from_hf(read_gguf_config(path)).max_length  # doctest: +SKIP
    8192
    """
    return _config(*_open(path))


def read_gguf(
    path: str | os.PathLike[str], *, with_tokenizer: bool = True
) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    """Read a Llama GGUF file.

    Returns ``(hf_config, tensors, tokenizer)``: a Hugging Face style config
    dictionary (``model_type="llama"``, see :func:`read_gguf_config`), float32
    tensors under Hugging Face ``LlamaForCausalLM`` names (q/k rows
    un-permuted) and a transformers tokenizer built with
    ``AutoTokenizer.from_pretrained(dir, gguf_file=name)`` (``None`` when
    ``with_tokenizer=False``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a
    truncated or corrupt file, a non-llama architecture, an unknown tensor or
    an unsupported rope scaling.
    """
    from gguf.quants import dequantize

    path, reader, arch = _open(path)
    config = _config(path, reader, arch)
    n_heads = int(config["num_attention_heads"])
    n_kv = int(config["num_key_value_heads"])
    n_layers = int(config["num_hidden_layers"])

    tensors: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for tensor in reader.tensors:
        name = tensor.name
        if name == "rope_freqs.weight":  # in the config
            continue
        if name in GGUF_TO_HF_LLAMA:
            hf_name = GGUF_TO_HF_LLAMA[name]
        else:
            m = _BLOCK_RE.match(name)
            if m is None or int(m.group(1)) >= n_layers:
                unknown.append(name)
                continue
            part = m.group(2)
            if part.split(".")[0] in _IGNORED_BLOCK:
                continue
            if part not in _BLOCK_TO_HF:
                unknown.append(name)
                continue
            hf_name = f"model.layers.{m.group(1)}.{_BLOCK_TO_HF[part]}"
        weights = _dequantize(dequantize, tensor)
        if ".attn_q." in name:
            weights = _reverse_permute(weights, n_heads)
        elif ".attn_k." in name:
            weights = _reverse_permute(weights, n_kv)
        tensors[hf_name] = weights
    if unknown:
        raise ValueError(
            f"GGUF tensors with no Llama counterpart (MoE or another variant?): {', '.join(unknown[:20])}"
        )

    tokenizer = gguf_tokenizer(path) if with_tokenizer else None
    return config, tensors, tokenizer


def gguf_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The transformers tokenizer embedded in a GGUF file (``AutoTokenizer`` with ``gguf_file=``)."""
    from transformers import AutoTokenizer

    path = Path(path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _dequantize(dequantize: Any, tensor: Any) -> np.ndarray:
    try:
        weights = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as err:
        raise ValueError(
            f"cannot dequantise GGUF tensor {tensor.name} of type {tensor.tensor_type.name}: {err}"
        ) from err
    # float32, detached from the memory-mapped file
    return np.array(weights, dtype=np.float32, copy=True)
