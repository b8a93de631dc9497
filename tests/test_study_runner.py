"""The study runner (``jaxalign run``): same numbers as the Alice study, resume, sharing, recomputation.

Real Alice fMRI data (``../shared/data/alice``, skipped without it) with
tiny random GPT-2 checkpoints written by the tests (fast, no network), so
that every unit is cheap; one test runs ``examples/alice.toml`` with the
real SmolLM2 weights and checks the README's LPTL numbers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _shared_data import DATA  # real data beside the project, read in place
from _subprocess import fast_compile_env

ALICE = DATA / "alice"
needs_alice = pytest.mark.skipif(not (ALICE / "fmri").is_dir(),
                                 reason=f"the Alice fMRI data is absent (looked for {ALICE})")
REPO = Path(__file__).resolve().parents[1]


def _tiny_gpt2(path: Path, seed: int) -> Path:
    """A tiny random GPT-2 checkpoint with the real GPT-2 BPE (or a trained one), saved with transformers."""
    import torch
    import transformers

    from test_features import _gpt2_tokenizer_files, _randomize

    path.mkdir(parents=True, exist_ok=True)
    _gpt2_tokenizer_files(path)
    tok = transformers.GPT2Tokenizer.from_pretrained(path)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=4096, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    _randomize(transformers.GPT2LMHeadModel(config), seed).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return [_tiny_gpt2(root / f"gpt2_{seed}", seed) for seed in (0, 1, 2)]


def _config(tmp_path, models, *, extra="", n_subjects=3, permutations=200, name="study.toml") -> Path:
    model_tables = "".join(f'[[models]]\npath = "{m}"\nname = "tiny{i}"\n\n' for i, m in enumerate(models))
    text = f"""layers = [0, 2]

[dataset]
kind = "alice"
root = "{ALICE}"
n_subjects = {n_subjects}

{model_tables}[features]
baseline = "word_rate"

[encoding]
alphas = {{ logspace = [-1, 6, 8] }}
confounds = ["sndpwr", "motion"]
confound_fit = "whole_series"

[encoding.inner]
gap = 0

[stats]
n_permutations = {permutations}

[output]
dir = "out"
formats = ["json", "csv"]
{extra}"""
    path = tmp_path / name
    path.write_text(text)
    return path


def _cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "jaxalign.cli", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=fast_compile_env(**(env or {})))


def _units(out: Path) -> dict:
    """key -> provenance of every finished unit of a run's store."""
    units = {}
    for d in sorted((out / "store" / "units").iterdir()):
        if (d / "DONE").is_file():
            units[d.name] = json.loads((d / "unit.json").read_text())["provenance"]
    return units


def _scores(out: Path):
    from jaxalign.studies import load_results

    t = load_results(out / "store").table
    cols = ["model", "revision", "layer", "subject", "target"]
    return t.sort_values(cols).reset_index(drop=True)[cols + ["score", "p", "p_fdr"]]


# ------------------------------------------------------------------ numbers


@needs_alice
def test_runner_matches_the_alice_study(tiny_models, tmp_path):
    """Same data, features and conventions: the runner's r and p equal jaxalign.studies.alice's."""
    from jaxalign.studies import alice
    from jaxalign.studies.runner import format_summary, run_study

    cfg = _config(tmp_path, tiny_models[:1])
    cfg.write_text(cfg.read_text().replace('baseline = "word_rate"', 'baseline = "word_rate"\ncontrol = "random"'))
    s = run_study(cfg, progress=False)
    assert s.models_loaded == 1 and s.reused == []
    per_word = np.load(next((s.out / "cache" / "features").glob("*.npy")))
    assert per_word.shape[0] == 2  # layers 0 and 2
    data = alice.load_data(ALICE, n_subjects=3)
    ref = alice.analyse(data, per_word, ["layer 0", "layer 2"], n_permutations=200, control="random",
                        progress=False)
    group = s.group
    names = {"word rate": "word rate", "layer 0": "tiny0 layer 0", "layer 2": "tiny0 layer 2",
             "random vectors": "random vectors"}
    for ref_name, name in names.items():
        for roi in data.rois:
            got = group[name][roi]
            assert got["score"] == pytest.approx(ref["mean_r"][ref_name][roi], abs=1e-6)
            assert got["p"] == pytest.approx(ref["p"][ref_name][roi], abs=1e-12)
            assert got["p_fdr"] == pytest.approx(ref["p_fdr"][ref_name][roi], abs=1e-12)
            if ref_name != "word rate":
                assert got["p_vs_baseline_fdr"] == pytest.approx(ref["p_vs_baseline_fdr"][ref_name][roi],
                                                                 abs=1e-12)
    # per-subject rows: the same r as the study's per-subject table
    t = s.table
    row = t[(t.model == "tiny0") & (t.layer == 2) & (t.subject == data.subjects[1]) & (t.target == "LPTL")]
    assert float(row.score.iloc[0]) == pytest.approx(ref["r_per_subject"][data.subjects[1]]["layer 2"]["LPTL"],
                                                     abs=1e-6)
    text = format_summary(s)
    assert "word rate" in text and "tiny0 layer 2" in text and "random vectors" in text
    saved = json.loads((s.out / "results.json").read_text())
    assert saved["group"]["tiny0 layer 0"]["LPTL"]["score"] == pytest.approx(ref["mean_r"]["layer 0"]["LPTL"],
                                                                             abs=1e-6)
    assert (s.out / "results.csv").is_file() and (s.out / "study.toml").is_file()


@needs_alice
def test_changed_settings_recompute_only_what_depends_on_them(tiny_models, tmp_path):
    from jaxalign.studies import StudyConfig
    from jaxalign.studies.runner import run_study

    cfg = StudyConfig.from_toml(_config(tmp_path, tiny_models[:1]))
    first = run_study(cfg, progress=False)
    out = first.out

    def kinds(keys):  # "fit" / "group" per unit key
        return sorted("group" if json.loads((out / "store" / "units" / k / "unit.json").read_text())["labels"]
                      ["subject"] == "group" else "fit" for k in keys)

    assert kinds(first.computed) == ["fit", "fit", "group", "group"]  # baseline + tiny0, and their group units
    assert first.models_loaded == 1
    again = run_study(cfg, progress=False)
    assert again.computed == [] and again.models_loaded == 0 and len(again.reused) == 4
    # the group test only: fits reused, group units recomputed
    more = run_study(cfg.updated({"stats": {"n_permutations": 300}}), progress=False)
    assert kinds(more.computed) == ["group", "group"] and more.models_loaded == 0
    assert kinds(more.reused) == ["fit", "fit"]
    # the delays: every fit recomputed, but the features are cached: no model is loaded
    delayed = run_study(cfg.updated({"timing": {"delays": [2, 3, 4]}}), progress=False)
    assert kinds(delayed.computed) == ["fit", "fit", "group", "group"] and delayed.models_loaded == 0
    # one more model: the first model's and the baseline's fits are reused, the group family grows
    two = run_study(cfg.updated({"models": [{"path": str(tiny_models[0]), "name": "tiny0"},
                                            {"path": str(tiny_models[1]), "name": "tiny1"}]}), progress=False)
    assert two.models_loaded == 1
    assert kinds(two.computed) == ["fit", "group", "group", "group"]
    assert kinds(two.reused) == ["fit", "fit"]
    assert set(two.table.model) == {"word rate", "tiny0", "tiny1"}


@needs_alice
def test_kill_9_mid_run_resumes_without_recomputing(tiny_models, tmp_path):
    """A real ``kill -9`` of ``jaxalign run`` after its first unit; the rerun finishes the rest only.
    (Several processes sharing one store: tests/test_study_launcher.py, real workers, one killed.)"""
    cfg = _config(tmp_path, tiny_models[:2])
    out = tmp_path / "out"
    proc = _cli("run", cfg, "--quiet")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "store" / "units").is_dir() and _units(out):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _units(out)
    assert 1 <= len(before) < 3 + 3  # 3 fits (baseline + 2 models), 3 group units
    rerun = _cli("run", cfg, "--quiet")
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    after = _units(out)
    assert len(after) == 6
    for key, prov in before.items():  # nothing finished was recomputed
        assert after[key] == prov
    assert not [p for p in (out / "store" / "units").iterdir() if p.name.endswith(".tmp")]
    # identical to an uninterrupted run
    clean = _config(tmp_path, tiny_models[:2], name="clean.toml")
    clean.write_text(clean.read_text().replace('dir = "out"', 'dir = "clean"'))
    done = _cli("run", clean, "--quiet")
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    a, b = _scores(out), _scores(tmp_path / "clean")
    assert a[["model", "layer", "subject", "target"]].equals(b[["model", "layer", "subject", "target"]])
    np.testing.assert_array_equal(a.score.to_numpy(), b.score.to_numpy())
    np.testing.assert_array_equal(a.p.to_numpy(), b.p.to_numpy())


def _synthetic_config(tmp_path, models, name="synthetic.toml", n_subjects=3) -> Path:
    """The synthetic Alice study, lean: one layer, 2 x 2 folds, 50 permutations (cheap units)."""
    tables = "".join(f'[[models]]\npath = "{m}"\nname = "tiny{i}"\n' for i, m in enumerate(models))
    path = tmp_path / name
    path.write_text(f"""layers = [1]
[dataset]
kind = "alice"
source = "synthetic"
n_subjects = {n_subjects}
{tables}[encoding]
alphas = {{ logspace = [0, 3, 3] }}
[encoding.outer]
n_splits = 2
[encoding.inner]
n_splits = 2
[stats]
n_permutations = 50
[output]
dir = "out"
formats = ["csv"]
""")
    return path


# ------------------------------------------------------------------ errors


@needs_alice
def test_bad_input_is_answered_before_any_work(tiny_models, tmp_path, capsys):
    from jaxalign.cli import main

    cfg = _config(tmp_path, tiny_models[:1])
    beyond = tmp_path / "beyond.toml"
    beyond.write_text(cfg.read_text().replace("layers = [0, 2]", "layers = [0, 7]"))
    assert main(["run", str(beyond), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "layers: [7] beyond a model with 2 layers" in err and "tiny0" in err
    missing = tmp_path / "missing.toml"
    missing.write_text(cfg.read_text().replace(str(tiny_models[0]), str(tmp_path / "nowhere")))
    assert main(["run", str(missing), "--out", str(tmp_path / "o2")]) == 2
    assert "models[0]" in capsys.readouterr().err
    typo = tmp_path / "typo.toml"
    typo.write_text(cfg.read_text().replace("n_permutations", "n_permutation"))
    assert main(["run", str(typo)]) == 2
    assert "stats.n_permutation: unknown key" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["run", str(cfg), "--out", str(blocked)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a results folder" in capsys.readouterr().err
    assert not (tmp_path / "o1" / "store").exists() and not (tmp_path / "o2" / "store").exists()


def test_version_and_help(capsys):
    from jaxalign import __version__
    from jaxalign.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    for command in ("run", "extract", "report", "demo", "alice"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "example" in text, command
    main_help = subprocess.run([sys.executable, "-m", "jaxalign.cli", "--help"], capture_output=True, text=True,
                               cwd=REPO)
    for command in ("run", "extract", "report", "demo", "alice"):
        assert command in main_help.stdout


def test_commands_can_be_registered():
    from jaxalign._core.commands import COMMANDS, Command, register_command
    from jaxalign.cli import build_parser

    seen = {}
    cmd = Command("hello-test", "say hello", "Says hello.", lambda p: p.add_argument("--name", default="x"),
                  lambda args: seen.setdefault("name", args.name) and 0)
    register_command(cmd)
    try:
        args = build_parser().parse_args(["hello-test", "--name", "y"])
        args.func(args)
        assert seen == {"name": "y"}
        with pytest.raises(ValueError, match="registered twice"):
            register_command(Command("hello-test", "", "", lambda p: None, lambda a: 0))
    finally:
        COMMANDS.pop("hello-test")


# ------------------------------------------------------------------ MEG


def test_word_locked_meg_windows_through_the_runner(tiny_models, tmp_path):
    """Harry-Potter-format MEG: planted layer-2 responses in 3 windows x 4 channels are found there only,
    and every score equals a hand-built nested CV on (words, windows x channels)."""
    from jaxalign import features, lm, ridge, timing
    from jaxalign.studies import load_results
    from jaxalign.studies.runner import run_study

    text = (REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt").read_text().split()[:300]
    model, tok = lm.load(tiny_models[0])
    per_word = np.asarray(features.word_features(model, tok, text, layers=[0, 2]))
    rng = np.random.default_rng(0)
    sfreq, n_times, n_ch = 100.0, 50, 6  # 0.5 s epochs
    meg = rng.standard_normal((len(text), n_ch, n_times)) * 1e-12  # Tesla
    X2 = (per_word[1] - per_word[1].mean(0)) / per_word[1].std(0)
    signal = X2 @ rng.standard_normal((X2.shape[1], 4))
    signal /= signal.std(0)
    meg[:, :4, 10:25] += 2e-12 * signal[:, :, None]  # windows 2, 3, 4 of 50 ms (samples 10..24)
    np.save(tmp_path / "meg.npy", meg)
    np.save(tmp_path / "words.npy", np.array(text))
    cfg = tmp_path / "meg.toml"
    cfg.write_text(f"""layers = [0, 2]
[dataset]
kind = "harry_potter_meg"
data = "meg.npy"
words = "words.npy"
sfreq = {sfreq}
[[models]]
path = "{tiny_models[0]}"
name = "tiny0"
[timing]
kind = "meg"
start = 0.0
stop = 0.5
width = 0.05
[encoding]
detrend = "none"
alphas = {{ logspace = [-1, 6, 8] }}
[encoding.outer]
n_splits = 4
gap = 0
[stats]
test = "none"
[output]
dir = "out"
formats = ["csv"]
""")
    s = run_study(cfg, progress=False)
    res = load_results(s.out / "store")
    score = res.arrays["score"].sel(model="tiny0", revision="main", subject="meg").transpose("layer", "window", "target")
    assert score.shape == (2, 10, n_ch)
    r = score.values
    planted = r[1, 2:5, :4]
    assert planted.min() > 0.5, planted
    others = np.delete(r[1], [2, 3, 4], axis=0)
    assert np.abs(others).max() < 0.25 and np.abs(r[1, :, 4:]).max() < 0.25
    assert set(res.table.window.dropna()) == {round(0.05 * k, 6) for k in range(10)}
    from jaxalign.studies.runner import format_summary

    table = format_summary(s)  # 60 window x channel targets: one summary line per layer
    assert "mean r" in table and "tiny0 main layer 2 meg" in table and "window" in table
    # the same numbers by hand: window means, flattened window-major, one nested CV over the layers
    Y = timing.windows_to_targets(timing.word_locked_windows(meg, sfreq, n_windows=10, width=0.05))
    X = timing.zscore_per_run(per_word, np.zeros(len(text), int), axis=-2)
    hand = ridge.nested_cv(X.astype(np.float32), Y, np.logspace(-1, 6, 8), ridge.ContiguousKFold(4),
                           ridge.ContiguousKFold(5), standardize="separate")
    ref = timing.targets_to_windows(np.asarray(hand.fold_scores, np.float64).mean(-2), 10)
    np.testing.assert_allclose(r, ref, atol=1e-6)


def test_continuous_meg_raw_through_the_runner(tiny_models, tmp_path):
    """A continuous MNE Raw (tesla) with word annotations: each word's PCA'd features as an impulse at its
    onset sample, sample delays 0..7; planted layer-2 responses on 3 channels are found there, and every
    score equals the same pipeline built by hand (PCA, impulses, delays, z-score, nested CV)."""
    mne = pytest.importorskip("mne")
    from jaxalign import features, lm, ridge, timing
    from jaxalign.studies import load_results
    from jaxalign.studies.runner import run_study

    text = (REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt").read_text().split()[:160]
    model, tok = lm.load(tiny_models[0])
    per_word = np.asarray(features.word_features(model, tok, text, layers=[0, 2]), np.float64)
    sfreq, n_ch, k, delays = 100.0, 5, 4, list(range(8))
    onsets = 0.5 + 0.3 * np.arange(len(text))
    n = int((onsets[-1] + 1.0) * sfreq)

    def pca(F):
        U, S, _ = np.linalg.svd(F - F.mean(0), full_matrices=False)
        return U[:, :k] * S[:k]

    rng = np.random.default_rng(3)
    drive = timing.sample_delays(timing.onset_impulses(onsets, pca(per_word[1]), sfreq, n), delays)
    drive = (drive - drive.mean(0)) / drive.std(0)
    data = rng.standard_normal((n, n_ch)) * 1e-12
    data[:, :3] += 0.6e-12 * (drive @ rng.standard_normal((drive.shape[1], 3))) / np.sqrt(drive.shape[1])
    info = mne.create_info([f"MEG{i:03d}" for i in range(n_ch)], sfreq, "mag")
    raw = mne.io.RawArray(data.T, info, verbose="error")
    raw.set_annotations(mne.Annotations(onsets, [0.0] * len(text), text))
    raw.save(tmp_path / "story-raw.fif", verbose="error")
    cfg = tmp_path / "cont.toml"
    cfg.write_text(f"""layers = [0, 2]
[dataset]
kind = "mne"
path = "story-raw.fif"
data = "raw"
[[models]]
path = "{tiny_models[0]}"
name = "tiny0"
[features]
baseline = "word_rate"
[timing]
kind = "continuous"
delays = {delays}
pca = {k}
[encoding]
detrend = "none"
alphas = {{ logspace = [-1, 5, 7] }}
[encoding.outer]
n_splits = 4
gap = 10
[encoding.inner]
n_splits = 4
[stats]
test = "none"
[output]
dir = "out"
formats = ["csv"]
""")
    s = run_study(cfg, progress=False)
    res = load_results(s.out / "store")
    t = res.table
    r = {layer: g.sort_values("target")["score"].to_numpy() for layer, g in t[t.model == "tiny0"].groupby("layer")}
    assert r[2][:3].min() > 0.3 and np.abs(r[2][3:]).max() < 0.1, r[2]
    assert (t.model == "word rate").any()  # the baseline: a word-rate impulse train, delayed
    # by hand
    X = np.stack([timing.sample_delays(timing.onset_impulses(onsets, pca(F), sfreq, n), delays)
                  for F in per_word])
    X = timing.zscore_per_run(X, np.zeros(n, int), axis=-2).astype(np.float32)
    Y = timing.zscore_per_run(data, np.zeros(n, int))
    hand = ridge.nested_cv(X, Y, np.logspace(-1, 5, 7), ridge.ContiguousKFold(4, gap=10),
                           ridge.ContiguousKFold(4, gap=10), standardize="separate")
    ref = np.asarray(hand.fold_scores, np.float64).mean(-2)
    np.testing.assert_allclose(np.stack([r[0], r[2]]), ref, atol=2e-5)


@needs_alice
def test_extract_then_run_loads_no_model(tiny_models, tmp_path, capsys):
    from jaxalign.cli import main
    from jaxalign.studies.runner import run_study

    cfg = _config(tmp_path, tiny_models[:2])
    assert main(["extract", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("(extracted)") == 2 and "3 layers" not in out and "2 layers x 2127 words" in out
    assert main(["extract", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert capsys.readouterr().out.count("(cached)") == 2
    s = run_study(cfg, out=tmp_path / "o", progress=False)
    assert s.models_loaded == 0 and len(s.computed) == 3 + 3  # baseline + 2 models, and their group units


# ------------------------------------------------------------------ NIfTI


def test_nifti_runs_restart_their_clock_and_maps_have_their_mask(tiny_models, tmp_path):
    """Two NIfTI runs whose scan and word times both restart at 0: each run's words go to its own scans.
    The runner equals a design built run by run by hand, and equals studies.encode on the same data."""
    nib = pytest.importorskip("nibabel")
    from jaxalign import features, io, lm, ridge, timing
    from jaxalign.studies import StudyConfig, encode, load_results
    from jaxalign.studies.runner import run_study

    rng = np.random.default_rng(8)
    text = (REPO / "jaxalign" / "studies" / "data" / "lighthouse.txt").read_text().split()
    n_vols, tr = (70, 60), 2.0
    words_per_run = [text[:150], text[150:280]]
    onsets = [np.sort(rng.uniform(0.5, n * tr - 1, len(w))) for n, w in zip(n_vols, words_per_run)]
    model, tok = lm.load(tiny_models[0])
    # the runner's context: the whole word list as one passage (run 2 continues run 1's story)
    allf = np.asarray(features.word_features(model, tok, words_per_run[0] + words_per_run[1], layers=[2]))[0]
    feats = [allf[:150], allf[150:]]
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    mask = np.zeros((4, 3, 2), bool)
    mask[1:, :, 1] = True  # 9 voxels
    images = []
    weights = rng.standard_normal((2 * feats[0].shape[1], 9))  # one response model for both runs
    for k, (n, f, on) in enumerate(zip(n_vols, feats, onsets)):
        X = timing.fir_delays(timing.average_per_tr(f, on, tr * np.arange(n)), [1, 2], None)
        sig = X @ weights
        sig = (sig - sig.mean(0)) / sig.std(0)
        vol = rng.standard_normal((4, 3, 2, n)).astype(np.float32)
        vol[mask] += 1.5 * sig.T
        img = nib.Nifti1Image(vol, affine)
        img.header.set_zooms((2.0, 2.0, 2.5, tr))
        images.append(tmp_path / f"run{k + 1}.nii.gz")
        nib.save(img, str(images[-1]))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(tmp_path / "mask.nii.gz"))
    (tmp_path / "words.tsv").write_text("word\tonset\trun\n" + "".join(
        f"{w}\t{t:.4f}\t{k + 1}\n" for k in range(2) for w, t in zip(words_per_run[k], onsets[k])))
    cfg_path = tmp_path / "nifti.toml"
    cfg_path.write_text(f"""layers = [0, 2]
[dataset]
kind = "nifti"
images = ["run1.nii.gz", "run2.nii.gz"]
words = "words.tsv"
mask = "mask.nii.gz"
[[models]]
path = "{tiny_models[0]}"
name = "tiny0"
[features]
baseline = "word_rate"
[timing]
delays = [1, 2]
[encoding]
detrend = "none"
[encoding.outer]
kind = "group"
[encoding.inner]
kind = "contiguous"
n_splits = 4
[stats]
test = "cv_permutation"
n_permutations = 19
[output]
dir = "out"
formats = ["csv", "nifti"]
""")
    s = run_study(cfg_path, progress=False)
    t = load_results(s.out / "store").table
    assert set(t.model) == {"tiny0", "word rate"}
    t = t[t.model == "tiny0"]
    r2 = t[t.layer == 2].sort_values("target", key=lambda c: c.astype(int)).score.to_numpy()
    assert (r2 > 0.3).all(), r2  # planted from layer 2 run by run: found
    assert t.p.notna().all() and ((t.p > 0) & (t.p <= 1)).all()
    # by hand: each run's words averaged into that run's scans, delays within runs, runs as outer folds
    rec = io.read_nifti(images, tmp_path / "mask.nii.gz")
    X = np.concatenate([timing.fir_delays(timing.average_per_tr(f, on, tr * np.arange(n)), [1, 2], None)
                        for n, f, on in zip(n_vols, feats, onsets)])
    runs = np.repeat([0, 1], n_vols)
    hand = ridge.nested_cv(timing.zscore_per_run(X, runs).astype(np.float32), rec.data.astype(np.float64),
                           np.logspace(-1, 6, 8), ridge.LeaveOneGroupOut(gap=5), ridge.ContiguousKFold(4, gap=5),
                           groups=runs, standardize="separate")
    np.testing.assert_allclose(r2, np.asarray(hand.fold_scores, np.float64).mean(0), atol=1e-5)
    # studies.encode on the same recording and config: the same numbers
    cfg = StudyConfig.from_toml(cfg_path)
    from jaxalign.studies import load_dataset

    ds = load_dataset(cfg)
    enc = encode(ds.stimulus, ds.recordings[ds.subjects[0]], (model, tok),
                 config=cfg.updated({"features": {"baseline": "none"}}))
    np.testing.assert_allclose(enc.r[1], r2, atol=1e-6)
    np.testing.assert_allclose(enc.p[1], t[t.layer == 2].sort_values("target", key=lambda c: c.astype(int)).p, atol=0)
    # where the targets are, for maps
    m = nib.load(str(s.out / "geometry" / f"{ds.subjects[0]}_mask.nii.gz"))
    np.testing.assert_array_equal(np.asarray(m.dataobj).astype(bool), mask)
    np.testing.assert_allclose(m.affine, affine)
    r_map = nib.load(str(next((s.out / "maps").glob("tiny0_*layer2*_r.nii.gz"))))
    vol = np.asarray(r_map.dataobj)
    np.testing.assert_allclose(vol[mask], r2, atol=1e-6)
    assert np.isnan(vol[~mask]).all()


@needs_alice
def test_fit_then_stats_stages(tiny_models, tmp_path, capsys):
    from jaxalign.cli import main

    cfg = _config(tmp_path, tiny_models[:1])
    out = tmp_path / "staged"
    assert main(["stats", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "2 of 2 fit unit(s)" in capsys.readouterr().err
    assert main(["fit", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert len(_units(out)) == 2  # fits only
    assert main(["stats", str(cfg), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "0 unit(s) computed" not in text.splitlines()[-1] and "tiny0 layer 2" in text
    units = _units(out)
    assert len(units) == 4
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["group"]) == {"word rate", "tiny0 layer 0", "tiny0 layer 2"}


@needs_alice
def test_features_cache_is_keyed_by_the_words(tiny_models, tmp_path):
    """Two stimuli, one output folder: the second never reads the first one's cached features."""
    from jaxalign.studies import StudyConfig
    from jaxalign.studies.runner import plan_study

    cfg = StudyConfig.from_toml(_config(tmp_path, tiny_models[:1]))
    a = plan_study(cfg, tmp_path / "o").models[0].features_key
    np.save(tmp_path / "meg.npy", np.zeros((3, 2, 10)))
    np.save(tmp_path / "w.npy", np.array(["a", "b", "c"]))
    other = cfg.updated({"dataset": {"kind": "harry_potter_meg", "data": str(tmp_path / "meg.npy"),
                                     "words": str(tmp_path / "w.npy"), "sfreq": 100.0},
                         "timing": {"kind": "meg", "stop": 0.1, "width": 0.05},
                         "features": {"baseline": "none"}, "encoding": {"confounds": []},
                         "stats": {"test": "none"}})
    b = plan_study(other, tmp_path / "o").models[0].features_key
    assert a != b


def test_synthetic_alice_through_the_runner(tiny_models, tmp_path, capsys):
    """source 'synthetic' (and 'auto' without the data): the embedded text with planted responses."""
    from jaxalign.cli import main

    cfg = tmp_path / "syn.toml"
    cfg.write_text(f"""layers = [0, 1, 2]
[dataset]
kind = "alice"
source = "synthetic"
n_subjects = 6
[[models]]
path = "{tiny_models[0]}"
name = "tiny0"
[features]
baseline = "word_rate"
[encoding]
confounds = ["sndpwr"]
[stats]
n_permutations = 500
[output]
dir = "out"
formats = ["csv"]
""")
    assert main(["run", str(cfg), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "synthetic study, planted from tiny0 layer 1" in text
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["dataset"]["source"] == "synthetic" and len(summary["dataset"]["subjects"]) == 6
    g = summary["group"]["tiny0 layer 1"]
    gains = summary["dataset"]["planted"]["gains"]  # LATL 0.5, RATL 0 (null), LPTL 0.8, ...
    assert g["LPTL"]["score"] > 0.3 and g["LPTL"]["p_fdr"] < 0.05
    assert abs(g["RATL"]["score"]) < 0.15 and gains["RATL"] == 0
    assert g["LPTL"]["score"] > summary["group"]["word rate"]["LPTL"]["score"]


# --------------------------------------------------------- jax.distributed


def test_distributed_run_over_two_processes_equals_one_process(tiny_models, tmp_path):
    """``jaxalign run --coordinator ... --num-processes 2``: two real processes, one computation
    (each ridge fit's targets sharded over both), process 0 writes; same table as one process."""
    import socket

    from jaxalign.studies.runner import run_study

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    single = _synthetic_config(tmp_path, tiny_models[:1])  # one fit unit and its group unit
    run_study(single, out=tmp_path / "single", progress=False)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [_cli("run", single, "--out", tmp_path / "multi", "--quiet", "--coordinator",
                  f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i, env=env)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "results:" in outs[0][0] and "results:" not in outs[1][0]  # process 0 reports
    units = _units(tmp_path / "multi")
    assert {prov["pid"] for prov in units.values()} == {procs[0].pid}  # process 0 alone wrote
    a, b = _scores(tmp_path / "single"), _scores(tmp_path / "multi")
    np.testing.assert_array_equal(a[["model", "layer", "subject", "target"]].to_numpy(),
                                  b[["model", "layer", "subject", "target"]].to_numpy())
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["p"], a["p"], rtol=1e-6, atol=1e-6)
    assert (tmp_path / "multi" / "results.csv").is_file()


def test_distributed_flags_are_checked_before_any_work(tmp_path, capsys):
    from jaxalign import cli

    cfg = tmp_path / "s.toml"
    cfg.write_text('[dataset]\nkind = "alice"\nsource = "synthetic"\n\n[[models]]\nname = "x"\npath = "."\n')
    for flags, msg in ((["--num-processes", "0"], "--num-processes must be >= 1"),
                       (["--num-processes", "2", "--process-id", "2"], "--process-id must be in 0..1"),
                       (["--coordinator", "nohost"], "--coordinator must be HOST:PORT")):
        assert cli.main(["run", str(cfg), "--out", str(tmp_path / "o"), *flags]) == 2
        assert msg in capsys.readouterr().err


def test_compare_section_tests_tuned_against_base_over_subjects(tiny_models, tmp_path):
    """``[compare]``: after the units, each tuned model against the base per layer x ROI, paired over
    subjects; equal to ``analysis.compare.listener_change`` on the run's own table, written as CSV and
    figure, in results.json and in the printed summary; changes no unit key. Refused before any work:
    an unknown model, one subject."""
    from jaxalign.analysis.compare import listener_change
    from jaxalign.studies import ConfigError, StudyConfig
    from jaxalign.studies.runner import format_summary, run_study

    cfg = StudyConfig.from_toml(_synthetic_config(tmp_path, tiny_models[:2], n_subjects=4))
    plain = run_study(cfg, out=tmp_path / "plain", progress=False)
    s = run_study(cfg.updated({"compare": {"base": "tiny0", "n_permutations": 100}}), out=tmp_path / "plain",
                  progress=False)
    assert s.computed == [] and sorted(s.reused) == sorted(plain.computed)  # same units: nothing recomputed
    res = s.compare["tiny1"]
    ref = listener_change(s.table[s.table.feature_set == "model"], "tiny0", "tiny1", n_permutations=100)
    import pandas as pd

    pd.testing.assert_frame_equal(res, ref)
    assert len(res) == 6 and (res.n_listeners == 4).all() and res.attrs["exact"]
    assert pd.read_csv(tmp_path / "plain" / "compare" / "tiny1_vs_tiny0.csv").shape == res.shape
    assert (tmp_path / "plain" / "compare" / "tiny1_vs_tiny0.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert len(saved["compare"]["tiny1"]) == 6 and saved["settings_hash"] == cfg.hash_settings()
    assert "tiny1 vs tiny0: r changed in" in format_summary(s)
    with pytest.raises(ConfigError, match="compare.base: 'nope' is not a model"):
        cfg.updated({"compare": {"base": "nope"}})
    with pytest.raises(ConfigError, match="compare.tuned"):
        cfg.updated({"compare": {"base": "tiny0", "tuned": ["tiny0"]}})
    from types import SimpleNamespace

    from jaxalign.studies.runner import _check_compare  # called by plan_study, before any unit

    with pytest.raises(ValueError, match=r"at least 2 subjects; the dataset has 1 \(\['S1'\]\)"):
        _check_compare(cfg.updated({"compare": {"base": "tiny0"}}), SimpleNamespace(subjects=["S1"]))
    _check_compare(cfg, SimpleNamespace(subjects=["S1"]))  # no [compare]: nothing to check
