"""Figures of a study's results store (what ``jaxalign report DIR`` draws).

:func:`make_report` reads a results store (:func:`jaxalign.studies.store.load_results`)
and writes, into ``<results_dir>/figures/`` unless told otherwise:

``layers.<fmt>``
    Held-out Pearson r along the layers: one panel per target (at most
    :data:`MAX_TARGET_PANELS`; beyond that, two summary panels: the mean over
    all targets and the mean over the best 10% of them). One line per model x
    revision (the checkpoints of one model in shades of one colour, lighter =
    earlier, ``main`` last), +/- 1 SEM over subjects where the store has group
    rows (or several subjects), filled markers on layers whose FDR-corrected p
    is below 0.05, the baseline (e.g. "word rate baseline") as a dotted and the
    control (e.g. "random vectors control") as a dash-dot horizontal line, the
    noise ceiling dashed where one is stored, and r = 0.
``heatmap.<fmt>``
    Mean r per feature set (baseline, each model x revision x layer, control)
    x target, with the value and ``*`` (FDR p < 0.05) in each cell; a diverging
    colour map centred on 0 when any value is negative
    (:func:`heatmap_colormap`). Skipped, with a logged note, beyond
    :data:`MAX_HEATMAP_TARGETS` targets.

What the store holds (the runner's conventions): per-subject fit units
(labels ``model, revision, layer, subject, target`` and ``feature_set`` in
model | baseline | control; arrays ``score``, optionally ``p``, ``p_fdr``) and
group units (``subject = "group"``; arrays ``score`` = mean r over subjects,
``sem``, ``p``, ``p_fdr``, optionally ``ceiling`` per target). Each line is
drawn from its group rows when it has them; else from its one subject's rows
(r and FDR p of that subject's test); else from the mean and SEM over its
subjects, without significance markers (no group test was stored).

Units with a ``window`` axis (MEG) are skipped with a logged note: their
maps come later. Figures are drawn on a :class:`matplotlib.figure.Figure`
with its own Agg canvas (never pyplot: no global backend, nothing left open)
and written atomically (a temporary file in the same folder, then
``os.replace``), so a killed report leaves the previous figure or the new
one, never half of one.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxalign._core.files import atomic_write, remove_orphans, writable_dir
from jaxalign.studies.store import load_results

__all__ = ["MAX_HEATMAP_TARGETS", "MAX_TARGET_PANELS", "heatmap_colormap", "make_report", "report_figures"]

log = logging.getLogger(__name__)

#: Up to this many targets, ``layers`` has one panel per target; beyond, summary panels.
MAX_TARGET_PANELS = 12
#: Beyond this many targets the heat map is not drawn (its cells would be unreadable).
MAX_HEATMAP_TARGETS = 40
#: The share of targets averaged in the "best targets" summary panel.
BEST_FRACTION = 0.10
#: Significance level of the FDR-corrected p values (markers, stars).
ALPHA = 0.05
#: Beyond this many heat-map cells only the stars are written, not the values.
_MAX_CELL_TEXT = 1500
_DPI = 120
# one sequential colour map per model: its revisions are shades of it
_MODEL_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "YlOrBr", "PuRd", "GnBu")
_BASELINE_STYLE = {"color": "black", "ls": ":", "lw": 1.6}
_CONTROL_STYLE = {"color": "0.45", "ls": "-.", "lw": 1.4}
_CEILING_STYLE = {"color": "0.3", "ls": "--", "lw": 1.0}


@dataclass
class _Line:
    """One feature set as drawn: a model x revision, the baseline or the control."""

    model: str
    revision: str
    kind: str  # "model" | "baseline" | "control"
    label: str
    layers: list  # sorted layer numbers
    r: np.ndarray  # (layer, target): mean r (or the single subject's r)
    sem: np.ndarray  # (layer, target): SEM over subjects, NaN where unknown
    p_fdr: np.ndarray  # (layer, target): FDR-corrected p, NaN where no test is stored
    subjects: np.ndarray | None  # (subject, layer, target) per-subject r, None without subject rows
    source: str  # "group" | "subject" | "subject mean" (how r, sem and p were obtained)
    color: object = "black"


# ------------------------------------------------------------------ public


def heatmap_colormap(values) -> tuple[str, float, float]:
    """The colour map of the heat map for ``values``: ``(cmap name, vmin, vmax)``.

    Diverging ``RdBu_r`` with limits symmetric about 0 when any finite value is
    negative (so 0 is white and the sign reads at a glance); otherwise the
    sequential ``viridis`` from 0 to the largest value. NaNs are ignored.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "viridis", 0.0, 1.0
    if (v < 0).any():
        m = float(np.abs(v).max())
        return "RdBu_r", -m, m
    top = float(v.max())
    return "viridis", 0.0, top if top > 0 else 1.0


def make_report(results_dir, out=None, formats=("png",)) -> list[Path]:
    """Draw the figures of the results store ``results_dir``; return the paths written.

    ``out``: the folder for the figures (created if needed; default
    ``<results_dir>/figures``). ``formats``: file formats matplotlib writes
    (``"png"``, ``"pdf"``, ``"svg"``...), one file per figure and format.
    Writes ``layers.<fmt>`` and, with at most :data:`MAX_HEATMAP_TARGETS`
    targets, ``heatmap.<fmt>`` (see the module docstring), each atomically.

    Raises
    ------
    FileNotFoundError
        ``results_dir`` is not a results store (no ``store.json``).
    ValueError
        The store has no finished unit, or ``formats`` names one matplotlib
        cannot write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    root = Path(os.fspath(results_dir)).expanduser()
    formats = _check_formats(formats, FigureCanvasAgg(Figure()).get_supported_filetypes())
    figs = report_figures(root)
    if not figs:
        return []
    out = writable_dir(root / "figures" if out is None else Path(os.fspath(out)).expanduser(), "figures folder")
    remove_orphans(out)  # the temporary files of a report that was killed
    written = []
    for stem, fig in figs.items():
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            atomic_write(path, lambda f, fig=fig, fmt=fmt: fig.savefig(f, format=fmt, dpi=_DPI))
            written.append(path)
    log.info("report of %s: %s", root, ", ".join(str(p) for p in written))
    return written


def report_figures(results_dir) -> dict:
    """The figures of :func:`make_report` as matplotlib Figures, not written: ``{"layers": ..., "heatmap": ...}``.

    ``"heatmap"`` is absent beyond :data:`MAX_HEATMAP_TARGETS` targets; the
    dict is empty when every unit has a ``window`` axis (MEG, not drawn yet).
    Each Figure has its own Agg canvas (``fig.savefig(...)`` works; pyplot is
    not involved). Raises as :func:`make_report`.
    """
    root = Path(os.fspath(results_dir)).expanduser()
    res = load_results(root)
    if len(res) == 0:
        raise ValueError(f"results store {root} has no finished units: nothing to plot "
                         "(has the study run? units appear under units/ as they finish)")
    table = res.table
    if "window" in table.columns and table["window"].notna().any():
        windowed = table.loc[table["window"].notna(), "key"].nunique()
        log.warning("%d unit(s) in %s have a 'window' axis (MEG): their maps come later, this report does "
                    "not draw them", windowed, root)
        table = table[table["window"].isna()].drop(columns="window")
        if table.empty:
            log.warning("no unit without a 'window' axis in %s: no figure drawn", root)
            return {}

    if "features" in table.columns and (table["features"] == "surprisal").any():
        log.info("surprisal units (reading times) are not drawn here: their scatter plot is written next to "
                 "their results (details/<model>/surprisal_rt.png)")
        table = table[table["features"] != "surprisal"]
        if table.empty:
            return {}

    targets = list(dict.fromkeys(table["target"]))
    lines, n_subjects, one_subject = _collect(table, targets)
    figs = {"layers": _draw_layers(lines, _ceiling(table, targets), targets, n_subjects, one_subject)}
    if len(targets) > MAX_HEATMAP_TARGETS:
        log.info("heat map skipped: %d targets (more than %d would be unreadable); the layers figure "
                 "summarises them", len(targets), MAX_HEATMAP_TARGETS)
    else:
        figs["heatmap"] = _draw_heatmap(lines, targets, n_subjects, one_subject)
    return figs


# ------------------------------------------------------------------ data


def _check_formats(formats, supported) -> tuple:
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(str(f).lower().lstrip(".") for f in formats)
    if not formats:
        raise ValueError("formats must name at least one file format, e.g. ('png',)")
    bad = [f for f in formats if f not in supported]
    if bad:
        raise ValueError(f"cannot write figures as {bad}; formats matplotlib writes: {sorted(supported)}")
    return tuple(dict.fromkeys(formats))


def _natural(text) -> list:
    """Sort key that orders step900 before step1000 (digits compare as numbers)."""
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(re.split(r"(\d+)", str(text)))]


def _grid(frame, column, layers, targets) -> np.ndarray:
    """``column`` of ``frame`` as a (layer, target) array, NaN where absent."""
    if column not in frame.columns:
        return np.full((len(layers), len(targets)), np.nan)
    values = frame.groupby(["layer", "target"], sort=False)[column].mean()
    return values.unstack("target").reindex(index=layers, columns=targets).to_numpy(dtype=float)


def _collect(table, targets):
    """The lines to draw (baselines, models, controls), the number of subjects, the single subject's id."""
    table = table.copy()
    table["layer"] = table["layer"].astype(int)
    if "feature_set" not in table.columns:
        table["feature_set"] = "model"
    table["feature_set"] = table["feature_set"].fillna("model").astype(str)
    is_group = table["subject"].astype(str) == "group"
    subjects = list(dict.fromkeys(table.loc[~is_group, "subject"]))
    one_subject = subjects[0] if len(subjects) == 1 else None

    lines = []
    for (model, revision), rows in table.groupby(["model", "revision"], sort=False):
        kinds = list(dict.fromkeys(rows["feature_set"]))
        kind = kinds[0] if kinds[0] in ("model", "baseline", "control") else "model"
        if len(kinds) > 1:
            log.warning("%s (%s) has units with feature_set %s: drawn as %r", model, revision, kinds, kind)
        layers = sorted(set(rows["layer"]))
        group = rows[is_group.loc[rows.index]]
        single = rows[~is_group.loc[rows.index]]
        line_subjects = list(dict.fromkeys(single["subject"]))
        per_subject = None
        if line_subjects:
            per_subject = np.stack([_grid(single[single["subject"] == s], "score", layers, targets)
                                    for s in line_subjects])
        if not group.empty:
            r, sem = _grid(group, "score", layers, targets), _grid(group, "sem", layers, targets)
            p_fdr, source = _grid(group, "p_fdr", layers, targets), "group"
        elif len(line_subjects) == 1:
            r, sem = per_subject[0], np.full(per_subject[0].shape, np.nan)
            p_fdr, source = _grid(single, "p_fdr", layers, targets), "subject"
        else:
            log.info("%s (%s): no group rows in the store; drawing the mean +/- SEM over %d subjects, "
                     "without significance markers", model, revision, len(line_subjects))
            r, sem = _mean_sem(per_subject)
            p_fdr, source = np.full(r.shape, np.nan), "subject mean"
        lines.append(_Line(model, revision, kind, "", layers, r, sem, p_fdr, per_subject, source))

    order = {"baseline": 0, "model": 1, "control": 2}
    lines.sort(key=lambda ln: (order[ln.kind], _natural(ln.model), ln.revision == "main", _natural(ln.revision)))
    _label_and_colour(lines)
    return lines, len(subjects), one_subject


def _mean_sem(per_subject):
    """Mean and SEM over the first axis (subjects), NaNs left out; NaN where too few values."""
    n = np.isfinite(per_subject).sum(0)
    mean = np.where(n > 0, np.nansum(per_subject, 0) / np.maximum(n, 1), np.nan)
    ss = np.nansum((per_subject - mean) ** 2, 0)
    sem = np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1) / np.maximum(n, 1)), np.nan)
    return mean, sem


def _label_and_colour(lines) -> None:
    from matplotlib import colormaps

    models = list(dict.fromkeys(ln.model for ln in lines if ln.kind == "model"))
    for ln in lines:
        if ln.kind == "baseline":
            ln.label, ln.color = f"{ln.model} baseline", _BASELINE_STYLE["color"]
        elif ln.kind == "control":
            ln.label, ln.color = f"{ln.model} control", _CONTROL_STYLE["color"]
    for i, model in enumerate(models):
        mine = [ln for ln in lines if ln.kind == "model" and ln.model == model]
        cmap = colormaps[_MODEL_CMAPS[i % len(_MODEL_CMAPS)]]
        shades = [0.8] if len(mine) == 1 else np.linspace(0.45, 0.95, len(mine))
        for ln, shade in zip(mine, shades):
            ln.color = cmap(float(shade))
            alone = len(mine) == 1 and ln.revision == "main"
            ln.label = ln.model if alone else f"{ln.model} ({ln.revision})"


def _ceiling(table, targets) -> np.ndarray:
    """The noise ceiling per target (group rows first), NaN where none is stored."""
    if "ceiling" not in table.columns:
        return np.full(len(targets), np.nan)
    rows = table[table["ceiling"].notna()]
    group = rows[rows["subject"].astype(str) == "group"]
    rows = group if not group.empty else rows
    return rows.groupby("target")["ceiling"].mean().reindex(targets).to_numpy(dtype=float)


def _who(n_subjects, one_subject) -> str:
    if one_subject is not None:
        return f"subject {one_subject}"
    if n_subjects:
        return f"mean over {n_subjects} subjects"
    return "group mean"


# ------------------------------------------------------------------ figures


def _new_figure(**kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def _panels(lines, ceiling, targets):
    """(title, {line index: (r, sem, p_fdr) per layer}, ceiling) for each panel of the layers figure."""
    if len(targets) <= MAX_TARGET_PANELS:
        return [(t, {i: (ln.r[:, j], ln.sem[:, j], ln.p_fdr[:, j]) for i, ln in enumerate(lines)}, ceiling[j])
                for j, t in enumerate(targets)], True
    ranked = [ln for ln in lines if ln.kind == "model"] or lines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        strength = np.nanmean(np.concatenate([ln.r for ln in ranked]), 0)
    k = max(1, math.ceil(BEST_FRACTION * len(targets)))
    best = np.argsort(np.where(np.isfinite(strength), -strength, np.inf), kind="stable")[:k]
    every = np.arange(len(targets))
    what = "models'" if ranked is not lines else "lines'"
    return [
        (f"mean over all {len(targets)} targets", _summaries(lines, every), _mean_or_nan(ceiling[every])),
        (f"mean over the best {BEST_FRACTION:.0%} of targets\n({k} of {len(targets)}, ranked by the {what} "
         "mean r)", _summaries(lines, best), _mean_or_nan(ceiling[best])),
    ], False


def _mean_or_nan(x) -> float:
    return float(np.mean(x)) if np.all(np.isfinite(x)) else np.nan


def _summaries(lines, columns) -> dict:
    """Per line, mean r over ``columns`` per layer, with SEM over subjects where several are stored."""
    out = {}
    for i, ln in enumerate(lines):
        with warnings.catch_warnings():  # 'Mean of empty slice': an all-NaN layer stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            if ln.subjects is not None and len(ln.subjects) > 1:
                r, sem = _mean_sem(np.nanmean(ln.subjects[:, :, columns], 2))
            else:
                r, sem = np.nanmean(ln.r[:, columns], 1), np.full(len(ln.layers), np.nan)
        out[i] = (r, sem, np.full(len(ln.layers), np.nan))  # no test of a mean over targets is stored
    return out


def _draw_layers(lines, ceiling, targets, n_subjects, one_subject):
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels, per_target = _panels(lines, ceiling, targets)
    n = len(panels)
    ncols = min(n, 3 if n <= 6 else 4)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(figsize=(3.3 * ncols + 2.8, 2.7 * nrows + 0.9))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    model_layers = sorted({x for ln in lines if ln.kind == "model" for x in ln.layers}) or [0]
    any_sig = any_sem = False
    for ax, (title, data, ceil) in zip(axes, panels):
        ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        if np.isfinite(ceil):
            ax.axhline(ceil, **_CEILING_STYLE)
        for i, ln in enumerate(lines):
            r, sem, p = data[i]
            if ln.kind != "model" and len(ln.layers) == 1:  # one value: a horizontal reference line
                style = _BASELINE_STYLE if ln.kind == "baseline" else _CONTROL_STYLE
                ax.axhline(r[0], **style)  # no band: two grey bands (baseline, control) read as one
                continue
            x = np.asarray(ln.layers)
            style = {"color": ln.color}
            if ln.kind == "baseline":
                style = dict(_BASELINE_STYLE)
            elif ln.kind == "control":
                style = dict(_CONTROL_STYLE)
            ax.plot(x, r, marker="o", ms=4, mfc="white", **style)
            if np.isfinite(sem).any():
                any_sem = True
                ax.fill_between(x, r - sem, r + sem, color=style["color"], alpha=0.18, lw=0)
            sig = np.nan_to_num(p, nan=1.0) < ALPHA
            if sig.any():
                any_sig = True
                ax.plot(x[sig], r[sig], ls="none", marker="o", ms=6, color=style["color"])
        ax.set_title(title, fontsize=9)
        if len(model_layers) <= 13:
            ax.set_xticks(model_layers)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        ax.grid(True, axis="y", color="0.92", lw=0.6)
        ax.tick_params(labelsize=8, labelleft=True)
    for ax in axes[n:]:
        ax.set_visible(False)
    if len(model_layers) > 1:
        axes[0].set_xlim(model_layers[0] - 0.3, model_layers[-1] + 0.3)
    fig.supxlabel("layer (0 = embeddings)", fontsize=10)
    fig.supylabel("held-out Pearson r", fontsize=10)

    handles = []
    for ln in lines:
        if ln.kind == "model":
            handles.append(Line2D([], [], color=ln.color, marker="o", ms=4, mfc="white", label=ln.label))
        else:
            style = _BASELINE_STYLE if ln.kind == "baseline" else _CONTROL_STYLE
            handles.append(Line2D([], [], label=ln.label, **style))
    if np.isfinite(ceiling).any():
        handles.append(Line2D([], [], label="noise ceiling", **_CEILING_STYLE))
    if per_target and any_sig:
        handles.append(Line2D([], [], ls="none", marker="o", ms=6, color="0.3",
                              label=f"filled marker: FDR p < {ALPHA:g}"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    band = ", band = \u00b11 SEM over subjects" if any_sem else ""
    fig.suptitle(f"Held-out r along the layers ({_who(n_subjects, one_subject)}{band})", fontsize=11)
    return fig


def _draw_heatmap(lines, targets, n_subjects, one_subject):
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    rows, labels, stars, bounds = [], [], [], []
    for ln in lines:
        for li, layer in enumerate(ln.layers):
            rows.append(ln.r[li])
            stars.append(np.nan_to_num(ln.p_fdr[li], nan=1.0) < ALPHA)
            one = ln.kind != "model" and len(ln.layers) == 1
            labels.append(ln.label if one else f"{ln.label}, layer {layer}")
        bounds.append(len(rows))
    values, stars = np.asarray(rows, dtype=float), np.asarray(stars)
    name, vmin, vmax = heatmap_colormap(values)
    cmap = colormaps[name].with_extremes(bad="0.88")
    norm = Normalize(vmin, vmax)
    n_rows, n_cols = values.shape
    longest = max(len(s) for s in labels)
    fig = _new_figure(figsize=(max(6.0, 0.62 * n_cols + 0.075 * longest + 2.6), 0.3 * n_rows + 2.2))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols), targets, rotation=45 if n_cols > 8 or max(map(len, targets)) > 6 else 0,
                  ha="right" if n_cols > 8 or max(map(len, targets)) > 6 else "center", fontsize=8)
    ax.set_yticks(range(n_rows), labels, fontsize=8)
    ax.tick_params(length=0)
    for b in bounds[:-1]:  # white rules between feature sets
        ax.axhline(b - 0.5, color="white", lw=2.5)
    values_too = n_rows * n_cols <= _MAX_CELL_TEXT
    if not values_too:
        log.info("heat map: %d cells, values not written (only the stars)", n_rows * n_cols)
    size = 7 if n_cols <= 16 else 6
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if not np.isfinite(v):
                continue
            value = f"{v:.2f}".replace("-0.00", "0.00") if values_too else ""
            text = value + ("*" if stars[i, j] else "")
            if text:
                red, green, blue, _ = cmap(norm(v))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(j, i, text, ha="center", va="center", fontsize=size, color="white" if dark else "black")
    for side in ax.spines.values():
        side.set_visible(False)
    who = _who(n_subjects, one_subject)
    fig.colorbar(im, ax=ax, label=f"held-out Pearson r ({who})", shrink=0.9)
    sources = {ln.source for ln in lines}
    if sources <= {"subject mean"}:
        star = "no group test in the store, so no *"
    elif sources <= {"group"}:
        star = f"* = group test p < {ALPHA:g} after FDR correction"
    elif sources <= {"subject"}:
        star = f"* = the subject's p < {ALPHA:g} after FDR correction"
    else:
        star = f"* = p < {ALPHA:g} after FDR correction, where a test is stored"
    grey = "; grey: not computed" if np.isnan(values).any() else ""
    ax.set_title(f"Held-out Pearson r, {who}\n({star}{grey})", fontsize=10)
    return fig
