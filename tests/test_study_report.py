"""The figures of a study's results store (jaxalign.studies.report).

Stores are written through ResultsStore.write_unit with the runner's
conventions (per-subject fit units, group units with subject = "group",
a word-rate baseline and a random-vectors control, feature_set labels),
from seeded random data that goes negative; the PNGs are read back and the
choices a reader depends on (legend labels, a diverging map centred on 0,
the summary panels, the skips) are checked on the Figures.
"""

import logging
import re

import numpy as np
import pytest
from matplotlib.image import imread

from jaxalign.studies import ResultsStore
from jaxalign.studies.report import (
    MAX_HEATMAP_TARGETS,
    heatmap_colormap,
    make_report,
    report_figures,
)

BASELINE = ("word rate", "-", "baseline")
CONTROL = ("random vectors", "-", "control")


def _key(*parts):
    return re.sub(r"[^0-9A-Za-z_-]", "_", "-".join(map(str, parts)))


def write_study(root, *, revisions=("step1000", "main"), layers=(0, 1, 2), n_subjects=4, n_targets=6,
                group=True, reference=True, ceiling=True, model="SmolLM2", seed=0):
    """A results store as the runner writes it; returns the ResultsStore."""
    rng = np.random.default_rng(seed)
    store = ResultsStore(root)
    subjects = [f"s{i + 1:02d}" for i in range(n_subjects)]
    targets = [f"ROI{j + 1}" for j in range(n_targets)]
    sets = [(model, rev, "model") for rev in revisions] + ([BASELINE, CONTROL] if reference else [])
    for name, rev, kind in sets:
        unit_layers = list(layers) if kind == "model" else [0]
        lift = {"model": 0.12, "baseline": 0.05, "control": 0.0}[kind]
        # r rises along the layers for the models; noise makes some values negative
        mean = lift * (1 + np.arange(len(unit_layers)))[:, None] / len(unit_layers)
        scores = mean[None] + rng.normal(0, 0.08, (n_subjects, len(unit_layers), n_targets))
        for s, sid in enumerate(subjects):
            # the subject's own permutation p: small where r is clearly above 0
            p = np.where(scores[s] > 0.1, rng.uniform(0, 0.01, scores[s].shape),
                         rng.uniform(0.05, 1, scores[s].shape))
            arrays = {"score": scores[s][:, None, :], "p": p[:, None, :],
                      "p_fdr": np.minimum(1, 3 * p)[:, None, :]}
            labels = {"model": name, "revision": rev, "layer": unit_layers, "subject": [sid],
                      "target": targets, "feature_set": kind}
            assert store.write_unit(_key(name, rev, sid), arrays, labels)
        if not group:
            continue
        r = scores.mean(0)
        sem = scores.std(0, ddof=1) / np.sqrt(n_subjects)
        p_fdr = np.where(r > 0.08, 0.01, 0.4)
        arrays = {"score": r, "sem": sem, "p": p_fdr / 2, "p_fdr": p_fdr}
        dims = {}
        if kind == "model":
            arrays |= {"p_vs_baseline": p_fdr, "p_vs_baseline_fdr": p_fdr}
        if ceiling:
            arrays["ceiling"] = rng.uniform(0.3, 0.45, n_targets)
            dims["ceiling"] = ("target",)
        labels = {"model": name, "revision": rev, "layer": unit_layers, "subject": "group",
                  "target": targets, "feature_set": kind}
        assert store.write_unit(_key(name, rev, "group"), arrays, labels, dims=dims)
    return store


def _check_png(path):
    assert path.is_file() and path.stat().st_size > 10_000, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 400, img.shape
    pixels = img[..., :3].reshape(-1, 3)
    assert pixels.std(0).max() > 0.05  # not one colour
    assert len(np.unique(pixels[:: max(1, len(pixels) // 20000)], axis=0)) > 20
    return img


def test_full_study_figures(tmp_path):
    """2 revisions x 3 layers x 4 subjects x 6 targets, baseline, control, group rows, ceilings."""
    root = tmp_path / "study"
    write_study(root)
    paths = make_report(root)
    assert paths == [root / "figures" / "layers.png", root / "figures" / "heatmap.png"]
    for p in paths:
        _check_png(p)
    assert make_report(root) == paths  # a rerun replaces the figures in place (atomically)
    assert sorted(p.name for p in (root / "figures").iterdir()) == ["heatmap.png", "layers.png"]  # no .tmp

    figs = report_figures(root)
    layers = figs["layers"]
    legend = [t.get_text() for t in layers.legends[0].get_texts()]
    # checkpoints in order (main, the final weights, last); the references labelled by name
    assert legend == ["word rate baseline", "SmolLM2 (step1000)", "SmolLM2 (main)", "random vectors control",
                      "noise ceiling", "filled marker: FDR p < 0.05"]
    panels = [ax for ax in layers.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"ROI{j}" for j in range(1, 7)]
    assert "mean over 4 subjects" in layers._suptitle.get_text() and "SEM" in layers._suptitle.get_text()
    assert layers._supxlabel.get_text() == "layer (0 = embeddings)"
    assert layers._supylabel.get_text() == "held-out Pearson r"
    # the baseline is a dotted horizontal line in every panel, at its group mean
    dotted = [ln for ln in panels[0].get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 1 and np.ptp(dotted[0].get_ydata()) == 0

    heat = figs["heatmap"].axes[0]
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert rows[0] == "word rate baseline" and rows[-1] == "random vectors control"
    assert rows[1:4] == [f"SmolLM2 (step1000), layer {x}" for x in range(3)]
    assert "4 subjects" in heat.get_title() and "* = group test p < 0.05 after FDR" in heat.get_title()
    cells = [t.get_text() for t in heat.texts]
    assert len(cells) == 8 * 6 and any(c.endswith("*") for c in cells) and any(c.startswith("-") for c in cells)


def test_diverging_colour_map_when_values_go_negative(tmp_path):
    assert heatmap_colormap([0.1, -0.3, np.nan, 0.2]) == ("RdBu_r", -0.3, 0.3)
    assert heatmap_colormap([[0.1, 0.25], [np.nan, 0.0]]) == ("viridis", 0.0, 0.25)
    assert heatmap_colormap([np.nan]) == ("viridis", 0.0, 1.0)

    root = tmp_path / "study"
    write_study(root, revisions=("main",), n_subjects=3, n_targets=4)
    image = report_figures(root)["heatmap"].axes[0].images[0]
    values = image.get_array()
    assert values.min() < 0  # the fixture goes negative: the map must diverge about 0
    assert image.get_cmap().name.startswith("RdBu_r")
    assert image.norm.vmin == -image.norm.vmax == -np.abs(values).max()


def test_single_subject_without_group_rows(tmp_path):
    root = tmp_path / "one"
    write_study(root, revisions=("main",), layers=(0, 4, 8, 12), n_subjects=1, n_targets=3, group=False)
    out = tmp_path / "figs"
    paths = make_report(root, out=out, formats=("png", "svg"))
    assert [p.name for p in paths] == ["layers.png", "layers.svg", "heatmap.png", "heatmap.svg"]
    assert all(p.parent == out for p in paths) and not (root / "figures").exists()
    _check_png(out / "layers.png")
    _check_png(out / "heatmap.png")

    figs = report_figures(root)
    legend = [t.get_text() for t in figs["layers"].legends[0].get_texts()]
    assert legend == ["word rate baseline", "SmolLM2", "random vectors control", "filled marker: FDR p < 0.05"]
    assert "subject s01" in figs["layers"]._suptitle.get_text()
    assert "SEM" not in figs["layers"]._suptitle.get_text()  # one subject: no error band
    title = figs["heatmap"].axes[0].get_title()
    assert "subject s01" in title and "the subject's p < 0.05 after FDR" in title
    # stars come from the fit units' p_fdr
    from jaxalign.studies import load_results

    t = load_results(root).table
    n_sig = int((t["p_fdr"] < 0.05).sum())
    assert n_sig > 0
    assert sum(c.endswith("*") for c in (x.get_text() for x in figs["heatmap"].axes[0].texts)) == n_sig


def test_several_subjects_without_group_rows(tmp_path):
    """Mean +/- SEM over the subjects' rows, and no stars: no group test is in the store."""
    root = tmp_path / "nogroup"
    write_study(root, revisions=("main", "step1000", "step900"), n_subjects=3, n_targets=2, group=False,
                reference=False)
    figs = report_figures(root)
    legend = [t.get_text() for t in figs["layers"].legends[0].get_texts()]
    assert legend == ["SmolLM2 (step900)", "SmolLM2 (step1000)", "SmolLM2 (main)"]  # steps as numbers
    assert "mean over 3 subjects, band = \u00b11 SEM" in figs["layers"]._suptitle.get_text()
    heat = figs["heatmap"].axes[0]
    assert "no group test in the store, so no *" in heat.get_title()
    assert heat.texts and not any("*" in t.get_text() for t in heat.texts)
    from jaxalign.studies import load_results

    t = load_results(root).table
    want = t[(t.revision == "main") & (t.layer == 2) & (t.target == "ROI1")]["score"]
    assert len(want) == 3
    assert heat.images[0].get_array()[2 * 3 + 2, 0] == pytest.approx(want.mean())  # main is the last line


def test_many_targets_summary_panels_and_no_heatmap(tmp_path, caplog):
    root = tmp_path / "wide"
    write_study(root, revisions=("main",), n_subjects=3, n_targets=60, ceiling=False)
    with caplog.at_level(logging.INFO, logger="jaxalign.studies.report"):
        paths = make_report(root)
    assert [p.name for p in paths] == ["layers.png"]
    _check_png(paths[0])
    assert any("heat map skipped: 60 targets" in r.getMessage() for r in caplog.records)
    assert 60 > MAX_HEATMAP_TARGETS
    panels = [ax for ax in report_figures(root)["layers"].axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "mean over all 60 targets", "mean over the best 10% of targets"]
    assert "(6 of 60" in panels[1].get_title()


def test_empty_store_and_bad_format(tmp_path):
    root = tmp_path / "empty"
    ResultsStore(root)
    with pytest.raises(ValueError, match=r"empty.*no finished units"):
        make_report(root)
    assert not (root / "figures").exists()
    with pytest.raises(FileNotFoundError, match="not a jaxalign results store"):
        make_report(tmp_path / "nowhere")
    write_study(tmp_path / "s", revisions=("main",), n_subjects=2, n_targets=2, reference=False)
    with pytest.raises(ValueError, match="cannot write figures as \\['bmpx'\\]"):
        make_report(tmp_path / "s", formats=("png", "bmpx"))
    assert not (tmp_path / "s" / "figures").exists()


def test_meg_windows_are_skipped_not_faked(tmp_path, caplog):
    root = tmp_path / "meg"
    store = ResultsStore(root)
    rng = np.random.default_rng(1)
    labels = {"model": "SmolLM2", "revision": "main", "layer": [0, 1], "subject": ["s01"],
              "window": [0, 100, 200], "target": ["MEG0111", "MEG0112"], "feature_set": "model"}
    store.write_unit("meg-s01", {"score": rng.normal(0, 0.1, (2, 1, 3, 2))}, labels)
    with caplog.at_level(logging.WARNING, logger="jaxalign.studies.report"):
        assert make_report(root) == []
    assert any("MEG" in r.getMessage() and "come later" in r.getMessage() for r in caplog.records)
    assert not (root / "figures").exists()
