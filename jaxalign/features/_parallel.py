"""Data-parallel feature extraction: batches of windows sharded over devices.

``word_features(..., devices=...)`` and ``word_surprisal(..., devices=...)``
run every forward batch on several devices at once. The devices form a mesh
with an axis named ``"batch"`` (:data:`BATCH_AXIS`); each batch of token
windows (ids, attention mask, and for ``word_features`` the slots that say
which positions to pool) is split along its first axis over that axis
(``NamedSharding(mesh, PartitionSpec("batch"))``) and the parameters are
replicated on every device of it. ``jax.jit`` then compiles one program for
the mesh: each device runs the model on its own rows, no collective is
needed, and only the pooled vectors come back to the host. (On GPUs and
TPUs the compiled program indeed has none, checked in
``tests/test_features_parallel.py``; on a CPU split into several devices,
a test setup, the MLP's row blocks of ``jaxalign.lm._common.in_row_chunks``
mix rows of different devices and XLA adds an all-gather per block: same
numbers, slower.)

Batch sizes are rounded up to a multiple of the number of shards
(``batch_size=10`` on 8 devices runs 16 rows: 2 per device), the automatic
batch size is the one-device one times the number of shards, and the last
batch of each length is padded per shard (``_batching.make_batches``); the
padded rows are dummy windows whose results are dropped. Results equal the
one-device ones up to float32 rounding (a device computes a row exactly as
one device computing the whole batch does, but XLA may pick a different
blocking of the matrix products for a different per-device batch).

``devices``
    None: today's behaviour, the model's own device(s), nothing placed.
    ``"auto"``: every local device (``jax.local_devices()``). An int k: the
    first k local devices. A list of jax devices. A ``jax.sharding.Mesh``
    with an axis named ``"batch"``.

A model on one device is copied to every device of the mesh at each call
(``jax.device_put`` of its state, replicated). To place the weights once,
load the model on a :func:`batch_mesh` (``lm.load(name,
devices=features.batch_mesh())``: each device reads its copy straight from
the checkpoint) and pass ``devices="auto"``: the model's own mesh is used
and nothing is copied. ``jaxalign run`` does this for ``[features] devices``.

With tensor-parallel weights (``jaxalign.lm.load(devices=...)``)
-----------------------------------------------------------------
A model loaded with ``devices=`` has its weight matrices split over the
``"model"`` axis of a mesh. Batches and weights then share one 2-D mesh
``("batch", "model")``: load the model on it,
``lm.load(name, devices=features.batch_mesh(model=4))`` on 8 devices
(``Mesh(np.array(jax.devices()).reshape(2, 4), ("batch", "model"))``: weights
split over the 4 devices of each ``"model"`` row, replicated over the 2
rows) and pass ``devices="auto"`` (or that mesh) to the extraction:
each batch is split over the ``"batch"`` axis, each half run
tensor-parallel by its row of 4 devices. A model split over a mesh that has
no ``"batch"`` axis (``lm.load(devices=4)``: a 1-D ``("model",)`` mesh)
already uses all its devices for every batch: ``devices="auto"`` runs it as
it is, and any other ``devices`` raises ``ValueError`` with the recipe
above, because sharding the batch over other devices than the weights would
need a copy of the weights per device, which is what tensor parallelism is
there to avoid.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxalign._core.devices import pick_devices

__all__ = ["BATCH_AXIS", "BatchPlacement", "batch_mesh", "batch_placement"]

BATCH_AXIS = "batch"
MODEL_AXIS = "model"  # jaxalign.lm._shard.MODEL_AXIS: the axis tensor-parallel weights split over
_KINDS = "None, 'auto', an int, a list of jax devices or a Mesh with a 'batch' axis"


@dataclasses.dataclass(frozen=True)
class BatchPlacement:
    """Where a feature extraction runs.

    mesh
        None: the model's own placement, inputs left to ``jax.jit`` (today's
        behaviour); else the mesh whose ``"batch"`` axis splits each batch.
    shards
        the size of that axis (1 without a mesh): batch rows are a multiple of it.
    """

    mesh: Mesh | None = None
    shards: int = 1

    def put_state(self, state):
        """The model's state on the mesh: replicated over ``"batch"`` (kept as
        it is when already on the mesh, e.g. split over its ``"model"`` axis)."""
        if self.mesh is None:
            return state
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def put(x):
            if not isinstance(x, jax.Array):
                return x
            sharding = x.sharding
            if isinstance(sharding, NamedSharding) and sharding.mesh == self.mesh:
                return x
            return jax.device_put(x, replicated)

        return jax.tree.map(put, state)

    def put_batch(self, *arrays):
        """Host arrays split along their first axis over ``"batch"`` (as they are without a mesh)."""
        if self.mesh is None:
            return arrays
        sharding = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))
        return tuple(jax.device_put(a, sharding) for a in arrays)

    def put_replicated(self, x):
        if self.mesh is None:
            return x
        return jax.device_put(x, NamedSharding(self.mesh, PartitionSpec()))


def _model_mesh(model) -> Mesh | None:
    """The mesh the model's arrays are on, when it spans several devices or has a
    ``"batch"`` axis (a :func:`batch_mesh`, even of one device); else None."""
    for _, value in nnx.to_flat_state(nnx.state(model)):
        x = value.get_value() if hasattr(value, "get_value") else value
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and (
            sharding.mesh.size > 1 or BATCH_AXIS in sharding.mesh.axis_names
        ):
            return sharding.mesh
    return None


def _auto_axes(mesh: Mesh) -> Mesh:
    if any(t != AxisType.Auto for t in mesh.axis_types):
        return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)
    return mesh


def _two_d_recipe(n: int) -> str:
    return (
        f"load it on a 2-D mesh instead, lm.load(..., devices=features.batch_mesh(model={n})) (a ('batch', "
        "'model') mesh), and pass devices='auto' to shard batches over its 'batch' axis"
    )


def _chosen_devices(devices) -> list:
    local = jax.local_devices()
    if isinstance(devices, str):
        if devices != "auto":
            raise ValueError(f"devices must be {_KINDS}; got {devices!r}")
        return local
    return pick_devices(devices, local, _KINDS)


def batch_mesh(devices="auto", model: int = 1) -> Mesh:
    """A ``("batch", "model")`` mesh of ``devices`` for ``lm.load(devices=...)``.

    devices
        ``"auto"`` (every local device), an int k (the first k local
        devices) or a list of jax devices.
    model
        devices per tensor-parallel group (the ``"model"`` axis; must divide
        the device count). 1: every device holds the whole model.

    Loading a model on this mesh puts its weights on every device once,
    straight from the checkpoint (split over ``"model"``, replicated over
    ``"batch"``); ``word_features(..., devices="auto")`` then shards batches
    over ``"batch"`` with no copy of the weights per call::

        model, tok = lm.load(name, devices=features.batch_mesh())          # 8 copies, one per device
        model, tok = lm.load(name, devices=features.batch_mesh(model=4))   # 2 groups of 4
        feats = features.word_features(model, tok, words, devices="auto")
    """
    chosen = _chosen_devices(devices)
    if isinstance(model, bool) or not isinstance(model, (int, np.integer)) or model < 1:
        raise ValueError(f"model must be a positive integer (devices per tensor-parallel group), got {model!r}")
    if len(chosen) % model:
        raise ValueError(f"model={model} does not divide the {len(chosen)} devices")
    grid = np.array(chosen, dtype=object).reshape(-1, int(model))
    return Mesh(grid, (BATCH_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def batch_placement(model, devices) -> BatchPlacement:
    """The :class:`BatchPlacement` of ``model`` for ``devices`` (module doc).

    Raises ValueError (TypeError for a wrong type) naming ``devices``.
    """
    if devices is None:
        return BatchPlacement()
    if isinstance(devices, str) and devices != "auto":
        raise ValueError(f"devices must be {_KINDS}; got {devices!r}")
    own = _model_mesh(model)
    if isinstance(devices, Mesh):
        if BATCH_AXIS not in devices.axis_names:
            raise ValueError(
                f"devices is a mesh with axes {devices.axis_names}; it needs one named {BATCH_AXIS!r} to split "
                "the batches over (e.g. Mesh(np.array(jax.devices()), ('batch',)))"
            )
        if own is not None and own.devices.shape == devices.devices.shape and np.array_equal(
            own.devices, devices.devices
        ) and own.axis_names == devices.axis_names:
            devices = "auto"  # the model's own mesh
        elif own is None:
            others = {a: s for a, s in devices.shape.items() if a != BATCH_AXIS and s > 1}
            if others:
                raise ValueError(
                    f"devices is a mesh with axes {dict(devices.shape)} but the model's weights are on one "
                    f"device: to split them over {list(others)}, load the model on that mesh "
                    "(lm.load(..., devices=mesh)) and pass devices='auto' or the same mesh"
                )
            mesh = _auto_axes(devices)
            return BatchPlacement(mesh, int(mesh.shape[BATCH_AXIS]))
    if own is not None:  # weights already spread over several devices
        auto = isinstance(devices, str) and devices == "auto"
        if BATCH_AXIS in own.axis_names:
            if auto:
                mesh = _auto_axes(own)
                return BatchPlacement(mesh, int(mesh.shape[BATCH_AXIS]))
            raise ValueError(
                f"the model's weights are on a mesh {dict(own.shape)}: pass devices='auto' (or that mesh) "
                f"to shard batches over its {BATCH_AXIS!r} axis; got devices={devices!r}"
            )
        if auto:
            return BatchPlacement()  # every device of its mesh already works on every batch
        axes = dict(own.shape)
        raise ValueError(
            f"the model's weights are split over {own.size} devices (mesh {axes}, no {BATCH_AXIS!r} axis): "
            f"batches cannot also be sharded over devices={devices!r}; {_two_d_recipe(axes.get(MODEL_AXIS, own.size))}"
        )
    chosen = _chosen_devices(devices)
    mesh = Mesh(np.array(chosen, dtype=object), (BATCH_AXIS,), axis_types=(AxisType.Auto,))
    return BatchPlacement(mesh, len(chosen))
