#!/usr/bin/env python
"""Ridge CV with many more samples than features (n >> p): jaxalign versus a
plain float64 numpy loop (and himalaya's numpy backend).

The problem of issue 12 (continuous recordings: n = 27,500 samples, p = 400
features, 64 targets, 8 penalties, 5 contiguous folds), planted as in
``benchmarks/ridge.py`` (k^-1 singular values: ill-conditioned, so the
row-wise engine path is the accurate one).

Methods (all warm: each is run once before the timed repeats)
-------------------------------------------------------------
jaxalign          ``RidgeCV(alphas, cv=5)``: ``folds_from="auto"`` (the Gram
                  path on CPU at this size, ``jaxalign/ridge/_gram.py``)
jaxalign rows     ``folds_from="rows"``: each fold decomposed from its rows
                  (the engine before the Gram path)
numpy loop        float64: per fold ``G = X_tr^T X_tr``, ``eigh``,
                  ``Z = V^T X_tr^T Y_tr``, every penalty's validation
                  predictions ``X_va V diag(1/(s2+a)) Z`` scored by Pearson;
                  per-target best penalty (ties within 1e-6 to the larger, as
                  jaxalign); refit on all samples through the full Gram's eigh
himalaya-numpy    ``himalaya.ridge.RidgeCV`` (numpy backend, ``KFold(5)``,
                  ``correlation_score``), float32; only with ``--himalaya``
                  (it decomposes each fold's rows by SVD: ~100 s here)

Delayed designs (``--lagged-n``, 0 to skip): ``jaxalign.timing.lagged_gram``
(Gram and cross-products of ``fir_delays(X, range(K))`` over one training
fold, from lagged products of the undelayed ``X``) against materialising the
delayed design and multiplying it out (float64 numpy), same run, with the
largest relative difference. The study runner's continuous-MEG fit
(``--nested-n``, 0 to skip): ``timing.lagged_nested_cv`` (per-run z-scored
delayed design, 5 x 5 contiguous nested CV, ``standardize="separate"``,
never built) against ``ridge.nested_cv`` on the materialised float32 design,
with peak memory above the baseline, the share of equal penalties and the
largest fold-score difference where the penalties are equal.

Methods alternate within each repeat (so load on a shared machine hits all
alike); the table gives the median of the repeats and each time over
jaxalign's. Agreement is with the numpy loop: identical best penalties, max
|CV score difference|, and the largest coefficient error relative to the
target's largest coefficient.

    .venv/bin/python benchmarks/ridge_tall.py                  # issue 12's size
    .venv/bin/python benchmarks/ridge_tall.py --n 110000 --p 576 --repeats 3
    .venv/bin/python benchmarks/ridge_tall.py --himalaya --output-json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import jaxalign  # noqa: F401,E402  (its jaxlib guard first)
import numpy as np  # noqa: E402

try:
    from benchmarks import _harness as H
    from benchmarks.ridge import make_data
except ImportError:  # run as a script from elsewhere
    import _harness as H
    from ridge import make_data

METHODS = ("jaxalign", "jaxalign rows", "numpy loop", "himalaya-numpy")
TIE = 1e-6  # jaxalign's tie tolerance (jaxalign.ridge._solve.TIE_TOLERANCE)


def best_index(scores, alphas):
    """Per-target argmax, ties within 1e-6 (relative) to the larger penalty."""
    best = scores.max(axis=0)
    is_best = scores >= best - TIE * np.maximum(np.abs(best), 1.0)
    return np.argmax(np.where(is_best, np.asarray(alphas)[:, None], -np.inf), axis=0)


def numpy_loop(X, Y, alphas, splits):
    """Plain float64 ridge CV (Pearson), Gram + eigh per fold; returns dict."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    scores = np.zeros((len(alphas), Y.shape[1]))
    for tr, va in splits:
        Xtr = X[tr]
        s2, V = np.linalg.eigh(Xtr.T @ Xtr)
        Z = V.T @ (Xtr.T @ Y[tr])
        M = X[va] @ V
        yv = Y[va] - Y[va].mean(axis=0)
        for a, alpha in enumerate(alphas):
            P = M @ (Z / (s2 + alpha)[:, None])
            P -= P.mean(axis=0)
            scores[a] += (P * yv).sum(0) / np.sqrt((P * P).sum(0) * (yv * yv).sum(0))
    scores /= len(splits)
    best = best_index(scores, alphas)
    s2, V = np.linalg.eigh(X.T @ X)
    coef = V @ ((V.T @ (X.T @ Y)) / (s2[:, None] + np.asarray(alphas)[best][None, :]))
    return dict(best=best, cv_scores=scores, coef=coef)


def fit_jaxalign(X, Y, alphas, folds, folds_from):
    from jaxalign.ridge import RidgeCV

    m = RidgeCV(alphas, cv=folds, folds_from=folds_from).fit(X, Y)
    return dict(best=m.result_.best_alpha_index, cv_scores=m.cv_scores_, coef=m.coef_,
                path=f"{m.result_.folds_from}, {m.result_.precision}, {m.result_.penalty_sweep}")


def fit_himalaya(X, Y, alphas, folds):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score
    from sklearn.model_selection import KFold

    set_backend("numpy")
    m = RidgeCV(alphas=np.asarray(alphas, X.dtype), cv=KFold(folds), fit_intercept=False,
                solver_params=dict(score_func=correlation_score, warn=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        m.fit(X, Y)
    log_best = np.log(np.asarray(m.best_alphas_, np.float64))
    best = np.argmin(np.abs(np.log(alphas)[:, None] - log_best[None, :]), axis=0)
    return dict(best=best, cv_scores=None, coef=np.asarray(m.coef_))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("Methods"):])
    ap.add_argument("--n", type=int, default=27500, help="samples (default 27,500)")
    ap.add_argument("--p", type=int, default=400, help="features (default 400)")
    ap.add_argument("--targets", type=int, default=64, help="targets (default 64)")
    ap.add_argument("--alphas", default="-2,5,8", help="log10 grid 'start,stop,num' (default -2,5,8)")
    ap.add_argument("--folds", type=int, default=5, help="contiguous folds (default 5)")
    ap.add_argument("--decay", type=float, default=1.0, help="singular values ~ k^-decay (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; median reported (default 3)")
    ap.add_argument("--skip", default="", help="comma-separated methods to leave out")
    ap.add_argument("--himalaya", action="store_true", help="add himalaya's numpy backend (slow)")
    ap.add_argument("--folds-from", default="auto", choices=("auto", "grams", "rows"),
                    help="jaxalign's folds_from for the 'jaxalign' row (default auto)")
    ap.add_argument("--lagged-n", type=int, default=10000,
                    help="samples of the delayed-design comparison (0: skip; default 10,000)")
    ap.add_argument("--lagged-p", type=int, default=96, help="features before delays (default 96)")
    ap.add_argument("--lagged-delays", type=int, default=40, help="sample delays 0..K-1 (default 40)")
    ap.add_argument("--nested-n", type=int, default=20000,
                    help="samples of the continuous-MEG nested CV comparison (0: skip; default 20,000)")
    ap.add_argument("--nested-p", type=int, default=50, help="its features before delays (default 50: PCA)")
    ap.add_argument("--nested-targets", type=int, default=32, help="its channels (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output-json", default=None)
    args = ap.parse_args(argv)

    from jaxalign.ridge import ContiguousKFold

    info = H.machine_info()
    print(H.format_machine_info(info), flush=True)
    start, stop, num = (float(v) for v in args.alphas.split(","))
    alphas = np.logspace(start, stop, int(num))
    X, Y, _ = make_data(args.n, args.p, args.targets, seed=args.seed, decay=args.decay)
    splits = list(ContiguousKFold(args.folds).split(args.n))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    runs = {
        "jaxalign": lambda: fit_jaxalign(X, Y, alphas, args.folds, args.folds_from),
        "jaxalign rows": lambda: fit_jaxalign(X, Y, alphas, args.folds, "rows"),
        "numpy loop": lambda: numpy_loop(X, Y, alphas, splits),
        "himalaya-numpy": lambda: fit_himalaya(X, Y, alphas, args.folds),
    }
    if not args.himalaya:
        skip.add("himalaya-numpy")
    methods = [m for m in METHODS if m not in skip]
    if "himalaya-numpy" in methods:
        try:
            import himalaya.ridge  # noqa: F401
        except ImportError:
            methods.remove("himalaya-numpy")
    times = {m: [] for m in methods}
    results, first = {}, {}
    for m in methods:  # warm-up (compiles), timed as the first call
        t = time.perf_counter()
        results[m] = runs[m]()
        first[m] = time.perf_counter() - t
    for _ in range(args.repeats):
        for m in methods:
            t = time.perf_counter()
            results[m] = runs[m]()
            times[m].append(time.perf_counter() - t)

    ref = results.get("numpy loop")
    base = float(np.median(times["jaxalign"])) if "jaxalign" in times else None
    rows = []
    for m in methods:
        r = results[m]
        t = float(np.median(times[m]))
        row = dict(method=m, path=r.get("path", ""), first_s=first[m], time_s=t,
                   times=times[m], ratio=(t / base) if base else None)
        if ref is not None and m != "numpy loop":
            same = r["best"] == ref["best"]
            row["same_alpha"] = float(np.mean(same))
            if r["cv_scores"] is not None:
                row["max_dscore"] = float(np.abs(r["cv_scores"] - ref["cv_scores"]).max())
            err = np.abs(r["coef"] - ref["coef"]).max(axis=0) / np.abs(ref["coef"]).max(axis=0)
            row["max_coef_err"] = float(err[same].max()) if same.any() else None
        rows.append(row)
    print(f"\nn={args.n}, p={args.p}, targets={args.targets}, {len(alphas)} alphas "
          f"logspace({start:g}, {stop:g}), {args.folds} contiguous folds, decay {args.decay:g}; "
          f"median of {args.repeats} warm repeats")
    H.print_table(rows, [
        ("method", "method"), ("path", "path"), ("first_s", "1st call (s)", ".3f"),
        ("time_s", "time (s)", ".3f"), ("ratio", "time / jaxalign", ".2f"),
        ("same_alpha", "same alpha as numpy", ".4f"), ("max_dscore", "max Δ CV score", ".1e"),
        ("max_coef_err", "max coef err (rel.)", ".1e"),
    ])
    lagged = lagged_table(args) if args.lagged_n > 0 else []
    nested = nested_table(args) if args.nested_n > 0 else []
    if args.output_json:
        H.write_json(args.output_json, dict(args=vars(args), machine=info, rows=rows,
                                            lagged=lagged, nested=nested))
    return rows


def lagged_table(args):
    """lagged_gram vs the materialised delayed design, one training fold."""
    from jaxalign.ridge import ContiguousKFold
    from jaxalign.timing import fir_delays, lagged_gram

    rng = np.random.default_rng(args.seed)
    n, p, K = args.lagged_n, args.lagged_p, args.lagged_delays
    X = rng.standard_normal((n, p)).astype(np.float32)
    Y = rng.standard_normal((n, 16)).astype(np.float32)
    runs = np.repeat(np.arange(4), -(-n // 4))[:n]
    tr, _ = next(iter(ContiguousKFold(args.folds).split(n)))
    delays = range(K)

    def materialised():
        D = fir_delays(X.astype(np.float64), delays, runs)[tr]
        return D.T @ D, D.T @ Y[tr].astype(np.float64)

    def lagged():
        res = lagged_gram(X, delays, runs, rows=tr, Y=Y)
        return res.gram, res.cross

    times = {"lagged_gram": [], "materialised": []}
    out = {}
    for _ in range(min(args.repeats, 3)):
        for name, fn in (("lagged_gram", lagged), ("materialised", materialised)):
            t = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t)
    (G, C), (G0, C0) = out["lagged_gram"], out["materialised"]
    err = max(np.abs(G - G0).max() / np.abs(G0).max(), np.abs(C - C0).max() / np.abs(C0).max())
    base = float(np.median(times["lagged_gram"]))
    rows = [dict(method=m, time_s=float(np.median(t)), ratio=float(np.median(t)) / base,
                 times=t, max_rel_err=err if m == "lagged_gram" else None)
            for m, t in times.items()]
    print(f"\ndelayed design: n={n} (4 runs), p={p}, delays 0..{K - 1} "
          f"({K * p} columns, {n * K * p * 8 / 2**20:.0f} MiB materialised in float64), "
          f"one training fold of {len(tr)} rows, 16 targets; median of {len(times['lagged_gram'])}")
    H.print_table(rows, [("method", "method"), ("time_s", "time (s)", ".3f"),
                         ("ratio", "time / lagged_gram", ".1f"),
                         ("max_rel_err", "max rel. diff", ".1e")])
    return rows


def nested_table(args):
    """The study runner's continuous-MEG fit: lagged_nested_cv vs nested_cv on the materialised design."""
    from jaxalign import ridge, timing

    rng = np.random.default_rng(args.seed + 1)
    n, p, K, T = args.nested_n, args.nested_p, args.lagged_delays, args.nested_targets
    runs = np.repeat(np.arange(4), -(-n // 4))[:n]
    X = np.zeros((n, p))  # word-onset impulses of PCA'd features, a word every ~25 samples
    at = np.sort(rng.choice(n, n // 25, replace=False))
    X[at] = rng.standard_normal((at.size, p))
    delays = list(range(K))
    D = timing.fir_delays(X, delays, runs)
    Y = D @ (rng.standard_normal((K * p, T)) / np.sqrt(K * p)) + rng.standard_normal((n, T))
    Y *= 1e-12  # tesla
    del D
    alphas = np.logspace(-2, 6, 9)
    outer, inner = ridge.ContiguousKFold(args.folds, gap=K), ridge.ContiguousKFold(args.folds)

    def materialised():
        Dm = timing.zscore_per_run(timing.fir_delays(X, delays, runs), runs).astype(np.float32)
        return ridge.nested_cv(Dm, Y, alphas, outer, inner, standardize="separate")

    def lagged():
        return timing.lagged_nested_cv(X, Y, delays, runs, alphas, outer, inner, zscore_runs=True,
                                       standardize="separate")

    out, times, peaks = {}, {"lagged_nested_cv": [], "materialised": []}, {}
    for _ in range(min(args.repeats, 2)):
        for name, fn in (("lagged_nested_cv", lagged), ("materialised", materialised)):
            m = H.measure(fn)
            out[name] = m.result
            times[name].append(m.seconds)
            peaks[name] = max(peaks.get(name, 0.0), m.peak_mib)
    a, b = out["lagged_nested_cv"], out["materialised"]
    eq = a.best_alphas == b.best_alphas  # near-ties of the inner CV may go either way in float32
    dscore = float(np.abs(a.fold_scores - b.fold_scores)[eq].max()) if eq.any() else float("nan")
    same = float(eq.mean())
    base = float(np.median(times["lagged_nested_cv"]))
    rows = [dict(method=m, time_s=float(np.median(t)), ratio=float(np.median(t)) / base, times=t,
                 peak_mib=peaks[m], same_alpha=same, max_dscore=dscore) for m, t in times.items()]
    print(f"\ncontinuous-MEG nested CV (the study runner's fit): n={n} samples (4 runs), onset impulses "
          f"of {p} features every ~25 samples, delays 0..{K - 1} ({K * p} columns: "
          f"{n * K * p * 4 / 2**20:.0f} MiB materialised in float32), {T} channels in tesla, "
          f"{args.folds} x {args.folds} contiguous folds, {len(alphas)} penalties, standardize='separate'; "
          f"median of {len(times['materialised'])}")
    H.print_table(rows, [("method", "method"), ("time_s", "time (s)", ".2f"),
                         ("ratio", "time / lagged", ".2f"), ("peak_mib", "peak RSS (MiB)", ".0f"),
                         ("same_alpha", "same alpha", ".4f"), ("max_dscore", "max Δ fold r (same alpha)", ".1e")])
    return rows


if __name__ == "__main__":
    main()
