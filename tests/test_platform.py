"""Would catch the jaxlib 0.10.2 CPU miscompilation (jax issue 39103).

It shows only at realistic sizes: a jitted per-target Pearson reduction over
an (11, 600, T) float32 array with T >= 3000, and only when the predictions'
correlations differ across the leading axis (scaled copies hide it).
"""

import importlib.metadata as md
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxalign  # noqa: F401  (applies the guard)
from jaxalign._platform import BROKEN_JAXLIB, _FIX_FLAG


def test_large_jitted_reduction_is_correct():
    rng = np.random.default_rng(0)
    A, n, T = 11, 600, 4000
    y = rng.standard_normal((n, T)).astype(np.float32)
    mix = np.linspace(0.05, 0.95, A, dtype=np.float32)[:, None, None]
    pred = mix * y[None] + (1 - mix) * rng.standard_normal((A, n, T)).astype(np.float32)

    @jax.jit
    def pearson_all(y, pred):
        yc = y - y.mean(0)
        pc = pred - pred.mean(1, keepdims=True)
        return (pc * yc[None]).sum(1) / jnp.sqrt((pc * pc).sum(1) * (yc * yc).sum(0)[None])

    got = np.asarray(pearson_all(y, pred))
    y64, p64 = y.astype(np.float64), pred.astype(np.float64)
    yc, pc = y64 - y64.mean(0), p64 - p64.mean(1, keepdims=True)
    want = (pc * yc).sum(1) / np.sqrt((pc**2).sum(1) * (yc**2).sum(0))
    assert np.ptp(want.mean(1)) > 0.5  # correlations really differ across the axis
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_guard_sets_flag_only_for_the_broken_release():
    version = md.version("jaxlib")
    flags = os.environ.get("XLA_FLAGS", "")
    if version in BROKEN_JAXLIB:
        assert _FIX_FLAG in flags
    # in a fresh process, the guard never adds the flag for other releases
    code = "import os, jaxalign; print(os.environ.get('XLA_FLAGS', ''))"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert (_FIX_FLAG in out) == (version in BROKEN_JAXLIB)


def test_guard_logic(monkeypatch):
    from jaxalign import _platform

    monkeypatch.setattr(_platform, "_jaxlib_version", lambda: "0.10.2")
    monkeypatch.setenv("XLA_FLAGS", "--foo")
    # the backend of this test process is already running: too late, warn
    jax.devices()
    import pytest

    with pytest.warns(RuntimeWarning, match="39103"):
        assert _platform.guard_broken_jaxlib() == "too-late"
    monkeypatch.setenv("XLA_FLAGS", "--foo " + _FIX_FLAG)
    assert _platform.guard_broken_jaxlib() == "flag-present"
    monkeypatch.setattr(_platform, "_jaxlib_version", lambda: "0.10.1")
    assert _platform.guard_broken_jaxlib() == "ok"


def test_guard_sets_flag_before_backend_starts():
    code = (
        "import os, warnings; warnings.simplefilter('ignore')\n"
        "import jaxalign._platform as p\n"
        "p._jaxlib_version = lambda: '0.10.2'\n"
        "print(p.guard_broken_jaxlib(), os.environ['XLA_FLAGS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["flag-set", _FIX_FLAG]
