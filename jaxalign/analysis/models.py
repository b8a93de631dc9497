"""Model-level correlations: alignment scores across models vs model properties.

The instruction-tuning study's last step (METHODS.md section 7): over a set
of language models, correlate each benchmark's alignment score (brain or
behaviour, raw or ceiling-normalised) with properties of the models (log10
parameter count, MMLU and other benchmark scores from a user table), e.g.
"brain alignment vs log10(parameters): r = 0.95; vs MMLU: r = 0.81".

:func:`correlate_with_properties` takes two tables indexed by model name and
returns one row per (score column, property column) pair: Pearson r
(:func:`jaxalign.ridge.pearson_r`), its two-sided p
(:func:`jaxalign.stats.pearson_pvalue`, t test on r with n - 2 degrees of
freedom) and Benjamini-Hochberg FDR over all pairs
(:func:`jaxalign.stats.fdr_correction`). :func:`plot_properties` draws the
scatter of every pair, each point labelled with its model.

Matching and missing values: models are matched by index label (the models
in both tables, in the order of ``scores``); models in only one table are
left out and listed in ``result.attrs["unmatched"]``. Each pair uses the
models with a value in both columns (pairwise complete cases; ``n`` per
pair), so a model without an MMLU score still counts for log parameters. A
pair with fewer than 3 such models, or a constant column, gets NaN r and p,
is not part of the FDR family and is never significant. (For a
complete-case analysis over all pairs, drop the incomplete models first.)

Examples
--------
>>> import pandas as pd
>>> models = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-7b"]
>>> scores = pd.DataFrame({"Pereira2018": [0.30, 0.33, 0.34, 0.36, 0.40]}, index=models)
>>> props = pd.DataFrame({"log10_params": [8.09, 8.55, 8.89, 9.17, 9.83]}, index=models)
>>> table = correlate_with_properties(scores, props)
>>> table[["score", "property", "n"]].values.tolist()
[['Pereira2018', 'log10_params', 5]]
>>> round(float(table["r"].iloc[0]), 3), bool(table["significant"].iloc[0])
(0.996, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxalign.ridge import pearson_r
from jaxalign.stats import fdr_correction, pearson_pvalue

__all__ = ["correlate_with_properties", "model_scores", "paired_change", "plot_properties"]

_COLUMNS = ["score", "property", "n", "r", "p", "p_fdr", "significant"]


def _table(x, name) -> pd.DataFrame:
    if isinstance(x, pd.Series):
        x = x.to_frame()
    if not isinstance(x, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame indexed by model name, got {type(x).__name__}")
    if x.index.has_duplicates:
        dup = x.index[x.index.duplicated()].unique().tolist()
        raise ValueError(f"{name} has duplicate model names {dup}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no columns")
    out = {}
    for c in x.columns:
        try:
            out[c] = pd.to_numeric(x[c]).astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: column {c!r} is not numeric") from err
        if np.isinf(out[c]).any():
            raise ValueError(f"{name}: column {c!r} contains inf")
    return pd.DataFrame(out, index=x.index)


def _matched(scores, properties):
    scores = _table(scores, "scores")
    properties = _table(properties, "properties")
    models = [m for m in scores.index if m in properties.index]
    unmatched = [m for m in scores.index if m not in properties.index] + \
                [m for m in properties.index if m not in scores.index]
    return scores.loc[models], properties.loc[models], models, unmatched


def model_scores(table, *, value: str = "score_over_ceiling", layer: str = "best") -> pd.DataFrame:
    """One alignment score per model from a study's tidy results table (``load_results(...).table``).

    The group rows (``subject == "group"``) of the language models
    (``feature_set == "model"``; the baseline and control are left out):
    ``value`` averaged over targets for every (model, revision, layer), then
    the best layer (``layer="best"``, chosen on the same scores: optimistic,
    as Brain-Score's "best layer") or the mean over layers (``"mean"``).

    Returns
    -------
    DataFrame indexed by model (``"model@revision"`` when a model has
    several revisions), columns ``score`` and ``layer`` (the best layer;
    NaN for ``"mean"``), ``n_targets``.

    Raises
    ------
    ValueError
        No group rows of a model (run with ``stats.test = "sign_flip"``), or
        ``value`` not a column (e.g. ``score_over_ceiling`` without a
        ``[stats.ceiling]``).
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a results table (pandas DataFrame), got {type(table).__name__}")
    if layer not in ("best", "mean"):
        raise ValueError(f"layer must be 'best' or 'mean', got {layer!r}")
    need = {"model", "revision", "layer", "subject", "target", "feature_set"}
    if not need <= set(table.columns):
        raise ValueError(f"table lacks columns {sorted(need - set(table.columns))}: pass load_results(...).table")
    if value not in table.columns:
        raise ValueError(f"value {value!r} is not a column of the table (columns with scores: "
                         f"{[c for c in table.columns if 'score' in c]}); 'score_over_ceiling' needs a "
                         "[stats.ceiling] in the study")
    g = table[(table["subject"] == "group") & (table["feature_set"] == "model")]
    if g.empty:
        raise ValueError("no group rows of language models in the table: run the study with stats.test = "
                         "'sign_flip' (several subjects)")
    per_layer = g.groupby(["model", "revision", "layer"])[value].agg(["mean", "size"]).reset_index()
    several = per_layer.groupby("model")["revision"].nunique()
    rows = {}
    for (model, revision), part in per_layer.groupby(["model", "revision"], sort=False):
        name = f"{model}@{revision}" if several[model] > 1 else model
        if layer == "best":
            best = part.loc[part["mean"].idxmax()]
            rows[name] = {"score": float(best["mean"]), "layer": float(best["layer"]), "n_targets": int(best["size"])}
        else:
            rows[name] = {"score": float(part["mean"].mean()), "layer": np.nan, "n_targets": int(part["size"].iloc[0])}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "model"
    out.attrs.update(value=value, layer=layer)
    return out


def paired_change(scores, pairs) -> pd.DataFrame:
    """The change of alignment from each base model to its fine-tuned (e.g. instruction-tuned) version.

    Parameters
    ----------
    scores : Series or DataFrame (models x benchmarks)
        Alignment per model (e.g. :func:`model_scores`' ``score``), index =
        model names.
    pairs : mapping {tuned: base}, Series (index tuned, values base; NaN
        rows, models without a base, are skipped) or sequence of
        ``(base, tuned)``

    Returns
    -------
    DataFrame
        One row per (pair, benchmark): ``base``, ``tuned``, ``benchmark``,
        ``base_score``, ``tuned_score``, ``change`` (tuned - base) and
        ``relative`` ((tuned - base) / |base|). ``attrs["mean"]``: per
        benchmark, the mean change and mean relative change over pairs (the
        study's "+6.2% average brain alignment"), and ``n_pairs``.

    Examples
    --------
    >>> s = pd.Series({"llama-7b": 0.40, "alpaca-7b": 0.42, "t5-xl": 0.20, "flan-t5-xl": 0.22}, name="brain")
    >>> t = paired_change(s, {"alpaca-7b": "llama-7b", "flan-t5-xl": "t5-xl"})
    >>> t["relative"].round(3).tolist()
    [0.05, 0.1]
    >>> round(float(t.attrs["mean"].loc["brain", "relative"]), 3)
    0.075
    """
    S = _table(scores, "scores")
    if isinstance(pairs, pd.Series):
        pairs = [(b, t) for t, b in pairs.items() if isinstance(b, str) and b]
    elif isinstance(pairs, dict):
        pairs = [(b, t) for t, b in pairs.items()]
    pairs = [tuple(p) for p in pairs]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError("pairs must be a non-empty {tuned: base} mapping or (base, tuned) pairs")
    missing = sorted({m for p in pairs for m in p if m not in S.index})
    if missing:
        raise ValueError(f"pairs name models without a score: {missing} (scored: {list(S.index)})")
    rows = []
    for base, tuned in pairs:
        for bench in S.columns:
            b, t = float(S.at[base, bench]), float(S.at[tuned, bench])
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = (t - b) / abs(b) if b != 0 else np.nan
            rows.append({"base": base, "tuned": tuned, "benchmark": bench, "base_score": b, "tuned_score": t,
                         "change": t - b, "relative": rel})
    out = pd.DataFrame(rows)
    mean = out.groupby("benchmark", sort=False).agg(change=("change", "mean"), relative=("relative", "mean"),
                                                    n_pairs=("change", "count"))
    out.attrs["mean"] = mean
    return out


def correlate_with_properties(scores, properties, *, alpha: float = 0.05, fdr_method: str = "bh") -> pd.DataFrame:
    """Pearson r, p and FDR-adjusted p of every (score, property) pair across models.

    Parameters
    ----------
    scores : DataFrame (models x benchmarks)
        Alignment scores, index = model names.
    properties : DataFrame (models x properties)
        E.g. ``log10_params``, ``MMLU``; index = model names.
    alpha : float, default 0.05
        FDR level of ``significant``.
    fdr_method : {"bh", "by"}
        Benjamini-Hochberg (default) or Benjamini-Yekutieli.

    Returns
    -------
    DataFrame
        One row per pair (scores' columns outer, properties' inner):
        ``score``, ``property``, ``n`` (models with both values), ``r``,
        ``p`` (two-sided), ``p_fdr`` (adjusted over all pairs with a
        defined r), ``significant`` (``p_fdr <= alpha``). ``attrs``:
        ``models`` (matched, in order), ``unmatched`` (in one table only),
        ``fdr`` (method, alpha, family size).

    Raises
    ------
    TypeError, ValueError
        Not DataFrames, non-numeric or infinite values, duplicate model
        names, empty tables, bad ``alpha`` / ``fdr_method``.
    """
    fdr_correction(np.zeros(0), alpha=alpha, method=fdr_method)  # check the arguments first
    S, P, models, unmatched = _matched(scores, properties)
    rows = []
    for s in S.columns:
        for q in P.columns:
            a, b = S[s].to_numpy(), P[q].to_numpy()
            both = np.isfinite(a) & np.isfinite(b)
            n = int(both.sum())
            r = p = np.nan
            if n >= 3 and np.ptp(a[both]) > 0 and np.ptp(b[both]) > 0:
                r = float(np.clip(np.asarray(pearson_r(a[both][:, None], b[both][:, None]))[0], -1.0, 1.0))
                p = float(pearson_pvalue(r, n))
            rows.append([s, q, n, r, p])
    table = pd.DataFrame(rows, columns=_COLUMNS[:5])
    reject, p_fdr = fdr_correction(table["p"].to_numpy(), alpha=alpha, method=fdr_method)
    table["p_fdr"] = p_fdr
    table["significant"] = reject
    table.attrs.update(models=list(models), unmatched=list(unmatched),
                       fdr={"method": fdr_method.lower(), "alpha": float(alpha),
                            "family": int(np.isfinite(table["p"]).sum())})
    return table


def plot_properties(scores, properties, result=None, *, path=None, dpi: int = 120, panel_size=(4.0, 3.4)):
    """Scatter of every (score, property) pair, one panel each, every point labelled with its model.

    Rows of panels are the score columns, columns the properties. Each panel
    shows the models with both values, the least-squares line, and its r,
    p_FDR and n from ``result`` (:func:`correlate_with_properties`, computed
    here when not given). Drawn on a :class:`matplotlib.figure.Figure` with
    its own Agg canvas (no pyplot, no global state).

    Parameters
    ----------
    scores, properties : DataFrame, as :func:`correlate_with_properties`
    result : DataFrame, optional
    path : str or Path, optional
        Where to save the figure (format from the suffix).
    dpi : int, default 120
    panel_size : (width, height) in inches per panel

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    S, P, models, _ = _matched(scores, properties)
    if result is None:
        result = correlate_with_properties(scores, properties)
    stats = {(row.score, row.property): row for row in result.itertuples(index=False)}
    nr, nc = S.shape[1], P.shape[1]
    fig = Figure(figsize=(panel_size[0] * nc, panel_size[1] * nr))
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(nr, nc, squeeze=False))
    names = np.asarray([str(m) for m in models], dtype=object)
    for i, s in enumerate(S.columns):
        for j, q in enumerate(P.columns):
            ax = axes[i, j]
            x, y = P[q].to_numpy(), S[s].to_numpy()
            both = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[both], y[both], color="tab:blue", zorder=3)
            for xi, yi, name in zip(x[both], y[both], names[both]):
                ax.annotate(name, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8)
            if both.sum() >= 2 and np.ptp(x[both]) > 0:
                slope, intercept = np.polyfit(x[both], y[both], 1)
                grid = np.array([x[both].min(), x[both].max()])
                ax.plot(grid, intercept + slope * grid, color="tab:red", lw=1, zorder=2)
                pad = 0.15 * np.ptp(x[both])
                ax.set_xlim(x[both].min() - 0.05 * np.ptp(x[both]), x[both].max() + pad)
            row = stats.get((s, q))
            if row is not None and np.isfinite(row.r):
                star = " *" if row.significant else ""
                ax.set_title(f"r = {row.r:.2f}, p_FDR = {row.p_fdr:.2g}, n = {row.n}{star}", fontsize=9)
            else:
                ax.set_title(f"r undefined (n = {int(both.sum())})", fontsize=9)
            ax.margins(y=0.12)
            ax.set_xlabel(str(q))
            ax.set_ylabel(str(s))
            ax.grid(alpha=0.3)
    fig.suptitle("Alignment across models vs model properties (* significant after FDR)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
