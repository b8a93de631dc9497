#!/usr/bin/env python
"""Multi-target ridge-CV benchmark: jaxalign versus himalaya and scikit-learn.

All methods run in one process on the same planted data set and are compared
on wall time, peak memory (process RSS above the RSS just before the call) and
agreement with jaxalign (per-target best alpha, held-out CV score of the chosen
alpha).

Methods
-------
jaxalign          ``jaxalign.ridge.RidgeCV(scoring="pearson")`` on explicit
                  contiguous K-fold splits. Warmed up (JIT compile) once at a
                  small size; the first full-size call is reported separately
                  as ``jaxalign (1st call)``, then the warm call(s).
himalaya-numpy    ``himalaya.ridge.RidgeCV`` on the numpy backend, same folds
                  (``KFold(k)``, contiguous), ``correlation_score``, batched
                  over targets to bound memory.
himalaya-torch    same on the torch CPU backend (float32 inputs).
himalaya-torch-cuda  same on ``torch_cuda`` when ``torch.cuda.is_available()``.
sklearn           ``sklearn.linear_model.RidgeCV(alpha_per_target=True)``:
                  efficient leave-one-out (GCV) with squared error, i.e. a
                  *different* CV and metric; only alpha agreement is reported.

Examples
--------
    .venv/bin/python benchmarks/ridge.py                       # default problem
    .venv/bin/python benchmarks/ridge.py --n 500 --p 64 --targets 2000
    .venv/bin/python benchmarks/ridge.py --targets 20000,50000,200000
    .venv/bin/python benchmarks/ridge.py --jaxalign-only --memory-budget 4GiB
    .venv/bin/python benchmarks/ridge.py --skip himalaya-torch,sklearn \\
        --output-json out/ridge.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark the working tree's jaxalign

# jaxalign first: its import guards jaxlib before the jax backend starts.
try:
    import jaxalign  # noqa: F401

    _JAXALIGN_IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover - depends on the checkout
    _JAXALIGN_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

import numpy as np

try:
    from benchmarks import _harness as H
except ImportError:  # run as a script from elsewhere
    import _harness as H

PEERS = ("himalaya-numpy", "himalaya-torch", "himalaya-torch-cuda", "sklearn")
SKIP_ALIASES = {
    "himalaya": ("himalaya-numpy", "himalaya-torch", "himalaya-torch-cuda"),
    "torch": ("himalaya-torch", "himalaya-torch-cuda"),
    "peers": PEERS,
    "all-peers": PEERS,
    "cuda": ("himalaya-torch-cuda",),
}


# ---------------------------------------------------------------------------
# data


def make_data(n, p, n_targets, *, seed=0, dtype=np.float32, decay=1.0,
              log10_alpha_range=(-1.0, 5.0), chunk=4096):
    """Planted multi-target regression problem.

    X = Z @ diag(s) @ Q.T with Z ~ N(0, 1), Q a random rotation and singular
    values s_k ~ k^-decay (normalised to a mean feature variance of 1), then
    column-centred. Each target t gets a planted penalty alpha*_t, log-uniform
    in ``log10_alpha_range``: weights w_t ~ N(0, 1/alpha*_t), unit noise, so
    that the Bayes-optimal ridge penalty of target t is alpha*_t (strong
    targets want little shrinkage, weak targets a lot). Y is centred and
    scaled to unit variance per target (which does not move the optimum).

    Targets are generated in chunks with their own RNG streams, so the first
    T columns are identical whatever the total number of targets.
    Returns X (n, p), Y (n, T), alpha_star (T,).
    """
    rng = np.random.default_rng([seed, 0])
    s = np.arange(1, p + 1, dtype=np.float64) ** -decay
    s *= math.sqrt(p / np.sum(s**2))
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    mixing = (s[:, None] * q.T).astype(dtype)
    X = rng.standard_normal((n, p), dtype=np.float32).astype(dtype, copy=False) @ mixing
    X -= X.mean(0, dtype=np.float64).astype(dtype)

    Y = np.empty((n, n_targets), dtype=dtype)
    alpha_star = np.empty(n_targets, dtype=np.float64)
    lo, hi = log10_alpha_range
    for c, start in enumerate(range(0, n_targets, chunk)):
        stop = min(start + chunk, n_targets)
        size = stop - start
        crng = np.random.default_rng([seed, 1, c])
        a = 10.0 ** crng.uniform(lo, hi, size)  # draw a full chunk
        w = crng.standard_normal((p, size), dtype=np.float32)
        w *= (1.0 / np.sqrt(a)).astype(np.float32)
        y = X.astype(np.float32, copy=False) @ w
        y += crng.standard_normal((n, size), dtype=np.float32)
        y -= y.mean(0)
        y /= y.std(0) + np.float32(1e-12)
        Y[:, start:stop] = y
        alpha_star[start:stop] = a
    return X, Y, alpha_star


# ---------------------------------------------------------------------------
# methods (each returns a dict of numpy arrays; must block until done)


def fit_jaxalign(X, Y, alphas, cv, memory_budget=None, progress=False, precision="auto",
                 matmul_precision=None, penalty_sweep="auto"):
    import contextlib

    import jax

    from jaxalign.ridge import RidgeCV

    ctx = jax.default_matmul_precision(matmul_precision) if matmul_precision else contextlib.nullcontext()
    with ctx:
        m = RidgeCV(alphas=alphas, cv=cv, scoring="pearson", fit_intercept=False,
                    memory_budget=memory_budget, progress=progress, precision=precision,
                    penalty_sweep=penalty_sweep).fit(X, Y)
    return dict(
        best_alphas=np.asarray(m.best_alphas_),
        cv_scores=np.asarray(m.cv_scores_),
        coef=np.asarray(m.coef_),
        precision=m.result_.precision,
        penalty_sweep=m.result_.penalty_sweep,
        shared_folds=m.result_.shared_folds,
        stacked_folds=m.result_.stacked_folds,
        batch_size=m.result_.batch_size,
    )


def himalaya_batch_params(n, p, n_targets, n_alphas, n_folds, budget, itemsize=4):
    """Batch sizes for himalaya's ``solve_ridge_cv_svd`` within ~``budget`` bytes.

    CV: predictions are (n_alphas_batch, n_val, n_targets_batch); the
    correlation score makes ~4 temporaries of that size on numpy and more on
    torch (float64 copies in ``std_float64``), so 8x is budgeted.
    Refit: weights (n_used_alphas, p, n_targets_batch_refit), 2x budgeted.
    Alphas are batched only if the (n_alphas, max(p, n_val), n_train)
    resolution matrices alone exceed the budget.
    """
    n_val = -(-n // n_folds)
    n_train = n - n // n_folds
    per_alpha = max(p, n_val) * n_train * itemsize * 2
    n_alphas_batch = None if n_alphas * per_alpha <= budget else max(1, budget // per_alpha)
    a = n_alphas if n_alphas_batch is None else n_alphas_batch

    def clamp(b):
        b = int(max(1, min(n_targets, b)))
        return b - b % 128 if 256 <= b < n_targets else b

    return dict(
        n_targets_batch=clamp(budget // (a * n_val * itemsize * 8)),
        n_alphas_batch=n_alphas_batch,
        n_targets_batch_refit=clamp(budget // (n_alphas * p * itemsize * 2)),
    )


def gemm_rate64():
    """jax's float64 GEMM rate (GFLOP/s) on the default device, or None."""
    try:
        import jax

        with jax.enable_x64(True):
            return H.gemm_rate_gflops(n=1024, dtype=np.float64, backends=("jax",))["jax"]
    except Exception:  # pragma: no cover - no jax / no float64 on this device
        return None


def fit_himalaya(backend_name, X, Y, alphas, n_folds, batch_params):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score
    from sklearn.model_selection import KFold

    backend = set_backend(backend_name, on_error="raise")
    try:
        solver_params = dict(score_func=correlation_score, warn=False, **batch_params)
        m = RidgeCV(alphas=np.asarray(alphas, dtype=X.dtype), cv=KFold(n_folds),
                    fit_intercept=False, solver_params=solver_params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            m.fit(X, Y)
        out = dict(
            best_alphas=np.asarray(backend.to_numpy(m.best_alphas_)),
            best_scores=np.asarray(backend.to_numpy(m.cv_scores_)),
            coef=np.asarray(backend.to_numpy(m.coef_)),
        )
    finally:
        set_backend("numpy")
    return out


def fit_sklearn(X, Y, alphas):
    from sklearn.linear_model import RidgeCV

    m = RidgeCV(alphas=np.asarray(alphas, dtype=np.float64), alpha_per_target=True,
                fit_intercept=False).fit(X, Y)
    return dict(best_alphas=np.asarray(m.alpha_), coef=np.asarray(m.coef_).T)


def preload(name):
    """Import a peer's modules (and select its backend once) outside the timing."""
    if name.startswith("himalaya"):
        import himalaya.ridge  # noqa: F401
        import himalaya.scoring  # noqa: F401
        import sklearn.model_selection  # noqa: F401
        from himalaya.backend import set_backend

        set_backend({"himalaya-numpy": "numpy", "himalaya-torch": "torch",
                     "himalaya-torch-cuda": "torch_cuda"}[name], on_error="raise")
        set_backend("numpy")
    elif name == "sklearn":
        import sklearn.linear_model  # noqa: F401


def peer_unavailable(name):
    """None if the peer can run here, else the reason it cannot."""
    import importlib.util as iu

    if name.startswith("himalaya") and iu.find_spec("himalaya") is None:
        return "himalaya not installed"
    if name.startswith("himalaya") and iu.find_spec("sklearn") is None:
        return "scikit-learn (needed for KFold) not installed"
    if name.startswith("himalaya-torch"):
        if iu.find_spec("torch") is None:
            return "torch not installed (.venv/bin/pip install torch==2.13.0)"
        if name == "himalaya-torch-cuda":
            import torch

            if not torch.cuda.is_available():
                return "no CUDA device (torch.cuda.is_available() is False)"
    if name == "sklearn" and iu.find_spec("sklearn") is None:
        return "scikit-learn not installed"
    return None


# ---------------------------------------------------------------------------
# agreement


def alpha_index(grid, values):
    """Index of the nearest grid alpha (in log space) for each value."""
    lg = np.log(np.asarray(grid, dtype=np.float64))
    lv = np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-300))
    return np.abs(lv[:, None] - lg[None, :]).argmin(1)


def summarize(res, alphas, n_targets):
    """Add alpha indices and per-target best scores to a method's result."""
    out = dict(res)
    ba = np.asarray(res["best_alphas"]).reshape(-1)
    if ba.size == 1 and n_targets > 1:
        ba = np.full(n_targets, ba.item())
    out["best_alphas"] = ba
    out["alpha_idx"] = alpha_index(alphas, ba)
    cs = res.get("cv_scores")
    if cs is not None:
        cs = np.asarray(cs, dtype=np.float64)
        if cs.ndim == 1:  # already the best score per target
            out["best_scores"] = cs
        else:
            cs = cs.reshape(len(alphas), -1)
            out["best_scores"] = cs[out["alpha_idx"], np.arange(cs.shape[1])]
            # chosen alpha should be the argmax of the reported CV scores
            out["self_consistent"] = float(np.mean(
                np.isclose(out["best_scores"], np.nanmax(cs, 0), rtol=1e-5, atol=1e-6)))
    return out


def agreement(res, ref, same_folds):
    same = float(np.mean(res["alpha_idx"] == ref["alpha_idx"]))
    dscore = None
    if same_folds and res.get("best_scores") is not None and ref.get("best_scores") is not None:
        d = np.abs(np.asarray(res["best_scores"], np.float64)
                   - np.asarray(ref["best_scores"], np.float64))
        dscore = float(np.nanmax(d)) if d.size else None
    # within one grid step: robust to near-ties between neighbouring alphas
    near = float(np.mean(np.abs(res["alpha_idx"] - ref["alpha_idx"]) <= 1))
    return same, near, dscore


def planted_error(res, alpha_star):
    """Median |log10(best alpha / planted alpha)|."""
    return float(np.median(np.abs(np.log10(res["best_alphas"].astype(np.float64))
                                  - np.log10(alpha_star))))


# ---------------------------------------------------------------------------
# driver


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Peers: " + ", ".join(PEERS) + ". Skip aliases: "
        + ", ".join(f"{k} ({'+'.join(v)})" for k, v in SKIP_ALIASES.items()),
    )
    ap.add_argument("--n", type=int, default=3000, help="samples (default 3000)")
    ap.add_argument("--p", type=int, default=768, help="features (default 768)")
    ap.add_argument("--targets", default="20000",
                    help="comma-separated target counts, e.g. 20000,50000,200000 "
                         "(peers run on the first only unless --peers-all-sizes)")
    ap.add_argument("--alphas", default="-2,8,11",
                    help="log10 grid 'start,stop,num' for np.logspace (default -2,8,11)")
    ap.add_argument("--folds", type=int, default=5, help="contiguous K folds (default 5)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spectrum-decay", type=float, default=1.0,
                    help="singular values of X decay as k^-decay (default 1)")
    ap.add_argument("--skip", default="",
                    help="comma-separated peers to skip: " + ",".join(PEERS)
                         + " or aliases himalaya, torch, cuda, peers")
    ap.add_argument("--jaxalign-only", action="store_true", help="run no peer")
    ap.add_argument("--peers-all-sizes", action="store_true",
                    help="run the peers at every --targets size, not just the first")
    ap.add_argument("--memory-budget", default=None,
                    help="passed to jaxalign RidgeCV(memory_budget=bytes), e.g. 4GiB")
    ap.add_argument("--precision", default="auto", choices=["auto", "accurate", "fast"],
                    help="jaxalign RidgeCV(precision=...): 'auto' picks the fast target "
                         "projection only for well-conditioned designs")
    ap.add_argument("--penalty-sweep", default="auto",
                    choices=["auto", "partial_fractions", "direct"],
                    help="jaxalign RidgeCV(penalty_sweep=...): how the penalty grid is scored "
                         "(default auto: partial fractions where cheaper)")
    ap.add_argument("--matmul-precision", default=None,
                    choices=["highest", "float32", "tensorfloat32", "default", "bfloat16"],
                    help="run jaxalign inside jax.default_matmul_precision(...) (default: "
                         "jaxalign's own rule, full float32; 'tensorfloat32' shows the TF32 trade-off on GPUs)")
    ap.add_argument("--progress", action="store_true",
                    help="let jaxalign show its progress bar (off by default)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="warm jaxalign calls per size; the fastest is reported (default 1)")
    ap.add_argument("--warmup-targets", type=int, default=512,
                    help="targets of the untimed jaxalign JIT warm-up call (default 512)")
    ap.add_argument("--himalaya-batch-budget", default="512MiB",
                    help="memory aimed at per himalaya batch when choosing its "
                         "n_targets_batch etc. (default 512MiB)")
    ap.add_argument("--himalaya-targets-batch", type=int, default=None,
                    help="override himalaya n_targets_batch (CV)")
    ap.add_argument("--himalaya-refit-batch", type=int, default=None,
                    help="override himalaya n_targets_batch_refit")
    ap.add_argument("--himalaya-alphas-batch", type=int, default=None,
                    help="override himalaya n_alphas_batch")
    ap.add_argument("--gemm-n", type=int, default=2048, help="size of the GEMM rate test")
    ap.add_argument("--output-json", default=None, help="write every number to this file")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args(argv)
    args.targets = [int(float(t)) for t in args.targets.split(",") if t.strip()]
    start, stop, num = args.alphas.split(",")
    args.alpha_grid = np.logspace(float(start), float(stop), int(num))
    skip = set()
    for s in filter(None, (x.strip() for x in args.skip.split(","))):
        if s in SKIP_ALIASES:
            skip.update(SKIP_ALIASES[s])
        elif s in PEERS or s == "jaxalign":
            skip.add(s)
        else:
            ap.error(f"--skip: unknown method {s!r}; known: {', '.join(PEERS)}")
    if args.jaxalign_only:
        skip.update(PEERS)
    args.skip_set = skip
    args.memory_budget_bytes = H.parse_bytes(args.memory_budget)
    return args


def _g(v):
    return "n/a" if v is None else f"{v:.1f}"


def run_method(name, fn, log):
    """measure(fn) with error capture; returns (result or None, row dict)."""
    try:
        m = H.measure(fn)
        res, sec, peak = m
    except Exception as exc:  # a failing peer must not stop the benchmark
        msg = f"{type(exc).__name__}: {exc}"
        log(f"  {name:<22s} FAILED: {msg}")
        if log.verbose:
            traceback.print_exc()
        return None, dict(method=name, error=msg)
    other = m.other_cores
    log(f"  {name:<22s} {sec:9.2f} s   peak {peak:8.0f} MiB   "
        f"{m.cores_used:4.2f} cores used" + (f", other processes {other:4.2f} cores"
                                            if other is not None else ""))
    return res, dict(method=name, time_s=sec, peak_mib=peak, cores_used=m.cores_used,
                     other_cores=other, cpu_s=m.cpu_s, sampled_peak_mib=m.sampled_peak_mib,
                     hwm_peak_mib=m.hwm_peak_mib)


def main(argv=None):
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    alphas = args.alpha_grid

    def log(*a):
        print(*a, flush=True)

    log.verbose = args.verbose

    # ----------------------------------------------------------------- header
    info = H.machine_info()
    if _JAXALIGN_IMPORT_ERROR is None:
        info["jaxalign_path"] = os.path.dirname(sys.modules["jaxalign"].__file__)
    log("=" * 78)
    log("jaxalign ridge-CV benchmark")
    log("=" * 78)
    log(H.format_machine_info(info))
    log(f"problem   : n={args.n} p={args.p} T={','.join(map(str, args.targets))} "
        f"alphas=logspace({args.alphas}) ({len(alphas)}) folds={args.folds} contiguous "
        f"scoring=pearson fit_intercept=False dtype={args.dtype} seed={args.seed} "
        f"spectrum k^-{args.spectrum_decay:g}")
    if args.memory_budget:
        log(f"jaxalign  : memory_budget={args.memory_budget} ({args.memory_budget_bytes} B)")
    idle = H.log_background_load(log)
    gemm_runs = [H.gemm_rate_gflops(n=args.gemm_n, dtype=np.float32)]
    log(f"gemm      : float32 {args.gemm_n}^2 GEMM  jax {_g(gemm_runs[0]['jax'])} GFLOP/s, "
        f"numpy {_g(gemm_runs[0]['numpy'])} GFLOP/s (measured again at the end; "
        "the best is used)")
    log("-" * 78)

    have_jax = _JAXALIGN_IMPORT_ERROR is None
    jax_reason = None
    if not have_jax:
        jax_reason = f"cannot import jaxalign ({_JAXALIGN_IMPORT_ERROR})"
    else:
        try:
            from jaxalign.ridge import RidgeCV  # noqa: F401
        except Exception as exc:
            have_jax, jax_reason = False, f"cannot import jaxalign.ridge.RidgeCV ({exc})"
    if "jaxalign" in args.skip_set:
        have_jax, jax_reason = False, "skipped (--skip jaxalign)"
    if not have_jax:
        log(f"jaxalign  : NOT RUN: {jax_reason}; agreement is against the first peer")

    try:
        from jaxalign.ridge import ridge_cv_flops
    except Exception:
        ridge_cv_flops = None

    batch_budget = H.parse_bytes(args.himalaya_batch_budget)
    # the library's folds for every method (peers too): the same splits as sklearn's KFold(k)
    from jaxalign.ridge import ContiguousKFold

    rows, sizes_out = [], []
    jax_cv_mode = None
    for size_i, T in enumerate(args.targets):
        log(f"\n## T = {T}")
        t0 = time.perf_counter()
        X, Y, alpha_star = make_data(args.n, args.p, T, seed=args.seed, dtype=dtype,
                                     decay=args.spectrum_decay)
        log(f"  data: X {X.shape} Y {Y.shape} {Y.dtype} "
            f"({H.format_bytes(X.nbytes + Y.nbytes)}) in {time.perf_counter() - t0:.1f} s; "
            f"planted alpha* 10^[{np.log10(alpha_star.min()):.1f}, "
            f"{np.log10(alpha_star.max()):.1f}]")
        splits = list(ContiguousKFold(args.folds).split(args.n))  # = sklearn KFold(k), unshuffled
        results, size_rows = {}, []
        ref_name = None

        # ------------------------------------------------------- jaxalign
        if have_jax:
            if jax_cv_mode is None:  # warm-up (JIT compile), untimed
                Tw = min(T, args.warmup_targets)
                Yw = np.ascontiguousarray(Y[:, :Tw])
                try:
                    fit_jaxalign(X, Yw, alphas, splits, args.memory_budget_bytes,
                                 args.progress, args.precision, args.matmul_precision,
                                 args.penalty_sweep)
                    jax_cv_mode = "explicit splits"
                except Exception as exc:
                    jax_reason = f"warm-up failed ({type(exc).__name__}: {exc})"
                    log(f"  jaxalign NOT RUN: {jax_reason}")
                    if args.verbose:
                        traceback.print_exc()
                    have_jax = False
                del Yw
                if have_jax:
                    log(f"  jaxalign warm-up done (T={Tw}, untimed)")
        if have_jax:
            def jfit():
                return fit_jaxalign(X, Y, alphas, splits, args.memory_budget_bytes,
                                    args.progress, args.precision, args.matmul_precision,
                                    args.penalty_sweep)

            res1, row1 = run_method("jaxalign (1st call)", jfit, log)
            row1.update(cv=f"{args.folds}-fold", note="incl. compile at this shape")
            best = None
            if res1 is not None:
                for r in range(max(1, args.repeats)):
                    res, row = run_method("jaxalign" + (f" #{r + 1}" if args.repeats > 1 else ""),
                                          jfit, log)
                    if res is None:
                        best = (res, row)
                        break
                    if best is None or row["time_s"] < best[1]["time_s"]:
                        best = (res, row)
                    else:
                        del res
                res_w, row_w = best
                row_w["method"] = "jaxalign"
            else:
                res_w, row_w = None, dict(method="jaxalign", error=row1.get("error"))
            row_w["cv"] = f"{args.folds}-fold"
            if res_w is not None:
                results["jaxalign"] = summarize(res_w, alphas, T)
                ref_name = "jaxalign"
                if res1 is not None:
                    r1 = summarize(res1, alphas, T)
                    row1["same_alpha"] = float(np.mean(r1["alpha_idx"] == results["jaxalign"]["alpha_idx"]))
                    if "best_scores" in r1:
                        row1["max_dscore"] = float(np.nanmax(np.abs(
                            r1["best_scores"] - results["jaxalign"]["best_scores"])))
            del res1
            import jax

            peak = H.jax_device_peak_mib() if jax.default_backend() != "cpu" else None
            if peak is not None:  # cumulative: earlier sizes included
                row_w["gpu_peak_mib"] = peak
                row_w["note"] = (row_w.get("note") or "") + f"device peak {peak:.0f} MiB"
            size_rows += [row1, row_w]

        # ------------------------------------------------------- peers
        run_peers = size_i == 0 or args.peers_all_sizes
        hb = himalaya_batch_params(args.n, args.p, T, len(alphas), args.folds,
                                   batch_budget, itemsize=dtype.itemsize)
        if args.himalaya_targets_batch:
            hb["n_targets_batch"] = args.himalaya_targets_batch
        if args.himalaya_refit_batch:
            hb["n_targets_batch_refit"] = args.himalaya_refit_batch
        if args.himalaya_alphas_batch:
            hb["n_alphas_batch"] = args.himalaya_alphas_batch
        if not run_peers and not args.skip_set.issuperset(PEERS):
            log("  peers: run at the first size only (--peers-all-sizes to change)")
        for name in PEERS:
            if not run_peers:
                continue
            if name in args.skip_set:
                if not args.jaxalign_only:
                    log(f"  {name:<22s} skipped (--skip)")
                continue
            reason = peer_unavailable(name)
            if reason is None:
                try:
                    preload(name)
                except Exception as exc:
                    reason = f"import failed ({type(exc).__name__}: {exc})"
            if reason:
                log(f"  {name:<22s} skipped: {reason}")
                continue
            if name.startswith("himalaya"):
                backend = {"himalaya-numpy": "numpy", "himalaya-torch": "torch",
                           "himalaya-torch-cuda": "torch_cuda"}[name]

                def fn(backend=backend):
                    return fit_himalaya(backend, X, Y, alphas, args.folds, hb)

                cv_label = f"{args.folds}-fold"
            else:
                def fn():
                    return fit_sklearn(X, Y, alphas)

                cv_label = "LOO/GCV, MSE (different CV)"
            if name == "himalaya-torch-cuda":
                import torch

                torch.cuda.reset_peak_memory_stats()
            res, row = run_method(name, fn, log)
            row["cv"] = cv_label
            if name.startswith("himalaya"):
                row["note"] = ("batches " + "/".join(
                    str(hb[k]) for k in ("n_targets_batch", "n_alphas_batch",
                                         "n_targets_batch_refit")) + " (targets/alphas/refit)")
            if name == "himalaya-torch-cuda" and res is not None:
                row["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / H.MIB
                row["note"] += f"; GPU peak {row['gpu_peak_mib']:.0f} MiB"
            if res is not None:
                results[name] = summarize(res, alphas, T)
                if ref_name is None and name.startswith("himalaya"):
                    ref_name = name
            del res
            size_rows.append(row)

        # ------------------------------------------------------- agreement
        ref = results.get(ref_name) if ref_name else None
        jt = next((r["time_s"] for r in size_rows
                   if r["method"] == "jaxalign" and "time_s" in r), None)
        for row in size_rows:
            row["T"] = T
            key = "jaxalign" if row["method"].startswith("jaxalign") else row["method"]
            r = results.get(key)
            if jt and "time_s" in row:
                row["x_jaxalign"] = row["time_s"] / jt
            if r is None:
                continue
            row["planted_dlog10"] = planted_error(r, alpha_star)
            if "self_consistent" in r:
                row["self_consistent"] = r["self_consistent"]
            if row["method"] == "jaxalign (1st call)":
                continue  # compared with the warm call above
            if ref is not None and key != ref_name:
                same, near, ds = agreement(r, ref, same_folds=row["cv"] == f"{args.folds}-fold")
                row.update(same_alpha=same, within1=near, max_dscore=ds)
            elif key == ref_name:
                row.update(same_alpha=1.0, within1=1.0, max_dscore=0.0,
                           note=(row.get("note", "") + "; reference").lstrip("; "))
            if row["cv"] != f"{args.folds}-fold":
                row["max_dscore"] = None

        # ------------------------------------------------------- FLOPs
        flops, flops64, precision, sweep = None, None, None, None
        jx = results.get("jaxalign") or {}
        shared_folds = jx.get("shared_folds", 0)
        stacked_folds = jx.get("stacked_folds", 0)
        if ridge_cv_flops is not None and jx:
            precision = jx["precision"]
            sweep = jx.get("penalty_sweep", "direct")
            flops, flops64 = ridge_cv_flops(args.n, args.p, T, len(alphas), splits,
                                            precision=precision, penalty_sweep=sweep,
                                            float64_part=True, shared_folds=shared_folds,
                                            stacked_folds=stacked_folds)
        size_info = dict(T=T, flops=flops, flops64=flops64, precision=precision,
                         penalty_sweep=sweep, himalaya_batches=hb, reference=ref_name,
                         shared_folds=shared_folds, stacked_folds=stacked_folds)
        for row in size_rows:
            if row["method"].startswith("jaxalign") and flops and "time_s" in row:
                row["gflops"] = flops / row["time_s"] / 1e9
        sizes_out.append(size_info)
        rows += size_rows
        del X, Y, alpha_star, results, ref

    # ----------------------------------------------------------- report
    # GEMM rates are peak rates: measure again and keep the best, so that a
    # burst of load from other processes at the start does not skew them.
    gemm_runs.append(H.gemm_rate_gflops(n=args.gemm_n, dtype=np.float32))
    gemm = {k: max((g[k] for g in gemm_runs if g.get(k) is not None), default=None)
            for k in gemm_runs[0]}
    log(f"\ngemm      : float32 {args.gemm_n}^2 GEMM at the end: jax "
        f"{_g(gemm_runs[-1]['jax'])}, numpy {_g(gemm_runs[-1]['numpy'])} GFLOP/s; best: jax "
        f"{_g(gemm['jax'])}, numpy {_g(gemm['numpy'])} GFLOP/s")
    gemm64 = gemm_rate64()
    log(f"gemm      : float64 1024^2 GEMM, jax {_g(gemm64)} GFLOP/s")
    f64_of = {s["T"]: s.get("flops64") or 0.0 for s in sizes_out}
    for row in rows:
        if row.get("gflops") is not None and gemm.get("jax"):
            # share of the GEMM roofline: the time the flops would take at the
            # measured float32 (and, for the float64 part, float64) GEMM rates
            f64 = f64_of.get(row.get("T"), 0.0)
            total = row["gflops"] * row["time_s"] * 1e9
            ideal = (total - f64) / (gemm["jax"] * 1e9)
            if f64:
                ideal += f64 / (gemm64 * 1e9) if gemm64 else float("nan")
            row["pct_jax_gemm"] = 100.0 * ideal / row["time_s"]
    ref_label = "jaxalign" if any(s.get("reference") == "jaxalign" for s in sizes_out) else (sizes_out[0].get("reference") or "n/a")
    log("\n## Results (time: wall seconds; CPU: process CPU seconds, all threads; peak: "
        "MiB of RSS above the baseline before the call; agreement vs "
        f"{ref_label}; other load: cores busy with other processes during the call)\n")
    cols = [
        ("T", "T"), ("method", "method"), ("cv", "CV"),
        ("time_s", "time (s)", ".2f"), ("cpu_s", "CPU (s)", ".1f"),
        ("peak_mib", "peak (MiB)", ".0f"),
        ("x_jaxalign", "time / jaxalign", ".2f"),
        ("same_alpha", "same alpha", ".4f"), ("within1", "alpha ±1 step", ".4f"),
        ("max_dscore", "max |Δ CV score|", ".2e"),
        ("planted_dlog10", "med |log10 α/α*|", ".2f"),
        ("cores_used", "cores used", ".2f"), ("other_cores", "other load", ".2f"),
    ]
    table = H.print_table(rows, cols)
    notes = [r for r in rows if r.get("note") or r.get("error")]
    if notes:
        log("")
        for r in notes:
            log(f"- T={r.get('T')} {r['method']}: " + (r.get("error") or r.get("note")))
    disturbed = [r for r in rows if (r.get("other_cores") or 0) > 0.25]
    if disturbed:
        log("- WARNING: other processes kept cores busy during "
            + ", ".join(f"T={r['T']} {r['method']} ({r['other_cores']:.2f} cores)"
                        for r in disturbed)
            + ": those timings are not clean; rerun on an idle machine")
    if any(r.get("self_consistent", 1.0) < 1.0 for r in rows):
        log("- WARNING: some method's best_alphas_ is not the argmax of its cv_scores_: "
            + ", ".join(f"{r['method']} {r['self_consistent']:.4f}" for r in rows
                        if r.get("self_consistent", 1.0) < 1.0))

    log("\n## Throughput of jaxalign (FLOPs of the spectral method / time)\n")
    trows = []
    for s in sizes_out:
        for r in rows:
            if r.get("T") == s["T"] and r["method"].startswith("jaxalign") and "time_s" in r:
                path = s["precision"] + (f', {s["shared_folds"]} shared folds'
                                         if s.get("shared_folds") else "")
                path += f', {s["stacked_folds"]} stacked folds' if s.get("stacked_folds") else ""
                if s.get("penalty_sweep") not in (None, "direct"):
                    path += f', {s["penalty_sweep"]}'
                trows.append(dict(T=s["T"], method=r["method"], path=path,
                                  gflop64=None if not s.get("flops64") else s["flops64"] / 1e9,
                                  time_s=r["time_s"],
                                  gflop=None if s["flops"] is None else s["flops"] / 1e9,
                                  gflops=r.get("gflops"), jax_gemm=gemm.get("jax"),
                                  np_gemm=gemm.get("numpy"), pct=r.get("pct_jax_gemm")))
    if trows:
        H.print_table(trows, [
            ("T", "T"), ("method", "method"), ("path", "path"),
            ("time_s", "time (s)", ".2f"), ("gflop", "GFLOP", ".1f"),
            ("gflop64", "of which float64", ".1f"), ("gflops", "GFLOP/s", ".1f"),
            ("jax_gemm", "jax GEMM GFLOP/s", ".1f"), ("np_gemm", "numpy GEMM GFLOP/s", ".1f"),
            ("pct", "% of jax GEMM roofline", ".1f"),
        ])
        log("(roofline: the time these flops take at jax's measured float32 GEMM rate, "
            "float64 flops at its float64 rate, divided by the measured time)")
        if sizes_out and sizes_out[0]["flops"] is None:
            log("(FLOPs n/a: jaxalign.ridge.ridge_cv_flops not available)")
    else:
        log("n/a (jaxalign not run)")

    if args.output_json:
        H.write_json(args.output_json, dict(
            benchmark="ridge",
            args={k: v for k, v in vars(args).items() if k not in ("skip_set",)},
            machine=info, idle_load_cores=idle, gemm_gflops=gemm,
            gemm_gflops_runs=gemm_runs, gemm_n=args.gemm_n,
            jaxalign_cv=jax_cv_mode, jaxalign_unavailable=jax_reason,
            sizes=sizes_out, rows=rows, table_markdown=table,
        ))
        log(f"\nwrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
