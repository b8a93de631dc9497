"""Cluster sweeps (``jaxalign.studies.launch``, ``jaxalign run --launcher``): workers sharing one store.

submitit's local executor starts real subprocesses (no SLURM needed): the
synthetic Alice study with three tiny random GPT-2 checkpoints (3 fit units,
3 group units) is run by a job array of workers, one of which is killed
with SIGKILL while it holds a unit; every unit must be computed exactly
once by a live worker and the results must equal a single-process run.
The SLURM path is checked up to sbatch (a stand-in sbatch records the
script submitit writes); bad input is refused before any work.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _subprocess import fast_compile_env
from test_study_runner import _synthetic_config, _tiny_gpt2

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The synthetic Alice study (3 tiny models, 1 layer, 2 x 2 folds) and a compile cache for its processes."""
    root = tmp_path_factory.mktemp("launcher")
    models = [_tiny_gpt2(root / f"gpt2_{seed}", seed) for seed in (0, 1, 2)]
    path = _synthetic_config(root, models, "study.toml", n_subjects=4)
    # every process of these tests (the runs, the workers they start) shares compiled programs
    env = fast_compile_env(JAXALIGN_COMPILE_CACHE=str(root / "xla"),
                           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return path, env


def _cli(args, env):
    return subprocess.Popen([sys.executable, "-m", "jaxalign.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _table(out: Path):
    from jaxalign.studies import load_results

    t = load_results(out / "store").table
    cols = ["model", "revision", "layer", "subject", "target"]
    return t.sort_values(cols).reset_index(drop=True)


def _units(out: Path) -> dict:
    """key -> provenance of every finished unit."""
    return {d.name: json.loads((d / "unit.json").read_text())["provenance"]
            for d in (out / "store" / "units").iterdir() if (d / "DONE").is_file()}


def _finished_by_pid(logs: Path) -> dict:
    """unit key prefix -> the pids whose log says they finished computing it (from every task's log)."""
    done: dict = {}
    for f in logs.glob("*_log.err"):
        for m in re.finditer(r"pid (\d+) INFO unit (\w+) \(.*\) done in", f.read_text()):
            done.setdefault(m[2], []).append(int(m[1]))
    return done


def test_job_array_survives_a_killed_worker_and_equals_one_process(study, tmp_path):
    """``jaxalign run --launcher local --jobs 3``: a worker SIGKILLed while it holds a unit loses that
    unit only; another worker takes it over; every unit is computed exactly once by a live worker; the
    results equal a single-process run of the same study."""
    cfg, env = study
    out = tmp_path / "array"
    proc = _cli(["run", cfg, "--out", out, "--launcher", "local", "--jobs", "3", "--lease", "0.05", "--quiet"], env)
    claims = out / "store" / "claims"
    killed, key = None, None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        for f in claims.glob("*.claim") if claims.is_dir() else []:
            try:
                info = json.loads(f.read_text())
            except (OSError, ValueError):  # just released, or being replaced
                continue
            if not (out / "store" / "units" / info["key"] / "DONE").exists():
                os.kill(info["pid"], signal.SIGKILL)  # a worker mid-unit
                killed, key = info["pid"], info["key"]
                break
        time.sleep(0.05)
    assert killed is not None, f"no worker claimed a unit: {proc.communicate()}"
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert "failed" in stdout and re.search(r"task \d \(job \d+, .* pid \d+\): \d unit\(s\) computed", stdout)

    units = _units(out)
    summary = json.loads((out / "results.json").read_text())
    assert len(units) == 6 and sorted(summary["units"]["computed"]) == sorted(units)  # 3 fits + 3 group units
    tasks = summary["launcher"]["tasks"]
    assert len(tasks) == 3 and [t["state"] for t in tasks].count("failed") == 1
    live = {t["pid"] for t in tasks if t["state"] == "done"}
    assert killed not in live and units[key]["pid"] in live  # the killed worker's unit, redone by a live one
    by_tasks = [k for t in tasks if t["state"] == "done" for k in t["computed"]]
    assert len(by_tasks) == len(set(by_tasks))  # no unit computed twice by the survivors ...
    finished = _finished_by_pid(out / "logs")  # ... nor by anyone: the task logs say who finished which fit
    assert len(finished) == 3 and key[:12] in finished
    for k, prov in units.items():
        if k[:12] in finished:
            assert finished[k[:12]] == [prov["pid"]], (k, finished[k[:12]], prov)

    ref = tmp_path / "one"
    single = _cli(["run", cfg, "--out", ref, "--quiet"], env)
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err
    a, b = _table(out), _table(ref)
    assert len(a) == 4 * 3 * 6 + 3 * 6  # 4 subjects x 3 models x 6 ROIs, + group rows
    assert a.drop(columns="key").columns.tolist() == b.drop(columns="key").columns.tolist()
    for col in ("model", "layer", "subject", "target", "key"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("score", "p", "p_fdr", "sem"):
        np.testing.assert_array_equal(a[col].to_numpy(float), b[col].to_numpy(float), err_msg=col)
    assert (out / "results.csv").read_text() == (ref / "results.csv").read_text()

    # each task was pinned to its own share of the CPUs (3 tasks: an even share, or one CPU each in turn)
    usable = sorted(os.sched_getaffinity(0))
    for t in tasks:
        if t["state"] == "done":
            share = max(1, len(usable) // 3)
            expected = (usable[t["task"] * share:(t["task"] + 1) * share] if len(usable) >= 3
                        else [usable[t["task"] % len(usable)]])
            assert t["cpus"] == expected, (t, usable)

    # resubmitting a finished study submits nothing and computes nothing
    from jaxalign.studies import launch

    again = launch(cfg, out=out, launcher="local", jobs=3, progress=False)
    assert again.computed == [] and again.tasks == [] and sorted(again.reused) == sorted(units)
    assert _units(out) == units


# ------------------------------------------------------------------ SLURM


def _arrays_study(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((40, 3)))
    np.save(tmp_path / "Y.npy", rng.standard_normal((40, 2)))
    path = tmp_path / "arrays.toml"
    path.write_text('[dataset]\nkind = "arrays"\nfeatures = "X.npy"\ntargets = "Y.npy"\n'
                    '[stats]\ntest = "none"\n[output]\ndir = "out"\nformats = ["csv"]\n')
    return path


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch and srun stand-ins on PATH: sbatch keeps the script it is given and answers a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def test_slurm_options_reach_the_sbatch_script(tmp_path, fake_slurm):
    """One job array of N tasks, all running at once, with the resources asked for (submitit writes it)."""
    from jaxalign.studies import launcher
    from jaxalign.studies._worker import StudyWorker

    opts = launcher._check_options("slurm", 3, 60.0, "gpu", 1, 8, 30, 16, {"account": "lab", "qos": "high"})
    executor = launcher._executor(opts, tmp_path / "logs", 3)
    with executor.batch():
        jobs = [executor.submit(StudyWorker(None, tmp_path, 60.0), i) for i in range(3)]
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = fake_slurm.read_text()
    for flag in ("--array=0-2%3", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=30",
                 "--mem=16GB", "--account=lab", "--qos=high", "--job-name=jaxalign"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert re.search(r"--signal=USR2@\d+", script)  # submitit's warning before the time limit: requeue
    assert re.search(r"logs/%A_%a_0_log\.err", script)


# ------------------------------------------------------------------ bad input


def test_bad_launcher_options_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from jaxalign.cli import main
    from jaxalign.studies import launch

    cfg = _arrays_study(tmp_path)
    out = tmp_path / "o"

    def refused(argv, *expected):
        assert main(["run", str(cfg), "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        for text in expected:
            assert text in err, (argv, err)

    with pytest.raises(SystemExit) as exit_:  # argparse names the flag and its choices
        main(["run", str(cfg), "--launcher", "sge"])
    assert exit_.value.code == 2
    assert "--launcher: invalid choice: 'sge' (choose from" in capsys.readouterr().err
    refused(["--launcher", "local", "--jobs", "0"], "jobs (--jobs) must be an integer >= 1, got 0")
    refused(["--jobs", "3"], "jobs (--jobs) = 3 needs launcher (--launcher) 'local' or 'slurm'")
    refused(["--launcher", "local", "--partition", "gpu"], "partition (--partition): for launcher (--launcher) "
                                                           "'slurm' only")
    refused(["--launcher", "local", "--lease", "0"], "--lease must be a positive number of minutes")
    refused(["--launcher", "local", "--cpus-per-job", "-1"], "cpus_per_job (--cpus-per-job) must be an integer "
                                                             ">= 0, got -1")
    refused(["--launcher", "slurm", "--cpus-per-job", "0"], "cpus_per_job (--cpus-per-job) must be an integer "
                                                            ">= 1, got 0")
    n_cpus = len(os.sched_getaffinity(0))
    refused(["--launcher", "local", "--jobs", "2", "--cpus-per-job", str(n_cpus)],
            f"cpus_per_job (--cpus-per-job) = {n_cpus} for 2 local job(s) needs {2 * n_cpus} CPUs, but this "
            f"process may use {n_cpus} (")
    refused(["--launcher", "local", "--slurm-option", "account"], "--slurm-option 'account': expected KEY=VALUE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch here
    refused(["--launcher", "slurm", "--jobs", "4"], "'slurm' needs SLURM's sbatch and srun on PATH")
    assert not out.exists()  # nothing created, nothing submitted

    with pytest.raises(ValueError, match=r"launcher \(--launcher\) must be one of none, local, slurm; got 'pbs'"):
        launch(cfg, out, launcher="pbs")
    with pytest.raises(ValueError, match=r"jobs \(--jobs\) must be an integer >= 1, got -2"):
        launch(cfg, out, launcher="local", jobs=-2)
    with pytest.raises(ValueError, match=r"gpus_per_job \(--gpus-per-job\).*'local' or 'slurm', not 'none'"):
        launch(cfg, out, launcher="none", gpus_per_job=1)
    with pytest.raises(ValueError, match=r"cpus_per_job \(--cpus-per-job\): for launcher .*'local' or 'slurm'"):
        launch(cfg, out, launcher="none", cpus_per_job=1)
    assert not out.exists()


def test_unknown_slurm_options_name_the_allowed_ones(tmp_path, fake_slurm, capsys):
    from jaxalign.cli import main
    from jaxalign.studies.launcher import slurm_option_names

    cfg = _arrays_study(tmp_path)
    assert main(["run", str(cfg), "--launcher", "slurm", "--slurm-option", "acount=lab"]) == 2
    err = capsys.readouterr().err
    assert "slurm option 'acount' (--slurm-option) is unknown (allowed: " in err and "account, " in err
    assert {"account", "qos", "constraint", "exclude"} <= set(slurm_option_names())
    assert main(["run", str(cfg), "--launcher", "slurm", "--slurm-option", "partition=gpu"]) == 2
    assert "slurm option 'partition' (--slurm-option): set it with partition (--partition)" in capsys.readouterr().err
    assert not fake_slurm.exists()


def test_local_tasks_get_their_own_cpus(monkeypatch, caplog):
    """How the CPUs are shared among local tasks: an even share by default, ``cpus_per_job`` each when
    given, one each in turn with more tasks than CPUs, nothing pinned with 0 or on another launcher;
    BLAS/OpenMP thread counts set for the tasks' processes (unless the user set them) and put back."""
    from jaxalign.studies import launcher as L

    monkeypatch.setattr(L, "_usable_cpus", lambda: [0, 1, 2, 3, 8, 9, 10, 11])
    opts = {"launcher": "local", "cpus_per_job": None}
    assert L._local_cpus(opts, 1) == [(0, 1, 2, 3, 8, 9, 10, 11)]
    assert L._local_cpus(opts, 3) == [(0, 1), (2, 3), (8, 9)]
    assert L._local_cpus(opts, 8) == [(c,) for c in (0, 1, 2, 3, 8, 9, 10, 11)]
    with caplog.at_level("WARNING", logger="jaxalign.studies.launcher"):
        assert L._local_cpus(opts, 10) == [(c,) for c in (0, 1, 2, 3, 8, 9, 10, 11, 0, 1)]
    assert "10 local tasks on 8 CPUs: tasks share CPUs" in caplog.text
    assert L._local_cpus(opts | {"cpus_per_job": 3}, 2) == [(0, 1, 2), (3, 8, 9)]
    assert L._local_cpus(opts | {"cpus_per_job": 0}, 2) is None
    assert L._local_cpus({"launcher": "slurm", "cpus_per_job": 4}, 2) is None
    assert L._cpu_ranges([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    with pytest.raises(ValueError, match=r"= 3 for 3 local job\(s\) needs 9 CPUs, but this process may use 8 "
                                         r"\(0-3,8-11\)"):
        L._check_options("local", 3, 60.0, None, None, 3, None, None, None)

    monkeypatch.setenv("MKL_NUM_THREADS", "5")  # the user's own setting is kept
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with L._thread_environment([(0, 1), (2, 3)]):
        assert (os.environ["OPENBLAS_NUM_THREADS"], os.environ["OMP_NUM_THREADS"]) == ("2", "2")
        assert os.environ["MKL_NUM_THREADS"] == "5"
    assert "OPENBLAS_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ
    with L._thread_environment(None):
        assert "OPENBLAS_NUM_THREADS" not in os.environ


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning is seen only with 2 or more CPUs")
def test_a_local_task_runs_on_the_cpus_it_was_given(tmp_path):
    """A real local task (a subprocess) pinned to one CPU of several: every thread of it, the BLAS threads
    numpy started before the task ran included, runs on that CPU only; its summary records it."""
    from jaxalign.studies import launch

    cfg = _arrays_study(tmp_path)
    usable = sorted(os.sched_getaffinity(0))
    summary = launch(cfg, tmp_path / "o", launcher="local", jobs=1, cpus_per_job=1, progress=False)
    (task,) = summary.tasks
    assert task["state"] == "done" and task["cpus"] == [usable[0]], task
    assert task["threads_off_cpus"] == 0, task
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["launcher"]["cpus_per_job"] == 1 and doc["launcher"]["tasks"][0]["cpus"] == [usable[0]]


def test_a_read_only_store_is_refused_before_submitting(tmp_path, monkeypatch):
    """The store on a read-only file system (EROFS on every file created there): PermissionError naming
    the store, before any job is submitted (no submitit folder, no pickles)."""
    import tempfile

    from jaxalign.studies import launch

    cfg = _arrays_study(tmp_path)
    out = tmp_path / "o"
    store = out / "store"
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(store.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(PermissionError, match=r"results store .*store is not writable \(\[Errno 30\] Read-only"):
        launch(cfg, out, launcher="local", jobs=2, progress=False)
    assert not (out / "logs").exists()


# ------------------------------------------------------------------ claims


def test_a_kept_alive_claim_outlives_its_lease(tmp_path):
    """The heartbeat renews a short lease while the work runs; without it the claim lapses and is taken over."""
    from jaxalign.studies import ResultsStore

    store = ResultsStore(tmp_path / "store")
    with store.claim("k1", lease_seconds=1.0) as claim, claim.kept_alive(every=0.1):
        time.sleep(2.0)
        assert store.claim("k1", lease_seconds=1.0) is None  # still live: renewed 20 times
    lapsed = store.claim("k2", lease_seconds=0.3)
    time.sleep(0.5)
    taken = store.claim("k2", lease_seconds=60.0)  # expired (same pid, but the lease ran out)
    assert taken is not None and taken.token != lapsed.token
    with pytest.raises(ValueError, match="every must be a positive number of seconds"):
        with taken.kept_alive(every=0):
            pass
