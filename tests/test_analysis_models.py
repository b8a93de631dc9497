"""Model-level correlations (jaxalign.analysis.models) against scipy and statsmodels."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from jaxalign.analysis import models as M

multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests


def random_tables(seed=0, n_models=9, missing=True):
    rng = np.random.default_rng(seed)
    names = [f"model-{i}" for i in range(n_models)]
    log_params = rng.uniform(7.5, 10.5, n_models)
    scores = pd.DataFrame({
        "Pereira2018": 0.05 * log_params + rng.normal(0, 0.02, n_models),
        "Blank2014": rng.normal(0.15, 0.02, n_models),
        "Futrell2018": rng.normal(0.3, 0.05, n_models),
    }, index=names)
    props = pd.DataFrame({"log10_params": log_params, "MMLU": rng.uniform(0.25, 0.6, n_models)},
                         index=names).iloc[::-1]  # another order: matched by name
    if missing:
        scores.loc["model-2", "Futrell2018"] = np.nan
        props.loc["model-5", "MMLU"] = np.nan
    return scores, props


def test_matches_scipy_and_statsmodels():
    scores, props = random_tables()
    table = M.correlate_with_properties(scores, props)
    assert len(table) == 6
    assert list(zip(table["score"], table["property"]))[:2] == [("Pereira2018", "log10_params"),
                                                               ("Pereira2018", "MMLU")]
    for row in table.itertuples():
        a, b = scores[row.score], props.loc[scores.index, row.property]
        both = a.notna() & b.notna()
        ref = st.pearsonr(a[both], b[both])
        assert row.n == both.sum()
        assert row.r == pytest.approx(ref.statistic, abs=1e-6)
        assert row.p == pytest.approx(ref.pvalue, rel=1e-4, abs=1e-12)
    reject, p_adj, _, _ = multipletests(table["p"], alpha=0.05, method="fdr_bh")
    np.testing.assert_allclose(table["p_fdr"], p_adj, rtol=1e-12)
    np.testing.assert_array_equal(table["significant"], reject)
    assert table.loc[0, "significant"]  # the planted log-params effect survives
    assert table.attrs["fdr"] == {"method": "bh", "alpha": 0.05, "family": 6}

    by = M.correlate_with_properties(scores, props, fdr_method="by", alpha=0.1)
    np.testing.assert_allclose(by["p_fdr"], multipletests(table["p"], 0.1, method="fdr_by")[1], rtol=1e-12)


def test_matching_and_undefined_pairs():
    scores, props = random_tables(1, n_models=5, missing=False)
    scores.loc["extra"] = [0.1, 0.2, 0.3]
    props["constant"] = 1.0
    props.loc[["model-0", "model-1", "model-2"], "MMLU"] = np.nan  # only 2 models left for MMLU
    table = M.correlate_with_properties(scores, props)
    assert table.attrs["unmatched"] == ["extra"]
    assert table.attrs["models"] == [f"model-{i}" for i in range(5)]
    undefined = table[table["property"].isin(["constant", "MMLU"])]
    assert undefined[["r", "p", "p_fdr"]].isna().all().all() and not undefined["significant"].any()
    assert table.attrs["fdr"]["family"] == 3
    with pytest.raises(ValueError, match="duplicate"):
        M.correlate_with_properties(pd.concat([scores, scores]), props)
    with pytest.raises(TypeError, match="DataFrame"):
        M.correlate_with_properties(scores.to_numpy(), props)


def test_scatter_figure(tmp_path):
    from matplotlib.figure import Figure

    scores, props = random_tables(2)
    fig = M.plot_properties(scores, props, path=tmp_path / "models.png")
    assert isinstance(fig, Figure) and (tmp_path / "models.png").stat().st_size > 10_000
    axes = fig.axes
    assert len(axes) == 3 * 2
    # every panel labels each of its points with the model's name
    texts = [t.get_text() for t in axes[0].texts]
    assert sorted(texts) == sorted(scores.index)
    futrell_mmlu = [t.get_text() for t in axes[5].texts]
    assert "model-2" not in futrell_mmlu and "model-5" not in futrell_mmlu and len(futrell_mmlu) == 7
    assert axes[0].get_title().startswith("r = ")
