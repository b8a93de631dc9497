"""jaxalign.analysis.divergence: word errors, sentences, sets and validity on planted data.

References: word errors against a plain float64 loop over words, windows
and the significant channels' indices (so a mask used as an int index, the
public code's bug, would differ); significance against
``scipy.stats.pearsonr(alternative="greater")``; t-tests against
``scipy.stats.ttest_ind(alternative="greater")`` and FDR against
``statsmodels``' ``multipletests``. Tolerances: 1e-12 relative on errors
(float64 sums of a few hundred terms), 1e-10 on t and p.
"""

from __future__ import annotations

import functools
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from jaxalign.analysis import divergence as dv

N_WINDOWS, N_CHANNELS = 20, 12
EMOTION = ["furious", "terrified", "ecstatic", "heartbroken"]
COLOR = ["red", "green", "blue"]
FILLER = ["the", "boy", "walked", "to", "a", "house", "and", "saw", "door", "window", "table", "road"]


def _story(seed=0, n_sentences=90, n_bad=15, n_good=15):
    """Sentences of 5-10 words (+ some of 2-3 words), indices of planted bad / good ones.

    Bad sentences contain an emotion word; colours are spread evenly over all sentences.
    """
    r = np.random.default_rng(seed)
    kinds = np.array(["bad"] * n_bad + ["good"] * n_good + ["mid"] * (n_sentences - n_bad - n_good))
    r.shuffle(kinds)
    words, sid, short = [], [], []
    s = 0
    for i, kind in enumerate(kinds):
        n = int(r.integers(5, 11))
        w = list(r.choice(FILLER, n))
        if kind == "bad":
            w[int(r.integers(n))] = str(r.choice(EMOTION))
        if i % 2 == 0:
            w[int(r.integers(n))] = str(r.choice(COLOR))
        w[-1] += str(r.choice([".", "!", "?", '."']))
        words += w
        sid += [s] * n
        s += 1
        if i % 10 == 0:  # a badly predicted short sentence, never ranked
            words += ["Oh", "no!"]
            sid += [s, s]
            short.append(s)
            s += 1
    return words, np.array(sid), kinds, short


def _recording(sid, kinds, short, scale, seed=0):
    """(words, windows, channels) recording and predictions: big errors on bad sentences in the
    significant channels of windows 12..16, tiny on good ones; huge errors elsewhere that must not count."""
    r = np.random.default_rng(seed + 1)
    n = sid.size
    y = r.standard_normal((n, N_WINDOWS, N_CHANNELS))
    sig = np.zeros((N_WINDOWS, N_CHANNELS), bool)
    sig[:, 4:9] = True
    sig[14, :] = False      # window 14 has no significant channel (left out, with a warning)
    sig[13, 2] = True       # window-specific masks
    noise = np.full(n, 0.5)
    sentence_kind = {}
    k = 0
    for s in np.unique(sid):
        if s in short:
            sentence_kind[s] = "short"
        else:
            sentence_kind[s] = kinds[k]
            k += 1
    per_word = np.array([sentence_kind[s] for s in sid])
    noise[per_word == "bad"] = 2.0
    noise[per_word == "good"] = 0.05
    noise[per_word == "short"] = 5.0
    # word-to-word variation so that ranks are not ties
    err = r.standard_normal(y.shape) * (noise * (1 + 0.1 * r.random(n)))[:, None, None]
    # outside the mask or the window range: huge errors on the good sentences
    outside = ~sig[None] | ~np.isin(np.arange(N_WINDOWS), range(12, 17))[None, :, None]
    err = np.where(outside & (per_word == "good")[:, None, None], 30.0 * r.standard_normal(y.shape), err)
    # channels 0 and 1 (what a 0/1 int index would select) err hugely on the good sentences too
    err[per_word == "good", :, :2] = 40.0
    return scale * y, scale * (y + err), sig, per_word


def _reference_errors(y, yhat, sig, windows):
    out = np.zeros(y.shape[0])
    for i in range(y.shape[0]):
        per = []
        for k in windows:
            chans = [c for c in range(y.shape[2]) if sig[k, c]]
            if chans:
                per.append(sum((float(y[i, k, c]) - float(yhat[i, k, c])) ** 2 for c in chans) / len(chans))
        out[i] = sum(per) / len(per)
    return out


@pytest.mark.parametrize("scale", [1.0, 1e-12])
def test_planted_divergent_sentences_are_found(scale):
    words, sid, kinds, short = _story()
    y, yhat, sig, per_word = _recording(sid, kinds, short, scale)
    with pytest.warns(RuntimeWarning, match=r"windows \[14\]"):
        e = dv.word_errors(y, yhat, sig)
    np.testing.assert_allclose(e, _reference_errors(y, yhat, sig, range(12, 17)), rtol=1e-12, atol=0)
    assert e.dtype == np.float64 and e.min() > 0

    table = dv.sentence_scores(e, words)           # sentences from the punctuation
    assert table["n_words"].sum() == len(words) and len(table) == len(np.unique(sid))
    assert (table["start"].to_numpy() == [np.flatnonzero(sid == s)[0] for s in np.unique(sid)]).all()
    assert not table.loc[table["n_words"] <= 3, "eligible"].any()   # "more than 3 words"
    sets = dv.divergence_sets(table, n=15, validation=0.2, seed=3)
    got = sets.table
    bad = {s for s in np.unique(sid) if per_word[sid == s][0] == "bad"}
    good = {s for s in np.unique(sid) if per_word[sid == s][0] == "good"}
    assert set(got.loc[got["group"] == "divergent", "sentence"]) == bad
    assert set(got.loc[got["group"] == "convergent", "sentence"]) == good
    # 80/20 per group, disjoint, the groups the same way round in both splits
    for group, planted in (("divergent", bad), ("convergent", good)):
        res, val = sets.texts(group, "research"), sets.texts(group, "validation")
        assert len(res) == 12 and len(val) == 3 and not set(res) & set(val)
        texts = set(got.loc[got["sentence"].isin(planted), "text"])
        assert set(res) | set(val) == texts
    assert sets.validation.divergent == sets.texts("divergent", "validation")
    assert sets.research.convergent == sets.texts("convergent", "research")
    # ranks: 1 = largest mean error
    ranked = got[got["eligible"]].sort_values("rank")
    assert (np.diff(ranked["score"].to_numpy()) <= 0).all()
    # the split is seeded
    again = dv.divergence_sets(table, n=15, validation=0.2, seed=3)
    assert again.validation == sets.validation
    # given sentence ids instead of punctuation: the same table
    by_ids = dv.sentence_scores(e, words, sentence_ids=sid)
    pd.testing.assert_frame_equal(by_ids, table)


def test_word_errors_masks_and_windows():
    r = np.random.default_rng(5)
    y = r.standard_normal((7, 4, 6)) * 1e-13
    yhat = y + r.standard_normal(y.shape) * 1e-13
    sig = r.random((4, 6)) < 0.5
    sig[:, 0] = True
    for windows in ([1, 3], np.array([False, True, False, True])):
        np.testing.assert_allclose(dv.word_errors(y, yhat, sig, windows=windows),
                                   _reference_errors(y, yhat, sig, [1, 3]), rtol=1e-12)
    one = sig[2]                                                   # (channels,): every window
    np.testing.assert_allclose(dv.word_errors(y, yhat, one, windows=range(4)),
                               _reference_errors(y, yhat, np.tile(one, (4, 1)), range(4)), rtol=1e-12)
    with pytest.raises(TypeError, match="significant must be a boolean mask"):
        dv.word_errors(y, yhat, sig.astype(int), windows=[1])
    with pytest.raises(ValueError, match="outside the recording's 4 windows"):
        dv.word_errors(y, yhat, sig, windows=range(12, 17))
    with pytest.raises(ValueError, match="recording .* and predictions .* same shape"):
        dv.word_errors(y, yhat[:, :3], sig, windows=[1])
    with pytest.raises(ValueError, match="targets_to_windows"):
        dv.word_errors(y.reshape(7, -1), yhat.reshape(7, -1), sig, windows=[1])
    with pytest.raises(ValueError, match="significant must have shape"):
        dv.word_errors(y, yhat, sig[:, :3], windows=[1])
    with pytest.raises(ValueError, match="no window of the range has a significant channel"), \
            pytest.warns(RuntimeWarning):
        dv.word_errors(y, yhat, np.zeros((4, 6), bool), windows=[1])


def test_significant_channels_equal_scipy():
    r = np.random.default_rng(2)
    n = 60
    x = r.standard_normal((n, 40))
    y = 0.5 * x * (np.arange(40) % 3 == 0) + r.standard_normal((n, 40))
    rs = np.array([np.corrcoef(x[:, j], y[:, j])[0, 1] for j in range(40)])
    want = np.array([scipy.stats.pearsonr(x[:, j], y[:, j], alternative="greater").pvalue < 1e-3 for j in range(40)])
    got = dv.significant_channels(rs.reshape(4, 10), n, alpha=1e-3)
    assert got.dtype == bool and got.shape == (4, 10)
    assert (got.ravel() == want).all() and want.any() and not want.all()
    assert not dv.significant_channels(np.array([np.nan, 0.99]), n)[0]


def test_sentence_segmentation_by_hand():
    words = ["Mr.", "Dursley", "said", '"Go!"', "He", "went", "(quickly.)", "Was", "it", "late?", "No", "more"]
    assert dv.segment_sentences(words).tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    assert dv.segment_sentences(words, abbreviations=("Mr.",)).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    table = dv.sentence_scores(np.arange(12.0), words, min_words=3)
    assert table["text"].tolist()[1] == 'Dursley said "Go!"'
    assert table["n_words"].tolist() == [1, 3, 3, 3, 2]
    assert table["score"].tolist() == [0.0, 2.0, 5.0, 8.0, 10.5]
    assert table["rank"].tolist()[1:4] == [3, 2, 1]
    assert table["rank"].isna().tolist() == [True, False, False, False, True]
    with pytest.raises(ValueError, match="not contiguous"):
        dv.sentence_scores(np.zeros(4), sentence_ids=[0, 1, 0, 2])
    with pytest.raises(ValueError, match="words has 3 entries but errors has 4"):
        dv.sentence_scores(np.zeros(4), ["a", "b", "c."])
    with pytest.raises(ValueError, match="need 200 eligible sentences, the table has 5"):
        dv.divergence_sets(dv.sentence_scores(np.arange(12.0), words, min_words=1), n=100)


def _hash_noise(*parts) -> float:
    return (zlib.crc32("|".join(parts).encode()) % 1000) / 1000.0 - 0.5


def _keyword_verifier(hypothesis, sentences):
    """log-odds +2 when the sentence has a word the hypothesis names, else -2; +-0.5 deterministic noise."""
    keys = {"emotion": EMOTION, "colour": COLOR, "animal": ["cat", "dog"]}
    kw = next(v for k, v in keys.items() if k in hypothesis)
    return np.array([(2.0 if any(w in s for w in kw) else -2.0) + _hash_noise(hypothesis, s) for s in sentences])


def test_validity_on_planted_property_equals_scipy_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    words, sid, kinds, short = _story(n_sentences=200, n_bad=40, n_good=40)
    y, yhat, sig, _ = _recording(sid, kinds, short, 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = dv.sentence_scores(dv.word_errors(y, yhat, sig), words)
    sets = dv.divergence_sets(table, n=40, validation=0.5, seed=1)
    hyps = ["mentions a strong emotion", "names a colour", "mentions an animal"]
    v = dv.hypothesis_validity(hyps, sets.validation.divergent, sets.validation.convergent, _keyword_verifier)
    t = v.table
    assert t["hypothesis"].tolist() == hyps
    assert t.loc[0, "validity"] > 0.6 and t.loc[0, "significant"]
    assert abs(t.loc[1, "validity"]) < 0.35 and not t.loc[1, "significant"]
    assert abs(t.loc[2, "validity"]) < 0.1 and not t.loc[2, "significant"]
    vd = np.array([[1 / (1 + np.exp(-s)) for s in _keyword_verifier(h, sets.validation.divergent)] for h in hyps])
    vc = np.array([[1 / (1 + np.exp(-s)) for s in _keyword_verifier(h, sets.validation.convergent)] for h in hyps])
    ref = scipy.stats.ttest_ind(vd, vc, axis=1, alternative="greater")
    np.testing.assert_allclose(t["t"], ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(t["p"], ref.pvalue, rtol=1e-10)
    np.testing.assert_allclose(t["validity"], vd.mean(1) - vc.mean(1), rtol=1e-12)
    reject, p_fdr, _, _ = multipletests(ref.pvalue, alpha=0.05, method="fdr_bh")
    np.testing.assert_allclose(t["p_fdr"], p_fdr, rtol=1e-10)
    assert (t["significant"].to_numpy() == reject).all()
    # Welch and log-odds scale
    w = dv.hypothesis_validity(hyps, sets.validation.divergent, sets.validation.convergent, _keyword_verifier,
                               scale="logodds", equal_var=False)
    ld = np.array([_keyword_verifier(h, sets.validation.divergent) for h in hyps])
    lc = np.array([_keyword_verifier(h, sets.validation.convergent) for h in hyps])
    ref = scipy.stats.ttest_ind(ld, lc, axis=1, equal_var=False, alternative="greater")
    np.testing.assert_allclose(w.table["p"], ref.pvalue, rtol=1e-10)
    # the groups the wrong way round (the public code's validation split) would flip the sign
    swapped = dv.hypothesis_validity(hyps[:1], sets.validation.convergent, sets.validation.divergent, _keyword_verifier)
    assert swapped.table.loc[0, "validity"] < -0.6 and swapped.table.loc[0, "p"] > 0.99
    assert v.ranked()["hypothesis"].iloc[0] == hyps[0]


def test_validity_bad_input():
    with pytest.raises(TypeError, match="hypotheses must be a list of str"):
        dv.hypothesis_validity("one", ["a", "b"], ["c", "d"], _keyword_verifier)
    with pytest.raises(ValueError, match="convergent needs at least 2"):
        dv.hypothesis_validity(["emotion"], ["a", "b"], ["c"], _keyword_verifier)
    with pytest.raises(ValueError, match="returned shape"):
        dv.hypothesis_validity(["emotion x"], ["a", "b"], ["c", "d"], lambda h, s: np.zeros(3))
    with pytest.raises(ValueError, match="scale must be"):
        dv.hypothesis_validity(["emotion x"], ["a", "b"], ["c", "d"], _keyword_verifier, scale="odds")
    with pytest.raises(ValueError, match="template must"):
        dv.PromptVerifier(lambda p: np.zeros(len(p)), template="no fields")


def test_proposer_prompts_parsing_and_failures_kept():
    text = ("Sure! Here they are:\n- describes a strong emotion.\n* Compared to Group B, a sentence in Group A "
            "mentions a colour\n2) \"is longer\"\n(3) Describes a strong emotion\nno bullet here\n- x\n")
    assert dv.parse_hypotheses(text) == ["describes a strong emotion", "mentions a colour", "is longer"]
    div = [f"divergent sentence {i}." for i in range(8)]
    con = [f"convergent sentence {i}." for i in range(8)]
    calls = []

    def proposer(prompt):
        calls.append(prompt)
        if len(calls) == 2:
            raise ConnectionError("the server went away")
        a = prompt.split("Group A:\n")[1].split("\n\nGroup B:")[0]
        b = prompt.split("Group B:\n")[1].split("\n\n")[0]
        assert a.count("divergent") == 3 and "convergent" not in a and b.count("convergent") == 3
        return f"- mentions {a.splitlines()[0][3:]}\n- is short\n"

    with pytest.warns(RuntimeWarning, match="1 of 4 proposer calls failed"):
        out = dv.propose_hypotheses(div, con, proposer, n_prompts=4, per_group=3, seed=0)
    assert len(out.prompts) == 4 and out.responses[1] is None
    assert out.failures == [(1, "ConnectionError: the server went away")]
    assert out.hypotheses.count("is short") == 1 and len(out.hypotheses) == 1 + len({p[0] for p in out.parsed if p})
    again = dv.propose_hypotheses(div, con, lambda p: "- is short\n", n_prompts=4, per_group=3, seed=0)
    assert again.prompts == out.prompts                                    # seeded draws
    with pytest.raises(dv.ProposerError, match="all 2 proposer calls failed") as info:
        dv.propose_hypotheses(div, con, lambda p: 1 / 0, n_prompts=2)
    assert len(info.value.proposals.prompts) == 2 and len(info.value.proposals.failures) == 2


def test_real_tiny_lm_as_verifier_and_proposer(tmp_path):
    pytest.importorskip("torch")
    from _tiny_lm import saved_tiny

    from jaxalign import lm

    folder, _ = saved_tiny("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = lm.load(folder)
    scorer = functools.partial(lm.answer_logodds, model, tok)
    verifier = dv.PromptVerifier(scorer)
    div = ["the cat sat on the mat.", "she went to the store.", "the dog ate the bone."]
    con = ["water boils at one hundred degrees.", "red green blue.", "ice melts when it gets warm."]
    hyps = ["mentions an animal", "is about food"]
    v = dv.hypothesis_validity(hyps, div, con, verifier)
    for i, h in enumerate(hyps):
        direct = scorer([dv.VERIFIER_TEMPLATE.format(hypothesis=h, sentence=s) for s in div + con])
        np.testing.assert_allclose(np.concatenate([v.divergent[i], v.convergent[i]]),
                                   1 / (1 + np.exp(-direct)), rtol=1e-6)
    ref = scipy.stats.ttest_ind(v.divergent, v.convergent, axis=1, alternative="greater")
    np.testing.assert_allclose(v.table["p"], ref.pvalue, rtol=1e-8)
    # a local model as proposer: greedy text, parsed (a random model writes no bullets: no hypotheses, no failure)
    gen = functools.partial(lm.generate, model, tok, max_new_tokens=6)
    out = dv.propose_hypotheses(div, con, gen, n_prompts=2, per_group=2)
    assert out.failures == [] and all(isinstance(r, str) for r in out.responses)
    assert out.hypotheses == [h for p in out.parsed for h in p]


def test_figure(tmp_path):
    words, sid, kinds, short = _story(n_sentences=120, n_bad=20, n_good=20)
    y, yhat, sig, _ = _recording(sid, kinds, short, 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = dv.sentence_scores(dv.word_errors(y, yhat, sig), words)
    sets = dv.divergence_sets(table, n=20, seed=0)
    hyps = ["mentions a strong emotion", "names a colour", "mentions an animal"]
    v = dv.hypothesis_validity(hyps, sets.validation.divergent + sets.research.divergent[:6],
                               sets.validation.convergent + sets.research.convergent[:6], _keyword_verifier)
    path = tmp_path / "divergence.png"
    fig = dv.plot_divergence(sets, v, path=path)
    assert path.stat().st_size > 10_000 and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels[-1] == "mentions a strong emotion"                       # highest validity on top
    assert "***" in [t.get_text() for t in fig.axes[1].texts]
