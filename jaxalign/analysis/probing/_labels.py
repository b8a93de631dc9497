"""Linguistic property labels per word from gold parses (the Pythia study's
eight probing tasks), and the study's class bins.

The study (Bakalova, "Dynamics of Human-LLM Alignment", section 3.1 and its
code, github.com/CUPalex/alignment, ``linguistic_features.py``) labels every
word of Harry Potter chapter 9 with six sentence-level properties (repeated on
every word of the sentence) and two word-level ones, from a Stanza parse.
Here the labels come from gold Penn Treebank trees (Natural Stories stories
1-3 ship with hand-corrected ones), optionally with the matching Universal
Dependencies parse (CoNLL-X) for the dependency-tree depth the study bins.

Raw labels (:func:`labels_from_penn`; "main clause" is the first clause of
the tree's top node, descending through ``S -> S CC S`` coordination,
``SBARQ -> SQ`` and a top-level ``SBAR``):

``sentence_length``
    Words in the sentence as they were presented: distinct Natural Stories
    zones (``England,`` is one word though its comma is a leaf of its own),
    as the study counted whitespace-separated words of its text. Without
    codes in the file: the leaves that are not punctuation.
``tree_depth``
    Constituency depth: the most phrase nodes above any word (``ROOT`` and
    part-of-speech nodes not counted, traces removed). ``word_depth`` is the
    same count for each word.
``dependency_depth`` (with ``conllx=``)
    The study's "tree depth" as its code computes it: the deepest word of
    the dependency tree, the root word at depth 0.
``top_constituents``
    Categories of the top node's children, function tags and punctuation
    dropped (``"SBAR NP VP"``). The study's Stanza trees carry no function
    tags, and its words kept their punctuation attached, so punctuation
    never appeared among its top constituents either.
``tense``
    Of the main clause's finite verb (the first verb of its verb phrase,
    auxiliaries included): ``past`` (VBD), ``present`` (VBZ, VBP), ``modal``
    (MD: would, could...), ``nonfinite`` (VB, VBG, VBN, TO) or ``none``.
``subject_number``
    Of the main clause's subject (the ``-SBJ`` child, else the last noun
    phrase before the verb phrase; after the verb in ``SINV``/``SQ``): its
    head noun (NN/NNP ``singular``, NNS/NNPS ``plural``), a noun phrase
    coordinated with "and" ``plural``, a pronoun or determiner by a small
    lexicon (``you``, ``there``, ``all`` are ``unknown``), a clausal subject
    ``clausal``, no subject ``none``.
``has_object``
    Whether the main clause's lexical verb phrase (down its auxiliary chain)
    has a noun-phrase complement that is not predicative: copular verbs
    (forms of be, become, remain) and NPs tagged PRD/TMP/ADV/LOC/... do not
    count. The study's paper defines the task as object presence; its code
    bins the object's Number feature instead (``UNDEF`` against all else,
    absent objects included), which we do not copy.
``pos`` / ``upos``
    The leaf's Penn tag as written, and its Universal POS by the Penn-to-UD
    correspondence with the structural rules of the Stanford converter that
    a tag alone cannot decide (auxiliaries: a verb followed by a VP sister,
    or a form of be; subordinators: IN under SBAR; pronominal DT/WDT; TO in
    a PP; not/n't). The study's POS classes are on UPOS.
``smallest_constituent``
    The nearest phrase above the word among the study's list of phrase
    labels (``ADJP ADVP CONJP FRAG INTJ LST NAC NP NX PP PRN PRT QP RRC UCP
    VP WHADJP WHADVP WHNP WHPP X``; clause labels S, SBAR... are skipped),
    ``none`` when there is none. The study's list spells ``WHAVP``, a label
    that does not exist, so its WHADVP words got the next phrase up; we use
    WHADVP.

The study's class bins (:data:`STUDY_BINS`, applied by
:func:`property_classes`) are in section 3.1.3 of the paper and its code;
what each does is written next to it there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from jaxalign.analysis.probing._trees import Tree, category, prune_empty, read_trees

__all__ = [
    "PHRASE_LABELS",
    "STUDY_BINS",
    "labels_from_penn",
    "property_classes",
    "read_conllx",
    "sentence_length_bin",
    "upos_of",
]

PUNCT_TAGS = frozenset({",", ".", ":", "``", "''", "-LRB-", "-RRB-", "HYPH", "NFP"})
VERB_TAGS = frozenset({"VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "MD"})
CLAUSES = frozenset({"S", "SINV", "SQ"})

#: Phrase labels of the study's smallest-constituent task (Shi et al. 2016's
#: list, with the study's typo WHAVP read as WHADVP).
PHRASE_LABELS = frozenset({
    "ADJP", "ADVP", "CONJP", "FRAG", "INTJ", "LST", "NAC", "NP", "NX", "PP", "PRN", "PRT",
    "QP", "RRC", "UCP", "VP", "WHADJP", "WHADVP", "WHNP", "WHPP", "X",
})

_BE = frozenset({"be", "am", "is", "are", "was", "were", "been", "being", "'s", "'re", "'m"})
_COPULAS = _BE | frozenset({"become", "becomes", "became", "becoming", "remain", "remains",
                            "remained", "remaining"})
# function tags of noun phrases that are adverbials or predicates, not objects
_NOT_OBJECT = frozenset({"PRD", "ADV", "TMP", "LOC", "EXT", "MNR", "DIR", "PRP", "VOC", "BNF"})
_SINGULAR = frozenset({
    "i", "me", "he", "him", "she", "her", "it", "myself", "himself", "herself", "itself",
    "yourself", "one", "oneself", "this", "that", "each", "another", "either", "neither",
    "everyone", "everybody", "everything", "someone", "somebody", "something", "anyone",
    "anybody", "anything", "nobody", "nothing",
})
_PLURAL = frozenset({"we", "us", "they", "them", "ourselves", "themselves", "yourselves",
                     "these", "those", "both", "many", "few", "several"})
_UPOS = {
    "NN": "NOUN", "NNS": "NOUN", "NNP": "PROPN", "NNPS": "PROPN",
    "PRP": "PRON", "PRP$": "PRON", "WP": "PRON", "WP$": "PRON", "EX": "PRON",
    "DT": "DET", "PDT": "DET", "WDT": "DET",
    "JJ": "ADJ", "JJR": "ADJ", "JJS": "ADJ",
    "RB": "ADV", "RBR": "ADV", "RBS": "ADV", "WRB": "ADV",
    "IN": "ADP", "TO": "PART", "RP": "ADP", "CC": "CCONJ", "CD": "NUM", "UH": "INTJ",
    "POS": "PART", "MD": "AUX", "FW": "X", "LS": "X", "SYM": "SYM", "$": "SYM", "#": "SYM",
    **{t: "VERB" for t in ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ")},
    **{t: "PUNCT" for t in PUNCT_TAGS},
}
_CODE = re.compile(r"^(?P<word>.+)/(?P<code>(?P<story>\d+)\.(?P<zone>\d+)(?:\.[^\s/]+)?)$")


#: The study's classes per property: ``(column, what class 0.. means)``.
#: Sentence length: paper 3.1.3 ("1 to 7, 8 to 16, more than 16"; its code
#: numbers the last class 3, a slip we do not copy). Tree depth: "<= 3, > 3"
#: on the dependency depth (its code: max word depth, root 0). Top
#: constituents: the most frequent sequence (NP VP) or not. Tense: past or
#: not. Subject number: singular or not (no subject, "you": not). Object:
#: present or not. POS (code): VERB, NOUN, PRON, ADP, other. Smallest
#: constituent (code): NP or not.
STUDY_BINS = {
    "sentence_length": ("sentence_length_bin", ("1-7", "8-16", ">16")),
    "tree_depth": ("dependency_depth", ("<=3", ">3")),
    "top_constituents": ("top_constituents", ("NP VP", "other")),
    "tense": ("tense", ("past", "other")),
    "subject_number": ("subject_number", ("singular", "other")),
    "object": ("has_object", ("absent", "present")),
    "pos": ("upos", ("VERB", "NOUN", "PRON", "ADP", "other")),
    "smallest_constituent": ("smallest_constituent", ("NP", "other")),
}


def sentence_length_bin(length) -> str:
    """The study's sentence-length class: ``"1-7"``, ``"8-16"`` or ``">16"``.

    >>> [sentence_length_bin(n) for n in (1, 7, 8, 16, 17)]
    ['1-7', '1-7', '8-16', '8-16', '>16']
    """
    length = int(length)
    if length < 1:
        raise ValueError(f"a sentence has at least one word, got length {length}")
    return "1-7" if length <= 7 else ("8-16" if length <= 16 else ">16")


# --------------------------------------------------------------------------
# tree walks
# --------------------------------------------------------------------------


def _word(pre: Tree) -> str:
    """A leaf's word, lower case, without its Natural Stories code."""
    w = pre.children[0]
    m = _CODE.match(w)
    return (m.group("word") if m else w).lower()


def _tags(label: str) -> set[str]:
    """Function tags of a label (``NP-SBJ-1`` -> {"SBJ", "1"})."""
    return set() if label.startswith("-") else set(re.split(r"[-=]", label)[1:])


def _leaves(tree: Tree, ancestors=()):
    """(preterminal, ancestors from the root down to its parent) in order."""
    for c in tree.subtrees():
        if c.is_preterminal:
            yield c, (*ancestors, tree)
        else:
            yield from _leaves(c, (*ancestors, tree))


def _top(root: Tree) -> Tree:
    """The sentence's top node: the one non-punctuation child of ROOT (or of
    an unlabelled wrapper), else the root itself."""
    if root.category in ("ROOT", ""):
        kids = [c for c in root.subtrees() if c.label not in PUNCT_TAGS]
        if len(kids) == 1 and not kids[0].is_preterminal:
            return kids[0]
    return root


def _main_clause(node: Tree) -> Tree | None:
    cat = node.category
    kids = node.subtrees()
    if cat in CLAUSES:
        has_verb = any(k.category == "VP" or (k.is_preterminal and k.label in VERB_TAGS)
                       for k in kids)
        if not has_verb:  # S -> S CC S, S -> S : S
            for k in kids:
                if k.category in CLAUSES:
                    return _main_clause(k)
        return node
    if cat in ("ROOT", "", "SBARQ", "SBAR"):
        for k in kids:
            if k.category in CLAUSES | {"SBARQ", "SBAR"}:
                return _main_clause(k)
    return None


def _first_verb(vp: Tree) -> Tree | None:
    kids = vp.subtrees()
    for k in kids:
        if k.is_preterminal and (k.label in VERB_TAGS or k.label == "TO"):
            return k
    for k in kids:
        if k.category == "VP":
            return _first_verb(k)
    return None


def _finite_verb(clause: Tree) -> Tree | None:
    for k in clause.subtrees():
        if k.is_preterminal and k.label in VERB_TAGS:
            return k
        if k.category == "VP":
            return _first_verb(k)
    return None


def _tense(clause: Tree | None) -> str:
    verb = _finite_verb(clause) if clause is not None else None
    if verb is None:
        return "none"
    return {"VBD": "past", "VBZ": "present", "VBP": "present", "MD": "modal"}.get(
        verb.label, "nonfinite")


def _is_possessive(np_: Tree) -> bool:
    pts = np_.preterminals()
    return bool(pts) and pts[-1].label == "POS"


def _np_number(np_: Tree) -> str:
    kids = np_.subtrees()
    words = [_word(k) for k in kids if k.is_preterminal and k.label == "CC"]
    nominal = [k for k in kids if k.category in ("NP", "NX", "NML")
               or (k.is_preterminal and k.label.startswith("NN"))]
    if "and" in words and len(nominal) >= 2:
        return "plural"
    nouns = [k for k in kids if k.is_preterminal and k.label.startswith("NN")]
    if nouns:
        return "plural" if nouns[-1].label in ("NNS", "NNPS") else "singular"
    heads = [k for k in kids if k.category in ("NP", "NX", "NML") and not _is_possessive(k)]
    if heads:
        return _np_number(heads[0])
    for k in reversed(kids):
        if k.is_preterminal and k.label in ("PRP", "DT", "CD", "EX", "WP"):
            w = _word(k)
            if k.label == "CD":
                return "singular" if w in ("one", "1") else "plural"
            return "singular" if w in _SINGULAR else ("plural" if w in _PLURAL else "unknown")
    return "unknown"


def _subject(clause: Tree) -> Tree | None:
    kids = clause.subtrees()
    for k in kids:
        if "SBJ" in _tags(k.label):
            return k
    verb_at = next((i for i, k in enumerate(kids)
                    if k.category == "VP" or (k.is_preterminal and k.label in VERB_TAGS)),
                   len(kids))

    def nominal(k):
        return k.category == "NP" and not (_tags(k.label) & _NOT_OBJECT)

    if clause.category == "S":
        before = [k for k in kids[:verb_at] if nominal(k)]
        return before[-1] if before else None
    after = [k for k in kids[verb_at + 1:] if nominal(k)]  # SINV, SQ
    return after[0] if after else None


def _subject_number(clause: Tree | None) -> str:
    subj = _subject(clause) if clause is not None else None
    if subj is None:
        return "none"
    if subj.category == "NP":
        return _np_number(subj)
    return "clausal" if subj.category in CLAUSES | {"SBAR", "SBARQ"} else "unknown"


def _has_object(clause: Tree | None) -> bool:
    if clause is None:
        return False
    vp = next((k for k in clause.subtrees() if k.category == "VP"), None)
    if vp is None:
        return False
    while True:  # down the auxiliary chain / into the first conjunct
        inner = next((k for k in vp.subtrees() if k.category == "VP"), None)
        if inner is None:
            break
        vp = inner
    verb = _first_verb(vp)
    if verb is not None and _word(verb) in _COPULAS:
        return False
    return any(k.category == "NP" and not (_tags(k.label) & _NOT_OBJECT)
               for k in vp.subtrees())


def upos_of(pre: Tree, parent: Tree) -> str:
    """Universal POS of a preterminal given its parent (see the module docstring)."""
    tag, word = pre.label, _word(pre)
    up = _UPOS.get(tag, "X")
    sisters = parent.subtrees()
    if up == "VERB":
        i = next(j for j, s in enumerate(sisters) if s is pre)
        if word in _BE or any(s.category == "VP" for s in sisters[i + 1:]):
            return "AUX"
    elif tag == "IN" and parent.category == "SBAR":
        return "SCONJ"
    elif tag == "TO" and parent.category == "PP":
        return "ADP"
    elif tag in ("DT", "WDT") and len(sisters) == 1 and parent.category in ("NP", "WHNP"):
        return "PRON"
    elif tag == "RB" and word in ("not", "n't"):
        return "PART"
    return up


# --------------------------------------------------------------------------
# CoNLL-X
# --------------------------------------------------------------------------


def read_conllx(path) -> list[pd.DataFrame]:
    """Sentences of a CoNLL-X / CoNLL-U file as DataFrames (id, form, tag,
    head, deprel, code, depth): ``code`` from a ``TokenId=`` in the last
    column (Natural Stories), ``depth`` the word's depth in the dependency
    tree (root 0). Multi-word token ranges and empty nodes are skipped."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"CoNLL-X file not found: {p}")
    sentences, rows = [], []

    def close():
        if rows:
            sentences.append(_with_depth(pd.DataFrame(rows), p))
            rows.clear()

    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            close()
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) < 8:
            raise ValueError(f"{p}, line {lineno}: expected >= 8 tab-separated columns, got {len(cols)}")
        if not cols[0].isdigit():  # 1-2 (multi-word token) or 1.1 (empty node)
            continue
        misc = cols[9] if len(cols) > 9 else "_"
        code = next((f[len("TokenId="):] for f in misc.split("|") if f.startswith("TokenId=")), None)
        rows.append({"id": int(cols[0]), "form": cols[1], "tag": cols[4], "head": int(cols[6]),
                     "deprel": cols[7], "code": code})
    close()
    return sentences


def _with_depth(df: pd.DataFrame, source) -> pd.DataFrame:
    heads = dict(zip(df["id"], df["head"]))
    depth = {}
    for i in heads:
        chain, j = [], i
        while j not in depth and j != 0:
            if j in chain or j not in heads:
                raise ValueError(f"{source}: the dependency heads of the sentence with words "
                                 f"{list(df['form'][:5])}... do not form a tree")
            chain.append(j)
            j = heads[j]
        d = -1 if j == 0 else depth[j]
        for k in reversed(chain):
            d += 1
            depth[k] = d
    return df.assign(depth=[depth[i] for i in df["id"]])


# --------------------------------------------------------------------------
# the labels
# --------------------------------------------------------------------------


def labels_from_penn(path, conllx=None) -> pd.DataFrame:
    """Property labels of every word leaf of the Penn Treebank trees in ``path``.

    Parameters
    ----------
    path : str or Path
        Bracketed trees, one sentence per top-level bracket (``(ROOT ...)``).
        Leaves may carry a Natural Stories code, ``word/story.zone[.k]``.
    conllx : str or Path, optional
        The same sentences as a dependency parse (CoNLL-X/-U); adds
        ``dependency_depth``, the measure the study's tree-depth bins apply
        to. Its sentences must list the trees' word leaves in the same order
        (checked by the codes when both have them, else by the forms).

    Returns
    -------
    pandas.DataFrame
        One row per word leaf (traces excluded), in file order: ``sentence``
        (0-based tree index), ``code``, ``story``, ``zone`` (from the code;
        missing without one), ``word``, ``pos``, ``upos``, ``word_depth``,
        ``smallest_constituent``, then the sentence-level properties repeated
        on every word: ``sentence_length``, ``sentence_length_bin``,
        ``tree_depth``, [``dependency_depth``], ``top_constituents``,
        ``tense``, ``subject_number``, ``has_object``. Definitions: module
        docstring of ``jaxalign.analysis.probing._labels``.
    """
    trees = read_trees(path)
    rows = []
    for s, raw in enumerate(trees):
        root = prune_empty(raw)
        if root is None:
            continue
        top = _top(root)
        clause = _main_clause(root)
        leaves = list(_leaves(root))
        top_cons = " ".join(category(k.label) for k in top.subtrees()
                            if k.label not in PUNCT_TAGS)
        sent = dict(tense=_tense(clause), subject_number=_subject_number(clause),
                    has_object=_has_object(clause), top_constituents=top_cons)
        wrapped = root.category in ("ROOT", "")
        words = []
        for pre, anc in leaves:
            m = _CODE.match(pre.children[0])
            smallest = next((category(a.label) for a in reversed(anc)
                             if category(a.label) in PHRASE_LABELS), "none")
            words.append(dict(
                sentence=s,
                code=m.group("code") if m else None,
                story=int(m.group("story")) if m else pd.NA,
                zone=int(m.group("zone")) if m else pd.NA,
                word=m.group("word") if m else pre.children[0],
                pos=pre.label,
                upos=upos_of(pre, anc[-1]),
                word_depth=len(anc) - (1 if wrapped else 0),
                smallest_constituent=smallest,
            ))
        if all(w["code"] is not None for w in words):
            length = len({(w["story"], w["zone"]) for w in words})
        else:
            length = sum(w["pos"] not in PUNCT_TAGS for w in words)
        length = max(length, 1)
        depth = max(w["word_depth"] for w in words)
        for w in words:
            w.update(sentence_length=length, sentence_length_bin=sentence_length_bin(length),
                     tree_depth=depth, **sent)
        rows.extend(words)
    if not rows:
        raise ValueError(f"{path}: no bracketed tree with a word in it")
    df = pd.DataFrame(rows)
    df["story"] = df["story"].astype("Int64")
    df["zone"] = df["zone"].astype("Int64")
    if conllx is not None:
        df.insert(df.columns.get_loc("tree_depth") + 1, "dependency_depth",
                  _dependency_depths(df, conllx))
    return df


def _dependency_depths(df: pd.DataFrame, conllx) -> np.ndarray:
    deps = read_conllx(conllx)
    out = np.zeros(len(df), dtype=np.int64)
    groups = list(df.groupby("sentence", sort=False).indices.items())
    if len(deps) != len(groups):
        raise ValueError(f"{conllx} has {len(deps)} sentences, the trees {len(groups)}")
    for (s, idx), dep in zip(groups, deps):
        ours = df["code"].to_numpy()[idx]
        use_codes = dep["code"].notna().all() and all(c is not None for c in ours)
        theirs = dep["code"].to_numpy() if use_codes else dep["form"].to_numpy()
        if not use_codes:
            ours = df["word"].to_numpy()[idx]
        if len(theirs) != len(ours) or np.any(theirs != ours):
            raise ValueError(
                f"{conllx}: sentence {s} does not list the tree's words "
                f"({list(ours[:4])}... vs {list(theirs[:4])}...)")
        out[idx] = int(dep["depth"].max())
    return out


def property_classes(labels: pd.DataFrame, *, tree_depth_column: str = "dependency_depth",
                     tree_depth_threshold: int = 3) -> pd.DataFrame:
    """The study's integer classes per word for each property (:data:`STUDY_BINS`).

    Parameters
    ----------
    labels : DataFrame from :func:`labels_from_penn`
    tree_depth_column : column binned at ``tree_depth_threshold`` (class 0:
        ``<=``, class 1: ``>``). The study's measure is the dependency depth
        (pass ``conllx=`` to :func:`labels_from_penn`); ``"tree_depth"``
        (constituency depth, larger numbers) needs its own threshold, e.g.
        its median, as the study chose its own to balance its classes.

    Returns
    -------
    DataFrame of int columns ``sentence_length`` (0: 1-7, 1: 8-16, 2: >16),
    ``tree_depth``, ``top_constituents`` (0: NP VP), ``tense`` (0: past),
    ``subject_number`` (0: singular), ``object`` (1: present), ``pos``
    (0 VERB, 1 NOUN, 2 PRON, 3 ADP, 4 other), ``smallest_constituent``
    (0: NP), indexed like ``labels``.
    """
    if tree_depth_column not in labels:
        raise ValueError(
            f"labels have no {tree_depth_column!r} column. The study bins the dependency-tree "
            "depth at 3: pass conllx= to labels_from_penn, or use "
            "tree_depth_column='tree_depth' with a threshold for constituency depth "
            "(e.g. its median)")
    pos_classes = {"VERB": 0, "NOUN": 1, "PRON": 2, "ADP": 3}
    out = pd.DataFrame(index=labels.index)
    out["sentence_length"] = labels["sentence_length_bin"].map(
        {"1-7": 0, "8-16": 1, ">16": 2}).astype(int)
    out["tree_depth"] = (labels[tree_depth_column] > tree_depth_threshold).astype(int)
    out["top_constituents"] = (labels["top_constituents"] != "NP VP").astype(int)
    out["tense"] = (labels["tense"] != "past").astype(int)
    out["subject_number"] = (labels["subject_number"] != "singular").astype(int)
    out["object"] = labels["has_object"].astype(bool).astype(int)
    out["pos"] = labels["upos"].map(pos_classes).fillna(4).astype(int)
    out["smallest_constituent"] = (labels["smallest_constituent"] != "NP").astype(int)
    return out
