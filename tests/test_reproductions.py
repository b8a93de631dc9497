"""The reproduction configs (``examples/pythia_dynamics.toml``, ``instruction_tuning.toml``,
``meg_divergence.toml``) run as shipped, in reduced form, offline.

Each test reads the shipped file, changes only what points at data and
models (and shrinks the CV grids), runs it with the study runner and checks
what the study is about on a simulated recording in the real format with
planted responses: the planted checkpoint and layer win (Pythia), the
pairing and model-level statistics equal a direct computation (instruction
tuning), the badly predicted sentences are found divergent from the stored
held-out predictions (MEG). Models are tiny random ones in the real
architectures; the Pythia checkpoints sit as ``stepN`` revisions in a
Hugging Face cache folder the test writes, read offline.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from test_study_runner import _tiny_gpt2  # tiny random GPT-2 with the real GPT-2 BPE

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TEXT = (REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt").read_text().split()


# ------------------------------------------------------------------ MEG divergence

SEA = re.compile(r"\b(sea|boat|boatman|wind|rocks|water|harbour|waves)\b", re.I)


def _sea_verifier(hypothesis, sentences):
    """Log-odds that a sentence mentions the sea (a keyword rule standing in for a verifier LM)."""
    return np.array([3.0 * bool(SEA.search(s)) - 1.5 + 0.01 * len(s.split()) for s in sentences])


def test_meg_divergence_example_in_reduced_form(tmp_path):
    """HP-MEG format, 20 windows of 25 ms, predictions kept: they equal a hand-built nested CV, and the
    sentences whose responses the model cannot predict (planted: those about the sea) rank divergent."""
    from jaxalign import features, lm, ridge, timing
    from jaxalign.analysis import divergence as dv
    from jaxalign.studies import StudyConfig, load_results
    from jaxalign.studies.runner import run_study

    shipped = StudyConfig.from_toml(EXAMPLES / "meg_divergence.toml")
    assert shipped.timing.n_windows == 20 and shipped.output.predictions
    model_dir = _tiny_gpt2(tmp_path / "gpt2", 0)
    model, tok = lm.load(model_dir)
    words = TEXT[:600]  # 10 equal outer folds: fewer shapes to compile
    n, n_ch, sfreq = len(words), 6, shipped.dataset.sfreq
    per_word = np.asarray(features.word_features(model, tok, words, layers=[2], pooling="mean", context="words",
                                                 context_size=20))
    ids = dv.segment_sentences(words)
    texts = {i: " ".join(np.asarray(words)[ids == i]) for i in np.unique(ids)}
    sea = {i for i, t in texts.items() if SEA.search(t)}
    bad = np.isin(ids, list(sea))
    assert 5 <= len(sea) <= len(texts) - 5
    rng = np.random.default_rng(0)
    X = (per_word[0] - per_word[0].mean(0)) / per_word[0].std(0)
    signal = X @ rng.standard_normal((X.shape[1], 4))
    signal /= signal.std(0)
    signal[bad] = rng.standard_normal((bad.sum(), 4))  # what the model cannot predict
    meg = rng.standard_normal((n, n_ch, 20)) * 1e-13  # tesla, 25 ms bins (40 Hz)
    meg[:, :4, 10:18] += 3e-13 * signal[:, :, None]  # windows 10..17 (250-450 ms) on channels 0..3
    np.save(tmp_path / "meg.npy", meg)
    np.save(tmp_path / "words.npy", np.array(words))
    cfg = shipped.updated({
        "layers": [2], "models": [{"path": str(model_dir), "name": "gpt2-xl"}],
        "dataset": {"data": str(tmp_path / "meg.npy"), "words": str(tmp_path / "words.npy")},
        "encoding": {"alphas": {"logspace": [-1, 4, 6]}}, "output": {"formats": ["json", "csv"]}})
    s = run_study(cfg, out=tmp_path / "out", progress=False)
    res = load_results(s.out / "store")
    assert "prediction" not in res.arrays and "prediction" not in res.table  # kept out of the light views
    held = res.held_out("gpt2-xl", 2)
    pred, seen = held["prediction"], held["observed"]
    assert pred.shape == seen.shape == (n, 20, n_ch) and held["window"][12] == pytest.approx(0.3)

    # the same predictions by hand: window means, one nested CV with the config's folds
    Y = timing.windows_to_targets(timing.word_locked_windows(meg, sfreq, n_windows=20, width=0.025))
    Xz = timing.zscore_per_run(per_word, np.zeros(n, int), axis=-2).astype(np.float32)
    hand = ridge.nested_cv(Xz, Y, cfg.encoding.alpha_grid(), ridge.KFold(10), ridge.KFold(5), standardize="separate")
    np.testing.assert_allclose(pred, timing.targets_to_windows(hand.predictions[0], 20), atol=1e-5)
    np.testing.assert_allclose(seen, timing.targets_to_windows(hand.targets, 20), atol=1e-5)

    # the divergence analysis on the stored predictions (README "Reproductions: MEG divergence")
    r = np.asarray(ridge.pearson_r(seen.reshape(n, -1).astype(np.float64), pred.reshape(n, -1).astype(np.float64)))
    sig = dv.significant_channels(r.reshape(20, n_ch), n)
    assert sig[12:17, :4].all() and not sig[:, 4:].any()
    errors = dv.word_errors(seen, pred, sig)  # windows 12..16 (300-425 ms)
    table = dv.sentence_scores(errors, words)
    sets = dv.divergence_sets(table, n=5, validation=0.4, seed=0)
    divergent = set(sets.texts("divergent", "all"))
    convergent = set(sets.texts("convergent", "all"))
    assert divergent <= {texts[i] for i in sea} and not convergent & {texts[i] for i in sea}
    v = dv.hypothesis_validity(["mentions the sea, boats or the wind"], sets.validation.divergent,
                               sets.validation.convergent, _sea_verifier)
    assert v.ranked()["validity"].iloc[0] > 0.5


# ------------------------------------------------------------------ Pythia training dynamics

PYTHIA = "EleutherAI/pythia-160m"
STEPS = ("step0", "step1000", "step143000")


def _hub_cache(root: Path, repo: str, revisions: dict) -> Path:
    """A Hugging Face cache folder holding ``repo`` at each revision (name -> (kind, seed)): tiny random models
    saved by transformers, one snapshot per revision, ``refs/<name>`` naming its commit (the Hub's layout)."""
    from _tiny_lm import save_tiny

    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    for i, (name, (kind, seed)) in enumerate(revisions.items()):
        commit = f"{i + 1:040x}"
        (folder / "refs" / name).write_text(commit)
        save_tiny(folder / "snapshots" / commit, kind, seed=seed)
    return root


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """Point huggingface_hub at a cache folder of the test's own, offline."""
    import huggingface_hub
    from huggingface_hub import constants  # noqa: F401 (lazily imported submodule)

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def _write_hp_fmri(folder: Path, subjects, planted, *, kept=25, trim=(20, 15), n_runs=4, n_voxels=24, seed=0):
    """A Harry Potter fMRI folder (Toneva & Wehbe format: arrays trimmed by ``trim`` TRs per run, scan times and
    runs of the whole session, word times, words); responses planted from ``planted`` (scans, dims) on half of
    the voxels (the words are the caller's)."""
    rng = np.random.default_rng(seed)
    per_run = kept + sum(trim)
    runs = np.repeat(np.arange(1, n_runs + 1), per_run)
    times = 2.0 * np.arange(runs.size)
    keep = np.concatenate([np.r_[np.zeros(trim[0], bool), np.ones(kept, bool), np.zeros(trim[1], bool)]] * n_runs)
    np.save(folder / "time_fmri.npy", times)
    np.save(folder / "runs_fmri.npy", runs)
    signal = planted(times, runs)[keep]  # (kept scans, dims): the planted layer on the scan grid
    signal = (signal - signal.mean(0)) / signal.std(0)
    for s in subjects:
        B = rng.standard_normal((signal.shape[1], n_voxels // 2))
        y = signal @ B
        y /= y.std(0)
        Y = rng.standard_normal((keep.sum(), n_voxels))
        Y[:, : n_voxels // 2] += 1.5 * y
        np.save(folder / f"data_subject_{s}.npy", Y.astype(np.float32))


def test_pythia_dynamics_example_in_reduced_form(tmp_path, offline_hub):
    """stepN revisions of a tiny GPT-NeoX in a Hugging Face cache, read offline, x every 2nd layer x 3 subjects
    of an HP-format fMRI folder, with the random-features control and the property removal (one property
    here, spaCy labels): the planted checkpoint and layer score best, the random control about 0, every
    checkpoint its own line in the layer figure, a removal row per checkpoint x layer."""
    from jaxalign import features, io, lm
    from jaxalign.studies import StudyConfig, load_results
    from jaxalign.studies.encode import word_design
    from jaxalign.studies.runner import run_study

    pytest.importorskip("spacy", reason="the example's property removal labels words with spaCy (extra parse)")
    shipped = StudyConfig.from_toml(EXAMPLES / "pythia_dynamics.toml")
    assert shipped.features.remove is not None and shipped.features.labels == "spacy"
    _hub_cache(offline_hub, PYTHIA, {step: ("gpt_neox", seed) for seed, step in enumerate(STEPS)})
    hp = tmp_path / "hp"
    hp.mkdir()
    subjects = shipped.dataset.subjects
    # word times: ~1.5 words per scan over every scan of the session (trimmed ones included)
    n_scans = 4 * (25 + 35)
    rng = np.random.default_rng(1)
    onsets = np.sort(rng.uniform(0.5, 2.0 * n_scans - 0.5, int(1.5 * n_scans)))
    words = np.array((TEXT * 2)[: onsets.size])
    np.save(hp / "time_words_fmri.npy", onsets)
    np.save(hp / "words_fmri.npy", words)
    model, tok = lm.load(PYTHIA, revision="step1000")
    fcfg = shipped.features
    planted_layer = features.word_features(model, tok, list(words), layers=[2], pooling=fcfg.pooling,
                                           context=fcfg.context, context_size=fcfg.context_size)
    stim = io.Stimulus(words=words, onsets=onsets)

    def planted(times, runs):  # the study's own TR averaging and delays, on the whole session
        return word_design(np.asarray(planted_layer), stim, times, None, shipped.timing)[0]

    _write_hp_fmri(hp, subjects, planted)
    cfg = shipped.updated({"dataset": {"root": str(hp)},
                           "models": [{"hub": PYTHIA, "name": "pythia-160m", "revisions": list(STEPS)}],
                           # reduced: 100 kept scans in equal folds without gaps (one shape to compile), fewer penalties
                           "features": {"remove": ["tense"]},  # reduced: one of the eight
                           "encoding": {"alphas": {"logspace": [-2, 6, 5]}, "outer": {"gap": 0},
                                        "inner": {"n_splits": 5}},
                           "stats": {"n_permutations": 100}, "output": {"formats": ["json", "csv", "png"]}})
    s = run_study(cfg, out=tmp_path / "out", progress=False)
    t = load_results(s.out / "store").table
    group = t[t.subject == "group"]
    mean = group.groupby(["feature_set", "revision", "layer"])["score"].mean()
    model_rows = mean.loc["model"]
    assert set(model_rows.index) == {(step, layer) for step in STEPS for layer in (0, 2)}
    assert model_rows.idxmax() == ("step1000", 2), model_rows
    others = model_rows.drop(("step1000", 2))
    assert model_rows[("step1000", 2)] > others.max() + 0.05, model_rows
    assert abs(mean.loc["control"].iloc[0]) < 0.1
    assert set(t[t.subject != "group"].subject) == set(subjects)
    assert (s.out / "figures" / "layers.png").stat().st_size > 10_000
    import pandas as pd

    removal = pd.read_csv(s.out / "removal" / "removal.csv")
    assert set(removal.property) == {"tense"}
    assert set(zip(removal.revision, removal.layer)) == {(step, layer) for step in STEPS for layer in (0, 2)}


# ------------------------------------------------------------------ instruction tuning



def test_instruction_tuning_example_in_reduced_form(tmp_path, offline_hub):
    """Two base / tuned pairs of tiny stand-ins under the real Hub ids, on 3 Alice listeners with the
    extrapolated ceiling: every model gets a ceiling-normalised score, and the paired change and the
    correlation with log10(parameters) equal a direct computation from the results table."""
    import pandas as pd

    from _shared_data import DATA
    from jaxalign.analysis import models as mdl
    from jaxalign.stats import pearson_pvalue
    from jaxalign.studies import StudyConfig, load_results
    from jaxalign.studies.runner import run_study

    if not (DATA / "alice" / "fmri").is_dir():
        pytest.skip(f"the Alice fMRI data is absent ({DATA / 'alice'})")
    shipped = StudyConfig.from_toml(EXAMPLES / "instruction_tuning.toml")
    side = pd.read_csv(EXAMPLES / "instruction_tuning_models.csv", index_col="model")
    names = [m.label for m in shipped.models]
    assert sorted(names) == sorted(side.index)  # every model has its row, and only those
    assert set(side["base"].dropna()) <= set(names) - set(side["base"].dropna().index)
    keep = names[:4]  # the first two pairs, as tiny random GPT-2s under the real Hub ids
    for i, spec in enumerate(shipped.models[:4]):
        folder = offline_hub / ("models--" + spec.hub.replace("/", "--"))
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(f"{i + 1:040x}")
        _tiny_gpt2(folder / "snapshots" / f"{i + 1:040x}", seed=i)
    cfg = shipped.updated({
        "models": [m.model_dump(exclude_none=True) for m in shipped.models[:4]],
        "dataset": {"root": str(DATA / "alice"), "n_subjects": 3},
        # reduced: no gaps (fewer shapes to compile), 5 penalties, 200 sign flips, 20 ceiling bootstraps
        "encoding": {"alphas": {"logspace": [-1, 5, 4]}, "outer": {"gap": 0}},
        "stats": {"n_permutations": 200, "ceiling": {"method": "extrapolation", "n_bootstraps": 20}},
        "output": {"formats": ["csv"]}})
    s = run_study(cfg, out=tmp_path / "out", progress=False)
    table = load_results(s.out / "store").table
    scores = mdl.model_scores(table)  # best layer's mean score / ceiling over the 6 ROIs
    assert list(scores.index) == keep and np.isfinite(scores["score"]).all()
    g = table[(table.subject == "group") & (table.feature_set == "model")]
    for name in keep:
        by_layer = g[g.model == name].groupby("layer")["score_over_ceiling"].mean()
        assert scores.at[name, "score"] == pytest.approx(by_layer.max())
        assert scores.at[name, "layer"] == by_layer.idxmax()

    change = mdl.paired_change(scores["score"], side.loc[keep, "base"])
    assert list(change["tuned"]) == [keep[1], keep[3]] and list(change["base"]) == [keep[0], keep[2]]
    direct = [(scores.at[t, "score"] - scores.at[b, "score"]) / abs(scores.at[b, "score"])
              for b, t in zip(change["base"], change["tuned"])]
    np.testing.assert_allclose(change["relative"], direct)
    assert change.attrs["mean"].loc["score", "relative"] == pytest.approx(np.mean(direct))

    props = np.log10(side.loc[keep, ["parameters"]]).rename(columns={"parameters": "log10_params"})
    corr = mdl.correlate_with_properties(scores[["score"]], props)
    r = np.corrcoef(scores["score"], props["log10_params"])[0, 1]
    assert corr["r"].iloc[0] == pytest.approx(r) and corr["p"].iloc[0] == pytest.approx(float(pearson_pvalue(r, 4)))
    fig = mdl.plot_properties(scores[["score"]], props, corr, path=tmp_path / "models.png")
    assert (tmp_path / "models.png").stat().st_size > 5_000 and fig.axes


# ------------------------------------------------------------------ [output] predictions


def test_predictions_without_windows_and_bad_settings(tmp_path):
    """An 'arrays' study keeps (samples, targets) predictions equal to nested_cv's; shuffle folds (no
    prediction per sample) are refused naming the key, and held_out names what is missing."""
    from jaxalign import ridge
    from jaxalign.studies import ConfigError, StudyConfig, load_results
    from jaxalign.studies.runner import run_study

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 80, 5)).astype(np.float32)
    Y = X[1] @ rng.standard_normal((5, 3)) + rng.standard_normal((80, 3))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    base = {"dataset": {"kind": "arrays", "features": str(tmp_path / "X.npy"), "targets": str(tmp_path / "Y.npy")},
            "encoding": {"alphas": [0.1, 10.0, 1000.0], "detrend": "none", "outer": {"kind": "kfold", "n_splits": 4},
                         "inner": {"kind": "kfold", "n_splits": 4}},
            "stats": {"test": "none"}, "output": {"formats": ["csv"], "predictions": True}}
    s = run_study(StudyConfig.model_validate(base), out=tmp_path / "out", progress=False)
    res = load_results(s.out / "store")
    held = res.held_out("features", 1)
    hand = ridge.nested_cv(X, Y, [0.1, 10.0, 1000.0], ridge.KFold(4), ridge.KFold(4), standardize="separate")
    assert held["window"] is None and held["prediction"].shape == (80, 3)
    np.testing.assert_allclose(held["prediction"], hand.predictions[1], atol=1e-5)
    np.testing.assert_allclose(held["observed"], hand.targets, atol=1e-5)
    with pytest.raises(KeyError, match="no unit .* model 'other'"):
        res.held_out("other", 1)
    bad = StudyConfig.model_validate({**base, "encoding": {**base["encoding"], "outer": {"kind": "shuffle"}}})
    with pytest.raises(ConfigError, match="output.predictions: outer kind 'shuffle'"):
        run_study(bad, out=tmp_path / "bad", progress=False)
