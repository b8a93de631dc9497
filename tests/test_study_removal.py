"""``[features] remove``: linguistic-property removal as units of the study runner.

A planted study: the responses of every subject are driven by a binary
word property that the tiny model's layer-1 features encode along one
direction. Removing that property (labelled "tense" here, through the
runner's label hook) must drop the alignment; removing a random, unrelated
property ("pos") must not. Also: the spaCy labels of a real text, config
errors before any work, unchanged keys for studies without ``remove`` and a
resumed run that computes nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from test_study_runner import _tiny_gpt2

N_SUBJECTS = 5
GAINS = (1.0, 0.6, 0.0)  # two driven targets and a null one


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return _tiny_gpt2(tmp_path_factory.mktemp("tiny_removal") / "gpt2", 0)


def _config(tmp_path, model, remove='["tense", "pos"]'):
    path = tmp_path / "removal.toml"
    path.write_text(f"""layers = [1, 2]
[dataset]
kind = "alice"
source = "real"
root = "{tmp_path}"
[[models]]
path = "{model}"
name = "tiny0"
[features]
remove = {remove}
[encoding]
alphas = {{ logspace = [-1, 4, 6] }}
[encoding.outer]
n_splits = 4
[encoding.inner]
n_splits = 3
[stats]
n_permutations = 100
[output]
dir = "out"
formats = ["csv", "png"]
""")
    return path


def _stimulus():
    from jaxalign import io
    from jaxalign.studies import alice

    words = np.asarray(alice._TEXT.read_text().split())
    return io.Stimulus(words=words, onsets=alice.story_timing(words, seed=0))


def _dataset(stimulus, Y=None, tr_times=None):
    from jaxalign import io
    from jaxalign.studies.datasets import LoadedDataset

    if Y is None:  # placeholder recordings (features do not depend on them)
        tr_times = np.arange(2) * 2.0
        Y = np.zeros((2, 2, len(GAINS)))
    recs = {f"s{i}": io.Recording(y, "fmri", times=tr_times, target_names=["driven", "weaker", "null"],
                                  tr=io.ALICE_TR) for i, y in enumerate(Y)}
    return LoadedDataset("fmri", stimulus, recs, info={"shared_sampling": True})


def _planted(per_word, stimulus, seed=0):
    """Labels and responses: the planted property is the sign of the layer-1 features' first PC."""
    from jaxalign import io, timing

    F = np.asarray(per_word[0], np.float64)  # layer 1
    F = F - F.mean(0)
    pc = np.linalg.svd(F, full_matrices=False)[2][0]
    proj = F @ pc
    planted = (proj > np.median(proj)).astype(int)
    rng = np.random.default_rng(seed)
    classes = pd.DataFrame({"tense": planted, "pos": rng.integers(0, 5, len(planted))})
    signal = (2.0 * planted - 1.0)[:, None]  # the property only, not the rest of the direction
    onsets = stimulus.onsets
    tr_times = io.ALICE_FIRST_SCAN + io.ALICE_TR * np.arange(int((onsets[-1] + 10 - 20) // 2) + 1)
    x = timing.zscore_per_run(timing.fir_delays(timing.average_per_tr(signal, onsets, tr_times), (2, 3)))
    x = (x.sum(1) / x.sum(1).std())[:, None]
    Y = np.asarray(GAINS) * x + rng.standard_normal((N_SUBJECTS, len(tr_times), len(GAINS)))
    return classes, Y, tr_times


@pytest.fixture(scope="module")
def planted_run(tiny_model, tmp_path_factory):
    """The planted study run once through run_study (shared by the tests below)."""
    from jaxalign.studies import StudyConfig, runner
    from jaxalign.studies.runner import extract_features, run_study

    tmp_path = tmp_path_factory.mktemp("planted")
    mp = pytest.MonkeyPatch()
    stimulus = _stimulus()
    cfg = StudyConfig.from_toml(_config(tmp_path, tiny_model))
    mp.setattr(runner, "_label_source", lambda cfg: "planted test labels")
    mp.setattr(runner, "load_dataset", lambda cfg: _dataset(stimulus))
    [(_, _, path, _, _)] = extract_features(cfg, progress=False)
    classes, Y, tr_times = _planted(np.load(path), stimulus)
    mp.setattr(runner, "_property_labels", lambda plan: classes)
    mp.setattr(runner, "load_dataset", lambda cfg: _dataset(stimulus, Y, tr_times))
    first = run_study(cfg, progress=False)
    again = run_study(cfg, progress=False)
    plan = runner.plan_study(cfg)
    plain = runner.plan_study(cfg.updated({"features": {"remove": None}}))
    mp.undo()
    return first, again, plan, plain


def test_removing_the_planted_property_drops_alignment(planted_run):
    first, _, _, _ = planted_run
    removal = first.removal
    mean = removal[removal["target"] == "mean"].set_index(["property", "layer"])
    # the property that drives the responses: most of the alignment gone, significantly
    for layer in (1, 2):
        row = mean.loc[("tense", layer)]
        assert row["r_original"] > 0.15
        assert row["change"] < -0.6 * row["r_original"] and row["significant"]
    # a random property: (almost) nothing changes
    assert (mean.loc["pos", "change"].abs() < 0.03).all()
    per = removal[removal["target"] != "mean"].set_index(["property", "layer", "target"])
    assert per.loc[("tense", 1, "driven"), "significant"] and per.loc[("tense", 1, "driven"), "change"] < -0.3
    assert removal.attrs["test"] == "two-sided paired t-test over subjects"
    assert (mean["n"] == N_SUBJECTS).all() and (removal["over"] == "subjects").all()
    # the results: per-subject rows labelled feature_set "removed" and their property, pivotable
    t = first.table
    rem = t[t["feature_set"] == "removed"]
    assert set(rem["property"]) == {"tense", "pos"} and set(rem["subject"]) == {f"s{i}" for i in range(5)}
    assert t.loc[t["feature_set"] != "removed", "property"].isna().all()
    assert not (rem["subject"] == "group").any()  # the group rows are the original study's


def test_removal_outputs_and_summary(planted_run):
    from jaxalign.studies.runner import format_summary

    first, _, _, _ = planted_run
    out = first.out
    csv = pd.read_csv(out / "removal" / "removal.csv")
    assert len(csv) == len(first.removal) == 2 * 2 * (1 + 3)
    assert (out / "removal" / "removal.png").stat().st_size > 20_000
    assert (out / "figures" / "layers.png").is_file()  # the study's own figures, without the removal units
    doc = json.loads((out / "results.json").read_text())
    assert doc["removal"]["labels"] == "planted test labels" and len(doc["removal"]["rows"]) == len(csv)
    assert doc["removal"]["test"] == "two-sided paired t-test over subjects"
    text = format_summary(first)
    assert "property removal: change in mean r over targets" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("tiny0 layer 1 ") and "*" in ln)
    assert line.split()[3].endswith("*")  # tense: significant
    assert "tiny0 layer 1" in text.split("property removal")[0]  # the study's own table is still there


def test_resume_and_keys_of_studies_without_removal(planted_run):
    first, again, plan, plain = planted_run
    assert again.computed == [] and len(again.reused) == len(first.computed)
    pd.testing.assert_frame_equal(again.removal, first.removal)
    kinds = [u.feature_set for u in plan.fits]
    assert kinds.count("removed") == 2 and kinds.count("model") == 1
    # without remove: the same units less the removal ones, same group units
    assert [u.key for u in plain.fits] == [u.key for u in plan.fits if u.feature_set != "removed"]
    assert plain.group_keys == plan.group_keys and plain.label_source is None


def test_settings_of_studies_without_remove_hash_as_before():
    """examples/alice.toml: the hash and canonical features of main before [features] remove existed."""
    from jaxalign.studies import StudyConfig

    from test_study_runner import REPO

    cfg = StudyConfig.from_toml(REPO / "examples" / "alice.toml")
    assert cfg.hash_settings() == "8e160714af45c037ffe030c51dadadcd6b212d9d5cc540f58b1b941020a7c8e0"
    assert "remove" not in cfg.features._canonical() and "labels" not in cfg.features._canonical()
    with_removal = cfg.updated({"features": {"remove": "all"}})
    assert with_removal.hash_settings() != cfg.hash_settings()
    assert len(with_removal.features.remove) == 8


def test_config_errors(tmp_path, monkeypatch):
    from jaxalign import io
    from jaxalign.analysis.probing import _spacy
    from jaxalign.studies import ConfigError, StudyConfig
    from jaxalign.studies import runner
    from jaxalign.studies.datasets import LoadedDataset

    with pytest.raises(ConfigError, match=r"features.remove: unknown property 'mood' \(allowed: sentence_length, "):
        StudyConfig.model_validate({"features": {"remove": ["tense", "mood"]}})
    with pytest.raises(ConfigError, match="features.remove: unknown key"):
        StudyConfig.model_validate({"features": {"kind": "surprisal", "remove": ["pos"]}})
    with pytest.raises(ConfigError, match=r"features.labels: 'gold' is not allowed \(allowed: 'spacy'\)"):
        StudyConfig.model_validate({"features": {"remove": "all", "labels": "gold"}})
    cfg = StudyConfig.model_validate({"features": {"remove": "all"}})
    # a dataset without words
    rec = {"s": io.Recording(np.zeros((4, 2)), "fmri", times=np.arange(4) * 2.0)}
    arrays = LoadedDataset("features", None, rec, features=np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="has no words"):
        runner._check_removal(cfg, arrays)

    # spaCy (or its English pipeline) missing: before any work, naming the extra
    def missing(names=None):
        raise ImportError(f"labels_from_spacy needs spaCy, which is not installed: {_spacy._INSTALL}")

    monkeypatch.setattr(_spacy, "load_english", missing)
    words = LoadedDataset("fmri", _stimulus(), rec)
    with pytest.raises(ConfigError, match=r'features.labels: .*pip install "jaxalign\[parse\]"'):
        runner._check_removal(cfg, words)


def test_spacy_labels_of_a_real_text(tmp_path):
    """The spaCy source on the first sentences of the embedded text, each run its own text, cached."""
    pytest.importorskip("spacy")
    from jaxalign import io
    from jaxalign.analysis.probing import STUDY_BINS
    from jaxalign.studies import StudyConfig, runner

    words = np.array("The keeper climbed the stairs . Rain fell on the old lamp , and it burned .".split())
    runs = np.array([0] * 6 + [1] * 11)
    ds = _dataset(io.Stimulus(words=words, onsets=np.arange(len(words)) * 0.4, runs=runs))
    cfg = StudyConfig.model_validate({"features": {"remove": "all"}})
    source = runner._check_removal(cfg, ds)
    assert source.startswith("spacy en_core_web_sm")
    plan = runner._Plan(cfg, tmp_path, ds, [], [], [], label_source=source)
    classes = runner._property_labels(plan)
    assert list(classes.columns) == list(STUDY_BINS) and len(classes) == len(words)
    assert classes["pos"].tolist()[:5] == [4, 1, 0, 4, 1]  # DET NOUN VERB DET NOUN
    assert classes["tense"].tolist() == [0] * 17  # climbed, fell: past
    cached = list((tmp_path / "cache" / "labels").glob("*_words.csv"))
    assert len(cached) == 1 and pd.read_csv(cached[0])["run"].tolist() == runs.tolist()
    pd.testing.assert_frame_equal(runner._property_labels(plan), classes)  # from the cache


def test_alice_removal_example_is_the_alice_study_plus_removal():
    from jaxalign.analysis.probing import STUDY_BINS
    from jaxalign.studies import StudyConfig

    from test_study_runner import REPO

    alice = StudyConfig.from_toml(REPO / "examples" / "alice.toml")
    removal = StudyConfig.from_toml(REPO / "examples" / "alice_removal.toml")
    assert removal.features.remove == list(STUDY_BINS) and removal.features.labels == "spacy"
    assert removal.updated({"features": {"remove": None}}).hash_settings() == alice.hash_settings()
