"""The private helpers of jaxalign._core, each tested where it lives.

These used to be copied across packages (ridge, stats, features, io,
timing, studies); each now has one home and one test here.
"""

from __future__ import annotations

import os
import subprocess
import sys

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
    k = 4 * np.log2(budget)  # on the 2^(k/4) grid: free memory moving a little leaves it unchanged
    assert abs(k - round(k)) < 1e-6


def test_target_batch_size_fits_the_budget_and_the_devices():
    assert memory.target_batch_size(1000, 100, 10**9) == 1000  # all at once
    size = memory.target_batch_size(10_000, 1000, 1000 * 300, n_devices=2)
    assert size % 2 == 0 and size <= 300 * 2
    with pytest.raises(MemoryError, match="raise memory_budget"):
        memory.target_batch_size(10, 1000, 10)
    # a budget a few % off gives the same batch: another shape would be another XLA compilation
    # (it used to follow the budget to the byte whenever the rounded-up batch did not fit)
    assert {memory.target_batch_size(6000, 10**6, b * 10**6) for b in range(1540, 2048, 7)} == {1536}
    # all the targets fit: one batch of them, not two rounded ones
    assert memory.target_batch_size(1000, 10**6, 1000 * 10**6) == 1000
    assert memory.target_batch_size(129, 10**6, 200 * 10**6) == 129
    rng = np.random.default_rng(0)
    for _ in range(500):  # always within the budget, a multiple of the devices, enough batches
        T, bpt, nd = int(rng.integers(1, 50_000)), int(rng.integers(1, 10**6)), int(rng.choice([1, 2, 8]))
        budget = int(rng.integers(bpt, 10**10))
        size = memory.target_batch_size(T, bpt, budget, n_devices=nd)
        assert size % nd == 0 and size <= max(budget // bpt * nd, nd) and size >= min(T, nd), (T, bpt, budget, nd)
        assert size <= max(16384 * nd, nd)


# ---------------------------------------------------------------------- files


_RETAINED = """
import sys
import numpy as np, psutil
from jaxalign._core.memory import keep_freed_memory
import jaxalign.cli as cli
if sys.argv[1] == "entry":  # the jaxalign command's process: --version, then exits
    sys.argv = ["jaxalign", "--version"]
    try:
        cli.entry()
    except SystemExit:
        pass
kept = keep_freed_memory() if sys.argv[1] == "call" else None
rss = psutil.Process().memory_info().rss
a = np.ones(16_000_000)  # 122 MiB, above glibc's largest mmap threshold (32 MiB)
del a
print(kept, (psutil.Process().memory_info().rss - rss) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings (Linux)")
def test_keep_freed_memory_keeps_a_freed_block_for_reuse():
    """After keep_freed_memory() a freed 122 MiB block stays in the process (the next allocation
    reuses it instead of faulting in fresh pages); by default glibc unmaps it at once. The jaxalign
    command's entry point sets it; JAXALIGN_KEEP_FREED_MEMORY=0 turns it off."""
    def run(how, **env):
        out = subprocess.run([sys.executable, "-c", _RETAINED, how], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env}, check=True).stdout.split()
        return out[-2], float(out[-1])

    kept, mib = run("call")
    assert kept == "True" and mib > 100, mib
    kept, mib = run("none")
    assert kept == "None" and mib < 30, mib  # glibc's default: unmapped when freed
    kept, mib = run("call", JAXALIGN_KEEP_FREED_MEMORY="0")
    assert kept == "False" and mib < 30, mib
    kept, mib = run("entry")
    assert mib > 100, mib


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


# --------------------------------------------------------------------- zscore


def test_zscore_columns_float64_statistics_float32_out():
    from jaxalign._core.zscore import zscore_columns

    rng = np.random.default_rng(0)
    x = 1e6 + rng.standard_normal((50, 3))  # a large offset: float32 statistics would lose it
    z, mean, scale = zscore_columns(x, warn=False)
    ref = (x - x.mean(0)) / x.std(0)
    assert z.dtype == np.float32 and mean.shape == scale.shape == (1, 3)
    np.testing.assert_allclose(z, ref, atol=1e-6)
    # given statistics are applied, not recomputed
    z2, m2, s2 = zscore_columns(x[:10], mean, scale)
    np.testing.assert_allclose(z2, ref[:10], atol=1e-6)
    assert m2 is mean and s2 is scale


def test_zscore_columns_constant_columns_are_zeros_and_warned_once():
    import warnings

    from jaxalign._core.zscore import zscore_columns

    x = np.column_stack([np.arange(5.0), np.full(5, 3.0), 1.0 + 1e-12 * np.arange(5.0)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z, _, scale = zscore_columns(x, tol_dtype=np.float32)
    assert len(caught) == 1 and "2 columns are constant" in str(caught[0].message)
    assert np.isinf(scale[0, 1:]).all() and (z[:, 1:] == 0).all()
    # the same 1e-12 wiggle is signal at float64's tolerance (the default for float64 data)
    assert not np.isinf(zscore_columns(x[:, 2:], warn=False)[2]).any()
    # applying a constant column's statistics elsewhere also gives zeros
    z_test, _, _ = zscore_columns(x + 1.0, *zscore_columns(x, warn=False, tol_dtype=np.float32)[1:])
    assert (z_test[:, 1:] == 0).all()


def test_zscore_columns_stacks_over_leading_axes():
    from jaxalign._core.zscore import zscore_columns

    x = np.random.default_rng(1).standard_normal((2, 20, 4))
    z, mean, _ = zscore_columns(x)
    assert mean.shape == (2, 1, 4)
    np.testing.assert_allclose(z[1], zscore_columns(x[1])[0])


# ----------------------------------------------------------------------- runs


def test_run_segments_and_trim_mask():
    from jaxalign._core.runs import run_segments, trim_mask

    starts, ends = run_segments([1, 1, 2, 2, 2, 1], 6)
    assert starts.tolist() == [0, 2, 5] and ends.tolist() == [2, 5, 6]
    assert [a.tolist() for a in run_segments(None, 4)] == [[0], [4]]
    assert trim_mask([0] * 5 + [1] * 5, 1, 2).tolist() == [0, 1, 1, 0, 0, 0, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="nothing would be left"):
        trim_mask([0, 0, 0], 2, 1)
    with pytest.raises(ValueError, match="runs must be 1-D with one label per sample"):
        run_segments([1, 2], 3)


def test_last_scan_before_is_strict():
    from jaxalign._core.runs import last_scan_before

    scans = np.array([0.0, 2.0, 4.0])
    assert last_scan_before(np.array([-1.0, 0.0, 0.5, 2.0, 9.0]), scans).tolist() == [-1, -1, 0, 0, 2]


def test_timing_and_io_share_the_run_helpers():
    import jaxalign.timing as timing
    from jaxalign._core import runs

    assert timing.trim_mask is runs.trim_mask and timing.run_segments is runs.run_segments


# ------------------------------------------- model facts (moved to jaxalign.lm)


def test_lm_answers_causal_max_length_and_shape_from_the_architecture():
    from flax import nnx

    import jaxalign.lm as lm
    from jaxalign.lm import bert, gpt2

    causal = gpt2.Model(gpt2.Config(vocab_size=32, n_positions=64, n_embd=16, n_layer=2, n_head=2),
                        rngs=nnx.Rngs(0))
    encoder = bert.Model(bert.Config(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=40), rngs=nnx.Rngs(0))
    assert lm.is_causal(causal) and not lm.is_causal(encoder)
    assert lm.max_length(causal) == 64 and lm.max_length(encoder) == 40
    facts = lm.model_facts(causal)
    assert (facts.n_states, facts.dim, facts.has_logits) == (3, 16, True)
    # every registered architecture states its mask kind
    import importlib

    for module in lm.MODEL_TYPES.values():
        assert isinstance(importlib.import_module(module).Config.causal, bool)


def test_lm_is_causal_probes_foreign_models():
    import jax.numpy as jnp

    import jaxalign.lm as lm
    from jaxalign.lm import LMOutput

    class Flagged:
        causal = False

    assert lm.is_causal(Flagged()) is False
    assert lm.max_length(Flagged()) is None

    class CumSum:  # a foreign "model": each position sums the ones before it (causal)
        def __call__(self, ids, mask=None):
            h = jnp.cumsum(ids.astype(jnp.float32), axis=1)[None, ..., None]
            return LMOutput(hidden_states=jnp.concatenate([h, h]), logits=None)

    from unittest import mock

    with mock.patch("jaxalign.lm._load.hidden_states", lambda m, ids: m(jnp.asarray(ids)).hidden_states):
        assert lm.is_causal(CumSum()) is True


def test_seed_streams_are_named_independent_and_stable():
    """Named streams: reproducible, independent of each other and of
    neighbouring seeds (``seed + 1`` offsets made seed 0's second stream
    seed 1's first)."""
    from jaxalign._core import seeds

    a = seeds.rng(0, "x").standard_normal(1000)
    np.testing.assert_array_equal(a, seeds.rng(0, "x").standard_normal(1000))
    others = [seeds.rng(0, "y"), seeds.rng(1, "x"), seeds.rng(1, "y"), seeds.rng(0, "x", "y")]
    for g in others:
        b = g.standard_normal(1000)
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.15 and not np.array_equal(a, b)
    # pinned: SeedSequence output is part of numpy's stability promise
    assert seeds.stream_seed(0, "alice random control") == 2938010920
    with pytest.raises(ValueError, match="stream name"):
        seeds.rng(0, "")
    with pytest.raises(ValueError, match="seed"):
        seeds.rng(-1, "x")
