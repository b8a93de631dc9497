"""The private helpers of jaxalign._core, each tested where it lives.

These used to be copied across packages (ridge, stats, features, io,
timing, studies); each now has one home and one test here.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign._core import memory, validation


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("value", [0, 5, np.int64(7), np.int32(2)])
def test_check_int_returns_python_ints(value):
    out = validation.check_int(value, "n", 0)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None, np.float64(2)])
def test_check_int_refuses_non_integers_and_bools(value):
    with pytest.raises(ValueError, match=r"n must be an integer >= 0, got"):
        validation.check_int(value, "n", 0)


def test_check_int_minimum_named():
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 2, got 1\."):
        validation.check_int(1, "n_splits", 2)


def test_as_float_array_dtypes_and_dims():
    assert validation.as_float_array([[1, 2]], "X", (2,)).dtype == np.float32
    assert validation.as_float_array(np.ones((2, 2), bool), "X", (2,)).dtype == np.float32
    x64 = np.ones((3, 2))
    assert validation.as_float_array(x64, "X", (2,)) is x64  # float64 kept, not copied
    with pytest.raises(ValueError, match=r"X must be 1-D or 2-D, got shape \(1, 1, 1\)"):
        validation.as_float_array(np.ones((1, 1, 1)), "X", (1, 2))
    with pytest.raises(TypeError, match="X must be numeric"):
        validation.as_float_array(np.array(["a"]), "X", (1,))


def test_check_finite_counts_and_locates():
    validation.check_finite(np.ones(3), "Y")
    bad = np.ones((2, 3))
    bad[1, 2] = np.nan
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match=r"Y contains 2 non-finite value\(s\) \(NaN\), first at index \[0, 1\]"):
        validation.check_finite(bad, "Y")


# --------------------------------------------------------------------- memory


def test_parse_bytes_units_are_binary_unless_decimal_named():
    assert memory.parse_bytes("4G") == memory.parse_bytes("4GiB") == 4 * 2**30
    assert memory.parse_bytes("4GB") == 4 * 10**9
    assert memory.parse_bytes(" 1.5 m ") == int(1.5 * 2**20)
    assert memory.parse_bytes(1024) == 1024
    for bad in ("lots", "4 parsecs", 0, "-1G"):
        with pytest.raises(ValueError):
            memory.parse_bytes(bad)


def test_parse_bytes_is_the_public_one():
    import jaxalign.ridge
    from jaxalign.ridge import _engine

    assert jaxalign.ridge.parse_bytes is memory.parse_bytes is _engine.parse_bytes


def test_default_memory_budget_cpu_is_capped():
    import jax

    budget = memory.default_memory_budget(jax.devices("cpu"))
    assert 0 < budget <= 8 * 2**30


def test_target_batch_size_fits_the_budget_and_the_devices():
    assert memory.target_batch_size(1000, 100, 10**9) == 1000  # all at once
    size = memory.target_batch_size(10_000, 1000, 1000 * 300, n_devices=2)
    assert size % 2 == 0 and size <= 300 * 2
    with pytest.raises(MemoryError, match="raise memory_budget"):
        memory.target_batch_size(10, 1000, 10)


# ---------------------------------------------------------------------- files


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    from jaxalign._core import files

    target = tmp_path / "results.json"
    files.atomic_write_text(target, "first")
    files.atomic_write(target, lambda f: f.write(b"second"))
    assert target.read_text() == "second"

    def broken(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, broken)
    assert target.read_text() == "second"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary left


def test_atomic_write_names_its_temporaries_for_remove_orphans(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from jaxalign._core import files

    seen = []
    real = files.tempfile.mkstemp

    def spy(*a, **k):
        fd, name = real(*a, **k)
        seen.append(os.path.basename(name))
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", spy)
    files.atomic_write_text(tmp_path / "a.txt", "x")
    m = files.TMP_NAME.match(seen[0])
    assert m and m["host"] == files.host_tag() and m["pid"] == str(os.getpid())

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".a.txt.{files.host_tag()}-{dead.pid}.zz.tmp"
    live = tmp_path / f".a.txt.{files.host_tag()}-{os.getpid()}.zz.tmp"
    for f in (orphan, live):
        f.write_bytes(b"partial")
    assert files.remove_orphans(tmp_path) == [orphan]
    assert live.exists() and not orphan.exists()


def test_writable_dir_creates_and_names_the_problem(tmp_path):
    from jaxalign._core import files

    assert files.writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="out .*file exists and is not a directory"):
        files.writable_dir(tmp_path / "file", "out")
    with pytest.raises(NotADirectoryError, match="a parent is a file"):
        files.writable_dir(tmp_path / "file" / "sub", "out")
