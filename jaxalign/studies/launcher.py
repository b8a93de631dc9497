"""A study's units across a cluster: one SLURM job array (or local processes) through submitit.

``launch(cfg, out, launcher="slurm", jobs=N, ...)`` (``jaxalign run study.toml
--launcher slurm --jobs N``) runs a study with N workers instead of one
process. No scheduler of jaxalign's own: the workers are the runner
(:func:`jaxalign.studies.runner.run_study`) started N times on the same
results store, which already shares work between processes through claims
with leases (:meth:`ResultsStore.claim`). submitit submits them as one job
array (``sbatch --array=0-N-1``) and requeues a task that SLURM preempts or
whose time limit comes near (a :class:`submitit.helpers.Checkpointable`).

Who does what:

1. **The launching process** (a login node) checks everything first, as
   ``run_study`` does (config, dataset, models located, layers, the output
   folder and the store writable; for ``slurm`` that ``sbatch`` is there),
   then submits ``min(N, fit units not done)`` tasks and waits, showing the
   units done.
2. **Each task** claims a free fit unit, computes it, writes it, and claims
   the next. Its claim is renewed by a heartbeat while it computes, with a
   short lease (``lease_seconds``, 5 minutes by default): a task killed on
   another machine loses its unit, which another task takes over once the
   lease has lapsed (on the same machine at once: its process is gone). A
   task that finds every remaining unit claimed waits and polls, so that it
   can take over such a unit; it leaves when every fit unit is done.
3. **The group units** (sign-flip tests over subjects, FDR over every
   feature set) depend on every fit unit and share one FDR family: the first
   task to get there computes them all under one claim, the others wait for
   it and leave. They run on the cluster, not on the login node.
4. **The launching process**, once the array has finished, checks that every
   fit unit is done (else it fails, naming how many are missing, the failed
   tasks and their logs: running the same command again resumes), then runs
   ``run_study(stages=("stats",))``, which finds every unit done and only
   writes the tables and figures (it computes the group units only if the
   task holding them died).

Resubmitting the same command skips every finished unit: a new array of
``min(N, units left)`` tasks, or none at all when everything is done. A
task killed mid-unit loses that unit only (units are written atomically; a
half-written one is never read). submitit's files (the pickled call, each
task's stdout and stderr log, with the runner's log lines) are in
``OUT/logs`` (or ``logs=``).

``launcher="local"`` runs the same path on this machine: N real
subprocesses (submitit's ``LocalExecutor``), e.g. N GPUs of one node with
``gpus_per_job=1`` (task i sees GPU i). Each local task is pinned to its
own share of the machine's CPUs (``cpus_per_job``; by default an even
share), so that N processes do not each start a thread per core.
``launcher="none"`` is ``run_study`` in this process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from jaxalign._core.files import atomic_write_text, writable_dir
from jaxalign.studies.config import StudyConfig

__all__ = ["DEFAULT_LEASE_SECONDS", "LAUNCHERS", "LaunchError", "launch", "slurm_option_names"]

log = logging.getLogger(__name__)

LAUNCHERS = ("none", "local", "slurm")
#: Claim lease of a worker (renewed by a heartbeat while a unit runs): how soon a dead task's unit is taken over.
DEFAULT_LEASE_SECONDS = 300.0
#: A task's time limit when none is given (minutes): SLURM's --time; a local task is requeued after it.
DEFAULT_TIME_MINUTES = {"local": 7 * 24 * 60, "slurm": 120}
# submitit's SLURM parameters that launch's own options set (or that would break one task per job)
_MANAGED = {"partition": "partition (--partition)", "gpus_per_node": "gpus_per_job (--gpus-per-job)",
            "time": "time_minutes (--time)", "mem": "mem_gb (--mem)", "cpus_per_task": "cpus_per_job (--cpus-per-job)",
            "array_parallelism": "jobs (--jobs)", "job_name": None, "nodes": None, "ntasks_per_node": None,
            "num_gpus": "gpus_per_job (--gpus-per-job)", "map_count": None, "additional_parameters": None}
_LIST_OPTIONS = ("setup", "teardown", "srun_args")
_POLL_S = 2.0


class LaunchError(RuntimeError):
    """The job array ended with fit units left undone (failed tasks); rerunning resumes."""


def slurm_option_names() -> list[str]:
    """The keys ``slurm_options`` (``--slurm-option KEY=VALUE``) accepts: submitit's SLURM parameters
    (sbatch's long options with ``_`` for ``-``: account, qos, constraint, exclude, ...) except those
    :func:`launch` sets from its own options."""
    import submitit

    return sorted(set(submitit.SlurmExecutor._valid_parameters()) - set(_MANAGED))


def _positive(value, name: str, *, integer: bool = False, minimum: float = 0.0, strict: bool = True):
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if not integer else int)
    if ok and not integer:
        ok = math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name} must be {kind} {bound}, got {value!r}")
    return value


def _check_options(launcher, jobs, lease_seconds, partition, gpus_per_job, cpus_per_job, time_minutes, mem_gb,
                   slurm_options) -> dict:
    """Every option checked, before any work; errors name the argument and its command-line flag."""
    if not isinstance(launcher, str) or launcher not in LAUNCHERS:
        raise ValueError(f"launcher (--launcher) must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")
    if jobs is None:
        jobs = 1 if launcher == "none" else 2
    _positive(jobs, "jobs (--jobs)", integer=True, minimum=1, strict=False)
    if launcher == "none" and jobs != 1:
        raise ValueError(f"jobs (--jobs) = {jobs} needs launcher (--launcher) 'local' or 'slurm'; with 'none' the "
                         "study runs in this process")
    _positive(lease_seconds, "lease_seconds (--lease)")
    given = {"partition (--partition)": partition, "mem_gb (--mem)": mem_gb,
             "slurm_options (--slurm-option)": slurm_options or None}
    if launcher != "slurm":
        wrong = [name for name, value in given.items() if value is not None]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: for launcher (--launcher) 'slurm' only, not {launcher!r}")
    if launcher == "none":
        wrong = [n for n, v in (("gpus_per_job (--gpus-per-job)", gpus_per_job),
                                ("cpus_per_job (--cpus-per-job)", cpus_per_job),
                                ("time_minutes (--time)", time_minutes)) if v is not None]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: for launcher (--launcher) 'local' or 'slurm', not 'none'")
    if partition is not None and (not isinstance(partition, str) or not partition.strip()):
        raise ValueError(f"partition (--partition) must be a non-empty string, got {partition!r}")
    if gpus_per_job is not None:
        _positive(gpus_per_job, "gpus_per_job (--gpus-per-job)", integer=True, strict=False)
    if cpus_per_job is not None:  # local: 0 = no pinning, every task may use every CPU
        _positive(cpus_per_job, "cpus_per_job (--cpus-per-job)", integer=True,
                  minimum=0 if launcher == "local" else 1, strict=False)
        cpus = _usable_cpus() if launcher == "local" else None
        if cpus is not None and cpus_per_job * jobs > len(cpus):
            raise ValueError(f"cpus_per_job (--cpus-per-job) = {cpus_per_job} for {jobs} local job(s) needs "
                             f"{cpus_per_job * jobs} CPUs, but this process may use {len(cpus)} "
                             f"({_cpu_ranges(cpus)}); use fewer jobs or CPUs per job, or 0 to pin nothing")
    if time_minutes is not None:
        _positive(time_minutes, "time_minutes (--time)")
    if mem_gb is not None:
        _positive(mem_gb, "mem_gb (--mem)")
    options = {}
    if slurm_options:
        if not isinstance(slurm_options, Mapping):
            raise ValueError(f"slurm_options (--slurm-option) must be a dict of name -> value, got "
                             f"{type(slurm_options).__name__}")
        for key, value in slurm_options.items():
            if key in _MANAGED:
                use = _MANAGED[key]
                raise ValueError(f"slurm option {key!r} (--slurm-option): "
                                 + (f"set it with {use}" if use else "set by the launcher (one task per job)"))
            allowed = slurm_option_names()
            if key not in allowed:
                raise ValueError(f"slurm option {key!r} (--slurm-option) is unknown (allowed: {', '.join(allowed)})")
            options[key] = [value] if key in _LIST_OPTIONS and isinstance(value, str) else value
    return {"launcher": launcher, "jobs": jobs, "lease_seconds": float(lease_seconds), "partition": partition,
            "gpus_per_job": gpus_per_job, "cpus_per_job": cpus_per_job, "mem_gb": mem_gb,
            "time_minutes": time_minutes, "slurm_options": options}


def _check_slurm_tools() -> None:
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise ValueError(f"launcher (--launcher) 'slurm' needs SLURM's {' and '.join(missing)} on PATH, not found on "
                         "this machine: run it on the cluster's login node, or use --launcher local")


def _executor(opts: dict, folder: Path, n: int):
    import submitit

    launcher = opts["launcher"]
    executor = submitit.AutoExecutor(folder=folder, cluster=launcher)
    minutes = opts["time_minutes"] or DEFAULT_TIME_MINUTES[launcher]
    params = {"name": "jaxalign", "timeout_min": max(1, math.ceil(minutes))}
    if launcher == "slurm":
        params["slurm_array_parallelism"] = n
        if opts["partition"] is not None:
            params["slurm_partition"] = opts["partition"]
        if opts["gpus_per_job"] is not None:
            params["gpus_per_node"] = opts["gpus_per_job"]
        if opts["cpus_per_job"] is not None:
            params["cpus_per_task"] = opts["cpus_per_job"]
        if opts["mem_gb"] is not None:
            params["mem_gb"] = opts["mem_gb"]
        params.update({f"slurm_{k}": v for k, v in opts["slurm_options"].items()})
    executor.update_parameters(**params)
    return executor


def _local_devices(opts: dict, n: int) -> list[str | None] | None:
    """CUDA_VISIBLE_DEVICES per local task. submitit's local executor hides every GPU from its tasks
    unless told; the tasks get this process's devices back (all of them, or ``gpus_per_job`` each)."""
    if opts["launcher"] != "local":
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    g = opts["gpus_per_job"]
    if g is None:
        return [visible] * n
    if g == 0:
        return [""] * n
    pool = [d for d in visible.split(",") if d.strip()] if visible is not None else [str(i) for i in range(g * n)]
    if len(pool) < g * n:
        raise ValueError(f"gpus_per_job (--gpus-per-job) = {g} for {n} local job(s) needs {g * n} GPUs, but "
                         f"CUDA_VISIBLE_DEVICES lists {len(pool)}")
    return [",".join(pool[i * g:(i + 1) * g]) for i in range(n)]


def _usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity), or None where the OS cannot pin (not Linux)."""
    if not (hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity")):
        return None
    return sorted(os.sched_getaffinity(0))


def _local_cpus(opts: dict, n: int) -> list[tuple[int, ...] | None] | None:
    """The CPUs each local task is pinned to (None: not pinned).

    N JAX processes on one machine would each start a thread per core (XLA's
    pool, BLAS) and fight over the cores. So each local task gets its own
    ``cpus_per_job`` of this process's CPUs, by default an even share
    (``len(cpus) // n``; with more tasks than CPUs, one CPU each, in turn);
    ``cpus_per_job=0`` pins nothing. XLA sizes its thread pool to the CPUs
    the task may use.
    """
    if opts["launcher"] != "local" or opts["cpus_per_job"] == 0:
        return None
    cpus, c = _usable_cpus(), opts["cpus_per_job"]
    if cpus is None:
        if c is not None:
            log.warning("cpus_per_job (--cpus-per-job) = %d: this OS cannot pin processes to CPUs; the local "
                        "tasks share every CPU", c)
        return None
    if c is None:
        if n > len(cpus):
            log.warning("%d local tasks on %d CPUs: tasks share CPUs (one each, in turn)", n, len(cpus))
            return [(cpus[i % len(cpus)],) for i in range(n)]
        c = len(cpus) // n
    return [tuple(cpus[i * c:(i + 1) * c]) for i in range(n)]


def _cpu_ranges(cpus) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (taskset's notation)."""
    parts, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)


# BLAS and OpenMP read their thread counts when the library loads (a task imports numpy before it runs):
# set for the tasks' processes at submission, unless the user set them
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _thread_environment(cpus: list | None):
    added = []
    if cpus:
        count = str(min(len(c) for c in cpus))
        added = [k for k in _THREAD_VARIABLES if k not in os.environ]
        os.environ.update({k: count for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _error_line(error: BaseException) -> str:
    lines = [x.strip() for x in str(error).strip().splitlines() if x.strip()]
    return lines[-1] if lines else type(error).__name__


def _wait(jobs, store, keys, launcher: str, progress: bool, poll_seconds: float) -> list[dict]:
    """Block until every job of the array has ended (showing units done); what each task did."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(keys), desc="units", unit="unit", disable=not progress, leave=False)
    try:
        while True:
            bar.n = sum(store.is_done(k) for k in keys)
            bar.refresh()
            if all(job.done() for job in jobs):
                break
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        if launcher == "local":
            for job in jobs:
                job.cancel(check=False)
            log.warning("interrupted: the local tasks were stopped; finished units are kept")
        else:
            array = str(jobs[0].job_id).split("_")[0]
            log.warning("interrupted: job array %s keeps running on the cluster (scancel %s stops it); run the same "
                        "command again to wait for it and write the tables", array, array)
        raise
    finally:
        bar.close()
    tasks = []
    for i, job in enumerate(jobs):
        entry = {"task": i, "job_id": str(job.job_id), "log": str(job.paths.stderr)}
        try:
            entry.update(job.result(), state="done")
        except Exception as error:  # noqa: BLE001 - a failed task is reported, its units are taken over
            entry.update(state="failed", error=_error_line(error))
            log.warning("task %d (job %s) failed: %s (log: %s)", i, job.job_id, entry["error"], entry["log"])
        tasks.append(entry)
    return tasks


def launch(cfg, out=None, *, launcher: str = "local", jobs: int | None = None,
           lease_seconds: float = DEFAULT_LEASE_SECONDS, partition: str | None = None,
           gpus_per_job: int | None = None, cpus_per_job: int | None = None, time_minutes: float | None = None,
           mem_gb: float | None = None, slurm_options: Mapping | None = None, logs=None,
           progress: bool | None = None, poll_seconds: float = _POLL_S):
    """Run a study with ``jobs`` workers: a SLURM job array, local processes, or this process.

    See the module docstring for who computes what. Equal to
    :func:`~jaxalign.studies.runner.run_study` in its results; every unit
    is computed once.

    Parameters
    ----------
    cfg : StudyConfig, or a path to a TOML study file
    out : results folder (overrides ``output.dir``); the store is ``out/store``
    launcher : "local" (submitit's local executor: real subprocesses on this
        machine), "slurm" (one job array; needs ``sbatch`` and ``srun``) or
        "none" (``run_study`` in this process)
    jobs : number of workers (array tasks); default 2 ("none": 1). Never more
        than the fit units left to compute
    lease_seconds : claim lease of a worker (5 min): a dead task's unit is
        taken over after at most this long (at once on this machine)
    partition, gpus_per_job, cpus_per_job, mem_gb : SLURM resources per task
        (sbatch --partition, --gpus-per-node, --cpus-per-task, --mem in GB);
        ``gpus_per_job`` also for "local" (task i sees GPUs i*g .. i*g+g-1),
        and ``cpus_per_job``: local task i is pinned to CPUs i*c .. i*c+c-1
        of this process's CPUs (default: an even share, so that N tasks
        do not each start a thread per core; 0: no pinning)
    time_minutes : each task's time limit (SLURM --time; default 120 min,
        local 7 days); a task near it is requeued and resumes
    slurm_options : other SLURM parameters by submitit's name
        (:func:`slurm_option_names`: account, qos, constraint, exclude, ...)
    logs : submitit's folder (pickles, each task's stdout and stderr); default ``out/logs``
    progress : a bar of units done (None: on a terminal only)
    poll_seconds : how often the launching process looks at the jobs

    Returns
    -------
    RunSummary, as ``run_study``'s: ``computed`` lists what the tasks (and
    this process) computed, ``tasks`` what each task did (job id, host,
    pid, computed units, state, log file); ``results.json`` records both.

    Raises
    ------
    ValueError (before any work) for a bad option, config or folder, a
    missing ``sbatch``; PermissionError for an output folder or store that
    cannot be written; LaunchError (a RuntimeError) when the array ended with fit units left
    undone (failed tasks named, with their logs; rerun to resume).
    """
    from jaxalign.studies.runner import _isatty, plan_study, run_study
    from jaxalign.studies.store import ResultsStore

    t0 = time.perf_counter()
    opts = _check_options(launcher, jobs, lease_seconds, partition, gpus_per_job, cpus_per_job, time_minutes,
                          mem_gb, slurm_options)
    _positive(poll_seconds, "poll_seconds")
    if not isinstance(cfg, StudyConfig):
        cfg = StudyConfig.from_toml(cfg)
    if progress is None:
        progress = _isatty()
    if opts["launcher"] == "none":
        return run_study(cfg, out, progress=progress, lease_seconds=opts["lease_seconds"])
    if opts["launcher"] == "slurm":
        _check_slurm_tools()
    plan = plan_study(cfg, out)  # every check of run_study, before anything is submitted
    out = plan.out
    store = ResultsStore(out / "store")  # a read-only file system fails here (a write probe), not in the tasks
    writable_dir(store.claims_dir, "the results store's claims folder")
    folder = writable_dir(out / "logs" if logs is None else Path(logs).expanduser(), "logs")
    keys = [u.key for u in plan.fits] + sorted(set(plan.group_keys.values()))
    pending = [u.key for u in plan.fits if not store.is_done(u.key)]
    n = min(opts["jobs"], len(pending))
    tasks: list[dict] = []
    if n:
        from jaxalign.studies._worker import StudyWorker

        executor = _executor(opts, folder, n)
        devices = _local_devices(opts, n)
        cpus = _local_cpus(opts, n)
        workers = [StudyWorker(cfg, out, opts["lease_seconds"], None if devices is None else (devices[i],),
                               None if cpus is None else cpus[i])
                   for i in range(n)]
        with _thread_environment(cpus):
            if n == 1:
                submitted = [executor.submit(workers[0], 0)]
            else:
                with executor.batch():
                    submitted = [executor.submit(w, i) for i, w in enumerate(workers)]
        log.info("%d fit unit(s) to compute: submitted %d %s job(s) (%s); logs in %s", len(pending), n,
                 opts["launcher"], str(submitted[0].job_id).split("_")[0], folder)
        tasks = _wait(submitted, store, keys, opts["launcher"], progress, poll_seconds)
    else:
        log.info("every fit unit is done already: nothing to submit")
    missing = [u.key for u in plan.fits if not store.is_done(u.key)]
    if missing:
        failed = [t for t in tasks if t["state"] != "done"]
        why = (f"{len(failed)} of {n} task(s) failed (first: {failed[0]['error']}; log: {failed[0]['log']})"
               if failed else f"{n} task(s) ended")
        raise LaunchError(f"{len(missing)} of {len(plan.fits)} fit unit(s) of the study are not done after the "
                           f"job array: {why}; logs in {folder}. Finished units are kept: run the same command "
                           "again to compute the rest")
    summary = run_study(cfg, out, progress=progress, lease_seconds=opts["lease_seconds"], stages=("stats",))
    by_tasks = [k for t in tasks for k in t.get("computed", [])]
    summary.computed = list(dict.fromkeys(by_tasks + summary.computed))
    summary.reused = [k for k in keys if k not in set(summary.computed)]
    summary.tasks = tasks
    summary.models_loaded += sum(t.get("models_loaded", 0) for t in tasks)
    summary.seconds = time.perf_counter() - t0
    path = out / "results.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["units"] = {"computed": summary.computed, "reused": summary.reused}
    doc["launcher"] = {k: v for k, v in opts.items() if v not in (None, {})} | {"jobs": n, "logs": str(folder),
                                                                                "tasks": tasks}
    doc["seconds"] = summary.seconds
    atomic_write_text(path, json.dumps(doc, indent=1))
    return summary
