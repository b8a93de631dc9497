"""One task of a study's job array (:func:`jaxalign.studies.launch`): the runner on a shared store.

Pickled by submitit in the launching process and called in each task with
its index. It is a :class:`submitit.helpers.Checkpointable`: when SLURM
preempts the task, or its time limit comes near (submitit's ``USR2``
signal), submitit pickles it again and requeues the same call. The claim of
the unit it was computing is released as the task exits (the ``with claim``
block of the runner), so another task, or this one requeued, takes the unit
over; every finished unit is already in the store and is not computed again.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import submitit

from jaxalign._core.files import host_tag

log = logging.getLogger("jaxalign.studies.launcher")


class StudyWorker(submitit.helpers.Checkpointable):
    """``StudyWorker(cfg, out, lease_seconds)(task)``: compute whatever units of the study are free.

    Runs :func:`jaxalign.studies.runner.run_study` with both stages and no
    outputs (the launching process writes the tables and figures once):
    claims free fit units until every fit unit is done, waiting while units
    are held by other tasks (and taking over those whose holder died or
    whose lease ran out), then the group units (one task computes them, the
    others wait for it). Returns what this task did, for the launcher's
    summary.
    """

    def __init__(self, cfg, out, lease_seconds: float, cuda_devices: tuple | None = None,
                 cpus: tuple | None = None):
        self.cfg, self.out, self.lease_seconds = cfg, str(out), float(lease_seconds)
        # local tasks: (CUDA_VISIBLE_DEVICES for this task, None = unset), since submitit's local
        # executor sets it to its own choice ("" without gpus_per_node: no GPU at all)
        self.cuda_devices = cuda_devices
        self.cpus = cpus  # local tasks: the CPUs this task is pinned to (None: not pinned)

    def __call__(self, task: int) -> dict:
        _log_to_stderr()
        cpus = getattr(self, "cpus", None)  # (a task pickled by an older jaxalign has none)
        if cpus is not None:  # before JAX starts its backends: XLA sizes its thread pool to these
            pin_process(cpus)
        if self.cuda_devices is not None:  # before JAX starts its backends
            (value,) = self.cuda_devices
            if value is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = value
        from jaxalign._compile_cache import enable_compilation_cache
        from jaxalign._core.memory import keep_freed_memory
        from jaxalign.studies.runner import STAGES, run_study

        keep_freed_memory()  # a task's own process, as the jaxalign command's
        enable_compilation_cache()  # tasks on one node (or a shared cache folder) compile once
        t0 = time.perf_counter()
        job = _job_id()
        log.info("task %d (job %s) on %s, pid %d: working on %s", task, job, host_tag(), os.getpid(), self.out)
        summary = run_study(self.cfg, self.out, progress=False, lease_seconds=self.lease_seconds, stages=STAGES,
                            outputs=False)
        log.info("task %d: %d unit(s) computed, %d found done, in %.1f s", task, len(summary.computed),
                 len(summary.reused), time.perf_counter() - t0)
        return {"task": task, "job_id": job, "host": host_tag(), "pid": os.getpid(), "computed": summary.computed,
                "reused": summary.reused, "models_loaded": summary.models_loaded,
                "seconds": time.perf_counter() - t0,
                "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "threads_off_cpus": None if cpus is None else _threads_off(cpus)}

    def checkpoint(self, *args, **kwargs):
        log.warning("preempted or near the time limit: requeued (finished units are kept; the unit in progress "
                    "is released for any task to take over)")
        return super().checkpoint(*args, **kwargs)


def pin_process(cpus) -> None:
    """Pin every thread of this process (BLAS's pool, started when numpy was imported, included) and
    every thread it starts later to ``cpus`` (Linux)."""
    cpus = set(cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):  # a thread that has just ended
            pass
        except OSError as error:  # e.g. CPUs outside this job's cpuset: run unpinned, say so
            log.warning("could not pin this task to CPUs %s (%s): it runs on every CPU it may use",
                        sorted(cpus), error)
            return


def _threads_off(cpus) -> int:
    """How many of this process's threads may run outside ``cpus`` (0 when pinning held)."""
    cpus, n = set(cpus), 0
    for tid in os.listdir("/proc/self/task"):
        try:
            n += not os.sched_getaffinity(int(tid)) <= cpus
        except (ProcessLookupError, FileNotFoundError):
            pass
    return n


def _job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - called outside a submitit job (tests, debugging)
        return "-"


def _log_to_stderr() -> None:
    """The runner's log lines, with time and pid, into the task's stderr log file."""
    logger = logging.getLogger("jaxalign")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_jaxalign_worker", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s pid %(process)d %(levelname)s %(message)s"))
        handler._jaxalign_worker = True
        logger.addHandler(handler)
