"""The results store of a study: one folder, one sub-folder per finished unit of work.

A study's runner splits its sweep into units of work (one model revision
fitted on one recording, say) and writes each unit here as soon as it
finishes. A unit is identified by a ``key``, a content hash of everything
that determines it (``StudyConfig.hash_settings`` / ``settings_hash`` plus
dataset, weights and version), so a rerun finds what is already done and a
changed setting only misses the units that depend on it. Three promises:

* **Nothing half-written is ever read.** A unit is written into a temporary
  sibling folder (each file with :func:`jaxalign._core.files.atomic_write`,
  fsynced, a ``DONE`` marker last), and the folder is then renamed into
  place in one ``rename``. A writer killed with ``kill -9`` leaves only a
  temporary folder that readers never look at and that the next
  :class:`ResultsStore` on this host deletes.
* **First writer wins.** Writing a unit that is done is a no-op returning
  False, never an overwrite (``rename`` onto a non-empty folder fails, so
  this holds even between two writers that race).
* **Several processes share a store.** Before computing a unit a process
  takes a *claim* (:meth:`ResultsStore.claim`): a small file with its host,
  pid and lease expiry. Another process skips a unit that has a live claim;
  a claim whose lease has expired, or whose process is gone on this host, is
  taken over. Claims are read, checked and replaced under a short
  ``filelock`` mutex (a kernel lock the OS drops if its holder dies), so two
  processes can never both take over the same stale claim.

On disk::

    <root>/
      store.json                        format marker {"format": "jaxalign.results", "version": 1}
      units/
        <key>/                          one finished unit, renamed into place whole
          unit.json                     labels, meta, array manifest (dims, shape, dtype),
                                        provenance (UTC time, host, pid; jaxalign, jax,
                                        jaxlib, numpy, python versions)
          <name>.npy                    one file per array (np.save, no pickles)
          DONE                          written last: a folder without it is never read
        .<key>.<host>-<pid>.<rand>.tmp/ a writer's temporary folder (ignored; removed once
                                        its writer is dead)
      claims/
        <key>.claim                     JSON: key, host, pid, token, expires (unix time), lease
        .lock                           the mutex under which claims change

Array convention (what the runner writes, what :func:`load_results` reads)
-------------------------------------------------------------------------
``labels`` say what a unit is; every value is a JSON scalar, or a list that
makes an *axis* of the unit's arrays with those coordinates:

``model``, ``revision`` (required, non-empty strings; one set of weights per
unit: a hub model's default branch is ``"main"``), ``layer`` and ``subject``
(required: a scalar, or a list when the unit holds several, e.g. all layers
fitted together in one vmapped pass), ``target`` (required: the list of
target names, ROI / voxel / channel, unique), ``window`` (optional: a scalar
or the list of MEG window names or start times), ``fold`` (optional: a
list naming the outer folds; absent, folds are numbered 0..k-1), ``sample``
(optional: never a label; the rows of held-out predictions, numbered 0..n-1,
as ``[output] predictions = true`` stores them). Any other
label must be a scalar (``dataset = "alice"``, ``features = "hidden_states"``)
and becomes a column of the table.

An array's axes (``dims``) default to the unit's list-valued labels in the
order ``layer, subject, window, target`` (``fold`` is never a default axis).
So with ``labels = {"model": "gpt2", "revision": "main", "layer": [0, 6, 12],
"subject": "s01", "target": ["LATL", "RATL"]}``, ``score`` has shape
``(3, 2)``. Arrays with other axes (per-fold scores ``(layer, fold,
target)``, a per-target ceiling ``(target,)``) name them in
``write_unit(..., dims={"fold_score": ("layer", "fold", "target")})``; the
names come from :data:`AXES`. ``score`` (held-out Pearson r) is required and
has a ``target`` axis; ``p``, ``p_fdr``, ``alpha``... are added the same way.
Arrays are numeric or boolean.

Reading: :func:`load_results` returns a :class:`Results` with ``.table``
(pandas: one row per model x revision x layer x subject [x window] x target,
columns ``model, revision, layer, subject, [window,] target``, then one
column per array whose axes are among the unit's (broadcast where an array
lacks one, e.g. a per-target ceiling), then the other labels, then ``key``)
and ``.arrays`` (an ``xarray.Dataset`` over the named axes ``model, revision,
layer, subject, window, fold, target``: the outer join of all units, NaN
where a combination was not computed; an array must have the same axes in
every unit, so units with and without windows are loaded apart with
``keys=``). Arrays with a ``sample`` axis (held-out predictions, large) are
in neither: :meth:`Results.held_out` reads them, memory-mapped.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import math
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
from filelock import FileLock

from jaxalign._core.files import (
    TMP_NAME,
    atomic_write,
    atomic_write_text,
    host_tag,
    pid_alive,
    remove_orphans,
    writable_dir,
)

__all__ = ["AXES", "Claim", "ClaimLost", "Results", "ResultsStore", "Unit", "load_results"]

log = logging.getLogger(__name__)

#: The named axes of the results, in the order the arrays are laid out.
AXES = ("model", "revision", "layer", "subject", "window", "fold", "sample", "target")
#: Labels every unit must have.
REQUIRED_LABELS = ("model", "revision", "layer", "subject", "target")
FORMAT = {"format": "jaxalign.results", "version": 1}

_KEY = re.compile(r"^[0-9A-Za-z_-]{1,200}$")
_ARRAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_DEFAULT_AXES = ("layer", "subject", "window", "target")  # list-valued labels that make default dims
_SCALAR_ONLY = ("model", "revision")
_MUTEX_TIMEOUT_S = 60.0


class ClaimLost(RuntimeError):
    """A claim was taken over by another process (its lease ran out) or released."""


def _check_key(key) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"unit key must be 1-200 characters of [0-9a-zA-Z_-], got {key!r}")
    return key


# ------------------------------------------------------------------ JSON


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} {obj!r:.60} is not JSON serializable")


def _to_json(obj, what: str) -> str:
    try:
        return json.dumps(obj, default=_json_default, indent=1, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serializable: {error}") from None


# ------------------------------------------------------------ validation


def _scalar(value, where: str):
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return value
    raise ValueError(f"{where}: expected a string or number, got {type(value).__name__} {value!r:.60}")


def _check_labels(labels) -> dict:
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels must be a dict, got {type(labels).__name__}")
    missing = [k for k in REQUIRED_LABELS if k not in labels]
    if missing:
        raise ValueError(f"labels lack {missing} (required: {list(REQUIRED_LABELS)})")
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str):
            raise ValueError(f"label names must be strings, got {k!r}")
        where = f"labels[{k!r}]"
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, (list, tuple)):
            if k not in AXES or k in _SCALAR_ONLY:
                allowed = [a for a in AXES if a not in _SCALAR_ONLY]
                raise ValueError(f"{where}: only the axis labels {allowed} may be lists (put the rest in meta)")
            v = [_scalar(x, f"{where}[{i}]") for i, x in enumerate(v)]
            if not v:
                raise ValueError(f"{where}: an axis needs at least one coordinate")
            if len(set(map(repr, v))) != len(v):
                raise ValueError(f"{where}: coordinates must be unique, got {v!r:.120}")
        else:
            v = _scalar(v, where)
        out[k] = v
    for k in _SCALAR_ONLY:
        if not isinstance(out[k], str) or not out[k]:
            raise ValueError(f"labels[{k!r}] must be a non-empty string, got {out[k]!r}")
    if not isinstance(out["target"], list) or not all(isinstance(t, str) for t in out["target"]):
        raise ValueError("labels['target'] must be the list of target names (strings: ROI / voxel / channel)")
    return out


def _check_arrays(arrays, labels: dict, dims) -> tuple[dict, dict]:
    """Arrays as numpy and their dims; every shape checked against the labels' axes."""
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("arrays must be a non-empty dict of name -> array")
    dims = dict(dims or {})
    unknown = sorted(set(dims) - set(arrays))
    if unknown:
        raise ValueError(f"dims names arrays that are not given: {unknown}")
    if "score" not in arrays:
        raise ValueError(f"arrays must include 'score' (held-out Pearson r per target); got {sorted(arrays)}")
    default = tuple(a for a in _DEFAULT_AXES if isinstance(labels.get(a), list))
    out_arrays, out_dims, n_folds = {}, {}, {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise ValueError(f"array names must match [A-Za-z][A-Za-z0-9_]*, got {name!r}")
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"array {name!r}: numbers or booleans only, got dtype {a.dtype}")
        d = tuple(dims.get(name, default))
        bad = [x for x in d if x not in AXES]
        if bad or len(set(d)) != len(d):
            raise ValueError(f"array {name!r}: dims {d} must be distinct names from {AXES}")
        if name == "score" and "target" not in d:
            raise ValueError(f"array 'score' must have a 'target' axis, dims are {d}")
        if len(d) != a.ndim:
            raise ValueError(f"array {name!r} has shape {a.shape} but dims {d}: give dims={{{name!r}: (...)}}")
        for axis, n in zip(d, a.shape):
            coords = labels.get(axis)
            if axis in ("fold", "sample") and coords is None:
                if n_folds.setdefault(axis, n) != n:
                    raise ValueError(f"array {name!r}: {n} {axis}s, another array has {n_folds[axis]}")
                continue
            if not isinstance(coords, list):
                raise ValueError(
                    f"array {name!r} has a {axis!r} axis but labels[{axis!r}] is {coords!r}, "
                    f"not a list of coordinates")
            if len(coords) != n:
                raise ValueError(
                    f"array {name!r} has shape {a.shape} (dims {d}): its {axis!r} axis has {n} entries "
                    f"but labels[{axis!r}] has {len(coords)}")
        out_arrays[name], out_dims[name] = a, d
    return out_arrays, out_dims


def _versions() -> dict:
    import jaxalign

    out = {"jaxalign": jaxalign.__version__, "python": platform.python_version(), "numpy": np.__version__}
    for dist in ("jax", "jaxlib"):  # from metadata: the store never imports jax
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------ units


@dataclass(frozen=True)
class Unit:
    """One finished unit as read back: its arrays, their axes, labels, meta and provenance."""

    key: str
    arrays: dict
    dims: dict
    labels: dict
    meta: dict
    provenance: dict


class ResultsStore:
    """The results folder of one study (see the module docstring for layout and conventions).

    ``ResultsStore(root)`` creates the folder if needed (checking that it is
    writable) and deletes the temporary folders and files of writers on this
    host that were killed. ``create=False`` opens an existing store for
    reading and changes nothing on disk.
    """

    def __init__(self, root, *, create: bool = True):
        self.root = Path(os.fspath(root)).expanduser()
        self.units_dir = self.root / "units"
        self.claims_dir = self.root / "claims"
        marker = self.root / "store.json"
        if create:
            writable_dir(self.root, "results store")
            self.units_dir.mkdir(exist_ok=True)
            self.claims_dir.mkdir(exist_ok=True)
            if not marker.exists():
                atomic_write_text(marker, json.dumps(FORMAT) + "\n")
            self.clean()
        elif not marker.is_file():
            raise FileNotFoundError(f"{self.root} is not a jaxalign results store (no store.json)")
        fmt = json.loads(marker.read_text(encoding="utf-8"))
        if fmt.get("format") != FORMAT["format"] or fmt.get("version", 0) > FORMAT["version"]:
            raise ValueError(f"{marker}: {fmt} is not a results store this jaxalign can read ({FORMAT})")
        self._mutex = FileLock(str(self.claims_dir / ".lock"), timeout=_MUTEX_TIMEOUT_S)

    def __repr__(self):
        return f"ResultsStore({str(self.root)!r})"

    # ------------------------------------------------------------- reading

    def _unit_dir(self, key: str) -> Path:
        return self.units_dir / _check_key(key)

    def is_done(self, key: str) -> bool:
        """Whether unit ``key`` is completely written."""
        return (self._unit_dir(key) / "DONE").is_file()

    def keys(self) -> list[str]:
        """The keys of the finished units, sorted."""
        if not self.units_dir.is_dir():
            return []
        return sorted(p.name for p in self.units_dir.iterdir() if _KEY.match(p.name) and (p / "DONE").is_file())

    def read_unit(self, key: str, *, mmap: bool = False) -> Unit:
        """The finished unit ``key`` (KeyError when it is not done). ``mmap``: arrays memory-mapped
        (arrays with a ``sample`` axis, held-out predictions, always are)."""
        folder = self._unit_dir(key)
        if not (folder / "DONE").is_file():
            raise KeyError(f"unit {key!r} is not done in {self.root}")
        doc = json.loads((folder / "unit.json").read_text(encoding="utf-8"))
        arrays = {
            name: np.load(folder / f"{name}.npy", allow_pickle=False,
                          mmap_mode="r" if mmap or "sample" in info["dims"] else None)
            for name, info in doc["arrays"].items()
        }
        dims = {name: tuple(info["dims"]) for name, info in doc["arrays"].items()}
        return Unit(key, arrays, dims, doc["labels"], doc["meta"], doc["provenance"])

    # ------------------------------------------------------------- writing

    def write_unit(self, key: str, arrays: Mapping, labels: Mapping, meta: Mapping | None = None,
                   *, dims: Mapping | None = None) -> bool:
        """Write unit ``key`` whole; False (nothing written) when it is already done.

        ``arrays``: name -> array, laid out as the module docstring says
        (``dims`` names the axes of arrays that do not follow the default).
        ``labels``: what the unit is (model, revision, layer, subject, target
        ...). ``meta``: anything JSON-serializable (settings, seeds, timings).
        Raises ValueError, before writing anything, when they break the
        convention.
        """
        folder = self._unit_dir(key)
        if self.is_done(key):
            return False
        labels = _check_labels(labels)
        arrays, dims = _check_arrays(arrays, labels, dims)
        doc = {
            "key": key,
            "labels": labels,
            "meta": {} if meta is None else dict(meta),
            "arrays": {n: {"dims": list(dims[n]), "shape": list(a.shape), "dtype": str(a.dtype)}
                       for n, a in arrays.items()},
            "provenance": {
                "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
                "host": host_tag(),
                "pid": os.getpid(),
                "versions": _versions(),
            },
        }
        text = _to_json(doc, "labels and meta")
        tag = f"{host_tag()}-{os.getpid()}"
        tmp = Path(tempfile.mkdtemp(dir=self.units_dir, prefix=f".{key}.{tag}.", suffix=".tmp"))
        try:
            for name, a in arrays.items():
                atomic_write(tmp / f"{name}.npy", lambda f, a=a: np.save(f, a, allow_pickle=False))
            atomic_write_text(tmp / "unit.json", text + "\n")
            atomic_write_text(tmp / "DONE", doc["provenance"]["written"] + "\n")  # last: the unit is whole
            _fsync_dir(tmp)
            try:
                os.rename(tmp, folder)  # never replaces a non-empty folder: first writer wins
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not folder.exists():
                    raise
                if self.is_done(key):
                    return False
                raise FileExistsError(
                    f"{folder} exists but is not a finished unit (no DONE): not written by this store; "
                    "remove it to recompute the unit") from None
            _fsync_dir(self.units_dir)
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean(self) -> list[Path]:
        """Delete what killed writers on this host left behind; return the removed paths.

        Temporary unit folders and files named with a host and pid
        (:data:`jaxalign._core.files.TMP_NAME`) whose process is gone. A live
        writer's, or another machine's on a shared folder, are left alone
        (readers ignore them either way).
        """
        removed = remove_orphans(self.root) + remove_orphans(self.claims_dir)
        if not self.units_dir.is_dir():
            return removed
        host = host_tag()
        for p in self.units_dir.iterdir():
            m = TMP_NAME.match(p.name)
            if m is None or not p.is_dir() or m["host"] != host or pid_alive(int(m["pid"])):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        return removed

    # -------------------------------------------------------------- claims

    def _claim_path(self, key: str) -> Path:
        return self.claims_dir / f"{_check_key(key)}.claim"

    def claim_info(self, key: str) -> dict | None:
        """The current claim on ``key`` as stored (host, pid, token, expires...), or None."""
        return _read_claim(self._claim_path(key))

    def claim(self, key: str, lease_seconds: float = 3600.0) -> Claim | None:
        """Claim unit ``key`` for this process for ``lease_seconds``; None when there is nothing to do.

        None when another process holds a live claim on it, or when the unit
        is done. A claim is live until its expiry passes; on this host it
        also dies with its process (so a long lease costs nothing when a
        local run is killed: the rerun takes the unit over at once). Use it
        as a context manager (released on exit), call :meth:`Claim.renew`
        before the lease runs out in a long unit.
        """
        path = self._claim_path(key)
        lease = _check_lease(lease_seconds)
        with self._mutex:
            if self.is_done(key):
                current = _read_claim(path)
                if current is not None and not _live(current):
                    _unlink(path)
                return None
            current = _read_claim(path)
            if current is not None and _live(current):
                return None
            if current is not None:
                log.info("taking over the claim on unit %s from %s pid %s (%s)", key, current.get("host"),
                         current.get("pid"), "expired" if _expired(current) else "process gone")
            claim = Claim(self, key, uuid.uuid4().hex, lease)
            claim._write()
            return claim


def _check_lease(lease_seconds) -> float:
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)) \
            or not math.isfinite(lease_seconds) or lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be a positive number of seconds, got {lease_seconds!r}")
    return float(lease_seconds)


def _read_claim(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as dead (claims are only ever written whole)
    return doc if isinstance(doc, dict) else {}


def _expired(doc: dict) -> bool:
    expires = doc.get("expires")
    return not isinstance(expires, (int, float)) or time.time() >= expires


def _live(doc: dict) -> bool:
    if _expired(doc):
        return False
    pid = doc.get("pid")
    if doc.get("host") == host_tag() and isinstance(pid, int) and not pid_alive(pid):
        return False
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class Claim:
    """This process's claim on one unit: renew it while working, release it when done."""

    def __init__(self, store: ResultsStore, key: str, token: str, lease_seconds: float):
        self.store, self.key, self.token = store, key, token
        self.lease_seconds = lease_seconds
        self.host, self.pid = host_tag(), os.getpid()
        self.expires = 0.0
        self.released = False

    def __repr__(self):
        state = "released" if self.released else f"expires in {self.expires - time.time():.0f} s"
        return f"Claim({self.key!r}, {state})"

    @property
    def path(self) -> Path:
        return self.store._claim_path(self.key)

    def _write(self) -> None:  # under the store's mutex
        self.expires = time.time() + self.lease_seconds
        doc = {"key": self.key, "host": self.host, "pid": self.pid, "token": self.token,
               "expires": self.expires, "lease_seconds": self.lease_seconds,
               "renewed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")}
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")

    def _mine(self) -> bool:
        current = _read_claim(self.path)
        return current is not None and current.get("token") == self.token

    def renew(self, lease_seconds: float | None = None) -> float:
        """Extend the lease by ``lease_seconds`` (default: the claim's) from now; return the new expiry.

        Raises ClaimLost when the claim was released or taken over (its lease
        ran out and another process claimed the unit): stop working on it.
        """
        if lease_seconds is not None:
            self.lease_seconds = _check_lease(lease_seconds)
        with self.store._mutex:
            if self.released or not self._mine():
                raise ClaimLost(f"the claim on unit {self.key!r} is no longer this process's")
            self._write()
        return self.expires

    @contextmanager
    def kept_alive(self, every: float | None = None):
        """Renew the lease from a background thread every ``every`` seconds (default: a third of it).

        For a unit that may outlast its lease (a short lease, so that a
        worker killed on another machine loses its unit soon): while the
        block runs the claim stays live however long the work takes, and it
        lapses within one lease once the process dies or hangs up. A renewal
        that finds the claim lost stops the heartbeat (logged; the next
        :meth:`renew` raises ClaimLost); one that fails otherwise (a slow
        shared file system) is logged and retried at the next beat.
        """
        every = self.lease_seconds / 3 if every is None else float(every)
        if not math.isfinite(every) or every <= 0:
            raise ValueError(f"every must be a positive number of seconds, got {every!r}")
        stop = threading.Event()

        def beat():
            while not stop.wait(every):
                try:
                    self.renew()
                except ClaimLost:
                    log.warning("the claim on unit %s was taken over by another process", self.key)
                    return
                except Exception as error:  # noqa: BLE001 - a failed beat must not end the work
                    log.warning("could not renew the claim on unit %s (retrying): %s", self.key, error)

        thread = threading.Thread(target=beat, name=f"claim-{self.key[:16]}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Remove the claim file if it is still this claim's (idempotent)."""
        if self.released:
            return
        with self.store._mutex:
            if self._mine():
                _unlink(self.path)
            self.released = True

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------- loader


class Results:
    """The finished units of a store as a tidy table and labelled arrays.

    ``table``: pandas DataFrame, one row per unit labels x target (x window).
    ``arrays``: xarray Dataset with named axes (see :data:`AXES`).
    ``units``: the :class:`Unit` objects; ``superseded``: keys of units
    dropped because a newer unit has exactly the same labels.
    """

    def __init__(self, root: Path, units: list[Unit], superseded: list[str]):
        self.root, self.units, self.superseded = root, units, superseded

    def __len__(self):
        return len(self.units)

    def __repr__(self):
        return f"<Results {self.root}: {len(self.units)} units, {len(self.table)} rows>"

    @cached_property
    def table(self):
        import pandas as pd

        frames = [_unit_frame(u) for u in self.units]
        if not frames:
            return pd.DataFrame(columns=["model", "revision", "layer", "subject", "target", "score", "key"])
        df = pd.concat(frames, ignore_index=True, sort=False)
        front = [c for c in ("model", "revision", "layer", "subject", "window", "target") if c in df]
        arrays = sorted(dict.fromkeys(c for f in frames for c in f.attrs["arrays"]), key=lambda c: c != "score")
        rest = [c for c in df.columns if c not in front and c not in arrays and c != "key"]
        return df[front + arrays + rest + ["key"]].infer_objects()

    @cached_property
    def arrays(self):
        import xarray as xr

        datasets = [_unit_dataset(u) for u in self.units]
        if not datasets:
            return xr.Dataset()
        seen = {}  # xarray would broadcast a unit's array over an axis it lacks: refuse instead
        for u, ds in zip(self.units, datasets):
            for name, var in ds.data_vars.items():
                key, dims = seen.setdefault(name, (u.key, set(var.dims)))
                if set(var.dims) != dims:
                    raise ValueError(
                        f"array {name!r} has axes {sorted(dims)} in unit {key} but {sorted(var.dims)} in unit "
                        f"{u.key} (e.g. units with and without windows): load them separately with "
                        "load_results(root, keys=...); .table holds them all")
        try:
            ds = xr.merge(datasets, join="outer", compat="no_conflicts", combine_attrs="drop")
        except xr.MergeError as error:
            raise ValueError(
                "units overlap (same model, revision, layer, subject, window and target) with different "
                "values: they differ in labels that are not axes. Give them distinct model names or load "
                f"them separately with load_results(root, keys=...). ({error})") from None
        return ds.transpose(*[a for a in AXES if a in ds.dims])

    def held_out(self, model: str, layer: int, *, revision: str | None = None, subject: str | None = None):
        """Held-out predictions of one model layer and subject, and the targets they are scored against.

        Needs a run with ``[output] predictions = true`` (the runner stores
        each fit unit's ``prediction`` (layer, subject, [window,] sample,
        target) and ``observed`` (subject, [window,] sample, target): the
        targets as each outer fold standardised them, the units of the
        predictions). ``revision`` / ``subject`` may be left out when the
        model has one.

        Returns
        -------
        dict
            ``prediction`` and ``observed``: (samples, windows, targets) for
            word-locked MEG (the layout of
            ``jaxalign.analysis.divergence.word_errors``), else (samples,
            targets); ``target`` names, ``window`` starts (s) or None, and
            the unit's ``key``.
        """
        def pick(u, name, value):
            have = u.labels.get(name)
            return value is None or (value in have if isinstance(have, list) else value == have)

        found = [u for u in self.units if "prediction" in u.arrays and u.labels["model"] == model
                 and pick(u, "revision", revision) and pick(u, "layer", layer) and pick(u, "subject", subject)]
        if not found:
            with_preds = sorted({(u.labels["model"], u.labels["revision"]) for u in self.units
                                 if "prediction" in u.arrays})
            raise KeyError(f"no unit of {self.root} holds predictions of model {model!r} layer {layer}"
                           f"{'' if revision is None else f' revision {revision!r}'}"
                           f"{'' if subject is None else f' subject {subject!r}'} (units with predictions: "
                           f"{with_preds or 'none: run the study with [output] predictions = true'})")
        if len(found) > 1:
            options = sorted({(u.labels["revision"], str(u.labels["subject"])) for u in found})
            raise ValueError(f"model {model!r} layer {layer} matches {len(found)} units (revision, subjects: "
                             f"{options}): give revision= and / or subject=")
        u = found[0]
        subjects = u.labels["subject"] if isinstance(u.labels["subject"], list) else [u.labels["subject"]]
        if subject is None and len(subjects) > 1:
            raise ValueError(f"model {model!r} layer {layer}: the unit holds subjects {subjects}: give subject=")
        s = subjects.index(subjects[0] if subject is None else subject)
        i = u.labels["layer"].index(layer) if isinstance(u.labels["layer"], list) else 0

        def laid_out(name, lead):
            dims = u.dims[name]
            a = u.arrays[name]
            index = tuple(lead.get(d, slice(None)) for d in dims)
            rest = [d for d in dims if d not in lead]
            order = [rest.index(d) for d in ("sample", "window", "target") if d in rest]
            return np.transpose(np.asarray(a[index]), order)

        windows = u.labels.get("window")
        return {"prediction": laid_out("prediction", {"layer": i, "subject": s}),
                "observed": laid_out("observed", {"subject": s}),
                "target": list(u.labels["target"]), "window": list(windows) if isinstance(windows, list) else None,
                "key": u.key}

    def to_csv(self, path) -> Path:
        """Write :attr:`table` as CSV (atomically); return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.table
        return atomic_write(path, lambda f: table.to_csv(f, index=False))

    def to_parquet(self, path) -> Path:
        """Write :attr:`table` as Parquet (atomically; needs pyarrow); return the path."""
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                "Results.to_parquet needs pyarrow, which jaxalign installs with the 'results' extra: "
                "pip install 'jaxalign[results]' (or pip install pyarrow); to_csv needs nothing more") from None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.table
        return atomic_write(path, lambda f: table.to_parquet(f, index=False, engine="pyarrow"))


def _unit_frame(u: Unit):
    """One unit's rows: the product of its axes (but fold) with every array that fits them."""
    import pandas as pd

    axes = [a for a in AXES if a not in ("fold", "sample") and isinstance(u.labels.get(a), list)]
    shape = tuple(len(u.labels[a]) for a in axes)
    index = np.indices(shape).reshape(len(axes), -1)
    data = {}
    for a in AXES:
        if a in axes:
            data[a] = np.asarray(u.labels[a], dtype=object)[index[axes.index(a)]]
        elif a in u.labels:
            data[a] = u.labels[a]
    names = []
    for name, dims in u.dims.items():
        if "target" not in dims or not set(dims) <= set(axes):
            continue  # per-fold or per-layer arrays: in .arrays only
        a = np.transpose(np.asarray(u.arrays[name]), [dims.index(x) for x in axes if x in dims])
        a = a.reshape([len(u.labels[x]) if x in dims else 1 for x in axes])
        data[name] = np.broadcast_to(a, shape).reshape(-1)
        names.append(name)
    for k, v in u.labels.items():
        if k not in AXES:
            data[k] = v
    data["key"] = u.key
    df = pd.DataFrame(data, index=pd.RangeIndex(index.shape[1]))
    df.attrs["arrays"] = names
    return df


def _unit_dataset(u: Unit):
    import xarray as xr

    coords = {a: u.labels[a] for a in AXES if isinstance(u.labels.get(a), list)}
    keep = {n: a for n, a in u.arrays.items() if "sample" not in u.dims[n]}  # predictions: Results.held_out
    for name in keep:
        dims = u.dims[name]
        if "fold" in dims and "fold" not in coords:
            coords["fold"] = list(range(u.arrays[name].shape[dims.index("fold")]))
    ds = xr.Dataset({n: (u.dims[n], np.asarray(a)) for n, a in keep.items()}, coords=coords)
    scalar_axes = {a: [u.labels[a]] for a in AXES if a in u.labels and not isinstance(u.labels[a], list)}
    return ds.expand_dims(scalar_axes)


def load_results(root, keys: Iterable[str] | None = None) -> Results:
    """Read the finished units of the results store ``root`` (all, or those in ``keys``).

    Unfinished units (a killed writer's temporary folder) are never read.
    When several units carry exactly the same labels (a setting changed and
    the unit was recomputed under a new key), the newest is kept and the
    others are listed in ``Results.superseded``.
    """
    store = ResultsStore(root, create=False)
    done = store.keys()
    if keys is not None:
        wanted = [_check_key(k) for k in keys]
        missing = [k for k in wanted if k not in set(done)]
        if missing:
            raise KeyError(f"units not done in {store.root}: {missing}")
        done = wanted
    newest: dict[str, Unit] = {}
    superseded = []
    for key in done:
        unit = store.read_unit(key)
        ident = json.dumps(unit.labels, sort_keys=True)
        other = newest.get(ident)
        if other is not None:
            old, unit = sorted([other, unit], key=lambda u: (u.provenance.get("written", ""), u.key))
            superseded.append(old.key)
            log.info("unit %s superseded by %s (same labels, written later)", old.key, unit.key)
        newest[ident] = unit
    return Results(store.root, list(newest.values()), sorted(superseded))
