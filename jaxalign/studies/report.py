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

Units of ``[features] remove`` (``feature_set = "removed"``) are left out of
these figures; the runner draws them apart with :func:`plot_removal`
(``<study>/removal/removal.png``).

What the store holds (the runner's conventions): per-subject fit units
(labels ``model, revision, layer, subject, target`` and ``feature_set`` in
model | baseline | control; arrays ``score``, optionally ``p``, ``p_fdr``) and
group units (``subject = "group"``; arrays ``score`` = mean r over subjects,
``sem``, ``p``, ``p_fdr``, optionally ``ceiling`` per target). Each line is
drawn from its group rows when it has them; else from its one subject's rows
(r and FDR p of that subject's test); else from the mean and SEM over its
subjects, without significance markers (no group test was stored).

``meg_windows.<fmt>``
    Units with a ``window`` axis (MEG / EEG, targets = channels, windows =
    start times in s): one row per model x revision, drawn at its best layer
    (largest mean r over windows and channels, named in the row's title): a
    channel x window heat map of r (windows in ms after word onset; beyond
    :data:`MAX_LABELLED_CHANNELS` channels, sorted by peak r and named
    sparsely; circles where the FDR p < 0.05) and, when
    ``<study>/geometry/<subject>-info.fif`` holds the channels' positions (a
    single subject's own file; for group rows any subject's file that names
    every channel), :func:`mne.viz.plot_topomap` sensor maps at the
    :data:`N_TOPOMAPS` windows with the largest mean r (boxed in the heat
    map), all on one colour scale with one colour bar. One channel type is
    mapped: magnetometers, else EEG, else the commonest type.

Voxel maps (``"nifti"`` in ``formats``, :func:`write_nifti_maps`): for NIfTI
datasets the runner saves each subject's mask as
``<study>/geometry/<subject>_mask.nii.gz`` (its non-zero voxels, in C order,
are the targets ``"0", "1", ...``); r of each model x revision x layer x
subject is put back into those voxels (NaN elsewhere, float32, the mask's
affine) as ``<study>/maps/<model>_<revision>_layer<L>_<subject>_r.nii.gz``,
with ``..._p_fdr.nii.gz`` where FDR p values are stored and ``_group_`` maps
when all subjects share one mask. With nilearn (``pip install
"jaxalign[maps]"``) a picture of the best layer's map is added,
``<model>_<revision>_<subject>_best.png`` (:func:`nilearn.plotting.plot_stat_map`,
on the MNI152 template when the mask's header says MNI space); without it a
logged line says so and the NIfTI files are still written. ``<study>`` is the
parent of a store folder named ``store`` (the runner's layout), else the store
folder itself.

Figures are drawn on a :class:`matplotlib.figure.Figure` with its own Agg
canvas (never pyplot: no global backend, nothing left open) and written
atomically (a temporary file in the same folder, then ``os.replace``), as
are the NIfTI files, so a killed report leaves the previous file or the new
one, never half of one.
"""

from __future__ import annotations

import logging
import math
import os
import re
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxalign._core.files import atomic_write, remove_orphans, writable_dir
from jaxalign.studies.store import load_results

__all__ = [
    "MAX_HEATMAP_TARGETS",
    "MAX_LABELLED_CHANNELS",
    "MAX_TARGET_PANELS",
    "N_TOPOMAPS",
    "heatmap_colormap",
    "make_report",
    "plot_removal",
    "report_figures",
    "write_nifti_maps",
]

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
#: Beyond this many channels the MEG heat map sorts them by peak r and names only some.
MAX_LABELLED_CHANNELS = 60
#: Sensor topomaps per model x revision in ``meg_windows`` (the windows with the largest mean r).
N_TOPOMAPS = 4
_DPI = 120
# one sequential colour map per model: its revisions are shades of it
_MODEL_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "YlOrBr", "PuRd", "GnBu")
_BASELINE_STYLE = {"color": "black", "ls": ":", "lw": 1.6}
_CONTROL_STYLE = {"color": "0.45", "ls": "-.", "lw": 1.4}
_CEILING_STYLE = {"color": "0.3", "ls": "--", "lw": 1.0}
_SIG_MARKER = {"marker": "o", "mfc": "black", "mec": "white", "mew": 0.8}


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


def make_report(results_dir, out=None, formats=("png",), *, geometry=None, maps=None) -> list[Path]:
    """Draw the figures of the results store ``results_dir``; return the paths written.

    ``out``: the folder for the figures (created if needed; default
    ``<results_dir>/figures``). ``formats``: file formats matplotlib writes
    (``"png"``, ``"pdf"``, ``"svg"``...), one file per figure and format, and
    ``"nifti"`` for the voxel maps (:func:`write_nifti_maps`, into ``maps``,
    default ``<study>/maps``). Writes ``layers.<fmt>`` and, with at most
    :data:`MAX_HEATMAP_TARGETS` targets, ``heatmap.<fmt>``; ``meg_windows.<fmt>``
    when units have a ``window`` axis (see the module docstring), each
    atomically. ``geometry``: the folder of the targets' geometry (masks,
    channel info; default ``<study>/geometry``, where ``<study>`` is the
    parent of a store folder named ``store``, else the store folder itself).

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
    nifti = "nifti" in formats
    formats = tuple(f for f in formats if f != "nifti")
    written = []
    if formats or not nifti:
        figs = report_figures(root, geometry=geometry)
        if figs:
            out = writable_dir(root / "figures" if out is None else Path(os.fspath(out)).expanduser(),
                               "figures folder")
            remove_orphans(out)  # the temporary files of a report that was killed
            for stem, fig in figs.items():
                for fmt in formats:
                    path = out / f"{stem}.{fmt}"
                    atomic_write(path, lambda f, fig=fig, fmt=fmt: fig.savefig(f, format=fmt, dpi=_DPI))
                    written.append(path)
    if nifti:
        written += write_nifti_maps(root, maps, geometry=geometry)
    if written:
        log.info("report of %s: %s", root, ", ".join(str(p) for p in written))
    return written


def report_figures(results_dir, *, geometry=None) -> dict:
    """The figures of :func:`make_report` as matplotlib Figures, not written: ``{"layers": ..., "heatmap": ...}``.

    ``"layers"`` and ``"heatmap"`` draw the units without a ``window`` axis
    (``"heatmap"`` is absent beyond :data:`MAX_HEATMAP_TARGETS` targets);
    ``"meg_windows"`` draws those with one (channel x window maps, and sensor
    topomaps where ``geometry`` holds the channel info). Each Figure has its
    own Agg canvas (``fig.savefig(...)`` works; pyplot is not involved).
    Raises as :func:`make_report`.
    """
    root = Path(os.fspath(results_dir)).expanduser()
    res = load_results(root)
    if len(res) == 0:
        raise ValueError(f"results store {root} has no finished units: nothing to plot "
                         "(has the study run? units appear under units/ as they finish)")
    table = _without_removed(res.table)
    figs = {}
    if "window" in table.columns and table["window"].notna().any():
        collected = _collect_windows(table[table["window"].notna()])
        figs_later = {"meg_windows": _draw_windows(collected, _geometry_dir(root, geometry))} if collected[0] else {}
        table = table[table["window"].isna()].drop(columns="window")
    else:
        figs_later = {}

    if "features" in table.columns and (table["features"] == "surprisal").any():
        log.info("surprisal units (reading times) are not drawn here: their scatter plot is written next to "
                 "their results (details/<model>/surprisal_rt.png)")
        table = table[table["features"] != "surprisal"]

    if not table.empty:
        targets = list(dict.fromkeys(table["target"]))
        lines, n_subjects, one_subject = _collect(table, targets)
        figs["layers"] = _draw_layers(lines, _ceiling(table, targets), targets, n_subjects, one_subject)
        if len(targets) > MAX_HEATMAP_TARGETS:
            log.info("heat map skipped: %d targets (more than %d would be unreadable); the layers figure "
                     "summarises them", len(targets), MAX_HEATMAP_TARGETS)
        else:
            figs["heatmap"] = _draw_heatmap(lines, targets, n_subjects, one_subject)
    figs.update(figs_later)
    return figs


# ------------------------------------------------------------------ data


def _without_removed(table):
    """The table without the units of ``[features] remove`` (drawn apart, :func:`plot_removal`)."""
    if "feature_set" in table.columns:
        table = table[table["feature_set"].astype(str) != "removed"]
        if "property" in table.columns:
            table = table.drop(columns="property")
    return table


def plot_removal(removal):
    """The runner's property-removal figure (``<out>/removal/removal.png``) from its table
    (``RunSummary.removal``, ``<out>/removal/removal.csv``), one row of two panels per model x revision:
    left, the mean r over targets along the layers of the original features (black) and of each
    property's residual features; right, the change (residual - original), a filled marker where the
    FDR-corrected paired test rejects. Returns a Figure with its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = removal[removal["target"] == "mean"]
    runs = list(dict.fromkeys(zip(rows["model"], rows["revision"])))
    props = list(dict.fromkeys(rows["property"]))
    fig = Figure(figsize=(11, 3.8 * len(runs)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(runs), 2, squeeze=False)
    colours = [_colour(k) for k in range(len(props))]
    a = removal.attrs
    for i, (model, revision) in enumerate(runs):
        g = rows[(rows["model"] == model) & (rows["revision"] == revision)]
        name = model if revision in ("main", "-") else f"{model} ({revision})"
        left, right = axes[i]
        orig = g.groupby("layer")["r_original"].mean()
        left.plot(orig.index, orig.to_numpy(), color="k", lw=2.4, marker="o", ms=4, label="original", zorder=4)
        for k, prop in enumerate(props):
            h = g[g["property"] == prop].sort_values("layer")
            sig = h["significant"].to_numpy(bool)
            for ax, y in ((left, h["r_removed"]), (right, h["change"])):
                ax.plot(h["layer"], y, color=colours[k], lw=1.3, label=f"minus {prop}" if ax is left else None)
                ax.scatter(h["layer"][sig], y[sig], color=colours[k], s=30, zorder=3)
                ax.scatter(h["layer"][~sig], y[~sig], facecolor="white", edgecolor=colours[k], s=18, zorder=3)
        right.axhline(0, color="k", lw=0.8)
        left.set_title(f"{name}: mean r over targets", fontsize=10)
        right.set_title("change, residual - original (filled: FDR < "
                        f"{a.get('alpha', 0.05):g})", fontsize=10)
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.set_xlabel("layer")
            ax.set_xticks(sorted(set(g["layer"])))
        left.set_ylabel("held-out r")
        right.set_ylabel("r(residual) - r(original)")
        if i == 0:
            left.legend(fontsize=7, ncol=2, loc="best")
    n = a.get("n_subjects")
    fig.suptitle(f"linguistic property removal: {a.get('test', 'paired t-test')}"
                 + (f" ({n} subjects)" if n and n > 1 else "") + f", {str(a.get('fdr', 'bh')).upper()} FDR",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _colour(k: int):
    """The k-th colour of matplotlib's tab10 (tab20 beyond 10)."""
    from matplotlib import colormaps

    return colormaps["tab10"](k) if k < 10 else colormaps["tab20"](k % 20)


def _check_formats(formats, supported) -> tuple:
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(str(f).lower().lstrip(".") for f in formats)
    if not formats:
        raise ValueError("formats must name at least one file format, e.g. ('png',)")
    bad = [f for f in formats if f not in supported and f != "nifti"]
    if bad:
        raise ValueError(f"cannot write figures as {bad}; formats matplotlib writes: {sorted(supported)} "
                         "(and 'nifti' for voxel maps)")
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
    fig.colorbar(im, ax=ax, label="held-out Pearson r", shrink=0.9)  # who: in the title (a long label is cut)
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


# ------------------------------------------------------------------ MEG: channel x window


@dataclass
class _WindowLine:
    """One model x revision with a window axis: r per (layer, window, channel)."""

    label: str
    kind: str
    layers: list
    r: np.ndarray  # (layer, window, target)
    p_fdr: np.ndarray  # (layer, window, target), NaN where no test is stored
    source: str  # "group" | "subject" | "subject mean"
    subjects: list  # the subjects of its per-subject rows


def _geometry_dir(root: Path, geometry) -> Path:
    """``geometry`` or ``<study>/geometry`` (``<study>``: the parent of a store folder named ``store``)."""
    if geometry is not None:
        return Path(os.fspath(geometry)).expanduser()
    return (root.parent if root.name == "store" else root) / "geometry"


def _maps_dir(root: Path, maps) -> Path:
    if maps is not None:
        return Path(os.fspath(maps)).expanduser()
    return (root.parent if root.name == "store" else root) / "maps"


def _window_order(values) -> list:
    """The windows in time order (numbers), else in the order they appear."""
    seen = list(dict.fromkeys(values))
    try:
        return sorted(seen, key=float)
    except (TypeError, ValueError):
        return seen


def _window_label(window) -> str:
    """A window start in s as ms after word onset ("0", "150", "-100"); a name as it is."""
    try:
        ms = float(window) * 1000.0
    except (TypeError, ValueError):
        return str(window)
    return f"{ms:.0f}" if abs(ms - round(ms)) < 1e-6 else f"{ms:.1f}"


def _grid3(frame, column, layers, windows, targets) -> np.ndarray:
    """``column`` of ``frame`` as a (layer, window, target) array, NaN where absent."""
    shape = (len(layers), len(windows), len(targets))
    if column not in frame.columns:
        return np.full(shape, np.nan)
    values = frame.groupby(["layer", "window", "target"], sort=False)[column].mean()
    import pandas as pd

    full = pd.MultiIndex.from_product([layers, windows, targets], names=["layer", "window", "target"])
    return values.reindex(full).to_numpy(dtype=float).reshape(shape)


def _collect_windows(table):
    """The lines of the MEG figure, the windows (time order), the channels, the number of subjects."""
    table = table.copy()
    table["layer"] = table["layer"].astype(int)
    if "feature_set" not in table.columns:
        table["feature_set"] = "model"
    table["feature_set"] = table["feature_set"].fillna("model").astype(str)
    if "features" in table.columns:
        table = table[table["features"] != "surprisal"]
    windows = _window_order(table["window"])
    targets = list(dict.fromkeys(table["target"]))
    is_group = table["subject"].astype(str) == "group"
    subjects = list(dict.fromkeys(table.loc[~is_group, "subject"]))
    models = table[table["feature_set"] == "model"]
    if models.empty:  # only references were fitted with windows: draw them
        models = table
    lines = []
    for (model, revision), rows in models.groupby(["model", "revision"], sort=False):
        layers = sorted(set(rows["layer"]))
        group = rows[rows["subject"].astype(str) == "group"]
        single = rows[rows["subject"].astype(str) != "group"]
        mine = list(dict.fromkeys(single["subject"]))
        if not group.empty:
            r, p_fdr, source = (_grid3(group, "score", layers, windows, targets),
                                _grid3(group, "p_fdr", layers, windows, targets), "group")
        elif len(mine) == 1:
            r, p_fdr, source = (_grid3(single, "score", layers, windows, targets),
                                _grid3(single, "p_fdr", layers, windows, targets), "subject")
        else:
            per = np.stack([_grid3(single[single["subject"] == s], "score", layers, windows, targets)
                            for s in mine])
            r, _ = _mean_sem(per)
            p_fdr, source = np.full(r.shape, np.nan), "subject mean"
        kind = str(rows["feature_set"].iloc[0])
        kind = kind if kind in ("model", "baseline", "control") else "model"
        if kind != "model":
            label = f"{model} {kind}"
        elif revision in ("main", "-") and models.loc[models["model"] == model, "revision"].nunique() == 1:
            label = model
        else:
            label = f"{model} ({revision})"
        lines.append(((_natural(model), revision == "main", _natural(revision)),
                      _WindowLine(label, kind, layers, r, p_fdr, source, mine)))
    lines = [ln for _, ln in sorted(lines, key=lambda pair: pair[0])]
    return lines, windows, targets, subjects


def _best_layer(line) -> int:
    """Index of the layer with the largest mean r over windows and channels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(line.r.reshape(len(line.layers), -1), 1)
    return int(np.nanargmax(means)) if np.isfinite(means).any() else 0


def _read_info(path):
    import mne

    try:
        return mne.io.read_info(path, verbose="error")
    except Exception as error:  # a damaged file: no topomap, but the heat map is still drawn
        log.warning("cannot read the channel info %s (%s: %s): no sensor topomap from it", path,
                    type(error).__name__, error)
        return None


def _sensors(geometry: Path, line, targets):
    """(mne.Info of the channels drawn, their indices among ``targets``, a note) or None.

    A single subject's line takes that subject's ``<subject>-info.fif``; a
    group (or subject-mean) line takes the first subject's info that names
    every channel. One channel type is drawn: magnetometers when present,
    else EEG, else the most common type (planar gradiometer pairs are merged
    by MNE as their RMS, so they lose the sign); channels without a position
    are left out.
    """
    if not geometry.is_dir():
        return None
    try:
        import mne
    except ImportError:  # pragma: no cover - mne is a dependency of the io extra
        log.info("sensor topomaps need mne (pip install \"jaxalign[io]\"): heat map only")
        return None
    if line.source == "subject":
        paths = [geometry / f"{line.subjects[0]}-info.fif"]
    else:
        paths = [geometry / f"{s}-info.fif" for s in line.subjects] + sorted(geometry.glob("*-info.fif"))
    info = None
    for path in dict.fromkeys(paths):
        if path.is_file():
            candidate = _read_info(path)
            if candidate is not None and set(targets) <= set(candidate.ch_names):
                info = candidate
                break
    if info is None:
        return None
    at = [info.ch_names.index(t) for t in targets]
    types = info.get_channel_types(picks=at)
    present = [t for t in ("mag", "eeg") if t in types]
    chosen = present[0] if present else max(set(types), key=types.count)
    keep = []
    for j, (t, i) in enumerate(zip(types, at)):
        loc = np.asarray(info["chs"][i]["loc"][:3], dtype=float)
        if t == chosen and np.isfinite(loc).all() and np.abs(loc).sum() > 0:
            keep.append(j)
    if len(keep) < 3:
        log.info("channel info has fewer than 3 %s channels with positions: no sensor topomap", chosen)
        return None
    names = {"mag": "magnetometers", "eeg": "EEG sensors", "grad": "gradiometer pairs (RMS: no sign)"}
    note = names.get(chosen, chosen)
    if len(keep) < len(targets):
        note += f", {len(keep)} of {len(targets)} channels"
    return mne.pick_info(info, [at[j] for j in keep], verbose="error"), np.asarray(keep), note


def _draw_windows(collected, geometry: Path):
    import matplotlib.patches as patches
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    lines, windows, targets, subjects = collected
    best = [_best_layer(ln) for ln in lines]
    maps = [ln.r[b] for ln, b in zip(lines, best)]  # (window, channel) each
    sig = [np.nan_to_num(ln.p_fdr[b], nan=1.0) < ALPHA for ln, b in zip(lines, best)]
    sensors = [_sensors(geometry, ln, targets) for ln in lines]
    n_topo = min(N_TOPOMAPS, len(windows)) if any(s is not None for s in sensors) else 0
    if not n_topo and geometry.is_dir() and any(geometry.glob("*-info.fif")):
        log.info("MEG figure: no channel info in %s names the store's channels: heat map only", geometry)

    name, vmin, vmax = heatmap_colormap(np.stack(maps))
    cmap = colormaps[name].with_extremes(bad="0.88")
    norm = Normalize(vmin, vmax)
    n_win, n_ch = len(windows), len(targets)
    many = n_ch > MAX_LABELLED_CHANNELS
    if many:  # channels by their peak r (over windows, mean over the lines), the strongest on top
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            peak = np.nanmean(np.stack([np.nanmax(m, 0) for m in maps]), 0)
        order = np.argsort(np.where(np.isfinite(peak), -peak, np.inf), kind="stable")
    else:
        order = np.arange(n_ch)

    heat_w = max(3.2, 0.32 * n_win + 1.6)
    row_h = max(2.3, 0.17 * n_ch + 1.0) if not many else 4.2
    fig = _new_figure(figsize=(heat_w + 2.0 * n_topo + 1.6, row_h * len(lines) + 1.1))
    grid = fig.add_gridspec(len(lines), 1 + n_topo, width_ratios=[heat_w] + [2.0] * n_topo)
    all_axes, image = [], None
    label_every = max(1, math.ceil(n_ch / 40)) if many else 1
    win_every = max(1, math.ceil(n_win / 16))
    win_labels = [_window_label(w) for w in windows]
    numeric = all(_is_number(w) for w in windows)
    steps = np.unique(np.round(np.diff([float(w) for w in windows]) * 1000, 3)) if numeric and n_win > 1 else []
    step = f"; a window every {steps[0]:g} ms" if len(steps) == 1 else ""
    for row, (ln, layer_at, values, stars, sens) in enumerate(zip(lines, best, maps, sig, sensors)):
        ax = fig.add_subplot(grid[row, 0])
        all_axes.append(ax)
        shown = values[:, order].T  # (channel, window)
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto",
                          interpolation="nearest")
        yy, xx = np.nonzero(stars[:, order].T)
        if len(yy):
            ax.plot(xx, yy, ls="none", **_SIG_MARKER, ms=3 if many else 4)
        ticks = range(0, n_win, win_every)
        ax.set_xticks(list(ticks), [win_labels[i] for i in ticks], fontsize=8,
                      rotation=45 if n_win > 8 else 0, ha="right" if n_win > 8 else "center")
        ax.set_xlabel(f"window start (ms after word onset{step})" if numeric else "window", fontsize=9)
        ch_ticks = range(0, n_ch, label_every)
        ax.set_yticks(list(ch_ticks), [targets[order[i]] for i in ch_ticks], fontsize=6 if many else 7)
        ax.set_ylabel(f"channel, sorted by peak r (1 in {label_every} named)" if many and label_every > 1
                      else "channel, sorted by peak r" if many else "channel", fontsize=9)
        ax.tick_params(length=2)
        layer = ln.layers[layer_at]
        ax.set_title(f"{ln.label}: layer {layer} (best of {len(ln.layers)} by mean r)", fontsize=9, loc="left")
        if not n_topo:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            strength = np.nanmean(values, 1)
        top = np.argsort(np.where(np.isfinite(strength), -strength, np.inf), kind="stable")[:n_topo]
        top = sorted(top.tolist(), key=lambda i: i)  # in time order
        for k in range(n_topo):
            tax = fig.add_subplot(grid[row, 1 + k])
            all_axes.append(tax)
            if sens is None or k >= len(top):
                tax.set_axis_off()
                if sens is None and k == 0:
                    tax.text(0.5, 0.5, "no channel positions\nfor these channels", ha="center", va="center",
                             fontsize=8, color="0.4", transform=tax.transAxes)
                continue
            w = top[k]
            ax.add_patch(patches.Rectangle((w - 0.5, -0.5), 1, n_ch, fill=False, ec="black", lw=1.0))
            info, keep, note = sens
            if not _topomap(tax, values[w, keep], info, stars[w, keep], cmap, vmin, vmax):
                continue
            tax.set_title(f"{win_labels[w]} ms" if numeric else str(windows[w]), fontsize=9)
            if k == 0:
                tax.set_xlabel(note, fontsize=7)
    cbar = fig.colorbar(image, ax=all_axes, label="held-out Pearson r", shrink=0.8, aspect=30)
    cbar.ax.tick_params(labelsize=8)
    who = _who(len(subjects), subjects[0] if len(subjects) == 1 else None)
    sources = {ln.source for ln in lines}
    test = "group test" if sources == {"group"} else "the subject's test" if sources == {"subject"} else "test"
    if not sources & {"group", "subject"}:
        dots = "no group test in the store, so no significance marks"
    elif not any(np.isfinite(ln.p_fdr).any() for ln in lines):
        dots = "no p values in the store, so no significance marks"
    elif any(s.any() for s in sig):
        dots = f"circles: {test} p < {ALPHA:g} after FDR correction"
    else:
        dots = f"no channel x window with {test} p < {ALPHA:g} after FDR correction"
    text = [f"Held-out r per channel and window, {who} ({dots})"]
    if n_topo:
        text.append(f"Heads: the {n_topo} windows with the largest mean r (boxed in the heat map), same colour "
                    "scale, seen from above, nose up; small dots = sensors")
    width = max(40, int(fig.get_figwidth() * 12))  # characters of 10-point text that fit across
    fig.suptitle("\n".join(textwrap.fill(t, width) for t in text), fontsize=10)
    return fig


def _is_number(x) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def _topomap(ax, values, info, stars, cmap, vmin, vmax) -> bool:
    """One sensor topomap of ``values`` on ``ax``; False (axes hidden, logged) when MNE cannot draw it."""
    import mne

    try:
        mne.viz.plot_topomap(values, info, axes=ax, cmap=cmap, vlim=(vmin, vmax), show=False, contours=0,
                             sensors=True, mask=stars if stars.any() else None,
                             mask_params={"marker": "o", "markerfacecolor": "black", "markeredgecolor": "white",
                                          "markersize": 5, "markeredgewidth": 0.8})
    except Exception as error:  # odd layouts (unpaired gradiometers...): the heat map still stands
        log.warning("sensor topomap not drawn (%s: %s)", type(error).__name__, error)
        ax.set_axis_off()
        return False
    return True


# ------------------------------------------------------------------ NIfTI voxel maps


def write_nifti_maps(results_dir, out=None, *, geometry=None) -> list[Path]:
    """Write the voxel units' r (and FDR p) back into images; return the paths written.

    For each model x revision x layer x subject whose mask
    ``<geometry>/<subject>_mask.nii.gz`` exists (written by the runner for
    NIfTI datasets: its non-zero voxels, in C order, are the targets
    ``"0", "1", ...``), writes ``<out>/<model>_<revision>_layer<L>_<subject>_r.nii.gz``
    (float32, the mask's affine and header, NaN outside the mask) and
    ``..._p_fdr.nii.gz`` where FDR-corrected p values are stored. Group units
    get ``..._group_...`` maps when all their subjects share one mask. With
    nilearn installed (``pip install "jaxalign[maps]"``), also draws
    ``<model>_<revision>_<subject>_best.png``: the best layer's r map (largest
    mean r over voxels) with :func:`nilearn.plotting.plot_stat_map`. Files are
    written atomically. ``out`` defaults to ``<study>/maps`` and ``geometry``
    to ``<study>/geometry`` (see :func:`make_report`).

    Raises as :func:`make_report`; without nibabel, ImportError.
    """
    root = Path(os.fspath(results_dir)).expanduser()
    res = load_results(root)
    if len(res) == 0:
        raise ValueError(f"results store {root} has no finished units: nothing to map "
                         "(has the study run? units appear under units/ as they finish)")
    table = _without_removed(res.table)
    if "window" in table.columns:
        table = table[table["window"].isna()]
    if "features" in table.columns:
        table = table[table["features"] != "surprisal"]
    geo = _geometry_dir(root, geometry)
    if table.empty:
        log.info("no voxel maps: no unit of %s is a fit over voxels (all have a window axis or are surprisal)",
                 root)
        return []
    subjects = list(dict.fromkeys(table.loc[table["subject"].astype(str) != "group", "subject"]))
    masks = {s: _read_mask(geo / f"{s}_mask.nii.gz") for s in subjects}
    missing = [s for s, m in masks.items() if m is None]
    if len(missing) == len(subjects):
        log.info("no voxel maps: no mask in %s for the subjects %s (the runner writes <subject>_mask.nii.gz "
                 "for NIfTI datasets only)", geo, subjects)
        return []
    if missing:
        log.info("no voxel maps for the subjects %s: no mask in %s", missing, geo)

    out = writable_dir(_maps_dir(root, out), "maps folder")
    remove_orphans(out)
    try:
        from nilearn import plotting  # noqa: F401
        pictures = True
    except ImportError:
        pictures = False
        log.info("voxel maps written as NIfTI; the stat-map pictures need nilearn: pip install \"jaxalign[maps]\"")
    written = []
    table = table.assign(layer=table["layer"].astype(int))
    for (model, revision, subject), rows in table.groupby(["model", "revision", "subject"], sort=False):
        if str(subject) == "group":
            theirs = list(dict.fromkeys(table.loc[(table["model"] == model) & (table["revision"] == revision)
                                                  & (table["subject"].astype(str) != "group"), "subject"]))
            mask = _shared_mask([masks.get(s) for s in theirs])
            if mask is None:
                log.info("no group map for %s (%s): its subjects' masks are missing or differ", model, revision)
                continue
        else:
            mask = masks.get(subject)
            if mask is None:
                continue
        img_mask, flat = mask
        at = _voxel_positions(rows["target"].unique(), len(flat), f"{model} ({revision}) {subject}")
        if at is None:
            continue
        stem = _safe(model if revision == "-" else f"{model}_{revision}")  # "-": no revision (baseline...)
        best, best_r = None, -np.inf
        for layer, lrows in rows.groupby("layer", sort=True):
            per = lrows.groupby("target", sort=False)
            r = _volume(img_mask, flat, at, per["score"].mean())
            path = out / f"{stem}_layer{layer}_{_safe(subject)}_r.nii.gz"
            _write_nifti(path, r, img_mask, "held-out Pearson r")
            written.append(path)
            if "p_fdr" in lrows.columns and lrows["p_fdr"].notna().any():
                path = out / f"{stem}_layer{layer}_{_safe(subject)}_p_fdr.nii.gz"
                _write_nifti(path, _volume(img_mask, flat, at, per["p_fdr"].mean()), img_mask,
                             "FDR-corrected p of the held-out r")
                written.append(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = float(np.nanmean(lrows["score"]))
            if np.isfinite(mean) and mean > best_r:
                best, best_r = (layer, r), mean
        if pictures and best is not None:
            path = out / f"{stem}_{_safe(subject)}_best.png"
            who = "group mean" if str(subject) == "group" else f"subject {subject}"
            kind = str(rows["feature_set"].iloc[0]) if "feature_set" in rows.columns else "model"
            name = f"{model} {kind}" if kind in ("baseline", "control") else (
                model if revision == "-" else f"{model} ({revision})")
            n_layers = rows["layer"].nunique()
            title = (f"{name}, {who}: layer {best[0]}, the best of {n_layers} by mean r over voxels ({best_r:.3f})"
                     if n_layers > 1 else f"{name}, {who}: mean r over voxels {best_r:.3f}")
            if _stat_map_picture(path, best[1], img_mask, flat, title):
                log.info("stat-map picture %s: layer %s, the best by mean r over voxels", path.name, best[0])
                written.append(path)
    return written


def _safe(text) -> str:
    """A file-name part: anything but letters, digits, ``.``, ``-`` and ``_`` becomes ``_``."""
    return re.sub(r"[^0-9A-Za-z._-]", "_", str(text)).strip(".") or "_"


def _read_mask(path: Path):
    """(mask image, flat C-order indices of its voxels) or None when the file is absent or unreadable."""
    if not path.is_file():
        return None
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as error:
        log.warning("cannot read the mask %s (%s: %s): no voxel map from it", path, type(error).__name__, error)
        return None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        log.warning("mask %s is not a 3-D volume (shape %s): no voxel map from it", path, data.shape)
        return None
    mask = data != 0
    if data.dtype.kind == "f":
        mask &= ~np.isnan(data)  # NaN != 0 would put NaN voxels inside the mask
    return img, np.flatnonzero(mask.ravel(order="C"))


def _shared_mask(masks):
    """The mask every subject has (same voxels, same affine), else None."""
    if not masks or any(m is None for m in masks):
        return None
    first = masks[0]
    for img, flat in masks[1:]:
        if (img.shape[:3] != first[0].shape[:3] or not np.array_equal(flat, first[1])
                or not np.allclose(img.affine, first[0].affine, atol=1e-6)):
            return None
    return first


def _voxel_positions(targets, n_voxels, what):
    """{target name: index among the mask's voxels}, or None (logged) when the names are not voxel indices."""
    try:
        at = {t: int(t) for t in targets}
    except (TypeError, ValueError):
        log.warning("no voxel map for %s: its targets are not voxel indices (e.g. %r)", what, targets[0])
        return None
    bad = [t for t, i in at.items() if not 0 <= i < n_voxels or str(i) != str(t)]
    if bad:
        log.warning("no voxel map for %s: targets %s are not voxel indices 0..%d of its mask", what, bad[:5],
                    n_voxels - 1)
        return None
    return at


def _volume(img_mask, flat, at, values) -> np.ndarray:
    """The values (a Series indexed by target name) in the mask's voxels, NaN elsewhere (float32)."""
    vol = np.full(int(np.prod(img_mask.shape[:3])), np.nan, dtype=np.float32)
    vol[flat[[at[t] for t in values.index]]] = values.to_numpy(dtype=np.float32)
    return vol.reshape(img_mask.shape[:3], order="C")


def _write_nifti(path: Path, volume, img_mask, description: str) -> None:
    """``volume`` as a gzipped float32 NIfTI with the mask's affine and header, atomically."""
    import gzip

    import nibabel as nib

    header = img_mask.header.copy()
    header.set_data_dtype(np.float32)
    img = nib.Nifti1Image(volume.astype(np.float32), img_mask.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    img.header["descrip"] = description[:79].encode()
    atomic_write(path, lambda f: f.write(gzip.compress(img.to_bytes(), compresslevel=6)))


def _stat_map_picture(path: Path, volume, img_mask, flat, title: str) -> bool:
    """The r map with nilearn's plot_stat_map, drawn on a Figure of its own (no pyplot); False on failure."""
    import nibabel as nib
    from nilearn import plotting

    finite = np.isfinite(volume)
    vmax = float(np.abs(volume[finite]).max()) if finite.any() else 0.0
    vmax = vmax if vmax > 0 else 1.0
    stat = nib.Nifti1Image(np.where(finite, volume, 0).astype(np.float32), img_mask.affine)
    mni = 4 in (int(img_mask.header["sform_code"]), int(img_mask.header["qform_code"]))
    fig = _new_figure(figsize=(8.5, 3.6), facecolor="black")  # nilearn's black_bg look, title included
    fig.set_layout_engine("none")
    panel = fig.add_axes((0.0, 0.0, 1.0, 0.85))  # the top 15% for the title
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's notes on resampling, non-finite values
            background = None
            if mni:  # the mask says MNI space: nilearn's own MNI152 template (shipped, no download)
                from nilearn.datasets import load_mni152_template

                background = load_mni152_template()
            # nearest: no r is invented between voxels (or outside the mask) when the grid is resampled
            plotting.plot_stat_map(stat, bg_img=background, figure=fig, axes=panel, cmap="RdBu_r", vmin=-vmax,
                                   vmax=vmax, symmetric_cbar=True, black_bg=True, draw_cross=False, title=None,
                                   resampling_interpolation="nearest", colorbar=True, annotate=True)
        where = "on the MNI152 template" if mni else "black: outside the mask"
        text = "\n".join(textwrap.fill(t, 110) for t in (title, f"held-out Pearson r per voxel ({where})"))
        fig.suptitle(text, fontsize=9, color="white", y=0.985, va="top")
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=_DPI, facecolor="black"))
    except Exception as error:
        log.warning("stat-map picture %s not drawn (%s: %s); the NIfTI maps are written", path.name,
                    type(error).__name__, error)
        return False
    return True
