"""Shared helpers for the jaxalign benchmarks.

Everything here is dependency-light (numpy + psutil; jax, torch, himalaya and
threadpoolctl are imported lazily and are optional) so that every benchmark in
``benchmarks/`` can reuse it:

``measure(fn)``
    Run ``fn()`` once and return ``(result, seconds, peak_mib)``: wall time and
    the peak resident memory of the process *above the RSS just before the
    call*. The peak is measured in-process by a background thread sampling RSS
    (psutil) every ~20 ms; on Linux the kernel's own high-water mark (VmHWM,
    reset through ``/proc/self/clear_refs``) is also read so that a spike
    shorter than the sampling period is not missed.
``PeakMemory``
    The same measurement as a context manager.
``gemm_rate_gflops(n, dtype)``
    Float32 GEMM throughput through jax (jitted ``jnp.dot``) and numpy.
``machine_info()`` / ``format_machine_info(info)``
    CPU model, cores, RAM, library versions, accelerator, date.
``print_table(rows, columns)``
    Aligned markdown table (paste-able into ``benchmarks/RESULTS.md``).
``parse_bytes('4GiB')`` (the library's reader: bare ``4G`` is 4 GiB),
``write_json(path, obj)``. Folds come from ``jaxalign.ridge.ContiguousKFold``.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import sys
import threading
import time
from importlib import metadata
from typing import Any, Callable, Iterable, Sequence

import numpy as np

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a jaxalign dependency
    psutil = None

MIB = 1 << 20

# --------------------------------------------------------------------------
# sizes


def parse_bytes(text: str | int | float | None) -> int | None:
    """An optional size flag in bytes: ``None`` and ``''`` give ``None``, anything
    else is read by the library's :func:`jaxalign.ridge.parse_bytes`.

    One reader for every size a user types, so a benchmark's ``--memory-budget
    4G`` means what ``RidgeCV(memory_budget="4G")`` means: bare K/M/G/T and
    KiB/MiB/GiB/TiB are binary (powers of 1024), KB/MB/GB/TB decimal. (Before,
    this harness read bare ``4G`` as 4e9 bytes while the engine read 4 GiB.)
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    from jaxalign.ridge import parse_bytes as library_parse_bytes

    return library_parse_bytes(text)


def format_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# --------------------------------------------------------------------------
# memory and time


def current_rss() -> int:
    """Resident set size of this process, in bytes."""
    if psutil is not None:
        return psutil.Process().memory_info().rss
    with open("/proc/self/statm") as f:  # pragma: no cover - fallback
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc only).

    Lowers the baseline so that memory a previous method freed (but the
    allocator kept) is not silently reused by the next one and hidden.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return None


class PeakMemory:
    """Context manager measuring the peak RSS above the RSS at entry.

    >>> with PeakMemory() as pm:
    ...     big = np.ones(10**8)
    >>> pm.peak_mib  # ~763

    Attributes after exit: ``baseline`` (bytes), ``peak`` (bytes, absolute),
    ``peak_mib`` (MiB above baseline), ``sampled_peak_mib`` (from the sampling
    thread alone), ``hwm_peak_mib`` (from the kernel's VmHWM, or None),
    ``n_samples``.
    """

    def __init__(self, interval: float = 0.02, trim: bool = True):
        self.interval = interval
        self.trim = trim
        self.baseline = 0
        self.peak = 0
        self.n_samples = 0
        self._hwm_ok = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        proc = psutil.Process() if psutil is not None else None
        while not self._stop.is_set():
            rss = proc.memory_info().rss if proc is not None else current_rss()
            if rss > self._sampled:
                self._sampled = rss
            self.n_samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.trim:
            _trim_heap()
        self.baseline = current_rss()
        self._sampled = self.baseline
        self._hwm_ok = _reset_hwm()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        final = current_rss()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sampled = max(self._sampled, final)
        hwm = _read_hwm() if self._hwm_ok else None
        self.sampled_peak_mib = (self._sampled - self.baseline) / MIB
        self.hwm_peak_mib = None if hwm is None else (hwm - self.baseline) / MIB
        self.peak = max(self._sampled, hwm or 0)
        self.peak_mib = max(0.0, (self.peak - self.baseline) / MIB)


def _cpu_snapshot() -> tuple[float, float | None]:
    """(CPU seconds of this process, busy CPU seconds of the whole machine)."""
    if psutil is None:  # pragma: no cover
        t = os.times()
        return t.user + t.system, None
    own = psutil.Process().cpu_times()
    sys_t = psutil.cpu_times()
    busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
    busy -= getattr(sys_t, "guest", 0.0) + getattr(sys_t, "guest_nice", 0.0)  # in user
    return own.user + own.system, busy


class Measurement(tuple):
    """``(result, seconds, peak_mib)`` with more fields as attributes.

    ``cpu_s`` CPU seconds used by this process during the call;
    ``cores_used`` = cpu_s / seconds (parallel utilisation);
    ``other_cores``: average number of cores kept busy by *other* processes
    during the call (machine busy time minus ours, over wall time): anything
    well above 0 means the timing was disturbed by concurrent load;
    ``sampled_peak_mib`` / ``hwm_peak_mib``: the two peak estimates.
    """

    def __new__(cls, result, seconds, peak_mib, **extra):
        self = super().__new__(cls, (result, seconds, peak_mib))
        self.__dict__.update(extra)
        return self

    result = property(lambda self: self[0])
    seconds = property(lambda self: self[1])
    peak_mib = property(lambda self: self[2])


def measure(fn: Callable[[], Any], interval: float = 0.02) -> Measurement:
    """Call ``fn()`` once; return ``(result, seconds, peak_mib)``.

    ``seconds`` is wall time (``time.perf_counter``); ``fn`` must itself block
    until its results exist (e.g. convert jax arrays to numpy inside ``fn``).
    ``peak_mib`` is the peak process RSS during the call minus the RSS just
    before it, in MiB (see :class:`PeakMemory`). Memory the result still holds
    is included; memory allocated and freed before the call is not.

    The returned tuple is a :class:`Measurement`: it also carries ``cpu_s``,
    ``cores_used`` and ``other_cores`` (concurrent load from other processes).
    """
    with PeakMemory(interval=interval) as pm:
        own0, busy0 = _cpu_snapshot()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        own1, busy1 = _cpu_snapshot()
    cpu_s = own1 - own0
    other = None
    if busy0 is not None and seconds > 0:
        other = max(0.0, ((busy1 - busy0) - cpu_s) / seconds)
    return Measurement(
        result, seconds, pm.peak_mib,
        cpu_s=cpu_s, cores_used=cpu_s / seconds if seconds > 0 else None,
        other_cores=other, sampled_peak_mib=pm.sampled_peak_mib,
        hwm_peak_mib=pm.hwm_peak_mib, baseline_mib=pm.baseline / MIB,
    )


def log_background_load(log, seconds: float = 1.0) -> float | None:
    """Measure :func:`background_load` before a benchmark and log it, with a
    warning when other processes would disturb the timings."""
    idle = background_load(seconds)
    if idle is not None:
        log(f"load      : {idle:.2f} cores busy during {seconds:g} s idle before the start"
            + ("  <-- WARNING: other processes are running; timings will be disturbed"
               if idle > 0.25 else ""))
    return idle


def background_load(seconds: float = 1.0) -> float | None:
    """Average number of cores busy (all processes) over ``seconds`` of sleep."""
    if psutil is None:  # pragma: no cover
        return None
    _, b0 = _cpu_snapshot()
    t0 = time.perf_counter()
    time.sleep(seconds)
    _, b1 = _cpu_snapshot()
    return max(0.0, (b1 - b0) / (time.perf_counter() - t0))


# --------------------------------------------------------------------------
# GEMM throughput


def gemm_rate_gflops(
    n: int = 2048,
    dtype: Any = np.float32,
    repeats: int = 3,
    backends: Sequence[str] = ("jax", "numpy"),
    jax_precision: str | None = "highest",
) -> dict[str, float | None]:
    """Measured (n x n) @ (n x n) GEMM rate in GFLOP/s (2 n^3 flops per call).

    ``jax``: a jitted ``jnp.dot`` on the default jax device, warmed up once,
    results blocked (``block_until_ready``), best of ``repeats``, at matmul
    precision ``jax_precision`` (default "highest": true float32, the rate
    jaxalign's kernels can reach; GPUs run "default" float32 products as TF32).
    ``numpy``: ``a @ b`` through numpy's BLAS, warmed up, best of ``repeats``.
    A backend that cannot be imported gives ``None``.
    """
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out: dict[str, float | None] = {}
    for name in backends:
        try:
            if name == "jax":
                import jax
                import jax.numpy as jnp

                dot = jax.jit(jnp.dot)
                ja, jb = jax.device_put(a), jax.device_put(b)
                with jax.default_matmul_precision(jax_precision):
                    dot(ja, jb).block_until_ready()

                def call(dot=dot, ja=ja, jb=jb):
                    with jax.default_matmul_precision(jax_precision):
                        dot(ja, jb).block_until_ready()

            elif name == "numpy":
                a @ b

                def call():
                    a @ b

            else:
                raise ValueError(f"unknown GEMM backend {name!r}")
        except ImportError:
            out[name] = None
            continue
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
        out[name] = flops / best / 1e9
    return out


def jax_device_peak_mib() -> float | None:
    """Peak bytes in use on jax's first device so far, in MiB (None where the backend keeps no statistics).

    Cumulative over the process: what earlier calls allocated counts too.
    """
    import jax

    peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    return None if peak is None else peak / MIB


# --------------------------------------------------------------------------
# machine description


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def machine_info(devices: bool = True) -> dict[str, Any]:
    """A JSON-serialisable description of the machine and software.

    ``devices=True`` imports jax (and torch if installed) to report the
    accelerator; import jaxalign before calling this so that its jaxlib guard
    runs before the jax backend starts.
    """
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False) if psutil else None,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(psutil.virtual_memory().total / (1 << 30), 1) if psutil else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {
            d: _version(d)
            for d in ("jaxalign", "jax", "jaxlib", "numpy", "scipy", "himalaya",
                      "scikit-learn", "torch")
        },
        "env": {
            k: os.environ[k]
            for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                      "MKL_NUM_THREADS", "JAX_PLATFORMS", "JAX_ENABLE_X64")
            if k in os.environ
        },
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
            for p in threadpool_info()
        ]
    except Exception:
        info["blas"] = None
    if devices:
        try:
            import jax

            devs = jax.devices()
            info["jax_backend"] = jax.default_backend()
            info["jax_devices"] = [f"{d.platform}:{d.device_kind}" for d in devs]
            info["device_kind"] = devs[0].device_kind
        except Exception as exc:  # pragma: no cover
            info["jax_devices"] = f"unavailable ({exc})"
            info["device_kind"] = None
        try:
            import torch

            info["torch_threads"] = torch.get_num_threads()
            info["torch_cuda"] = (
                torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
            )
        except ImportError:
            pass
    return info


def format_machine_info(info: dict[str, Any]) -> str:
    """Human-readable multi-line rendering of :func:`machine_info`."""
    v = {k: val for k, val in info["versions"].items() if val}
    lines = [
        f"date      : {info['date']}",
        f"cpu       : {info['cpu_model']} ({', '.join(info.get('cpu_flags') or []) or 'no flags'})",
        f"cores     : {info['logical_cores']} logical, {info['physical_cores']} physical, "
        f"{info['usable_cores']} usable; RAM {info['ram_gib']} GiB",
        f"platform  : {info['platform']}, python {info['python']}",
        "versions  : " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]
    if "jax_devices" in info:
        lines.append(f"jax       : backend {info.get('jax_backend')}, devices {info['jax_devices']}")
    if "torch_threads" in info:
        lines.append(f"torch     : {info['torch_threads']} threads, cuda {info.get('torch_cuda')}")
    if info.get("blas"):
        lines.append(
            "blas      : "
            + "; ".join(
                f"{b['internal_api']} {b['version']} ({b['num_threads']} threads, {b['architecture']})"
                for b in info["blas"]
            )
        )
    if info.get("env"):
        lines.append("env       : " + " ".join(f"{k}={val}" for k, val in info["env"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# output


def _fmt(value: Any, fmt: str | Callable[[Any], str] | None) -> str:
    if value is None:
        return "n/a"
    if callable(fmt):
        return fmt(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a" if math.isnan(value) else str(value)
    if fmt:
        try:
            return format(value, fmt)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str | tuple],
    file=None,
) -> str:
    """Print rows (dicts) as an aligned markdown table and return the text.

    ``columns`` items are ``key``, ``(key, header)`` or ``(key, header, fmt)``
    where ``fmt`` is a format spec (``'.2f'``) or a callable. Missing or
    ``None`` values print as ``n/a``. Numeric columns are right-aligned.
    """
    cols = []
    for c in columns:
        if isinstance(c, str):
            c = (c, c, None)
        elif len(c) == 2:
            c = (c[0], c[1], None)
        cols.append(c)
    rows = list(rows)
    cells = [[_fmt(r.get(key), fmt) for key, _, fmt in cols] for r in rows]
    numeric = [
        all(isinstance(r.get(key), (int, float, np.number)) or r.get(key) is None for r in rows)
        for key, _, _ in cols
    ]
    widths = [
        max([len(h)] + [len(row[i]) for row in cells]) for i, (_, h, _) in enumerate(cols)
    ]

    def line(items):
        out = []
        for i, s in enumerate(items):
            out.append(s.rjust(widths[i]) if numeric[i] else s.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    text_lines = [line([h for _, h, _ in cols])]
    text_lines.append(
        "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                       for w, num in zip(widths, numeric)) + "|"
    )
    text_lines += [line(row) for row in cells]
    text = "\n".join(text_lines)
    print(text, file=file or sys.stdout, flush=True)
    return text


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy types, sets and tuples; NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy values converted, NaN -> null)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(to_jsonable(obj), f, indent=2, allow_nan=False)
        f.write("\n")
