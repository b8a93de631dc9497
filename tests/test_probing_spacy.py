"""Property labels from a spaCy parse (jaxalign.analysis.probing.labels_from_spacy)
and their agreement with gold labels (label_agreement).

Hand-checked sentences pin the rules on spaCy's parse of plain English (what
each label is and why is written next to it); the Natural Stories stories
1-3 measure agreement with the gold parses. spaCy and its English pipeline
come with the ``parse`` extra (and the ``test`` extra).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from jaxalign.analysis.probing import (
    STUDY_BINS,
    label_agreement,
    labels_from_spacy,
    property_classes,
)
from jaxalign.analysis.probing._spacy import load_english
from tests._shared_data import need

SENTENCES = [
    # 0. plain: past (VBD), plural head noun, a direct object; UD tree
    # chased > dogs > The: depth 2
    "The dogs chased the cat.",
    # 1. modal (the first auxiliary), subject coordinated with "and": plural;
    # "be" is a copula: "friends" is its predicate, not an object; in UD the
    # predicate heads the clause (friends > Tom > Ann): depth 2
    "Tom and Ann will be friends.",
    # 2. "do" (VBP) of "don't" is the finite verb: present; "you" has no
    # number: unknown; word "don't" takes "do", "boar's" takes "boar",
    # "tusks." takes "tusks"; like > tusks > boar > 's: depth 3
    "You don't like the boar's tusks.",
    # 3. fronted conditional: SBAR NP VP; "If" (mark, under SBAR) sits at
    # sentence level: no phrase; "late" is a predicative adjective: ADJP
    "If you were late, you would come.",
    # 4. two clauses joined by "and": S CC S; the first clause's expletive
    # "there" gives no number (unknown), existential "were": past, no object
    "There were three dogs in England, and the cat slept.",
    # 5. copula with a prepositional predicate: present, singular, no
    # object; in UD "valley" heads everything: depth 1
    "It is in this valley.",
    # 6. auxiliary chain: "has" (VBZ) present; "songs" a direct object
    "He has been singing songs.",
    # 7. small clause "called it fog": "it" is not an object (a Penn tree
    # has (S (NP it) (NP fog))), past, plural
    "They called it fog.",
    # 8. a quotation before an inverted subject: S VP NP; the quote mark of
    # '"Come' is a token of its own, the word takes "Come"
    '"Come here!" said the Lord.',
    # 9. wh-question: WHNP SQ; the fronted object leaves a trace in a Penn
    # tree: no object; "did" before the subject sits under SQ: no phrase
    "What did he see?",
    # 10. passive: "was" (auxpass) past; the agent is a PP, not an object
    "The boar was killed by a huntsman.",
]

WANT = {  # top constituents, tense, subject number, object, length, dependency depth
    0: ("NP VP", "past", "plural", True, 5, 2),
    1: ("NP VP", "modal", "plural", False, 6, 2),
    2: ("NP VP", "present", "unknown", True, 6, 3),
    3: ("SBAR NP VP", "modal", "unknown", False, 7, 2),
    4: ("S CC S", "past", "unknown", False, 10, 3),
    5: ("NP VP", "present", "singular", False, 5, 1),
    6: ("NP VP", "present", "singular", True, 5, 1),
    7: ("NP VP", "past", "plural", False, 4, 1),
    8: ("S VP NP", "past", "singular", False, 5, 2),
    9: ("WHNP SQ", "past", "singular", False, 4, 1),
    10: ("NP VP", "past", "singular", False, 7, 2),
}


@pytest.fixture(scope="module")
def nlp():
    pytest.importorskip("spacy", reason="spaCy (extra 'parse') not installed")
    return load_english()  # loaded once (cached) for the whole session


def _words():
    words, ids = [], []
    for i, s in enumerate(SENTENCES):
        words += s.split()
        ids += [i] * len(s.split())
    return words, ids


@pytest.fixture(scope="module")
def hand(nlp):
    words, ids = _words()
    return labels_from_spacy(words, nlp=nlp, sentences=ids)


def test_hand_sentences_sentence_labels(hand):
    assert list(hand.sentence.unique()) == list(range(len(SENTENCES)))
    for i, (top, tense, number, obj, length, depth) in WANT.items():
        rows = hand[hand.sentence == i]
        r = rows.iloc[0]
        got = (r.top_constituents, r.tense, r.subject_number, bool(r.has_object),
               r.sentence_length, r.dependency_depth)
        assert got == (top, tense, number, obj, length, depth), (i, SENTENCES[i])
        # sentence-level labels are repeated on every word of the sentence
        cols = ["top_constituents", "tense", "subject_number", "has_object", "dependency_depth"]
        assert rows[cols].nunique().max() == 1
        assert (rows.sentence_length_bin == "1-7").all() or length > 7
    assert set(hand.sentence_length_bin) == {"1-7", "8-16"}  # sentence 4 has 10 words


def test_hand_sentences_word_labels(hand):
    words, _ = _words()
    assert list(hand.word) == words  # one row per input word, in order
    by = {i: g.reset_index(drop=True) for i, g in hand.groupby("sentence")}
    s2 = by[2]
    assert list(s2.token) == ["You", "do", "like", "the", "boar", "tusks"]
    assert list(s2.pos) == ["PRP", "VBP", "VB", "DT", "NN", "NNS"]
    assert list(s2.upos) == ["PRON", "AUX", "VERB", "DET", "NOUN", "NOUN"]
    assert list(s2.smallest_constituent) == ["NP", "VP", "VP", "NP", "NP", "NP"]
    assert list(by[0].token) == ["The", "dogs", "chased", "the", "cat"]  # "cat." -> "cat"
    assert by[4].set_index("word").loc["England,", "token"] == "England"
    s8 = by[8]
    assert list(s8.token) == ["Come", "here", "said", "the", "Lord"]  # '"Come' -> 'Come'
    assert s8.smallest_constituent[1] == "ADVP"
    s3 = by[3]
    assert list(s3.smallest_constituent) == ["none", "NP", "VP", "ADJP", "NP", "VP", "VP"]
    assert s3.upos[0] == "SCONJ"
    assert list(by[9].smallest_constituent) == ["WHNP", "none", "NP", "VP"]
    assert list(by[10].smallest_constituent) == ["NP", "NP", "VP", "VP", "PP", "NP", "NP"]
    cls = property_classes(hand)
    assert list(cls.columns) == list(STUDY_BINS)
    assert list(cls.pos[hand.sentence == 0]) == [4, 1, 0, 4, 1]  # DET, NOUN, VERB, DET, NOUN


def test_sentences_given_and_inferred(nlp):
    words, ids = _words()
    inferred = labels_from_spacy(words, nlp=nlp)
    # spaCy finds the same 11 sentences here, numbered from 0
    assert list(inferred.sentence) == ids
    # given boundaries are kept even where the parser would not split: two
    # sentences given as one, and one sentence cut in two
    text = words[:11]  # sentences 0 and 1
    one = labels_from_spacy(text, nlp=nlp, sentences=[0] * 11)
    assert one.sentence.nunique() == 1 and (one.sentence_length == 11).all()
    cut = labels_from_spacy(text, nlp=nlp, sentences=[5] * 3 + [7] * 8)
    assert list(cut.sentence) == [5] * 3 + [7] * 8  # the given ids come back
    assert list(cut.sentence_length) == [3] * 3 + [8] * 8
    assert (cut.sentence_length_bin[3:] == "8-16").all()
    with pytest.raises(ValueError, match="3 ids for 11 words"):
        labels_from_spacy(text, nlp=nlp, sentences=[0, 0, 0])


def test_bad_words(nlp):
    with pytest.raises(ValueError, match="words is empty"):
        labels_from_spacy([], nlp=nlp)
    with pytest.raises(ValueError, match="free of whitespace"):
        labels_from_spacy(["two words", "x"], nlp=nlp)
    with pytest.raises(ValueError, match="free of whitespace"):
        labels_from_spacy(["a", ""], nlp=nlp)


def test_missing_pipeline_says_how_to_install(nlp):
    with pytest.raises(ImportError) as err:
        labels_from_spacy(["It", "rained."], _pipelines=("no_such_spacy_pipeline_xyz",))
    msg = str(err.value)
    assert "no_such_spacy_pipeline_xyz" in msg
    assert 'pip install "jaxalign[parse]"' in msg
    assert "python -m spacy download en_core_web_sm" in msg


def test_missing_spacy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'needs spaCy.*pip install "jaxalign\[parse\]"'):
        labels_from_spacy(["It", "rained."], _pipelines=("not_cached_name_for_this_test",))


# --------------------------------------------------------------------------
# agreement
# --------------------------------------------------------------------------


def _direct_kappa(a, b):
    classes = np.unique(np.concatenate([a, b]))
    po = np.mean(a == b)
    pe = sum(np.mean(a == c) * np.mean(b == c) for c in classes)
    return (po - pe) / (1 - pe)


def test_label_agreement_against_direct_computation():
    rng = np.random.default_rng(0)
    n = 40
    upos = rng.choice(["VERB", "NOUN", "PRON", "ADP", "DET", "ADJ"], n)
    gold = pd.DataFrame({
        "sentence_length_bin": rng.choice(["1-7", "8-16", ">16"], n),
        "sentence_length": rng.integers(1, 30, n),
        "dependency_depth": rng.integers(1, 7, n),
        "tense": rng.choice(["past", "present", "modal"], n),
        "has_object": rng.random(n) < 0.4,
        "upos": upos,
    })
    parsed = gold.copy()
    flip = rng.random(n) < 0.3
    parsed.loc[flip, "tense"] = rng.choice(["past", "present", "none"], flip.sum())
    parsed.loc[flip, "dependency_depth"] += 1
    parsed.loc[rng.random(n) < 0.2, "has_object"] ^= True
    parsed.loc[rng.random(n) < 0.25, "upos"] = "X"
    parsed.index = parsed.index + 100  # compared row by row, not by index
    table = label_agreement(gold, parsed).set_index("property")
    assert list(table.index) == ["sentence_length", "tree_depth", "tense", "object", "pos"]
    from sklearn.metrics import cohen_kappa_score

    checks = {
        "tree_depth": (gold.dependency_depth > 3, parsed.dependency_depth.to_numpy() > 3,
                       gold.dependency_depth, parsed.dependency_depth),
        "tense": (gold.tense != "past", parsed.tense.to_numpy() != "past", gold.tense, parsed.tense),
        "object": (gold.has_object, parsed.has_object.to_numpy(), gold.has_object, parsed.has_object),
        "pos": (gold.upos.map({"VERB": 0, "NOUN": 1, "PRON": 2, "ADP": 3}).fillna(4),
                parsed.upos.map({"VERB": 0, "NOUN": 1, "PRON": 2, "ADP": 3}).fillna(4).to_numpy(),
                gold.upos, parsed.upos),
    }
    for prop, (a, b, ra, rb) in checks.items():
        a, b = np.asarray(a).astype(int), np.asarray(b).astype(int)
        row = table.loc[prop]
        assert row.n == n
        assert row.agreement == pytest.approx(np.mean(a == b), abs=1e-12), prop
        assert row.kappa == pytest.approx(_direct_kappa(a, b), abs=1e-12), prop
        assert row.kappa == pytest.approx(cohen_kappa_score(a, b), abs=1e-12), prop
        assert row.raw_agreement == pytest.approx(np.mean(np.asarray(ra) == np.asarray(rb)), abs=1e-12)
    assert table.loc["sentence_length", "agreement"] == 1 and table.loc["sentence_length", "kappa"] == 1
    assert table.loc["pos", "raw_column"] == "upos"
    # identical constant labels: kappa undefined
    const = pd.DataFrame({"tense": ["past"] * 5})
    assert np.isnan(label_agreement(const, const).kappa[0])
    with pytest.raises(ValueError, match="gold has 40 rows, parsed 5"):
        label_agreement(gold, const)
    with pytest.raises(ValueError, match="needs columns"):
        label_agreement(gold, parsed, properties=["smallest_constituent"])
    with pytest.raises(ValueError, match="not among"):
        label_agreement(gold, parsed, properties=["mood"])


# --------------------------------------------------------------------------
# real data: agreement with the gold parses of Natural Stories stories 1-3
# --------------------------------------------------------------------------

# Measured (2026-12-02, en_core_web_sm 3.8.0, gold sentence boundaries):
# binned agreement / kappa per property; floors sit a little below.
FLOORS = {  # property: (agreement, kappa)
    "sentence_length": (0.999, 0.999),
    "tree_depth": (0.92, 0.74),
    "top_constituents": (0.91, 0.80),
    "tense": (0.91, 0.68),
    "subject_number": (0.89, 0.74),
    "object": (0.92, 0.78),
    "pos": (0.95, 0.93),
    "smallest_constituent": (0.96, 0.93),
}


@pytest.fixture(scope="module")
def natural_stories(nlp):
    from jaxalign.studies.natural_stories_probing import parser_agreement

    root = need("natural_stories", "parses").parent
    return parser_agreement(root, nlp=nlp)


def test_natural_stories_agreement_with_gold(natural_stories):
    table = natural_stories.set_index(["segmentation", "property"])
    assert set(table.index.get_level_values(0)) == {"gold", "parser"}
    assert (table.n == 3103).all()  # every reading-time word of stories 1-3
    for prop, (agree, kappa) in FLOORS.items():
        row = table.loc[("gold", prop)]
        assert row.agreement >= agree, (prop, row.agreement)
        assert row.kappa >= kappa, (prop, row.kappa)
        # spaCy's own sentence boundaries cost a little, not much
        assert table.loc[("parser", prop), "agreement"] >= agree - 0.03, prop


def test_natural_stories_spacy_labels_vary(nlp):
    from jaxalign.studies.natural_stories import load_data

    root = need("natural_stories", "parses").parent
    stim = load_data(root, [1]).stimulus
    labels = labels_from_spacy(list(stim.words), nlp=nlp)
    cls = property_classes(labels)
    for col in cls:  # not trivially constant: every study class of story 1 varies
        assert cls[col].nunique() > 1, col
        assert cls[col].value_counts(normalize=True).max() < 0.95, col
    # spaCy's own segmentation of story 1: about as many sentences as the
    # gold trees' 57 (it finds 56)
    assert abs(labels.sentence.nunique() - 57) <= 4


def test_script_agreement_flag(nlp, tmp_path, capsys):
    """scripts/probing_natural_stories.py --agreement: the table on screen and as CSV."""
    import importlib.util
    from pathlib import Path

    root = need("natural_stories", "parses").parent
    path = Path(__file__).resolve().parents[1] / "scripts" / "probing_natural_stories.py"
    spec = importlib.util.spec_from_file_location("probing_natural_stories_script_agreement", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    assert script.main(["--root", str(root), "--out", str(out), "--agreement", "--stories", "2"]) == 0
    printed = capsys.readouterr().out
    assert "smallest_constituent" in printed and "kappa" in printed
    table = pd.read_csv(out / "parser_agreement.csv")
    assert len(table) == 16 and set(table.segmentation) == {"gold", "parser"}
    assert (table.n == (table.n.iloc[0])).all() and table.n.iloc[0] > 500  # story 2's words
    assert not (out / "results.csv").exists()  # no probing run
