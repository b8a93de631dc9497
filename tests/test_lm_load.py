"""jaxalign.lm.load: checkpoint formats, Hub cache resolution, tokenizer, errors."""

from __future__ import annotations

import json
import re
import sys
import types
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")
safetensors_torch = pytest.importorskip("safetensors.torch")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.lm import _load  # noqa: E402

VOCAB = 64
IDS = np.random.default_rng(1).integers(0, VOCAB, (2, 6))
MASK = np.array([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=8, n_embd=16, n_layer=2, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return model


def torch_hidden(model):
    with torch.no_grad():
        out = model(torch.tensor(IDS), attention_mask=torch.tensor(MASK), output_hidden_states=True)
    return np.stack([h.numpy() for h in out.hidden_states])


def assert_same_model(model, torch_model):
    real = MASK.astype(bool)
    got = np.asarray(lm.hidden_states(model, IDS, MASK))[:, real]
    np.testing.assert_allclose(got, torch_hidden(torch_model)[:, real], atol=1e-4, rtol=1e-4)


def quiet_load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.load(*args, **kwargs)


@pytest.fixture(scope="module")
def ref():
    return tiny_gpt2()


@pytest.fixture()
def saved(ref, tmp_path):
    ref.save_pretrained(tmp_path)
    return tmp_path


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def write_safetensors(path, tensors: dict[str, np.ndarray]):
    safetensors_torch.save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)


# ------------------------------------------------------------------ formats


def test_single_safetensors_without_tokenizer_warns(ref, saved):
    with pytest.warns(UserWarning, match="no tokenizer"):
        model, tokenizer = lm.load(saved)
    assert tokenizer is None
    assert_same_model(model, ref)


def test_sharded_safetensors(ref, tmp_path):
    ref.save_pretrained(tmp_path, max_shard_size="8KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    model, _ = quiet_load(tmp_path)
    assert_same_model(model, ref)


def test_missing_shard_is_named(ref, tmp_path):
    ref.save_pretrained(tmp_path, max_shard_size="8KB")
    shard = sorted(tmp_path.glob("model-*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        quiet_load(tmp_path)


def test_pytorch_model_bin(ref, tmp_path):
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model, _ = quiet_load(tmp_path)
    assert_same_model(model, ref)


def test_bfloat16_checkpoints_are_read_bit_exactly(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.arange(7),
        "scalar": torch.tensor(2.5),
    }
    safetensors_torch.save_file(tensors, tmp_path / "t.safetensors")
    torch.save(tensors, tmp_path / "t.bin")
    for read in (_load.read_safetensors(tmp_path / "t.safetensors"), _load.read_torch_bin(tmp_path / "t.bin")):
        assert set(read) == set(tensors)
        for name, t in tensors.items():
            assert read[name].shape == tuple(t.shape)
            np.testing.assert_array_equal(read[name].astype(np.float64), t.double().numpy())
        assert read["bf16"].dtype.name == "bfloat16"


def test_bfloat16_model_checkpoint_loads_in_both_dtypes(ref, tmp_path):
    ref_bf16 = tiny_gpt2().to(torch.bfloat16)
    ref_bf16.save_pretrained(tmp_path)
    model, _ = quiet_load(tmp_path)  # float32 from bfloat16 weights: exact upcast
    wte = ref_bf16.transformer.wte.weight.detach().float().numpy()
    np.testing.assert_array_equal(np.asarray(model.wte.embedding[...]), wte)
    model16, _ = quiet_load(tmp_path, dtype="bfloat16")
    assert model16.wte.embedding[...].dtype == jnp.bfloat16


def test_tokenizer_is_loaded_when_present(saved):
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no tokenizer" warning
        _, tokenizer = lm.load(saved)
    assert tokenizer("hello world", add_special_tokens=False)["input_ids"] == [1, 2]


def test_gguf_paths_go_to_read_gguf(ref, tmp_path, monkeypatch):
    calls = []

    def read_gguf(path, with_tokenizer=True):
        calls.append(path)
        return ref.config.to_dict(), state_dict_numpy(ref), "the tokenizer" if with_tokenizer else None

    def gguf_tokenizer(path):
        calls.append(path)
        return "the tokenizer"

    monkeypatch.setitem(sys.modules, "jaxalign.lm._gguf",
                        types.SimpleNamespace(read_gguf=read_gguf, gguf_tokenizer=gguf_tokenizer))
    path = tmp_path / "tiny.Q8_0.gguf"
    path.write_bytes(b"GGUF")
    model, tokenizer = lm.load(path)
    assert calls == [path, path] and tokenizer == "the tokenizer"
    assert_same_model(model, ref)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        lm.load(tmp_path / "missing.gguf")


# ---------------------------------------------------------------- Hub cache

MAIN, STEP = "a" * 40, "b" * 40


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding org/tiny at main and at tag step1000."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    for ref_name, commit, seed in (("main", MAIN, 0), ("step1000", STEP, 1)):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref_name).write_text(commit)
        tiny_gpt2(seed).save_pretrained(repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_offline_with_revision(hub_cache):
    main, _ = quiet_load("org/tiny")
    step, _ = quiet_load("org/tiny", revision="step1000")
    assert_same_model(main, tiny_gpt2(0))
    assert_same_model(step, tiny_gpt2(1))
    assert lm.resolve("org/tiny", revision=STEP).name == STEP  # a commit hash works too


def test_hub_id_not_cached_offline(hub_cache):
    with pytest.raises(FileNotFoundError, match="org/tiny.*step9"):
        quiet_load("org/tiny", revision="step9")
    with pytest.raises(FileNotFoundError, match="org/absent"):
        quiet_load("org/absent")


@pytest.mark.filterwarnings("ignore:.*no tokenizer")
def test_hub_falls_back_to_cache_when_network_fails(tmp_path, ref, monkeypatch):
    ref.save_pretrained(tmp_path)
    calls = []

    def snapshot_download(repo_id, *, revision=None, local_files_only=False, allow_patterns=None):
        calls.append((repo_id, revision, local_files_only))
        if not local_files_only:
            raise OSError("network is unreachable")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.warns(RuntimeWarning, match="local cache"):
        model, _ = lm.load("org/tiny", revision="step1000")
    assert calls == [("org/tiny", "step1000", False), ("org/tiny", "step1000", True)]
    assert_same_model(model, ref)


# ------------------------------------------------------------------ errors


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        lm.load(tmp_path / "does-not-exist")


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        quiet_load(saved)


def test_missing_weights(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors.*pytorch_model.bin"):
        quiet_load(saved)


def test_unsupported_model_type(saved):
    config = json.loads((saved / "config.json").read_text())
    config["model_type"] = "t5"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'t5'.*bert, gpt2, gpt_neox, llama"):
        quiet_load(saved)


def test_unsupported_dtype(saved):
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        quiet_load(saved, dtype=jnp.float16)


def test_extra_tensor_is_named(ref, saved):
    tensors = state_dict_numpy(ref)
    tensors["transformer.h.0.attn.mystery"] = np.zeros(3, np.float32)
    tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))  # harmless buffer
    write_safetensors(saved / "model.safetensors", tensors)
    with pytest.raises(ValueError, match=r"not mapped.*'transformer\.h\.0\.attn\.mystery'") as info:
        quiet_load(saved)
    assert "attn.bias" not in str(info.value)


def test_harmless_buffers_and_tied_head_are_accepted(ref, saved):
    tensors = state_dict_numpy(ref)  # state_dict has the tied lm_head.weight
    tensors["transformer.h.1.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))
    tensors["transformer.h.1.attn.masked_bias"] = np.array(-1e4, np.float32)
    write_safetensors(saved / "model.safetensors", tensors)
    model, _ = quiet_load(saved)
    assert_same_model(model, ref)


def test_missing_tensor_is_named(ref, saved):
    tensors = state_dict_numpy(ref)
    del tensors["transformer.h.1.mlp.c_fc.bias"], tensors["transformer.ln_f.weight"]
    write_safetensors(saved / "model.safetensors", tensors)
    with pytest.raises(ValueError, match=r"missing from the checkpoint") as info:
        quiet_load(saved)
    assert "'h.1.mlp.c_fc.bias'" in str(info.value) and "'ln_f.weight'" in str(info.value)


def test_shape_mismatch_is_named(ref, saved):
    tensors = state_dict_numpy(ref)
    tensors["transformer.h.0.attn.c_proj.weight"] = np.zeros((16, 17), np.float32)
    write_safetensors(saved / "model.safetensors", tensors)
    with pytest.raises(ValueError, match=r"shape mismatch.*h\.0\.attn\.c_proj\.weight.*\(16, 17\)"):
        quiet_load(saved)


# ------------------------------------------------------- corrupt checkpoints


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("fmt", ["safetensors", "bin", "sharded", "bfloat16"])
def test_non_finite_weights_are_named_with_their_file(ref, tmp_path, fmt, value):
    ref.config.save_pretrained(tmp_path)
    tensors = state_dict_numpy(ref)
    bad = "transformer.h.1.mlp.c_fc.weight"
    tensors[bad][3, 5] = value
    if fmt == "safetensors":
        write_safetensors(tmp_path / "model.safetensors", tensors)
        where = "model.safetensors"
    elif fmt == "bfloat16":
        safetensors_torch.save_file({k: torch.from_numpy(v).bfloat16() for k, v in tensors.items()},
                                    tmp_path / "model.safetensors")
        where = "model.safetensors"
    elif fmt == "bin":
        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp_path / "pytorch_model.bin")
        where = "pytorch_model.bin"
    else:  # sharded: the message names the shard that holds the tensor
        ref.save_pretrained(tmp_path, max_shard_size="8KB")
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
        where = index[bad]
        shard = {k: v for k, v in tensors.items() if index.get(k) == where}
        write_safetensors(tmp_path / where, shard)
    for dtype in (jnp.float32, jnp.bfloat16):
        with pytest.raises(ValueError, match=rf"{where}.*tensor '{bad}'.*non-finite"):
            quiet_load(tmp_path, dtype=dtype)


def test_malformed_json_is_named_with_its_line(ref, tmp_path):
    ref.save_pretrained(tmp_path)
    good = (tmp_path / "config.json").read_text()
    lines = good.splitlines()
    lines[2] = lines[2] + ","  # a stray comma at the end of line 3
    (tmp_path / "config.json").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"config\.json: malformed JSON at line 3, column \d+"):
        quiet_load(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json: expected a JSON object"):
        quiet_load(tmp_path)
    (tmp_path / "config.json").write_text(good)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"a": "b"')
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: malformed JSON at line 1"):
        quiet_load(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_weights_are_named(ref, tmp_path, name):
    ref.config.save_pretrained(tmp_path)
    if name == "pytorch_model.bin":
        torch.save(ref.state_dict(), tmp_path / name)
    else:
        write_safetensors(tmp_path / name, state_dict_numpy(ref))
    data = (tmp_path / name).read_bytes()
    for cut in (len(data) - 200, 100, 4):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / name))}.*(truncated|corrupt|not a safetensors)"):
            quiet_load(tmp_path)


def test_build_model_refuses_non_finite_weights(ref):
    tensors = state_dict_numpy(ref)
    tensors["transformer.wte.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"'transformer\.wte\.weight'.*1 NaN, 0 inf"):
        lm.build_model(ref.config.to_dict(), tensors)


def test_neox_lm_head_under_either_name(tmp_path):
    torch.manual_seed(0)
    ref = transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=8,
        )
    ).eval()
    ref.config.save_pretrained(tmp_path)
    tensors = state_dict_numpy(ref)
    tensors["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = np.ones(2, np.float32)  # old buffer
    head = tensors.pop("lm_head.weight") if "lm_head.weight" in tensors else tensors.pop("embed_out.weight")
    for name in ("embed_out.weight", "lm_head.weight"):
        write_safetensors(tmp_path / "model.safetensors", {**tensors, name: head})
        model, _ = quiet_load(tmp_path)
        assert_same_model(model, ref)
    write_safetensors(tmp_path / "model.safetensors", {**tensors, "embed_out.weight": head, "lm_head.weight": head.copy()})
    with pytest.raises(ValueError, match="both map to"):
        quiet_load(tmp_path)


def test_model_owns_its_weights(ref, saved):
    """Rewriting the checkpoint (same size) or the caller's arrays later must not change the model."""
    model, _ = quiet_load(saved)
    before = np.asarray(lm.hidden_states(model, IDS, MASK))
    tensors = state_dict_numpy(ref)
    del tensors["lm_head.weight"]
    write_safetensors(saved / "model.safetensors", {k: np.zeros_like(v) for k, v in tensors.items()})
    np.testing.assert_array_equal(np.asarray(lm.hidden_states(model, IDS, MASK)), before)

    def aligned(v):  # JAX on CPU wraps 64-byte aligned numpy buffers without copying
        buf = np.empty(v.nbytes + 64, np.uint8)
        start = -buf.ctypes.data % 64
        out = buf[start : start + v.nbytes].view(v.dtype).reshape(v.shape)
        out[...] = v
        return out

    tensors = {k: aligned(v) for k, v in tensors.items()}
    built = lm.build_model(ref.config.to_dict(), tensors)
    before = np.asarray(lm.hidden_states(built, IDS, MASK))
    for array in tensors.values():
        array[...] = 0
    np.testing.assert_array_equal(np.asarray(lm.hidden_states(built, IDS, MASK)), before)
