"""Llama and BERT in JAX against transformers (PyTorch) on tiny random models.

Each model is built by transformers with random weights (re-drawn larger than
the default init so that every parameter matters), saved with
``save_pretrained`` and read back from disk by jaxalign, then compared on a
right-padded batch of random ids: every hidden state (and Llama logits) at the
real positions must agree to 1e-4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402

import jaxalign.lm as lm  # noqa: E402
from jaxalign.lm import bert, llama  # noqa: E402
from jaxalign.lm._gguf import read_gguf  # noqa: E402

TOL = 1e-4
SEQ = 7
LENGTHS = (SEQ, 4)  # batch 2, second row right-padded


def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def _batch(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(len(LENGTHS), SEQ))
    mask = (np.arange(SEQ)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    return ids, mask


def _save_and_read(model, tmp_path) -> tuple[dict, dict]:
    model.save_pretrained(tmp_path)
    hf_config = json.loads((tmp_path / "config.json").read_text())
    tensors = load_file(tmp_path / "model.safetensors")
    return hf_config, tensors


def _assert_close_real(ours, ref, mask, what: str) -> None:
    ours = np.asarray(ours)
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[..., real, :], ref[..., real, :], atol=TOL, rtol=TOL, err_msg=what)


# ------------------------------------------------------------------------ Llama

LLAMA_BASE = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

LLAMA_CASES = {
    "tied": dict(tie_word_embeddings=True),
    "untied-llama3-bias-headdim": dict(
        tie_word_embeddings=False,
        head_dim=16,  # != hidden / heads = 8
        attention_bias=True,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            # wavelengths 6..2e4 straddle 64/4 and 64/1: all three llama3 branches
            original_max_position_embeddings=64,
        ),
    ),
    "linear-mlpbias-mha": dict(
        num_key_value_heads=4,
        mlp_bias=True,
        rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.5),
    ),
}


@pytest.mark.parametrize("row_chunk", [None, 3], ids=["whole", "mlp-and-attention-in-blocks-of-3"])
@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_llama_matches_transformers(case, row_chunk, tmp_path, monkeypatch):
    if row_chunk is not None:  # MLP: 2 x 7 rows in blocks of 3 (lax.map, padded);
        # attention: queries in blocks of 3, causal key skipping
        monkeypatch.setattr("jaxalign.lm._common.ROW_CHUNK", row_chunk)
        monkeypatch.setattr("jaxalign.lm._common.ATTENTION_BLOCK", row_chunk)
    hf_cfg = transformers.LlamaConfig(**(LLAMA_BASE | LLAMA_CASES[case]))
    torch.manual_seed(0)
    ref_model = transformers.LlamaForCausalLM(hf_cfg).eval()
    _randomise(ref_model, seed=1)
    hf_config, tensors = _save_and_read(ref_model, tmp_path)
    if hf_cfg.tie_word_embeddings:
        assert "lm_head.weight" not in tensors

    config = llama.Config.from_hf(hf_config)
    model = llama.Model(config)
    llama.load_state(model, tensors)

    ids, mask = _batch(hf_cfg.vocab_size, seed=2)
    out = model(ids, mask)
    with torch.no_grad():
        ref = ref_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            output_hidden_states=True,
        )
    ref_hidden = np.stack([h.numpy() for h in ref.hidden_states])
    assert out.hidden_states.shape == (hf_cfg.num_hidden_layers + 1, 2, SEQ, hf_cfg.hidden_size)
    assert out.logits.shape == (2, SEQ, hf_cfg.vocab_size)
    _assert_close_real(out.hidden_states, ref_hidden, mask, "hidden_states")
    _assert_close_real(out.logits, ref.logits.numpy(), mask, "logits")


def test_llama_config_legacy_rope_layout_equals_v5_layout():
    v5 = dict(LLAMA_BASE, rope_parameters=dict(LLAMA_CASES["untied-llama3-bias-headdim"]["rope_parameters"]))
    legacy = dict(LLAMA_BASE, rope_theta=10000.0, rope_scaling=dict(v5["rope_parameters"]))
    del legacy["rope_scaling"]["rope_theta"]
    legacy["rope_scaling"]["type"] = legacy["rope_scaling"].pop("rope_type")
    assert llama.Config.from_hf(v5) == llama.Config.from_hf(legacy)
    assert llama.Config.from_hf(v5).rope_type == "llama3"


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(rope_scaling=dict(rope_type="yarn", factor=2.0)), "yarn"),
        (dict(rope_parameters=dict(rope_type="dynamic", factor=2.0)), "dynamic"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(model_type="mistral"), "mistral"),
        (dict(rope_parameters=dict(rope_type="default", partial_rotary_factor=0.5)), "partial_rotary"),
    ],
)
def test_llama_config_rejects_unsupported(extra, message):
    with pytest.raises(ValueError, match=message):
        llama.Config.from_hf(LLAMA_BASE | extra)


def _tiny_llama_tensors(config: llama.Config) -> dict[str, np.ndarray]:
    """A random model's parameters under Hugging Face names (load_state's inverse)."""
    params = dict(nnx.to_flat_state(nnx.state(llama.Model(config), nnx.Param)))
    out = {}
    for name, target in llama.state_table(config).items():
        value = np.asarray(params[target.path].get_value())
        value = value if target.layer is None else value[target.layer]
        out[name] = value.T if target.transform is not None else value  # the transforms are transposes
    return out


def test_llama_load_state_reports_every_problem():
    config = llama.Config.from_hf(LLAMA_BASE)
    good = _tiny_llama_tensors(config)
    model = llama.Model(config, rngs=nnx.Rngs(1))
    llama.load_state(model, dict(good, **{"model.rotary_emb.inv_freq": np.zeros(4)}))  # ignored buffer
    np.testing.assert_array_equal(np.asarray(model.embed_tokens.embedding.get_value()),
                                  good["model.embed_tokens.weight"])

    bad = dict(good)
    del bad["model.layers.1.mlp.up_proj.weight"]
    bad["model.layers.0.self_attn.q_proj.bias"] = np.zeros(32, np.float32)  # config has no bias
    bad["model.norm.weight"] = np.zeros(33, np.float32)
    with pytest.raises(ValueError) as err:
        llama.load_state(model, bad)
    text = str(err.value)
    assert "missing from the checkpoint: ['model.layers.1.mlp.up_proj.weight']" in text
    assert "not mapped to any parameter: ['model.layers.0.self_attn.q_proj.bias']" in text
    assert "'model.norm.weight': checkpoint (33,)" in text
    # nothing was written
    np.testing.assert_array_equal(np.asarray(model.norm.scale.get_value()), good["model.norm.weight"])

    bare = {k.removeprefix("model."): v for k, v in good.items()}  # LlamaModel checkpoint
    fresh = llama.Model(config, rngs=nnx.Rngs(2))
    llama.load_state(fresh, bare)
    np.testing.assert_array_equal(np.asarray(fresh.layers.self_attn.q_proj.kernel.get_value())[2].T,
                                  good["model.layers.2.self_attn.q_proj.weight"])


def test_llama_tied_config_refuses_a_distinct_lm_head():
    config = llama.Config.from_hf(LLAMA_BASE | dict(tie_word_embeddings=True))
    tensors = _tiny_llama_tensors(config)
    model = llama.Model(config)
    llama.load_state(model, dict(tensors, **{"lm_head.weight": tensors["model.embed_tokens.weight"]}))
    with pytest.raises(ValueError, match="ties"):
        llama.load_state(model, dict(tensors, **{"lm_head.weight": tensors["model.embed_tokens.weight"] + 1}))


# ------------------------------------------------------------------------ BERT

BERT_BASE = dict(
    vocab_size=89,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    type_vocab_size=2,
)


@pytest.mark.parametrize("block", [None, 2], ids=["whole", "attention-in-blocks-of-2"])
@pytest.mark.parametrize("with_token_types", [False, True])
def test_bert_matches_transformers(with_token_types, block, tmp_path, monkeypatch):
    if block is not None:  # bidirectional: query blocks, every key
        monkeypatch.setattr("jaxalign.lm._common.ATTENTION_BLOCK", block)
    hf_cfg = transformers.BertConfig(**BERT_BASE)
    torch.manual_seed(0)
    ref_model = transformers.BertModel(hf_cfg).eval()
    _randomise(ref_model, seed=3)
    hf_config, tensors = _save_and_read(ref_model, tmp_path)
    assert any(k.startswith("pooler.") for k in tensors)  # ignored (no pooler)

    config = bert.Config.from_hf(hf_config)
    model = bert.Model(config)
    bert.load_state(model, tensors)

    ids, mask = _batch(hf_cfg.vocab_size, seed=4)
    kwargs = {}
    token_types = None
    if with_token_types:
        token_types = (np.arange(SEQ)[None, :] >= 3).astype(np.int64).repeat(2, axis=0)
        kwargs["token_type_ids"] = torch.from_numpy(token_types)
    out = model(ids, mask, token_type_ids=token_types)
    with torch.no_grad():
        ref = ref_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            output_hidden_states=True,
            **kwargs,
        )
    ref_hidden = np.stack([h.numpy() for h in ref.hidden_states])
    assert out.logits is None
    assert out.hidden_states.shape == (hf_cfg.num_hidden_layers + 1, 2, SEQ, hf_cfg.hidden_size)
    _assert_close_real(out.hidden_states, ref_hidden, mask, "hidden_states")


def test_bert_config_rejects_unsupported():
    for extra, message in [
        (dict(position_embedding_type="relative_key"), "position_embedding_type"),
        (dict(is_decoder=True), "is_decoder"),
        (dict(hidden_act="tanh"), "activation"),
        (dict(model_type="roberta"), "roberta"),
    ]:
        with pytest.raises(ValueError, match=message):
            bert.Config.from_hf(BERT_BASE | extra)


def test_bert_load_state_reports_problems_and_accepts_prefixed_names(tmp_path):
    hf_cfg = transformers.BertConfig(**BERT_BASE)
    ref_model = transformers.BertModel(hf_cfg)
    hf_config, tensors = _save_and_read(ref_model, tmp_path)
    model = bert.Model(bert.Config.from_hf(hf_config))
    # BertFor* checkpoints: "bert." prefix, legacy gamma/beta LayerNorm names
    prefixed = {
        "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in tensors.items()
    }
    bert.load_state(model, prefixed)
    np.testing.assert_array_equal(
        np.asarray(model.layers.out_ln_weight.get_value())[1],
        tensors["encoder.layer.1.output.LayerNorm.weight"],
    )
    bad = dict(tensors)
    del bad["encoder.layer.0.attention.self.key.bias"]
    bad["encoder.layer.0.crossattention.self.query.weight"] = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError) as err:
        bert.load_state(model, bad)
    assert "missing from the checkpoint: ['encoder.layer.0.attention.self.key.bias']" in str(err.value)
    assert "crossattention" in str(err.value)


# ------------------------------------------------------------------------ GGUF (synthetic)

try:
    import gguf
except ImportError:  # pragma: no cover - optional dependency
    gguf = None
needs_gguf = pytest.mark.skipif(gguf is None, reason="the gguf package is not installed")

_HF_TO_GGUF_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.o_proj.bias": "attn_output.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (the forward direction)."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_llama_gguf(path, hf_cfg, tensors, rope_freqs=None, arch="llama", extra_tensor=None):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(hf_cfg.num_hidden_layers)
    writer.add_context_length(hf_cfg.max_position_embeddings)
    writer.add_embedding_length(hf_cfg.hidden_size)
    writer.add_feed_forward_length(hf_cfg.intermediate_size)
    writer.add_head_count(hf_cfg.num_attention_heads)
    writer.add_head_count_kv(hf_cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(hf_cfg.rms_norm_eps)
    writer.add_rope_freq_base(hf_cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(hf_cfg.head_dim)
    writer.add_vocab_size(hf_cfg.vocab_size)
    heads, kv = hf_cfg.num_attention_heads, hf_cfg.num_key_value_heads
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            _, _, i, rest = name.split(".", 3)
            gname = f"blk.{i}.{_HF_TO_GGUF_BLOCK[rest]}"
            if rest.startswith("self_attn.q_proj"):
                arr = _llama_cpp_permute(arr, heads, heads)
            elif rest.startswith("self_attn.k_proj"):
                arr = _llama_cpp_permute(arr, heads, kv)
        writer.add_tensor(gname, np.ascontiguousarray(arr))
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))
    if extra_tensor is not None:
        writer.add_tensor(extra_tensor, np.zeros(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@needs_gguf
def test_read_gguf_roundtrip_with_llama3_rope_freqs(tmp_path):
    """A llama.cpp-style GGUF of a GQA llama3-rope model: un-permuted q/k and
    rope_freqs factors reproduce the original transformers model."""
    case = LLAMA_CASES["untied-llama3-bias-headdim"]
    hf_cfg = transformers.LlamaConfig(**(LLAMA_BASE | case))
    torch.manual_seed(0)
    ref_model = transformers.LlamaForCausalLM(hf_cfg).eval()
    _randomise(ref_model, seed=5)
    _, tensors = _save_and_read(ref_model, tmp_path)
    # llama.cpp stores Llama 3 rope scaling as per-frequency divisors
    plain = llama.Config.from_hf(LLAMA_BASE | dict(head_dim=16, rope_theta=10000.0))
    scaled = llama.Config.from_hf(LLAMA_BASE | case)
    rope_freqs = llama.rope_inv_freq(plain) / llama.rope_inv_freq(scaled)
    assert rope_freqs.min() == 1.0 and rope_freqs.max() == pytest.approx(8.0)
    _write_llama_gguf(tmp_path / "tiny.gguf", hf_cfg, tensors, rope_freqs=rope_freqs)

    hf_config, read, tokenizer = read_gguf(tmp_path / "tiny.gguf", with_tokenizer=False)
    assert tokenizer is None
    assert set(read) == set(tensors)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(read[name], arr, err_msg=name)
    assert hf_config["tie_word_embeddings"] is False
    assert hf_config["head_dim"] == 16 and hf_config["num_key_value_heads"] == 2

    config = llama.Config.from_hf(hf_config)
    model = llama.Model(config)
    llama.load_state(model, read)
    ids, mask = _batch(hf_cfg.vocab_size, seed=6)
    out = model(ids, mask)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        output_hidden_states=True)
    _assert_close_real(out.hidden_states, np.stack([h.numpy() for h in ref.hidden_states]), mask, "hidden")
    _assert_close_real(out.logits, ref.logits.numpy(), mask, "logits")


@needs_gguf
def test_read_gguf_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "absent.gguf")
    hf_cfg = transformers.LlamaConfig(**(LLAMA_BASE | LLAMA_CASES["tied"]))
    tensors = _tiny_llama_tensors(llama.Config.from_hf(hf_cfg.to_dict()))
    _write_llama_gguf(tmp_path / "gpt2.gguf", hf_cfg, tensors, arch="gpt2")
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        read_gguf(tmp_path / "gpt2.gguf", with_tokenizer=False)
    _write_llama_gguf(tmp_path / "moe.gguf", hf_cfg, tensors, extra_tensor="blk.0.ffn_gate_exps.weight")
    with pytest.raises(ValueError, match="blk.0.ffn_gate_exps.weight"):
        read_gguf(tmp_path / "moe.gguf", with_tokenizer=False)


@needs_gguf
@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_gguf_with_non_finite_weights_is_refused_naming_tensor_and_file(tmp_path, value):
    hf_cfg = transformers.LlamaConfig(**(LLAMA_BASE | LLAMA_CASES["tied"]))
    tensors = _tiny_llama_tensors(llama.Config.from_hf(hf_cfg.to_dict()))
    bad = np.array(tensors["model.layers.1.mlp.up_proj.weight"])
    bad[2, 7] = value
    tensors["model.layers.1.mlp.up_proj.weight"] = bad
    path = tmp_path / "nan.gguf"
    _write_llama_gguf(path, hf_cfg, tensors)
    # the weights are checked before the tokenizer is built (this file has none)
    with pytest.raises(ValueError, match=r"nan\.gguf \(GGUF tensor blk\.1\.ffn_up\.weight\).*"
                       r"'model\.layers\.1\.mlp\.up_proj\.weight'.*non-finite"):
        lm.load(path)


@needs_gguf
def test_truncated_gguf_is_named(tmp_path):
    hf_cfg = transformers.LlamaConfig(**(LLAMA_BASE | LLAMA_CASES["tied"]))
    tensors = _tiny_llama_tensors(llama.Config.from_hf(hf_cfg.to_dict()))
    _write_llama_gguf(tmp_path / "full.gguf", hf_cfg, tensors)
    data = (tmp_path / "full.gguf").read_bytes()
    # inside the metadata, inside the tensor index, inside the last tensor, and empty
    for cut in (40, len(data) // 10, len(data) - 100, 0):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"cut{cut}\.gguf.*truncated"):
            read_gguf(path, with_tokenizer=False)
        with pytest.raises(ValueError, match=rf"cut{cut}\.gguf.*truncated"):
            lm.load(path)


# ------------------------------------------------------------------------ through jaxalign.lm.load


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_load_and_hidden_states_through_jaxalign_lm(kind, tmp_path):
    if kind == "llama":
        hf_cfg = transformers.LlamaConfig(**(LLAMA_BASE | LLAMA_CASES["untied-llama3-bias-headdim"]))
        torch.manual_seed(0)
        ref_model = transformers.LlamaForCausalLM(hf_cfg).eval()
    else:
        hf_cfg = transformers.BertConfig(**BERT_BASE)
        torch.manual_seed(0)
        ref_model = transformers.BertModel(hf_cfg).eval()
    _randomise(ref_model, seed=7)
    ref_model.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="no tokenizer"):
        model, tokenizer = lm.load(tmp_path)
    assert tokenizer is None
    assert type(model).__module__ == f"jaxalign.lm.{kind}"

    ids, mask = _batch(hf_cfg.vocab_size, seed=8)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        output_hidden_states=True)
    ref_hidden = np.stack([h.numpy() for h in ref.hidden_states])
    _assert_close_real(lm.hidden_states(model, ids, mask), ref_hidden, mask, "hidden_states")

    # bfloat16 parameters and compute: same answer to bfloat16 precision
    with pytest.warns(UserWarning, match="no tokenizer"):
        model16, _ = lm.load(tmp_path, dtype="bfloat16")
    out16 = np.asarray(model16(ids, mask).hidden_states, dtype=np.float32)
    real = mask.astype(bool)
    err = np.abs(out16[:, real] - ref_hidden[:, real]).max()
    assert err < 0.03 * np.abs(ref_hidden[:, real]).max(), err  # measured ~1%
