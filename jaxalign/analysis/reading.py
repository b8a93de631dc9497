"""Reading times: held-out regression with controls and spillover, word controls, ceiling.

The instruction-tuning study's behavioural benchmark (METHODS.md section 3,
Futrell et al. 2018) correlates LM surprisal with the mean self-paced reading
time of each word, on the words it was fitted on
(:mod:`jaxalign.studies.natural_stories`). This module adds what the
reading-time literature reports on top (e.g. Goodkind & Bicknell 2018;
Wilcox et al. 2020): control predictors, spillover, held-out evaluation and
the gain of the LM over the controls.

Arrays (or DataFrames) in, results out: the words, reading times, story ids
and surprisal come from the caller (``jaxalign.studies`` loads them).

Functions
---------
:func:`reading_time_regression`
    Cross-validated linear regression of reading time on a *control* model
    (by default intercept only; usually word length and log frequency, see
    :func:`word_controls`) and a *full* model (controls + the predictors of
    interest, e.g. surprisal), each with spillover (the previous ``k``
    words' values, within the story). Folds hold out whole stories
    (leave-one-story-out); every word is predicted by a model that never saw
    its story. Held-out Pearson r and R^2 per story and pooled; the gain
    delta R^2 / delta r of the full over the control model with two tests
    (over words and over stories, below).
:func:`word_controls`, :func:`word_length`, :func:`log_frequency`
    The usual lexical controls: letters per word and Zipf-scale frequency
    from ``wordfreq`` (optional extra ``jaxalign[reading]``).
:func:`spillover_columns`
    Lagged copies of predictor columns within each story.
:func:`reading_time_ceiling`
    Split-half (Spearman-Brown) reliability of the mean reading time from
    per-reader data (:func:`jaxalign.stats.split_half_ceiling`), per story,
    with a stated rule for missing values.

Conventions of :func:`reading_time_regression`
----------------------------------------------
* Words are in reading order, each story's words contiguous; ``groups``
  holds the story id of every word.
* Spillover ``k``: for every column ``c`` of the controls and predictors,
  ``c_lag1 .. c_lagk`` hold the value of the 1st .. k-th previous word of
  the same story; NaN for the first ``j`` words of a story (there is no
  previous word: no value is borrowed from the previous story). Lags are
  taken over *all* words before any exclusion (a sentence-initial word that
  is not scored was still read, and its surprisal spills over).
* Used words: ``keep`` (e.g. not sentence-initial), a finite reading time,
  and finite values in every column of the full model (so the first ``k``
  words of each story, and the word after a NaN surprisal, drop out). Both
  models are fitted and scored on exactly these words.
* Fit: ordinary least squares with an intercept, in float64
  (``numpy.linalg.lstsq``), by default; with ``alphas`` given, ridge on the
  engine (:class:`jaxalign.ridge.RidgeCV`, unpenalised intercept) on
  predictors z-scored with the training stories' means and SDs, the penalty
  chosen per outer fold by an inner leave-one-story-out CV over the training
  stories (5 contiguous folds when only one training story is left);
  coefficients are reported back in the predictors' own units.
* Scores (:func:`jaxalign.ridge.pearson_r`, :func:`jaxalign.ridge.r2_score`)
  of the held-out predictions: per story over its used words (R^2 against
  the story's own mean), and pooled over all used words (R^2 against the
  grand mean). ``cv=None`` scores the fit on all words instead (the
  published in-sample convention, optimistic), for comparison.
* Tests of the gain (one-sided, full better than control;
  :func:`jaxalign.stats.sign_flip_test`):

  - ``p_words``: sign-flip permutation test over words of the per-word
    difference of held-out squared errors,
    ``d_i = (y_i - f_control,i)^2 - (y_i - f_full,i)^2``, whose mean is the
    drop in MSE (pooled delta R^2 = sum(d) / sum((y - mean y)^2)): the
    paired per-word permutation test of Wilcox et al. (2020). Words are not
    independent (shared context, spillover), so this p is on the small side.
  - ``p_stories``: sign-flip test over stories of the per-story held-out
    delta R^2, exact (all ``2^S`` sign patterns) when ``2^S <=
    n_permutations``: it respects the dependence within a story but cannot
    go below ``2^-S`` (0.125 with 3 stories, 0.001 with 10).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> story = np.repeat([1, 2, 3], 200)
>>> surprisal = rng.gamma(2.0, 3.0, 600)
>>> length = rng.integers(1, 12, 600).astype(float)
>>> rt = 300 + 4 * length + 3 * surprisal + 2 * np.roll(surprisal, 1) + rng.normal(0, 20, 600)
>>> res = reading_time_regression(rt, {"surprisal": surprisal}, story,
...                               controls={"length": length}, spillover=1)
>>> res.full_columns
['length', 'length_lag1', 'surprisal', 'surprisal_lag1']
>>> res.pooled["n"], res.pooled["delta_r2"] > 0.1
(597, True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from jaxalign._core.validation import check_int
from jaxalign.ridge import GroupKFold, LeaveOneGroupOut, RidgeCV, check_cv, is_partition
from jaxalign.ridge import pearson_r as _pearson_r
from jaxalign.ridge import r2_score as _r2_score
from jaxalign.stats import sign_flip_test, split_half_ceiling

__all__ = [
    "EXCLUSIONS",
    "ReadingCeiling",
    "ReadingTimeRegression",
    "log_frequency",
    "reading_time_ceiling",
    "reading_time_regression",
    "spillover_columns",
    "word_controls",
    "word_length",
]

#: Reasons a word is not used by :func:`reading_time_regression`, in order
#: (each word is counted under the first that applies).
EXCLUSIONS = ("not_kept", "missing_rt", "missing_predictor")

_EXTRA_HINT = ("log_frequency needs the 'wordfreq' package (word frequencies of many languages, "
               "data included in the wheel, works offline): pip install 'jaxalign[reading]' "
               "(or pip install 'wordfreq>=3')")


# ------------------------------------------------------------------ controls


def word_length(words) -> np.ndarray:
    """Letters and digits per word (``str.isalnum`` characters), float64.

    Punctuation attached to a word in the presented text ("said." or
    "'But") does not count; an inner apostrophe or hyphen does not either
    ("don't" 4, "well-known" 9).

    >>> word_length(["If", "said.", "'But", "don't"]).tolist()
    [2.0, 4.0, 3.0, 4.0]
    """
    return np.array([sum(ch.isalnum() for ch in str(w)) for w in _words(words)], dtype=np.float64)


def log_frequency(words, lang: str = "en", *, wordlist: str = "best", minimum: float = 0.0) -> np.ndarray:
    """Word frequency on the Zipf scale, ``log10`` of occurrences per billion words, float64.

    From ``wordfreq`` (Speer et al.; ``wordfreq.zipf_frequency``): a
    frequency list merged from several corpora (subtitles, Wikipedia, news,
    books, web text, ...) for 40+ languages, shipped inside the package (no
    network). Each presented word goes through wordfreq's own tokenizer, so
    attached punctuation is stripped ("said." is "said", "'But" is "but",
    case folded) and a word it splits into several tokens ("well-known") gets
    their combined frequency (wordfreq's rule, ``1/f = sum 1/f_i``). A word
    not in the list gets ``minimum`` (0 by default: wordfreq's floor; about 1
    is "once per 100 million words").

    Parameters
    ----------
    words : sequence of str
    lang : str, default "en"
        Language code wordfreq knows (``wordfreq.available_languages()``).
    wordlist : str, default "best"
        wordfreq's list ("best" is its largest for the language).
    minimum : float, default 0.0
        Value for words not in the list.

    Raises
    ------
    ImportError
        When ``wordfreq`` is not installed (the message names the extra).
    """
    try:
        import wordfreq
    except ImportError as err:
        raise ImportError(_EXTRA_HINT) from err
    words = _words(words)
    cache: dict[str, float] = {}
    out = np.empty(len(words), dtype=np.float64)
    for i, w in enumerate(words):
        w = str(w)
        if w not in cache:
            cache[w] = float(wordfreq.zipf_frequency(w, lang, wordlist=wordlist, minimum=minimum))
        out[i] = cache[w]
    return out


def word_controls(words, lang: str = "en") -> pd.DataFrame:
    """The usual lexical controls: ``length`` (:func:`word_length`) and
    ``log_frequency`` (:func:`log_frequency`, Zipf scale), one row per word."""
    words = _words(words)
    return pd.DataFrame({"length": word_length(words), "log_frequency": log_frequency(words, lang)})


def _words(words) -> list:
    if isinstance(words, str):
        raise TypeError("words must be a sequence of words, not one string")
    return list(np.asarray(words, dtype=object).ravel())


# ----------------------------------------------------------------- spillover


def _story_starts(groups) -> tuple[np.ndarray, np.ndarray]:
    """Story labels (n,) and the position of every word within its story; each story contiguous."""
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be 1-D (one story id per word), got shape {g.shape}")
    n = g.size
    new = np.ones(n, dtype=bool)
    new[1:] = g[1:] != g[:-1]
    starts = np.flatnonzero(new)
    labels = g[starts]
    if len(pd.unique(labels)) != labels.size:
        dup = pd.Series(labels).loc[pd.Series(labels).duplicated()].iloc[0]
        raise ValueError(f"the words of story {dup!r} are not contiguous in groups: words must be "
                         "in reading order, one story after the other")
    run_id = np.cumsum(new) - 1
    position = np.arange(n) - starts[run_id]
    return g, position


def spillover_columns(columns, groups, k: int = 1) -> pd.DataFrame:
    """Each column followed by its values at the 1st .. k-th previous word of the same story.

    Parameters
    ----------
    columns : DataFrame, mapping name -> (n,) array, or (n,) array (named "x")
    groups : (n,) story id of every word; each story's words contiguous, in
        reading order
    k : int >= 0
        Number of previous words.

    Returns
    -------
    DataFrame with, for every input column ``c``, ``c, c_lag1, ..., c_lagk``
    (in that order); ``c_lagj`` is NaN for the first ``j`` words of each story.

    >>> spillover_columns({"s": [1.0, 2, 3, 4, 5]}, [7, 7, 7, 8, 8], k=1)["s_lag1"].tolist()
    [nan, 1.0, 2.0, nan, 4.0]
    """
    frame = _as_frame(columns, None, "columns")
    k = check_int(k, "k", 0)
    _, position = _story_starts(groups)
    if len(position) != len(frame):
        raise ValueError(f"groups has {len(position)} words but columns have {len(frame)}")
    out = {}
    for name in frame.columns:
        x = frame[name].to_numpy(dtype=np.float64)
        out[name] = x
        for j in range(1, k + 1):
            lag = np.full_like(x, np.nan)
            if j < x.size:
                lag[j:] = x[:-j]
            lag[position < j] = np.nan
            out[f"{name}_lag{j}"] = lag
    return pd.DataFrame(out, index=frame.index)


def _as_frame(x, n, name) -> pd.DataFrame:
    """A float64 DataFrame of named columns, reset to a RangeIndex, from a frame, mapping or array."""
    if x is None:
        return pd.DataFrame(index=pd.RangeIndex(n if n is not None else 0))
    if isinstance(x, pd.Series):
        frame = x.to_frame(name=x.name if x.name is not None else "x")
    elif isinstance(x, pd.DataFrame):
        frame = x.copy()
    elif isinstance(x, dict):
        frame = pd.DataFrame({str(k): np.asarray(v).ravel() if np.ndim(v) else v for k, v in x.items()})
    else:
        arr = np.asarray(x)
        if arr.ndim == 1:
            frame = pd.DataFrame({"x": arr})
        elif arr.ndim == 2:
            frame = pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])
        else:
            raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    frame.columns = [str(c) for c in frame.columns]
    if n is not None and len(frame) != n:
        raise ValueError(f"{name} has {len(frame)} rows, expected {n} (one per word)")
    for c in frame.columns:
        try:
            frame[c] = pd.to_numeric(frame[c]).astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: column {c!r} is not numeric") from err
    if frame.columns.duplicated().any():
        raise ValueError(f"{name} has duplicate column names {list(frame.columns)}")
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------- regression


@dataclass
class ReadingTimeRegression:
    """Outputs of :func:`reading_time_regression`.

    Attributes
    ----------
    scores : DataFrame
        One row per story (its id) and a last row ``"pooled"``; columns
        ``n`` (used words), ``r_control``, ``r_full``, ``delta_r``,
        ``r2_control``, ``r2_full``, ``delta_r2`` (held-out; in-sample with
        ``cv=None``).
    p_words, p_stories : float
        One-sided p of the gain: sign-flip test over words of the
        squared-error differences, and over stories of delta R^2 (module
        docstring).
    delta_mse : float
        Mean over used words of ``(y - f_control)^2 - (y - f_full)^2``
        (ms^2 for reading times in ms): the statistic of ``p_words``.
    coef : DataFrame
        Rows ``(model, fold)`` with model "control" / "full" and fold the
        held-out stories of the fold (joined by "+"; "all" with ``cv=None``),
        columns ``intercept`` and every column of the full model (NaN where
        a model does not have it), in the units of reading time per unit of
        the predictor (e.g. ms per bit).
    best_alphas : DataFrame or None
        With ``alphas``: the penalty chosen per model and fold.
    predictions : DataFrame
        One row per used word (index: its position in the input): ``story``,
        ``rt``, ``control``, ``full`` (held-out predictions).
    used : (n,) bool
        The words fitted and scored.
    excluded : dict
        Words not used, by the first reason that applies
        (:data:`EXCLUSIONS`), and ``total``.
    control_columns, full_columns : list of str
        Columns of each model's design (the intercept not listed).
    settings : dict
        How it was computed (fit, cv, spillover, tests), JSON-ready.
    """

    scores: pd.DataFrame
    p_words: float
    p_stories: float
    delta_mse: float
    coef: pd.DataFrame
    best_alphas: pd.DataFrame | None
    predictions: pd.DataFrame = field(repr=False)
    used: np.ndarray = field(repr=False)
    excluded: dict
    control_columns: list
    full_columns: list
    settings: dict

    @property
    def pooled(self) -> dict:
        """The ``"pooled"`` row of :attr:`scores` as a dict."""
        row = self.scores.loc["pooled"]
        return {k: (int(v) if k == "n" else float(v)) for k, v in row.items()}

    def to_dict(self) -> dict:
        """Everything but the per-word arrays, JSON-ready: ``scores`` (story -> row, "pooled"
        last), ``p_words``, ``p_stories``, ``delta_mse``, ``coef`` (model -> fold -> column ->
        value, NaN columns left out), ``best_alphas``, ``excluded``, the columns and ``settings``."""
        def clean(v):
            return None if v is None or v != v else float(v)

        scores = {str(k): {c: (int(v) if c == "n" else clean(v)) for c, v in row.items()}
                  for k, row in self.scores.iterrows()}
        coef: dict = {}
        for (model, fold), row in self.coef.iterrows():
            coef.setdefault(model, {})[str(fold)] = {c: float(v) for c, v in row.items() if v == v}
        alphas = None
        if self.best_alphas is not None:
            alphas = {m: {str(f): clean(a) for f, a in col.items()} for m, col in self.best_alphas.items()}
        return {
            "scores": scores, "p_words": clean(self.p_words), "p_stories": clean(self.p_stories),
            "delta_mse": clean(self.delta_mse), "coef": coef, "best_alphas": alphas,
            "excluded": dict(self.excluded), "control_columns": list(self.control_columns),
            "full_columns": list(self.full_columns), "settings": dict(self.settings),
        }

    def summary(self) -> str:
        """A table of held-out r and R^2 per story and pooled, and the tests."""
        head = (f"{'':<12}{'n':>6}{'r ctrl':>9}{'r full':>9}{'d r':>8}"
                f"{'R2 ctrl':>9}{'R2 full':>9}{'d R2':>8}")
        lines = [head]
        for name, row in self.scores.iterrows():
            label = "pooled" if name == "pooled" else f"story {name}"
            lines.append(f"{label:<12}{int(row['n']):>6}{row['r_control']:>9.3f}{row['r_full']:>9.3f}"
                         f"{row['delta_r']:>8.3f}{row['r2_control']:>9.3f}{row['r2_full']:>9.3f}"
                         f"{row['delta_r2']:>8.4f}")
        lines.append(f"gain of the full model: p = {self.p_words:.3g} (sign flips over words), "
                     f"p = {self.p_stories:.3g} (over {len(self.scores) - 1} stories); "
                     f"{self.settings['evaluation']}")
        return "\n".join(lines)


def _splits(cv, used_groups):
    """(train, test) index arrays over the used words, their labels, and a description."""
    n = used_groups.size
    stories = pd.unique(used_groups)
    if cv is None:
        every = np.arange(n)
        return [(every, every)], ["all"], "in-sample (fitted and scored on all used words)"
    if isinstance(cv, str):
        if cv != "stories":
            raise ValueError(f"cv must be 'stories', an int, a splitter, a list of splits or None, got {cv!r}")
        if stories.size < 2:
            raise ValueError("cv='stories' needs at least 2 stories with used words; "
                             f"got {stories.size} (pass cv=None to score in-sample)")
        splits = check_cv(LeaveOneGroupOut(), n, groups=used_groups)
        desc = f"held out: leave-one-story-out over {stories.size} stories"
    elif isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        splits = check_cv(GroupKFold(int(cv)), n, groups=used_groups)
        desc = f"held out: {int(cv)} folds of whole stories (GroupKFold)"
    else:
        splits = check_cv(cv, n, groups=used_groups)
        desc = f"held out: {len(splits)} given folds"
    if not is_partition(splits, n):
        raise ValueError("the folds must test every used word exactly once (a partition), so that "
                         "every word has one held-out prediction")
    labels = ["+".join(str(s) for s in pd.unique(used_groups[te])) for _, te in splits]
    return splits, labels, desc


def _ols(X_train, y_train, X_test):
    """Least squares with an intercept, float64: (coef, intercept, predictions)."""
    A = np.column_stack([np.ones(len(X_train)), X_train])
    beta, *_ = np.linalg.lstsq(A, y_train, rcond=None)
    return beta[1:], float(beta[0]), beta[0] + X_test @ beta[1:]


def _ridge(X_train, y_train, X_test, groups_train, alphas):
    """Ridge on the engine, predictors z-scored with training statistics: (coef, intercept, pred, alpha)."""
    mean = X_train.mean(axis=0)
    sd = X_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z_train = (X_train - mean) / sd
    Z_test = (X_test - mean) / sd
    inner = LeaveOneGroupOut() if pd.unique(groups_train).size >= 2 else 5
    model = RidgeCV(alphas=alphas, cv=inner, fit_intercept=True, progress=False)
    model.fit(Z_train, y_train, groups=groups_train if not isinstance(inner, int) else None)
    coef_z = np.asarray(model.coef_, np.float64)
    coef = coef_z / sd
    intercept = float(model.intercept_) - float(mean @ coef)
    return coef, intercept, np.asarray(model.predict(Z_test), np.float64), float(model.best_alphas_)


def _score_pair(y, f_control, f_full):
    """(r_control, r_full, r2_control, r2_full), float."""
    if y.size < 2:
        return (np.nan,) * 4
    Y = np.column_stack([y, y])
    F = np.column_stack([f_control, f_full])
    r = np.asarray(_pearson_r(Y, F), np.float64)
    r2 = np.asarray(_r2_score(Y, F), np.float64)
    return float(r[0]), float(r[1]), float(r2[0]), float(r2[1])


def reading_time_regression(rt, predictors, groups, *, controls=None, keep=None, spillover: int = 1,
                            cv="stories", alphas=None, n_permutations: int = 10_000,
                            seed: int = 0) -> ReadingTimeRegression:
    """Held-out gain of predictors (e.g. surprisal) over control predictors for reading times.

    Fits a control model (intercept + ``controls`` + their spillover) and a
    full model (the control model + ``predictors`` + their spillover) with
    folds over stories, and scores both on held-out words (module docstring:
    spillover, used words, fit, scores and tests).

    Parameters
    ----------
    rt : (n,) array
        Reading time per word (e.g. mean over readers, ms); NaN = missing.
    predictors : DataFrame, mapping name -> (n,) array, or (n,) array
        The predictors of interest (a bare array is named "x"), e.g.
        ``{"surprisal": bits}``; NaN = no value (the word is not used).
    groups : (n,) array
        Story id per word; words in reading order, each story contiguous.
    controls : DataFrame, mapping or array, optional
        Control predictors, e.g. :func:`word_controls` (``length``,
        ``log_frequency``). None: the control model is the intercept alone
        (its r is then undefined, NaN).
    keep : (n,) bool, optional
        Words that may be scored (e.g. not sentence-initial); default all.
        Excluded words still give their values to the spillover of the next.
    spillover : int >= 0, default 1
        Previous words whose values enter both models (for every control and
        predictor column).
    cv : "stories", int, splitter, list of (train, test) or None
        "stories": leave-one-story-out; an int ``k``: ``k`` folds of whole
        stories (:class:`jaxalign.ridge.GroupKFold`); a splitter or explicit
        splits over the used words (indices into them, in order; they must
        test every used word once); None: fit and score on all used words
        (in-sample, the published convention).
    alphas : None, float or sequence of float
        None: ordinary least squares (float64). Otherwise ridge on the
        engine over z-scored predictors, the penalty chosen from ``alphas``
        by an inner leave-one-story-out CV in each outer fold.
    n_permutations : int, default 10,000
        Sign-flip draws of the two tests (exact enumeration when smaller).
    seed : int, default 0
        Seed of the sign-flip draws (the word test uses ``seed``, the story
        test ``seed + 1``).

    Returns
    -------
    ReadingTimeRegression

    Raises
    ------
    ValueError
        Mismatched lengths, non-contiguous stories, a name used in both
        ``predictors`` and ``controls``, no predictors, fewer than 3 used
        words, or folds that do not test every used word once.
    """
    rt = np.asarray(rt, dtype=np.float64)
    if rt.ndim != 1:
        raise ValueError(f"rt must be 1-D (one reading time per word), got shape {rt.shape}")
    n = rt.size
    g, _ = _story_starts(groups)
    if g.size != n:
        raise ValueError(f"groups has {g.size} words but rt has {n}")
    pred = _as_frame(predictors, n, "predictors")
    ctrl = _as_frame(controls, n, "controls")
    if pred.shape[1] == 0:
        raise ValueError("predictors has no columns")
    clash = sorted(set(pred.columns) & set(ctrl.columns))
    if clash:
        raise ValueError(f"columns {clash} are in both predictors and controls")
    spillover = check_int(spillover, "spillover", 0)
    n_permutations = check_int(n_permutations, "n_permutations", 1)
    keep = np.ones(n, dtype=bool) if keep is None else np.asarray(keep)
    if keep.shape != (n,) or keep.dtype != bool:
        raise ValueError(f"keep must be a boolean array of shape ({n},), got {keep.dtype} {keep.shape}")

    ctrl_design = spillover_columns(ctrl, g, spillover) if ctrl.shape[1] else ctrl
    full_design = pd.concat([ctrl_design, spillover_columns(pred, g, spillover)], axis=1)
    control_columns, full_columns = list(ctrl_design.columns), list(full_design.columns)
    X_full = full_design.to_numpy(np.float64)
    X_ctrl = ctrl_design.to_numpy(np.float64).reshape(n, len(control_columns))

    left = np.ones(n, dtype=bool)
    excluded = {}
    for reason, bad in zip(EXCLUSIONS, (~keep, ~np.isfinite(rt), ~np.isfinite(X_full).all(axis=1))):
        excluded[reason] = int((bad & left).sum())
        left &= ~bad
    used = left
    excluded["total"] = int((~used).sum())
    if used.sum() < 3:
        raise ValueError(f"only {int(used.sum())} words are used (excluded: {excluded}); need at least 3")

    idx = np.flatnonzero(used)
    y, gu = rt[used], g[used]
    Xf, Xc = X_full[used], X_ctrl[used]
    splits, fold_labels, evaluation = _splits(cv, gu)

    f_ctrl = np.full(y.size, np.nan)
    f_full = np.full(y.size, np.nan)
    coef_rows, coef_index, alpha_rows = [], [], []
    if alphas is not None:
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    for (train, test), label in zip(splits, fold_labels):
        for model, X, out in (("control", Xc, f_ctrl), ("full", Xf, f_full)):
            if alphas is None or X.shape[1] == 0:
                coef, intercept, p = _ols(X[train], y[train], X[test])
                alpha = np.nan
            else:
                coef, intercept, p, alpha = _ridge(X[train], y[train], X[test], gu[train], alphas)
            out[test] = p
            cols = control_columns if model == "control" else full_columns
            row = dict.fromkeys(["intercept"] + full_columns, np.nan)
            row["intercept"] = intercept
            row.update(zip(cols, coef.tolist()))
            coef_rows.append(row)
            coef_index.append((model, label))
            alpha_rows.append(alpha)
    coef_frame = pd.DataFrame(coef_rows, index=pd.MultiIndex.from_tuples(coef_index, names=["model", "fold"]))
    best_alphas = None
    if alphas is not None:
        best_alphas = pd.Series(alpha_rows, index=coef_frame.index, name="alpha").unstack("model")

    # scores: per story, then pooled
    rows, names = [], []
    for story in pd.unique(gu):
        s = gu == story
        rc, rf, r2c, r2f = _score_pair(y[s], f_ctrl[s], f_full[s])
        rows.append((int(s.sum()), rc, rf, r2c, r2f))
        names.append(story)
    rc, rf, r2c, r2f = _score_pair(y, f_ctrl, f_full)
    rows.append((y.size, rc, rf, r2c, r2f))
    names.append("pooled")
    scores = pd.DataFrame(rows, index=pd.Index(names, name="story", dtype=object),
                          columns=["n", "r_control", "r_full", "r2_control", "r2_full"])
    scores.insert(3, "delta_r", scores["r_full"] - scores["r_control"])
    scores["delta_r2"] = scores["r2_full"] - scores["r2_control"]

    # tests of the gain
    d = (y - f_ctrl) ** 2 - (y - f_full) ** 2
    delta_mse = float(d.mean())
    p_words = _sign_flip_p(d, n_permutations, seed)
    p_stories = _sign_flip_p(scores["delta_r2"].to_numpy()[:-1], n_permutations, seed + 1)

    predictions = pd.DataFrame({"story": gu, "rt": y, "control": f_ctrl, "full": f_full},
                               index=pd.Index(idx, name="word"))
    fit = ("ordinary least squares with an intercept (float64 numpy.linalg.lstsq)" if alphas is None else
           "ridge (jaxalign.ridge.RidgeCV, unpenalised intercept) on predictors z-scored with the "
           "training words' statistics; penalty per outer fold by inner leave-one-story-out CV over "
           f"alphas {alphas.tolist()}")
    settings = {
        "evaluation": evaluation,
        "fit": fit,
        "spillover": spillover,
        "spillover_rule": "previous words of the same story, taken before exclusions; NaN at story starts",
        "used_words": "keep & finite reading time & finite values in every column of the full model",
        "r2": "per story against the story's own mean; pooled against the grand mean",
        "p_words": ("one-sided sign-flip permutation test over words of (y - f_control)^2 - "
                    "(y - f_full)^2 (Wilcox et al. 2020; words are not independent)"),
        "p_stories": "one-sided sign-flip test over stories of held-out delta R^2 (exact for few stories)",
        "n_permutations": n_permutations,
        "seed": seed,
    }
    return ReadingTimeRegression(
        scores=scores, p_words=p_words, p_stories=p_stories, delta_mse=delta_mse, coef=coef_frame,
        best_alphas=best_alphas, predictions=predictions, used=used, excluded=excluded,
        control_columns=control_columns, full_columns=full_columns, settings=settings,
    )


def _sign_flip_p(values, n_permutations, seed) -> float:
    """One-sided ("greater") sign-flip p of the mean; NaN when undefined (no values, all zero)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or not np.any(values != 0):
        return float("nan")
    with warnings.catch_warnings():
        # the floor warning is about FDR over many targets; here there is one
        warnings.filterwarnings("ignore", message=".*smallest p possible.*")
        res = sign_flip_test(values, n_permutations=n_permutations, alternative="greater", seed=seed)
    return float(np.asarray(res.p))


# ------------------------------------------------------------------- ceiling


@dataclass
class ReadingCeiling:
    """Outputs of :func:`reading_time_ceiling`.

    Attributes
    ----------
    ceiling : float
        Mean of the story ceilings weighted by their words (stories with a
        NaN ceiling left out); the one story's ceiling without ``groups``.
    per_story : DataFrame
        One row per story: ``n_words``, ``n_readers`` (readers used),
        ``n_dropped`` (readers of the story with too many missing values),
        ``n_filled`` (missing values filled), ``ceiling`` (median over splits
        of the Spearman-Brown corrected split-half r; NaN with fewer than 2
        readers) and ``raw`` (median uncorrected r).
    settings : dict
    """

    ceiling: float
    per_story: pd.DataFrame
    settings: dict


def reading_time_ceiling(per_reader, groups=None, *, keep=None, max_missing: float = 0.05,
                         n_splits: int = 10, seed=0) -> ReadingCeiling:
    """Split-half (Spearman-Brown) ceiling of the mean reading time, from per-reader data.

    Per story, :func:`jaxalign.stats.split_half_ceiling` on its readers'
    (readers, words) reading times: random halves of the readers, r between
    the two half-means over the story's words, Spearman-Brown corrected
    (``2r / (1 + r)``), median over ``n_splits`` splits.

    Missing values, per reader and story (readers usually read some of the
    stories, and single trimmed RTs are missing):

    * a reader with no value on the story's words did not read it (not counted);
    * a reader missing more than ``max_missing`` of the story's words is
      dropped from that story (``n_dropped``);
    * a remaining reader's missing words are filled with that reader's mean
      reading time over the story (``n_filled``): the filled value carries no
      information about the word, so filling can only lower the ceiling a
      little (conservative), never raise it. ``max_missing=0`` keeps only
      complete readers.

    Parameters
    ----------
    per_reader : (n_readers, n_words) array or DataFrame
        Reading time of every reader on every word; NaN = no value.
    groups : (n_words,) story ids, optional
        Without it all words are one story.
    keep : (n_words,) bool, optional
        Words to use (e.g. those the model is scored on); default all.
    max_missing : float in [0, 1), default 0.05
    n_splits, seed : passed to ``split_half_ceiling`` (same seed for every story)

    Returns
    -------
    ReadingCeiling

    >>> rng = np.random.default_rng(0)
    >>> signal = rng.normal(0, 1, 400)
    >>> data = signal + rng.normal(0, 2, (20, 400))          # 20 readers, SNR 1/4
    >>> round(reading_time_ceiling(data, n_splits=20).ceiling, 2)   # 20/4 / (1 + 20/4) = 0.83
    0.83
    """
    data = np.asarray(per_reader.to_numpy() if isinstance(per_reader, pd.DataFrame) else per_reader,
                      dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"per_reader must be (n_readers, n_words), got shape {data.shape}")
    n_words = data.shape[1]
    if not 0.0 <= float(max_missing) < 1.0:
        raise ValueError(f"max_missing must be in [0, 1), got {max_missing}")
    g = np.zeros(n_words, dtype=int) if groups is None else np.asarray(groups)
    if g.shape != (n_words,):
        raise ValueError(f"groups must have one story id per word ({n_words}), got shape {g.shape}")
    keep = np.ones(n_words, dtype=bool) if keep is None else np.asarray(keep)
    if keep.shape != (n_words,) or keep.dtype != bool:
        raise ValueError(f"keep must be a boolean array of shape ({n_words},)")
    if np.isinf(data).any():
        raise ValueError("per_reader contains inf; use NaN for a missing reading time")

    rows, names = [], []
    for story in pd.unique(g[keep]):
        cols = keep & (g == story)
        block = data[:, cols]
        have = np.isfinite(block)
        read = have.any(axis=1)
        missing = 1.0 - have.mean(axis=1)
        ok = read & (missing <= max_missing)
        sub = block[ok]
        n_filled = int((~np.isfinite(sub)).sum())
        if sub.shape[0]:
            sub = np.where(np.isfinite(sub), sub, np.nanmean(sub, axis=1, keepdims=True))
        ceiling = raw = np.nan
        if sub.shape[0] >= 2 and sub.shape[1] >= 3:
            res = split_half_ceiling(sub, n_splits=n_splits, seed=seed)
            ceiling = float(res.ceiling)
            raw = float(np.nanmedian(res.per_split_raw))
        rows.append((int(cols.sum()), int(ok.sum()), int((read & ~ok).sum()), n_filled, ceiling, raw))
        names.append(story)
    per_story = pd.DataFrame(rows, index=pd.Index(names, name="story", dtype=object),
                             columns=["n_words", "n_readers", "n_dropped", "n_filled", "ceiling", "raw"])
    ok = per_story["ceiling"].notna()
    w = per_story.loc[ok, "n_words"].to_numpy(np.float64)
    ceiling = float(np.sum(w * per_story.loc[ok, "ceiling"]) / w.sum()) if ok.any() else float("nan")
    settings = {
        "method": "split-half, Spearman-Brown corrected, median over splits (jaxalign.stats.split_half_ceiling)",
        "n_splits": int(n_splits), "seed": seed, "max_missing": float(max_missing),
        "missing_rule": ("per story: readers with no value did not read it; readers missing more than "
                         "max_missing of its words are dropped; other missing values are filled with "
                         "the reader's mean over the story"),
        "pooled": "story ceilings averaged with weights = their words",
    }
    return ReadingCeiling(ceiling=ceiling, per_story=per_story, settings=settings)

