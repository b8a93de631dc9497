"""The persistent compilation cache: where it goes, how it is turned off, that a later process reuses it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxalign import _compile_cache

PROGRAM = textwrap.dedent(
    """
    import sys
    import jaxalign, jax, jax.numpy as jnp, numpy as np
    folder = jaxalign.enable_compilation_cache(min_compile_secs=0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((96, 80)), jnp.float32)
    y = jax.jit(lambda a: jnp.tanh(a @ a.T).sum(axis=0) * 3.0)(x)
    print(folder, float(y.sum()))
    """
)


def _python(code, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (_compile_cache.ENV, "JAX_COMPILATION_CACHE_DIR")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_second_process_loads_instead_of_compiling(tmp_path):
    cache = tmp_path / "xla"
    folder, total = _python(PROGRAM, {_compile_cache.ENV: str(cache)}, tmp_path)
    assert Path(folder) == cache
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "nothing was written to the cache"
    folder2, total2 = _python(PROGRAM, {_compile_cache.ENV: str(cache)}, tmp_path)
    assert total2 == total  # the same program, the same answer
    assert sorted(p.name for p in cache.iterdir()) == entries  # reused: no new entries


def test_off_and_user_choice_and_default_location(tmp_path, monkeypatch):
    for off in ("off", "0", "", "None"):
        monkeypatch.setenv(_compile_cache.ENV, off)
        assert _compile_cache.default_cache_dir() is None
    monkeypatch.delenv(_compile_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert _compile_cache.default_cache_dir() == tmp_path / "c" / "jaxalign" / "xla"
    # off: nothing is set; the user's own JAX setting: kept
    (folder,) = _python("import jaxalign, jax; "
                        "print(jaxalign.enable_compilation_cache() or jax.config.jax_compilation_cache_dir)",
                        {_compile_cache.ENV: "off"}, tmp_path)
    assert folder == "None"
    mine = tmp_path / "mine"
    (folder,) = _python("import jaxalign; print(jaxalign.enable_compilation_cache())",
                        {"JAX_COMPILATION_CACHE_DIR": str(mine), _compile_cache.ENV: str(tmp_path / "other")},
                        tmp_path)
    assert Path(folder) == mine and not (tmp_path / "other").exists()


def test_not_by_default_on_cpu(tmp_path):
    """On CPU the cache is on only when asked for: jaxlib's CPU loader logs a
    scary error for every cached program it reads (see _compile_cache)."""
    code = "import jaxalign; print(jaxalign.enable_compilation_cache())"
    env = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    assert _python(code, env, tmp_path) == ["None"]
    assert not (tmp_path / "c").exists()
    asked = tmp_path / "asked"
    assert _python(code, {**env, _compile_cache.ENV: str(asked)}, tmp_path) == [str(asked)]
    code_path = f"import jaxalign; print(jaxalign.enable_compilation_cache({str(asked / 'p')!r}))"
    assert _python(code_path, env, tmp_path) == [str(asked / "p")]


def test_unusable_folder_warns_and_runs_without(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = ("import warnings, jaxalign\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    print(jaxalign.enable_compilation_cache(), any('no compilation cache' in str(x.message) for x in w))")
    assert _python(code, {_compile_cache.ENV: str(blocker / "xla")}, tmp_path) == ["None", "True"]


def test_command_line_uses_the_cache(tmp_path):
    """``jaxalign`` turns the cache on before it compiles (what gets stored depends on compile times)."""
    cache = tmp_path / "xla"
    code = ("import jax\n"
            "from jaxalign import cli\n"
            "rc = cli.main(['demo', '--samples', '300', '--features', '16', '--targets', '200'])\n"
            "print(rc, jax.config.jax_compilation_cache_dir)")  # after the demo's table
    assert _python(code, {_compile_cache.ENV: str(cache)}, tmp_path)[-2:] == ["0", str(cache)]
    assert cache.is_dir()
    assert _python(code, {_compile_cache.ENV: "off"}, tmp_path)[-2:] == ["0", "None"]


def test_test_session_caches_in_a_folder_of_its_own():
    folder = os.environ.get(_compile_cache.ENV)  # tests/conftest.py: a folder of this session, removed at exit
    assert folder and "jaxalign-test-xla-" in folder
