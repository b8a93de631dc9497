"""Linguistic property labels from Penn Treebank trees (jaxalign.analysis.probing).

Hand-made trees pin every rule of the labels (what each label is and why is
written next to it), and the gold Natural Stories parses of stories 1-3 are
checked against the corpus's own words and a few sentences labelled by hand.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxalign.analysis.probing import (
    STUDY_BINS,
    labels_from_penn,
    parse_trees,
    property_classes,
    read_conllx,
    sentence_length_bin,
)
from jaxalign.analysis.probing._trees import category, prune_empty
from tests._shared_data import need

HAND = {
    # NP VP . : subject head "dogs" (NNS) plural; VBD past; "the cat" is a
    # direct object; deepest word "the"/"cat" under S > VP > NP: depth 3.
    "plain": "(ROOT (S (NP (DT The) (NNS dogs)) (VP (VBD chased) (NP (DT the) (NN cat))) (. .)))",
    # coordinated subject with "and": plural; the finite verb is the modal;
    # the lexical verb "be" is a copula, so "friends" is a predicate, no object;
    # "will" and "be" are auxiliaries (AUX) in UD.
    "copula": "(ROOT (S (NP (NNP Tom) (CC and) (NNP Ann)) (VP (MD will) (VP (VB be) "
              "(NP (NNS friends)))) (. .)))",
    # a wh-question: main clause is the SQ under SBARQ; "did" past; subject
    # "he" singular; the object is a trace (removed), so no object; "did" sits
    # directly under SQ (a clause, not a phrase): no smallest phrase.
    "question": "(ROOT (SBARQ (WHNP-1 (WP What)) (SQ (VBD did) (NP (PRP he)) (VP (VB see) "
                "(NP (-NONE- *T*-1)))) (. ?)))",
    # S CC S: the main clause is the first conjunct; its subject "John 's dogs"
    # has the possessive NP as determiner, head "dogs": plural; VBP present.
    "coordination": "(ROOT (S (S (NP (NP (NNP John) (POS 's)) (NNS dogs)) (VP (VBP bark))) (, ,) "
                    "(CC but) (S (NP (PRP it)) (VP (VBZ sleeps))) (. .)))",
    # function tags are dropped from top constituents; "you" has no number in
    # UD (the study's Stanza gave it none): unknown; IN under SBAR is SCONJ.
    "subordinate": "(ROOT (S (SBAR-ADV (IN If) (S (NP-SBJ (PRP you)) (VP (VBD were) (ADJP (JJ late))))) "
                   "(, ,) (NP-SBJ (PRP you)) (VP (MD would) (VP (VB come))) (. .)))",
}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    path = tmp_path_factory.mktemp("penn") / "hand.penn"
    path.write_text("\n".join(HAND.values()) + "\n")
    df = labels_from_penn(path)
    return {name: df[df.sentence == i].reset_index(drop=True) for i, name in enumerate(HAND)}


def test_hand_trees_sentence_labels(hand):
    want = {  # tense, subject_number, has_object, top_constituents, length, tree_depth
        "plain": ("past", "plural", True, "NP VP", 5, 3),
        "copula": ("modal", "plural", False, "NP VP", 6, 4),
        "question": ("past", "singular", False, "WHNP SQ", 4, 3),
        # without Natural Stories codes a sentence's length counts the leaves
        # that are not punctuation ("'s" is one)
        "coordination": ("present", "plural", False, "S CC S", 7, 4),
        # deepest: "late" under S SBAR S VP ADJP
        "subordinate": ("modal", "unknown", False, "SBAR NP VP", 7, 5),
    }
    for name, (tense, number, obj, top, length, depth) in want.items():
        row = hand[name].iloc[0]
        got = (row.tense, row.subject_number, bool(row.has_object), row.top_constituents,
               row.sentence_length, row.tree_depth)
        assert got == (tense, number, obj, top, length, depth), name
        # sentence-level labels are repeated on every word
        assert hand[name][["tense", "subject_number", "top_constituents"]].nunique().max() == 1


def test_hand_trees_word_labels(hand):
    plain = hand["plain"]
    assert list(plain.word) == ["The", "dogs", "chased", "the", "cat", "."]
    assert list(plain.pos) == ["DT", "NNS", "VBD", "DT", "NN", "."]
    assert list(plain.upos) == ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]
    assert list(plain.smallest_constituent) == ["NP", "NP", "VP", "NP", "NP", "none"]
    assert list(plain.word_depth) == [2, 2, 2, 3, 3, 1]
    assert plain.code.isna().all() and plain.story.isna().all()  # no codes in these leaves
    assert list(hand["copula"].upos) == ["PROPN", "CCONJ", "PROPN", "AUX", "AUX", "NOUN", "PUNCT"]
    q = hand["question"]
    assert list(q.word) == ["What", "did", "he", "see", "?"]  # the trace is not a word
    assert list(q.smallest_constituent) == ["WHNP", "none", "NP", "VP", "none"]
    assert list(q.upos) == ["PRON", "AUX", "PRON", "VERB", "PUNCT"]
    assert hand["coordination"].upos[1] == "PART"  # possessive 's
    assert hand["subordinate"].upos[0] == "SCONJ"


def test_study_bins_and_classes(hand):
    assert [sentence_length_bin(n) for n in (1, 7, 8, 16, 17, 64)] == [
        "1-7", "1-7", "8-16", "8-16", ">16", ">16"]
    with pytest.raises(ValueError, match="at least one word"):
        sentence_length_bin(0)
    plain = hand["plain"]
    with pytest.raises(ValueError, match="conllx="):  # the study bins the dependency depth
        property_classes(plain)
    cls = property_classes(plain, tree_depth_column="tree_depth", tree_depth_threshold=2)
    assert list(cls.columns) == list(STUDY_BINS)
    row = cls.iloc[1]  # "dogs"
    assert (row.sentence_length, row.tree_depth, row.top_constituents, row.tense,
            row.subject_number, row.object, row.pos, row.smallest_constituent) == (0, 1, 0, 0, 1, 1, 1, 0)
    assert list(cls.pos) == [4, 1, 0, 4, 1, 4]  # DET other, NOUN, VERB, ..., PUNCT other


def test_reader_rules_and_errors(tmp_path):
    assert [category(x) for x in ("NP-SBJ-1", "WHNP-", "NP=2", "-NONE-", "-LRB-")] == [
        "NP", "WHNP", "NP", "-NONE-", "-LRB-"]
    (t,) = parse_trees("( (S (NP (-NONE- *)) (VP (TO to) (VP (VB go)))) )")
    assert t.label == "" and str(prune_empty(t)) == "((S (VP (TO to) (VP (VB go)))))"
    for bad, msg in [("(S (NP x)", "never closed"), ("(S x))", "closes no bracket"),
                     ("x (S y)", "outside any bracket"), ("(S ())", "empty brackets")]:
        with pytest.raises(ValueError, match=msg):
            parse_trees(bad)
    broken = tmp_path / "broken.penn"
    broken.write_text("(ROOT (S (NP (PRP It))\n (VP (VBD rained)))\n")
    with pytest.raises(ValueError, match=r"broken.penn, line 1"):
        labels_from_penn(broken)
    with pytest.raises(FileNotFoundError):
        labels_from_penn(tmp_path / "missing.penn")


# --------------------------------------------------------------------------
# real data: the gold parses of Natural Stories stories 1-3
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stories():
    folder = need("natural_stories", "parses")
    return labels_from_penn(folder / "stories1-3.penn", conllx=folder / "stories1-3.conllx"), folder


def test_natural_stories_rows_are_the_leaves(stories):
    df, folder = stories
    text = (folder / "stories1-3.penn").read_text()
    leaves = re.findall(r"\(([^\s()]+) ([^\s()]+)\)", text)
    words = [(tag, w) for tag, w in leaves if tag != "-NONE-"]
    assert len(df) == len(words) == 3511  # README: 3,511 word leaves
    assert df.sentence.nunique() == text.count("(ROOT") == 149
    assert list(df.code) == [w.rsplit("/", 1)[1] for _, w in words]
    assert list(df.pos) == [tag for tag, _ in words]
    assert df.code.is_unique and set(df.story) == {1, 2, 3}
    # the CoNLL-X file lists the same tokens (checked by code inside labels_from_penn)
    assert sum(len(s) for s in read_conllx(folder / "stories1-3.conllx")) == 3511


def test_natural_stories_words_match_the_corpus(stories):
    """Leaves of one zone, joined, are the word the readers saw (io reader)."""
    from jaxalign import io

    df, _ = stories
    stim, _ = io.read_natural_stories(need("natural_stories"))
    corpus = {(int(s), int(z)): w for s, z, w in zip(stim.runs, stim.info["zone"], stim.words)}
    ptb = {"``": '"', "''": '"', "-LRB-": "(", "-RRB-": ")"}
    joined = (df.assign(w=df.word.map(lambda w: ptb.get(w, w)))
              .groupby(["story", "zone"], sort=False).w.agg("".join))
    assert len(joined) == len(corpus) == 3103  # every zone of stories 1-3, none extra

    def norm(s):
        return re.sub(r"\W", "", s).lower()  # the corpus quotes with ' where PTB has `` ''

    differ = {k: (v, corpus[k]) for k, v in joined.items() if norm(v) != norm(corpus[k])}
    # the one difference is a typo of the experiment as run ("peaked"), which the
    # corpus README says its token file keeps; the parse has the intended word
    assert differ == {(2, 749): ("peeked", "peaked")}
    # sentence lengths count zones (words as presented), not leaves
    first = df[df.sentence == 0]
    assert first.sentence_length.iloc[0] == first.zone.nunique() == 25 < len(first) == 27


def test_natural_stories_hand_checked_sentences(stories):
    df, _ = stories
    s = {i: g.reset_index(drop=True) for i, g in df.groupby("sentence") if i in (0, 1, 5, 22)}
    # 0: "If you were to journey to the North of England, you would come to a
    # valley that is surrounded by moors as high as mountains." 25 zones (>16).
    # Top: SBAR , NP VP . -> "SBAR NP VP". Main clause "you would come ...":
    # finite verb "would" (MD) -> modal; subject "you" -> unknown; "come to a
    # valley" has a PP, no NP complement -> no object. Deepest word
    # "mountains": S VP VP PP NP SBAR S VP VP PP NP ADJP PP NP = 14. UD
    # (CoNLL-X) chain come > valley > surrounded > moors > high > mountains >
    # as: dependency depth 6.
    r = s[0].iloc[0]
    assert (r.sentence_length, r.sentence_length_bin, r.top_constituents, r.tense,
            r.subject_number, bool(r.has_object), r.tree_depth, r.dependency_depth) == (
        25, ">16", "SBAR NP VP", "modal", "unknown", False, 14, 6)
    w = s[0].set_index("code")
    assert w.loc["1.1", "smallest_constituent"] == "none"  # "If": under SBAR, a clause label
    assert w.loc["1.1", "upos"] == "SCONJ"
    assert (w.loc["1.17", "word"], w.loc["1.17", "smallest_constituent"], w.loc["1.17", "upos"]) == (
        "that", "WHNP", "PRON")  # relative "that" alone in WHNP-1
    assert w.loc["1.18", "upos"] == "AUX"  # "is surrounded": passive auxiliary
    assert w.loc["1.25.1", "word_depth"] == 14
    # 1: "It is in this valley where you would find the city of Bradford, ...":
    # "is" VBZ -> present; subject "It" -> singular; copula -> no object.
    r = s[1].iloc[0]
    assert (r.tense, r.subject_number, bool(r.has_object), r.top_constituents) == (
        "present", "singular", False, "NP VP")
    # 5: "A source of great trouble to the local folk the boar was, bringing
    # terror ...": fronted predicate NP, then the subject NP "the boar"
    # (the last NP before the VP) -> singular; "was" -> past.
    r = s[5].iloc[0]
    assert (r.top_constituents, r.subject_number, r.tense, bool(r.has_object)) == (
        "NP NP VP S", "singular", "past", False)
    # 22: "He set out for the Manor House as quickly as he could and he had
    # only been gone ...": the gold tree tags "set" VBP, so the label follows
    # the tree and says present (a past reading is meant; labels are only as
    # good as the tags).
    r = s[22].iloc[0]
    assert (r.top_constituents, r.tense, r.subject_number) == ("S CC S", "present", "singular")
    assert s[22].set_index("code").loc["1.555", "pos"] == "VBP"


def test_natural_stories_study_classes(stories):
    df, _ = stories
    cls = property_classes(df)
    assert cls.shape == (3511, 8) and cls.index.equals(df.index)
    ranges = {"sentence_length": 3, "pos": 5}
    for col in cls:
        assert set(np.unique(cls[col])) <= set(range(ranges.get(col, 2))), col
        assert cls[col].nunique() > 1, col  # every property varies in these stories
    # sentence-level classes are constant within a sentence
    per_sentence = cls.groupby(df.sentence)[["tense", "tree_depth", "object"]].nunique()
    assert (per_sentence == 1).all().all()
