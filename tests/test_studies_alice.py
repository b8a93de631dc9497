"""The Alice fMRI study pipeline (jaxalign.studies.alice, `jaxalign alice`)."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxalign.studies import alice as A

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alice"
need_data = pytest.mark.skipif(not (ROOT / "fmri").is_dir(), reason=f"Alice data not found at {ROOT}")


def _text_words():
    return np.asarray(A._TEXT.read_text().split())


def test_synthetic_study_recovers_planted_truth(tmp_path):
    words = _text_words()
    rng = np.random.default_rng(3)
    planted, other = rng.standard_normal((2, len(words), 24))
    data = A.synthetic_data(planted, words=words, n_subjects=10, seed=5)
    assert data.Y.shape == (10, len(data.tr_times), 6) and data.source == "synthetic"
    assert np.all(np.diff(data.onsets) > 0) and data.onsets[0] > data.tr_times[0]
    res = A.analyse(data, np.stack([other, planted]), ["other", "planted"], n_permutations=2000,
                    control="random", out=tmp_path, progress=False)
    gains = res["planted"]["gains"]
    for roi, g in gains.items():
        r = res["mean_r"]["planted"][roi]
        if g >= 0.4:  # oracle r >= 0.37: found, significant, beats the word-rate baseline
            assert r > 0.2 and res["p_fdr"]["planted"][roi] < 0.05
            assert res["p_vs_baseline_fdr"]["planted"][roi] < 0.05
            assert r < res["planted"]["oracle_r"][roi] + 0.05  # not above what was planted
        if g == 0:  # the null ROI
            assert abs(r) < 0.1 and res["p_fdr"]["planted"][roi] > 0.05
    null_roi = [roi for roi, g in gains.items() if g == 0]
    for name in ("other", "random vectors"):  # unrelated vectors find nothing
        assert max(abs(v) for v in res["mean_r"][name].values()) < 0.1
        # in the null ROI nothing; where a signal is shared by all subjects, one
        # fixed unrelated draw can align with it by chance (the module's caveat:
        # the group test is about consistency across subjects), but never rival it
        assert all(res["p_fdr"][name][roi] > 0.05 for roi in null_roi)
        for roi, g in gains.items():
            if g >= 0.4:
                assert res["mean_r"][name][roi] < res["mean_r"]["planted"][roi] - 0.1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["layers"] == ["word rate", "other", "planted", "random vectors"]
    assert (tmp_path / "layer_roi.png").stat().st_size > 1000
    assert "planted" in A.format_table(res)


def test_clean_targets_matches_numpy():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((2, 80, 3)) + np.linspace(0, 5, 80)[None, :, None]
    C = rng.standard_normal((2, 80, 4)) * [1, 10, 0.1, 3] + 7
    out = A.clean_targets(Y, C)
    for i in range(2):
        t = np.arange(80.0)
        B = np.column_stack([np.ones(80), t, C[i]])
        res = Y[i] - B @ np.linalg.lstsq(B, Y[i], rcond=None)[0]
        np.testing.assert_allclose(out[i], (res - res.mean(0)) / res.std(0), atol=1e-10)
    plain = A.clean_targets(Y)
    np.testing.assert_allclose(plain.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(plain.std(1), 1, atol=1e-12)


def test_word_rate_counts():
    onsets = np.array([20.5, 21.0, 23.9, 24.0, 24.1, 30.0])
    tr = 20.0 + 2 * np.arange(6)
    # last scan strictly before the word: 24.0 goes to the 22 s scan, 30.0 to 28 s
    np.testing.assert_array_equal(A.word_rate(onsets, tr)[:, 0], [2, 2, 1, 0, 1, 0])


def test_bad_inputs(tmp_path):
    words = _text_words()
    data = A.synthetic_data(np.random.default_rng(0).standard_normal((len(words), 8)), n_subjects=3)
    with pytest.raises(ValueError, match="per_word must be"):
        A.analyse(data, np.zeros((1, 10, 4)), ["x"], progress=False)
    with pytest.raises(ValueError, match="2 names for 1 feature sets"):
        A.analyse(data, np.ones((1, len(words), 4)), ["a", "b"], progress=False)
    with pytest.raises(ValueError, match="control"):
        A.analyse(data, np.ones((1, len(words), 4)), ["a"], control="shuffled", progress=False)
    with pytest.raises(ValueError, match="per_word_planted"):
        A.synthetic_data(np.ones((5, 4)))
    with pytest.raises(ValueError, match="unknown confound 'heart'"):
        A._confound_names("sndpwr,heart")
    assert A._confound_names("motion,rate")[:2] == ("rp_x", "rp_y") and A._confound_names("") == ()
    with pytest.raises(FileNotFoundError, match="no Alice data"):
        A.find_root(tmp_path)


@need_data
def test_real_data_pipeline_and_random_control(tmp_path):
    # every usable listener, random word vectors standing in for a layer (the
    # LM path is tested below and in tests/test_features.py): the random rows
    # must find nothing, the word-rate baseline must find the auditory ROIs
    with pytest.warns(UserWarning, match="skipping Alice subject s33: all values are zero"):
        data = A.load_data(ROOT)
    assert len(data.subjects) == 27 and "s33" not in data.subjects
    assert data.confounds.shape == (27, 362, 7) and data.Y.shape == (27, 362, 6)
    assert A.find_root(ROOT) == ROOT
    per_word = np.random.default_rng(0).standard_normal((1, len(data.words), 32))
    A.analyse(data, per_word, ["layer 7"], n_permutations=2000, control="random", out=tmp_path,
                    progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["layers"] == ["word rate", "layer 7", "random vectors"]
    assert saved["rois"] == ["LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG"]
    for key in ("mean_r", "p", "p_fdr"):
        for name in saved["layers"]:
            assert set(saved[key][name]) == set(saved["rois"])
    # (one fixed draw of random vectors can correlate a little with the response
    # all listeners share, consistently across them, so a single cell may pass
    # the group test: the magnitude is what must vanish; RATL 0.043 here)
    null_p = [saved["p_fdr"][n][roi] for n in ("layer 7", "random vectors") for roi in saved["rois"]]
    assert np.median(null_p) > 0.2 and sum(p < 0.05 for p in null_p) <= 1
    for name in ("layer 7", "random vectors"):
        assert max(abs(v) for v in saved["mean_r"][name].values()) < 0.06
    assert saved["mean_r"]["word rate"]["LPTL"] > 0.03 and saved["p_fdr"]["word rate"]["LPTL"] < 0.05


@need_data
@pytest.mark.slow
def test_real_smollm2_layers_beat_embeddings(tmp_path):
    # the expectation: held-out r around 0.10-0.18 in LPTL for
    # middle-to-late layers, significant, and not at the embedding layer
    res = A.run(ROOT, layers=(0, 20), out=tmp_path, n_permutations=5000, progress=False)
    lptl = {name: res["mean_r"][name]["LPTL"] for name in res["layers"]}
    assert 0.10 <= lptl["layer 20"] <= 0.25 and res["p_fdr"]["layer 20"]["LPTL"] < 0.05
    assert res["p_vs_baseline_fdr"]["layer 20"]["LPTL"] < 0.05
    assert res["p_vs_baseline_fdr"]["layer 0"]["LPTL"] > 0.05  # embeddings: no better than word rate
    assert lptl["layer 0"] < lptl["layer 20"] - 0.03
    assert abs(lptl["random vectors"]) < 0.06


@pytest.mark.slow
def test_cli_synthetic_with_smollm2(tmp_path, capsys):
    from jaxalign.cli import main

    assert main(["alice", "--synthetic", "--layers", "0,8", "--subjects", "10", "--permutations", "500",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "synthetic" in text and "planted: layer 8" in text
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["planted"]["layer"] == 8 and res["source"] == "synthetic"
    assert res["mean_r"]["layer 8"]["LPTL"] > 0.2
    assert res["mean_r"]["layer 8"]["LPTL"] > res["mean_r"]["layer 0"]["LPTL"]
    assert (tmp_path / "layer_roi.png").is_file() and any((tmp_path / "cache").iterdir())
