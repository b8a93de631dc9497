"""finetune.save_pretrained: transformers and jaxalign.lm.load read the export back with the same logits.

Each tiny random transformers model is loaded into jaxalign, its parameters
are changed there (so the export must carry jaxalign's values, not the
source file's), exported, and read back by both. Tolerances: transformers'
PyTorch logits vs jaxalign's within 1e-4 (float32, different kernels; the
lm tests' tolerance); jaxalign's reload is bit for bit.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from _tiny_lm import saved_tiny  # noqa: E402

from jaxalign import finetune, lm  # noqa: E402
from jaxalign.lm import gpt2, gpt_neox, llama  # noqa: E402

IDS = np.random.default_rng(3).integers(0, 320, (2, 9))


def _quiet_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.load(path)


def _perturb(model, seed=1):
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: x + 0.05 * jax.random.normal(next(keys), x.shape, x.dtype), state))


# GPT-2 (tied head), Llama with a tied head (as SmolLM2), GPT-NeoX with its own head (the transposed-kernel
# export path of Llama's untied lm_head too)
@pytest.mark.parametrize("kind, tied", [("gpt2", True), ("llama", True), ("gpt_neox", False)])
def test_export_reloads_identically_in_transformers_and_jaxalign(tmp_path, kind, tied):
    source, torch_source = saved_tiny(kind, tied=tied)
    model, tokenizer = _quiet_load(source)
    _perturb(model)
    want = np.asarray(model(jnp.asarray(IDS)).logits)

    out = finetune.save_pretrained(model, tokenizer, tmp_path / "export")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    # every tensor transformers expects was written (tied heads once), nothing else
    written = set(lm.read_checkpoint(out)[1])
    # (GPT-NeoX's head is written under its transformers 4 name, embed_out, which transformers 5 also reads)
    expected = {("embed_out.weight" if k == "lm_head.weight" and kind == "gpt_neox" else k)
                for k in torch_source.state_dict()}
    if model.config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    assert written == expected
    with torch.no_grad():
        got = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

    again, tok2 = _quiet_load(out)
    assert np.array_equal(np.asarray(again(jnp.asarray(IDS)).logits), want)
    assert type(again.config).from_hf(json.loads((out / "config.json").read_text())) == model.config
    assert tok2("the cat sat", add_special_tokens=False)["input_ids"] == \
        tokenizer("the cat sat", add_special_tokens=False)["input_ids"]


def test_config_to_hf_round_trips():
    configs = [
        gpt2.Config(n_inner=40, activation_function="gelu", scale_attn_by_inverse_layer_idx=True),
        gpt_neox.Config(rotary_pct=0.5, rotary_emb_base=500.0, use_parallel_residual=False),
        llama.Config(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=4, rope_type="llama3", rope_factor=8.0, rope_theta=5e5),
        llama.Config(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2, head_dim=6, rope_type="linear", rope_factor=2.0, attention_bias=True),
    ]
    for c in configs:
        assert type(c).from_hf(json.loads(json.dumps(c.to_hf()))) == c
    gguf_only = llama.Config(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=4, rope_freq_factors=(1.0, 2.0))
    with pytest.raises(ValueError, match="rope_freq_factors"):
        gguf_only.to_hf()


def test_models_outside_jaxalign_lm_are_refused(tmp_path):
    model = nnx.eval_shape(lambda: gpt2.Model(gpt2.Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1,
                                                          n_head=2)))

    class Other(nnx.Module):
        config = model.config

    with pytest.raises(ValueError, match="not an architecture of jaxalign.lm"):
        finetune.save_pretrained(Other(), None, tmp_path / "x")
