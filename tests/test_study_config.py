"""StudyConfig: TOML <-> Python round trips, every rejection, defaults, engine helpers, hashes."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from jaxalign import ridge
from jaxalign.studies import ConfigError, StudyConfig
from jaxalign.studies.config import DATASET_KINDS, settings_hash

# the study files among the examples (finetune_*.toml are FinetuneConfig files: tests/test_finetune_config.py)
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.toml")
                  if not p.name.startswith("finetune"))


def problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        StudyConfig.model_validate(data)
    return info.value.problems


def only_problem(data) -> str:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------ examples


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"alice.toml", "natural_stories.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_round_trip(path, tmp_path):
    cfg = StudyConfig.from_toml(path)
    out = cfg.to_toml(tmp_path / "copy.toml")
    again = StudyConfig.from_toml(out)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert again.hash_settings() == cfg.hash_settings()
    # Python -> dict -> Python as well
    assert StudyConfig.model_validate(cfg.to_dict()) == cfg
    # the written file is plain TOML holding exactly the settings
    assert tomllib.loads(out.read_text()) == cfg.to_dict()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_keys_are_commented(path):
    """Every key of an example is explained: a comment on its line, or just above it."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith("#") or "=" not in text or text.startswith("["):
            continue
        commented = "#" in line or (i > 0 and lines[i - 1].strip().startswith("#"))
        assert commented, f"{path.name}:{i + 1} has no comment: {line!r}"


def test_alice_example_is_todays_alice():
    from jaxalign.studies import alice

    cfg = StudyConfig.from_toml(EXAMPLES[0].with_name("alice.toml"))
    assert cfg.dataset.kind == "alice"
    assert cfg.resolved_layers(30) == list(alice.DEFAULT_LAYERS)
    assert tuple(cfg.timing.delays) == alice.DELAYS
    np.testing.assert_array_equal(cfg.encoding.alpha_grid(), alice.ALPHAS)
    assert repr(cfg.encoding.outer_splitter()) == repr(ridge.ContiguousKFold(5, gap=5))
    assert repr(cfg.encoding.inner_splitter()) == repr(ridge.ContiguousKFold(5, gap=0))
    assert cfg.encoding.standardize_arg == "separate"
    assert tuple(cfg.encoding.confounds) == alice.DEFAULT_CONFOUNDS
    assert cfg.encoding.confound_fit == "whole_series"
    assert (cfg.stats.test, cfg.stats.n_permutations, cfg.stats.fdr) == ("sign_flip", 10000, "bh")
    assert (cfg.features.baseline, cfg.features.control) == ("word_rate", "random")


def test_relative_paths_follow_the_file(tmp_path):
    cfg = StudyConfig.from_toml(EXAMPLES[0].with_name("natural_stories.toml"))
    root = cfg.resolve_path(cfg.dataset.root)
    assert root == EXAMPLES[0].parent / "../../shared/data/natural_stories"
    assert StudyConfig().resolve_path("x") == Path.cwd() / "x"


# ------------------------------------------------------------------ defaults


def test_defaults_are_todays_alice_conventions():
    cfg = StudyConfig()
    assert cfg.dataset.kind == "alice" and cfg.dataset.source == "auto"
    assert [m.packaged for m in cfg.models] == ["SmolLM2-135M-Instruct"]
    assert cfg.models[0].dtype == "float32"
    assert cfg.layers is None and cfg.resolved_layers(30) == list(range(31))
    f = cfg.features
    assert (f.kind, f.pooling, f.context, f.context_size) == ("hidden_states", "last", "passage", None)
    t = cfg.timing
    assert (t.kind, t.method, t.delays, t.trim_start, t.trim_end) == ("fmri", "average", [1, 2, 3, 4], 0, 0)
    e = cfg.encoding
    np.testing.assert_array_equal(e.alpha_grid(), np.logspace(-1, 6, 8))
    assert (e.outer.kind, e.outer.effective_n_splits, e.outer.effective_gap) == ("contiguous", 5, 5)
    # trust rule: the inner folds get the outer gap unless told otherwise
    assert (e.inner.kind, e.inner.effective_n_splits, e.inner_gap) == ("contiguous", 5, 5)
    assert (e.scoring, e.standardize, e.fit_intercept) == ("pearson", "separate", False)
    assert (e.detrend, e.detrend_order, e.confounds, e.confound_fit) == ("poly", 1, [], "train")
    s = cfg.stats
    assert (s.test, s.n_permutations, s.alternative, s.fdr, s.fdr_alpha, s.seed) == (
        "sign_flip", 10000, "greater", "bh", 0.05, 0)
    assert (s.tail, s.tail_arg, s.ceiling.method) == ("none", None, "none")
    assert cfg.output.formats == ["json", "csv", "png"]


def test_fields_are_documented():
    """Every field of every section says what it does (the defaults live in the descriptions)."""
    from jaxalign.studies import config

    models = [StudyConfig, *DATASET_KINDS.values(), config.ModelSpec, config.LayerRange, config.HiddenStates,
              config.Surprisal, config.FmriTiming, config.MegTiming, config.ContinuousTiming, config.Ridge,
              config.OuterCV, config.InnerCV, config.Logspace, config.StatsConfig, config.Ceiling,
              config.OutputConfig]
    for model in models:
        for name, field in model.model_fields.items():
            if name in ("kind", "method"):
                continue
            assert field.description, f"{model.__name__}.{name} has no description"


def test_timing_and_models_follow_the_dataset():
    ns = StudyConfig.model_validate({"dataset": {"kind": "natural_stories", "root": "x"}})
    assert ns.timing.kind == "none"
    meg = StudyConfig.model_validate({"dataset": {"kind": "harry_potter_meg", "data": "a.npy", "words": "w.npy",
                                                  "sfreq": 40.0}})
    assert (meg.timing.kind, meg.timing.n_windows) == ("meg", 20)
    raw = StudyConfig.model_validate({"dataset": {"kind": "mne", "path": "r.fif", "data": "raw"}})
    assert raw.timing.kind == "continuous" and raw.timing.delays == list(range(40))
    arrays = StudyConfig.model_validate({"dataset": {"kind": "arrays", "features": "x.npy", "targets": "y.npy"}})
    assert arrays.models == [] and arrays.timing.kind == "none"


@pytest.mark.parametrize("kind", sorted(DATASET_KINDS))
def test_every_dataset_kind_round_trips(kind, tmp_path):
    required = {
        "alice": {}, "nifti": {"images": ["run1.nii.gz"], "words": "words.tsv"},
        "harry_potter_fmri": {"root": "hp"}, "harry_potter_meg": {"data": "meg.npy", "words": "w.npy", "sfreq": 40},
        "mne": {"path": "x-epo.fif"}, "natural_stories": {"root": "ns"},
        "arrays": {"features": "x.npy", "targets": "y.npy"},
    }[kind]
    data = {"dataset": {"kind": kind, **required}}
    if kind == "natural_stories":
        data.update(features={"kind": "surprisal"}, encoding={"method": "correlation"}, stats={"test": "pearson_t"})
    elif kind in ("harry_potter_meg", "mne", "arrays"):
        data["stats"] = {"test": "cv_permutation"}
    cfg = StudyConfig.model_validate(data)
    assert StudyConfig.from_toml(cfg.to_toml(tmp_path / "s.toml")) == cfg


# ---------------------------------------------------------------- rejections


def test_unknown_key_top_level():
    assert only_problem({"datset": {"kind": "alice"}}) == (
        "datset: unknown key (allowed: dataset, models, layers, features, timing, encoding, stats, output, compare)")


def test_unknown_key_inside_sections():
    msg = only_problem({"features": {"poolng": "mean"}})
    assert msg.startswith("features.poolng: unknown key (allowed: ")
    assert "pooling" in msg and "context_size" in msg
    assert only_problem({"encoding": {"outer": {"gaps": 3}}}).startswith("encoding.outer.gaps: unknown key")
    assert only_problem({"models": [{"packaged": "SmolLM2-135M-Instruct", "revison": "x"}]}).startswith(
        "models[0].revison: unknown key")
    assert only_problem({"stats": {"ceiling": {"method": "fixed", "value": 0.5, "n": 1}}}).startswith(
        "stats.ceiling.n: unknown key")
    # a key of another kind is unknown for this one
    assert only_problem({"dataset": {"kind": "alice", "images": ["a.nii"]}}).startswith(
        "dataset.images: unknown key (allowed: kind, root, source, roi_size, n_subjects)")


def test_unknown_dataset_kind_names_the_allowed_ones():
    msg = only_problem({"dataset": {"kind": "alise"}})
    assert msg == ("dataset.kind: unknown kind 'alise' (allowed: 'alice', 'nifti', 'harry_potter_fmri', "
                   "'harry_potter_meg', 'mne', 'natural_stories', 'arrays')")
    assert only_problem({"dataset": {"root": "x"}}).startswith("dataset.kind: required (allowed: 'alice', ")
    for kind in ("alice", "nifti", "harry_potter_fmri", "harry_potter_meg", "mne", "natural_stories", "arrays"):
        assert kind in DATASET_KINDS


def test_typod_kinds_in_other_sections():
    assert only_problem({"features": {"kind": "hidden"}}) == (
        "features.kind: unknown kind 'hidden' (allowed: 'hidden_states', 'surprisal')")
    assert only_problem({"timing": {"kind": "fMRI"}}) == (
        "timing.kind: unknown kind 'fMRI' (allowed: 'fmri', 'meg', 'continuous', 'none')")
    assert only_problem({"encoding": {"method": "ridgecv"}}) == (
        "encoding.method: unknown method 'ridgecv' (allowed: 'ridge', 'correlation')")
    assert only_problem({"encoding": {"outer": {"kind": "blocked"}}}) == (
        "encoding.outer.kind: 'blocked' is not allowed (allowed: 'contiguous', 'group', 'kfold', 'shuffle')")


def test_missing_required_dataset_fields():
    assert problems({"dataset": {"kind": "nifti"}}) == ["dataset.images: required", "dataset.words: required"]


@pytest.mark.parametrize("data, expected", [
    ({"stats": {"n_permutations": "1000"}}, "stats.n_permutations: expected an integer (got '1000')"),
    ({"stats": {"n_permutations": 10.5}}, "stats.n_permutations: expected an integer (got 10.5)"),
    ({"encoding": {"fit_intercept": 1}}, "encoding.fit_intercept: expected true or false (got 1)"),
    ({"timing": {"delays": 4}}, "timing.delays: expected a list (got 4)"),
    ({"timing": {"delays": [1, "2"]}}, "timing.delays[1]: expected an integer (got '2')"),
    ({"models": {"packaged": "SmolLM2-135M-Instruct"}}, "models: expected a list (got {'packaged': 'SmolLM2-135M-Instruct'})"),
    ({"encoding": "ridge"}, "encoding: expected a table (got 'ridge')"),
    ({"layers": 5}, "layers: expected a list of layer indices, a range table {start, stop, step} or 'all' (got 5)"),
    ({"layers": "last"}, "layers: 'last' is not allowed (allowed: a list of layer indices, a range table "
                         "{start, stop, step} or 'all')"),
    ({"layers": [0, 1.5]}, "layers[1]: expected an integer (got 1.5)"),
    ({"encoding": {"alphas": "logspace"}}, "encoding.alphas: expected a list of penalties or "
                                           "{logspace = [lo, hi, n]} (got 'logspace')"),
    ({"encoding": {"alphas": [1.0, "10"]}}, "encoding.alphas[1]: expected a number (got '10')"),
    ({"models": [{"packaged": "SmolLM2-135M-Instruct", "dtype": "float16"}]},
     "models[0].dtype: 'float16' is not allowed (allowed: 'float32', 'bfloat16')"),
])
def test_bad_value_types(data, expected):
    assert only_problem(data) == expected


@pytest.mark.parametrize("features, expected", [
    ({"pooling": "max"}, "features.pooling: 'max' is not allowed (allowed: 'last', 'mean')"),
    ({"context": "sentence"}, "features.context: 'sentence' is not allowed (allowed: 'passage', 'tokens', 'words')"),
    ({"context": "passage", "context_size": 20},
     "features: context_size is only used with context 'tokens' or 'words' (context 'passage' is truncated at "
     "max_length)"),
    ({"context": "words"}, "features: context 'words' needs context_size (the number of previous words)"),
    ({"context": "tokens", "context_size": 50, "min_context": 60},
     "features: min_context (60) exceeds context_size (50): every word would be skipped"),
    ({"context": "tokens", "context_size": 0}, "features.context_size: must be >= 1 (got 0)"),
    ({"kind": "surprisal", "pooling": "mean"}, "features.pooling: unknown key (allowed: baseline, control, devices, kind, "
                                               "context, bos, max_length, stride)"),
    ({"kind": "surprisal", "context": "words"}, "features.context: 'words' is not allowed (allowed: 'passage')"),
])
def test_invalid_pooling_context_combos(features, expected):
    assert only_problem({"features": features}) == expected


def test_valid_pooling_context_combos():
    for f in ({"pooling": "mean", "context": "words", "context_size": 20},
              {"pooling": "last", "context": "tokens", "context_size": 50, "min_context": 50},
              {"pooling": "mean", "context": "passage"}):
        assert StudyConfig.model_validate({"features": f}).features.pooling == f["pooling"]


@pytest.mark.parametrize("stats, expected", [
    ({"n_permutations": -5}, "stats.n_permutations: must be >= 1 (got -5)"),
    ({"n_permutations": 0}, "stats.n_permutations: must be >= 1 (got 0)"),
    ({"test": "permutation"}, "stats.test: 'permutation' is not allowed (allowed: 'cv_permutation', 'sign_flip', "
                              "'pearson_t', 'none')"),
    ({"fdr": "holm"}, "stats.fdr: 'holm' is not allowed (allowed: 'bh', 'by')"),
    ({"fdr_alpha": 1.5}, "stats.fdr_alpha: must be < 1 (got 1.5)"),
    ({"tail": "gpd"}, "stats.tail: 'gpd' is not allowed (allowed: 'none', 'normal')"),
    ({"tail": "normal"}, "stats.tail: only used with test 'cv_permutation', not 'sign_flip'"),
    ({"test": "sign_flip", "block_size": 10}, "stats.block_size: only used with test 'cv_permutation', not 'sign_flip'"),
    ({"test": "cv_permutation", "scheme": "block"},
     "stats.block_size: scheme 'block' needs a block_size (e.g. ~10 TRs for fMRI)"),
    ({"ceiling": {"method": "fixed"}}, "stats.ceiling.value: method 'fixed' needs a value"),
    ({"ceiling": {"method": "split_half", "value": 0.8}},
     "stats.ceiling.value: only used with method 'fixed', not 'split_half'"),
])
def test_stats_rejections(stats, expected):
    assert only_problem({"stats": stats}) == expected


@pytest.mark.parametrize("encoding, expected", [
    ({"alphas": [1.0, -1.0]}, "encoding.alphas: penalties must be finite and > 0, got [-1.0]"),
    ({"alphas": []}, "encoding.alphas: needs at least one penalty"),
    ({"alphas": {"logspace": [3, 1, 5]}}, "encoding.alphas: hi (1.0) is below lo (3.0)"),
    ({"alphas": {"logspace": [1, 3]}}, "encoding.alphas.logspace[2]: required"),
    ({"outer": {"kind": "kfold", "gap": 5}}, "encoding.outer.gap: not used by kind 'kfold' (allowed with: "
                                             "'contiguous', 'group')"),
    ({"outer": {"n_splits": 1}}, "encoding.outer.n_splits: kind 'contiguous' needs n_splits >= 2, got 1"),
    ({"inner": {"gap": -1}}, "encoding.inner.gap: must be >= 0 (got -1)"),
    ({"outer": {"kind": "contiguous", "seed": 1}}, "encoding.outer.seed: kind 'contiguous' has no randomness"),
    ({"standardize": "zscore"}, "encoding.standardize: 'zscore' is not allowed (allowed: 'none', 'separate', "
                                "'train')"),
    ({"confound_fit": "test"}, "encoding.confound_fit: 'test' is not allowed (allowed: 'train', 'whole_series')"),
])
def test_encoding_rejections(encoding, expected):
    assert only_problem({"encoding": encoding}) == expected


def test_cross_section_rejections():
    ns = {"kind": "natural_stories", "root": "x"}
    assert only_problem({"dataset": ns, "timing": {"kind": "fmri"}}) == (
        "timing.kind: dataset kind 'natural_stories' gives behaviour data, which takes timing kind 'none', "
        "not 'fmri'")
    assert only_problem({"encoding": {"method": "correlation"}, "stats": {"test": "none"}}) == (
        "encoding.method: 'correlation' needs a one-column feature: features kind 'surprisal' (or use method "
        "'ridge')")
    assert only_problem({"features": {"kind": "surprisal"}, "layers": [1, 2]}) == (
        "layers: surprisal features come from the LM head, not from layers: remove layers")
    assert only_problem({"dataset": {"kind": "arrays", "features": "x.npy", "targets": "y.npy"},
                         "models": [{"packaged": "SmolLM2-135M-Instruct"}]}) == (
        "models: the 'arrays' dataset brings its own features: remove [[models]]")
    assert only_problem({"models": []}) == "models: give at least one [[models]] table"
    assert only_problem({"dataset": ns, "features": {"kind": "surprisal", "baseline": "word_rate"},
                         "encoding": {"method": "correlation"}, "stats": {"test": "none"}}) == (
        "features.baseline: 'word_rate' needs timed data (timing 'fmri' or 'continuous'), not 'none'")
    assert only_problem({"stats": {"test": "pearson_t"}}).startswith("stats.test: 'pearson_t' is for an r computed")
    assert only_problem({"encoding": {"confounds": ["sndpwr", "moton"]}}) == (
        "encoding.confounds: unknown Alice confound(s) ['moton'] (allowed: 'motion', 'rate', 'sndpwr', 'rp_x', "
        "'rp_y', 'rp_z', 'rp_pitch', 'rp_roll', 'rp_yaw'; 'motion' = the 6 rp_*)")
    assert only_problem({"dataset": {"kind": "harry_potter_fmri", "root": "hp"},
                         "encoding": {"confounds": ["motion"]}}).startswith(
        "encoding.confounds: dataset kind 'harry_potter_fmri' provides no named confounds")


def test_packaged_names_match_the_lm_registry():
    from jaxalign.lm._packaged import PACKAGED_MODELS
    from jaxalign.studies.config import PACKAGED

    assert sorted(PACKAGED) == sorted(PACKAGED_MODELS)


def test_model_source_rules():
    assert only_problem({"models": [{"hub": "a/b", "path": "c"}]}) == (
        "models[0]: give exactly one of packaged, hub or path (got hub and path)")
    assert only_problem({"models": [{"dtype": "float32"}]}) == (
        "models[0]: give exactly one of packaged, hub or path (got none)")
    assert only_problem({"models": [{"path": "m.gguf", "revisions": ["step0"]}]}) == (
        "models[0]: revisions need a hub model (a local path or packaged model has one version)")
    assert only_problem({"models": [{"packaged": "gpt9"}]}) == (
        "models[0].packaged: 'gpt9' is not allowed (allowed: 'SmolLM2-135M-Instruct', 'all-MiniLM-L6-v2')")
    cfg = StudyConfig.model_validate({"models": [{"hub": "EleutherAI/pythia-160m",
                                                  "revisions": ["step0", "step143000"], "dtype": "bfloat16"}]})
    assert cfg.models[0].label == "EleutherAI/pythia-160m" and cfg.models[0].revisions == ["step0", "step143000"]


def test_every_problem_is_listed_at_once():
    found = problems({"bogus": 1, "features": {"pooling": "max"}, "stats": {"n_permutations": -1},
                      "encoding": {"outer": {"gap": "5"}}})
    assert found == [
        "features.pooling: 'max' is not allowed (allowed: 'last', 'mean')",
        "encoding.outer.gap: expected an integer (got '5')",
        "stats.n_permutations: must be >= 1 (got -1)",
        "bogus: unknown key (allowed: dataset, models, layers, features, timing, encoding, stats, output, compare)",
    ]
    with pytest.raises(ConfigError) as info:
        StudyConfig.model_validate({"bogus": 1, "stats": {"n_permutations": -1}})
    assert isinstance(info.value, ValueError)
    assert str(info.value) == ("2 problems in the study config:\n"
                               "  stats.n_permutations: must be >= 1 (got -1)\n"
                               "  bogus: unknown key (allowed: dataset, models, layers, features, timing, encoding, "
                               "stats, output, compare)")


def test_errors_from_a_file_name_it(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[features]\npooling = "max"\n')
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_toml(path)
    assert str(info.value) == (f"{path}: 1 problem in the study config:\n"
                               "  features.pooling: 'max' is not allowed (allowed: 'last', 'mean')")
    path.write_text("[features\n")
    with pytest.raises(ConfigError, match=r"study\.toml: 1 problem in the study config:\n  not valid TOML: "):
        StudyConfig.from_toml(path)
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        StudyConfig.from_toml(tmp_path / "missing.toml")


def test_direct_construction_raises_config_error():
    with pytest.raises(ConfigError, match="dataset.kind: unknown kind 'x'"):
        StudyConfig(dataset={"kind": "x"})


# ------------------------------------------------------------------- layers


def test_resolved_layers():
    assert StudyConfig().resolved_layers(12) == list(range(13))
    assert StudyConfig.model_validate({"layers": "all"}).resolved_layers(2) == [0, 1, 2]
    assert StudyConfig.model_validate({"layers": [0, -1, 6]}).resolved_layers(12) == [0, 12, 6]
    rng = StudyConfig.model_validate({"layers": {"start": 0, "step": 5}})
    assert rng.resolved_layers(30) == [0, 5, 10, 15, 20, 25, 30]
    assert rng.resolved_layers(12) == [0, 5, 10]
    assert StudyConfig.model_validate({"layers": {"start": 2, "stop": 8, "step": 3}}).resolved_layers(12) == [2, 5, 8]


def test_layer_out_of_range_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        StudyConfig.model_validate({"layers": [0, 13, -14]}).resolved_layers(12)
    assert info.value.problems == [
        "layers: [13, -14] beyond a model with 12 layers (allowed: 0..12, or -13..-1 from the end)"]
    with pytest.raises(ConfigError, match=r"layers: range reaches layer 20, beyond a model with 12 layers"):
        StudyConfig.model_validate({"layers": {"start": 0, "stop": 20}}).resolved_layers(12)
    path = StudyConfig.model_validate({"layers": [40]}).to_toml(tmp_path / "s.toml")
    with pytest.raises(ConfigError, match=r"s\.toml: 1 problem.*\n  layers: \[40\] beyond"):
        StudyConfig.from_toml(path).resolved_layers(30)
    assert only_problem({"layers": {"start": 5, "stop": 2}}) == "layers: stop (2) is before start (5)"


# ------------------------------------------------------------ engine helpers


def test_alpha_grid_against_direct_construction():
    cfg = StudyConfig.model_validate({"encoding": {"alphas": {"logspace": [-2, 8, 11]}}})
    np.testing.assert_array_equal(cfg.encoding.alpha_grid(), np.logspace(-2, 8, 11))
    cfg = StudyConfig.model_validate({"encoding": {"alphas": [0.1, 10, 1000]}})
    grid = cfg.encoding.alpha_grid()
    assert grid.dtype == np.float64
    np.testing.assert_array_equal(grid, [0.1, 10.0, 1000.0])


def _splits(cv, n=60, groups=None):
    return [(tr.tolist(), te.tolist()) for tr, te in cv.split(n, groups=groups)]


@pytest.mark.parametrize("outer, inner, want_outer, want_inner", [
    ({}, {}, ridge.ContiguousKFold(5, gap=5), ridge.ContiguousKFold(5, gap=5)),
    ({"gap": 3, "n_splits": 4}, {"n_splits": 3}, ridge.ContiguousKFold(4, gap=3), ridge.ContiguousKFold(3, gap=3)),
    ({"gap": 3}, {"gap": 0}, ridge.ContiguousKFold(5, gap=3), ridge.ContiguousKFold(5, gap=0)),
    ({"kind": "kfold", "n_splits": 10}, {}, ridge.KFold(10), ridge.ContiguousKFold(5, gap=0)),
    ({"kind": "kfold", "seed": 3}, {"kind": "kfold"}, ridge.KFold(5, shuffle=True, seed=3), ridge.KFold(5)),
    ({"kind": "shuffle"}, {}, ridge.ShuffleSplit(10, test_size=0.1, seed=0), ridge.ContiguousKFold(5, gap=0)),
    ({"kind": "shuffle", "n_splits": 3, "test_size": 6, "seed": 2}, {},
     ridge.ShuffleSplit(3, test_size=6, seed=2), ridge.ContiguousKFold(5, gap=0)),
])
def test_splitters_against_direct_construction(outer, inner, want_outer, want_inner):
    enc = StudyConfig.model_validate({"encoding": {"outer": outer, "inner": inner}}).encoding
    assert repr(enc.outer_splitter()) == repr(want_outer)
    assert repr(enc.inner_splitter()) == repr(want_inner)
    assert _splits(enc.outer_splitter()) == _splits(want_outer)
    assert _splits(enc.inner_splitter(), 48) == _splits(want_inner, 48)


def test_group_splitters():
    groups = np.repeat([0, 1, 2, 3], 15)
    enc = StudyConfig.model_validate({"dataset": {"kind": "harry_potter_fmri", "root": "hp"},
                                      "encoding": {"outer": {"kind": "group"}}}).encoding
    assert _splits(enc.outer_splitter(groups)) == _splits(ridge.LeaveOneGroupOut(groups, gap=5))
    assert enc.inner_gap == 5
    enc = StudyConfig.model_validate({"dataset": {"kind": "harry_potter_fmri", "root": "hp"},
                                      "encoding": {"outer": {"kind": "group", "n_splits": 2, "gap": 0}}}).encoding
    assert _splits(enc.outer_splitter(groups)) == _splits(ridge.GroupKFold(2, groups, gap=0))


def test_updated_is_validated():
    cfg = StudyConfig().updated({"encoding": {"outer": {"gap": 2}}, "output": {"dir": "elsewhere"}})
    assert (cfg.encoding.outer.gap, cfg.encoding.inner_gap, cfg.output.dir) == (2, 2, "elsewhere")
    with pytest.raises(ConfigError, match="stats.n_permutations: must be >= 1"):
        StudyConfig().updated({"stats": {"n_permutations": 0}})


def test_config_is_immutable():
    from pydantic import ValidationError

    cfg = StudyConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.layers = [1]


# -------------------------------------------------------------------- hashes


def test_hash_stability():
    a = StudyConfig.model_validate({"layers": [0, 5], "encoding": {"outer": {"kind": "contiguous", "gap": 5},
                                                                    "scoring": "pearson"}})
    # same settings, keys in another order: same hash
    b = StudyConfig.model_validate({"encoding": {"scoring": "pearson", "outer": {"gap": 5, "kind": "contiguous"}},
                                    "layers": [0, 5]})
    assert a.hash_settings() == b.hash_settings()
    assert a.hash_settings("encoding") == b.hash_settings("encoding")
    # a default written out or left implicit: same hash (the gap 5 and the inner gap that follows it)
    assert a.hash_settings() == StudyConfig.model_validate({"layers": [0, 5]}).hash_settings()
    assert StudyConfig.model_validate({"encoding": {"inner": {"gap": 5}}}).hash_settings("encoding") == \
        StudyConfig().hash_settings("encoding")
    # the same grid written as a list or a logspace: same hash
    grid = np.logspace(-1, 6, 8).tolist()
    assert StudyConfig.model_validate({"encoding": {"alphas": grid}}).hash_settings("encoding") == \
        StudyConfig().hash_settings("encoding")
    # one changed value: another hash, in that section only
    c = a.updated({"encoding": {"outer": {"gap": 4}}})
    assert c.hash_settings("encoding") != a.hash_settings("encoding")
    assert c.hash_settings() != a.hash_settings()
    assert c.hash_settings("features", "timing") == a.hash_settings("features", "timing")
    d = a.updated({"features": {"pooling": "mean"}})
    assert d.hash_settings("features") != a.hash_settings("features")
    # the output folder does not determine results
    assert a.updated({"output": {"dir": "x"}}).hash_settings() == a.hash_settings()
    # a hex sha256, the same across processes (no Python hash randomisation)
    h = StudyConfig().hash_settings("timing")
    assert len(h) == 64 and int(h, 16) >= 0
    assert h == settings_hash({"timing": {"kind": "fmri", "method": "average", "delays": [1, 2, 3, 4],
                                          "trim_start": 0, "trim_end": 0, "lanczos_window": None,
                                          "lanczos_cutoff": None}})
    with pytest.raises(ValueError, match="unknown section"):
        a.hash_settings("encodings")


def test_hash_survives_a_toml_round_trip(tmp_path):
    a = StudyConfig.model_validate({"layers": {"start": 0, "step": 5}, "stats": {"test": "cv_permutation",
                                                                               "tail": "normal"}})
    b = StudyConfig.from_toml(a.to_toml(tmp_path / "a.toml"))
    assert b.hash_settings() == a.hash_settings()


# -------------------------------------------------------------------- writes


def test_to_toml_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "study.toml"
    path.write_text("old contents\n")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        StudyConfig().to_toml(path)
    monkeypatch.undo()
    assert path.read_text() == "old contents\n"  # never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # no temp file left behind
    StudyConfig().to_toml(path)
    assert StudyConfig.from_toml(path) == StudyConfig()
