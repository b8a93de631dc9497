"""Data-parallel feature extraction (``devices=``): batches sharded over 8 (virtual CPU) devices.

The checkpoints (a tiny random GPT-2, causal, and a tiny random BERT,
bidirectional, both with the tiny byte-level BPE of ``_tiny_lm``) are written
here; the 8-device checks run in a subprocess whose ``XLA_FLAGS`` ask for 8
host devices before jax starts (as ``test_lm_sharding``). Reference: the same
function on one device (``devices=None``), itself tested against hand-written
passes in ``test_features``; every word, every layer, float32, within
``atol = rtol = 1e-5`` (measured: ~1e-6, XLA blocks a 2-row GEMM differently
from a 16-row one). Batch sizes are not multiples of the device count and the
window counts not multiples of the batch size, so padded rows and slots are
exercised and must be dropped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxalign.lm as lm  # noqa: E402
from jaxalign.features import word_features  # noqa: E402
from jaxalign.features._batching import _round_rows, make_batches  # noqa: E402

from _tiny_lm import CORPUS, VOCAB, tiny_tokenizer  # noqa: E402

WORDS = " ".join(CORPUS[:4]).split()  # 53 words, ~70 tokens: beyond GPT-2's 48 positions here
TOL = 1e-5


from test_lm_sharding import _randomise  # noqa: E402  (one random-weights rule for the sharding tests)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    tok = tiny_tokenizer()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0))
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=48))
    for name, model, seed in (("gpt2", gpt2, 0), ("bert", bert, 1)):
        _randomise(model, seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


SCRIPT = textwrap.dedent(
    """
    import re, sys, time, warnings
    from pathlib import Path
    import numpy as np, jax, pytest
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    import jaxalign.lm as lm
    from jaxalign.lm import _common
    from jaxalign.features import word_features, word_surprisal, _extract, _parallel
    from flax import nnx
    assert jax.device_count() == 8, jax.devices()
    root, words = Path(sys.argv[1]), sys.argv[2].split()
    TOL = 1e-5
    seen = []  # (rows, slots, shards, sharding) of every forward batch
    forward = _extract._forward

    def spy(graphdef, state, ids, mask, row, idx, sel, layers, shards=1):
        seen.append((ids.shape[0], row.shape[0], shards, getattr(ids, "sharding", None)))
        return forward(graphdef, state, ids, mask, row, idx, sel, layers, shards)

    _extract._forward = spy

    def same(devices, model, tok, one=None, **kw):
        # the batches run with ``devices``; the features must equal ``one`` (default: the model on one device)
        if one is None:
            one = word_features(model, tok, words, progress=False, **kw)
        seen.clear()
        many, info = word_features(model, tok, words, progress=False, return_info=True, devices=devices, **kw)
        assert many.shape == one.shape and np.isfinite(many).all(), (many.shape, one.shape)
        np.testing.assert_allclose(many, one, atol=TOL, rtol=TOL, err_msg=f"{devices} {kw}")
        assert info.n_forward == len(seen)
        return list(seen)

    gpt2, tok = lm.load(root / "gpt2")
    bert, _ = lm.load(root / "bert")
    assert lm.is_causal(gpt2) and not lm.is_causal(bert)

    # causal: token windows (53 windows, batches of 5 -> 8 rows: 1 per device), mean pooling
    kw = dict(context="tokens", context_size=6, pooling="mean", batch_size=5)
    ref = word_features(gpt2, tok, words, **kw)  # GPT-2 on one device, the reference of the GPT-2 runs below
    batches = same("auto", gpt2, tok, ref, **kw)
    assert len(batches) > 2
    for rows, slots, shards, sharding in batches:
        assert shards == 8 and rows % 8 == 0 and slots % 8 == 0, (rows, slots, shards)
        assert isinstance(sharding, NamedSharding) and sharding.spec == PartitionSpec("batch")
        assert len(sharding.device_set) == 8
    # causal: the passage beyond the max length (one window per word past 48 tokens), a Mesh, some layers
    same(Mesh(np.array(jax.devices()), ("batch",)), gpt2, tok, pooling="last", layers=[2, 0])
    # bidirectional: one window per word (its previous 8 tokens), batches of 3 on 6 devices (a list)
    batches = same(jax.devices()[2:], bert, tok, context="tokens", context_size=8, pooling="last", batch_size=3)
    assert {s for _, _, s, _ in batches} == {6} and all(r % 6 == 0 for r, _, _, _ in batches)
    print("data parallel OK", f"({time.process_time():.0f} s cpu)")

    # surprisal: sliding windows of 16 tokens, 6 devices
    skw = dict(max_length=16, stride=5, batch_size=3)
    np.testing.assert_allclose(word_surprisal(gpt2, tok, words, devices=6, **skw),
                               word_surprisal(gpt2, tok, words, **skw), atol=TOL, rtol=TOL)
    print("surprisal OK", f"({time.process_time():.0f} s cpu)")

    # tensor-parallel weights on a 2-D ("batch", "model") mesh: 2 x 4
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("batch", "model"))
    tp, _ = lm.load(root / "gpt2", devices=mesh)
    batches = same("auto", tp, tok, ref, **kw)
    assert all(s == 2 and sh.mesh.shape == {"batch": 2, "model": 4} for _, _, s, sh in batches)
    same(mesh, tp, tok, ref, **kw)
    # tensor-parallel over a 1-D ("model",) mesh: "auto" runs it as it is; anything else is refused
    tp1, _ = lm.load(root / "gpt2", devices=4)
    same("auto", tp1, tok, ref, **kw)
    for devices in (8, jax.devices()[4:]):
        with pytest.raises(ValueError, match="no 'batch' axis.*2-D mesh.*'batch', 'model'"):
            word_features(tp1, tok, words, devices=devices)
    with pytest.raises(ValueError, match="pass devices='auto'"):
        word_features(tp, tok, words, devices=8)
    with pytest.raises(ValueError, match="load the model on that mesh"):
        word_features(gpt2, tok, words, devices=mesh)
    # weights loaded once onto every device (features.batch_mesh): "auto" uses them as they are, no copy
    from jaxalign import features
    rep, _ = lm.load(root / "gpt2", devices=features.batch_mesh())
    graphdef, state = nnx.split(rep)
    placed = _parallel.batch_placement(rep, "auto")
    assert placed.shards == 8 and jax.tree.leaves(placed.put_state(state))[0] is jax.tree.leaves(state)[0]
    same("auto", rep, tok, ref, **kw)
    with pytest.raises(ValueError, match="model=3 does not divide the 8 devices"):
        features.batch_mesh(model=3)
    # the study runner: [features] devices = 4 loads on a (4, 1) mesh and shards every batch over it
    from jaxalign import io
    from jaxalign.studies import StudyConfig, runner
    from jaxalign.studies.datasets import LoadedDataset
    out = Path(sys.argv[3])
    (out / "cache" / "features").mkdir(parents=True)
    cfg = StudyConfig.model_validate({"dataset": {"kind": "alice"}, "models": [{"path": str(root / "gpt2")}],
                                      "layers": [1, 2], "features": {"devices": 4, "context": "tokens",
                                                                     "context_size": 6, "pooling": "mean"}})
    runs = runner._resolve_models(cfg, out, "words")
    stimulus = io.Stimulus(words=np.asarray(words), onsets=np.arange(len(words), dtype=float))
    placeholder = {"s": io.Recording(np.zeros((2, 1)), "fmri", times=np.array([0.0, 2.0]))}
    plan = runner._Plan(cfg, out, LoadedDataset("fmri", stimulus, placeholder), runs, [], [])
    seen.clear()
    got = runner._Features(plan, False).get(runs[0])
    assert {s for _, _, s, _ in seen} == {4}, seen
    np.testing.assert_allclose(got, ref[1:], atol=TOL, rtol=TOL)  # (its batch size: auto)
    print("tensor parallel OK", f"({time.process_time():.0f} s cpu)")

    # The program a GPU or TPU runs (no CPU row blocks): each device pools its own rows, no collective at all
    _common.ROW_CHUNK = 0
    _common.ATTENTION_BLOCK = 0
    place = _parallel.batch_placement(bert, "auto")
    graphdef, state = nnx.split(bert)
    state = place.put_state(state)
    rows, slots = 16, 24
    row = (np.arange(slots) % 2 + np.repeat(np.arange(8), 3) * 2).astype(np.int32)  # shard d: rows 2d, 2d + 1
    args = place.put_batch(np.ones((rows, 32), np.int32), np.ones((rows, 32), np.int32), row,
                           np.zeros((slots, 2), np.int32), np.ones((slots, 2), bool))
    layers = place.put_replicated(np.arange(3, dtype=np.int32))
    collective = re.compile(r"(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)[-\\w]*\\(")
    with jax.default_matmul_precision("highest"):
        hlo = _extract._pooled.jitted.lower(graphdef, state, *args, layers, 8).compile().as_text()
        assert not collective.findall(hlo), collective.findall(hlo)
    # (and the pattern does see one where a program needs it: a sum over the sharded rows)
    assert collective.findall(jax.jit(lambda x: x.sum()).lower(args[0]).compile().as_text())
    print("NO-COLLECTIVES-OK", f"({time.process_time():.0f} s cpu)")
    """
)


def test_data_parallel_over_8_cpu_devices_equals_one_device(checkpoints, tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(checkpoints), " ".join(WORDS), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    for stage in ("data parallel OK", "surprisal OK", "tensor parallel OK", "NO-COLLECTIVES-OK"):
        assert stage in out.stdout, out.stdout


# ---------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def gpt2(checkpoints):
    return lm.load(checkpoints / "gpt2")


def test_one_device_mesh_equals_the_default(gpt2):
    model, tok = gpt2
    kw = dict(context="tokens", context_size=6, batch_size=3, pooling="mean")
    plain = word_features(model, tok, WORDS, **kw)
    for devices in (1, "auto", [jax.devices()[0]]):
        np.testing.assert_allclose(word_features(model, tok, WORDS, devices=devices, **kw), plain,
                                   atol=1e-6, rtol=1e-6, err_msg=str(devices))


def test_devices_argument_errors(gpt2):
    model, tok = gpt2
    n = len(jax.local_devices())
    d = jax.devices()[0]
    for devices, error, match in [
        ("all", ValueError, "'auto'"),
        (0, ValueError, f"devices=0, but {n} devices"),
        (n + 1, ValueError, f"{n} devices are available"),
        ([], ValueError, "empty"),
        (["cpu:0"], TypeError, "jax devices"),
        ([d, d], ValueError, "twice"),
        (2.5, TypeError, "float"),
        (jax.sharding.Mesh(np.array(jax.devices()), ("data",)), ValueError, "named 'batch'"),
    ]:
        with pytest.raises(error, match=match):
            word_features(model, tok, WORDS[:3], devices=devices)
    from jaxalign.features import batch_mesh, word_surprisal
    with pytest.raises(ValueError, match="'auto'"):
        word_surprisal(model, tok, WORDS[:3], devices="every")
    with pytest.raises(ValueError, match="model must be a positive integer"):
        batch_mesh(model=0)
    with pytest.raises(ValueError, match="'auto'"):
        batch_mesh("all")


def test_batches_split_evenly_over_shards():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 700, size=203)
    for shards in (1, 3, 8):
        for batch_size in (None, 1, 5, 16):
            batches = make_batches(lengths, 640, batch_size, shards=shards)
            members = np.concatenate([m for _, _, m in batches])
            np.testing.assert_array_equal(np.sort(members), np.arange(len(lengths)))  # each window once
            size = None if batch_size is None else -(-batch_size // shards) * shards
            for length, rows, chunk in batches:
                assert rows % shards == 0 and len(chunk) <= rows and lengths[chunk].max() <= length
                # each shard's share of the windows, padded to few row counts (_round_rows), within the batch size
                padded = shards * _round_rows(-(-len(chunk) // shards))
                assert rows == (padded if size is None else min(size, padded)), (rows, len(chunk), size)
                if size is not None:
                    assert len(chunk) <= size
    one = make_batches(lengths, 640, 5)
    assert [(a, b) for a, b, _ in one] == [(a, min(5, _round_rows(len(c)))) for a, _, c in one]
    with pytest.raises(ValueError, match="shards"):
        make_batches(lengths, 640, 5, shards=0)


def test_study_config_devices_reaches_the_extraction_and_not_the_key(gpt2, checkpoints, tmp_path, monkeypatch):
    from jaxalign import features, io
    from jaxalign.studies import ConfigError, StudyConfig, runner
    from jaxalign.studies.datasets import LoadedDataset

    def config(**feat):
        layers = {} if feat.get("kind") == "surprisal" else {"layers": [0, 2]}
        model = {"path": str(checkpoints / "gpt2")}
        return StudyConfig.model_validate({"dataset": {"kind": "alice"}, "models": [model], "features": feat,
                                           **layers})

    for bad in ("all", 0, True, 1.5):
        with pytest.raises(ConfigError, match=r"features.devices: must be 'auto' or a number of devices >= 1"):
            config(devices=bad)
    n = len(jax.local_devices())
    with pytest.raises(ConfigError, match=rf"features.devices: {n + 1} devices asked for, this host has {n} \("):
        runner.plan_study(config(devices=n + 1), out=tmp_path / "never")
    assert not (tmp_path / "never").exists()  # refused before any work
    cfg, plain = config(devices=1), config()
    assert StudyConfig.from_toml(cfg.to_toml(tmp_path / "s.toml")).features.devices == 1
    assert config(kind="surprisal", devices="auto").features.devices == "auto"
    runs = runner._resolve_models(cfg, tmp_path, "words")
    assert runs[0].features_key == runner._resolve_models(plain, tmp_path, "words")[0].features_key

    calls, loads = [], []
    real, load = features.word_features, lm.load
    monkeypatch.setattr(features, "word_features", lambda *a, **k: calls.append(k["devices"]) or real(*a, **k))
    monkeypatch.setattr(lm, "load", lambda *a, **k: loads.append(k["devices"]) or load(*a, **k))
    stimulus = io.Stimulus(words=np.asarray(WORDS), onsets=np.arange(len(WORDS), dtype=float))
    (tmp_path / "cache" / "features").mkdir(parents=True)
    placeholder = {"s": io.Recording(np.zeros((2, 1)), "fmri", times=np.array([0.0, 2.0]))}  # not read
    plan = runner._Plan(cfg, tmp_path, LoadedDataset("fmri", stimulus, placeholder), runs, [], [])
    got = runner._Features(plan, False).get(runs[0])
    assert calls == ["auto"] and loads[0].shape == {"batch": 1, "model": 1}  # weights placed once, at load
    model, tok = gpt2
    np.testing.assert_allclose(got, word_features(model, tok, WORDS, layers=[0, 2]), atol=1e-6, rtol=1e-6)
