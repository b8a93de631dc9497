"""Base vs fine-tuned comparison (jaxalign.analysis.compare, stats.fold_paired_permutation_test) and the
simulated-MEG generator (jaxalign.io.simulate_word_locked_meg).

References: numpy float64 (correlations, per-fold nulls rebuilt from stats.permutation_indices),
scipy.stats.ttest_ind and false_discovery_control, MNE and jaxalign's own readers for the files.
Small sizes: one shared planted simulation (300 words, 102 magnetometers, 6 windows) and three cheap
null simulations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats as st

from jaxalign import io, stats, timing
from jaxalign._core.seeds import stream_seed
from jaxalign.analysis import compare as cmp
from jaxalign.ridge import nested_cv

mne = pytest.importorskip("mne")

W = 6                      # windows of 25 ms
ALPHAS = np.logspace(0, 3, 4)
PLANTED = (slice(2, 4), slice(0, 10))   # windows 2-3, channels 0-9


def _targets(sim):
    return timing.windows_to_targets(timing.word_locked_windows(sim.data, sim.sfreq, n_windows=sim.n_windows))


@pytest.fixture(scope="module")
def planted():
    """Features S drive every target; E drives only the planted ones. Model A sees S, model B sees S + E."""
    rng = np.random.default_rng(0)
    n = 300
    S, E = rng.standard_normal((n, 5)), rng.standard_normal((n, 3))
    extra = np.zeros((W, 102))
    extra[PLANTED] = 0.9
    sim = io.simulate_word_locked_meg([S, E], [0.6, extra], picks="mag", n_windows=W, seed=1)
    Y = _targets(sim)
    ra = nested_cv(S, Y, ALPHAS, outer_cv=4, inner_cv=3)
    rb = nested_cv(np.c_[S, E], Y, ALPHAS, outer_cv=4, inner_cv=3)
    comp = cmp.compare_predictions(Y, ra.predictions, rb.predictions, folds=ra.outer_splits, n_windows=W,
                                   n_permutations=200, tail="normal", window_width=0.025,
                                   channel_names=sim.ch_names)
    return dict(sim=sim, Y=Y, base=ra.predictions, ft=rb.predictions, folds=ra.outer_splits, comp=comp, E=E)


def test_planted_improvement_is_found_where_planted(planted):
    comp = planted["comp"]
    mask = np.zeros((W, 102), bool)
    mask[PLANTED] = True
    assert comp.better.shape == (W, 102)
    assert comp.better[mask].mean() >= 0.9
    assert comp.better[~mask].sum() <= 1          # FDR 5%: at most a stray discovery
    t = comp.percentages()
    assert list(t["window"]) == list(range(W)) and list(t["start_ms"]) == [0, 25, 50, 75, 100, 125]
    np.testing.assert_allclose(t["better"] + t["worse"] + t["unchanged"], 100.0)
    assert (t.loc[[2, 3], "better"] >= 100 * 9 / 102).all() and (t.loc[[0, 1, 4, 5], "better"] <= 1).all()
    frame = comp.to_frame()
    assert len(frame) == W * 102 and set(frame["verdict"]) <= {"better", "worse", "unchanged"}
    assert frame.loc[(frame.window == 2) & (frame.channel == planted["sim"].ch_names[0]), "verdict"].item() == "better"


def test_statistic_equals_numpy(planted):
    """r per fold and their differences from numpy float64; the window-major layout of jaxalign.timing."""
    Y, b, f, comp = planted["Y"], planted["base"], planted["ft"], planted["comp"]

    def r(a, c):
        a, c = a - a.mean(0), c - c.mean(0)
        return (a * c).sum(0) / np.sqrt((a * a).sum(0) * (c * c).sum(0))

    rb = np.mean([r(Y[te].astype(np.float64), b[te].astype(np.float64)) for _, te in planted["folds"]], axis=0)
    rf = np.mean([r(Y[te].astype(np.float64), f[te].astype(np.float64)) for _, te in planted["folds"]], axis=0)
    np.testing.assert_allclose(comp.r_base, timing.targets_to_windows(rb, W), atol=2e-6)
    np.testing.assert_allclose(comp.r_ft, timing.targets_to_windows(rf, W), atol=2e-6)
    np.testing.assert_allclose(comp.difference, timing.targets_to_windows(rf - rb, W), atol=3e-6)
    # the study's statistic (folds=None): r over all words; 3-D input in the (words, windows, channels) layout
    whole = cmp.compare_predictions(*(timing.targets_to_windows(a, W) for a in (Y, b, f)), folds=None,
                                    n_permutations=20, tail="normal")
    np.testing.assert_allclose(whole.difference, timing.targets_to_windows(r(Y, f) - r(Y, b), W), atol=3e-6)


@pytest.mark.filterwarnings("ignore:.*smallest p possible")
def test_fold_null_equals_numpy():
    """The fold-mean null rebuilt from each fold's arrangements (stats.permutation_indices) in numpy."""
    rng = np.random.default_rng(7)
    n, T, K = 30, 4, 50
    y = rng.standard_normal((n, T)) * 1e-12
    a = y + rng.standard_normal((n, T)) * 2e-12
    b = y + rng.standard_normal((n, T)) * 3e-12
    ids = np.repeat([0, 1, 2], 10)
    res = stats.fold_paired_permutation_test(y, a, b, ids, n_permutations=K, seed=3, return_null=True)
    unit = lambda v: (v - v.mean(0)) / np.linalg.norm(v - v.mean(0), axis=0)  # noqa: E731
    null = np.zeros((K, T))
    obs = np.zeros(T)
    for f in range(3):
        rows = np.flatnonzero(ids == f)
        u, da = unit(y[rows]), unit(a[rows]) - unit(b[rows])
        idx = stats.permutation_indices(rows.size, K, seed=stream_seed(3, "fold", str(f)))
        null += np.einsum("kit,it->kt", u[idx], da) / 3
        obs += (u * da).sum(0) / 3
    np.testing.assert_allclose(res.statistic, obs, atol=2e-6)
    np.testing.assert_allclose(res.null, null, atol=3e-6)
    p = ((null >= obs - stats._perm_checks.TIE_TOL).sum(0) + 1) / (K + 1)
    np.testing.assert_allclose(res.p, p)
    # "less" on the same arrangements; folds as (train, test) splits give the same test
    splits = [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(3)]
    less = stats.fold_paired_permutation_test(y, a, b, splits, n_permutations=K, seed=3, alternative="less")
    np.testing.assert_allclose(less.p, ((null <= obs + 1e-5).sum(0) + 1) / (K + 1))


def test_nothing_under_the_null():
    """Both models see the shared features plus junk of equal size: equal in expectation. Few FDR
    rejections over three seeds; the study's whole-recording statistic with per-fold penalties, in
    contrast, rejects many (why folds= exists)."""
    false_fold, false_whole, n_targets, p05 = 0, 0, 0, []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        n = 160
        S, J1, J2 = (rng.standard_normal((n, k)) for k in (5, 3, 3))
        sim = io.simulate_word_locked_meg(S, 0.6, picks="mag", n_windows=2, seed=seed)
        Y = _targets(sim)
        ra = nested_cv(np.c_[S, J1], Y, ALPHAS, outer_cv=4, inner_cv=3)
        rb = nested_cv(np.c_[S, J2], Y, ALPHAS, outer_cv=4, inner_cv=3)
        kw = dict(n_windows=2, n_permutations=100, tail="normal", seed=seed)
        c = cmp.compare_predictions(Y, ra.predictions, rb.predictions, folds=ra.outer_splits, **kw)
        w = cmp.compare_predictions(Y, ra.predictions, rb.predictions, folds=None, **kw)
        false_fold += int(c.better.sum() + c.worse.sum())
        false_whole += int(w.better.sum() + w.worse.sum())
        n_targets += c.better.size
        p05.append(np.mean(c.p_better < 0.05))
    assert false_fold <= 3, false_fold                  # of 612 targets x 2 directions
    assert np.mean(p05) <= 0.08                         # uncorrected: at most about the nominal 5%
    assert false_whole >= 10 * max(false_fold, 1), (false_whole, false_fold)


def test_category_ttest_equals_scipy(planted):
    Y, b, f = planted["Y"], planted["base"], planted["ft"]
    cat = np.zeros(300, bool)
    cat[np.argsort(np.abs(planted["E"][:, 0]))[-50:]] = True   # words the extra features move most
    mask = np.zeros((W, 102), bool)
    mask[:, :40] = True
    mask[5] = False                                              # a window without channels
    for equal_var in (False, True):
        res = cmp.category_improvement(Y, b, f, cat, n_windows=W, channels=mask, equal_var=equal_var)
        y3, b3, f3 = (timing.targets_to_windows(a, W).astype(np.float64) for a in (Y, b, f))
        imp = np.full((300, W), np.nan)
        for k in range(5):
            ch = mask[k]
            imp[:, k] = ((y3[:, k, ch] - b3[:, k, ch]) ** 2).mean(1) - ((y3[:, k, ch] - f3[:, k, ch]) ** 2).mean(1)
        np.testing.assert_allclose(res.improvement, imp, rtol=1e-10, atol=1e-40)
        ref = st.ttest_ind(imp[cat, :5], imp[~cat, :5], equal_var=equal_var, alternative="greater")
        np.testing.assert_allclose(res.table["t"][:5], ref.statistic, rtol=1e-10)
        np.testing.assert_allclose(res.table["p"][:5], ref.pvalue, rtol=1e-8, atol=1e-300)
        np.testing.assert_allclose(res.table["p_fdr"][:5], st.false_discovery_control(ref.pvalue), rtol=1e-10)
        assert np.isnan(res.table["p"][5]) and not res.table["significant"][5]
    assert res.table["significant"][[2, 3]].all()    # the planted windows, for the words E moves most


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e4])
def test_scale_invariance(planted, scale):
    """MEG in tesla, unit and raw-unit scales give the same comparison and category test."""
    Y, b, f = (planted[k] / 1e-12 * scale for k in ("Y", "base", "ft"))
    c = cmp.compare_predictions(Y, b, f, folds=planted["folds"], n_windows=W, n_permutations=200,
                                tail="normal")
    ref = planted["comp"]
    np.testing.assert_allclose(c.difference, ref.difference, atol=2e-6)
    np.testing.assert_allclose(c.p_better, ref.p_better, rtol=1e-3, atol=1e-6)
    assert (c.better == ref.better).all() and (c.worse == ref.worse).all()
    cat = np.arange(300) % 7 == 0
    r1 = cmp.category_improvement(Y, b, f, cat, n_windows=W)
    r0 = cmp.category_improvement(planted["Y"], planted["base"], planted["ft"], cat, n_windows=W)
    np.testing.assert_allclose(r1.table["t"], r0.table["t"], rtol=1e-6)


def test_figures(planted, tmp_path):
    comp = planted["comp"]
    cmp.plot_comparison(comp, path=tmp_path / "pct.png")
    cmp.plot_difference_topomaps(comp, planted["sim"].info, [0, 2], path=tmp_path / "topo.png")
    cat = np.arange(300) % 5 == 0
    cmp.plot_category_improvement(cmp.category_improvement(planted["Y"], planted["base"], planted["ft"], cat,
                                                           n_windows=W, window_width=0.025),
                                  path=tmp_path / "cat.png")
    for name in ("pct", "topo", "cat"):
        assert (tmp_path / f"{name}.png").stat().st_size > 15_000
    with pytest.raises(ValueError, match="windows must be indices"):
        cmp.plot_difference_topomaps(comp, planted["sim"].info, [W])
    with pytest.raises(ValueError, match="channels"):
        cmp.plot_difference_topomaps(comp, io.sensor_info("neuromag", "grad"), [0])


def test_gradiometer_topomap_averages_pairs(tmp_path):
    """306 channels: the grad map shows each planar pair's mean difference."""
    rng = np.random.default_rng(3)
    info = io.sensor_info("neuromag", "meg")
    C = len(info.ch_names)
    comp = cmp.ModelComparison(
        r_base=np.zeros((1, C)), r_ft=np.zeros((1, C)), difference=rng.standard_normal((1, C)) * 0.1,
        p_better=np.full((1, C), 0.5), p_worse=np.full((1, C), 0.5), p_fdr_better=np.ones((1, C)),
        p_fdr_worse=np.ones((1, C)), better=np.zeros((1, C), bool), worse=np.zeros((1, C), bool), n_words=10,
        n_permutations=10, alpha=0.05, fdr="bh", scheme="permute", block_size=None, seed=0, tail=None)
    first, second = cmp._pairs_of_grads(info)
    assert len(first) == 102 and all(info.ch_names[i][:-1] == info.ch_names[j][:-1] for i, j in zip(first, second))
    cmp.plot_difference_topomaps(comp, info, [0], ch_type="grad", path=tmp_path / "grad.png")
    assert (tmp_path / "grad.png").stat().st_size > 10_000


def test_compare_bad_input(planted):
    Y, b, f = planted["Y"], planted["base"], planted["ft"]
    with pytest.raises(TypeError, match="folds="):
        cmp.compare_predictions(Y, b, f, n_windows=W)
    with pytest.raises(ValueError, match="not a multiple of n_windows=7"):
        cmp.compare_predictions(Y, b, f, folds=None, n_windows=7)
    with pytest.raises(ValueError, match="pred_ft of shape"):
        cmp.compare_predictions(Y, b, f[:, :-W], folds=None, n_windows=W)
    with pytest.raises(ValueError, match="y contains 1 non-finite"):
        bad = Y.copy()
        bad[0, 0] = np.nan
        cmp.compare_predictions(bad, b, f, folds=None, n_windows=W)
    with pytest.raises(ValueError, match="partition"):
        cmp.compare_predictions(Y, b, f, folds=planted["folds"][:2], n_windows=W)
    with pytest.raises(ValueError, match="channel_names has 2 names"):
        cmp.compare_predictions(Y, b, f, folds=None, n_windows=W, channel_names=["a", "b"])
    with pytest.raises(TypeError, match="in_category must be a boolean"):
        cmp.category_improvement(Y, b, f, np.arange(300) % 2, n_windows=W)
    with pytest.raises(ValueError, match="at least 2 category"):
        cmp.category_improvement(Y, b, f, np.arange(300) == 0, n_windows=W)
    with pytest.raises(TypeError, match="channels must be a boolean"):
        cmp.category_improvement(Y, b, f, np.arange(300) < 9, n_windows=W, channels=np.ones(102, int))
    with pytest.raises(ValueError, match="at least 3 samples"):
        stats.fold_paired_permutation_test(Y[:8], b[:8], f[:8], np.repeat([0, 1, 2, 3], 2))


# --- the simulated-MEG generator ----------------------------------------------------------------------


def test_simulated_meg_plants_what_it_says():
    rng = np.random.default_rng(5)
    F = rng.standard_normal((1000, 4))
    strength = np.zeros((3, 102))
    strength[1, :20] = 1.0
    sim = io.simulate_word_locked_meg(F, strength, picks="mag", n_windows=3, sfreq=400.0, noise=1e-12, seed=2)
    assert sim.data.shape == (1000, 102, 30) and sim.info.get_channel_types() == ["mag"] * 102
    win = timing.word_locked_windows(sim.data, sim.sfreq, n_windows=3)
    np.testing.assert_array_equal(sim.window_edges, timing.window_edges(sim.sfreq, 30, n_windows=3))
    noise = (win - sim.signal) / 1e-12          # the window means' noise: N(0, 1) whatever the sample rate
    assert abs(noise.std() - 1) < 0.01 and abs(noise.mean()) < 0.01
    np.testing.assert_allclose(sim.signal[1, :, :20].std(0) / 1e-12, 1.0)
    assert np.abs(sim.signal[[0, 2]]).max() == 0 and np.abs(sim.signal[1, :, 20:]).max() == 0
    r = np.array([np.corrcoef(win[1, :, c], sim.signal[1, :, c])[0, 1] for c in range(20)])
    assert abs(r.mean() - sim.best_r()[1, 0]) < 0.02        # 1 / sqrt(2)
    again = io.simulate_word_locked_meg(F, strength, picks="mag", n_windows=3, sfreq=400.0, seed=2)
    np.testing.assert_array_equal(again.data, sim.data)
    unit = io.simulate_word_locked_meg(F, strength, picks="mag", n_windows=3, sfreq=400.0, noise=1.0, seed=2)
    np.testing.assert_allclose(unit.data * 1e-12, sim.data, rtol=1e-12)


def test_simulated_meg_round_trips(tmp_path):
    rng = np.random.default_rng(6)
    words = [f"word{i}" for i in range(12)]
    sim = io.simulate_word_locked_meg(rng.standard_normal((12, 2)), 0.5, words=words, n_windows=4,
                                      dtype=np.float32, seed=0)
    assert sim.data.shape == (12, 306, 20) and sim.data.dtype == np.float32
    paths = sim.save(tmp_path / "hp", fif=True)
    meta = json.loads(paths["info"].read_text())
    assert meta["sfreq"] == 200.0 and meta["channels"] == sim.ch_names
    stim, rec = io.read_harry_potter_meg(paths["data"], paths["words"], sfreq=meta["sfreq"], tmin=meta["tmin"])
    np.testing.assert_array_equal(rec.data, sim.data)
    assert list(stim.words) == words
    np.testing.assert_allclose(rec.epoch_times, sim.times)
    for epochs in (sim.to_epochs(), paths["fif"]):
        stim2, rec2 = io.read_mne_epochs(epochs, first_samp=0)
        np.testing.assert_allclose(rec2.data, sim.data, rtol=1e-6)
        assert list(stim2.words) == words and list(rec2.target_names) == sim.ch_names
        np.testing.assert_allclose(np.diff(stim2.onsets), 0.5)
    ep = mne.read_epochs(paths["fif"], verbose="error")
    assert ep.info.get_channel_types().count("grad") == 204
    np.testing.assert_allclose(ep.info["chs"][0]["loc"], sim.info["chs"][0]["loc"])


def test_simulated_meg_bad_input():
    F = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"strength of shape \(3,\) does not broadcast"):
        io.simulate_word_locked_meg(F, np.ones(3), picks="mag")
    with pytest.raises(ValueError, match="strength must be a list"):
        io.simulate_word_locked_meg([F, F], 0.5, picks="mag")
    with pytest.raises(ValueError, match="features\\[1\\] has 9 words"):
        io.simulate_word_locked_meg([F, F[:9]], [0.5, 0.5], picks="mag")
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        io.simulate_word_locked_meg(F, -1.0, picks="mag")
    with pytest.raises(ValueError, match="noise must be a positive"):
        io.simulate_word_locked_meg(F, 0.5, picks="mag", noise=0)
    with pytest.raises(ValueError, match="picks"):
        io.simulate_word_locked_meg(F, 0.5, picks="eeg")
    with pytest.raises(ValueError, match="words has 3 entries"):
        io.simulate_word_locked_meg(F, 0.5, picks="mag", words=["a", "b", "c"])
    with pytest.raises(ValueError, match="holds no sample"):
        io.simulate_word_locked_meg(F, 0.5, picks="mag", sfreq=10.0)
    with pytest.raises(ValueError, match="layout must be one of"):
        io.sensor_info("biosemi")
