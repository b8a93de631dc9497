r"""Base vs fine-tuned alignment: did fine-tuning make a model predict the brain better, where and for which words?

The MEG study's comparison (METHODS.md sections 2 and 4; Zhou et al. 2024).
Two encoding models (the same ridge protocol on features of a base and of a
fine-tuned language model) give held-out predictions ``b`` and ``f`` of the
same recording ``y`` (words x windows x channels). Then:

1. Per target (channel, window), a paired permutation test of the
   difference of held-out correlations, the truth permuted across words,
   the SAME arrangement for both predictions. The study's statistic is
   ``r(y, f) - r(y, b)`` over all words
   (:func:`jaxalign.stats.paired_permutation_test`, ``folds=None``). For
   held-out predictions of ``nested_cv`` (fold models, each with its own
   penalties) pass ``folds=res.outer_splits``: the statistic becomes the
   mean over outer folds of the within-fold difference of r, permuted
   within folds (:func:`jaxalign.stats.fold_paired_permutation_test`),
   because the difference over all words moves with the two models'
   per-fold penalties and its permutation null is then far too narrow
   (27% of targets at p < 0.05 between two equally good models, measured;
   the reasons in ``jaxalign/stats/_folds.py``). ``K`` draws,
   ``p = (#{null >= d} + 1) / (K + 1)`` for "better"; "worse" uses
   ``(#{null <= d} + 1) / (K + 1)`` on the same arrangements (the
   study's ``1 - p`` can be 0 and is not a valid p). Each direction is
   Benjamini-Hochberg corrected over all channels x windows
   (:func:`jaxalign.stats.fdr_correction`, level ``alpha``, 0.05); a
   target is "unchanged" when neither rejects.
2. Per window, the percentage of targets better / worse / unchanged
   (:meth:`ModelComparison.percentages`, the study's Figure 5).
3. Word categories (:func:`category_improvement`): the per-word squared
   error of each model, averaged over the window's channels (a boolean
   mask; :func:`jaxalign.analysis.divergence.word_errors`, the one home of
   the per-word error), its improvement ``e_base - e_ft`` per word and
   window, and per window the one-sided two-sample t-test "improvement of
   category words > improvement of the other words" (Welch by default,
   Student with ``equal_var=True``; :func:`jaxalign.stats.welch_ttest`),
   BH-FDR over the windows (the study's Figure 6 stars).

Layout: predictions come from :func:`jaxalign.ridge.nested_cv` as
``(n_words, n_windows * n_channels)`` in the window-major order of
:func:`jaxalign.timing.windows_to_targets` (column ``k * n_channels + c``);
pass ``n_windows`` with them, or arrays already ``(n_words, n_windows,
n_channels)`` (:func:`jaxalign.timing.targets_to_windows`). fMRI or any
other targets: 2-D arrays without ``n_windows`` are one window.

Words are treated as exchangeable within folds (the study's null); for
recordings where consecutive words share slow drifts use
``scheme="block"``. ``tests/test_analysis_compare.py`` checks the false
discoveries on simulated MEG where both feature sets are equally good in
expectation, and that a planted improvement is found where it was planted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from jaxalign._core.validation import check_finite, check_int
from jaxalign.analysis.divergence import word_errors
from jaxalign.stats import (
    fdr_correction,
    fold_paired_permutation_test,
    folds_from_splits,
    paired_permutation_test,
    sign_flip_test,
    student_ttest,
    welch_ttest,
)

__all__ = [
    "CategoryImprovement",
    "ModelComparison",
    "category_improvement",
    "compare_predictions",
    "listener_change",
    "plot_listener_change",
    "plot_category_improvement",
    "plot_comparison",
    "plot_difference_topomaps",
]


def _as_windows(a, name: str, n_windows):
    """``(n, T)`` (+ ``n_windows``, window-major) or ``(n, W, C)`` -> float ``(n, W, C)``."""
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3:
        if n_windows is not None and arr.shape[1] != n_windows:
            raise ValueError(f"{name} has {arr.shape[1]} windows (axis 1 of (words, windows, channels)) but "
                             f"n_windows={n_windows}")
        out = arr
    elif arr.ndim == 2:
        W = 1 if n_windows is None else n_windows
        if arr.shape[1] % W:
            raise ValueError(f"{name} has {arr.shape[1]} targets, not a multiple of n_windows={W} (columns must be "
                             "window-major: jaxalign.timing.windows_to_targets)")
        out = arr.reshape(arr.shape[0], W, arr.shape[1] // W)
    else:
        raise ValueError(f"{name} must be (n_words, n_targets) or (n_words, n_windows, n_channels), got shape "
                         f"{arr.shape}")
    if out.dtype.kind != "f":
        out = out.astype(np.float64)
    check_finite(out, name)
    return out


def _three(y, pred_base, pred_ft, n_windows):
    if n_windows is not None:
        n_windows = check_int(n_windows, "n_windows", 1)
    y3 = _as_windows(y, "y", n_windows)
    b3 = _as_windows(pred_base, "pred_base", n_windows if n_windows is not None else (
        y3.shape[1] if np.ndim(pred_base) == 3 else None))
    f3 = _as_windows(pred_ft, "pred_ft", n_windows if n_windows is not None else (
        y3.shape[1] if np.ndim(pred_ft) == 3 else None))
    if np.ndim(y) == 2 and n_windows is None and (np.ndim(pred_base) == 3 or np.ndim(pred_ft) == 3):
        raise ValueError("y is 2-D and a prediction 3-D: pass n_windows (or all three in one layout)")
    for name, a in (("pred_base", b3), ("pred_ft", f3)):
        if a.shape != y3.shape:
            raise ValueError(f"{name} of shape {a.shape} (words, windows, channels) does not match y's {y3.shape}")
    if y3.shape[0] < 3:
        raise ValueError(f"need at least 3 words, got {y3.shape[0]}")
    return y3, b3, f3


@dataclass
class ModelComparison:
    """Result of :func:`compare_predictions`; per-target arrays are ``(n_windows, n_channels)``.

    Attributes
    ----------
    r_base, r_ft : held-out Pearson r of each model (the mean of the within-fold r with ``folds``)
    difference : ``r_ft - r_base`` (the statistic)
    p_better, p_worse : permutation p of "fine-tuned better" / "worse" (NaN: a constant target)
    p_fdr_better, p_fdr_worse : BH (or BY) adjusted over all targets x windows
    better, worse : rejections at ``alpha``
    n_words, n_permutations, alpha, fdr, scheme, block_size, seed, tail, n_folds : how it was computed
        (``n_folds`` None: the difference of r over all words)
    """

    r_base: np.ndarray
    r_ft: np.ndarray
    difference: np.ndarray
    p_better: np.ndarray
    p_worse: np.ndarray
    p_fdr_better: np.ndarray
    p_fdr_worse: np.ndarray
    better: np.ndarray
    worse: np.ndarray
    n_words: int
    n_permutations: int
    alpha: float
    fdr: str
    scheme: str
    block_size: int | None
    seed: int
    tail: str | None
    n_folds: int | None = None
    window_width: float | None = None
    channel_names: list | None = field(default=None, repr=False)

    @property
    def n_windows(self) -> int:
        return int(self.difference.shape[0])

    @property
    def unchanged(self) -> np.ndarray:
        """Tested targets neither better nor worse."""
        return np.isfinite(self.p_better) & ~self.better & ~self.worse

    def percentages(self) -> pd.DataFrame:
        """One row per window: targets tested and % better / worse / unchanged (of those tested),
        with the window's start and end (ms) when ``window_width`` is known."""
        tested = np.isfinite(self.p_better)
        n = tested.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = lambda m: np.where(n > 0, 100.0 * (m & tested).sum(axis=1) / n, np.nan)  # noqa: E731
            table = pd.DataFrame({"window": np.arange(self.n_windows), "n_targets": n,
                                  "better": pct(self.better), "worse": pct(self.worse),
                                  "unchanged": pct(self.unchanged),
                                  "mean_difference": np.nanmean(np.where(tested, self.difference, np.nan), axis=1)
                                  if tested.any() else np.full(self.n_windows, np.nan)})
        if self.window_width is not None:
            table.insert(1, "start_ms", 1000.0 * self.window_width * table["window"])
            table.insert(2, "end_ms", table["start_ms"] + 1000.0 * self.window_width)
        return table

    def to_frame(self) -> pd.DataFrame:
        """One row per (window, channel): r of both models, difference, p, adjusted p, verdict."""
        W, C = self.difference.shape
        verdict = np.where(self.better, "better", np.where(self.worse, "worse", "unchanged")).astype(object)
        verdict[~np.isfinite(self.p_better)] = "untested"
        return pd.DataFrame({
            "window": np.repeat(np.arange(W), C),
            "channel": np.tile(self.channel_names if self.channel_names is not None else np.arange(C), W),
            "r_base": self.r_base.ravel(), "r_ft": self.r_ft.ravel(), "difference": self.difference.ravel(),
            "p_better": self.p_better.ravel(), "p_worse": self.p_worse.ravel(),
            "p_fdr_better": self.p_fdr_better.ravel(), "p_fdr_worse": self.p_fdr_worse.ravel(),
            "verdict": verdict.ravel()})


_FOLDS_REQUIRED = object()


def compare_predictions(y, pred_base, pred_ft, *, folds=_FOLDS_REQUIRED, n_windows: int | None = None,
                        n_permutations: int = 1000,
                        alpha: float = 0.05, fdr: str = "bh", scheme: str | None = None,
                        block_size: int | None = None, seed: int = 0, tail: str | None = None,
                        window_width: float | None = None, channel_names=None,
                        memory_budget=None) -> ModelComparison:
    """Per target, is the fine-tuned model's held-out r higher (or lower) than the base model's? (module doc)

    Parameters
    ----------
    y, pred_base, pred_ft : (n_words, n_windows * n_channels) with ``n_windows`` (window-major, as
        ``jaxalign.timing.windows_to_targets`` and ``ridge.nested_cv`` give them), or
        (n_words, n_windows, n_channels). Any finite scale (tesla or z-scores).
    folds : the outer CV both models were evaluated with (``NestedCVResult.outer_splits``, or a fold
        id per word), or None. Required. With folds the statistic is the mean over folds of the
        within-fold difference of r, permuted within folds
        (:func:`jaxalign.stats.fold_paired_permutation_test`): valid for held-out predictions of
        fold models that chose their penalties per fold. ``None``: the study's difference of r over
        all words, permuted across all words (:func:`jaxalign.stats.paired_permutation_test`); valid
        only for predictions of one fixed model per side (or one fixed penalty): with per-fold
        penalties it finds differences between equally good models (27% of targets at p < 0.05
        measured; ``jaxalign/stats/_folds.py``).
    n_permutations : K draws of the null (the study: 1,000 to 10,000). With few draws and many
        targets the floor ``1 / (K + 1)`` can hide every FDR discovery (``stats`` warns);
        ``tail="normal"`` reads p beyond the floor from each null's Gaussian tail.
    alpha, fdr : FDR level and method ("bh", "by") over all targets x windows, per direction.
    scheme, block_size : the permutation scheme (default: words permuted one by one).
    seed : the same arrangements for both directions and both models.
    window_width : seconds per window (labels of ``percentages`` and the figures).
    channel_names : labels of the channel axis (``to_frame``, topomaps).
    memory_budget : forwarded to the permutation engine.

    Returns
    -------
    ModelComparison
    """
    if folds is _FOLDS_REQUIRED:
        raise TypeError("compare_predictions needs folds=: the outer CV splits of the two models "
                        "(NestedCVResult.outer_splits), or folds=None for predictions of fixed models "
                        "(see the docstring: the difference of r over all words is not valid with per-fold penalties)")
    y3, b3, f3 = _three(y, pred_base, pred_ft, n_windows)
    n, W, C = y3.shape
    if channel_names is not None:
        channel_names = [str(c) for c in channel_names]
        if len(channel_names) != C:
            raise ValueError(f"channel_names has {len(channel_names)} names for {C} channels")
    # (W, n, C): windows as a leading batch axis of the permutation engine (same arrangements for all)
    yt, bt, ft = (np.moveaxis(a, 1, 0) for a in (y3, b3, f3))
    common = dict(n_permutations=n_permutations, block_size=block_size, scheme=scheme, seed=seed, tail=tail,
                  memory_budget=memory_budget)
    if folds is None:
        up = paired_permutation_test(yt, ft, bt, alternative="greater", **common)
        down = paired_permutation_test(yt, ft, bt, alternative="less", **common)
    else:
        up = fold_paired_permutation_test(yt, ft, bt, folds, alternative="greater", **common)
        down = fold_paired_permutation_test(yt, ft, bt, folds, alternative="less", **common)
    better, p_fdr_better = fdr_correction(up.p, alpha=alpha, method=fdr)
    worse, p_fdr_worse = fdr_correction(down.p, alpha=alpha, method=fdr)
    return ModelComparison(
        r_base=np.asarray(up.r_b, np.float64), r_ft=np.asarray(up.r_a, np.float64),
        difference=np.asarray(up.statistic, np.float64), p_better=up.p, p_worse=down.p,
        p_fdr_better=p_fdr_better, p_fdr_worse=p_fdr_worse, better=better, worse=worse, n_words=n,
        n_permutations=up.n_permutations, alpha=float(alpha), fdr=fdr, scheme=up.scheme,
        block_size=up.block_size, seed=up.seed, tail=tail,
        n_folds=None if folds is None else int(folds_from_splits(folds, n).max()) + 1,
        window_width=None if window_width is None else float(window_width), channel_names=channel_names)


@dataclass
class CategoryImprovement:
    """Result of :func:`category_improvement`.

    Attributes
    ----------
    improvement : (n_words, n_windows) per-word error of the base minus the fine-tuned model
        (positive: fine-tuning helped that word); NaN in windows without a channel
    in_category : (n_words,) bool
    table : one row per window: n_category, n_other, mean and standard error of the improvement in each
        group, t, one-sided p, BH-adjusted p over windows, significant
    """

    improvement: np.ndarray
    in_category: np.ndarray
    table: pd.DataFrame
    equal_var: bool
    alpha: float
    fdr: str
    window_width: float | None = None


def _channel_mask(channels, W, C):
    if channels is None:
        return np.ones((W, C), bool)
    m = np.asarray(channels)
    if m.dtype != bool:
        raise TypeError(f"channels must be a boolean mask, got dtype {m.dtype} (an integer array would index "
                        "channels by number)")
    if m.shape == (C,):
        m = np.broadcast_to(m, (W, C))
    if m.shape != (W, C):
        raise ValueError(f"channels must have shape ({W}, {C}) or ({C},), got {m.shape}")
    return m


def category_improvement(y, pred_base, pred_ft, in_category, *, n_windows: int | None = None, channels=None,
                         equal_var: bool = False, alpha: float = 0.05, fdr: str = "bh",
                         window_width: float | None = None) -> CategoryImprovement:
    """Does fine-tuning reduce the error more for category words (social, physical) than for the rest? (module doc)

    Parameters
    ----------
    y, pred_base, pred_ft : as in :func:`compare_predictions`, in the SAME units (the targets the
        models were fitted to).
    in_category : (n_words,) bool, True for the category's words (at least 2 of each kind for Welch).
    channels : boolean mask (n_windows, n_channels) or (n_channels,) of the channels the per-word error
        averages over (e.g. those the base model predicts significantly:
        ``divergence.significant_channels``); default all. Windows without a channel get NaN.
    equal_var : Student's t-test instead of Welch's.
    alpha, fdr : FDR over the windows' p-values.

    Returns
    -------
    CategoryImprovement
    """
    y3, b3, f3 = _three(y, pred_base, pred_ft, n_windows)
    n, W, C = y3.shape
    cat = np.asarray(in_category)
    if cat.dtype != bool:
        raise TypeError(f"in_category must be a boolean array (one per word), got dtype {cat.dtype}")
    if cat.shape != (n,):
        raise ValueError(f"in_category must have shape ({n},) (one per word), got {cat.shape}")
    need = 1 if equal_var else 2
    if cat.sum() < need or (~cat).sum() < need or n < 3:
        raise ValueError(f"in_category must mark at least {need} category word(s) and {need} other word(s), "
                         f"got {int(cat.sum())} and {int((~cat).sum())}")
    mask = _channel_mask(channels, W, C)
    improvement = np.full((n, W), np.nan)
    for k in np.flatnonzero(mask.any(axis=1)):
        e_base = word_errors(y3, b3, mask, windows=[k])
        e_ft = word_errors(y3, f3, mask, windows=[k])
        improvement[:, k] = e_base - e_ft
    test = student_ttest if equal_var else welch_ttest
    rows = []
    for k in range(W):
        a, b = improvement[cat, k], improvement[~cat, k]
        if np.isnan(a).all():
            t = p = np.nan
        else:
            t, p = test(a, b, alternative="greater")
        rows.append({"window": k, "n_category": int(cat.sum()), "n_other": int((~cat).sum()),
                     "mean_category": a.mean(), "se_category": a.std(ddof=1) / np.sqrt(a.size),
                     "mean_other": b.mean(), "se_other": b.std(ddof=1) / np.sqrt(b.size),
                     "t": float(t), "p": float(p)})
    table = pd.DataFrame(rows)
    reject, p_adj = fdr_correction(table["p"].to_numpy(), alpha=alpha, method=fdr)
    table["p_fdr"] = p_adj
    table["significant"] = reject
    if window_width is not None:
        table.insert(1, "start_ms", 1000.0 * window_width * table["window"])
    return CategoryImprovement(improvement=improvement, in_category=cat, table=table, equal_var=bool(equal_var),
                               alpha=float(alpha), fdr=fdr,
                               window_width=None if window_width is None else float(window_width))


# --- figures ----------------------------------------------------------------------------------------------


def _figure(nrows, ncols, size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _window_axis(n_windows, width):
    if width is None:
        return np.arange(n_windows), "window", 0.8
    return 1000.0 * width * (np.arange(n_windows) + 0.5), "time after word onset (ms, window centre)", 800.0 * width


def plot_comparison(comparison: ModelComparison, *, path=None, label: str = "fine-tuned", ax=None,
                    dpi: int = 120):
    """% of targets better (up, green) and worse (down, red) than the base model per window, the mean
    difference of r on a second axis (the study's Figure 5). Saved to ``path``; returns the Figure."""
    t = comparison.percentages()
    if ax is None:
        fig, axes = _figure(1, 1, (7.5, 3.8))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    x, xlabel, w = _window_axis(comparison.n_windows, comparison.window_width)
    ax.bar(x, t["better"], width=w, color="tab:green", label=f"{label} better")
    ax.bar(x, -t["worse"], width=w, color="tab:red", label=f"{label} worse")
    ax.axhline(0, color="k", lw=0.8)
    top = max(5.0, float(np.nanmax(np.r_[t["better"], t["worse"]])) * 1.15)
    ax.set_ylim(-top, top)
    ax.set_yticks(ax.get_yticks(), [f"{abs(v):g}" for v in ax.get_yticks()])
    ax.set_ylim(-top, top)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"% of targets (FDR {comparison.fdr.upper()} {comparison.alpha:g})")
    ax.set_title(f"{label} vs base: paired permutation test of r, {comparison.n_words} words, "
                 f"K = {comparison.n_permutations}", fontsize=10)
    ax2 = ax.twinx()
    ax2.plot(x, t["mean_difference"], color="k", marker="o", ms=3, lw=1, label="mean r difference")
    span = np.nanmax(np.abs(t["mean_difference"].to_numpy())) if np.isfinite(t["mean_difference"]).any() else 1.0
    span = span if span > 0 else 1.0
    ax2.set_ylim(-1.15 * span, 1.15 * span)
    ax2.set_ylabel("mean r(ft) - r(base)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _pairs_of_grads(info):
    """Indices of the first gradiometer of each pair and of its partner (same location)."""
    types = info.get_channel_types()
    grads = [i for i, t in enumerate(types) if t == "grad"]
    first, second, used = [], [], set()
    for i in grads:
        if i in used:
            continue
        loc = info["chs"][i]["loc"][:3]
        partner = [j for j in grads if j != i and j not in used and np.allclose(info["chs"][j]["loc"][:3], loc)]
        if not partner:
            raise ValueError(f"gradiometer {info.ch_names[i]} has no partner at its location")
        first.append(i)
        second.append(partner[0])
        used.update((i, partner[0]))
    return np.asarray(first), np.asarray(second)


def plot_difference_topomaps(comparison: ModelComparison, info, windows, *, ch_type: str | None = None,
                             path=None, dpi: int = 120, vlim=None):
    """Sensor topomaps (``mne.viz.plot_topomap``) of ``r_ft - r_base`` at the chosen windows; targets
    better or worse (FDR) marked with white circles (red: better, blue: worse).

    ``info``: an ``mne.Info`` of the compared channels, in their order (``Recording.channel_info``,
    ``SimulatedMEG.info``). ``ch_type``: "mag", "grad" (each planar pair's mean difference at the pair's
    location; marked when either is) or "eeg"; default the first MEG/EEG type of ``info``. One colour
    scale for all maps (symmetric; ``vlim=(lo, hi)`` overrides). Returns the Figure.
    """
    import mne

    if not isinstance(info, mne.Info):
        raise TypeError(f"info must be an mne.Info, got {type(info).__name__}")
    W, C = comparison.difference.shape
    if len(info.ch_names) != C:
        raise ValueError(f"info has {len(info.ch_names)} channels but the comparison has {C}")
    ws = [int(k) for k in np.atleast_1d(windows)]
    if not ws or min(ws) < 0 or max(ws) >= W:
        raise ValueError(f"windows must be indices in 0..{W - 1}, got {windows!r}")
    types = info.get_channel_types()
    if ch_type is None:
        ch_type = next((t for t in ("mag", "grad", "eeg") if t in types), None)
    if ch_type not in types:
        raise ValueError(f"ch_type={ch_type!r}: info has no such channel (it has {sorted(set(types))})")
    if ch_type == "grad":
        first, second = _pairs_of_grads(info)
        pick = first
        reduce = lambda a: 0.5 * (a[..., first] + a[..., second])  # noqa: E731
        mark = lambda m: m[..., first] | m[..., second]  # noqa: E731
    else:
        pick = np.array([i for i, t in enumerate(types) if t == ch_type])
        reduce = lambda a: a[..., pick]  # noqa: E731
        mark = reduce
    sub = mne.pick_info(info, pick)
    if ch_type == "grad":
        # one sensor per planar pair, drawn as a point sensor at the pair's location: MNE would merge
        # pairs by RMS, which loses the sign of a difference
        for ch in sub["chs"]:
            ch["coil_type"] = mne.io.constants.FIFF.FIFFV_COIL_POINT_MAGNETOMETER
            ch["unit"] = mne.io.constants.FIFF.FIFF_UNIT_T
    diff = reduce(comparison.difference)
    better, worse = mark(comparison.better), mark(comparison.worse)
    if vlim is None:
        m = float(np.nanmax(np.abs(diff[ws]))) or 1.0
        vlim = (-m, m)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.4 * len(ws) + 1.0, 2.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(ws) + 1, squeeze=False, gridspec_kw={"width_ratios": [1] * len(ws) + [0.07]})
    fig.subplots_adjust(left=0.02, right=0.88, wspace=0.08, bottom=0.05, top=0.8)
    im = None
    for ax, k in zip(axes[0, :-1], ws):
        im, _ = mne.viz.plot_topomap(diff[k], sub, axes=ax, show=False, cmap="RdBu_r", vlim=vlim,
                                     mask=better[k] | worse[k], contours=0, sensors=True,
                                     mask_params=dict(marker="o", markerfacecolor="w", markeredgecolor="k",
                                                      linewidth=0, markersize=5))
        if comparison.window_width is not None:
            lo = 1000 * comparison.window_width * k
            title = f"{lo:g}-{lo + 1000 * comparison.window_width:g} ms"
        else:
            title = f"window {k}"
        ax.set_title(f"{title}\n{int(better[k].sum())} better, {int(worse[k].sum())} worse", fontsize=8)
    cax = axes[0, -1]
    fig.colorbar(im, cax=cax, label="r(ft) - r(base)")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def plot_category_improvement(result: CategoryImprovement, *, path=None, label: str = "category",
                              dpi: int = 120):
    """Mean per-word error improvement (base - fine-tuned) per window for the category's words and the
    rest, +-1 standard error shaded, stars where the one-sided test survives FDR (the study's Figure 6).
    Returns the Figure."""
    t = result.table
    fig, axes = _figure(1, 1, (7.0, 3.6))
    ax = axes[0, 0]
    x, xlabel, _ = _window_axis(len(t), result.window_width)
    for name, color, text in (("category", "tab:purple", f"{label} words"), ("other", "tab:gray", "other words")):
        m, s = t[f"mean_{name}"].to_numpy(), t[f"se_{name}"].to_numpy()
        ax.plot(x, m, color=color, marker="o", ms=3, label=f"{text} (n = {int(t[f'n_{name}'].iloc[0])})")
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.25, lw=0)
    ax.axhline(0, color="k", lw=0.8)
    top = np.nanmax(np.r_[t["mean_category"] + t["se_category"], t["mean_other"] + t["se_other"]])
    for xi, sig in zip(x, t["significant"]):
        if sig:
            ax.text(xi, top, "*", ha="center", va="bottom", fontsize=12, color="tab:purple")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("error improvement (base - ft)")
    test = "Student" if result.equal_var else "Welch"
    ax.set_title(f"per-word error improvement; * one-sided {test} t, FDR {result.fdr.upper()} <= {result.alpha:g}",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# --------------------------------------------------------- over listeners


def listener_change(table, base: str, tuned: str, *, by=("layer", "target"), unit: str = "subject",
                    model: str = "model", score: str = "score", n_permutations: int = 10000,
                    alternative: str = "two-sided", fdr: str = "bh", alpha: float = 0.05,
                    seed: int = 0) -> pd.DataFrame:
    """Did fine-tuning change alignment? Per layer and target (ROI), the paired test over listeners.

    For every combination of ``by`` (default layer x target), the per-listener
    differences ``score(tuned) - score(base)`` (each listener's held-out r of
    both models, fitted by the same protocol on the same recording: the
    study runner's per-subject rows) are tested with a sign-flip permutation
    test of their mean (:func:`jaxalign.stats.sign_flip_test`; all ``2**n``
    sign patterns when that is at most ``n_permutations``, so exact for up to
    13 listeners at the default), ``alternative`` "two-sided" by default
    (whichever way it went), then Benjamini-Hochberg (or BY) over all rows.

    Parameters
    ----------
    table : DataFrame with columns ``model``, ``unit``, ``score`` and ``by``
        (e.g. ``jaxalign.studies.load_results(store).table``; its group rows,
        ``subject == "group"``, are ignored)
    base, tuned : the two values of ``model`` to compare
    by : columns that define one test (every listener must have both models
        in each)
    n_permutations, alternative, seed : of the sign-flip test
    fdr, alpha : ``"bh"`` | ``"by"`` and the level over all rows

    Returns
    -------
    DataFrame, one row per ``by`` combination: ``n_listeners``, ``base_mean``,
    ``tuned_mean``, ``change`` (mean difference), ``sem`` (its standard
    error), ``n_better`` (listeners with a positive difference), ``p``,
    ``p_fdr``, ``significant`` (``p_fdr <= alpha``) and ``direction``
    ("better" / "worse" / "unchanged"). ``attrs`` hold the settings.

    Examples
    --------
    >>> rows = [dict(model=m, layer=1, target="LPTL", subject=s, score=r + (0.02 if m == "ft" else 0))
    ...         for s, r in enumerate([0.10, 0.12, 0.08, 0.11]) for m in ("base", "ft")]
    >>> t = listener_change(pd.DataFrame(rows), "base", "ft")
    >>> t[["n_listeners", "n_better", "p"]].to_dict("records")  # 4 listeners: 16 sign patterns
    [{'n_listeners': 4, 'n_better': 4, 'p': 0.125}]
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (model, unit, score, *by) if c not in table.columns]
    if missing:
        raise ValueError(f"table has no column(s) {missing} (columns: {list(table.columns)})")
    if base == tuned:
        raise ValueError(f"base and tuned are the same model {base!r}")
    t = table[table[unit].astype(str) != "group"]
    for name, m in (("base", base), ("tuned", tuned)):
        if not (t[model] == m).any():
            raise ValueError(f"{name}={m!r} is not a model of the table (models: {sorted(t[model].unique())})")
    t = t[t[model].isin([base, tuned])]
    if t.duplicated([model, unit, *by]).any():
        raise ValueError(f"table has several rows per ({model}, {unit}, {', '.join(by)}): select one revision "
                         "(or add its column to by)")
    wide = t.pivot_table(index=[*by, unit], columns=model, values=score, aggfunc="first")
    lacking = wide[wide[[base, tuned]].isna().any(axis=1)]
    if len(lacking):
        raise ValueError(f"{len(lacking)} ({', '.join(by)}, {unit}) rows have a score for only one model, e.g. "
                         f"{lacking.index[0]}: both models need every listener")
    diff = (wide[tuned] - wide[base]).unstack(unit)  # (tests, listeners)
    if diff.isna().any().any():
        raise ValueError(f"listeners differ between the ({', '.join(by)}) tests: every test needs the same "
                         f"{unit}s")
    if diff.shape[1] < 2:
        raise ValueError(f"a paired test over listeners needs at least 2 {unit}s, got {diff.shape[1]}")
    d = diff.to_numpy(np.float64).T  # (n, T)
    check_finite(d, "score")
    res = sign_flip_test(d, n_permutations=n_permutations, alternative=alternative, seed=seed)
    p = np.atleast_1d(res.p)
    _, p_fdr = fdr_correction(p, alpha=alpha, method=fdr)
    mean_b = wide[base].unstack(unit).mean(axis=1).to_numpy()
    mean_t = wide[tuned].unstack(unit).mean(axis=1).to_numpy()
    n = d.shape[0]
    out = pd.DataFrame({"n_listeners": n, "base_mean": mean_b, "tuned_mean": mean_t,
                        "change": d.mean(axis=0), "sem": d.std(axis=0, ddof=1) / np.sqrt(n),
                        "n_better": (d > 0).sum(axis=0), "p": p, "p_fdr": p_fdr}, index=diff.index)
    out["significant"] = out["p_fdr"] <= alpha
    out["direction"] = np.where(~out["significant"], "unchanged", np.where(out["change"] > 0, "better", "worse"))
    out = out.reset_index()
    out.attrs.update(base=base, tuned=tuned, n_permutations=int(res.n_permutations), exact=bool(res.exact),
                     alternative=alternative, fdr=fdr, alpha=alpha, seed=seed)
    return out


def plot_listener_change(result: pd.DataFrame, *, path=None, x: str = "layer", panel: str = "target",
                         dpi: int = 120):
    """Mean change of r (tuned - base) +- 1 s.e.m. over listeners against ``x`` (layers), one panel per
    ``panel`` value (ROI); filled markers where the FDR-corrected test rejects. Saved to ``path``."""
    for c in (x, panel, "change", "sem", "significant"):
        if c not in result.columns:
            raise ValueError(f"result has no column {c!r}: pass the DataFrame of listener_change")
    panels = list(dict.fromkeys(result[panel]))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = _figure(nrows, ncols, (4.0 * ncols, 3.0 * nrows))
    span = float(np.nanmax(np.abs(result["change"]) + result["sem"].fillna(0))) * 1.15 or 1.0
    for k, name in enumerate(panels):
        ax = axes[k // ncols, k % ncols]
        r = result[result[panel] == name].sort_values(x)
        ax.axhline(0, color="k", lw=0.8)
        ax.errorbar(r[x], r["change"], yerr=r["sem"], color="tab:blue", lw=1.2, capsize=2)
        sig = r["significant"].to_numpy(bool)
        ax.scatter(r[x][~sig], r["change"][~sig], facecolor="white", edgecolor="tab:blue", zorder=3, s=22,
                   label="not significant")
        ax.scatter(r[x][sig], r["change"][sig], color="tab:red", zorder=3, s=26,
                   label=f"FDR {result.attrs.get('fdr', 'bh').upper()} {result.attrs.get('alpha', 0.05):g}")
        ax.set_ylim(-span, span)
        ax.set_title(str(name), fontsize=10)
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel("mean r(tuned) - r(base)")
        if k // ncols == nrows - 1:
            ax.set_xlabel(x)
        if k == 0:
            ax.legend(fontsize=7, loc="lower left")
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    n = int(result["n_listeners"].iloc[0]) if "n_listeners" in result and len(result) else 0
    fig.suptitle(f"{result.attrs.get('tuned', 'tuned')} vs {result.attrs.get('base', 'base')}: "
                 f"sign-flip test over {n} listeners", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
