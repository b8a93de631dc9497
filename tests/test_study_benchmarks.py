"""Named benchmarks, ``jaxalign score`` and ``jaxalign leaderboard``.

Tiny random GPT-2 checkpoints (written by the tests) on the real Alice and
Natural Stories data, and synthetic Harry-Potter-format fMRI / MEG folders
with planted responses (the real HP files are not shipped).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _shared_data import DATA  # real data beside the project, read in place
from test_study_runner import _tiny_gpt2

REPO = Path(__file__).resolve().parents[1]
HAVE_ALICE = (DATA / "alice" / "fmri").is_dir()
HAVE_NS = (DATA / "natural_stories").is_dir()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_models")
    return [_tiny_gpt2(root / f"gpt2_{seed}", seed) for seed in (3, 4)]


def test_every_benchmark_config_validates(tmp_path):
    from jaxalign.studies.benchmarks import BENCHMARKS, benchmark_config, model_spec

    (tmp_path / "meg").mkdir()
    (tmp_path / "meg" / "info.json").write_text(json.dumps({"sfreq": 1000}))
    np.save(tmp_path / "data_subject_F.npy", np.zeros((2, 2)))
    data = {"Alice2016-fMRI": tmp_path, "Futrell2018-RT": tmp_path, "Wehbe2014-fMRI": tmp_path,
            "Wehbe2014-MEG": tmp_path / "meg"}
    for name, b in BENCHMARKS.items():
        cfg = benchmark_config(name, model_spec("SmolLM2-135M-Instruct"), data[name], out=tmp_path / b.folder)
        assert cfg.models[0].packaged == "SmolLM2-135M-Instruct"
        assert b.folder == f"{name}-v{b.version}"
    assert model_spec("EleutherAI/pythia-160m", revisions=["step0"]) == {
        "dtype": "float32", "hub": "EleutherAI/pythia-160m", "revisions": ["step0"]}
    assert model_spec(str(tmp_path))["path"] == str(tmp_path.resolve())
    with pytest.raises(ValueError, match="unknown benchmark 'Nope'"):
        benchmark_config("Nope", model_spec("SmolLM2-135M-Instruct"))
    with pytest.raises(FileNotFoundError, match="info.json"):
        benchmark_config("Wehbe2014-MEG", model_spec("SmolLM2-135M-Instruct"), tmp_path)
    with pytest.raises(FileNotFoundError, match="no data_subject"):
        benchmark_config("Wehbe2014-fMRI", model_spec("SmolLM2-135M-Instruct"), tmp_path / "meg")


@pytest.mark.skipif(not (HAVE_ALICE and HAVE_NS), reason=f"Alice / Natural Stories data absent ({DATA})")
def test_score_two_models_and_the_leaderboard(tiny, tmp_path):
    from jaxalign.studies import load_results
    from jaxalign.studies.benchmarks import leaderboard, score_model

    out = tmp_path / "scores"
    first = score_model(tiny[0], ["Alice2016-fMRI", "Futrell2018-RT"], out=out, name="tinyA", progress=False)
    assert [s.benchmark for s in first] == ["Alice2016-fMRI", "Futrell2018-RT"]
    alice, futrell = first
    # the curve is the mean over the 6 ROIs of the group-mean r, every layer of the model (0, 1, 2)
    t = load_results(out / "Alice2016-fMRI-v1" / "store").table
    g = t[(t.subject == "group") & (t.model == "tinyA")]
    assert list(alice.curve.layer) == [0, 1, 2]
    for row in alice.curve.itertuples():
        part = g[g.layer == row.layer]
        assert len(part) == 6 and (part.n_subjects == 27).all()
        assert row.score == pytest.approx(part.score.mean(), abs=1e-12)
        assert row.normalised == pytest.approx(part.score.mean() / part.ceiling.mean(), abs=1e-12)
    assert alice.score == pytest.approx(alice.curve.score.max())
    assert alice.best_layer == int(alice.curve.layer[alice.curve.score.idxmax()])
    assert np.all((g.ceiling > 0) & (g.ceiling <= 1))
    ceilings = sorted((out / "Alice2016-fMRI-v1" / "cache" / "ceilings").glob("*.npy"))
    assert len(ceilings) == 1
    stamp = ceilings[0].stat().st_mtime_ns
    assert futrell.normalised == pytest.approx(futrell.score / 0.858)
    assert list(futrell.curve.layer) == [0]

    second = score_model(tiny[1], ["Alice2016-fMRI", "Futrell2018-RT"], out=out, name="tinyB", progress=False)
    assert len(second) == 2
    # the ceiling was computed once: the second model read it from the cache
    assert sorted((out / "Alice2016-fMRI-v1" / "cache" / "ceilings").glob("*.npy")) == ceilings
    assert ceilings[0].stat().st_mtime_ns == stamp
    board = leaderboard(out)
    assert sorted(board.model) == ["tinyA", "tinyB"]
    a = board[board.model == "tinyA"].iloc[0]
    assert a["Alice2016-fMRI r"] == pytest.approx(alice.score)
    assert a["Alice2016-fMRI layer"] == alice.best_layer
    assert a["Futrell2018-RT norm"] == pytest.approx(futrell.normalised)
    md = (out / "leaderboard.md").read_text()
    assert "| tinyA | main |" in md and "Alice2016-fMRI v1" in md
    assert (out / "leaderboard.csv").is_file() and (out / "leaderboard.png").stat().st_size > 5000
    assert json.loads((out / "Futrell2018-RT-v1" / "benchmark.json").read_text())["version"] == 1


def _hp_fmri_folder(folder: Path, model_dir: Path, *, n_runs=4, trs_per_run=80, voxels=(30, 24), trim=(20, 15)):
    """Toneva & Wehbe format with trimmed subject arrays; responses planted from the tiny model's layer 2,
    averaged per scan and delayed on the FULL scan grid (as the scanner saw them)."""
    from jaxalign import features, lm, timing

    rng = np.random.default_rng(5)
    text = (REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt").read_text().split()
    n_full = n_runs * trs_per_run
    times = 2.0 * np.arange(n_full)
    runs = np.repeat(np.arange(1, n_runs + 1), trs_per_run)
    onsets = np.sort(rng.uniform(1.0, times[-1] - 1.0, 2 * n_full))
    words = [text[i % len(text)] for i in range(len(onsets))]
    model, tok = lm.load(model_dir)
    per_word = np.asarray(features.word_features(model, tok, words, layers=[2]))[0]
    X = timing.fir_delays(timing.average_per_tr(per_word, onsets, times), [1, 2, 3, 4], runs)
    X = timing.zscore_per_run(X, runs)
    keep = timing.trim_mask(runs, *trim)
    folder.mkdir()
    for letter, v in zip("FH", voxels):
        sig = X @ rng.standard_normal((X.shape[1], v))
        sig /= sig.std(0)
        Y = sig + rng.standard_normal(sig.shape)
        Y[:, v // 2:] = rng.standard_normal((n_full, v - v // 2))  # half of the voxels are null
        np.save(folder / f"data_subject_{letter}.npy", Y[keep].astype(np.float32))
    np.save(folder / "time_fmri.npy", times)
    np.save(folder / "runs_fmri.npy", runs)
    np.save(folder / "time_words_fmri.npy", onsets)
    np.save(folder / "words_fmri.npy", np.array(words))
    return X[keep], keep


def test_wehbe_fmri_features_and_delays_on_the_full_scan_grid(tiny, tmp_path):
    """Trimmed HP arrays: the runner builds features and delays on every scan, then keeps the trimmed rows."""
    from jaxalign import ridge, timing
    from jaxalign.studies import StudyConfig, load_results
    from jaxalign.studies.benchmarks import score_model

    X_true, keep = _hp_fmri_folder(tmp_path / "hp", tiny[0])
    scores = score_model(tiny[0], ["Wehbe2014-fMRI"], out=tmp_path / "scores", data={"Wehbe2014-fMRI": tmp_path / "hp"},
                         name="tiny", progress=False)
    t = load_results(tmp_path / "scores" / "Wehbe2014-fMRI-v1" / "store").table
    assert set(t.subject) == {"F", "H"}  # voxel spaces differ: one unit each, no group rows
    f2 = t[(t.subject == "F") & (t.layer == 2)].sort_values("target", key=lambda s: s.astype(int))
    assert (f2.score.to_numpy()[:15] > 0.4).all()  # planted voxels
    assert np.abs(f2.score.to_numpy()[15:]).max() < 0.35  # null voxels
    # the same numbers from the planted design (built on the full grid, then trimmed) by hand
    cfg = StudyConfig.from_toml(tmp_path / "scores" / "Wehbe2014-fMRI-v1" / "study.toml")
    Y = np.load(tmp_path / "hp" / "data_subject_F.npy").astype(np.float64)
    runs = np.repeat(np.arange(1, 5), 80)[keep]
    hand = ridge.nested_cv(timing.zscore_per_run(X_true, runs).astype(np.float32), Y, cfg.encoding.alpha_grid(),
                           cfg.encoding.outer_splitter(), cfg.encoding.inner_splitter(), standardize="separate")
    np.testing.assert_allclose(f2.score.to_numpy(), np.asarray(hand.fold_scores, np.float64).mean(0), atol=2e-3)
    s = scores[0]
    assert s.best_layer == 2 and np.isnan(s.normalised)


def test_wehbe_meg_benchmark_on_a_synthetic_folder(tiny, tmp_path):
    from jaxalign.studies.benchmarks import score_model

    rng = np.random.default_rng(6)
    folder = tmp_path / "meg"
    folder.mkdir()
    words = (REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt").read_text().split()[:200]
    np.save(folder / "meg.npy", rng.standard_normal((len(words), 3, 100)) * 1e-12)
    np.save(folder / "words.npy", np.array(words))
    (folder / "info.json").write_text(json.dumps({"sfreq": 200.0}))
    (s,) = score_model(tiny[0], ["Wehbe2014-MEG"], out=tmp_path / "scores", data={"Wehbe2014-MEG": folder},
                       progress=False)
    assert list(s.curve.layer) == [0, 1, 2] and np.isfinite(s.curve.score).all()
    assert abs(s.score) < 0.2  # pure noise


def test_score_and_leaderboard_cli_errors(tmp_path, capsys):
    from jaxalign.cli import main

    assert main(["score", "SmolLM2-135M-Instruct", "--benchmark", "Nope", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark 'Nope'" in capsys.readouterr().err
    assert main(["score", "SmolLM2-135M-Instruct", "--data", "Bad=x", "--out", str(tmp_path)]) == 2
    assert "--data: unknown benchmark" in capsys.readouterr().err
    assert main(["score", "--out", str(tmp_path)]) == 2
    assert main(["score", "SmolLM2-135M-Instruct", "--benchmark", "Wehbe2014-fMRI", "--out", str(tmp_path)]) == 2
    assert "--data Wehbe2014-fMRI=FOLDER" in capsys.readouterr().err
    assert main(["leaderboard", str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["score", "--list"]) == 0
    assert "Alice2016-fMRI (v1)" in capsys.readouterr().out
