#!/usr/bin/env python
"""Cost model of a study sweep: device-hours and wall time from measured points.

A study sweep (``jaxalign run``) is units of work, one per model x
checkpoint (features, then every layer's nested ridge CV over all subjects'
targets, then permutation tests). Each part's cost is predicted from points
measured on real machines (``benchmarks/cost_points.json``, every number
from ``benchmarks/RESULTS.md`` or from ``--measure``):

features
    time = tokens run through the model x parameters / (measured tokens/s x
    the measured model's parameters): forward cost ~ 2 x parameters per
    token, so a model k times larger runs k times fewer tokens per second
    (optimistic for small models on large devices, which run below peak).
ridge
    ``jaxalign.ridge.ridge_cv_flops`` counts the operations of one CV fit
    (decompositions, per-target products). Two measured fits of the same
    shape at different target counts split time into a per-fit part and a
    per-target part; each is turned into an effective rate (operations per
    second) and applied to the sweep's shape: outer folds x layers fits of
    ``n_train`` rows with the inner folds, plus held-out predictions.
permutations
    time = permutations x targets x samples / the measured rate.

Units are independent (a job array, ``jaxalign run --launcher slurm``), so
the wall time on N devices is device time / N when units outnumber devices
(the measured parallel efficiency of local workers is in RESULTS.md).

The model is checked against a measured run: ``--preset reduced`` is the
sweep benchmark's reduced size (``benchmarks/sweep.py --preset reduced``),
whose units took 65-76 s on one pinned core of the 2-core machine.

Examples
--------
    .venv/bin/python benchmarks/cost_model.py                      # the internet-scale sweep, 1,000 H100s
    .venv/bin/python benchmarks/cost_model.py --preset reduced --devices 1
    .venv/bin/python benchmarks/cost_model.py --models 10 --checkpoints 20 --devices 64
    .venv/bin/python benchmarks/cost_model.py --measure cpu-here   # add this machine's points
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import numpy as np  # noqa: E402

POINTS = Path(__file__).with_name("cost_points.json")

#: sweeps (None: no default)
PRESETS = {
    # issue 12's example: 100 models x 150 checkpoints x 48 layers x 8 subjects x 100k voxels
    "internet": dict(models=100, checkpoints=150, layers=48, subjects=8, voxels=100_000, samples=1200,
                     dim=2048, params=1.4e9, delays=4, words=5176, context=128, alphas=16, outer=4,
                     inner=10, permutations=1000, devices=1000),
    # issue 11's sweep benchmark at full size (features precomputed there; counted here)
    "hp": dict(models=1, checkpoints=4, layers=13, subjects=3, voxels=20_000, samples=1200, dim=768,
               params=124e6, delays=4, words=5176, context=128, alphas=16, outer=4, inner=10,
               permutations=0, devices=1),
    # benchmarks/sweep.py --preset reduced, measured (RESULTS.md, "Study sweep"): a check of the model
    "reduced": dict(models=1, checkpoints=2, layers=13, subjects=3, voxels=2000, samples=600, dim=256,
                    params=0, delays=4, words=2836, context=128, alphas=16, outer=4, inner=10,
                    permutations=0, devices=1),
}


def load_points(path=POINTS) -> dict:
    return json.loads(Path(path).read_text())["platforms"]


def _splits(n: int, k: int) -> list[tuple[int, int]]:
    """(n_train, n_val) of k contiguous folds of n samples."""
    edges = np.linspace(0, n, k + 1).astype(int)
    return [(n - int(b - a), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]


def _ridge_flops(n, p, targets, alphas, splits):
    from jaxalign.ridge import ridge_cv_flops

    return float(ridge_cv_flops(n, p, targets, alphas, splits))


def ridge_rates(points: list[dict], dual: bool | None = None) -> tuple[float, float, dict]:
    """(per-fit, per-target) effective operations per second from two fits of one shape, and that
    shape; with ``dual`` given, a shape in the same regime (p > n_train: the dual path) is preferred."""
    by_shape = {}
    for pt in points:
        key = (pt["n"], pt["p"], pt["alphas"], pt["folds"], pt.get("layers", 1))
        by_shape.setdefault(key, []).append(pt)
    usable = [k for k, pts in by_shape.items() if len({pt["targets"] for pt in pts}) >= 2]
    if not usable:
        raise ValueError("the ridge points need two fits of one shape at different target counts")
    if dual is not None:
        same = [k for k in usable if (k[1] > min(tr for tr, _ in _splits(k[0], k[3]))) == dual]
        usable = same or usable
    n, p, A, k, L = usable[0]
    pts = sorted(by_shape[usable[0]], key=lambda pt: pt["targets"])
    lo, hi = pts[0], pts[-1]
    splits = _splits(n, k)
    per_target_s = (hi["seconds"] - lo["seconds"]) / (hi["targets"] - lo["targets"])
    fixed_s = max(lo["seconds"] - lo["targets"] * per_target_s, 1e-9)
    f0 = L * _ridge_flops(n, p, 0, A, splits)
    f1 = L * (_ridge_flops(n, p, 10_000, A, splits) - _ridge_flops(n, p, 0, A, splits)) / 10_000
    shape = dict(n=n, p=p, alphas=A, folds=k, layers=L, dual=p > min(tr for tr, _ in splits))
    return f0 / fixed_s, f1 / per_target_s, shape


def predict(sweep: dict, platform: dict, dtype: str = "float32") -> dict:
    """Seconds per unit of each part, units, and device-hours for ``sweep`` on ``platform``."""
    T = sweep["subjects"] * sweep["voxels"]  # subjects sharing the stimulus: one multi-target problem
    p = sweep["delays"] * sweep["dim"]
    n, L, A = sweep["samples"], sweep["layers"], sweep["alphas"]
    # features: tokens of every word's context window through the model
    feats = [pt for pt in platform["features"] if pt["dtype"] == dtype] or platform["features"]
    tokens = sweep["words"] * sweep["context"]
    if sweep["params"] == 0:
        features_s, ref = 0.0, {"model": "(none: features precomputed)"}
    elif feats:
        ref = max(feats, key=lambda pt: pt["tokens_per_s"])
        features_s = tokens * sweep["params"] / (ref["tokens_per_s"] * ref["params"])
    else:
        features_s, ref = float("nan"), {"model": "(no features point)"}
    # ridge: every layer, every outer fold: a CV fit on the outer training rows with the inner folds
    n_tr0 = _splits(n, sweep["outer"])[0][0]
    dual = p > min(tr for tr, _ in _splits(n_tr0, sweep["inner"]))
    rate_fit, rate_target, shape = ridge_rates(platform["ridge"], dual)
    ridge_s = 0.0
    for n_tr, n_te in _splits(n, sweep["outer"]):
        inner = _splits(n_tr, sweep["inner"])
        f0 = _ridge_flops(n_tr, p, 0, A, inner)
        f1 = _ridge_flops(n_tr, p, T, A, inner) - f0
        predict_flops = 2.0 * n_te * p * T
        ridge_s += L * (f0 / rate_fit + (f1 + predict_flops) / rate_target)
    # permutation tests of the held-out predictions: every layer's targets
    if sweep["permutations"] == 0:
        perms_s = 0.0
    elif platform["permutations"]:
        perm = max(platform["permutations"], key=lambda pt: pt["targets"])
        perm_rate = perm["permutations"] * perm["targets"] * perm["samples"] / perm["seconds"]
        perms_s = sweep["permutations"] * T * n * L / perm_rate
    else:
        perms_s = float("nan")
    units = sweep["models"] * sweep["checkpoints"]
    unit_s = features_s + ridge_s + perms_s
    device_h = units * unit_s / 3600
    return dict(units=units, targets=T, features=p, features_s=features_s, ridge_s=ridge_s,
                perms_s=perms_s, unit_s=unit_s, device_hours=device_h,
                wall_hours=device_h / min(sweep["devices"], units) if units else 0.0,
                y_gib=n * T * 4 / 2**30, ridge_rates=(rate_fit, rate_target), ridge_shape=shape,
                features_ref=ref["model"])


# ---------------------------------------------------------------------------
# measuring this machine


def measure(name: str, log) -> dict:
    """Quick points on this machine: two ridge fits of one shape, a feature run, a permutation test."""
    import jax
    import jax.numpy as jnp

    from jaxalign import stats
    from jaxalign.ridge import RidgeCV

    rng = np.random.default_rng(0)
    n, p, A, k = 1500, 384, 11, 5
    X = rng.standard_normal((n, p)).astype(np.float32)
    ridge = []
    for T in (2000, 8000):
        Y = (X @ rng.standard_normal((p, T)).astype(np.float32) * 0.1
             + rng.standard_normal((n, T)).astype(np.float32))
        RidgeCV(np.logspace(-2, 8, A), cv=k).fit(X, Y[:, :256])  # compile outside the timing
        t0 = time.perf_counter()
        RidgeCV(np.logspace(-2, 8, A), cv=k).fit(X, Y)
        s = time.perf_counter() - t0
        ridge.append(dict(n=n, p=p, targets=T, alphas=A, folds=k, seconds=s,
                          date=time.strftime("%Y-%m-%d"), source="cost_model.py --measure"))
        log(f"ridge     n={n} p={p} T={T}: {s:.2f} s")
    samples, T, Q = 600, 4000, 200
    y = rng.standard_normal((samples, T)).astype(np.float32)
    pred = y + rng.standard_normal((samples, T)).astype(np.float32)
    stats.permutation_test(y[:, :64], pred[:, :64], n_permutations=Q, block_size=20)
    t0 = time.perf_counter()
    stats.permutation_test(y, pred, n_permutations=Q, block_size=20)
    s = time.perf_counter() - t0
    log(f"permutation {Q} x {T} targets x {samples}: {s:.3f} s")
    # features: a GPT-2-small-shaped forward pass (random weights), tokens/s
    from jaxalign import lm

    cfg = lm.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    model = lm.GPT2Model(cfg, rngs=__import__("flax").nnx.Rngs(0))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(__import__("flax").nnx.state(model)))
    ids = jnp.asarray(rng.integers(0, 50257, (16, 128)), jnp.int32)
    fwd = __import__("flax").nnx.jit(lambda m, i: m(i))
    jax.block_until_ready(fwd(model, ids))
    t0 = time.perf_counter()
    for _ in range(3):
        out = fwd(model, ids)
    jax.block_until_ready(out)
    tps = 3 * ids.size / (time.perf_counter() - t0)
    log(f"features  GPT-2-small shape, 16 x 128 tokens: {tps:.0f} tokens/s")
    return dict(machine=f"{name}: measured with cost_model.py --measure", ridge=ridge,
                features=[dict(model="GPT-2 small shape (random)", params=params, tokens_per_s=tps,
                               dtype="float32", date=time.strftime("%Y-%m-%d"),
                               source="cost_model.py --measure")],
                permutations=[dict(targets=T, samples=samples, permutations=Q, seconds=s,
                                   date=time.strftime("%Y-%m-%d"), source="cost_model.py --measure")])


# ---------------------------------------------------------------------------


def _hours(h: float) -> str:
    if not np.isfinite(h):
        return "n/a"
    if h < 1 / 60:
        return f"{h * 3600:.1f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} days"


def _device_hours(h: float) -> str:
    if not np.isfinite(h):
        return "n/a"
    return f"{h:,.0f} device-h" if h >= 10 else f"{h:.2g} device-h"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="internet")
    for key in PRESETS["internet"]:
        kind = float if key == "params" else int
        ap.add_argument("--" + key, type=kind, default=None, help=f"(internet: {PRESETS['internet'][key]:g})")
    ap.add_argument("--platform", action="append", default=None,
                    help="platforms of cost_points.json to predict for (default: all)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="features dtype (where a point for it exists)")
    ap.add_argument("--points", default=str(POINTS), help="the measured points (JSON)")
    ap.add_argument("--measure", default=None, metavar="NAME",
                    help="measure this machine and add its points to --points under NAME, then predict")
    args = ap.parse_args(argv)
    sweep = dict(PRESETS[args.preset])
    for key in sweep:
        if getattr(args, key) is not None:
            sweep[key] = getattr(args, key)
    bad = [k for k, v in sweep.items() if v < 0 or (v == 0 and k not in ("params", "permutations"))]
    if bad:
        ap.error(f"must be positive: {', '.join('--' + k for k in bad)}")
    return args, sweep


def main(argv=None):
    args, sweep = parse_args(argv)
    log = print
    doc = json.loads(Path(args.points).read_text())
    if args.measure:
        doc["platforms"][args.measure] = measure(args.measure, log)
        tmp = Path(args.points).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, args.points)
        log(f"added platform {args.measure!r} to {args.points}")
    platforms = doc["platforms"]
    names = args.platform or list(platforms)
    unknown = [n for n in names if n not in platforms]
    if unknown:
        raise SystemExit(f"--platform: unknown {unknown}; known: {', '.join(platforms)}")
    s = sweep
    log(f"sweep: {s['models']} models x {s['checkpoints']} checkpoints x {s['layers']} layers x "
        f"{s['subjects']} subjects x {s['voxels']:,} voxels, {s['samples']} samples, {s['delays']} x "
        f"{s['dim']} features, {s['params']:.3g} parameters per model, {s['words']} words x {s['context']} "
        f"tokens of context, {s['alphas']} penalties, {s['outer']} x {s['inner']} folds, "
        f"{s['permutations']} permutations; {s['devices']} device(s) of each platform\n")
    rows = []
    for name in names:
        r = predict(sweep, platforms[name], args.dtype)
        rows.append((name, r))
    head = ("| platform | units | features / unit | ridge / unit | permutations / unit | unit | "
            "device time | wall on {} |".format(sweep["devices"]))
    log(head)
    log("|" + "---|" * 8)
    for name, r in rows:
        log(f"| {name} | {r['units']:,} | {_hours(r['features_s'] / 3600)} | {_hours(r['ridge_s'] / 3600)} | "
            f"{_hours(r['perms_s'] / 3600)} | {_hours(r['unit_s'] / 3600)} | "
            f"{_device_hours(r['device_hours'])} | {_hours(r['wall_hours'])} |")
    log("")
    for name, r in rows:
        fit, tgt = r["ridge_rates"]
        sh = r["ridge_shape"]
        log(f"- {name}: ridge effective rates {fit / 1e9:.1f} GFLOP/s per fit, {tgt / 1e9:.1f} GFLOP/s per "
            f"target, from fits of n={sh['n']}, p={sh['p']} ({'dual' if sh['dual'] else 'primal'} path), "
            f"{sh['layers']} layer(s) on {platforms[name]['machine']}; features scaled from {r['features_ref']}; "
            f"targets per fit {r['targets']:,} ({r['y_gib']:.1f} GiB of float32 Y)")
    return rows


if __name__ == "__main__":
    main()
