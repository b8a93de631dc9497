"""Base vs fine-tuned alignment over listeners (jaxalign.analysis.compare.listener_change).

References: p-values by enumerating every sign pattern in numpy (two-sided) and
scipy.stats.permutation_test (one-sided, exact), Benjamini-Hochberg from
statsmodels' multipletests; fresh random per-listener scores at r scale and at
1e-6 scale.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from statsmodels.stats.multitest import multipletests

from jaxalign.analysis.compare import listener_change, plot_listener_change

LAYERS, ROIS = [0, 5, 10], ["LIFG", "LPTL"]


def _table(rng, n_subjects=8, scale=1.0, planted=None, shift=0.0):
    """Per-subject rows of two models (the runner's table layout) plus group rows to be ignored."""
    rows = []
    for layer, roi in itertools.product(LAYERS, ROIS):
        base = scale * (0.1 + 0.03 * rng.standard_normal(n_subjects))
        tuned = base + scale * 0.01 * rng.standard_normal(n_subjects)
        if planted == (layer, roi):
            tuned = tuned + scale * shift
        for s in range(n_subjects):
            rows += [dict(model="base", layer=layer, target=roi, subject=f"S{s:02d}", score=base[s]),
                     dict(model="tuned", layer=layer, target=roi, subject=f"S{s:02d}", score=tuned[s])]
        rows += [dict(model=m, layer=layer, target=roi, subject="group", score=9.0) for m in ("base", "tuned")]
    return pd.DataFrame(rows)


def _diffs(t, layer, roi):
    sel = t[(t.layer == layer) & (t.target == roi) & (t.subject != "group")]
    b = sel[sel.model == "base"].set_index("subject").score
    f = sel[sel.model == "tuned"].set_index("subject").score
    return (f - b.loc[f.index]).to_numpy()


@pytest.mark.parametrize("scale", [1.0, 1e-6])
def test_equals_exact_enumeration_and_statsmodels_fdr(scale):
    rng = np.random.default_rng(11)
    t = _table(rng, scale=scale)
    res = listener_change(t, "base", "tuned")
    assert list(zip(res.layer, res.target)) == list(itertools.product(LAYERS, ROIS))
    assert res.attrs["exact"] and res.attrs["n_permutations"] == 2 ** 8
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=8)))
    p_ref = []
    for layer, roi in itertools.product(LAYERS, ROIS):
        d = _diffs(t, layer, roi)
        null = signs @ d / len(d)
        p_ref.append(np.mean(np.abs(null) >= np.abs(d.mean()) * (1 - 1e-9)))
        row = res[(res.layer == layer) & (res.target == roi)].iloc[0]
        assert row.change == pytest.approx(d.mean(), rel=1e-12)
        assert row["sem"] == pytest.approx(d.std(ddof=1) / np.sqrt(8), rel=1e-12)
        assert row.n_better == (d > 0).sum() and row.n_listeners == 8
    np.testing.assert_allclose(res.p, p_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.p_fdr, multipletests(p_ref, method="fdr_bh")[1], rtol=1e-12)
    # one-sided, against scipy's exact paired permutation test
    one = listener_change(t, "base", "tuned", alternative="greater")
    for k, (layer, roi) in enumerate(itertools.product(LAYERS, ROIS)):
        d = _diffs(t, layer, roi)
        ref = st.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                                  n_resamples=np.inf)
        assert one.p[k] == pytest.approx(ref.pvalue, abs=1e-12)


def test_planted_change_found_where_planted_only():
    rng = np.random.default_rng(3)
    t = _table(rng, n_subjects=12, planted=(5, "LPTL"), shift=0.03)
    res = listener_change(t, "base", "tuned").set_index(["layer", "target"])
    assert res.loc[(5, "LPTL"), "direction"] == "better" and res.loc[(5, "LPTL"), "n_better"] == 12
    others = res.drop(index=(5, "LPTL"))
    assert (others.direction == "unchanged").all()
    worse = listener_change(t, "tuned", "base").set_index(["layer", "target"])  # the other way round
    assert worse.loc[(5, "LPTL"), "direction"] == "worse"
    fig = plot_listener_change(res.reset_index())
    assert len([a for a in fig.axes if a.get_visible()]) == len(ROIS)


def test_the_figure_is_written(tmp_path):
    res = listener_change(_table(np.random.default_rng(4), planted=(0, "LIFG"), shift=0.05), "base", "tuned")
    plot_listener_change(res, path=tmp_path / "change.png")
    assert (tmp_path / "change.png").stat().st_size > 10_000


def test_bad_input_is_named():
    t = _table(np.random.default_rng(5))
    with pytest.raises(ValueError, match="'other' is not a model"):
        listener_change(t, "base", "other")
    with pytest.raises(ValueError, match="same model"):
        listener_change(t, "base", "base")
    with pytest.raises(ValueError, match=r"no column\(s\) \['roi'\]"):
        listener_change(t, "base", "tuned", by=("layer", "roi"))
    with pytest.raises(ValueError, match="only one model"):
        listener_change(t.drop(index=t.index[(t.model == "tuned") & (t.subject == "S03")][:1]), "base", "tuned")
    with pytest.raises(ValueError, match="several rows"):
        listener_change(pd.concat([t, t.iloc[:1]]), "base", "tuned")
    with pytest.raises(ValueError, match="at least 2"):
        listener_change(t[t.subject.isin(["S00", "group"])], "base", "tuned")
    with pytest.raises(TypeError, match="DataFrame"):
        listener_change(t.to_dict(), "base", "tuned")
