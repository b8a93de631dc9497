#!/usr/bin/env python
"""Sweep benchmark: a Harry-Potter-sized study through the runner vs a himalaya loop.

The problem (issue 11): every layer of several revisions of one language
model, encoded into the voxels of several subjects of the Harry Potter fMRI
data (Wehbe et al. 2014, Toneva & Wehbe's preprocessing), features
precomputed. Full size (the defaults): 4 revisions x 13 hidden states x 3
subjects x 20,000 voxels x 1,200 TRs (trimmed), 768 features per word.

Both sides are timed end to end on the same synthetic data:

jaxalign   ``jaxalign.studies.runner.run_study`` (what ``jaxalign run``
           calls) on a study config: the ``harry_potter_fmri`` dataset, one
           ``[[models]]`` table per revision (local folders), layers "all",
           the Wehbe2014-fMRI protocol (``jaxalign.studies.benchmarks``:
           per-TR average, FIR delays 1-4 on the full scan grid, runs
           trimmed 20/15, 4 contiguous outer folds with gap 5, 10 contiguous
           inner folds with the same gap, penalties 10^-6..10^9 (16),
           standardize "separate", Pearson r), detrend "none", test "none".
           The three subjects share the stimulus and scans, so the runner
           fits all layers of a revision and all subjects as ONE
           multi-target problem (one unit per revision). Timed from the
           call to its return: reading the folder, hashing, fits, the
           store, results.csv / results.json.
himalaya   what published code does: a Python loop over revisions, layers
           and subjects; in each, a loop over the SAME outer folds, z-scoring
           train and test rows separately (X and Y), fitting
           ``himalaya.ridge.RidgeCV(alphas, cv=<the same inner splits>)``
           with per-target penalties chosen on Pearson r
           (``correlation_score``), predicting the test rows and taking
           Pearson r per voxel, then the mean over folds. The design (per-TR
           average, delays, trim, z-score per run) is built with numpy from
           the same cached per-word features. Timed from reading the files
           to the last r. numpy backend; ``--peers himalaya-numpy,
           himalaya-torch`` adds the torch CPU backend.

"Features precomputed" without a model: each revision is a local folder with
a GPT-2 ``config.json`` (n_layer = layers - 1) and a small random weights
file (distinct bytes per revision; the runner only hashes it). The script
plans the study (``plan_study``), writes synthetic per-word features
(layers, words, dim) to ``<out>/cache/features/<features_key>.npy`` and
checks that the runner loaded no model (``models_loaded == 0``). Responses
are planted from a latent word signal that every layer carries with its own
strength, so held-out r is not ~0.

Answers: held-out r per revision x layer x subject x voxel (mean over the
outer folds) from the runner's store vs the loop; fraction within 1e-3, max
|difference|, the fraction of (fold, voxel) penalties that are the same
grid value, and the same per outer fold. Where the penalties differ, a
float64 referee (``referee``) recomputes the inner CV curve on the runner's
own design and says whose choice is the float64 best. Two causes of
differences were seen: near-ties (CV scores within ~1e-6, e.g. the flat
Pearson tail at large penalties, where jaxalign takes the larger penalty),
harmless; and, at the Wehbe2014 grid's smallest penalties (1e-6, 1e-5),
the outer folds at the ends of the session, whose training rows hold two
whole runs: features z-scored per run make such a training design exactly
rank-deficient (the difference of the two runs' indicators is a null row
vector), its null direction survives only as float32 rounding (singular
value ~1e-6), and himalaya's float32 SVD (scipy) puts ~20x too much weight
on it at penalty 1e-6, so its CV score there is wrong and sometimes wins.

Resume: after the timed run, ``run_study`` is called again on the same
folder (every unit done) and its time per unit is reported as a fraction of
the mean unit time (``meta["seconds"]`` of each unit in the store).

Sizes: the defaults are the full problem, which takes hours for the loop on
a 2-core CPU. ``--peer-revisions N --peer-layers K`` runs the loop on
the first N revisions x K layers only and adds, for every revision x layer
pair not run, the mean time of the pairs run (every pair is the same work:
the same shapes and number of fits); the output says so and compares
answers on the pairs run. ``--preset reduced`` is the size measured in
benchmarks/RESULTS.md (2 x 13 x 3 x 2,000 voxels x 600 TRs, dim 256);
``--preset smoke`` runs in seconds (tests). Explicit flags override a
preset. Both sides' times grow linearly with revisions (each is the same
work) and about linearly with voxels: only the per-target part of every fit
grows with them, on top of a per-fit cost (the decompositions) that does
not depend on the voxel count, so the ratio moves with the voxel count.

Shared machines: ``measure`` reports the cores other processes kept busy
("other load"). Two BLAS / XLA threads on two cores shared with another
busy process slow down far more than 2x (threads wait for each other); for
numbers that survive such load, pin one core and one thread for both sides
and compare CPU seconds::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 1 \
        .venv/bin/python benchmarks/sweep.py --preset reduced --peer-revisions 1 --peer-layers 4

Examples
--------
    .venv/bin/python benchmarks/sweep.py --preset reduced
    .venv/bin/python benchmarks/sweep.py --preset reduced --peers himalaya-numpy,himalaya-torch
    .venv/bin/python benchmarks/sweep.py --revisions 1 --voxels 5000 --output-json out/sweep.json
    .venv/bin/python benchmarks/sweep.py --preset reduced --probe-only   # per-fit vs per-target cost
    .venv/bin/python benchmarks/sweep.py --preset reduced --revisions 4 --peers none --processes 1,2
        # the same study by 1 and 2 local worker processes (jaxalign run --launcher local): efficiency
    .venv/bin/python benchmarks/sweep.py --preset reduced --peers none --processes 1,2 --cpus-per-job 1
        # ... with one core per worker, as a job array's tasks each get their own
    .venv/bin/python benchmarks/sweep.py                     # the full size (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark the working tree's jaxalign

import jaxalign  # noqa: E402,F401  (first: guards jaxlib before the jax backend starts)
import numpy as np  # noqa: E402

try:
    from benchmarks import _harness as H
except ImportError:  # run as a script from elsewhere
    import _harness as H

PEERS = ("himalaya-numpy", "himalaya-torch")
SUBJECT_LETTERS = "FHIJKLMN"  # Toneva & Wehbe's subject letters

#: sizes of the presets (None: the flag's own default, the full size)
PRESETS = {
    "full": dict(revisions=4, layers=13, subjects=3, voxels=20000, trs=1200, dim=768),
    "reduced": dict(revisions=2, layers=13, subjects=3, voxels=2000, trs=600, dim=256),
    "smoke": dict(revisions=1, layers=2, subjects=2, voxels=50, trs=200, dim=16),
}


# ---------------------------------------------------------------------------
# the numpy side: design and fold z-scores as published code writes them


def tr_average(per_word, onsets, scan_times):
    """(n_words, d) word features -> (n_scans, d): mean of the words heard in each scan.

    A word belongs to the last scan strictly before its onset (Toneva &
    Wehbe); a scan without words is 0.
    """
    idx = np.searchsorted(scan_times, onsets, side="left") - 1
    ok = idx >= 0
    out = np.zeros((scan_times.size, per_word.shape[1]), np.float64)
    np.add.at(out, idx[ok], per_word[ok])
    counts = np.bincount(idx[ok], minlength=scan_times.size)
    nz = counts > 0
    out[nz] /= counts[nz, None]
    return out


def delay(X, delays, runs):
    """FIR design [X(t - d) for d in delays] side by side, zero across run boundaries."""
    n = X.shape[0]
    blocks = []
    for d in delays:
        block = np.zeros_like(X)
        src = np.arange(n) - d
        ok = (src >= 0) & (src < n)
        ok[ok] &= runs[src[ok]] == runs[np.arange(n)[ok]]
        block[ok] = X[src[ok]]
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def zscore(a):
    """Column z-score (float64 statistics, ddof 0; constant columns -> 0), float32 out."""
    x = np.asarray(a, np.float64)
    mean = x.mean(0)
    sd = x.std(0)
    const = (sd == 0) | (sd <= 100 * np.finfo(np.float32).eps * np.abs(mean))
    return ((x - mean) / np.where(const, np.inf, sd)).astype(np.float32)


def zscore_per_run(X, runs):
    out = np.empty(X.shape, np.float32)
    for r in np.unique(runs):
        m = runs == r
        out[m] = zscore(X[m])
    return out


def design(per_word, onsets, scan_times, scan_runs, keep, delays):
    """One layer's design: per-scan average on the full grid, delays, trim, z-score per run."""
    X = delay(tr_average(per_word, onsets, scan_times), delays, scan_runs)[keep]
    return zscore_per_run(X, scan_runs[keep])


def pearson(y, p):
    y = y - y.mean(0)
    p = p - p.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y * p).sum(0) / np.sqrt((y * y).sum(0) * (p * p).sum(0))


# ---------------------------------------------------------------------------
# synthetic data: a Harry Potter folder, model folders, cached features


def scan_grid(trs, runs, trim):
    """Scan times / runs of the full session whose trimmed scans number ``trs``."""
    kept = np.full(runs, trs // runs)
    kept[: trs % runs] += 1
    per_run = kept + trim[0] + trim[1]
    scan_runs = np.repeat(np.arange(1, runs + 1), per_run)
    times = 2.0 * np.arange(scan_runs.size)  # TR = 2 s
    from jaxalign.timing import trim_mask

    return times, scan_runs, trim_mask(scan_runs, *trim)


def make_words(times, scan_runs, words_per_scan, rng):
    """Word onsets spread at random over every run (strictly after its first scan)."""
    onsets = []
    for r in np.unique(scan_runs):
        t = times[scan_runs == r]
        n = int(round(words_per_scan * t.size))
        onsets.append(np.sort(rng.uniform(t[0] + 0.01, t[-1] + 1.99, n)))
    onsets = np.concatenate(onsets)
    return np.array([f"w{i}" for i in range(onsets.size)]), onsets


def layer_strength(rev, layer, n_revisions, n_layers):
    """How much of the latent word signal a layer carries: peaks past the middle, grows with the revision."""
    centre, width = 0.6 * (n_layers - 1), max(0.35 * n_layers, 1.0)
    return (0.3 + 0.7 * (rev + 1) / n_revisions) * np.exp(-(((layer - centre) / width) ** 2)) + 0.05


def write_hp_folder(folder, args, rng):
    """Toneva & Wehbe format: trimmed subject arrays, scan times/runs, word times, words; returns the latent."""
    times, scan_runs, keep = scan_grid(args.trs, args.runs, args.trim)
    words, onsets = make_words(times, scan_runs, args.words_per_scan, rng)
    latent = rng.standard_normal((words.size, args.latent)).astype(np.float32)
    L = design(latent, onsets, times, scan_runs, np.ones(times.size, bool), args.delays)  # full grid
    folder.mkdir(parents=True)
    for s in range(args.subjects):
        B = rng.standard_normal((L.shape[1], args.voxels)).astype(np.float32)
        sig = L @ B
        sig /= sig.std(0)
        snr = rng.uniform(0.0, 1.5, args.voxels).astype(np.float32)  # some voxels ~null
        Y = snr * sig + rng.standard_normal(sig.shape, dtype=np.float32)
        np.save(folder / f"data_subject_{subject_name(s)}.npy", Y[keep].astype(np.float32))
    np.save(folder / "time_fmri.npy", times)
    np.save(folder / "runs_fmri.npy", scan_runs)
    np.save(folder / "time_words_fmri.npy", onsets)
    np.save(folder / "words_fmri.npy", words)
    return latent


def subject_name(s):
    return SUBJECT_LETTERS[s] if s < len(SUBJECT_LETTERS) else f"S{s}"


def write_model_folders(root, args, rng):
    """One local GPT-2 "checkpoint" per revision: a config and distinct random weight bytes (never loaded)."""
    paths = []
    for r in range(args.revisions):
        d = root / f"rev{r}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({
            "model_type": "gpt2", "n_layer": args.layers - 1, "n_embd": args.dim, "n_head": 1,
            "n_positions": 1024, "vocab_size": 50257, "architectures": ["GPT2LMHeadModel"]}, indent=1))
        (d / "model.safetensors").write_bytes(rng.bytes(1 << 16))  # hashed, never read as weights
        paths.append(d)
    return paths


def study_config(args, hp, model_paths):
    from jaxalign.studies import StudyConfig

    lo, hi, num = args.alphas
    return StudyConfig.model_validate({
        "dataset": {"kind": "harry_potter_fmri", "root": str(hp),
                    "subjects": [subject_name(s) for s in range(args.subjects)]},
        "models": [{"name": f"rev{r}", "path": str(p)} for r, p in enumerate(model_paths)],
        "layers": "all",
        "features": {"kind": "hidden_states", "pooling": "last", "context": "passage"},
        "timing": {"kind": "fmri", "method": "average", "delays": list(args.delays),
                   "trim_start": args.trim[0], "trim_end": args.trim[1]},
        "encoding": {"alphas": {"logspace": [lo, hi, num]},
                     "outer": {"kind": "contiguous", "n_splits": args.outer, "gap": args.gap},
                     "inner": {"kind": "contiguous", "n_splits": args.inner},  # gap: the outer one
                     "standardize": "separate", "detrend": "none", "scoring": "pearson"},
        "stats": {"test": "none"},
        "output": {"formats": list(args.formats)},
    })


def write_features(plan, latent, args, rng):
    """Synthetic per-word features (layers, words, dim) float32 into the runner's cache, one per revision."""
    cache = plan.out / "cache" / "features"
    n_words = latent.shape[0]
    paths = []
    for r, run in enumerate(plan.models):
        assert run.layers == list(range(args.layers)), run.layers
        F = np.empty((args.layers, n_words, args.dim), np.float32)
        for layer in range(args.layers):
            A = rng.standard_normal((args.latent, args.dim), dtype=np.float32) / np.sqrt(args.latent)
            F[layer] = rng.standard_normal((n_words, args.dim), dtype=np.float32)
            F[layer] += np.float32(layer_strength(r, layer, args.revisions, args.layers)) * (latent @ A)
        path = cache / f"{run.features_key}.npy"
        np.save(path, F)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# the two sides


def run_runner(cfg, out):
    from jaxalign.studies.runner import run_study

    return run_study(cfg, out, progress=False)


def runner_answers(plan, args, store_dir=None):
    """{revision label: (r (L, S, T), alpha (L, S, K, T), fold r (L, S, K, T))} from the store (``plan``'s,
    or ``store_dir``); unit seconds."""
    from jaxalign.studies import ResultsStore

    store = ResultsStore(plan.out / "store" if store_dir is None else store_dir)
    out, seconds = {}, []
    subjects = [subject_name(s) for s in range(args.subjects)]
    for u in plan.fits:
        unit = store.read_unit(u.key)
        assert list(unit.labels["subject"]) == subjects, unit.labels["subject"]
        out[u.model] = tuple(np.asarray(unit.arrays[k], np.float64) for k in ("score", "alpha", "fold_score"))
        seconds.append(float(unit.meta["seconds"]))
    return out, seconds


def run_workers(cfg, out, work, args, log, plan=None):
    """The study as a job array of N local workers (``jaxalign.studies.launch``) for each N in
    ``args.processes``, each on a fresh folder holding a copy of the feature cache; rows with the
    time, parallel efficiency vs one worker, and the largest score difference vs ``out``'s run: over
    every target, and over the targets whose penalties agree in every outer fold (another process
    runs other thread counts, so float32 sums round otherwise; where two penalties' inner scores
    nearly tie, that can flip the choice, and r moves by the two penalties' difference)."""
    from jaxalign.studies import launch, load_results

    ref = load_results(out / "store").table.sort_values(["model", "layer", "subject", "target"])
    ref_answers = None if plan is None else runner_answers(plan, args)[0]
    rows, base = [], None
    for n in args.processes:
        dest = work / f"workers{n}"
        shutil.copytree(out / "cache" / "features", dest / "cache" / "features")
        m = H.measure(lambda dest=dest, n=n: launch(cfg, dest, launcher="local", jobs=n, progress=False,
                                                    cpus_per_job=args.cpus_per_job))
        got = load_results(dest / "store").table.sort_values(["model", "layer", "subject", "target"])
        assert len(got) == len(ref), (len(got), len(ref))
        dr = float(np.max(np.abs(got["score"].to_numpy() - ref["score"].to_numpy())))
        same, dr_same = None, None
        if ref_answers is not None:
            mine = runner_answers(plan, args, dest / "store")[0]
            agree = [(np.all(mine[k][1] == ref_answers[k][1], axis=2), np.abs(mine[k][0] - ref_answers[k][0]))
                     for k in ref_answers]
            same = float(np.mean(np.concatenate([a.ravel() for a, _ in agree])))
            dr_same = max((float(d[a].max()) for a, d in agree if a.any()), default=0.0)
        base = m.seconds if n == 1 else base
        eff = base / (n * m.seconds)
        busy = [len(t["computed"]) for t in m.result.tasks]
        cpus = [t.get("cpus") for t in m.result.tasks]
        penalties = "" if same is None else (f"; the same penalties in every fold for {100 * same:.2f}% of targets, "
                                             f"max |dr| among them {dr_same:.1e}")
        log(f"{n} worker(s)        : {m.seconds:9.2f} s  (units per worker {busy}, CPUs {cpus}; parallel efficiency "
            f"{100 * eff:.0f}% vs 1 worker; max |dr| vs the in-process run {dr:.1e}{penalties})")
        # the workers are processes of their own: the machine's busy cores are theirs (and ours, waiting)
        busy_cores = None if m.other_cores is None else m.other_cores + m.cores_used
        rows.append(dict(method=f"jaxalign launch, {n} local worker(s)", time_s=m.seconds, cpu_s=m.cpu_s,
                         peak_mib=m.peak_mib, cores_used=busy_cores, other_cores=None,
                         workers=n, efficiency=eff, max_dr_vs_inprocess=dr, units_per_worker=busy, cpus=cpus,
                         same_penalties_vs_inprocess=same, max_dr_same_penalties=dr_same,
                         note=f"parallel efficiency {100 * eff:.0f}% (T(1) / (N T(N)), target >= 80%); "
                              f"CPUs per worker {cpus}; cores used: the machine's busy cores, the workers'; "
                              f"units per worker {busy}; scores vs the in-process run: max |dr| {dr:.1e}"
                              f"{penalties}"))
    return rows


def run_peer(backend_name, hp, feature_paths, layers, args, batch, log):
    """The published-code loop over ``feature_paths`` (one per revision) and ``layers``.

    Returns ({revision: (r (len(layers), S, T), alpha and fold r (len(layers), S, K, T))},
    dict of seconds: ``setup`` (reading the folder, fold z-scores of the
    targets), ``layers`` (wall time of each revision x layer, reading its
    features and building its design included) and ``fit`` (in RidgeCV fit +
    predict)).
    """
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score

    from jaxalign.ridge import ContiguousKFold

    backend = set_backend(backend_name, on_error="raise")
    t_start, c_start = time.perf_counter(), time.process_time()
    alphas = np.logspace(*args.alphas[:2], int(args.alphas[2])).astype(np.float32)
    try:
        times = np.load(hp / "time_fmri.npy")
        scan_runs = np.load(hp / "runs_fmri.npy")
        onsets = np.load(hp / "time_words_fmri.npy")
        keep = np.zeros(times.size, bool)
        for r in np.unique(scan_runs):  # trim 20 / 15 scans per run
            idx = np.flatnonzero(scan_runs == r)
            keep[idx[args.trim[0]: idx.size - args.trim[1]]] = True
        Ys = [np.load(hp / f"data_subject_{subject_name(s)}.npy") for s in range(args.subjects)]
        n = Ys[0].shape[0]
        outer = list(ContiguousKFold(args.outer, gap=args.gap).split(n))
        # targets z-scored per fold once per subject (train and test separately)
        Yfolds = [[(zscore(Y[tr]), zscore(Y[te])) for tr, te in outer] for Y in Ys]
        fit_s = 0.0
        results, per_layer, per_layer_cpu = {}, [], []
        setup_s, setup_cpu = time.perf_counter() - t_start, time.process_time() - c_start
        for r, path in enumerate(feature_paths):
            per_word = np.load(path, mmap_mode="r")
            R = np.empty((len(layers), args.subjects, args.voxels))
            A = np.empty((len(layers), args.subjects, len(outer), args.voxels))
            Fr = np.empty_like(A)
            for i, layer in enumerate(layers):
                t_layer, c_layer = time.perf_counter(), time.process_time()
                X = design(np.asarray(per_word[layer]), onsets, times, scan_runs, keep, args.delays)
                for s in range(args.subjects):
                    fold_r = []
                    for k, (tr, te) in enumerate(outer):
                        Xtr, Xte = zscore(X[tr]), zscore(X[te])
                        Ytr, Yte = Yfolds[s][k]
                        inner = list(ContiguousKFold(args.inner, gap=args.gap).split(len(tr)))
                        t0 = time.perf_counter()
                        model = RidgeCV(alphas=alphas, cv=inner, fit_intercept=False,
                                        solver_params=dict(score_func=correlation_score, warn=False, **batch))
                        model.fit(Xtr, Ytr)
                        pred = np.asarray(backend.to_numpy(model.predict(Xte)), np.float64)
                        fit_s += time.perf_counter() - t0
                        fold_r.append(pearson(Yte.astype(np.float64), pred))
                        A[i, s, k] = np.asarray(backend.to_numpy(model.best_alphas_), np.float64)
                    Fr[i, s] = fold_r
                    R[i, s] = np.mean(fold_r, axis=0)
                per_layer.append(time.perf_counter() - t_layer)
                per_layer_cpu.append(time.process_time() - c_layer)
                log(f"  {backend_name}: rev{r} layer {layer} in {per_layer[-1]:.1f} s (CPU {per_layer_cpu[-1]:.1f} s)")
            results[f"rev{r}"] = (R, A, Fr)
    finally:
        set_backend("numpy")
    return results, dict(setup=setup_s, layers=per_layer, fit=fit_s, setup_cpu=setup_cpu, layers_cpu=per_layer_cpu)


def referee(plan, hp, feature_paths, layers, ours, theirs, args, log):
    """Float64 judge of the (fold, voxel) penalty choices where the two sides differ.

    For each revision x layer the peer ran and each outer fold, the inner CV
    curve (mean over inner folds of the validation Pearson r, every penalty)
    of the voxels whose chosen penalties differ is recomputed in float64
    (numpy SVD of each inner training set: the exact ridge solution for the
    data as given) on the runner's own design (``runner._design``, the same
    float32 bits it fitted). A side's choice is "best" when its float64 score is
    within 2e-6 of the float64 maximum (jaxalign sends CV scores within 1e-6
    to the larger penalty; float32 scores carry ~1e-7 of rounding).
    """
    from jaxalign.ridge import ContiguousKFold
    from jaxalign.studies import runner

    subjects = plan.groups[0]
    targets = runner._Targets(plan, subjects)
    Ys = [np.load(hp / f"data_subject_{subject_name(s)}.npy") for s in range(args.subjects)]
    alphas = args.alpha_grid
    lg = np.log(alphas)
    outer = list(ContiguousKFold(args.outer, gap=args.gap).split(Ys[0].shape[0]))
    loss_ours, loss_theirs = [], []
    t0 = time.perf_counter()
    for r, path in enumerate(feature_paths[: len(theirs)]):
        a_ours, a_theirs = ours[f"rev{r}"][1], theirs[f"rev{r}"][1]
        per_word = np.load(path, mmap_mode="r")
        for i, layer in enumerate(layers):
            i1 = np.abs(np.log(a_ours[layer])[..., None] - lg).argmin(-1)  # (S, K, T)
            i2 = np.abs(np.log(np.maximum(a_theirs[i], 1e-300))[..., None] - lg).argmin(-1)
            if not (i1 != i2).any():
                continue
            X = runner._design(plan, np.asarray(per_word[layer: layer + 1]), targets, subjects)[0]
            for k, (tr, _) in enumerate(outer):
                cols = [np.flatnonzero(i1[s, k] != i2[s, k]) for s in range(args.subjects)]
                if not any(c.size for c in cols):
                    continue
                Xtr = zscore(X[tr]).astype(np.float64)
                Ytr = np.concatenate([zscore(Ys[s][tr])[:, c] for s, c in enumerate(cols)], 1).astype(np.float64)
                curve = np.zeros((alphas.size, Ytr.shape[1]))
                inner = list(ContiguousKFold(args.inner, gap=args.gap).split(len(tr)))
                for itr, iva in inner:
                    U, sv, Vt = np.linalg.svd(Xtr[itr], full_matrices=False)
                    UtY = U.T @ Ytr[itr]
                    XvV = Xtr[iva] @ Vt.T
                    yv = Ytr[iva] - Ytr[iva].mean(0)
                    for a, alpha in enumerate(alphas):
                        pred = (XvV * (sv / (sv**2 + alpha))) @ UtY
                        curve[a] += pearson(yv, pred)
                curve /= len(inner)
                best = curve.max(0)
                j1 = np.concatenate([i1[s, k, c] for s, c in enumerate(cols)])
                j2 = np.concatenate([i2[s, k, c] for s, c in enumerate(cols)])
                idx = np.arange(curve.shape[1])
                loss_ours.append(best - curve[j1, idx])
                loss_theirs.append(best - curve[j2, idx])
    if not loss_ours:
        return dict(referee_pairs=0)
    lo, lt = np.concatenate(loss_ours), np.concatenate(loss_theirs)
    tol = 2e-6  # float32 CV scores are exact to ~1e-7; jaxalign sends ties within 1e-6 to the larger penalty
    out = dict(referee_pairs=int(lo.size), referee_jaxalign_best=float(np.mean(lo <= tol)),
               referee_peer_best=float(np.mean(lt <= tol)), referee_jaxalign_max_loss=float(lo.max()),
               referee_peer_max_loss=float(lt.max()), referee_s=time.perf_counter() - t0)
    log(f"  float64 referee on the {lo.size} (fold, voxel) choices that differ ({out['referee_s']:.1f} s): "
        f"jaxalign's penalty is the float64 best (within 2e-6) for {100 * out['referee_jaxalign_best']:.1f}%, "
        f"the loop's for {100 * out['referee_peer_best']:.1f}%; largest float64 CV-score loss: jaxalign "
        f"{out['referee_jaxalign_max_loss']:.1e}, loop {out['referee_peer_max_loss']:.1e}")
    return out


def probe(args, log):
    """Split one fit's cost into a per-fit part and a per-target part, on both sides (CPU seconds, warm).

    jaxalign: ``ridge.ridge_cv`` on a (layers, n_train, p) design and the
    inner splits of one outer fold (what the runner runs per outer fold), with
    ``subjects x voxels`` targets and with ``subjects x 10``. himalaya: one
    ``RidgeCV`` fit (one layer, one subject, one outer fold) with ``voxels``
    targets and with 10. Random data of the benchmark's shapes.
    """
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score

    from jaxalign.ridge import ContiguousKFold, ridge_cv

    rng = np.random.default_rng(args.seed)
    n = args.trs - args.trs // args.outer - 2 * args.gap  # a middle outer fold's training rows
    p = len(args.delays) * args.dim
    X = zscore(rng.standard_normal((n, p), dtype=np.float32))
    XL = np.broadcast_to(X, (args.layers, n, p))
    Y = zscore(rng.standard_normal((n, args.subjects * args.voxels), dtype=np.float32))
    inner = list(ContiguousKFold(args.inner, gap=args.gap).split(n))
    alphas = args.alpha_grid

    def cpu(fn):
        fn()  # warm (JIT compile, caches)
        c = time.process_time()
        fn()
        return time.process_time() - c

    out, stacked = {}, {}

    def fit(T):
        res = ridge_cv(XL, Y[:, :T], alphas, inner, scoring="pearson", progress=False)
        stacked[T] = res.stacked_folds
        return np.asarray(res.coef)

    for T in (args.subjects * 10, args.subjects * args.voxels):
        out[f"jaxalign_{T}"] = cpu(lambda: fit(T))
    # the same fit without the stacked sweep (the engine's choice switched off), for comparison
    import jaxalign.ridge._engine as engine

    n_stacked = stacked[args.subjects * args.voxels]
    choose, engine._stack_pays = engine._stack_pays, lambda *a, **k: False
    try:
        unstacked = cpu(lambda: fit(args.subjects * args.voxels))
    finally:
        engine._stack_pays = choose
    stacked[args.subjects * args.voxels] = n_stacked
    for T in (10, args.voxels):
        out[f"himalaya_{T}"] = cpu(lambda: RidgeCV(
            alphas=alphas.astype(np.float32), cv=inner, fit_intercept=False,
            solver_params=dict(score_func=correlation_score, warn=False)).fit(X, Y[:, :T]))
    S, V, L, K = args.subjects, args.voxels, args.layers, args.outer
    j_small, j_big = out[f"jaxalign_{S * 10}"], out[f"jaxalign_{S * V}"]
    h_small, h_big = out["himalaya_10"], out[f"himalaya_{V}"]
    j_target = (j_big - j_small) / (S * V - S * 10)  # per target (all layers, one outer fold)
    h_target = (h_big - h_small) / (V - 10)  # per target (one layer, one outer fold)
    res = dict(n_train=n, p=p, cpu_s=out, jaxalign_fixed_per_fold_s=j_small - S * 10 * j_target,
               jaxalign_per_target_per_fold_s=j_target, himalaya_fixed_per_fit_s=h_small - 10 * h_target,
               himalaya_per_target_per_fit_s=h_target,
               per_target_ratio=(h_target * L) / j_target,  # himalaya over jaxalign, per target x layer x fold
               stacked_folds=stacked[S * V], unstacked_cpu_s=unstacked)
    log(f"probe     : one outer fold (n_train {n}, p {p}), CPU s, warm: jaxalign ridge_cv on {L} layers: "
        f"{j_small:.2f} s with {S * 10} targets, {j_big:.2f} s with {S * V}; himalaya RidgeCV on 1 layer: "
        f"{h_small:.2f} s with 10 targets, {h_big:.2f} s with {V}; jaxalign with {S * V} targets took the "
        f"stacked sweep on {stacked[S * V]} of {len(inner)} folds, {unstacked:.2f} s without it")
    log(f"probe     : per target x layer x outer fold, himalaya / jaxalign = {res['per_target_ratio']:.2f}; "
        f"per revision at V voxels/subject ~ himalaya {L * S * K} x ({res['himalaya_fixed_per_fit_s']:.2f} + "
        f"V x {1e3 * h_target:.3f} ms), jaxalign {K} x ({res['jaxalign_fixed_per_fold_s']:.2f} + "
        f"{S} V x {1e3 * j_target:.3f} ms) s (fits only)")
    return res


def agreement(ours, theirs, layers, alphas):
    """Fraction of voxels with |r - r'| <= 1e-3, max |r - r'|, fraction of identical per-fold penalties,
    and per outer fold: fraction of fold r within 1e-3 and of identical penalties."""
    d, same, near, fold_d, fold_same = [], [], [], [], []
    lg = np.log(alphas)
    for rev, (r2, a2, f2) in theirs.items():  # the revisions and layers the peer ran
        r1, a1, f1 = (x[layers] for x in ours[rev])
        d.append(np.abs(r1 - r2).ravel())
        i1 = np.abs(np.log(a1)[..., None] - lg).argmin(-1)
        i2 = np.abs(np.log(np.maximum(a2, 1e-300))[..., None] - lg).argmin(-1)
        same.append((i1 == i2).ravel())
        # voxels beyond 1e-3: did a fold choose another penalty there?
        far = np.abs(r1 - r2) > 1e-3
        near.append((far & (i1 != i2).any(axis=-2)).ravel()[far.ravel()])
        fold_d.append(np.moveaxis(np.abs(f1 - f2), -2, 0).reshape(f1.shape[-2], -1))
        fold_same.append(np.moveaxis(i1 == i2, -2, 0).reshape(f1.shape[-2], -1))
    d = np.concatenate(d)
    far_with_alpha = np.concatenate(near) if near else np.zeros(0, bool)
    fold_d, fold_same = np.concatenate(fold_d, 1), np.concatenate(fold_same, 1)
    return dict(within_1e3=float(np.mean(d <= 1e-3)), max_dr=float(np.nanmax(d)),
                same_alpha=float(np.mean(np.concatenate(same))),
                n_beyond=int(np.sum(d > 1e-3)),
                beyond_with_other_alpha=float(far_with_alpha.mean()) if far_with_alpha.size else None,
                fold_within_1e3=[float(x) for x in np.mean(fold_d <= 1e-3, 1)],
                fold_max_dr=[float(x) for x in np.nanmax(fold_d, 1)],
                fold_same_alpha=[float(x) for x in np.mean(fold_same, 1)])


# ---------------------------------------------------------------------------
# driver


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__[
                                     __doc__.index("Sizes:"):])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full",
                    help="sizes: full (default, issue 11), reduced (RESULTS.md), smoke (seconds); "
                         "explicit size flags override it")
    ap.add_argument("--revisions", type=int, default=None, help="model revisions (full: 4)")
    ap.add_argument("--layers", type=int, default=None, help="hidden states per revision, embeddings "
                                                                "included (full: 13 = GPT-2 small)")
    ap.add_argument("--subjects", type=int, default=None, help="subjects, same voxel count (full: 3)")
    ap.add_argument("--voxels", type=int, default=None, help="voxels per subject (full: 20000)")
    ap.add_argument("--trs", type=int, default=None, help="TRs per subject after trimming (full: 1200)")
    ap.add_argument("--dim", type=int, default=None, help="features per word and layer (full: 768)")
    ap.add_argument("--runs", type=int, default=4, help="scanner runs (default 4)")
    ap.add_argument("--words-per-scan", type=float, default=5176 / 1351,
                    help="words per scan, trimmed scans included (default 5176/1351, chapter 9)")
    ap.add_argument("--latent", type=int, default=16, help="dimension of the planted word signal")
    ap.add_argument("--alphas", default="-6,9,16", help="log10 grid 'start,stop,num' (default -6,9,16)")
    ap.add_argument("--outer", type=int, default=4, help="contiguous outer folds (default 4)")
    ap.add_argument("--inner", type=int, default=10, help="contiguous inner folds (default 10)")
    ap.add_argument("--gap", type=int, default=5, help="gap of outer and inner folds (default 5)")
    ap.add_argument("--trim", default="20,15", help="TRs trimmed at the start,end of each run")
    ap.add_argument("--delays", default="1,2,3,4", help="FIR delays in TRs")
    ap.add_argument("--formats", default="json,csv",
                    help="runner output formats (default json,csv; add png for the figures)")
    ap.add_argument("--peers", default="himalaya-numpy",
                    help="comma-separated: " + ", ".join(PEERS) + " or 'none' (default himalaya-numpy)")
    ap.add_argument("--peer-revisions", type=int, default=None,
                    help="run the loop on the first N revisions only (default: all); see --peer-layers")
    ap.add_argument("--peer-layers", type=int, default=None,
                    help="run the loop on the first K layers only (default: all); the time of the pairs not "
                         "run is added as their number x the mean measured revision x layer time (every "
                         "pair is the same work); answers compared on the pairs run")
    ap.add_argument("--probe-only", action="store_true",
                    help="no study: split one fit's CPU time into a per-fit and a per-target part on both "
                         "sides at these sizes (random data), print it and exit")
    ap.add_argument("--no-referee", action="store_true",
                    help="skip the float64 recomputation of the inner CV where the penalty choices differ")
    ap.add_argument("--himalaya-batch-budget", default="512MiB",
                    help="memory aimed at per himalaya target batch (default 512MiB)")
    ap.add_argument("--workdir", default=None,
                    help="folder for the synthetic data and the results (default: a temporary one, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", default=None, metavar="N,M,...",
                    help="also run the study as a job array of N local worker processes "
                         "(jaxalign.studies.launch, launcher 'local') for each N, on fresh copies of the "
                         "feature cache, and report parallel efficiency T(1) / (N T(N)) against one worker "
                         "and the answers against the in-process run (e.g. 1,2,4)")
    ap.add_argument("--cpus-per-job", type=int, default=None, metavar="C",
                    help="with --processes: CPUs each worker is pinned to (default: the launcher's even "
                         "share of this machine's CPUs; 1 measures efficiency at a fixed core per worker)")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep: freed memory stays in this process for reuse, as the jaxalign command sets it "
                         "(jaxalign._core.memory.keep_freed_memory; both sides run here); default: glibc's")
    ap.add_argument("--output-json", default=None, help="write every number to this file")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    lo, hi, num = args.alphas.split(",")
    args.alphas = (float(lo), float(hi), int(num))
    args.alpha_grid = np.logspace(*args.alphas[:2], args.alphas[2])
    args.trim = tuple(int(x) for x in args.trim.split(","))
    args.delays = [int(x) for x in args.delays.split(",")]
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        ap.error(f"--peers: unknown {bad}; known: {', '.join(PEERS)}")
    args.peer_list = peers
    if args.processes is not None:
        try:
            args.processes = sorted({int(x) for x in args.processes.split(",") if x.strip()})
        except ValueError:
            ap.error(f"--processes: a comma-separated list of integers, got {args.processes!r}")
        if not args.processes or min(args.processes) < 1:
            ap.error("--processes: every count must be >= 1")
        if 1 not in args.processes:
            args.processes = [1] + args.processes  # efficiency is measured against one worker
    if args.layers < 2:
        ap.error("--layers: at least 2 (embeddings + one block)")
    return args


def main(argv=None):
    args = parse_args(argv)

    def log(*a):
        print(*a, flush=True)

    # as the jaxalign command's process does (jaxalign.cli.entry): freed memory kept for reuse; both
    # sides run in this process, so both get it (--malloc default leaves glibc as it is)
    kept = False
    if args.malloc == "keep":
        from jaxalign._core.memory import keep_freed_memory

        kept = keep_freed_memory()
    info = H.machine_info()
    log("=" * 78)
    log("jaxalign sweep benchmark: study runner vs a himalaya RidgeCV loop")
    log("=" * 78)
    log(H.format_machine_info(info))
    log(f"malloc    : {'freed memory kept for reuse (as the jaxalign command)' if kept else 'glibc default'}")
    sizes = dict(revisions=args.revisions, layers=args.layers, subjects=args.subjects, voxels=args.voxels,
                 trs=args.trs, dim=args.dim)
    full = PRESETS["full"]
    log(f"problem   : {args.revisions} revisions x {args.layers} layers x {args.subjects} subjects x "
        f"{args.voxels} voxels x {args.trs} TRs, {args.dim} features/word ({len(args.delays) * args.dim} "
        f"with {len(args.delays)} delays); {args.outer} outer x {args.inner} inner contiguous folds, gap "
        f"{args.gap}; {args.alphas[2]} penalties 10^{args.alphas[0]:g}..10^{args.alphas[1]:g}; preset "
        f"{args.preset}" + ("" if sizes == full else " (the issue's full size: 4 x 13 x 3 x 20000 x 1200, dim 768)"))
    log("scaling   : times grow linearly with revisions (the same work each) and about linearly with voxels "
        "(the per-target part of each fit; each fit also has a per-fit cost that does not grow with them)")
    idle = H.log_background_load(log)
    if args.probe_only:
        res = probe(args, log)
        if args.output_json:
            H.write_json(args.output_json, dict(benchmark="sweep-probe", sizes=sizes, machine=info,
                                                idle_load_cores=idle, probe=res,
                                                args={k: v for k, v in vars(args).items() if k != "alpha_grid"}))
        return 0

    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="jaxalign-sweep-")
        work = Path(tmp)
    else:
        work = Path(args.workdir).expanduser().resolve()
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"--workdir {work} is not empty")
        work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, work, info, idle, sizes, log)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args, work, info, idle, sizes, log):
    from jaxalign.studies.runner import plan_study

    try:
        from benchmarks.ridge import himalaya_batch_params
    except ImportError:  # run as a script from elsewhere
        from ridge import himalaya_batch_params

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    hp, out = work / "hp", work / "study"
    latent = write_hp_folder(hp, args, rng)
    model_paths = write_model_folders(work / "models", args, rng)
    cfg = study_config(args, hp, model_paths)
    plan = plan_study(cfg, out)
    assert len(plan.fits) == args.revisions, "the subjects were not grouped into one fit per revision"
    feature_paths = write_features(plan, latent, args, rng)
    n_words = latent.shape[0]
    data_bytes = sum(p.stat().st_size for p in list(hp.iterdir()) + feature_paths)
    log(f"data      : {work}: {n_words} words, {plan.dataset.recordings[plan.groups[0][0]].data.shape[0]} "
        f"kept scans; features {args.revisions} x ({args.layers}, {n_words}, {args.dim}) float32 in the "
        f"runner's cache; {H.format_bytes(data_bytes)} on disk, written in {time.perf_counter() - t0:.1f} s "
        "(not timed)")
    del plan
    log("-" * 78)
    rows = []

    # ------------------------------------------------------------ jaxalign
    m = H.measure(lambda: run_runner(cfg, out))
    summary = m.result
    assert summary.models_loaded == 0, f"the runner loaded {summary.models_loaded} model(s)"
    assert len(summary.computed) == args.revisions and not summary.reused
    plan = plan_study(cfg, out)
    ours, unit_s = runner_answers(plan, args)
    log(f"jaxalign run_study : {m.seconds:9.2f} s  ({len(summary.computed)} units computed, "
        f"{summary.models_loaded} models loaded; units {', '.join(f'{s:.1f}' for s in unit_s)} s, "
        f"the first incl. JIT compile)")
    jrow = dict(method="jaxalign run_study", time_s=m.seconds, cpu_s=m.cpu_s, peak_mib=m.peak_mib,
                cores_used=m.cores_used, other_cores=m.other_cores, units=len(unit_s), x_cpu=1.0,
                unit_s=unit_s, models_loaded=summary.models_loaded, x_jaxalign=1.0,
                note=f"{len(unit_s)} units (one per revision: all layers x subjects) of "
                     + ", ".join(f"{x:.1f}" for x in unit_s) + " s (the first incl. JIT compile); outside "
                     f"the units (reading, hashing, store, tables) {m.seconds - sum(unit_s):.1f} s")
    rows.append(jrow)

    # ------------------------------------------------------------ resume
    mr = H.measure(lambda: run_runner(cfg, out))
    again = mr.result
    assert not again.computed and len(again.reused) == args.revisions and again.models_loaded == 0
    mean_unit = float(np.mean(unit_s))
    # the first unit carries the JIT compile: the later ones are the steady state
    steady = float(np.mean(unit_s[1:])) if len(unit_s) > 1 else None
    per_unit = mr.seconds / len(again.reused)
    resume = dict(seconds=mr.seconds, units=len(again.reused), per_unit_s=per_unit, mean_unit_s=mean_unit,
                  fraction_of_unit=per_unit / mean_unit, steady_unit_s=steady,
                  fraction_of_steady_unit=None if steady is None else per_unit / steady)
    log(f"resume (all done)  : {mr.seconds:9.2f} s for {len(again.reused)} units = {per_unit:.3f} s/unit, "
        f"{100 * resume['fraction_of_unit']:.2f}% of the mean unit time ({mean_unit:.1f} s)"
        + ("" if steady is None else f", {100 * resume['fraction_of_steady_unit']:.2f}% of a unit after the "
           f"first ({steady:.1f} s, no compile)") + "; target < 2%")
    rows.append(dict(method="jaxalign run_study again (resume, all done)", time_s=mr.seconds, cpu_s=mr.cpu_s,
                     peak_mib=mr.peak_mib, cores_used=mr.cores_used, other_cores=mr.other_cores,
                     note=f"{100 * resume['fraction_of_unit']:.2f}% of a unit per unit"))

    # ------------------------------------------------------------ workers
    workers = []
    if args.processes:
        workers = run_workers(cfg, out, work, args, log, plan)
        rows.extend(workers)

    # ------------------------------------------------------------ peers
    n_train = args.trs - args.trs // args.outer
    n_val = -(-n_train // args.inner)
    batch = himalaya_batch_params(n_train, len(args.delays) * args.dim, args.voxels, args.alphas[2], args.inner,
                                  H.parse_bytes(args.himalaya_batch_budget))
    peer_answers = {}
    for name in args.peer_list:
        try:
            import himalaya.ridge  # noqa: F401
            if name == "himalaya-torch":
                import torch  # noqa: F401
        except ImportError as exc:
            log(f"{name:<19s}: skipped ({exc})")
            continue
        backend = {"himalaya-numpy": "numpy", "himalaya-torch": "torch"}[name]
        n_rev = args.revisions if args.peer_revisions is None else min(args.peer_revisions, args.revisions)
        layers = list(range(args.layers if args.peer_layers is None else min(args.peer_layers, args.layers)))
        try:
            mp = H.measure(lambda: run_peer(backend, hp, feature_paths[:n_rev], layers, args, batch, log))
        except Exception as exc:
            log(f"{name:<19s}: FAILED {type(exc).__name__}: {exc}")
            if args.verbose:
                traceback.print_exc()
            rows.append(dict(method=name + " loop", peer=name, error=f"{type(exc).__name__}: {exc}"))
            continue
        theirs, secs = mp.result
        peer_answers[name] = theirs
        agree = agreement(ours, theirs, layers, args.alpha_grid)
        if not args.no_referee:
            agree.update(referee(plan, hp, feature_paths, layers, ours, theirs, args, log))
        done, todo = n_rev * len(layers), args.revisions * args.layers
        fits = done * args.subjects * args.outer
        if done == todo:
            total, total_cpu, how = mp.seconds, mp.cpu_s, "measured"
        else:  # every revision x layer is the same work (same shapes, same fits): setup once + the mean one
            total = mp.seconds + (todo - done) * float(np.mean(secs["layers"]))
            total_cpu = mp.cpu_s + (todo - done) * float(np.mean(secs["layers_cpu"]))
            how = (f"measured on {done} of {todo} revision x layer pairs ({mp.seconds:.1f} s: setup "
                   f"{secs['setup']:.1f} s + {', '.join(f'{x:.1f}' for x in secs['layers'])} s), "
                   f"+ {todo - done} x their mean")
        log(f"{name + ' loop':<19s}: {total:9.2f} s  ({total / m.seconds:.2f}x jaxalign; CPU {total_cpu:.1f} s, "
            f"{total_cpu / m.cpu_s:.2f}x jaxalign's; {how}; RidgeCV fit + "
            f"predict {secs['fit']:.1f} s); r within 1e-3: {agree['within_1e3']:.6f}, "
            f"max |dr| {agree['max_dr']:.2e}, same penalty {agree['same_alpha']:.4f}")
        rows.append(dict(method=name + " loop" + ("" if done == todo else " (extrapolated)"),
                         peer=name, time_s=total, measured_s=mp.seconds, measured_pairs=done,
                         setup_s=secs["setup"], pair_s=secs["layers"], pair_cpu_s=secs["layers_cpu"],
                         cpu_s=total_cpu, measured_cpu_s=mp.cpu_s, x_cpu=total_cpu / m.cpu_s,
                         peak_mib=mp.peak_mib, cores_used=mp.cores_used, other_cores=mp.other_cores,
                         x_jaxalign=total / m.seconds, fit_s=secs["fit"], **agree,
                         note=f"{how}; {fits} RidgeCV fits run (fit + predict {secs['fit']:.1f} s); answers "
                              f"compared on {n_rev} revision(s) x {len(layers)} layer(s); batches "
                              + "/".join(str(batch[k]) for k in ("n_targets_batch", "n_alphas_batch",
                                                                 "n_targets_batch_refit"))
                              + " (targets/alphas/refit)"))

    # ------------------------------------------------------------ report
    size = f"{args.revisions}x{args.layers}x{args.subjects}x{args.voxels}x{args.trs}, dim {args.dim}"
    log(f"\n## Results ({size}; time: wall seconds end to end; CPU: process CPU seconds; peak: MiB of RSS "
        "above the baseline; agreement: held-out r per revision x layer x subject x voxel vs jaxalign)\n")
    table = H.print_table(rows, [
        ("method", "method"), ("time_s", "time (s)", ".2f"), ("cpu_s", "CPU (s)", ".1f"),
        ("peak_mib", "peak (MiB)", ".0f"), ("x_jaxalign", "time / jaxalign", ".2f"),
        ("x_cpu", "CPU / jaxalign", ".2f"),
        ("within_1e3", "r within 1e-3", ".6f"), ("max_dr", "max |Δr|", ".2e"),
        ("same_alpha", "same penalty", ".4f"),
        ("cores_used", "cores used", ".2f"), ("other_cores", "other load", ".2f"),
    ])
    log("")
    for r in rows:
        if r.get("note") or r.get("error"):
            log(f"- {r['method']}: " + (r.get("error") or r["note"]))
    worst = max(resume["fraction_of_unit"], resume["fraction_of_steady_unit"] or 0.0)
    log(f"- resume overhead: {resume['per_unit_s']:.3f} s per unit = "
        f"{100 * resume['fraction_of_unit']:.2f}% of the mean unit ({resume['mean_unit_s']:.2f} s)"
        + ("" if steady is None else f", {100 * resume['fraction_of_steady_unit']:.2f}% of a unit without "
           f"compile ({steady:.2f} s)") + f" (target < 2%: {'met' if worst < 0.02 else 'NOT met'})")
    for name in peer_answers:
        row = next(r for r in rows if r.get("peer") == name)
        if row["n_beyond"]:
            log(f"- {name}: {row['n_beyond']} voxel(s) differ by more than 1e-3; "
                + ("" if row["beyond_with_other_alpha"] is None else
                   f"{100 * row['beyond_with_other_alpha']:.0f}% of them chose another penalty in some fold"))
        log(f"- {name}, per outer fold: fold r within 1e-3 "
            + ", ".join(f"{x:.4f}" for x in row["fold_within_1e3"]) + "; max |Δr| "
            + ", ".join(f"{x:.1e}" for x in row["fold_max_dr"]) + "; same penalty "
            + ", ".join(f"{x:.4f}" for x in row["fold_same_alpha"]))
        if row.get("referee_pairs"):
            log(f"- {name}: of the {row['referee_pairs']} (fold, voxel) penalty choices that differ, a float64 "
                f"recomputation of the inner CV finds jaxalign's choice best (within 2e-6) for "
                f"{100 * row['referee_jaxalign_best']:.1f}% (largest score loss "
                f"{row['referee_jaxalign_max_loss']:.1e}) and the loop's for {100 * row['referee_peer_best']:.1f}% "
                f"(largest loss {row['referee_peer_max_loss']:.1e})")
        speed = row["x_jaxalign"]
        how = f"{speed:.2f}x faster" if speed >= 1 else f"{1 / speed:.2f}x SLOWER"
        log(f"- {name}: jaxalign is {how} end to end (CPU seconds: loop / jaxalign = {row['x_cpu']:.2f}) "
            f"(target >= 10x faster: {'met' if speed >= 10 else 'NOT met'} at this size)")
    log(f"- problem sizes: n_train ~{n_train}, inner validation ~{n_val} rows, "
        f"p = {len(args.delays) * args.dim} features")
    log("- times grow linearly with revisions and about linearly with voxels (per-target work over a per-fit "
        "cost); measure the full size with the defaults")
    disturbed = [r for r in rows if (r.get("other_cores") or 0) > 0.25 and r.get("time_s", 0) > 1]
    if disturbed:
        log("- WARNING: other processes kept cores busy during "
            + ", ".join(f"{r['method']} ({r['other_cores']:.2f} cores)" for r in disturbed)
            + ": those timings are not clean")

    if args.output_json:
        H.write_json(args.output_json, dict(
            benchmark="sweep", args={k: v for k, v in vars(args).items() if k != "alpha_grid"},
            sizes=sizes, machine=info, idle_load_cores=idle, rows=rows, resume=resume,
            models_loaded=summary.models_loaded, n_words=n_words, table_markdown=table,
        ))
        log(f"\nwrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
