"""What removing a linguistic property does to probing and to alignment:
probe accuracy before and after removal, per property and layer, and the
held-out alignment of the original and the residual features with a
behavioural or brain target (the Pythia study, METHODS.md section 5).

For every property (a column of ``classes``) and feature set (``layers``):

1. Probe before removal: :func:`probe_accuracy` (L2 logistic regression,
   ``C`` chosen by nested CV; accuracy against the majority-class chance).
2. Remove the property: :func:`remove_property` (ridge residuals of the
   features on the property's one-hot labels, each feature's penalty chosen
   by ``removal_cv``-fold CV from ``removal_alphas``).
3. Probe after removal, in the same folds, and apply the study's criterion
   :func:`removal_successful` (above chance before, below after).
4. With a ``target`` (a reading time, a voxel: one number per word): the
   held-out Pearson r of a ridge regression from the features to the target
   (:func:`alignment_r`) for the original and for the residual features.

Where the removal is fitted (``removal``):

``"all"`` (the default, the published convention)
    on all words, once per property; the test words of the probe's (and the
    alignment's) outer folds take part in the fit that is removed from them.
``"fold"`` (leak-free)
    inside every outer fold, on its training words only, and applied to all
    its words: the probe's inner CV and its outer test words, and the
    alignment's test story, never shaped the class means subtracted from
    them. It costs one removal fit per outer fold (ridge on a one-hot design,
    cheap) and the same number of probe fits as ``"all"``.

Folds. Probing: ``outer`` x ``inner`` folds (the study: 4 x 4); integers are
contiguous folds of whole ``groups`` (``GroupKFold``: give sentence ids, so
that no sentence, whose words share their sentence-level labels and most of
their context, is split between training and test) or, without groups,
contiguous folds of words. Alignment: ``align_outer`` folds (default: leave
one ``target_groups`` group out, e.g. one story; without target groups 5
contiguous folds), each training set's penalty chosen from ``alphas`` by
``align_inner`` contiguous folds; the training and the test set are each
z-scored (features and target, METHODS.md 1.4) and the model has no
intercept. The alignment uses the words whose target is finite (NaN marks a
word left out, e.g. a sentence-initial word in reading times); probing and
removal use every word.

The result is a tidy table (:func:`removal_effects`); :func:`plot_removal_effects`
draws it.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from jaxalign._core.validation import as_float_array, check_finite
from jaxalign._core.zscore import zscore_columns
from jaxalign.analysis.probing._probe import probe_accuracy, removal_successful
from jaxalign.analysis.probing._removal import remove_property
from jaxalign.ridge import ContiguousKFold, GroupKFold, LeaveOneGroupOut, check_cv, pearson_r, ridge_cv

__all__ = ["REMOVALS", "alignment_r", "plot_removal_effects", "removal_effects"]

log = logging.getLogger(__name__)

#: Where a removal can be fitted (module docstring).
REMOVALS = ("all", "fold")

#: Columns of :func:`removal_effects`' table, in order (alignment ones with a target).
COLUMNS = ("property", "layer", "removal", "n_words", "n_classes", "chance", "accuracy_before",
           "accuracy_after", "above_chance_before", "below_chance_after", "removed")
ALIGNMENT_COLUMNS = ("n_aligned", "alignment_before", "alignment_after", "alignment_change")


def _classes(classes, n):
    """{property: (n,) labels} from a DataFrame, a dict or one labelled Series."""
    if isinstance(classes, pd.Series):
        classes = {classes.name if classes.name is not None else "property": classes}
    if isinstance(classes, pd.DataFrame):
        classes = {c: classes[c] for c in classes.columns}
    if not isinstance(classes, dict) or not classes:
        raise ValueError("classes must be a non-empty DataFrame (one column per property), "
                         f"dict of label arrays or named Series, got {type(classes).__name__}")
    out = {}
    for name, lab in classes.items():
        lab = np.asarray(lab, object)
        if lab.shape != (n,):
            raise ValueError(f"classes[{name!r}] has shape {lab.shape}, features have {n} words")
        if pd.isna(lab).any():
            raise ValueError(f"classes[{name!r}] has missing labels: label every word or drop it")
        try:
            k = len(np.unique(lab))
        except TypeError as err:
            raise ValueError(f"classes[{name!r}] mixes labels that cannot be compared: {err}") from err
        if k < 2:
            raise ValueError(f"classes[{name!r}] has a single class: nothing to probe")
        out[name] = lab
    return out


def _splitter(cv, groups, what):
    """An int is contiguous folds of whole groups (or of samples without groups)."""
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"{what} must be at least 2 folds, got {cv}")
        return GroupKFold(int(cv)) if groups is not None else ContiguousKFold(int(cv))
    return cv


def alignment_r(X, y, splits, *, alphas=np.logspace(-2, 6, 9), inner=4, train_features=None):
    """Held-out Pearson r of ridge regression from features to one target.

    Parameters
    ----------
    X : (n, p) or (L, n, p) features (L feature sets, each its own model)
    y : (n,) finite target
    splits : list of (train, test) index pairs partitioning the n samples
    alphas, inner : penalty grid and inner CV (int: contiguous folds of the
        training rows) of :func:`jaxalign.ridge.ridge_cv` (Pearson scoring,
        no intercept)
    train_features : optional callable ``(k, train, test) -> X_k`` giving the
        features of outer fold ``k`` (same shape as ``X``): fold-dependent
        features such as a removal fitted on the fold's training rows

    In each outer fold the training and the test rows are each z-scored
    (features and target); the test rows are predicted by the ridge
    refitted on all training rows at each feature's chosen penalty. The
    score is Pearson r between the concatenated predictions and the
    concatenated (z-scored) test targets, as ``nested_cv(...,
    standardize="separate").scores``.

    Returns
    -------
    (L,) float64 r (a float for 2-D ``X``)

    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((90, 4)); y = X[:, 0] + rng.standard_normal(90)
    >>> r = alignment_r(X, y, list(ContiguousKFold(3).split(90)), alphas=[1.0, 100.0], inner=3)
    >>> 0.5 < r < 0.9
    True
    """
    X = as_float_array(X, "X", (2, 3))
    single = X.ndim == 2
    Xl = X[None] if single else X
    n = Xl.shape[1]
    y = np.asarray(y, np.float64)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    test_rows = np.concatenate([np.asarray(te) for _, te in splits])
    if np.sort(test_rows).tolist() != list(range(n)):
        raise ValueError("splits must test every sample exactly once (a partition)")
    pred = np.zeros((len(Xl), n))
    y_std = np.zeros(n)
    for k, (tr, te) in enumerate(splits):
        Xk = Xl if train_features is None else np.asarray(train_features(k, tr, te)).reshape(Xl.shape)
        X_tr, _, _ = zscore_columns(Xk[:, tr], tol_dtype=np.float32)
        X_te, _, _ = zscore_columns(Xk[:, te], tol_dtype=np.float32)
        y_tr, _, _ = zscore_columns(y[tr, None], tol_dtype=np.float32)
        y_te, _, _ = zscore_columns(y[te, None], tol_dtype=np.float32)
        res = ridge_cv(X_tr, y_tr, alphas, inner, scoring="pearson", fit_intercept=False)
        coef = np.asarray(res.coef, np.float64).reshape(len(Xl), -1, 1)
        pred[:, te] = (np.asarray(X_te, np.float64) @ coef)[..., 0]
        y_std[te] = y_te[:, 0]
    r = np.asarray(pearson_r(np.broadcast_to(y_std[:, None], (n, len(Xl))), pred.T), np.float64)
    return float(r[0]) if single else r


def removal_effects(features, classes, *, layers=None, groups=None, target=None,
                    target_groups=None, removal="all", Cs=np.logspace(-3, 0, 4), outer=4, inner=4,
                    removal_alphas=np.logspace(-3, 5, 9), removal_cv=4,
                    alphas=np.logspace(-2, 6, 9), align_outer=None, align_inner=4,
                    dtype="float32", max_iter=2000) -> pd.DataFrame:
    """Probe accuracy before / after removing each property, per layer, and
    (with ``target``) the alignment of the original and residual features.

    Parameters
    ----------
    features : (L, n, p) or (n, p) word features (layers first)
    classes : DataFrame (n rows, one column per property), dict of (n,)
        label arrays, or a named Series (one property); any comparable labels
    layers : L names of the feature sets (default 0..L-1)
    groups : (n,) group ids for the probing folds (sentences); None:
        contiguous folds of words
    target : (n,) one number per word (e.g. mean reading time); NaN words are
        left out of the alignment. None: no alignment columns
    target_groups : (n,) groups of the alignment's outer folds (stories)
    removal : ``"all"`` (published: fit on all words), ``"fold"`` (inside each
        outer fold), or a sequence of both (one row each)
    Cs, outer, inner : probe grid and folds (the study: 10^-3..10^0, 4 x 4)
    removal_alphas, removal_cv : the removal's ridge grid and folds
    alphas, align_outer, align_inner : the alignment's ridge grid and folds
    dtype, max_iter : probe solver settings (float32 is ~3x faster than
        float64 and moves accuracies by rounding only)

    Returns
    -------
    DataFrame, one row per property x layer x removal: ``property``,
    ``layer``, ``removal``, ``n_words``, ``n_classes``, ``chance`` (majority
    share), ``accuracy_before``, ``accuracy_after``, ``above_chance_before``,
    ``below_chance_after``, ``removed`` (:func:`removal_successful`); with a
    target also ``n_aligned`` (words with a finite target),
    ``alignment_before``, ``alignment_after`` (held-out r) and
    ``alignment_change`` (after - before).
    """
    X = as_float_array(features, "features", (2, 3))
    check_finite(X, "features")
    Xl = X[None] if X.ndim == 2 else X
    L, n, _ = Xl.shape
    props = _classes(classes, n)
    layer_names = list(range(L)) if layers is None else list(layers)
    if len(layer_names) != L:
        raise ValueError(f"layers names {len(layer_names)} feature sets, features have {L}")
    modes = [removal] if isinstance(removal, str) else list(removal)
    if not modes or any(m not in REMOVALS for m in modes) or len(set(modes)) != len(modes):
        raise ValueError(f"removal must be one of {REMOVALS} or a sequence of them, got {removal!r}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    outer_cv = _splitter(outer, groups, "outer")
    inner_cv = _splitter(inner, groups, "inner")
    probe_splits = check_cv(outer_cv, n, groups=groups)
    probe_kw = dict(Cs=Cs, inner=inner_cv, groups=groups, dtype=dtype, max_iter=max_iter)
    removal_kw = dict(alphas=removal_alphas, cv=removal_cv)

    align = None
    if target is not None:
        align = _alignment_setup(target, target_groups, n, align_outer)
    elif target_groups is not None:
        raise ValueError("target_groups is given without a target")

    rows = []
    aligned_before = None
    if align is not None:
        rows_a, splits_a = align
        aligned_before = alignment_r(Xl[:, rows_a], _align_y(target, rows_a), splits_a,
                                     alphas=alphas, inner=align_inner)
        log.info("alignment of the original features: %s",
                 ", ".join(f"{lay}: {r:.3f}" for lay, r in zip(layer_names, aligned_before)))
    for name, lab in props.items():
        before = probe_accuracy(Xl, lab, outer=probe_splits, **probe_kw)
        for mode in modes:
            if mode == "all":
                R = remove_property(Xl, lab, **removal_kw)
                after = probe_accuracy(R, lab, outer=probe_splits, **probe_kw).accuracy
            else:
                fold_acc = []
                for tr, te in probe_splits:
                    R = remove_property(Xl, lab, train=tr, **removal_kw)
                    fold_acc.append(probe_accuracy(R, lab, outer=[(tr, te)], **probe_kw).accuracy)
                after = np.mean(fold_acc, axis=0)
            ok = removal_successful(before.accuracy, after, chance=before.chance)
            res = dict(property=name, layer=layer_names, removal=mode, n_words=n,
                       n_classes=len(before.classes), chance=before.chance,
                       accuracy_before=before.accuracy, accuracy_after=after,
                       above_chance_before=before.accuracy > before.chance,
                       below_chance_after=after < before.chance, removed=ok)
            if align is not None:
                rows_a, splits_a = align
                if mode == "all":
                    r_after = alignment_r(R[:, rows_a], _align_y(target, rows_a), splits_a,
                                          alphas=alphas, inner=align_inner)
                else:
                    def fold_features(k, tr, te, lab=lab):
                        fit_rows = rows_a[tr]  # the fold's training words, in all-word indices
                        return remove_property(Xl, lab, train=fit_rows, **removal_kw)[:, rows_a]
                    r_after = alignment_r(Xl[:, rows_a], _align_y(target, rows_a), splits_a,
                                          alphas=alphas, inner=align_inner,
                                          train_features=fold_features)
                res.update(n_aligned=len(rows_a), alignment_before=aligned_before,
                           alignment_after=r_after, alignment_change=r_after - aligned_before)
            rows.append(pd.DataFrame(res))
            log.info("%s (%s): accuracy %s -> %s, chance %.3f", name, mode,
                     np.round(before.accuracy, 3), np.round(after, 3), before.chance)
    return pd.concat(rows, ignore_index=True)


def _align_y(target, rows):
    """The target of the words that are aligned, float64."""
    return np.asarray(target, np.float64)[rows]


def _alignment_setup(target, target_groups, n, align_outer):
    """(rows with a finite target, outer splits over those rows)."""
    y = np.asarray(target, np.float64)
    if y.shape != (n,):
        raise ValueError(f"target must have shape ({n},), one number per word, got {y.shape}")
    rows = np.flatnonzero(np.isfinite(y))
    if len(rows) < 10:
        raise ValueError(f"target has {len(rows)} finite values: too few words to align")
    g = None
    if target_groups is not None:
        g = np.asarray(target_groups)
        if g.shape != (n,):
            raise ValueError(f"target_groups must have shape ({n},), got {g.shape}")
        g = g[rows]
    if align_outer is None:
        cv = LeaveOneGroupOut() if g is not None else ContiguousKFold(5)
    else:
        cv = _splitter(align_outer, g, "align_outer")
    try:
        splits = check_cv(cv, len(rows), groups=g)
    except ValueError as err:
        raise ValueError(f"align_outer / target_groups: {err}") from err
    return rows, splits


_MODE_STYLE = {"all": dict(ls="--", marker="s", color="tab:red"),
               "fold": dict(ls=":", marker="^", color="tab:purple")}
_MODE_LABEL = {"all": "fitted on all words", "fold": "fitted in each training fold"}


def plot_removal_effects(table: pd.DataFrame, path=None, *, title=None, target_name="target"):
    """Figure of :func:`removal_effects`' table.

    Top: one panel per property, probe accuracy along the layers before
    removal (black) and after it (one line per removal mode; filled markers
    where the removal was successful: above chance before, below after),
    chance as a grey line. Bottom, when the table has alignment columns:
    held-out r with the target along the layers, of the original features
    and of each property's residual features (first removal mode), and the
    change (residual - original) per property x layer as a heat map, one per
    removal mode (one colour scale).

    Returns the matplotlib Figure (Agg canvas, no pyplot state); saved to
    ``path`` when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be the DataFrame of removal_effects, got {type(table).__name__}")
    need = set(COLUMNS) - set(table.columns)
    if need:
        raise ValueError(f"table lacks the columns {sorted(need)} of removal_effects")
    if table.empty:
        raise ValueError("table is empty: nothing to plot")
    props = list(dict.fromkeys(table["property"]))
    modes = list(dict.fromkeys(table["removal"]))
    has_align = set(ALIGNMENT_COLUMNS) <= set(table.columns)
    ncol = min(4, len(props))
    nrow = -(-len(props) // ncol)
    bottom_h = 3.4 if has_align else 0.0
    width = max(3.6 * ncol, 5.0 + 4.2 * len(modes) if has_align else 0.0)
    fig = Figure(figsize=(width, 2.8 * nrow + 1.0 + bottom_h), layout="constrained")
    FigureCanvasAgg(fig)
    if has_align:
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.8 * nrow + 1.0, bottom_h])
    else:
        top, bottom = fig, None
    axes = top.subplots(nrow, ncol, sharex=True, squeeze=False).ravel()
    for ax, prop in zip(axes, props):
        t = table[table["property"] == prop]
        first = t[t["removal"] == modes[0]]
        layers = first["layer"].to_numpy()
        ax.plot(layers, first["accuracy_before"], color="black", marker="o", ms=4, label="before removal")
        for mode in modes:
            tm = t[t["removal"] == mode]
            st = _MODE_STYLE.get(mode, dict(ls="--", marker="s", color="tab:blue"))
            ax.plot(tm["layer"], tm["accuracy_after"], ls=st["ls"], color=st["color"],
                    label=f"after, removal {_MODE_LABEL.get(mode, mode)}")
            ok = tm["removed"].to_numpy(bool)
            ax.scatter(tm["layer"], tm["accuracy_after"], marker=st["marker"], s=24, zorder=3,
                       facecolors=np.where(ok, st["color"], "white"), edgecolors=st["color"])
        chance = float(first["chance"].iloc[0])
        ax.axhline(chance, color="grey", lw=1.5, alpha=0.7, label="chance (majority class)")
        ax.set_title(f"{prop.replace('_', ' ')} ({int(first['n_classes'].iloc[0])} classes)",
                     fontsize=10)
        lo = min(chance, t["accuracy_after"].min(), t["accuracy_before"].min())
        hi = max(chance, t["accuracy_before"].max(), t["accuracy_after"].max())
        pad = 0.08 * (hi - lo) + 0.01
        ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
        ax.set_xticks(layers)
        ax.tick_params(labelsize=8, labelbottom=True)
    for ax in axes[len(props):]:
        ax.set_visible(False)
    for ax in axes[::ncol]:
        ax.set_ylabel("probe accuracy")
    for ax in axes[max(0, len(props) - ncol):len(props)]:
        ax.set_xlabel("layer")
    handles, labels = axes[0].get_legend_handles_labels()
    top.legend(handles, labels, loc="outside upper center", ncol=len(labels), fontsize=9,
               frameon=False,
               title="held-out probe accuracy; filled marker: removal successful "
                     "(above chance before, below chance after)", title_fontsize=9)
    if has_align:
        axs = bottom.subplots(1, 1 + len(modes), width_ratios=[1.0] + [1.1] * len(modes))
        ax1 = axs[0]
        ta = table[table["removal"] == modes[0]]
        base = ta[ta["property"] == props[0]]
        colors = _property_colors(len(props))
        ax1.plot(base["layer"], base["alignment_before"], color="black", lw=2.4, marker="o", ms=4,
                 label="original", zorder=3)
        for c, prop in zip(colors, props):
            tp = ta[ta["property"] == prop]
            ax1.plot(tp["layer"], tp["alignment_after"], color=c, lw=1.0, label=prop.replace("_", " "))
        ax1.set_xlabel("layer")
        ax1.set_ylabel("held-out r")
        ax1.set_xticks(base["layer"])
        ax1.tick_params(labelsize=8)
        ax1.set_title(f"{target_name} ({int(base['n_aligned'].iloc[0])} words): r of the "
                      f"original and\nresidual features (removal {_MODE_LABEL.get(modes[0], modes[0])})",
                      fontsize=9)
        ax1.grid(alpha=0.3)
        rs = np.concatenate([ta["alignment_before"].to_numpy(), ta["alignment_after"].to_numpy()])
        lo, hi = float(np.nanmin(rs)), float(np.nanmax(rs))
        span = (hi - lo) or 0.1
        rows = -(-(len(props) + 1) // 2)  # legend rows: room for them below the curves
        ax1.set_ylim(lo - span * (0.12 + 0.13 * rows), hi + 0.05 * span)
        ax1.legend(fontsize=7, ncol=2, loc="lower center")
        grids = [table[table["removal"] == m].pivot(index="property", columns="layer",
                                                     values="alignment_change").loc[props]
                 for m in modes]
        v = max(float(np.nanmax(np.abs(g.to_numpy()))) for g in grids) or 1.0
        for ax, mode, grid in zip(axs[1:], modes, grids):
            im = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
            ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=8)
            ax.set_yticks(range(grid.shape[0]), [p.replace("_", " ") for p in grid.index], fontsize=8)
            for (i, j), val in np.ndenumerate(grid.to_numpy()):
                ax.text(j, i, f"{val:+.3f}".replace("0.", "."), ha="center", va="center",
                        fontsize=6.5, color="white" if abs(val) > 0.6 * v else "black")
            ax.set_xlabel("layer")
            ax.set_title(f"change in r, residual - original\n(removal {_MODE_LABEL.get(mode, mode)})",
                         fontsize=9)
        bottom.colorbar(im, ax=list(axs[1:]), shrink=0.9, label="change in r")
    if title:
        fig.suptitle(title, fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _property_colors(k):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(k)]
