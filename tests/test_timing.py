"""jaxalign.timing against plain Python loops on random inputs (several sizes, run boundaries)."""

import math
import warnings

import numpy as np
import pytest

from jaxalign import timing

SEEDS = [0, 1, 2]


def scan_times(rng, n, irregular=False):
    if irregular:
        return np.cumsum(rng.uniform(0.5, 3.0, size=n)) + rng.uniform(-5, 5)
    return 2.0 * np.arange(n) + rng.choice([0.0, 10.0])


def word_times(rng, tr, n_words):
    lo, hi = tr[0] - 5.0, tr[-1] + 5.0
    w = rng.uniform(lo, hi, size=n_words)
    # exact scan times (the "strictly before" edge) and repeats
    k = min(5, n_words)
    w[:k] = rng.choice(tr, size=k)
    return rng.permutation(w)


# --------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------


def ref_words_to_trs(w, tr):
    out = []
    for t in w:
        j = -1
        for i, s in enumerate(tr):
            if s < t:
                j = i
        out.append(j)
    return np.array(out)


def ref_average(F, w, tr):
    F = np.asarray(F, dtype=np.float64)
    idx = ref_words_to_trs(w, tr)
    out = np.zeros((len(tr), F.shape[1]))
    for j in range(len(tr)):
        rows = [i for i in range(len(w)) if idx[i] == j]
        if rows:
            out[j] = sum(F[i] for i in rows) / len(rows)
    return out


def ref_lanczos(F, w, tr, window=3, cutoff=None):
    # the Huth lab's lanczosinterp2D, row by row
    if cutoff is None:
        cutoff = 1 / np.mean(np.diff(tr))
    mat = np.zeros((len(tr), len(w)))
    for j in range(len(tr)):
        t = (tr[j] - w) * cutoff
        with np.errstate(divide="ignore", invalid="ignore"):
            val = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi**2 * t**2)
        val[t == 0] = 1.0
        val[np.abs(t) > window] = 0.0
        mat[j] = val
    return mat @ F


def ref_delays(X, delays, runs):
    n, p = X.shape
    out = np.zeros((n, p * len(delays)))
    for k, d in enumerate(delays):
        for t in range(n):
            s = t - d
            if 0 <= s < n and runs[s] == runs[t] and all(runs[u] == runs[t] for u in range(min(s, t), max(s, t) + 1)):
                out[t, k * p : (k + 1) * p] = X[s]
    return out


def random_runs(rng, n, n_runs):
    cuts = np.sort(rng.choice(np.arange(1, n), size=n_runs - 1, replace=False)) if n_runs > 1 else []
    runs = np.zeros(n, dtype=int)
    for c in cuts:
        runs[c:] += 1
    return runs + 1


# --------------------------------------------------------------------------
# words -> TRs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_tr,n_words", [(1, 3), (7, 40), (60, 500)])
def test_words_to_trs_matches_loop(seed, n_tr, n_words):
    rng = np.random.default_rng(seed)
    tr = scan_times(rng, n_tr, irregular=seed == 1)
    w = word_times(rng, tr, n_words)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = timing.words_to_trs(w, tr)
    np.testing.assert_array_equal(got, ref_words_to_trs(w, tr))


def test_words_to_trs_edges_and_warning():
    tr = np.array([0.0, 2.0, 4.0])
    w = np.array([-1.0, 0.0, 0.5, 2.0, 2.0001, 4.0, 9.0])
    with pytest.warns(UserWarning, match="2 of 7 words"):
        got = timing.words_to_trs(w, tr)
    np.testing.assert_array_equal(got, [-1, -1, 0, 0, 1, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timing.words_to_trs([1.0, 3.0], tr)  # no warning


def test_words_to_trs_bad_inputs():
    with pytest.raises(ValueError, match="strictly increasing"):
        timing.words_to_trs([1.0], [0.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        timing.words_to_trs([np.nan], [0.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        timing.words_to_trs([[1.0]], [0.0, 2.0])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_tr,n_words,d", [(5, 3, 1), (20, 80, 4), (90, 700, 16)])
def test_average_per_tr_matches_loop(seed, n_tr, n_words, d):
    rng = np.random.default_rng(seed)
    tr = scan_times(rng, n_tr, irregular=seed == 2)
    w = word_times(rng, tr, n_words)
    F = rng.standard_normal((n_words, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, counts = timing.average_per_tr(F, w, tr, return_counts=True)
    ref = ref_average(F, w, tr)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    idx = ref_words_to_trs(w, tr)
    np.testing.assert_array_equal(counts, [np.sum(idx == j) for j in range(n_tr)])
    assert np.all(got[counts == 0] == 0)


def test_average_per_tr_layers_dtypes_and_1d():
    rng = np.random.default_rng(3)
    tr = 2.0 * np.arange(30)
    w = np.sort(rng.uniform(0.1, 60, size=120))
    F = rng.standard_normal((3, 120, 5)).astype(np.float32)
    got = timing.average_per_tr(F, w, tr)
    assert got.shape == (3, 30, 5) and got.dtype == np.float32
    for layer in range(3):
        np.testing.assert_allclose(got[layer], ref_average(F[layer], w, tr), rtol=1e-5, atol=1e-6)
    got1 = timing.average_per_tr(F[0, :, 0], w, tr)
    assert got1.shape == (30,)
    np.testing.assert_allclose(got1, got[0, :, 0])
    gi = timing.average_per_tr(np.arange(120), w, tr)
    assert gi.dtype == np.float64
    with pytest.warns(UserWarning, match="first scan"):
        timing.average_per_tr(F[0], np.r_[-1.0, w[1:]], tr)
    with pytest.raises(ValueError, match="120 word times"):
        timing.average_per_tr(F[0, :100], w, tr)


def test_average_per_tr_accepts_jax():
    jnp = pytest.importorskip("jax.numpy")
    tr = np.arange(10.0)
    w = np.linspace(0.5, 9.5, 25)
    F = np.random.default_rng(0).standard_normal((25, 3)).astype(np.float32)
    np.testing.assert_allclose(timing.average_per_tr(jnp.asarray(F), jnp.asarray(w), tr), timing.average_per_tr(F, w, tr))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_tr,n_words,d", [(2, 5, 1), (25, 120, 3), (120, 900, 8)])
@pytest.mark.parametrize("window,cutoff", [(3, None), (2, 0.3)])
def test_lanczos_matches_huth_loop(seed, n_tr, n_words, d, window, cutoff):
    rng = np.random.default_rng(seed)
    tr = scan_times(rng, n_tr, irregular=seed == 1)
    w = word_times(rng, tr, n_words)
    F = rng.standard_normal((n_words, d))
    got = timing.lanczos_resample(F, w, tr, window=window, cutoff=cutoff)
    np.testing.assert_allclose(got, ref_lanczos(F, w, tr, window, cutoff), rtol=1e-10, atol=1e-12)


def test_lanczos_layers_kernel_and_errors():
    rng = np.random.default_rng(5)
    tr = 2.0 * np.arange(40)
    w = np.sort(rng.uniform(0, 80, size=200))
    F = rng.standard_normal((2, 200, 3))
    got = timing.lanczos_resample(F, w, tr)
    for layer in range(2):
        np.testing.assert_allclose(got[layer], ref_lanczos(F[layer], w, tr), rtol=1e-10, atol=1e-12)
    k = timing.lanczos_kernel(np.array([0.0, 1.0, 2.0, 7.0]), cutoff=0.5)
    np.testing.assert_allclose(k[[0, 2, 3]], [1.0, 0.0, 0.0], atol=1e-15)  # zero crossings at 1/cutoff
    with pytest.raises(ValueError, match="2 scan times"):
        timing.lanczos_resample(F[0], w, [3.0])
    with pytest.raises(ValueError, match="window"):
        timing.lanczos_resample(F[0], w, tr, window=0)


# --------------------------------------------------------------------------
# delays, trimming, z-score, detrend
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,p,n_runs", [(6, 1, 1), (30, 3, 3), (101, 5, 4)])
@pytest.mark.parametrize("delays", [(1, 2, 3, 4), (0, 1, 2, 3), (-2, 0, 5)])
def test_fir_delays_matches_loop(seed, n, p, n_runs, delays):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    runs = random_runs(rng, n, n_runs)
    got = timing.fir_delays(X, delays, runs)
    np.testing.assert_array_equal(got, ref_delays(X, delays, runs))
    if n_runs == 1:
        np.testing.assert_array_equal(timing.fir_delays(X, delays), got)


def test_fir_delays_stack_1d_nonconsecutive_labels():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 20, 4)).astype(np.float32)
    runs = np.array([1] * 7 + [2] * 6 + [1] * 7)  # label 1 twice: three runs
    got = timing.fir_delays(X, (1, 2), runs, axis=1)
    assert got.shape == (3, 20, 8) and got.dtype == np.float32
    seg = np.repeat([0, 1, 2], [7, 6, 7])
    for layer in range(3):
        np.testing.assert_array_equal(got[layer], ref_delays(X[layer], (1, 2), seg))
    v = np.arange(5.0)
    np.testing.assert_array_equal(timing.fir_delays(v, (0, 1)), [[0, 0], [1, 0], [2, 1], [3, 2], [4, 3]])
    with pytest.raises(ValueError, match="integers"):
        timing.fir_delays(X[0], (1.5,))
    with pytest.raises(ValueError, match="one label per sample"):
        timing.fir_delays(X[0], (1,), runs[:5])
    with pytest.raises(ValueError, match="last"):
        timing.fir_delays(X[0], (1,), axis=1)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("start,end", [(20, 15), (0, 3), (2, 0)])
def test_trim_runs_matches_loop(seed, start, end):
    rng = np.random.default_rng(seed)
    n = 200
    runs = random_runs(rng, n, 4)
    while np.min(np.bincount(runs)[1:]) <= start + end:
        runs = random_runs(rng, n, 4)
    X = rng.standard_normal((n, 3))
    got_x, got_r = timing.trim_runs(X, runs, start, end)
    keep = []
    for t in range(n):
        first = min(u for u in range(n) if runs[u] == runs[t])
        last = max(u for u in range(n) if runs[u] == runs[t])
        keep.append(t - first >= start and last - t >= end)
    np.testing.assert_array_equal(got_x, X[keep])
    np.testing.assert_array_equal(got_r, runs[keep])


def test_trim_harry_potter_sizes_and_errors():
    runs = np.repeat([1, 2, 3, 4], [291, 308, 340, 412])  # 1351 scans
    keep = timing.trim_mask(runs)
    assert keep.sum() == 1351 - 4 * 35 == 1211
    with pytest.raises(ValueError, match="nothing would be left"):
        timing.trim_mask(np.repeat([1, 2], [40, 35]))
    with pytest.raises(ValueError, match="samples"):
        timing.trim_runs(np.zeros((10, 2)), np.ones(9))


def ref_zscore(X, runs):
    out = np.zeros_like(X, dtype=np.float64)
    for r in np.unique(runs):
        rows = runs == r
        for j in range(X.shape[1]):
            col = X[rows, j].astype(np.float64)
            sd = col.std()
            out[rows, j] = 0.0 if sd == 0 else (col - col.mean()) / sd
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,p,n_runs", [(5, 1, 1), (40, 6, 3), (300, 20, 4)])
def test_zscore_per_run_matches_loop(seed, n, p, n_runs):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.1, 100, size=p) + rng.uniform(-50, 50, size=p)
    runs = random_runs(rng, n, n_runs)
    while np.min(np.bincount(runs)[1:]) < 2:
        runs = random_runs(rng, n, n_runs)
    got = timing.zscore_per_run(X, runs)
    np.testing.assert_allclose(got, ref_zscore(X, runs), rtol=1e-10, atol=1e-10)
    if n_runs == 1:
        from scipy.stats import zscore

        np.testing.assert_allclose(timing.zscore_per_run(X), zscore(X, axis=0), rtol=1e-10, atol=1e-12)


def test_zscore_constant_columns_float32_and_meg_axis():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4)).astype(np.float32)
    X[:, 1] = 0.1  # constant (rounding-noisy mean in float32)
    X[:15, 3] = 7.0  # constant in the first run only
    runs = np.repeat([0, 1], 15)
    with pytest.warns(UserWarning, match="3 \\(run, column\\) pairs are constant"):
        got = timing.zscore_per_run(X, runs)
    assert got.dtype == np.float32
    assert np.all(got[:, 1] == 0) and np.all(got[:15, 3] == 0)
    np.testing.assert_allclose(got[15:, 3], ref_zscore(X[15:, [3]], np.zeros(15))[:, 0], rtol=1e-5, atol=1e-5)
    meg = rng.standard_normal((50, 3, 8))
    z = timing.zscore_per_run(meg, axis=0)  # across words
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("kind", ["poly", "dct"])
def test_detrend_matches_loop(seed, order, kind):
    rng = np.random.default_rng(seed)
    n = 90
    runs = random_runs(rng, n, 3)
    while np.min(np.bincount(runs)[1:]) < order + 3:
        runs = random_runs(rng, n, 3)
    Y = rng.standard_normal((n, 4)) + np.linspace(0, 5, n)[:, None] ** 2
    got = timing.detrend(Y, runs, kind=kind, order=order)
    ref = np.zeros_like(Y)
    for r in np.unique(runs):
        rows = np.flatnonzero(runs == r)
        m = rows.size
        for j in range(Y.shape[1]):
            y = Y[rows, j]
            if kind == "poly":
                t = np.arange(m)
                ref[rows, j] = y - np.polyval(np.polyfit(t, y, order), t)
            else:
                B = np.array([[math.cos(math.pi * k * (2 * i + 1) / (2 * m)) for k in range(order + 1)] for i in range(m)])
                ref[rows, j] = y - B @ np.linalg.lstsq(B, y, rcond=None)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
def test_detrend_with_confounds_matches_joint_lstsq(seed):
    rng = np.random.default_rng(seed)
    n = 80
    runs = np.repeat([0, 1], [45, 35])
    C = rng.standard_normal((n, 3)) * [1.0, 20.0, 0.1] + 5
    C = np.column_stack([C, C[:, 0] + 2 * C[:, 2]])  # rank-deficient set
    Y = rng.standard_normal((n, 4)) + C[:, :2] @ rng.standard_normal((2, 4)) + np.linspace(0, 4, n)[:, None]
    got = timing.detrend(Y, runs, kind="poly", order=1, confounds=C)
    ref = np.empty_like(Y)
    for r in (0, 1):
        rows = runs == r
        t = np.arange(rows.sum(), dtype=float)
        B = np.column_stack([np.ones_like(t), t, C[rows]])
        ref[rows] = Y[rows] - B @ np.linalg.lstsq(B, Y[rows], rcond=None)[0]
    np.testing.assert_allclose(got, ref, atol=1e-10)
    one = timing.detrend(Y[:, 0], confounds=C[:, 1])  # 1-D Y and one confound
    t = np.arange(n, dtype=float)
    B = np.column_stack([np.ones(n), t, C[:, 1]])
    np.testing.assert_allclose(one, Y[:, 0] - B @ np.linalg.lstsq(B, Y[:, 0], rcond=None)[0], atol=1e-10)
    with pytest.raises(ValueError, match=r"confounds must be \(80, k\)"):
        timing.detrend(Y, confounds=C[:70])
    bad = C.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        timing.detrend(Y, confounds=bad)


def test_detrend_removes_trend_and_errors():
    t = np.arange(50.0)
    Y = np.column_stack([3 + 0.5 * t, np.sin(t)]).astype(np.float32)
    got = timing.detrend(Y, order=1)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], 0, atol=1e-4)
    with pytest.raises(ValueError, match="kind"):
        timing.detrend(Y, kind="spline")
    with pytest.raises(ValueError, match="cannot be detrended"):
        timing.detrend(Y, np.repeat([0, 1], [48, 2]), order=1)


# --------------------------------------------------------------------------
# MEG
# --------------------------------------------------------------------------


def ref_windows(meg, sfreq, n_windows, width, start, tmin):
    times = tmin + np.arange(meg.shape[2]) / sfreq
    out = np.zeros((n_windows, meg.shape[0], meg.shape[1]))
    for k in range(n_windows):
        lo, hi = start + k * width, start + (k + 1) * width
        sel = [j for j, t in enumerate(times) if lo - 1e-9 <= t < hi - 1e-9]
        for i in range(meg.shape[0]):
            for c in range(meg.shape[1]):
                out[k, i, c] = np.mean([meg[i, c, j] for j in sel])
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "sfreq,n_times,tmin,n_windows,width,start",
    [(1000.0, 500, 0.0, 20, 0.025, 0.0), (200.0, 140, -0.1, 20, 0.025, 0.0), (40.0, 20, 0.0, 20, 0.025, 0.0), (250.0, 80, -0.05, 4, 0.05, 0.02)],
)
def test_word_locked_windows_matches_loop(seed, sfreq, n_times, tmin, n_windows, width, start):
    rng = np.random.default_rng(seed)
    meg = rng.standard_normal((7, 5, n_times))
    got = timing.word_locked_windows(meg, sfreq, n_windows=n_windows, width=width, start=start, tmin=tmin)
    assert got.shape == (n_windows, 7, 5)
    np.testing.assert_allclose(got, ref_windows(meg, sfreq, n_windows, width, start, tmin), rtol=1e-10, atol=1e-12)


def test_word_locked_windows_edges_and_errors():
    rng = np.random.default_rng(0)
    meg = rng.standard_normal((4, 3, 30)).astype(np.float32)
    got = timing.word_locked_windows(meg, edges=[0, 10, 20, 30])
    assert got.dtype == np.float32 and got.shape == (3, 4, 3)
    np.testing.assert_allclose(got[1], meg[:, :, 10:20].mean(-1), rtol=1e-5)
    pairs = timing.word_locked_windows(meg, edges=np.array([[0, 5], [3, 9]]))
    np.testing.assert_allclose(pairs[1], meg[:, :, 3:9].mean(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="holds no sample"):
        timing.word_locked_windows(meg, 20.0)
    with pytest.raises(ValueError, match="need samples"):
        timing.word_locked_windows(meg, 1000.0)  # 0.5 s needs 500 samples
    with pytest.raises(ValueError, match="sfreq"):
        timing.word_locked_windows(meg)
    with pytest.raises(ValueError, match="3-D"):
        timing.word_locked_windows(meg[0], 40.0)
    with pytest.raises(ValueError, match="lo < hi"):
        timing.word_locked_windows(meg, edges=[[5, 5]])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sfreq,n_samples,n_words,d", [(100.0, 50, 10, 1), (200.0, 1000, 300, 4), (1000.0, 3000, 40, 2)])
def test_onset_impulses_matches_loop(seed, sfreq, n_samples, n_words, d):
    rng = np.random.default_rng(seed)
    dur = n_samples / sfreq
    w = rng.uniform(-0.05 * dur, 1.05 * dur, size=n_words)
    w[:2] = w[2]  # collisions add up
    F = rng.standard_normal((n_words, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = timing.onset_impulses(w, F, sfreq, n_samples)
    ref = np.zeros((n_samples, d))
    for i, t in enumerate(w):
        s = math.floor(t * sfreq + 0.5)
        if 0 <= s < n_samples:
            ref[s] += F[i]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_onset_impulses_defaults_and_warning():
    with pytest.warns(UserWarning, match="1 of 3 words"):
        x = timing.onset_impulses([0.0, 0.0149, 5.0], sfreq=100.0, n_samples=10)
    np.testing.assert_array_equal(x[:, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    x = timing.onset_impulses([0.105], np.array([2.0]), 100.0, 20, t0=0.1)
    assert x.shape == (20,) and x[1] == 2.0 and x.sum() == 2.0
    with pytest.raises(ValueError, match="n_samples"):
        timing.onset_impulses([0.1], sfreq=10.0)


def test_sample_delays_defaults():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2))
    got = timing.sample_delays(X)
    assert got.shape == (120, 80)
    np.testing.assert_array_equal(got, ref_delays(X, list(range(40)), np.zeros(120, int)))
    runs = np.repeat([0, 1], 60)
    np.testing.assert_array_equal(timing.sample_delays(X, range(3), runs), ref_delays(X, [0, 1, 2], runs))
