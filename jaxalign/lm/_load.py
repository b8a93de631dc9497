"""Load a language model (Hugging Face directory, Hub id or GGUF file) and run it.

``load`` finds the files (``resolve``), reads config and tensors
(``read_checkpoint``), picks the architecture from ``model_type``
(``_registry``), builds an *abstract* model with ``nnx.eval_shape`` (no random
initialisation, no second copy of the weights) and lets the architecture's
``load_state`` fill every parameter through its explicit name table.

Tensors are read lazily: safetensors files are memory-mapped (read here
directly, which also gives bfloat16 through ml_dtypes, something
``safetensors.numpy`` cannot do) and ``pytorch_model.bin`` files are opened
with ``torch.load(mmap=True)``. Each parameter is cast to the requested dtype
on the host and put on the default device one at a time, so the peak host
memory is about one parameter beyond the model itself.

With ``devices=`` the parameters are instead split over several devices,
tensor-parallel style (``jaxalign.lm._shard``): each device receives only its
slice of every weight matrix, straight from the host, and ``hidden_states``
and ``jaxalign.features`` run the sharded model unchanged.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jaxalign._precision import jit as _jit
from jaxalign.lm._common import NonFiniteWeightError
from jaxalign.lm._registry import architecture
from jaxalign.lm._shard import model_mesh, sharded_placer

DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)
# What is fetched from the Hub: safetensors first, PyTorch pickles only when a
# revision has no safetensors (older Pythia checkpoints).
_HUB_PATTERNS = (
    ["config.json", SAFETENSORS, SAFETENSORS_INDEX, "model-*-of-*.safetensors", *TOKENIZER_FILES],
    ["config.json", TORCH_BIN, TORCH_BIN_INDEX, "pytorch_model-*-of-*.bin", *TOKENIZER_FILES],
)


# ------------------------------------------------------------------ reading


def _read_json(path: Path) -> dict:
    """A JSON file's object; ValueError naming the file, line and column when it is malformed."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 JSON file ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-mapped numpy views of every tensor in a ``.safetensors`` file.

    Format: an 8-byte little-endian header length N, N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (offsets
    relative to the end of the header), then the raw data.
    """
    path = Path(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if raw.size < 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    n = int(raw[:8].view("<u8")[0])
    if 8 + n > raw.size:
        raise ValueError(f"{path} is not a safetensors file (header length {n} > file size)")
    try:
        header = json.loads(bytes(raw[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a safetensors file or is corrupt (unreadable header: {error})") from None
    header.pop("__metadata__", None)
    data = raw[8 + n :]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end > data.size or end - begin != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {name!r} has inconsistent data offsets (truncated file?)")
        tensors[name] = data[begin:end].view(dtype).reshape(shape)
    return tensors


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a PyTorch ``pytorch_model.bin`` as numpy (needs torch).

    Loaded with ``weights_only=True`` (no arbitrary pickles) and memory-mapped;
    bfloat16 is reinterpreted bit for bit as ``ml_dtypes.bfloat16``.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{path} is a PyTorch checkpoint: reading it needs torch "
            "(or convert it to safetensors)"
        ) from error
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's messages do not name the file
        raise ValueError(
            f"{path}: cannot read this PyTorch checkpoint: it looks truncated or corrupt, or is not a "
            f"weights-only state dict ({type(error).__name__}: {str(error).strip().splitlines()[0]})"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (tensor name -> tensor), found {type(state).__name__}")
    tensors = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach()
        if t.dtype == torch.bfloat16:
            tensors[name] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            tensors[name] = t.numpy()
    return tensors


def _read_sharded(directory: Path, index_name: str, reader) -> dict[str, np.ndarray]:
    index = _read_json(directory / index_name)
    if not isinstance(index.get("weight_map"), dict):
        raise ValueError(f"{directory / index_name}: no weight_map (tensor name -> shard file)")
    shards = list(dict.fromkeys(index["weight_map"].values()))
    missing = [s for s in shards if not (directory / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: shards listed in {index_name} are missing: {missing}")
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
        tensors.update(reader(directory / shard))
    return tensors


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, tensors by Hugging Face name) of a model directory.

    Weights are looked for in this order: ``model.safetensors``,
    ``model.safetensors.index.json`` (+ its shards), ``pytorch_model.bin``,
    ``pytorch_model.bin.index.json`` (+ its shards).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json (the Hugging Face model config)")
    hf_config = _read_json(config_path)
    if (directory / SAFETENSORS).is_file():
        tensors = read_safetensors(directory / SAFETENSORS)
    elif (directory / SAFETENSORS_INDEX).is_file():
        tensors = _read_sharded(directory, SAFETENSORS_INDEX, read_safetensors)
    elif (directory / TORCH_BIN).is_file():
        tensors = read_torch_bin(directory / TORCH_BIN)
    elif (directory / TORCH_BIN_INDEX).is_file():
        tensors = _read_sharded(directory, TORCH_BIN_INDEX, read_torch_bin)
    else:
        raise FileNotFoundError(
            f"{directory} has no model weights: looked for "
            f"{SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} and {TORCH_BIN_INDEX}"
        )
    return hf_config, tensors


def _tensor_file(directory: Path, name: str) -> str:
    """The file of ``directory`` holding tensor ``name``, in ``read_checkpoint``'s order (for errors)."""
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (TORCH_BIN, TORCH_BIN_INDEX)):
        if (directory / single).is_file():
            return str(directory / single)
        if (directory / index).is_file():
            try:
                shard = json.loads((directory / index).read_text())["weight_map"].get(name, index)
            except (OSError, ValueError, KeyError, AttributeError):
                shard = index
            return str(directory / shard)
    return str(directory)


# ---------------------------------------------------------------- resolving


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else is meant as a path.
    return (
        not name
        or os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
    )


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or env


def _has_weights(directory: Path) -> bool:
    return any((directory / f).is_file() for f in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX))


def _snapshot(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    """snapshot_download, offline when HF_HUB_OFFLINE is set or the Hub is unreachable."""
    from huggingface_hub import errors, snapshot_download

    def fetch(local_only: bool) -> Path:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=patterns, local_files_only=local_only
            )
        )

    if _offline():
        return fetch(True)
    try:
        return fetch(False)
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError):
        raise  # the Hub answered: retrying from the cache would only hide that
    except Exception as error:  # network down, proxy, Hub outage ...
        warnings.warn(
            f"could not reach the Hugging Face Hub for {repo_id!r} ({type(error).__name__}: {error}); "
            "using the local cache",
            RuntimeWarning,
            stacklevel=4,
        )
        return fetch(True)


def resolve(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """The local directory holding a model: a path, or a Hub id via the HF cache.

    A Hub id (``"gpt2"``, ``"EleutherAI/pythia-160m"``) goes through
    ``huggingface_hub.snapshot_download`` with ``revision`` (a branch, tag such
    as Pythia's ``"step1000"`` or commit): from the cache only
    (``local_files_only=True``) when ``HF_HUB_OFFLINE`` is set or the Hub cannot
    be reached. Raises FileNotFoundError when nothing is found.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if revision is not None:
            warnings.warn(f"revision={revision!r} ignored for the local directory {path}", stacklevel=3)
        return path
    if path.exists():
        raise ValueError(f"{path} is a file: expected a model directory, a Hub id or a .gguf file")
    if _looks_like_path(name):
        raise FileNotFoundError(f"model directory {path} does not exist")

    from huggingface_hub import constants, errors

    where = f"{name!r}" + (f" at revision {revision!r}" if revision else "")
    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # huggingface_hub >= 1.0
    failures = []
    folder = None
    for patterns in _HUB_PATTERNS:
        try:
            folder = _snapshot(name, revision, patterns)
        except incomplete as error:  # try the other weight format
            failures.append(error)
            continue
        except (errors.HFValidationError, errors.LocalEntryNotFoundError, errors.HfHubHTTPError) as error:
            raise FileNotFoundError(
                f"{where} is neither a local directory nor a Hugging Face Hub model that could be "
                f"resolved{' offline' if _offline() else ''} (cache: {constants.HF_HUB_CACHE}): {error}"
            ) from error
        if _has_weights(folder):
            return folder
    if folder is None:
        raise FileNotFoundError(f"cached snapshot of {where} is incomplete: {failures}")
    return folder  # read_checkpoint says what is missing


# ------------------------------------------------------------------ loading


def _check_dtype(dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    return dtype


def build_model(
    hf_config: dict, tensors: dict[str, np.ndarray], dtype=jnp.float32, devices=None
) -> nnx.Module:
    """A model for a Hugging Face config dict, filled from ``tensors``.

    The model is built abstractly (``nnx.eval_shape``), then the architecture's
    ``load_state`` sets every parameter whole, placed on the default device or,
    with ``devices``, split over several (see ``load``); anything still
    abstract after that is reported as unfilled.
    """
    return _build(hf_config, tensors, dtype, devices, stacklevel=3)


def _build(hf_config, tensors, dtype, devices, *, stacklevel: int, source=None) -> nnx.Module:
    """``build_model``; ``source(name)`` names the file of a tensor in errors (NaN / inf weights)."""
    dtype = _check_dtype(dtype)
    arch = architecture(hf_config.get("model_type"))
    config = arch.Config.from_hf(hf_config)
    model = nnx.eval_shape(lambda: arch.Model(config, dtype=dtype, rngs=nnx.Rngs(0)))
    place = sharded_placer(model, devices, getattr(arch, "SHARDING", None), stacklevel=stacklevel + 1)
    try:
        arch.load_state(model, tensors, place=place)
    except NonFiniteWeightError as error:
        if source is None:
            raise
        raise NonFiniteWeightError(f"{source(error.tensor)}: {error}", error.tensor) from None
    unfilled = [
        ".".join(map(str, path))
        for path, variable in nnx.to_flat_state(nnx.state(model))
        if isinstance(variable.get_value(), jax.ShapeDtypeStruct)
    ]
    if unfilled:
        raise ValueError(f"{arch.__name__}.load_state left these variables unfilled: {unfilled}")
    return model


def _load_tokenizer(directory: Path):
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        warnings.warn(f"{directory} has no tokenizer files: tokenizer is None", stacklevel=3)
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory)
    except Exception as error:  # transformers missing, or a tokenizer it cannot build
        warnings.warn(f"could not load the tokenizer in {directory}: {error}; tokenizer is None", stacklevel=3)
        return None


def load(
    name_or_path: str | os.PathLike, revision: str | None = None, dtype=jnp.float32, devices=None
):
    """Load a language model and its tokenizer: ``(model, tokenizer)``.

    name_or_path
        a Hugging Face model directory (``config.json`` + ``model.safetensors``,
        sharded safetensors with their index, or ``pytorch_model.bin``), a Hub id
        resolved through the local Hugging Face cache (see ``resolve``), or a
        ``.gguf`` file.
    revision
        Hub branch, tag or commit, e.g. ``"step1000"`` for a Pythia checkpoint.
    dtype
        ``jnp.float32`` or ``jnp.bfloat16``: parameters are cast on load and the
        forward pass runs in this dtype (softmax and LayerNorm statistics in
        float32).
    devices
        where the parameters go, for models too large for one device:

        * ``None`` (default): the default device, whole;
        * ``"auto"``: split over all local devices when the parameters exceed
          80% of one device's free memory (``device.memory_stats()``), else as
          None; backends without memory statistics (CPU) are never split;
        * an int k (the first k of ``jax.devices()``), a list of jax devices,
          or a ``jax.sharding.Mesh`` with an axis named ``"model"``: split over
          those devices (the ``"model"`` axis; replicated over any other).

        Splitting is tensor-parallel: every weight matrix is divided along
        its head / MLP / hidden dimension (the architecture's ``SHARDING``
        table), so each device holds about 1/n of it; norms and biases are
        replicated. A matrix with no dimension divisible by n is replicated
        with a warning; ValueError when none is. Each device receives its
        slices straight from the host (``jax.device_put`` with a
        ``NamedSharding``). ``hidden_states`` and ``jaxalign.features`` work
        unchanged: ``jax.jit`` partitions the forward pass (GSPMD), and the
        results equal the single-device ones up to float32 rounding.

    The tokenizer is transformers' ``AutoTokenizer`` for the same directory,
    or None (with a warning) when there is none. Raises FileNotFoundError for
    missing directories or files, ValueError for unsupported architectures or
    options, for checkpoints that do not fill the model exactly, and for
    weights holding NaN or inf (naming the tensor and its file; every tensor
    is checked once as it is loaded).

    Examples
    --------
    Split a model over the first four devices (a list of devices or a
    ``Mesh`` works the same way), then run it as usual:

    >>> import jax, numpy as np
    >>> from jax.sharding import Mesh
    >>> from jaxalign import lm
    >>> model, tok = lm.load("EleutherAI/pythia-1b", devices=4)  # doctest: +SKIP
    >>> model.embed_in.embedding.get_value().sharding.spec  # doctest: +SKIP
    PartitionSpec(None, 'model')
    >>> mesh = Mesh(np.array(jax.devices()[:4]), ("model",))
    >>> model, tok = lm.load("EleutherAI/pythia-1b", devices=mesh)  # doctest: +SKIP
    >>> states = lm.hidden_states(model, tok("Hello world", return_tensors="np")["input_ids"])  # doctest: +SKIP
    >>> model, tok = lm.load("EleutherAI/pythia-1b", devices="auto")  # doctest: +SKIP
    """
    dtype = _check_dtype(dtype)
    if devices is not None and not (isinstance(devices, str) and devices == "auto"):
        devices = model_mesh(devices)  # invalid devices fail before the checkpoint is read
    name = os.fspath(name_or_path)
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        if revision is not None:
            warnings.warn(f"revision={revision!r} ignored for the GGUF file {path}", stacklevel=2)
        gguf = importlib.import_module("jaxalign.lm._gguf")
        # dequantized tensors and tokenizer kept on disk after the first load (lm._gguf_cache)
        from jaxalign.lm._gguf_cache import read_cached, write_cached

        hit = read_cached(path)
        if hit is not None:
            hf_config, tensors, tokenizer = hit
        else:
            hf_config, tensors, _ = gguf.read_gguf(path, with_tokenizer=False)
            tokenizer = None
        source = lambda name: f"{path} (GGUF tensor {gguf.gguf_name(name)})"  # noqa: E731
        model = _build(hf_config, tensors, dtype, devices, stacklevel=3, source=source)
        if hit is None:  # after the weights: a corrupt file fails first, and is never cached
            tokenizer = gguf.gguf_tokenizer(path)
            write_cached(path, hf_config, tensors, tokenizer)
        return model, tokenizer
    directory = resolve(name, revision)
    hf_config, tensors = read_checkpoint(directory)
    model = _build(hf_config, tensors, dtype, devices, stacklevel=3,
                   source=functools.partial(_tensor_file, directory))
    return model, _load_tokenizer(directory)


# ------------------------------------------------------------------ running


@functools.partial(_jit, static_argnums=0)
def _hidden_states(graphdef, state, input_ids, attention_mask):
    return nnx.merge(graphdef, state)(input_ids, attention_mask).hidden_states


def hidden_states(model: nnx.Module, input_ids, attention_mask=None) -> jax.Array:
    """All hidden states, (n_layers + 1, batch, seq, dim), for token ids as given.

    No special tokens are added. ``attention_mask`` is the (batch, seq) 0/1
    padding mask; outputs at padded positions are meaningless. Compiled once
    per (model structure, input shape): the model is split into a static graph
    and its parameters, so repeated calls with the same shapes do not retrace.
    """
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise ValueError(f"input_ids must be integer (batch, seq), got {input_ids.dtype} {input_ids.shape}")
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is not None and input_ids.size and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got [{int(input_ids.min())}, {int(input_ids.max())}]")
    if attention_mask is not None:
        attention_mask = jnp.asarray(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {attention_mask.shape} differs from input_ids shape {input_ids.shape}"
            )
    graphdef, state = nnx.split(model)
    return _hidden_states(graphdef, state, input_ids, attention_mask)
