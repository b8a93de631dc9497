"""GPT-2 and GPT-NeoX against transformers' PyTorch models, on tiny random configs.

Every parameter of the reference model is re-drawn at a visible scale (biases
and LayerNorm affine included: the default init leaves them 0/1 and would not
test their mapping), saved with ``save_pretrained``, loaded with
``jaxalign.lm.load`` and compared on every hidden state and the logits.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.lm import gpt2, gpt_neox  # noqa: E402

VOCAB = 96
SEQ = 9
IDS = np.random.default_rng(0).integers(0, VOCAB, (2, SEQ))
# Row 0 right-padded, row 1 left-padded.
MASK = np.array([[1] * 6 + [0] * 3, [0] * 2 + [1] * 7])

CASES = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4,
            bos_token_id=0, eos_token_id=0,
        )
    ),
    "gpt2-untied-erf-inverse-layer-scale": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4, n_inner=48,
            activation_function="gelu", scale_attn_by_inverse_layer_idx=True,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
        )
    ),
    "neox-parallel-rotary0.25": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=96, rotary_pct=0.25, use_parallel_residual=True,
            max_position_embeddings=16,
        )
    ),
    "neox-sequential-rotary1.0-nobias": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=96, rotary_pct=1.0, rotary_emb_base=500.0,
            use_parallel_residual=False, attention_bias=False, max_position_embeddings=16,
        )
    ),
}


def randomize(model, seed: int = 0):
    """Redraw all parameters so that every one of them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "ln" in name or "layernorm" in name or "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                p.copy_(0.15 * noise)
    return model.eval()


def reference(model, ids, mask):
    with torch.no_grad():
        out = model(
            torch.tensor(ids),
            attention_mask=None if mask is None else torch.tensor(mask),
            output_hidden_states=True,
        )
    return np.stack([h.numpy() for h in out.hidden_states]), out.logits.numpy()


def quiet_load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no tokenizer in these directories
        return lm.load(path, **kwargs)


_BUILT: dict = {}


def built(name, tmp_path_factory):
    """(name, torch model, loaded jaxalign model, checkpoint dir), built once."""
    if name not in _BUILT:
        torch_model = randomize(CASES[name]())
        path = tmp_path_factory.mktemp(name)
        torch_model.save_pretrained(path)
        model, _ = quiet_load(path)
        _BUILT[name] = (name, torch_model, model, path)
    return _BUILT[name]


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    return built(request.param, tmp_path_factory)


# The slower checks run on one model per architecture only.
@pytest.fixture(scope="module", params=["gpt2", "neox-parallel-rotary0.25"])
def one_per_arch(request, tmp_path_factory):
    return built(request.param, tmp_path_factory)


def test_matches_transformers_with_padding(case):
    name, torch_model, model, _ = case
    ref_hidden, ref_logits = reference(torch_model, IDS, MASK)
    out = model(jnp.asarray(IDS), jnp.asarray(MASK))
    n_layers = torch_model.config.num_hidden_layers
    assert out.hidden_states.shape == (n_layers + 1, 2, SEQ, torch_model.config.hidden_size)
    assert out.logits.shape == (2, SEQ, VOCAB)
    real = MASK.astype(bool)
    hidden = np.asarray(out.hidden_states)
    for layer in range(n_layers + 1):
        np.testing.assert_allclose(hidden[layer][real], ref_hidden[layer][real], atol=1e-4, rtol=1e-4,
                                   err_msg=f"{name} hidden state {layer}")
    np.testing.assert_allclose(np.asarray(out.logits)[real], ref_logits[real], atol=1e-4, rtol=1e-4)
    # Padded positions carry no meaning but must not be NaN (NaN would leak
    # through 0-weight attention into real positions of later layers).
    assert np.isfinite(hidden).all() and np.isfinite(np.asarray(out.logits)).all()


def test_mlp_and_attention_in_blocks_match_transformers(case, monkeypatch):
    # 2 x 9 rows through the MLP in blocks of 4 (lax.map, last block padded);
    # queries in blocks of 4 with the causal key skipping
    monkeypatch.setattr("jaxalign.lm._common.ROW_CHUNK", 4)
    monkeypatch.setattr("jaxalign.lm._common.ATTENTION_BLOCK", 4)
    name, torch_model, model, _ = case
    ref_hidden, _ = reference(torch_model, IDS, MASK)
    hidden = np.asarray(model(jnp.asarray(IDS), jnp.asarray(MASK)).hidden_states)
    real = MASK.astype(bool)
    for layer in range(hidden.shape[0]):
        np.testing.assert_allclose(hidden[layer][real], ref_hidden[layer][real], atol=1e-4, rtol=1e-4,
                                   err_msg=f"{name} hidden state {layer}")


@pytest.mark.parametrize("causal", [True, False])
def test_blocked_attention_equals_whole(causal, monkeypatch):
    from jaxalign.lm import _common

    rng = np.random.default_rng(9)
    b, s, h, kvh, d = 2, 11, 4, 2, 8
    q = jnp.asarray(rng.standard_normal((b, s, h, d)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((b, s, kvh, d)), jnp.float32) for _ in range(2))
    pad = np.ones((b, s), int)
    pad[0, 8:] = 0  # right padding
    pad[1, :3] = 0  # left padding: the first rows see no key at all
    mask = _common.attention_mask_4d(jnp.asarray(pad), s, causal=causal)
    monkeypatch.setattr(_common, "ATTENTION_BLOCK", 0)
    whole = np.asarray(_common.dot_product_attention(q, k, v, mask, 0.3, causal=causal))
    seen = np.asarray(mask).any(-1)[:, 0]  # (batch, query): rows with a visible key
    for block in (1, 3, 4, 10):
        monkeypatch.setattr(_common, "ATTENTION_BLOCK", block)
        got = np.asarray(_common.dot_product_attention(q, k, v, mask, 0.3, causal=causal))
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[seen], whole[seen], rtol=1e-6, atol=1e-6)
    # a key-padding-only mask (batch, 1, 1, seq) broadcasts over the blocks
    key_mask = jnp.asarray(pad, bool)[:, None, None, :]
    monkeypatch.setattr(_common, "ATTENTION_BLOCK", 0)
    ref = np.asarray(_common.dot_product_attention(q, k, v, key_mask, 0.3))
    monkeypatch.setattr(_common, "ATTENTION_BLOCK", 4)
    np.testing.assert_allclose(np.asarray(_common.dot_product_attention(q, k, v, key_mask, 0.3)), ref,
                               rtol=1e-6, atol=1e-6)


def test_in_row_chunks_equals_whole():
    from jaxalign.lm._common import in_row_chunks

    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((3, 7, 6)), jnp.float32)
    w1 = jnp.asarray(rng.standard_normal((6, 10)), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((10, 4)), jnp.float32)

    def fn(r):
        return jnp.tanh(r @ w1) @ w2

    whole = np.asarray(fn(x))
    for rows in (1, 4, 5, 21, 64, 0):
        np.testing.assert_allclose(np.asarray(in_row_chunks(fn, x, rows)), whole, rtol=1e-6, atol=1e-6)
    assert in_row_chunks(fn, x, 4).shape == (3, 7, 4)


def test_matches_transformers_without_mask(case):
    _, torch_model, model, _ = case
    ref_hidden, ref_logits = reference(torch_model, IDS, None)
    out = model(jnp.asarray(IDS))
    np.testing.assert_allclose(np.asarray(out.hidden_states), ref_hidden, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(out.logits), ref_logits, atol=1e-4, rtol=1e-4)


def test_hidden_states_function_is_jitted_once_per_shape(one_per_arch):
    _, _, model, _ = one_per_arch
    direct = np.asarray(model(jnp.asarray(IDS), jnp.asarray(MASK)).hidden_states)
    first = lm.hidden_states(model, IDS, MASK)
    np.testing.assert_allclose(np.asarray(first), direct, atol=1e-5, rtol=1e-5)
    compiled = lm._load._hidden_states._cache_size()
    lm.hidden_states(model, IDS[:, ::-1].copy(), MASK)  # same shapes: no retrace
    assert lm._load._hidden_states._cache_size() == compiled
    lm.hidden_states(model, IDS[:, :4], MASK[:, :4])  # new shape: one more
    assert lm._load._hidden_states._cache_size() == compiled + 1


def test_bfloat16_load_is_close(one_per_arch):
    _, torch_model, _, path = one_per_arch
    model, _ = quiet_load(path, dtype=jnp.bfloat16)
    assert model(jnp.asarray(IDS)).hidden_states.dtype == jnp.bfloat16
    ref_hidden, ref_logits = reference(torch_model, IDS, MASK)
    hidden = np.asarray(lm.hidden_states(model, IDS, MASK).astype(jnp.float32))
    real = MASK.astype(bool)
    for layer in range(len(ref_hidden)):
        want = ref_hidden[layer][real]
        err = np.abs(hidden[layer][real] - want).max() / np.abs(want).max()
        assert err < 0.05, (layer, err)


def test_rejects_ids_out_of_range_and_too_long(case):
    name, _, model, _ = case
    with pytest.raises(ValueError, match="token ids"):
        lm.hidden_states(model, np.full((1, 3), VOCAB))
    if name.startswith("gpt2"):
        with pytest.raises(ValueError, match="n_positions"):
            model(jnp.zeros((1, 17), jnp.int32))


# ------------------------------------------------------------------ configs


PYTHIA_160M = {  # config.json of EleutherAI/pythia-160m (transformers 4 keys)
    "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
    "hidden_act": "gelu", "hidden_size": 768, "initializer_range": 0.02,
    "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
    "model_type": "gpt_neox", "num_attention_heads": 12, "num_hidden_layers": 12,
    "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
    "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True,
    "use_parallel_residual": True, "vocab_size": 50304,
}


def test_pythia_config_and_its_13_hidden_states():
    config = gpt_neox.Config.from_hf(PYTHIA_160M)
    assert (config.hidden_size, config.num_hidden_layers, config.rotary_ndims) == (768, 12, 16)
    assert config.use_parallel_residual and not config.tie_word_embeddings
    # transformers 5 spelling of the same rotary settings
    v5 = {k: v for k, v in PYTHIA_160M.items() if not k.startswith("rotary")}
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    assert gpt_neox.Config.from_hf(v5) == config
    shape = nnx.eval_shape(lambda: gpt_neox.Model(config)(jnp.zeros((1, 5), jnp.int32)))
    assert shape.hidden_states.shape == (13, 1, 5, 768)


def test_gpt2_xl_has_49_hidden_states():
    config = gpt2.Config.from_hf({"model_type": "gpt2", "n_embd": 1600, "n_layer": 48, "n_head": 25})
    shape = nnx.eval_shape(lambda: gpt2.Model(config)(jnp.zeros((1, 3), jnp.int32)))
    assert shape.hidden_states.shape == (49, 1, 3, 1600)
    assert shape.logits.shape == (1, 3, 50257)


@pytest.mark.parametrize(
    "module, hf, match",
    [
        (gpt2, {"model_type": "gpt2", "add_cross_attention": True}, "add_cross_attention"),
        (gpt2, {"model_type": "gpt2", "activation_function": "swishy"}, "swishy"),
        (gpt2, {"model_type": "gpt_neox"}, "model_type"),
        (gpt2, {"n_embd": 30, "n_head": 4}, "divisible"),
        (gpt_neox, {"model_type": "gpt_neox", "rope_scaling": {"type": "dynamic", "factor": 2.0}}, "dynamic"),
        (gpt_neox, {"model_type": "gpt_neox", "rope_parameters": {"rope_type": "yarn"}}, "yarn"),
        (gpt_neox, {"model_type": "gpt_neox", "hidden_act": "swishy"}, "swishy"),
    ],
)
def test_config_rejects_unsupported_options(module, hf, match):
    with pytest.raises(ValueError, match=match):
        module.Config.from_hf(hf)
