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


# ------------------------------------------------------------------ MEG: channel x window

WINDOWS = [round(-0.1 + 0.1 * k, 6) for k in range(8)]  # starts in s, as the runner writes them


def write_meg_study(root, *, info_for=("s02",), subjects=("s01", "s02"), group=True, seed=2):
    """2 layers x 8 windows x 10 EEG channels (real 10-20 names); layer 1 is the best, r peaks at 300 ms.

    Returns (channel names, the group's (or the one subject's) r of layer 1 as (window, channel)).
    """
    import mne

    rng = np.random.default_rng(seed)
    montage = mne.channels.make_standard_montage("easycap-M1")
    names = montage.ch_names[:10]
    geometry = root / "geometry"
    geometry.mkdir(parents=True, exist_ok=True)
    info = mne.create_info(names, 100.0, ch_types="eeg").set_montage(montage)
    for s in info_for:
        mne.io.write_info(geometry / f"{s}-info.fif", info)
    store = ResultsStore(root / "store")
    bump = np.exp(-((np.asarray(WINDOWS) - 0.3) ** 2) / 0.01)[:, None] * np.linspace(0.05, 0.2, 10)[None]
    mean = np.stack([0.3 * bump, bump])  # (layer, window, channel)
    scores = mean[None] + rng.normal(0, 0.02, (len(subjects), 2, 8, 10))  # some values go negative
    for i, s in enumerate(subjects):
        labels = {"model": "SmolLM2", "revision": "main", "layer": [0, 1], "subject": [s], "window": WINDOWS,
                  "target": names, "feature_set": "model"}
        p_fdr = np.where(scores[i] > 0.1, 0.01, 0.6)
        assert store.write_unit(_key("meg", s), {"score": scores[i][:, None], "p_fdr": p_fdr[:, None]}, labels)
    r = scores.mean(0)
    if group:
        labels = {"model": "SmolLM2", "revision": "main", "layer": [0, 1], "subject": "group", "window": WINDOWS,
                  "target": names, "feature_set": "model"}
        arrays = {"score": r, "sem": scores.std(0, ddof=1) / np.sqrt(len(subjects)), "p": r,
                  "p_fdr": np.where(r > 0.1, 0.01, 0.6)}
        assert store.write_unit("meg-group", arrays, labels)
    return names, r[1]


def test_meg_windows_heat_map_and_topomaps(tmp_path):
    """A store with only windowed units gets meg_windows.png: the best layer's r and sensor topomaps."""
    root = tmp_path / "meg"
    names, best = write_meg_study(root)  # channel info for s02 only: the group line uses it
    paths = make_report(root / "store", out=root / "figures")
    assert paths == [root / "figures" / "meg_windows.png"]
    _check_png(paths[0])

    fig = report_figures(root / "store")["meg_windows"]
    heat, *rest = fig.axes
    assert heat.get_title(loc="left") == "SmolLM2: layer 1 (best of 2 by mean r)"
    # the heat map is the group's r of layer 1, channels down, windows across (in ms after word onset)
    np.testing.assert_allclose(heat.images[0].get_array(), best.T)
    assert [t.get_text() for t in heat.get_yticklabels()] == names
    assert [t.get_text() for t in heat.get_xticklabels()] == ["-100", "0", "100", "200", "300", "400", "500", "600"]
    assert heat.get_xlabel().startswith("window start (ms after word onset")
    assert heat.images[0].get_cmap().name.startswith("RdBu_r")  # values go negative: centred on 0
    # four topomaps at the windows with the largest mean r, in time order, then the colour bar
    topos, cbar = rest[:-1], rest[-1]
    assert len(topos) == 4 and all(ax.images for ax in topos)
    want = sorted(np.argsort(-best.mean(1), kind="stable")[:4])
    assert [ax.get_title() for ax in topos] == [f"{WINDOWS[w] * 1000:.0f} ms" for w in want]
    assert cbar.get_ylabel() == "held-out Pearson r"
    norm = heat.images[0].norm
    assert all((ax.images[0].norm.vmin, ax.images[0].norm.vmax) == (norm.vmin, norm.vmax) for ax in topos)
    assert "group test p < 0.05" in fig._suptitle.get_text()


def test_meg_windows_without_channel_info_heat_map_only(tmp_path, caplog):
    root = tmp_path / "meg"
    write_meg_study(root, info_for=(), subjects=("s01",), group=False)
    with caplog.at_level(logging.WARNING, logger="jaxalign.studies.report"):
        assert make_report(root / "store") == [root / "store" / "figures" / "meg_windows.png"]
    _check_png(root / "store" / "figures" / "meg_windows.png")
    fig = report_figures(root / "store")["meg_windows"]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "held-out Pearson r"  # heat map + colour bar
    assert "subject s01" in fig._suptitle.get_text() and "Heads" not in fig._suptitle.get_text()
    # a single subject's map takes only that subject's channel info, never another's
    write_meg_study(tmp_path / "other", info_for=("s02",), subjects=("s01",), group=False)
    assert len(report_figures(tmp_path / "other" / "store")["meg_windows"].axes) == 2
    assert not caplog.records


# ------------------------------------------------------------------ NIfTI voxel maps


def write_nifti_study(root, *, subjects=("s01", "s02"), seed=3):
    """A 6x5x4 mask with 30 voxels and a scaled, shifted affine; units over targets "0".."29".

    s02's unit lists its targets in a shuffled order (maps must follow the names, not the
    positions). Returns (mask, affine, {subject: (layer, voxel) r in C order}).
    """
    import gzip

    import nibabel as nib

    rng = np.random.default_rng(seed)
    mask = np.zeros((6, 5, 4), dtype=bool)
    mask.ravel()[rng.choice(mask.size, 30, replace=False)] = True
    affine = np.diag([2.5, 3.0, 3.5, 1.0])
    affine[:3, :3] += rng.normal(0, 0.2, (3, 3))
    affine[:3, 3] = rng.normal(0, 20, 3)
    (root / "geometry").mkdir(parents=True)
    store = ResultsStore(root / "store")
    scores = {}
    for k, s in enumerate(subjects):
        img = nib.Nifti1Image(mask.astype(np.uint8), affine)
        (root / "geometry" / f"{s}_mask.nii.gz").write_bytes(gzip.compress(img.to_bytes()))
        r = rng.normal(0.05, 0.1, (2, 30))
        scores[s] = r
        order = rng.permutation(30) if k == 1 else np.arange(30)
        labels = {"model": "org/LM-1", "revision": "step100", "layer": [0, 3], "subject": [s],
                  "target": [str(i) for i in order], "feature_set": "model"}
        arrays = {"score": r[:, None, order], "p_fdr": np.clip(1 - 5 * r, 0, 1)[:, None, order]}
        assert store.write_unit(_key("fmri", s), arrays, labels)
    return mask, affine, scores


def _maps(root, caplog, formats=("nifti",)):
    with caplog.at_level(logging.INFO, logger="jaxalign.studies.report"):
        return make_report(root / "store", formats=formats)


def test_nifti_maps_put_r_back_into_the_mask(tmp_path, caplog, monkeypatch):
    import sys

    import nibabel as nib

    root = tmp_path / "fmri"
    mask, affine, scores = write_nifti_study(root)
    monkeypatch.setitem(sys.modules, "nilearn", None)  # as without nilearn: NIfTI files, no picture
    paths = _maps(root, caplog)
    maps = root / "maps"
    names = [f"org_LM-1_step100_layer{layer}_{s}_{what}.nii.gz" for s in ("s01", "s02") for layer in (0, 3)
             for what in ("r", "p_fdr")]
    assert sorted(paths) == sorted(maps / n for n in names)
    assert sorted(p.name for p in maps.iterdir()) == sorted(names)  # no temporary file, no picture
    assert not (root / "store" / "figures").exists()  # "nifti" alone draws no figure
    assert any('pip install "jaxalign[maps]"' in r.getMessage() for r in caplog.records)
    for s, r in scores.items():
        for i, layer in enumerate((0, 3)):
            img = nib.load(maps / f"org_LM-1_step100_layer{layer}_{s}_r.nii.gz")
            data = np.asarray(img.dataobj)
            assert data.dtype == np.float32 and data.shape == mask.shape
            np.testing.assert_array_equal(img.affine, nib.load(root / "geometry" / f"{s}_mask.nii.gz").affine)
            np.testing.assert_allclose(img.affine, affine, rtol=1e-6)
            assert np.isnan(data[~mask]).all() and np.isfinite(data[mask]).all()
            np.testing.assert_array_equal(data[mask], r[i].astype(np.float32))  # voxels in C order
            p = np.asarray(nib.load(maps / f"org_LM-1_step100_layer{layer}_{s}_p_fdr.nii.gz").dataobj)
            np.testing.assert_allclose(p[mask], np.clip(1 - 5 * r[i], 0, 1), atol=1e-7)


def test_nifti_stat_map_picture(tmp_path, caplog):
    pytest.importorskip("nilearn")
    import matplotlib.pyplot as plt

    root = tmp_path / "fmri"
    _, _, scores = write_nifti_study(root, subjects=("s01",))
    paths = _maps(root, caplog, formats=("png", "nifti"))
    best = int(np.argmax(scores["s01"].mean(1)))
    picture = root / "maps" / "org_LM-1_step100_s01_best.png"
    assert picture in paths and (root / "store" / "figures" / "layers.png") in paths
    img = imread(picture)
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert len(np.unique(img[..., :3].reshape(-1, 3)[::50], axis=0)) > 20  # a coloured map, not blank
    assert plt.get_fignums() == []  # no pyplot figure left open
    assert any(r.getMessage() == f"stat-map picture {picture.name}: layer {(0, 3)[best]}, the best by mean r over "
               "voxels" for r in caplog.records)


def test_runner_asks_the_report_for_png_and_nifti(tmp_path, monkeypatch):
    """output.formats reaches make_report: figures for "png", voxel maps for "nifti", nothing for neither."""
    from types import SimpleNamespace

    import pandas as pd

    from jaxalign.studies import report, runner

    calls = []
    monkeypatch.setattr(report, "make_report", lambda store, out=None, formats=("png",): calls.append(
        (store, out, list(formats))) or [])
    for formats, want in ((["json", "csv", "nifti"], ["nifti"]), (["nifti", "png"], ["png", "nifti"]),
                          (["png"], ["png"]), (["json", "csv"], None)):
        calls.clear()
        plan = SimpleNamespace(cfg=SimpleNamespace(output=SimpleNamespace(formats=formats)), out=tmp_path)
        runner._write_outputs(plan, pd.DataFrame({"score": [0.1]}))
        assert calls == ([] if want is None else [(tmp_path / "store", tmp_path / "figures", want)])
