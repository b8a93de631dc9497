#!/usr/bin/env python
"""Permutation-test benchmark: jaxalign versus the numpy loop of the studies.

Problem (default): 1,000 block permutations (blocks of 20 samples) x 20,000
targets x 600 samples, Pearson r per target, one-sided p.

Rows of the table
-----------------
jaxalign (warm-up)  ``jaxalign.stats.permutation_test`` on a small slice of
                    the targets (same K, same batch shape): includes the JIT
                    compile; untimed in the comparison.
jaxalign            the full problem, warm (best of ``--repeats``).
numpy loop          what the studies' code does: for each permutation, index
                    ``y_true`` with it and compute r for all targets
                    vectorised over targets with numpy (centre both, multiply,
                    sum, normalise), count ``r_perm >= r_obs``. The SAME
                    arrangements as jaxalign (``permutation_indices``). Timed
                    on the first ``--numpy-permutations`` permutations and
                    extrapolated linearly to K (said in the output) unless
                    ``--numpy-full``.
GEMM floor          2 * K * n * T flops (the cost of K dense "permuted
                    correlations", i.e. K matrix-vector products per target)
                    at the measured jax float32 GEMM rate. jaxalign's block
                    path does FEWER flops than this (it tabulates block x
                    offset products once, then adds n_blocks table entries
                    per null value), so it can beat this "floor".
memory floor        the bytes that must be read (y_true and y_pred, float32)
                    at the bandwidth of a large numpy array copy.

Agreement: jaxalign run with K = the numpy subset uses exactly the numpy
loop's first permutations (permutation k depends only on the seed and k), so
its p-values must equal the numpy loop's; the fraction of equal p-values is
reported.

Examples
--------
    .venv/bin/python benchmarks/permutation.py
    .venv/bin/python benchmarks/permutation.py --targets 2000 --permutations 200
    .venv/bin/python benchmarks/permutation.py --scheme permute --output-json out/perm.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark the working tree's jaxalign

import jaxalign  # noqa: E402,F401  (first: guards jaxlib before the jax backend starts)
import numpy as np  # noqa: E402

try:
    from benchmarks import _harness as H
except ImportError:  # run as a script from elsewhere
    import _harness as H


from jaxalign.stats import _permutation as P  # noqa: E402


# ---------------------------------------------------------------------------
# data and the reference loop


def make_data(n, n_targets, *, seed=0, effect=0.1, chunk=4096):
    """float32 truth and prediction with a weak planted effect (r ~ effect)."""
    y = np.empty((n, n_targets), np.float32)
    f = np.empty((n, n_targets), np.float32)
    for c, start in enumerate(range(0, n_targets, chunk)):
        stop = min(start + chunk, n_targets)
        rng = np.random.default_rng([seed, c])
        a = rng.standard_normal((n, stop - start), dtype=np.float32)
        y[:, start:stop] = a
        f[:, start:stop] = effect * a + rng.standard_normal((n, stop - start), dtype=np.float32)
    return y, f


def corr_columns(a, b):
    """Pearson r per column, the way analysis scripts write it in numpy."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def numpy_loop(y_true, y_pred, idx, alternative="greater"):
    """p-values by a Python loop over permutations, vectorised over targets."""
    obs = corr_columns(y_true, y_pred)
    count = np.zeros(y_true.shape[1], np.int64)
    tol = P.TIE_TOL  # same tie rule as jaxalign, so p-values are comparable
    for row in idx:
        r = corr_columns(y_true[row], y_pred)
        if alternative == "greater":
            count += r >= obs - tol
        elif alternative == "less":
            count += r <= obs + tol
        else:
            count += np.abs(r) >= np.abs(obs) - tol
    return obs, (count + 1) / (len(idx) + 1)


def copy_bandwidth_gbs(mib=512, repeats=3):
    """Bytes moved (read + write) per second by a large numpy array copy."""
    src = np.ones(mib * H.MIB // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


# ---------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Examples"):],
    )
    ap.add_argument("--n", type=int, default=600, help="samples (default 600)")
    ap.add_argument("--targets", type=int, default=20000, help="targets (default 20000)")
    ap.add_argument("--permutations", type=int, default=1000, help="K (default 1000)")
    ap.add_argument("--scheme", default="block", choices=list(P.SCHEMES))
    ap.add_argument("--block-size", type=int, default=20,
                    help="block length for 'block', minimum shift for 'circular' (default 20)")
    ap.add_argument("--alternative", default="greater", choices=list(P.ALTERNATIVES))
    ap.add_argument("--max-stat", action="store_true", help="also compute p_fwe (max statistic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="warm jaxalign calls, best kept")
    ap.add_argument("--warmup-targets", type=int, default=512,
                    help="targets of the untimed compile call (default 512)")
    ap.add_argument("--numpy-permutations", type=int, default=50,
                    help="permutations the numpy loop is timed on, then extrapolated (default 50)")
    ap.add_argument("--numpy-full", action="store_true", help="run the numpy loop over all K")
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--memory-budget", default=None, help="jaxalign memory budget, e.g. 2GiB")
    ap.add_argument("--gemm-n", type=int, default=2048, help="size of the GEMM rate test")
    ap.add_argument("--bandwidth-mib", type=int, default=512, help="size of the copy test")
    ap.add_argument("--output-json", default=None, help="write every number to this file")
    args = ap.parse_args(argv)
    if args.scheme == "permute":
        args.block_size = None
    return args


def main(argv=None):
    args = parse_args(argv)
    n, T, K = args.n, args.targets, args.permutations

    def log(*a):
        print(*a, flush=True)

    info = H.machine_info()
    log("=" * 78)
    log("jaxalign permutation-test benchmark")
    log("=" * 78)
    log(H.format_machine_info(info))
    log(f"problem   : n={n} T={T} K={K} scheme={args.scheme} block_size={args.block_size} "
        f"alternative={args.alternative} max_stat={args.max_stat} float32 seed={args.seed}")
    idle = H.log_background_load(log)
    gemm_runs = [H.gemm_rate_gflops(n=args.gemm_n, dtype=np.float32)]
    bw_runs = [copy_bandwidth_gbs(args.bandwidth_mib)]
    log(f"gemm      : float32 {args.gemm_n}^2 jax {gemm_runs[0]['jax']:.1f} GFLOP/s, "
        f"numpy {gemm_runs[0]['numpy']:.1f} GFLOP/s; copy bandwidth {bw_runs[0]:.1f} GB/s "
        "(measured again at the end, best kept)")

    t0 = time.perf_counter()
    y, f = make_data(n, T, seed=args.seed)
    log(f"data      : y_true, y_pred {y.shape} float32 ({H.format_bytes(y.nbytes + f.nbytes)}) "
        f"in {time.perf_counter() - t0:.1f} s")
    log("-" * 78)

    kw = dict(block_size=args.block_size, scheme=args.scheme, alternative=args.alternative,
              seed=args.seed, max_stat=args.max_stat, memory_budget=args.memory_budget)
    rows = []

    # ------------------------------------------------------------- jaxalign
    Tw = min(T, args.warmup_targets)
    yw, fw = np.ascontiguousarray(y[:, :Tw]), np.ascontiguousarray(f[:, :Tw])
    mw = H.measure(lambda: P.permutation_test(yw, fw, K, **kw))
    log(f"jaxalign warm-up (T={Tw}, incl. compile): {mw.seconds:.2f} s, "
        f"batch {mw.result.batch_size} targets")
    rows.append(dict(method="jaxalign (warm-up)", time_s=mw.seconds, cpu_s=mw.cpu_s,
                     peak_mib=mw.peak_mib, cores_used=mw.cores_used, other_cores=mw.other_cores,
                     note=f"T={Tw}, incl. JIT compile"))
    del yw, fw
    best = None
    for r in range(max(1, args.repeats)):
        m = H.measure(lambda: P.permutation_test(y, f, K, **kw))
        log(f"jaxalign #{r + 1}: {m.seconds:.3f} s (CPU {m.cpu_s:.2f} s, "
            f"other load {m.other_cores or 0:.2f} cores)")
        if best is None or m.seconds < best.seconds:
            best = m
    res = best.result
    plan = P._Plan(n, K, args.scheme, args.block_size, args.seed)
    jrow = dict(method="jaxalign", time_s=best.seconds, cpu_s=best.cpu_s, peak_mib=best.peak_mib,
                cores_used=best.cores_used, other_cores=best.other_cores,
                note=f"kernel '{plan.kind}', batch {res.batch_size} targets, best of {args.repeats}")
    rows.append(jrow)
    t_jax = best.seconds

    # ------------------------------------------------------------- numpy loop
    agreement = None
    if not args.skip_numpy:
        Kn = K if args.numpy_full else min(K, max(1, args.numpy_permutations))
        idx = P.permutation_indices(n, Kn, args.scheme, args.block_size, args.seed)
        m = H.measure(lambda: numpy_loop(y, f, idx, args.alternative))
        per = m.seconds / Kn
        t_np = per * K
        extrap = Kn < K
        log(f"numpy loop: {Kn} permutations in {m.seconds:.2f} s ({per * 1e3:.1f} ms each)"
            + (f"; EXTRAPOLATED to K={K}: {t_np:.1f} s" if extrap else ""))
        rows.append(dict(method="numpy loop" + (" (extrapolated)" if extrap else ""),
                         time_s=t_np, cpu_s=m.cpu_s * K / Kn, peak_mib=m.peak_mib,
                         cores_used=m.cores_used, other_cores=m.other_cores,
                         note=(f"timed on {Kn} of {K} permutations, x{K / Kn:g}" if extrap
                               else "all permutations")))
        # agreement: jaxalign with the same first Kn permutations
        sub = P.permutation_test(y, f, Kn, **kw)
        _, p_np = m.result
        agreement = dict(
            n_permutations=Kn,
            same_p=float(np.mean(sub.p == p_np)),
            max_dp=float(np.max(np.abs(sub.p - p_np))),
            max_dr=float(np.max(np.abs(sub.r - m.result[0]))),
        )
        log(f"agreement : jaxalign with the same {Kn} permutations: "
            f"{100 * agreement['same_p']:.3f}% identical p-values "
            f"(max |dp| {agreement['max_dp']:.2e}), max |dr| {agreement['max_dr']:.1e}")

    # ------------------------------------------------------------- floors
    gemm_runs.append(H.gemm_rate_gflops(n=args.gemm_n, dtype=np.float32))
    bw_runs.append(copy_bandwidth_gbs(args.bandwidth_mib))
    gemm = max(g["jax"] for g in gemm_runs)
    bw = max(bw_runs)
    flops = 2.0 * K * n * T
    bytes_read = 2.0 * n * T * 4
    rows.append(dict(method="GEMM floor", time_s=flops / (gemm * 1e9),
                     note=f"2*K*n*T = {flops / 1e9:.1f} GFLOP at jax GEMM {gemm:.1f} GFLOP/s"))
    rows.append(dict(method="memory floor", time_s=bytes_read / (bw * 1e9),
                     note=f"{bytes_read / 1e6:.0f} MB read at copy bandwidth {bw:.1f} GB/s"))
    for row in rows:
        if row.get("time_s") and not row["method"].startswith("jaxalign (warm"):
            row["vs_jax"] = row["time_s"] / t_jax
        if row["method"] in ("jaxalign",) or row["method"].startswith("numpy"):
            row["gflops_equiv"] = flops / row["time_s"] / 1e9

    log(f"\n## Results: K={K} {args.scheme} permutations (block {args.block_size}) x T={T} "
        f"targets x n={n} samples\n")
    log("(time: wall s; CPU: process CPU s; peak: MiB RSS above the baseline; "
        "time / jaxalign > 1 means jaxalign is faster; GFLOP/s equiv = 2*K*n*T / time; "
        "other load: cores busy with other processes during the call)\n")
    cols = [
        ("method", "method"), ("time_s", "time (s)", ".3f"), ("cpu_s", "CPU (s)", ".2f"),
        ("peak_mib", "peak (MiB)", ".0f"), ("vs_jax", "time / jaxalign", ".2f"),
        ("gflops_equiv", "GFLOP/s equiv", ".1f"), ("cores_used", "cores used", ".2f"),
        ("other_cores", "other load", ".2f"), ("note", "note"),
    ]
    table = H.print_table(rows, cols)
    speedup = None
    np_row = next((r for r in rows if r["method"].startswith("numpy")), None)
    if np_row:
        speedup = np_row["time_s"] / t_jax
        log(f"\njaxalign is {speedup:.0f}x faster than the numpy loop"
            + (" (numpy time extrapolated)" if "extrapolated" in np_row["method"] else "")
            + f"; {t_jax / rows[-2]['time_s']:.2f}x the GEMM floor, "
            f"{t_jax / rows[-1]['time_s']:.1f}x the memory floor.")
    disturbed = [r for r in rows if (r.get("other_cores") or 0) > 0.25]
    if disturbed:
        log("WARNING: other processes kept cores busy during "
            + ", ".join(f"{r['method']} ({r['other_cores']:.2f} cores)" for r in disturbed)
            + ": those timings are not clean.")

    if args.output_json:
        H.write_json(args.output_json, dict(
            benchmark="permutation", args=vars(args), machine=info, idle_load_cores=idle,
            gemm_gflops_runs=gemm_runs, gemm_gflops=gemm, copy_bandwidth_gbs=bw,
            copy_bandwidth_runs=bw_runs, flops_equiv=flops, bytes_read=bytes_read,
            kernel=plan.kind, batch_size=res.batch_size, speedup_vs_numpy=speedup,
            agreement=agreement, rows=rows, table_markdown=table,
        ))
        log(f"\nwrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
