"""The divergence figure: sentences ranked by prediction error with the sets marked, validity per hypothesis."""

from __future__ import annotations

import textwrap

import numpy as np

__all__ = ["plot_divergence"]

_COLORS = {"divergent": "tab:red", "convergent": "tab:blue"}


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p <= 0.001 else "**" if p <= 0.01 else "*" if p <= 0.05 else ""


def plot_divergence(sets, validity=None, *, path=None, top: int = 15, dpi: int = 120):
    """Left: every ranked sentence's mean word error, highest first, divergent (red) and
    convergent (blue) sentences marked, small dots = research split, open circles = validation split.
    Right (with ``validity``): the ``top`` hypotheses by validity, bars with +-1 standard
    error, stars by FDR-adjusted p (* <= .05, ** <= .01, *** <= .001).

    ``sets``: :func:`divergence_sets`' result; ``validity``: :func:`hypothesis_validity`'s.
    Saved to ``path`` when given; returns the matplotlib Figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = sets.table[sets.table["eligible"]].sort_values("rank")
    panels = 1 if validity is None else 2
    fig = Figure(figsize=(6.0 * panels + (1.5 if panels == 2 else 0), 4.2))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, panels, gridspec_kw={"width_ratios": [1, 1.3][:panels]}))
    ax = axes[0]
    rank = t["rank"].astype(int).to_numpy()
    ax.plot(rank, t["score"].to_numpy(), color="0.6", lw=1, zorder=1, label="all ranked sentences")
    for group, color in _COLORS.items():
        for split, face in (("research", color), ("validation", "none")):
            m = (t["group"] == group) & (t["split"] == split)
            if m.any():
                big = split == "validation"
                ax.scatter(rank[m.to_numpy()], t.loc[m, "score"], s=55 if big else 12, facecolors=face,
                           edgecolors=color if big else "none", linewidths=1.3, zorder=3 if big else 2,
                           label=f"{group} ({split}, {int(m.sum())})")
    ax.set_yscale("log" if (t["score"] > 0).all() and t["score"].max() > 20 * t["score"].min() else "linear")
    ax.set_xlabel("sentence rank (1 = worst predicted)")
    ax.set_ylabel("mean per-word squared error")
    ax.set_title(f"{len(t)} sentences ranked; n = {sets.n} per group", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    if validity is not None:
        ax = axes[1]
        v = validity.ranked().head(top).iloc[::-1]
        y = np.arange(len(v))
        colors = ["tab:red" if s else "0.6" for s in v["significant"]]
        err = np.nan_to_num(v["se"].to_numpy(), nan=0.0)
        ax.barh(y, v["validity"], xerr=err, color=colors, ecolor="0.3", capsize=2)
        labels = [textwrap.shorten(h, 48, placeholder="...") for h in v["hypothesis"]]
        ax.set_yticks(y, labels, fontsize=7)
        span = np.nanmax(np.abs(v["validity"].to_numpy()) + err) if len(v) else 1.0
        for yi, (val, e, p) in enumerate(zip(v["validity"], err, v["p_fdr"])):
            s = _stars(p)
            if s:
                ax.text(val + np.sign(val or 1) * (e + 0.02 * span), yi, s, va="center",
                        ha="left" if val >= 0 else "right", fontsize=9, color="tab:red")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlim(-1.15 * span if (v["validity"] < 0).any() else -0.05 * span, 1.2 * span)
        scale = "P(yes)" if validity.scale == "probability" else "log-odds"
        ax.set_xlabel(f"validity: mean {scale} divergent - convergent")
        ax.set_title(f"hypotheses (red / stars: FDR {validity.fdr_method.upper()} <= {validity.alpha:g})", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
