"""The study results store (jaxalign.studies.store), with real processes: no mocks.

Writers are killed with SIGKILL mid-unit, two workers share one store, and
claims of dead or expired holders are taken over; the loader's table and
labelled arrays are checked against what was written.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxalign._core.files import host_tag
from jaxalign.studies import ResultsStore, load_results
from jaxalign.studies.store import ClaimLost

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and pids as on POSIX")

REPO = Path(__file__).resolve().parents[1]
ROIS = ["LATL", "RATL", "LPTL"]


def _labels(**changes):
    labels = {"model": "gpt2", "revision": "main", "layer": [0, 6, 12], "subject": "s01", "target": ROIS,
              "dataset": "alice"}
    return labels | changes


def _score(seed, shape=(3, 3)):
    return np.random.default_rng(seed).uniform(-0.2, 0.6, shape).astype(np.float32)


def _spawn(tmp_path, name, code, *args):
    """Start ``code`` in a fresh Python process (this checkout first on the path)."""
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=20.0):
    t0 = time.monotonic()
    while not Path(path).exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


# ------------------------------------------------------------- round trip


def test_write_read_round_trip_keeps_arrays_labels_meta_and_provenance(tmp_path):
    store = ResultsStore(tmp_path / "study")
    arrays = {"score": _score(0), "p": np.full((3, 3), 0.01), "n_alpha": np.arange(9, dtype=np.int32).reshape(3, 3),
              "kept": np.array([True, False, True])}
    meta = {"settings": {"encoding": {"alphas": [1.0, 10.0]}}, "seed": np.int64(7), "hash": "abc"}
    assert not store.is_done("u1")
    assert store.write_unit("u1", arrays, _labels(), meta, dims={"kept": ("target",)}) is True
    assert store.is_done("u1") and store.keys() == ["u1"]

    unit = store.read_unit("u1")
    for name, a in arrays.items():
        np.testing.assert_array_equal(unit.arrays[name], a)
        assert unit.arrays[name].dtype == a.dtype
    assert unit.dims == {"score": ("layer", "target"), "p": ("layer", "target"),
                         "n_alpha": ("layer", "target"), "kept": ("target",)}
    assert unit.labels == _labels()
    assert unit.meta == {"settings": {"encoding": {"alphas": [1.0, 10.0]}}, "seed": 7, "hash": "abc"}
    versions = unit.provenance["versions"]
    assert versions["numpy"] == np.__version__ and versions["jaxalign"] and "jax" in versions
    assert unit.provenance["pid"] == os.getpid() and unit.provenance["host"] == host_tag()
    assert unit.provenance["written"].endswith("+00:00")
    assert sorted(p.name for p in (store.units_dir / "u1").iterdir()) == [
        "DONE", "kept.npy", "n_alpha.npy", "p.npy", "score.npy", "unit.json"]

    # first writer wins: a second write is a no-op, never an overwrite
    assert store.write_unit("u1", {"score": np.zeros((3, 3))}, _labels(), {}) is False
    np.testing.assert_array_equal(store.read_unit("u1").arrays["score"], arrays["score"])
    with pytest.raises(KeyError, match="not done"):
        store.read_unit("u2")


@pytest.mark.parametrize("key", ["", "a/b", "../x", ".hidden", "a b", "x" * 201, 5])
def test_bad_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="unit key"):
        ResultsStore(tmp_path).write_unit(key, {"score": _score(0)}, _labels())


@pytest.mark.parametrize("arrays, labels, dims, match", [
    ({"score": np.zeros((3, 2))}, _labels(), None, "labels\\['target'\\] has 3"),
    ({"score": np.zeros(3)}, _labels(), None, "shape \\(3,\\) but dims \\('layer', 'target'\\)"),
    ({"p": np.zeros((3, 3))}, _labels(), None, "must include 'score'"),
    ({"score": np.zeros((3, 3))}, {k: v for k, v in _labels().items() if k != "subject"}, None, "subject"),
    ({"score": np.zeros((3, 3))}, _labels(revision=None), None, "revision"),
    ({"score": np.zeros((3, 3))}, _labels(alphas=[1, 2]), None, "only the axis labels"),
    ({"score": np.zeros((3, 3))}, _labels(target=["a", "a", "b"]), None, "unique"),
    ({"score": np.zeros((3, 3)), "w": np.zeros((3, 4))}, _labels(), {"w": ("layer", "window")}, "window"),
    ({"score": np.array([["a"] * 3] * 3)}, _labels(), None, "numbers or booleans"),
])
def test_a_unit_that_breaks_the_convention_is_refused_before_anything_is_written(
        tmp_path, arrays, labels, dims, match):
    store = ResultsStore(tmp_path)
    with pytest.raises(ValueError, match=match):
        store.write_unit("u", arrays, labels, {}, dims=dims)
    assert list(store.units_dir.iterdir()) == []


# ------------------------------------------------------ kill -9 mid-unit

WRITER = """
    import sys, time
    from pathlib import Path
    import numpy as np
    import jaxalign.studies.store as st

    root, key, pause = sys.argv[1], sys.argv[2], sys.argv[3] == "pause"
    real, written = st.atomic_write, []

    def paused(path, write):  # the real write, then (when asked) block mid-unit until killed
        out = real(path, write)
        written.append(path)
        if pause and len(written) == 3:
            Path(root, "ready").touch()
            time.sleep(600)
        return out

    st.atomic_write = paused
    arrays = {f"a{i}": np.full((2, 5, 3), i, dtype=np.float32) for i in range(8)}
    arrays["score"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    labels = {"model": "m", "revision": "main", "layer": [0, 1], "subject": "s", "target": ["x", "y", "z"]}
    dims = {f"a{i}": ("layer", "fold", "target") for i in range(8)}
    print(st.ResultsStore(root).write_unit(key, arrays, labels, {"run": sys.argv[3]}, dims=dims))
"""


def test_a_writer_killed_mid_unit_leaves_nothing_readable_and_a_rerun_completes_it(tmp_path):
    root = tmp_path / "study"
    store = ResultsStore(root)
    store.write_unit("done1", {"score": _score(1)}, _labels(), {})

    proc = _spawn(tmp_path, "writer", WRITER, root, "k1", "pause")
    _wait_for(root / "ready", proc)
    _kill(proc)

    temps = [p for p in store.units_dir.iterdir() if p.name.startswith(".")]
    assert len(temps) == 1 and temps[0].name.startswith(f".k1.{host_tag()}-{proc.pid}.")
    assert len(list(temps[0].glob("*.npy"))) == 3  # half a unit on disk...
    assert not store.is_done("k1") and store.keys() == ["done1"]  # ...never seen as one
    with pytest.raises(KeyError):
        store.read_unit("k1")
    results = load_results(root)
    assert set(results.table["key"]) == {"done1"} and len(results.table) == 9

    rerun = _spawn(tmp_path, "writer", WRITER, root, "k1", "go")
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert out.strip() == "True"
    assert not temps[0].exists()  # the new ResultsStore removed the dead writer's folder
    assert store.keys() == ["done1", "k1"]
    unit = store.read_unit("k1")
    assert unit.meta == {"run": "go"} and len(unit.arrays) == 9
    np.testing.assert_array_equal(unit.arrays["a7"], np.full((2, 5, 3), 7, dtype=np.float32))
    table = load_results(root).table
    assert sorted(table.loc[table["key"] == "k1", "score"]) == [0, 1, 2, 3, 4, 5]
    # and nothing finished is recomputed
    assert store.write_unit("done1", {"score": _score(2)}, _labels(), {}) is False


# ------------------------------------------------- two workers, one store

WORKER = """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from jaxalign.studies import ResultsStore

    root, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ResultsStore(root)
    log = os.open(os.path.join(root, "log.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    Path(root, f"ready-{name}").touch()
    while not Path(root, "go").exists():
        time.sleep(0.005)
    for i in range(n):
        key = f"unit{i:02d}"
        if store.is_done(key):
            continue
        claim = store.claim(key, lease_seconds=60)
        if claim is None:
            continue
        with claim:
            os.write(log, f"compute {key} {name}\\n".encode())
            time.sleep(0.03)  # the work
            claim.renew()
            labels = {"model": "m", "revision": "main", "layer": 0, "subject": f"s{i:02d}", "target": ["t"]}
            if store.write_unit(key, {"score": np.array([i / 100])}, labels, {"by": name}):
                os.write(log, f"write {key} {name}\\n".encode())
"""


def test_two_concurrent_workers_finish_every_unit_exactly_once(tmp_path):
    root, n = tmp_path / "study", 24
    ResultsStore(root)
    procs = {name: _spawn(tmp_path, "worker", WORKER, root, name, n) for name in ("A", "B")}
    for name, proc in procs.items():
        _wait_for(root / f"ready-{name}", proc)
    (root / "go").touch()
    for proc in procs.values():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    lines = [line.split() for line in (root / "log.txt").read_text().splitlines()]
    computed = [key for what, key, _ in lines if what == "compute"]
    written = [key for what, key, _ in lines if what == "write"]
    keys = [f"unit{i:02d}" for i in range(n)]
    assert sorted(computed) == keys and sorted(written) == keys  # each exactly once
    assert {who for *_, who in lines} == {"A", "B"}  # both really worked
    store = ResultsStore(root)
    assert store.keys() == keys
    assert list(store.claims_dir.glob("*.claim")) == []  # every claim released
    table = load_results(root).table
    np.testing.assert_allclose(table.sort_values("key")["score"], np.arange(n) / 100)


# ------------------------------------------------------------ claims

HOLDER = """
    import sys, time
    from pathlib import Path
    from jaxalign.studies import ResultsStore

    root, key, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    claim = ResultsStore(root).claim(key, lease_seconds=lease)
    assert claim is not None
    Path(root, f"held-{key}").touch()
    time.sleep(600)
"""


def test_a_live_claim_is_respected_and_a_dead_processes_claim_is_taken_over(tmp_path):
    root = tmp_path / "study"
    store = ResultsStore(root)
    holder = _spawn(tmp_path, "holder", HOLDER, root, "u", 3600)
    try:
        _wait_for(root / "held-u", holder)
        info = store.claim_info("u")
        assert info["pid"] == holder.pid and info["host"] == host_tag() and info["expires"] > time.time() + 3000
        assert store.claim("u") is None  # live: another process holds it, its lease runs
    finally:
        _kill(holder)
    claim = store.claim("u", lease_seconds=60)  # the process is gone: taken over at once
    assert claim is not None and store.claim_info("u")["pid"] == os.getpid()
    with claim:
        store.write_unit("u", {"score": _score(0)}, _labels(), {})
    assert store.claim_info("u") is None
    assert store.claim("u") is None  # done: nothing to claim


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(tmp_path):
    store = ResultsStore(tmp_path)
    old = store.claim("u", lease_seconds=0.3)
    assert old is not None
    assert store.claim("u") is None  # live, even for another claim in the same process
    old.renew()
    time.sleep(0.35)
    new = store.claim("u", lease_seconds=60)
    assert new is not None
    with pytest.raises(ClaimLost):
        old.renew()
    old.release()  # not its file any more: left alone
    assert store.claim_info("u")["token"] == new.token
    assert new.renew() > time.time() + 59
    new.release()
    assert store.claim_info("u") is None


def test_another_hosts_claim_lives_until_its_lease_ends(tmp_path):
    store = ResultsStore(tmp_path)
    claim = {"key": "u", "host": "elsewhere", "pid": 2**22 + 12345, "token": "t", "lease_seconds": 60}
    (store.claims_dir / "u.claim").write_text(json.dumps(claim | {"expires": time.time() + 60}))
    assert store.claim("u") is None  # its pid cannot be checked from here
    (store.claims_dir / "u.claim").write_text(json.dumps(claim | {"expires": time.time() - 1}))
    assert store.claim("u") is not None


# ------------------------------------------------------------- loader


def test_load_results_table_and_labelled_arrays_hold_what_was_written(tmp_path):
    root = tmp_path / "study"
    store = ResultsStore(root)
    a_score, a_p = _score(1), np.random.default_rng(2).uniform(size=(3, 3))
    folds = np.random.default_rng(3).normal(size=(3, 4, 3))
    store.write_unit("a", {"score": a_score, "p": a_p, "p_fdr": np.minimum(1, 3 * a_p), "fold_score": folds},
                     _labels(), {}, dims={"fold_score": ("layer", "fold", "target")})
    b_score = _score(4, (3,))
    store.write_unit("b", {"score": b_score, "ceiling": np.array([0.5, 0.6, 0.7])},
                     _labels(layer=3, subject="s02", revision="step1000"), {}, dims={"ceiling": ("target",)})
    meg = np.random.default_rng(5).normal(size=(2, 4, 2))  # layer x window x channel
    store.write_unit("c", {"score": meg}, _labels(layer=[1, 2], subject="m01", target=["MEG0111", "MEG0112"],
                                                   window=[0, 100, 200, 300], dataset="meg"), {})
    # an unfinished writer's folder is never read
    (store.units_dir / ".d.otherhost-1.x.tmp").mkdir()

    results = load_results(root)
    table = results.table
    assert list(table.columns[:6]) == ["model", "revision", "layer", "subject", "window", "target"]
    assert {"score", "p", "p_fdr", "ceiling", "dataset", "key"} <= set(table.columns)
    assert "fold_score" not in table  # per-fold values live in .arrays
    assert len(table) == 3 * 3 + 3 + 2 * 4 * 2  # one row per unit x layer x target (x window)
    ids = ["model", "revision", "layer", "subject", "window", "target"]
    assert not table.duplicated(ids).any()

    a = table[table["key"] == "a"].set_index(["layer", "target"])
    for i, layer in enumerate([0, 6, 12]):
        for j, roi in enumerate(ROIS):
            assert a.loc[(layer, roi), "score"] == pytest.approx(float(a_score[i, j]))
            assert a.loc[(layer, roi), "p"] == pytest.approx(a_p[i, j])
    b = table[table["key"] == "b"]
    assert list(b["layer"]) == [3] * 3 and set(b["subject"]) == {"s02"} and set(b["revision"]) == {"step1000"}
    np.testing.assert_allclose(b["score"], b_score, rtol=1e-6)
    np.testing.assert_allclose(b["ceiling"], [0.5, 0.6, 0.7])
    c = table[table["key"] == "c"].set_index(["layer", "window", "target"])
    assert c.loc[(2, 100, "MEG0112"), "score"] == pytest.approx(meg[1, 1, 1])
    assert set(c["dataset"]) == {"meg"}

    with pytest.raises(ValueError, match="'score' has axes .* load them separately"):
        results.arrays  # fMRI units (no window) and an MEG unit: the table holds both, the arrays do not
    meg_ds = load_results(root, keys=["c"]).arrays
    assert meg_ds["score"].dims == ("model", "revision", "layer", "subject", "window", "target")
    np.testing.assert_allclose(meg_ds["score"].sel(layer=2, window=100, target="MEG0112").squeeze(), meg[1, 1, 1])
    ds = load_results(root, keys=["a", "b"]).arrays
    assert set(ds.dims) == {"model", "revision", "layer", "subject", "fold", "target"}
    assert ds["score"].dims == ("model", "revision", "layer", "subject", "target")
    assert ds["fold_score"].dims[-2:] == ("fold", "target") and ds.sizes["fold"] == 4
    sel = ds["score"].sel(model="gpt2", revision="main", subject="s01", target="RATL")
    np.testing.assert_allclose(sel.sel(layer=[0, 6, 12]), a_score[:, 1], rtol=1e-6)
    np.testing.assert_allclose(ds["fold_score"].sel(subject="s01", revision="main", layer=6, target="LPTL")
                               .squeeze(drop=True), folds[1, :, 2])
    assert np.isnan(ds["score"].sel(subject="s02", revision="main").values).all()  # never computed

    path = results.to_csv(tmp_path / "out" / "results.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    np.testing.assert_allclose(back["score"], table["score"], rtol=1e-6)
    assert list(back["target"]) == list(table["target"]) and list(back["layer"]) == list(table["layer"])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"jaxalign\[results\]"):
            results.to_parquet(tmp_path / "results.parquet")
    else:
        back = pd.read_parquet(results.to_parquet(tmp_path / "results.parquet"))
        pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_load_results_keeps_the_newest_of_units_with_the_same_labels(tmp_path):
    store = ResultsStore(tmp_path)
    store.write_unit("old", {"score": _score(1)}, _labels(), {})
    time.sleep(0.01)
    store.write_unit("new", {"score": _score(2)}, _labels(), {})
    results = load_results(tmp_path)
    assert results.superseded == ["old"] and set(results.table["key"]) == {"new"}
    assert set(load_results(tmp_path, keys=["old"]).table["key"]) == {"old"}


def test_load_results_refuses_a_folder_that_is_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a jaxalign results store"):
        load_results(tmp_path)
    assert list(tmp_path.iterdir()) == []  # reading creates nothing
    store = ResultsStore(tmp_path / "empty")
    table = load_results(store.root).table
    assert len(table) == 0 and {"model", "revision", "layer", "subject", "target", "score"} <= set(table.columns)
