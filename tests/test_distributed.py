"""jax.distributed: one ridge fit over several real processes on 127.0.0.1.

Each test starts real Python processes (``tests/_distributed_worker.py``)
that join through ``jaxalign.distributed.initialize``; nothing is mocked.
The answers must equal a single-process fit in this process, and faults (a
dead process, an unreachable coordinator, mismatched versions) must end in
a clear error within a timeout, never a hang.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _subprocess import fast_compile_env
from jaxalign.ridge import ContiguousKFold, RidgeCV, nested_cv, ridge_cv_moments

WORKER = Path(__file__).with_name("_distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode, n, data, tmp, devices_per_process=1, timeout=240):
    port = _free_port()
    env = fast_compile_env()  # tiny problems: the workers' time is compiling
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    procs, outs = [], []
    for pid in range(n):
        out = tmp / f"out{pid}.npz"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(pid), str(n), str(port), str(data), str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs, codes = [], []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=timeout)
            logs.append(text)
            codes.append(p.returncode)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return codes, logs, outs


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    rng = np.random.default_rng(20261202)
    n, p, T = 120, 12, 45  # 45 targets: not a multiple of any device count here
    X = rng.standard_normal((n, p))
    W = rng.standard_normal((p, T)) * rng.uniform(0.05, 2.0, T)
    Y = X @ W + rng.standard_normal((n, T)) * rng.uniform(0.5, 3.0, T) + 7.0
    XL = np.stack([X, X[:, ::-1] + 0.3 * rng.standard_normal((n, p))]).astype(np.float32)
    alphas = np.logspace(-2, 4, 7)
    path = tmp_path_factory.mktemp("dist") / "data.npz"
    np.savez(path, X=X.astype(np.float32), Y=Y.astype(np.float32), XL=XL, alphas=alphas, batch=16)
    ref = RidgeCV(alphas=alphas, cv=5, fit_intercept=True, batch_size=16).fit(
        X.astype(np.float32), Y.astype(np.float32))
    nested = nested_cv(XL, Y.astype(np.float32), alphas, outer_cv=3, inner_cv=3)
    mom = ridge_cv_moments(X.astype(np.float32), Y.astype(np.float32), alphas, ContiguousKFold(5, gap=3),
                           fit_intercept=True)
    return path, ref, nested, mom


@pytest.mark.parametrize("n_proc, per_process, mode", [(2, 2, "fit+nested"), (4, 1, "fit")])
def test_fit_over_processes_equals_one_process(problem, tmp_path, n_proc, per_process, mode):
    data, ref, nested, mom = problem
    codes, logs, outs = _launch(mode, n_proc, data, tmp_path, per_process)
    assert codes == [0] * n_proc, "\n".join(logs)
    for out in outs:  # every process holds every target's answer
        got = np.load(out)
        assert int(got["n_devices"]) == n_proc * per_process
        assert int(got["n_local"]) == per_process
        np.testing.assert_array_equal(got["best_alphas"], ref.best_alphas_)
        np.testing.assert_allclose(got["coef"], ref.coef_, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got["intercept"], ref.intercept_, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got["cv_scores"], ref.cv_scores_, rtol=1e-5, atol=1e-6)
        # samples sharded over processes (each held only its rows): the one-process moments answer
        np.testing.assert_array_equal(got["mom_alpha"], mom.best_alphas)
        np.testing.assert_allclose(got["mom_cv"], mom.cv_scores, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["mom_coef"], mom.coef, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["mom_icpt"], mom.intercept, rtol=1e-9, atol=1e-9)
        if mode == "fit":
            continue
        np.testing.assert_allclose(got["nested_scores"], nested.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["nested_pred"], nested.predictions, rtol=1e-4, atol=1e-5)


def test_a_dead_process_fails_the_run_instead_of_hanging(problem, tmp_path):
    data = problem[0]
    codes, logs, _ = _launch("die", 2, data, tmp_path, timeout=120)
    assert codes[1] == 3
    assert codes[0] != 0, logs[0]  # failed loudly, within the timeout above
    assert "Connection closed by peer" in logs[0] or "heartbeat" in logs[0], logs[0][-3000:]


def test_unreachable_coordinator_is_a_clear_error(problem, tmp_path):
    data = problem[0]
    # process 1 of 2 alone: nobody serves the coordinator's port
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, str(WORKER), "unreachable", "1", "2", str(port), str(data),
                        str(tmp_path / "o.npz")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert f"127.0.0.1:{port}" in r.stderr and "within 4 s" in r.stderr, r.stderr[-2000:]


def test_mismatched_versions_are_refused(problem, tmp_path):
    data = problem[0]
    codes, logs, _ = _launch("versions", 2, data, tmp_path, timeout=120)
    assert codes[0] != 0 and codes[1] != 0
    for text in logs:
        assert "different versions" in text and "0.0.0+other" in text, text[-2000:]


def test_initialize_checks_its_arguments():
    from jaxalign import distributed

    with pytest.raises(ValueError, match="coordinator_address must be 'host:port'"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match="process_id must be in"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="timeout must be >= 1"):
        distributed.initialize("127.0.0.1:1234", 2, 0, timeout=0)
