"""Reading-time analysis (jaxalign.analysis.reading): held-out regression with controls and
spillover against a direct numpy computation, word controls, the per-reader ceiling, and a
check on the real Natural Stories files."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
from _shared_data import DATA  # real data beside the project, read in place

from jaxalign.analysis import reading as R
from jaxalign.stats import split_half_ceiling

NS_ROOT = DATA / "natural_stories"


def planted(seed=0, sizes=(230, 180, 260, 205)):
    """Words of 4 stories of unequal length: length, frequency, surprisal, RT with spillover."""
    rng = np.random.default_rng(seed)
    story = np.repeat(np.arange(1, len(sizes) + 1) * 10, sizes)  # ids 10, 20, ...
    n = story.size
    length = rng.integers(1, 13, n).astype(float)
    freq = 7 - 0.3 * length + rng.normal(0, 0.8, n)
    surprisal = 2 + 0.8 * (7 - freq) + rng.gamma(2, 2, n)
    prev = np.r_[np.nan, surprisal[:-1]]
    prev[np.r_[True, story[1:] != story[:-1]]] = 0.0
    rt = (280 + 3 * length - 4 * freq + 3.5 * surprisal + 2 * prev + 8 * (story // 10)
          + rng.normal(0, 25, n))
    return story, length, freq, surprisal, rt


def direct_lags(x, story, k):
    """Reference lags: a loop over words, the previous words of the same story."""
    out = np.full((x.size, k), np.nan)
    for i in range(x.size):
        for j in range(1, k + 1):
            if i - j >= 0 and story[i - j] == story[i]:
                out[i, j - 1] = x[i - j]
    return out


def direct_cv(rt, story, X, used):
    """Leave-one-story-out OLS with np.linalg.lstsq per fold: held-out predictions of the used words."""
    pred = np.full(rt.size, np.nan)
    for s in np.unique(story[used]):
        train, test = used & (story != s), used & (story == s)
        A = np.column_stack([np.ones(train.sum()), X[train]])
        beta = np.linalg.lstsq(A, rt[train], rcond=None)[0]
        pred[test] = beta[0] + X[test] @ beta[1:]
    return pred


def direct_scores(y, f):
    r = np.corrcoef(y, f)[0, 1]
    r2 = 1 - np.sum((y - f) ** 2) / np.sum((y - y.mean()) ** 2)
    return r, r2


def test_spillover_columns():
    out = R.spillover_columns({"s": [1.0, 2, 3, 4, 5, 6]}, ["a", "a", "a", "b", "b", "c"], k=2)
    assert list(out.columns) == ["s", "s_lag1", "s_lag2"]
    np.testing.assert_array_equal(out["s_lag1"], [np.nan, 1, 2, np.nan, 4, np.nan])
    np.testing.assert_array_equal(out["s_lag2"], [np.nan, np.nan, 1, np.nan, np.nan, np.nan])
    with pytest.raises(ValueError, match="not contiguous"):
        R.spillover_columns({"s": [1.0, 2, 3]}, [1, 2, 1])


def test_cv_matches_direct_numpy_lstsq():
    """Held-out predictions, per-story and pooled r / R^2 and coefficients equal a plain
    per-fold np.linalg.lstsq on a design built by hand (lags by a loop, exclusions by hand)."""
    story, length, freq, surprisal, rt = planted()
    rt[[5, 300]] = np.nan                    # missing reading times
    surprisal[[40, 41]] = np.nan             # a NaN surprisal: that word and the next two drop out
    keep = np.ones(rt.size, bool)
    keep[::17] = False                       # e.g. sentence starts (still spill over)
    k = 2
    res = R.reading_time_regression(rt, {"surprisal": surprisal}, story, keep=keep, spillover=k,
                                    controls=pd.DataFrame({"length": length, "log_frequency": freq}))

    cols_c = [length, freq]
    Xc = np.column_stack([np.column_stack([c, direct_lags(c, story, k)]) for c in cols_c])
    Xf = np.column_stack([Xc, surprisal, direct_lags(surprisal, story, k)])
    used = keep & np.isfinite(rt) & np.isfinite(Xf).all(1)
    np.testing.assert_array_equal(res.used, used)
    assert res.full_columns == ["length", "length_lag1", "length_lag2", "log_frequency",
                                "log_frequency_lag1", "log_frequency_lag2", "surprisal",
                                "surprisal_lag1", "surprisal_lag2"]
    assert res.excluded["total"] == (~used).sum()
    assert res.excluded["not_kept"] == (~keep).sum()

    pc, pf = direct_cv(rt, story, Xc, used), direct_cv(rt, story, Xf, used)
    np.testing.assert_allclose(res.predictions["control"], pc[used], rtol=1e-10)
    np.testing.assert_allclose(res.predictions["full"], pf[used], rtol=1e-10)
    np.testing.assert_array_equal(res.predictions.index, np.flatnonzero(used))

    for s in np.unique(story):
        m = used & (story == s)
        (rc, r2c), (rf, r2f) = direct_scores(rt[m], pc[m]), direct_scores(rt[m], pf[m])
        row = res.scores.loc[s]
        assert row["n"] == m.sum()
        np.testing.assert_allclose(row[["r_control", "r_full", "r2_control", "r2_full"]].to_numpy(float),
                                   [rc, rf, r2c, r2f], atol=2e-6)
        np.testing.assert_allclose(row["delta_r2"], r2f - r2c, atol=2e-6)
    (rc, r2c), (rf, r2f) = direct_scores(rt[used], pc[used]), direct_scores(rt[used], pf[used])
    pooled = res.pooled
    assert pooled["n"] == used.sum()
    np.testing.assert_allclose([pooled["r_control"], pooled["r_full"], pooled["r2_control"],
                                pooled["r2_full"], pooled["delta_r"]],
                               [rc, rf, r2c, r2f, rf - rc], atol=2e-6)
    d = (rt[used] - pc[used]) ** 2 - (rt[used] - pf[used]) ** 2
    np.testing.assert_allclose(res.delta_mse, d.mean(), rtol=1e-10)
    np.testing.assert_allclose(res.delta_mse * used.sum() / np.sum((rt[used] - rt[used].mean()) ** 2),
                               pooled["delta_r2"], atol=2e-6)

    # coefficients of the fold that holds out story 20 (in ms per unit)
    train = used & (story != 20)
    beta = np.linalg.lstsq(np.column_stack([np.ones(train.sum()), Xf[train]]), rt[train], rcond=None)[0]
    np.testing.assert_allclose(res.coef.loc[("full", "20")].to_numpy(float), beta, rtol=1e-8)
    assert res.coef.loc[("control", "20"), "surprisal"] != res.coef.loc[("control", "20"), "surprisal"]

    # planted gain found; the story test is exact with 4 stories (16 sign patterns)
    assert pooled["delta_r2"] > 0.05 and res.p_words < 1e-3
    assert res.p_stories == pytest.approx(1 / 16)
    assert "story 10" in res.summary() and "pooled" in res.summary()
    saved = json.loads(json.dumps(res.to_dict()))
    assert list(saved["scores"]) == ["10", "20", "30", "40", "pooled"]
    assert saved["scores"]["pooled"]["r_full"] == pytest.approx(rf, abs=2e-6)
    assert saved["coef"]["full"]["20"]["surprisal_lag2"] == pytest.approx(beta[-1], rel=1e-8)
    assert "surprisal" not in saved["coef"]["control"]["20"]


def test_in_sample_single_predictor_is_the_plain_correlation():
    """cv=None, no controls, no spillover: r of the fit is |Pearson r| of predictor and RT
    (the published Futrell2018 score); the intercept-only control model has r NaN."""
    story, _, _, surprisal, rt = planted(1)
    res = R.reading_time_regression(rt, surprisal, story, spillover=0, cv=None)
    assert res.full_columns == ["x"] and res.control_columns == []
    np.testing.assert_allclose(res.pooled["r_full"], np.corrcoef(surprisal, rt)[0, 1], atol=2e-6)
    assert np.isnan(res.pooled["r_control"])
    assert list(res.coef.index) == [("control", "all"), ("full", "all")]


def test_no_gain_from_an_unrelated_predictor():
    story, length, freq, _, rt = planted(2)
    noise = np.random.default_rng(5).standard_normal(rt.size)
    res = R.reading_time_regression(rt, {"noise": noise}, story,
                                    controls={"length": length, "log_frequency": freq})
    assert res.pooled["delta_r2"] < 0.002 and res.p_words > 0.05


def test_ridge_on_the_engine_matches_closed_form():
    """alphas=[a]: ridge on the engine = numpy closed form on training-z-scored predictors with an
    unpenalised intercept, per held-out story; coefficients come back in raw units."""
    story, length, freq, surprisal, rt = planted(3, sizes=(200, 200, 200))
    alpha = 50.0
    res = R.reading_time_regression(rt, {"surprisal": surprisal}, story, spillover=1,
                                    controls={"length": length}, alphas=[alpha])
    X = np.column_stack([length, direct_lags(length, story, 1), surprisal, direct_lags(surprisal, story, 1)])
    used = np.isfinite(X).all(1)
    pred = np.full(rt.size, np.nan)
    for s in np.unique(story):
        tr, te = used & (story != s), used & (story == s)
        mu, sd = X[tr].mean(0), X[tr].std(0)
        Z = (X[tr] - mu) / sd
        w = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (rt[tr] - rt[tr].mean()))
        pred[te] = rt[tr].mean() + ((X[te] - mu) / sd) @ w
        b = res.coef.loc[("full", str(s))].to_numpy(float)
        np.testing.assert_allclose(b[1:], w / sd, rtol=1e-4)
    np.testing.assert_allclose(res.predictions["full"], pred[used], rtol=1e-5)
    assert (res.best_alphas.to_numpy() == alpha).all()
    assert json.loads(json.dumps(res.to_dict()))["best_alphas"]["full"]["20"] == alpha


def test_bad_inputs():
    story, length, _, surprisal, rt = planted()
    with pytest.raises(ValueError, match="both predictors and controls"):
        R.reading_time_regression(rt, {"length": surprisal}, story, controls={"length": length})
    with pytest.raises(ValueError, match="rows, expected"):
        R.reading_time_regression(rt, surprisal[:-1], story)
    with pytest.raises(ValueError, match="at least 2 stories"):
        R.reading_time_regression(rt, surprisal, np.zeros(rt.size, int))


def test_word_controls_and_frequency():
    wordfreq = pytest.importorskip("wordfreq", reason="wordfreq (extra 'reading') not installed")
    words = ["The", "said.", "'But", "tulip,", "xyzzyqv", "well-known"]
    np.testing.assert_array_equal(R.word_length(words), [3, 4, 3, 5, 7, 9])
    zipf = R.log_frequency(words)
    assert zipf[0] == wordfreq.zipf_frequency("the", "en") and zipf[0] > 7
    assert zipf[1] == wordfreq.zipf_frequency("said", "en")  # punctuation stripped by wordfreq
    assert zipf[4] == 0.0                                      # not in the list
    frame = R.word_controls(words)
    assert list(frame.columns) == ["length", "log_frequency"] and len(frame) == 6


def test_log_frequency_without_wordfreq(monkeypatch):
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"jaxalign\[reading\]"):
        R.log_frequency(["the"])


def test_ceiling_per_story_with_missing_values():
    rng = np.random.default_rng(0)
    story = np.repeat([1, 2], [150, 120])
    data = rng.normal(0, 1, story.size) + rng.normal(0, 1.5, (12, story.size))
    data[:4, story == 2] = np.nan      # readers 0-3 did not read story 2
    data[4, :10] = np.nan              # reader 4 misses 10 of 150 words of story 1: dropped there
    data[5, 3] = np.nan                # reader 5 misses one word: filled with its story-1 mean
    res = R.reading_time_ceiling(data, story, max_missing=0.05, n_splits=10, seed=3)
    s1 = res.per_story.loc[1]
    assert (s1["n_readers"], s1["n_dropped"], s1["n_filled"]) == (11, 1, 1)
    filled = data[[r for r in range(12) if r != 4]][:, story == 1].copy()
    filled[4, 3] = np.nanmean(filled[4])
    assert s1["ceiling"] == pytest.approx(float(split_half_ceiling(filled, 10, seed=3).ceiling))
    s2 = res.per_story.loc[2]
    assert (s2["n_readers"], s2["n_dropped"], s2["n_filled"]) == (8, 0, 0)
    assert s2["ceiling"] == pytest.approx(float(split_half_ceiling(data[4:, story == 2], 10, seed=3).ceiling))
    w = np.array([150, 120])
    assert res.ceiling == pytest.approx((w * [s1["ceiling"], s2["ceiling"]]).sum() / w.sum())
    # max_missing=0: only complete readers
    strict = R.reading_time_ceiling(data, story, max_missing=0.0, n_splits=10, seed=3)
    assert strict.per_story.loc[1, "n_readers"] == 10 and strict.per_story.loc[1, "n_dropped"] == 2


@pytest.mark.skipif(not NS_ROOT.is_dir(), reason=f"Natural Stories data not found at {NS_ROOT}")
def test_natural_stories_real_files():
    """The real three stories, with a cheap proxy predictor (word frequency over a length-only
    control model; SmolLM2 surprisal is the README's run): held-out numbers equal a direct
    per-story lstsq, sentence starts and story starts are excluded as documented."""
    pytest.importorskip("wordfreq", reason="wordfreq (extra 'reading') not installed")
    from jaxalign import io

    stim, rec = io.read_natural_stories(NS_ROOT)
    rt = rec.target("meanItemRT")
    story = np.asarray(stim.runs)
    keep = ~np.asarray(stim.sentence_starts, bool)
    controls = R.word_controls(stim.words)
    res = R.reading_time_regression(rt, {"log_frequency": controls["log_frequency"]}, story,
                                    controls={"length": controls["length"]}, keep=keep, spillover=1)
    assert list(res.scores.index) == [1, 2, 3, "pooled"]
    # 143 sentence starts, each story's first word among them (the only words without a lag-1
    # value), so nothing else drops out
    assert res.excluded == {"not_kept": 143, "missing_rt": 0, "missing_predictor": 0, "total": 143}
    X = np.column_stack([controls["length"], direct_lags(controls["length"].to_numpy(), story, 1),
                         controls["log_frequency"], direct_lags(controls["log_frequency"].to_numpy(), story, 1)])
    used = keep & np.isfinite(X).all(1)
    np.testing.assert_array_equal(res.used, used)
    pf = direct_cv(rt, story, X, used)
    r, r2 = direct_scores(rt[used], pf[used])
    np.testing.assert_allclose([res.pooled["r_full"], res.pooled["r2_full"]], [r, r2], atol=2e-6)
    # longer words are read more slowly; held-out r of the length model is positive in every story
    assert (res.scores["r_control"] > 0).all()
    assert (res.coef.xs("control")["length"] > 0).all()
