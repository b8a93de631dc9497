"""Tensor-parallel placement of a model's parameters over devices.

``jaxalign.lm.load(..., devices=...)`` uses this module for models too large
for one device. The devices form a 1-D mesh whose axis is named ``"model"``;
every weight matrix is split along one dimension over that axis, Megatron
style, and everything else is replicated:

* column-parallel layers (query/key/value projections, the first MLP layer)
  split their *outputs* (heads, MLP units);
* row-parallel layers (attention output, the second MLP layer, the LM head)
  split their *inputs*;
* embeddings split their hidden dimension;
* vectors (norm scales, biases) are replicated: they are small.

Each architecture module states its layout in ``SHARDING``: a regular
expression over the parameter's dotted path -> the axis to split, counted
from the end so that the leading layer axis of stacked blocks does not
matter. When that axis is not divisible by the number of devices the other
of the matrix's two axes is tried; when neither divides, the matrix is
replicated and a warning names it (with the fraction of the parameters that
is replicated). When no matrix at all can be split, ``ValueError`` names the
device counts that would work.

Parameters are put on their devices by ``jax.device_put(host_array,
NamedSharding)`` straight from the host arrays read from the checkpoint:
each device receives only its slice, no device ever holds a full copy. The
model then runs unchanged: ``jax.jit`` (``lm.hidden_states``,
``features.word_features``) compiles one program for the whole mesh and GSPMD
propagates the parameters' shardings through it, adding the collectives
(all-gathers, reduce-scatters) the matmuls need. The results equal the
single-device ones up to float32 summation order.

``devices="auto"`` shards over all local devices only when the parameters
would take more than ``AUTO_FRACTION`` of one device's free memory (from
``device.memory_stats()``; backends without memory statistics, such as the
CPU, are never sharded automatically).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxalign._core.devices import pick_devices

__all__ = [
    "AUTO_FRACTION",
    "MODEL_AXIS",
    "ShardingPlan",
    "device_free_bytes",
    "model_mesh",
    "param_bytes",
    "plan_sharding",
    "sharded_placer",
]

MODEL_AXIS = "model"
# "auto" shards when the parameters exceed this fraction of a device's free memory.
AUTO_FRACTION = 0.8


def device_free_bytes(device: jax.Device) -> int | None:
    """Free memory of ``device`` in bytes (``bytes_limit - bytes_in_use`` of
    ``memory_stats()``), or None when the backend keeps no statistics (CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # pragma: no cover - backends without the call
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def param_bytes(model: nnx.Module) -> int:
    """Bytes of all parameters of ``model`` (abstract models too)."""
    total = 0
    for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = variable.get_value()
        total += int(np.prod(value.shape)) * np.dtype(value.dtype).itemsize
    return total


def _auto_mesh(n_bytes: int, stacklevel: int) -> Mesh | None:
    devices = jax.local_devices()
    free = [device_free_bytes(d) for d in devices]
    if any(f is None for f in free):
        return None  # no statistics (CPU): one device, as without devices=
    limit = AUTO_FRACTION * min(free)
    if n_bytes <= limit:
        return None
    if len(devices) == 1:
        warnings.warn(
            f"the parameters ({n_bytes / 2**30:.2f} GiB) exceed {AUTO_FRACTION:.0%} of the free "
            f"memory of the only device ({min(free) / 2**30:.2f} GiB): loading on it anyway",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
        return None
    return Mesh(np.array(devices), (MODEL_AXIS,), axis_types=(AxisType.Auto,))


def model_mesh(devices, n_bytes: int | None = None, *, stacklevel: int = 2) -> Mesh | None:
    """The mesh for ``load(devices=...)``, or None for the default device.

    devices
        None: no sharding (the default device). ``"auto"``: all local devices
        when ``n_bytes`` (the parameters) exceed ``AUTO_FRACTION`` of the
        smallest free device memory, else None. An int k: the first k of
        ``jax.devices()``. A jax device or a sequence of them. A
        ``jax.sharding.Mesh`` with an axis named ``"model"`` (parameters are
        split over that axis and replicated over any other; its axes are used
        in ``Auto`` mode, so that GSPMD propagates the shardings).

    Raises ValueError (TypeError for a wrong type) naming the problem.
    """
    if devices is None:
        return None
    if isinstance(devices, str):
        if devices != "auto":
            raise ValueError(
                f"devices must be None, 'auto', an int, a list of devices or a Mesh; got {devices!r}"
            )
        if n_bytes is None:
            raise ValueError("devices='auto' needs the model's size (n_bytes)")
        return _auto_mesh(n_bytes, stacklevel + 1)
    if isinstance(devices, Mesh):
        if MODEL_AXIS not in devices.axis_names:
            raise ValueError(
                f"the mesh has axes {devices.axis_names}; it needs one named {MODEL_AXIS!r} to split "
                "the parameters over (e.g. Mesh(np.array(jax.devices()), ('model',)))"
            )
        if any(t != AxisType.Auto for t in devices.axis_types):
            auto = (AxisType.Auto,) * devices.devices.ndim
            devices = Mesh(devices.devices, devices.axis_names, axis_types=auto)
        return devices
    chosen = pick_devices(devices, jax.devices(), "None, 'auto', an int, a list of devices or a Mesh")
    return Mesh(np.array(chosen, dtype=object), (MODEL_AXIS,), axis_types=(AxisType.Auto,))


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
    """Where every parameter goes.

    shardings
        parameter path (as in ``nnx.state``) -> its ``NamedSharding``.
    split
        dotted path -> the axis split over the ``"model"`` mesh axis.
    replicated
        the weight matrices ``SHARDING`` names that no axis of which divides
        the number of devices (replicated, with a warning).
    """

    mesh: Mesh
    shardings: dict[tuple[str, ...], NamedSharding]
    split: dict[str, int]
    replicated: tuple[str, ...]

    def place(self, path: tuple[str, ...], value: np.ndarray) -> jax.Array:
        """Put a host array on its devices, each receiving only its slice."""
        return jax.device_put(value, self.shardings[path])


def _spec(ndim: int, axis: int | None) -> PartitionSpec:
    if axis is None:
        return PartitionSpec()
    return PartitionSpec(*(MODEL_AXIS if i == axis % ndim else None for i in range(ndim)))


def plan_sharding(
    model: nnx.Module, mesh: Mesh, rules: Mapping[str, int], *, stacklevel: int = 2
) -> ShardingPlan:
    """Shardings of ``model``'s parameters (it may be abstract) over ``mesh``.

    ``rules`` maps a regular expression over the dotted parameter path
    (``h.attn.c_attn.kernel``) to the axis to split, counted from the end;
    the other of the last two axes is the fallback (module doc). Warnings
    are issued at ``stacklevel`` (2: the caller's line).
    """
    n = int(mesh.shape[MODEL_AXIS])
    compiled = [(re.compile(pattern), int(axis)) for pattern, axis in rules.items()]
    shardings: dict[tuple[str, ...], NamedSharding] = {}
    split: dict[str, int] = {}
    replicated: list[str] = []
    dims: set[int] = set()
    kept_bytes = total_bytes = 0
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = variable.get_value()
        shape = tuple(value.shape)
        name = ".".join(map(str, path))
        nbytes = int(np.prod(shape)) * np.dtype(value.dtype).itemsize
        total_bytes += nbytes
        preferred = next((axis for pattern, axis in compiled if pattern.fullmatch(name)), None)
        axis = None
        if preferred is not None:
            if len(shape) < 2 or not -2 <= preferred <= -1:
                raise ValueError(
                    f"sharding rule for {name} {shape}: axis {preferred} is not one of its last two"
                )
            candidates = (preferred, -3 - preferred)  # -1 <-> -2
            dims.update(shape[a] for a in candidates)
            axis = next((a for a in candidates if shape[a] % n == 0), None)
            if axis is None and n > 1:
                replicated.append(f"{name} {shape}")
        if axis is None:
            kept_bytes += nbytes
        else:
            split[name] = axis
        shardings[path] = NamedSharding(mesh, _spec(len(shape), axis))
    if n > 1 and not split:
        fits = [k for k in range(2, n) if any(d % k == 0 for d in dims)]
        raise ValueError(
            f"cannot shard {type(model).__module__}.{type(model).__name__} over {n} devices: no weight "
            f"matrix has a dimension divisible by {n} (dimensions: {sorted(dims)}); use a number of "
            f"devices dividing one of them" + (f", e.g. {fits}" if fits else "")
        )
    if replicated:
        warnings.warn(
            f"{len(replicated)} weight matrices have no dimension divisible by {n} devices and are "
            f"replicated on each ({kept_bytes / max(total_bytes, 1):.0%} of the parameter bytes, vectors "
            f"included, are replicated): {', '.join(replicated)}",
            UserWarning,
            stacklevel=stacklevel,
        )
    return ShardingPlan(mesh, shardings, split, tuple(replicated))


def sharded_placer(
    model: nnx.Module, devices, rules: Mapping[str, int] | None, *, stacklevel: int = 2
) -> Callable[[tuple[str, ...], np.ndarray], jax.Array] | None:
    """``place`` for ``fill_params``: None (default device) when ``devices``
    resolves to no mesh, else ``plan_sharding(...).place``."""
    n_bytes = param_bytes(model) if isinstance(devices, str) else None
    mesh = model_mesh(devices, n_bytes, stacklevel=stacklevel + 1)
    if mesh is None:
        return None
    if rules is None:
        raise ValueError(f"{type(model).__module__} defines no SHARDING table: it cannot be sharded")
    return plan_sharding(model, mesh, rules, stacklevel=stacklevel + 1).place
