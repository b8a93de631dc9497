"""Probe accuracy before / after property removal and its effect on alignment
(jaxalign.analysis.probing.removal_effects), and the Natural Stories
pipeline (jaxalign.studies.natural_stories_probing and its script).

Planted data: 3 "stories" x 20 "sentences" x 5 words, 2 feature sets. A
binary property is planted in feature set 0 (a class shift along two
features), absent from set 1; a second binary property is noise. The
target depends on features the property does not touch, plus on the
planted shift itself, so removing the property changes set 0's alignment.

References: the probe numbers are the library's own probe_accuracy on the
features and on remove_property's residuals (removal_effects must assemble
exactly those); the alignment numbers are a hand-written nested ridge CV
with scikit-learn (leave one story out; training and test set each
z-scored; inner 4 contiguous folds choosing the penalty by mean Pearson r;
no intercept) on the original features and on class-mean-subtracted ones
(the exact removal, ``removal_alphas=[1e-6]``). Stated tolerance for r:
1e-4 (the engine fits in float32; measured ~1e-6).

Every new data shape compiles the probe solver again (~2 s on 2 cores), so
the tests share one planted data set and few class counts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxalign.analysis.probing import (
    alignment_r,
    plot_removal_effects,
    probe_accuracy,
    removal_effects,
    remove_property,
)
from jaxalign.ridge import GroupKFold, LeaveOneGroupOut, check_cv

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "probing_natural_stories.py"
ALPHAS = np.logspace(-1, 5, 4)
CS = np.logspace(-2, 0, 2)
R_TOL = 1e-4


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(7)
    n_story, n_sent, n_word, p = 3, 20, 5, 8
    n = n_story * n_sent * n_word
    sentence = np.repeat(np.arange(n_story * n_sent), n_word)
    story = np.repeat(np.arange(n_story), n_sent * n_word)
    planted = rng.integers(0, 2, n_story * n_sent)[sentence]  # a sentence-level property
    noise = rng.integers(0, 2, n)
    X = rng.standard_normal((2, n, p))
    X[0, :, :2] += 1.5 * (2 * planted[:, None] - 1)
    y = X[0, :, 2] + X[1, :, 3] + 0.8 * (2 * planted - 1) + rng.standard_normal(n)
    y[::17] = np.nan  # words left out of the alignment
    return dict(X=X, sentence=sentence, story=story, planted=planted, noise=noise, y=y)


def _effects(d, classes, **kw):
    return removal_effects(d["X"], classes, layers=["a", "b"], groups=d["sentence"], Cs=CS,
                           removal_alphas=[1e-6], alphas=ALPHAS, **kw)


def _sk_alignment(X, y, groups):
    """Nested ridge CV by hand (module docstring), pooled held-out r."""
    from sklearn.linear_model import Ridge

    def z(a):
        sd = a.std(axis=0)
        return (a - a.mean(axis=0)) / np.where(sd > 0, sd, np.inf)

    preds, ys = [], []
    for g in np.unique(groups):
        tr, te = groups != g, groups == g
        Xtr, Xte, ytr, yte = z(X[tr]), z(X[te]), z(y[tr, None])[:, 0], z(y[te, None])[:, 0]
        bounds = np.linspace(0, len(ytr), 5).astype(int)
        scores = []
        for a in ALPHAS:
            rs = []
            for k in range(4):
                va = np.zeros(len(ytr), bool)
                va[bounds[k]:bounds[k + 1]] = True
                m = Ridge(alpha=a, fit_intercept=False).fit(Xtr[~va], ytr[~va])
                rs.append(np.corrcoef(m.predict(Xtr[va]), ytr[va])[0, 1])
            scores.append(np.mean(rs))
        m = Ridge(alpha=ALPHAS[int(np.argmax(scores))], fit_intercept=False).fit(Xtr, ytr)
        preds.append(m.predict(Xte))
        ys.append(yte)
    return np.corrcoef(np.concatenate(preds), np.concatenate(ys))[0, 1]


def test_removal_effects_against_direct_computation(planted):
    d = planted
    classes = pd.DataFrame({"planted": d["planted"], "noise": d["noise"]})
    table = _effects(d, classes, target=d["y"], target_groups=d["story"])
    assert list(table.columns[:11]) == [
        "property", "layer", "removal", "n_words", "n_classes", "chance", "accuracy_before",
        "accuracy_after", "above_chance_before", "below_chance_after", "removed"]
    assert len(table) == 4 and set(table.removal) == {"all"}
    splits = check_cv(GroupKFold(4), len(d["sentence"]), groups=d["sentence"])
    for name in classes:
        t = table[table.property == name]
        before = probe_accuracy(d["X"], classes[name], Cs=CS, outer=splits, inner=GroupKFold(4),
                                groups=d["sentence"], dtype="float32")
        R = remove_property(d["X"], classes[name], alphas=[1e-6], cv=4)
        after = probe_accuracy(R, classes[name], Cs=CS, outer=splits, inner=GroupKFold(4),
                               groups=d["sentence"], dtype="float32")
        np.testing.assert_array_equal(t.accuracy_before, before.accuracy)
        np.testing.assert_array_equal(t.accuracy_after, after.accuracy)
        assert (t.chance == before.chance).all() and list(t.layer) == ["a", "b"]
        np.testing.assert_array_equal(t.removed, (before.accuracy > before.chance)
                                      & (after.accuracy < before.chance))
    p = table[table.property == "planted"].set_index("layer")
    # planted in set a: readable before, not after; set b never carried it
    assert p.loc["a", "accuracy_before"] > p.loc["a", "chance"] + 0.3
    assert p.loc["a", "accuracy_after"] < p.loc["a", "chance"] + 0.05
    assert p.loc["b", "accuracy_before"] < p.loc["b", "chance"] + 0.1

    # alignment: the hand-written nested ridge CV on the original and the residual features
    used = np.isfinite(d["y"])
    assert (table.n_aligned == used.sum()).all()
    for layer, Xl in zip(["a", "b"], d["X"]):
        ref_before = _sk_alignment(Xl[used], d["y"][used], d["story"][used])
        resid = Xl - pd.DataFrame(Xl).groupby(d["planted"]).transform("mean").to_numpy()
        ref_after = _sk_alignment(resid[used], d["y"][used], d["story"][used])
        assert abs(p.loc[layer, "alignment_before"] - ref_before) < R_TOL
        assert abs(p.loc[layer, "alignment_after"] - ref_after) < R_TOL
        assert p.loc[layer, "alignment_change"] == pytest.approx(ref_after - ref_before, abs=2 * R_TOL)
    # the target carries the planted shift: removing it from set a costs alignment
    assert p.loc["a", "alignment_change"] < -0.05

    fig = plot_removal_effects(table, title="planted")
    assert len(fig.axes) >= 2 + 2  # two property panels, r along layers, change map (+ colour bar)


def test_fold_internal_removal(planted):
    """removal="fold": per outer fold, removal fitted on its training words,
    probe_accuracy on that fold; alignment with the removal refitted per story."""
    d = planted
    n = len(d["sentence"])
    t = _effects(d, {"planted": d["planted"]}, removal="fold", target=d["y"],
                 target_groups=d["story"])
    assert (t.removal == "fold").all()
    splits = check_cv(GroupKFold(4), n, groups=d["sentence"])
    acc = []
    for tr, te in splits:
        R = remove_property(d["X"], d["planted"], alphas=[1e-6], cv=4, train=tr)
        acc.append(probe_accuracy(R, d["planted"], Cs=CS, outer=[(tr, te)], inner=GroupKFold(4),
                                  groups=d["sentence"], dtype="float32").accuracy)
    np.testing.assert_array_equal(t.accuracy_after, np.mean(acc, axis=0))
    # leak-free removal of a planted property: about chance, not below it by construction
    a = t.set_index("layer").loc["a"]
    assert abs(a.accuracy_after - a.chance) < 0.1
    used = np.flatnonzero(np.isfinite(d["y"]))
    loso = check_cv(LeaveOneGroupOut(), len(used), groups=d["story"][used])

    def fold_features(k, tr, te):
        return remove_property(d["X"], d["planted"], alphas=[1e-6], cv=4, train=used[tr])[:, used]

    r = alignment_r(d["X"][:, used], d["y"][used], loso, alphas=ALPHAS, train_features=fold_features)
    np.testing.assert_allclose(t.alignment_after, r, atol=1e-12)
    r0 = alignment_r(d["X"][:, used], d["y"][used], loso, alphas=ALPHAS)
    np.testing.assert_allclose(t.alignment_before, r0, atol=1e-12)


def test_bad_inputs_name_the_argument(planted):
    d = planted
    X, lab = d["X"], {"planted": d["planted"]}
    cases = [
        (dict(features=X[0, 0]), "features"),
        (dict(features=np.where(X > 3, np.nan, X)), "features"),
        (dict(classes=[1, 2]), "classes"),
        (dict(classes={"planted": d["planted"][:-1]}), r"classes\['planted'\]"),
        (dict(classes={"one": np.zeros(X.shape[1])}), r"classes\['one'\].*single class"),
        (dict(layers=[0]), "layers"),
        (dict(removal="some"), "removal"),
        (dict(removal=("all", "all")), "removal"),
        (dict(groups=d["sentence"][:-1]), "groups"),
        (dict(outer=1), "outer"),
        (dict(target=d["y"][:-1]), "target"),
        (dict(target=np.full(X.shape[1], np.nan)), "target"),
        (dict(target_groups=d["story"]), "target_groups"),
        (dict(target=d["y"], target_groups=d["story"][:-1]), "target_groups"),
        (dict(target=d["y"], target_groups=np.zeros(X.shape[1])), "target_groups"),
    ]
    for kw, match in cases:
        args = dict(features=X, classes=lab) | kw
        with pytest.raises(ValueError, match=match):
            removal_effects(args.pop("features"), args.pop("classes"), **args)
    with pytest.raises(ValueError, match="table"):
        plot_removal_effects(pd.DataFrame({"property": ["x"]}))
    with pytest.raises(ValueError, match="partition"):
        alignment_r(X[0], d["y"], [(np.arange(10), np.arange(10, 20))])


def _script():
    spec = importlib.util.spec_from_file_location("probing_natural_stories_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_one_story_tiny_model(tmp_path, capsys):
    """The script end to end at reduced size: story 1, one property and a
    random control, hidden states 0 and 2 of a tiny random GPT-2 (64-token
    window)."""
    from tests._shared_data import need
    from tests._tiny_lm import saved_tiny

    from jaxalign.studies import natural_stories_probing as NSP
    from jaxalign.studies.natural_stories import load_data

    root = need("natural_stories", "parses").parent
    folder, _ = saved_tiny("gpt2")
    script = _script()
    assert script.analyse is NSP.analyse  # a command line over the package
    out = tmp_path / "out"
    assert script.main(["--root", str(root), "--out", str(out), "--model", str(folder),
                        "--stories", "1", "--layers", "0,2", "--properties", "tense",
                        "--random-controls", "1"]) == 0
    printed = capsys.readouterr().out
    assert "tense" in printed and "random_1" in printed and "results.csv" in printed
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and set(table.property) == {"tense", "random_1"}
    assert list(table.layer.unique()) == [0, 2] and (table.removal == "all").all()
    assert (table.n_words == 1073).all()
    assert table[["accuracy_before", "accuracy_after", "alignment_before", "alignment_after"]].notna().all().all()
    assert (out / "removal_effects.png").stat().st_size > 10_000
    assert (out / "settings.json").is_file() and (out / "cache").is_dir()
    # labels: one row per reading-time word, the first non-punctuation leaf's
    ds = load_data(root, [1])
    labels = NSP.word_labels(ds)
    assert len(labels) == len(ds.stimulus) == 1073
    words = list(ds.stimulus.words)
    first = words.index("England,")  # leaves "England" and ","
    assert labels.leaf_word[first] == "England" and labels.sentence[first] == 0
    assert labels.leaf_word[words.index("boar's")] == "boar"
    # the chance column is the majority share of the classes of those words
    tense = labels["tense"].to_numpy()
    assert table[table.property == "tense"].chance.iloc[0] == pytest.approx(
        np.bincount(tense).max() / len(tense), abs=1e-6)
    # the control: one random 0/1 label per sentence
    assert table[table.property == "random_1"].n_classes.iloc[0] == 2
    # redraw from the files
    assert script.main(["--out", str(out), "--replot"]) == 0
    with pytest.raises(ValueError, match="properties"):
        NSP.analyse(root, tmp_path / "bad", properties=["tense", "mood"])
