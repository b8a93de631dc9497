"""Orbax checkpoints of a training run, and the check that a folder holds this run.

Layout under the run folder::

    checkpoints/<step>/   the latest ``keep`` periodic checkpoints: the trained
                          parameters (all, or only the LoRA adapters),
                          optimizer state (its leaves, in tree order) and the
                          run's JSON metadata (step, evaluations, best, patience
                          count, the run's fingerprint)
    best/<step>/          the parameters of the best evaluation (the last two
                          kept: see below)

Orbax writes each checkpoint into a temporary folder and renames it when it
is complete (``commit_success.txt``), so a process killed mid-save leaves the
previous checkpoints as they were and the partial one is never read.

The best parameters are saved when an evaluation improves, followed at once
by a periodic checkpoint of the same step, so at most one best checkpoint is
ever newer than the latest periodic one. A run killed between the two
resumes from the previous periodic checkpoint: its metadata names its best
step, still kept (two are), and :meth:`Checkpoints.forget_after` drops the
newer one, which the resumed run will write again.

A run's *fingerprint* is what must match to resume it: the architecture, its
config and every trained parameter's shape (with LoRA: the adapters' settings
and a hash of the frozen base weights, since only the adapters are saved), the settings that shape the trajectory
(optimizer, schedule, batches, seed, total steps) and hashes of the encoded
training and validation data. :meth:`Checkpoints.check` compares it before
anything is restored, so a folder written for another model (or other
settings or data) fails with the differences named instead of an Orbax
shape error.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import jax
import numpy as np

from jaxalign._core.hashing import array_digest

__all__ = ["Checkpoints", "data_hash", "tree_hash"]


def data_hash(*arrays) -> str:
    """The first 16 hex digits of :func:`jaxalign._core.hashing.array_digest`: which data a
    checkpoint was trained on (a resume with other data is refused)."""
    return array_digest(*arrays)[:16]


def tree_hash(tree) -> str:
    """sha256 (first 16 hex digits) of a pytree's leaf paths, dtypes, shapes and bytes (one leaf on the host
    at a time)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _manager(directory: Path, keep: int):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def _host(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


class Checkpoints:
    """Periodic and best-evaluation checkpoints of one run folder (see the module docstring)."""

    def __init__(self, folder, keep: int = 2):
        self.folder = Path(folder)
        self.latest = _manager(self.folder / "checkpoints", keep)
        self.best = _manager(self.folder / "best", 2)

    # ------------------------------------------------------------ saving

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        """A periodic checkpoint at ``step`` (asynchronous: returns once the arrays are copied)."""
        import orbax.checkpoint as ocp

        # host copies: the training step donates (reuses) the device buffers while Orbax writes
        state = _host({"params": params, "opt_state": jax.tree.leaves(opt_state)})
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(_jsonable(meta))), force=True)

    def save_best(self, step: int, params, meta: dict) -> None:
        import orbax.checkpoint as ocp

        self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_host({"params": params})),
                                                     meta=ocp.args.JsonSave(_jsonable(meta))), force=True)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()

    # ---------------------------------------------------------- restoring

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def meta(self, step: int | None = None) -> dict | None:
        import orbax.checkpoint as ocp

        step = self.latest.latest_step() if step is None else step
        if step is None:
            return None
        return dict(self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def check(self, fingerprint: dict) -> dict | None:
        """The latest checkpoint's metadata, after checking it belongs to the run ``fingerprint`` describes.

        None when the folder holds no checkpoint. Raises ValueError listing
        what differs (model, parameter shapes, settings, data).
        """
        meta = self.meta()
        if meta is None:
            return None
        theirs = meta.get("fingerprint", {})
        diffs = []
        for key in sorted(set(fingerprint) | set(theirs)):
            a, b = theirs.get(key), _jsonable(fingerprint.get(key))
            if a == b:
                continue
            if key == "base_weights" and a is not None and b is not None:
                diffs.append(f"base_weights (its LoRA adapters were trained on another base model: weights sha256 "
                             f"{a} there, {b} here; load the base model they belong to)")
            elif isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                shown = ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:6])
                diffs.append(f"{key} ({shown}{', ...' if len(keys) > 6 else ''})")
            else:
                diffs.append(f"{key} ({a!r} there, {b!r} here)")
        if diffs:
            raise ValueError(
                f"{self.folder} holds checkpoints of another run (step {meta.get('step')}), which differs in: "
                + "; ".join(diffs) + ". Use another output folder, or delete its checkpoints/ and best/ to start over"
            )
        return meta

    def restore(self, step: int, params_like, opt_state_like):
        """(params, opt_state, meta) of the periodic checkpoint at ``step``, shaped like the templates."""
        import orbax.checkpoint as ocp

        leaves, treedef = jax.tree.flatten(opt_state_like)
        target = {"params": _abstract(params_like), "opt_state": [_abstract(x) for x in leaves]}
        got = self.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                meta=ocp.args.JsonRestore()))
        return got.state["params"], jax.tree.unflatten(treedef, got.state["opt_state"]), dict(got.meta)

    def forget_after(self, step: int) -> None:
        """Delete the checkpoints newer than ``step`` (what a killed run wrote after the one it resumes from)."""
        for manager in (self.latest, self.best):
            for s in manager.all_steps():
                if s > step:
                    manager.delete(s)

    def restore_best(self, params_like, step: int | None = None):
        """(params, meta) of the best checkpoint at ``step`` (default: the newest), or (None, None)."""
        import orbax.checkpoint as ocp

        step = self.best.latest_step() if step is None else step
        if step is None or step not in self.best.all_steps():
            return None, None
        got = self.best.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"params": _abstract(params_like)}), meta=ocp.args.JsonRestore()))
        return got.state["params"], dict(got.meta)


def _jsonable(obj):
    """Plain JSON data: tuples to lists, numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
