"""LoRA (finetune.add_lora): starts at the base model, trains only adapters, resumes, exports merged.

References and tolerances:
- zero-initialised B: the adapted model's logits equal the base model's bit for bit;
- one adapted projection equals the direct computation ``x W + b + (alpha / r) drop(x) A B`` in float64
  numpy (1e-5, float32 rounding);
- export: the adapted model (unmerged forward ``x W + s (x A) B`` in JAX) against transformers' PyTorch model
  reading the merged export ``W + s A B`` (1e-4: the lm tests' float32 cross-framework tolerance) and
  jaxalign.lm.load reading it (1e-5: merged vs unmerged rounding);
- training: base weights bitwise unchanged, adapters changed, optimizer state adapter-sized only; a run
  interrupted after a checkpoint and resumed equals an uninterrupted run bit for bit (dropout on, so its
  masks must be a function of the step); adapters checkpointed on another base model are refused.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("optax")
pytest.importorskip("orbax.checkpoint")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from _tiny_lm import saved_tiny, toy_choices  # noqa: E402

from jaxalign import finetune, lm  # noqa: E402
from jaxalign.finetune._checkpoint import Checkpoints  # noqa: E402
from jaxalign.finetune._lora import LoRALinear, fold_dropout_keys, projections  # noqa: E402

IDS = np.random.default_rng(3).integers(0, 320, (2, 9))
_logits = nnx.jit(lambda m, x: m(x).logits)


def _load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.load(folder)


def _randomise_adapters(model, seed=1, scale=0.2):
    """Adapters as after training (B no longer zero)."""
    state = nnx.state(model, nnx.LoRAParam)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: x + scale * jax.random.normal(next(keys), x.shape, x.dtype), state))


def _flat(model, kind=nnx.Param):
    return {path: np.array(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model, kind))}


@pytest.mark.parametrize("kind, tied", [("gpt2", True), ("llama", True), ("gpt_neox", False)])
def test_lora_starts_at_the_base_model_and_exports_merged(tmp_path, kind, tied):
    model, tok = _load(saved_tiny(kind, tied=tied)[0])
    base = np.asarray(_logits(model, jnp.asarray(IDS)))
    finetune.add_lora(model, rank=4, alpha=8.0, targets=["attention", "mlp"])
    arch = __import__(f"jaxalign.lm.{kind}", fromlist=["PROJECTIONS"])
    adapted_paths = finetune._lora.lora_settings(model)["projections"]
    assert sorted(adapted_paths) == sorted(p for g in arch.PROJECTIONS.values() for p in g)
    assert np.array_equal(np.asarray(_logits(model, jnp.asarray(IDS))), base)  # B = 0: exactly the base model

    _randomise_adapters(model)
    adapted = np.asarray(_logits(model, jnp.asarray(IDS)))
    assert np.abs(adapted - base).max() > 0.1

    out = finetune.save_pretrained(model, tok, tmp_path / "export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        np.testing.assert_allclose(hf(torch.tensor(IDS)).logits.numpy(), adapted, atol=1e-4, rtol=1e-4)
    reloaded, _ = _load(out)
    assert not finetune.has_lora(reloaded)
    np.testing.assert_allclose(np.asarray(_logits(reloaded, jnp.asarray(IDS))), adapted, atol=1e-5, rtol=1e-5)
    plain = finetune.merge_lora(model)
    assert not finetune.has_lora(plain) and finetune.has_lora(model)  # merge_lora leaves the model as it was
    np.testing.assert_allclose(np.asarray(_logits(plain, jnp.asarray(IDS))), adapted, atol=1e-5, rtol=1e-5)


def test_an_adapted_projection_is_the_direct_computation_with_dropout_in_training_only():
    linear = nnx.Linear(6, 5, rngs=nnx.Rngs(0))
    w, b = np.asarray(linear.kernel[...], np.float64), np.asarray(linear.bias[...], np.float64)
    mod = LoRALinear(linear, rank=2, alpha=3.0, dropout=0.5, rng=np.random.default_rng(4))
    mod.lora_b.set_value(jax.random.normal(jax.random.key(5), (2, 5)))
    a, bb = np.asarray(mod.lora_a[...], np.float64), np.asarray(mod.lora_b[...], np.float64)
    assert np.abs(a).max() <= 1 / np.sqrt(6)  # PEFT's kaiming_uniform(a=sqrt(5)) bound
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    want = x @ w + b + 1.5 * (x @ a) @ bb
    np.testing.assert_allclose(np.asarray(mod(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)  # deterministic
    mod.deterministic = False
    salt = jax.lax.bitcast_convert_type(jnp.sum(jnp.asarray(x)), jnp.uint32)  # the input's sum is folded in too
    key = jax.random.fold_in(jax.random.wrap_key_data(mod.dropout_key[...]), salt)
    keep = np.asarray(jax.random.bernoulli(key, 0.5, x.shape))
    assert 0 < keep.sum() < keep.size
    dropped = x @ w + b + 1.5 * ((x * keep / 0.5) @ a) @ bb
    np.testing.assert_allclose(np.asarray(mod(jnp.asarray(x))), dropped, rtol=1e-5, atol=1e-5)
    # a step's salt gives another mask
    mod.dropout_key.set_value(fold_dropout_keys(mod.dropout_key[...], 1))
    assert not np.allclose(np.asarray(mod(jnp.asarray(x))), dropped)


N_TRAIN, N_EVAL = 8, 4
SETTINGS = dict(lr=1e-2, epochs=1, batch_size=2, patience=0, seed=3)  # 4 steps


def _lora_fit(folder, out, **kw):
    model, tok = _load(folder)
    finetune.add_lora(model, rank=2, alpha=4.0, targets=["c_attn", "mlp"], dropout=0.1, seed=5)
    return finetune.fit(model, tok, toy_choices(N_TRAIN, 0), toy_choices(N_EVAL, 1),
                        settings=finetune.TrainConfig(**SETTINGS), out=out, checkpoint_every=2, progress=False,
                        **kw)


class _Stop(Exception):
    pass


def test_lora_trains_only_the_adapters_and_resumes_exactly(tmp_path):
    folder = saved_tiny("gpt2")[0]
    base_model, _ = _load(folder)
    base = _flat(base_model)
    ref = _lora_fit(folder, tmp_path / "ref")
    model = ref.model
    adapters = _flat(model, nnx.LoRAParam)
    assert len(adapters) == 2 * 3  # c_attn, mlp.c_fc, mlp.c_proj: A and B each
    after = {p: v for p, v in _flat(model).items() if p[-1] not in ("lora_a", "lora_b")}
    assert after.keys() == base.keys() and all(np.array_equal(after[p], base[p]) for p in base)  # bitwise
    assert all(np.abs(v).max() > 0 for p, v in adapters.items() if p[-1] == "lora_b")  # B left zero: trained
    assert ref.history[-1]["loss"] < ref.history[0]["loss"]

    # the checkpoint holds the adapters and an optimizer state of adapter-sized leaves only
    import orbax.checkpoint as ocp

    saved = Checkpoints(tmp_path / "ref").latest.restore(4, args=ocp.args.Composite(
        state=ocp.args.StandardRestore())).state
    shapes = {p: v.shape for p, v in adapters.items()}
    flat_saved = jax.tree_util.tree_flatten_with_path(saved["params"])[0]
    assert sorted(tuple(k.key for k in path) for path, _ in flat_saved) == sorted(shapes)
    opt_shapes = [np.shape(x) for x in saved["opt_state"]]
    assert sorted(s for s in opt_shapes if s) == sorted(list(shapes.values()) * 2)  # Adam's two moments
    assert all(np.size(x) == 1 for x in saved["opt_state"] if not np.shape(x))  # step counts

    # interrupted after step 3 (a checkpoint at 2), then resumed: the uninterrupted run, bit for bit
    def stop(record):
        if record["event"] == "step" and record["step"] == 3:
            raise _Stop

    with pytest.raises(_Stop):
        _lora_fit(folder, tmp_path / "run", callback=stop)
    resumed = _lora_fit(folder, tmp_path / "run")
    assert resumed.resumed_from == 2 and resumed.history == ref.history
    got = _flat(resumed.model, nnx.LoRAParam)
    assert all(np.array_equal(got[p], adapters[p]) for p in adapters)

    # adapters trained on another base model are refused, naming why
    base_model, tok = _load(folder)
    base_model.h.attn.c_attn.bias.set_value(base_model.h.attn.c_attn.bias[...] + 1e-3)
    finetune.add_lora(base_model, rank=2, alpha=4.0, targets=["c_attn", "mlp"], dropout=0.1, seed=5)
    with pytest.raises(ValueError, match=r"another run .*base_weights \(its LoRA adapters were trained on another "
                                         r"base model: weights sha256 \w+ there, \w+ here"):
        finetune.fit(base_model, tok, toy_choices(N_TRAIN, 0), toy_choices(N_EVAL, 1),
                     settings=finetune.TrainConfig(**SETTINGS), out=tmp_path / "run", progress=False)


def test_bad_lora_targets_and_settings_are_named(tmp_path):
    from jaxalign.finetune import FinetuneConfig, FinetuneConfigError
    from jaxalign.lm import bert, gpt2, llama

    tiny = nnx.eval_shape(lambda: gpt2.Model(gpt2.Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1,
                                                         n_head=2)))
    assert projections(tiny, "c_proj") == ["h.attn.c_proj", "h.mlp.c_proj"]
    assert projections(tiny, ["attention", "c_attn"]) == ["h.attn.c_attn", "h.attn.c_proj"]
    with pytest.raises(ValueError, match=r"targets: unknown LoRA target 'q_proj' for gpt2; groups: attention, mlp; "
                                         r"projections: h.attn.c_attn, h.attn.c_proj, h.mlp.c_fc, h.mlp.c_proj"):
        finetune.add_lora(tiny, targets=["attention", "q_proj"])
    assert not finetune.has_lora(tiny)
    small = nnx.eval_shape(lambda: llama.Model(llama.Config(vocab_size=10, hidden_size=8, intermediate_size=8,
                                                            num_hidden_layers=1, num_attention_heads=2,
                                                            num_key_value_heads=1, head_dim=4)))
    assert projections(small, "mlp") == ["layers.mlp.gate_proj", "layers.mlp.up_proj", "layers.mlp.down_proj"]
    with pytest.raises(ValueError, match=r"rank: 5 exceeds layers.self_attn.k_proj's smaller dimension \(4\)"):
        finetune.add_lora(small, rank=5, targets="k_proj")
    encoder = nnx.eval_shape(lambda: bert.Model(bert.Config(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                            num_attention_heads=2, intermediate_size=8)))
    with pytest.raises(ValueError, match="targets: bert models have no LoRA projections"):
        finetune.add_lora(encoder)
    for bad, message in [(dict(rank=0), "rank: must be an integer >= 1"), (dict(alpha=0), "alpha: must be"),
                         (dict(dropout=1.0), r"dropout: must be in \[0, 1\)"), (dict(targets=[]), "targets: give")]:
        with pytest.raises(ValueError, match=message):
            finetune.add_lora(tiny, **bad)
    finetune.add_lora(tiny, rank=2)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        finetune.add_lora(tiny)

    # the TOML section, validated with the other keys
    path = tmp_path / "run.toml"
    path.write_text('[data]\nkind = "piqa"\npath = "x"\n[train]\ncompute_dtype = "float16"\n'
                    '[lora]\nrank = 0\ntargets = []\nrnak = 4\n')
    with pytest.raises(FinetuneConfigError) as info:
        FinetuneConfig.from_toml(path)
    for key in ("train.compute_dtype", "lora.rank", "lora.targets", "lora.rnak"):
        assert key in str(info.value), (key, str(info.value))
    path.write_text('[data]\nkind = "piqa"\npath = "x"\n[train]\ncompute_dtype = "bfloat16"\nremat = true\n'
                    '[lora]\nrank = 4\nalpha = 8\ntargets = ["q_proj", "v_proj"]\n')
    cfg = FinetuneConfig.from_toml(path)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout) == (4, 8.0, ["q_proj", "v_proj"], 0.0)
    assert (cfg.train.compute_dtype, cfg.train.remat) == ("bfloat16", True)
    assert FinetuneConfig.model_validate({"data": {"kind": "piqa", "path": "x"}}).lora is None


def test_a_lora_section_runs_through_run_config_and_exports_a_plain_model(tmp_path):
    """``[lora]`` in the TOML: adapters on the named projections, trained, the export merged (a plain model
    that scores like the kept adapted one); an unknown target is a config error naming ``lora.targets``.
    (The data and settings of the test above: a session compiles the step once.)"""
    from jaxalign.finetune import FinetuneConfig, FinetuneConfigError, run_config

    for name, mc in (("train", toy_choices(N_TRAIN, 0)), ("eval", toy_choices(N_EVAL, 1))):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "dev.jsonl", "w") as f:
            for p, (a, b) in zip(mc.prompts, mc.choices):
                f.write(json.dumps({"q": p, "a": a, "b": b}) + "\n")
        (tmp_path / name / "dev-labels.lst").write_text("\n".join(str(x) for x in mc.labels) + "\n")
    (tmp_path / "tiny").symlink_to(saved_tiny("gpt2")[0], target_is_directory=True)
    toml = """
[model]
path = "tiny"
[data]
kind = "jsonl"
path = "train"
eval_path = "eval"
prompt_keys = ["q"]
choice_keys = ["a", "b"]
[train]
lr = 1e-2
epochs = 1
batch_size = 2
patience = 0
seed = 3
[lora]
rank = 2
alpha = 4.0
dropout = 0.1
seed = 5
targets = %s
[output]
dir = "run"
"""
    (tmp_path / "bad.toml").write_text(toml % '["c_attn", "mlp", "lm_head"]')
    with pytest.raises(FinetuneConfigError, match=r"lora.targets: unknown LoRA target 'lm_head' for gpt2"):
        run_config(FinetuneConfig.from_toml(tmp_path / "bad.toml"), progress=False)
    (tmp_path / "run.toml").write_text(toml % '["c_attn", "mlp"]')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_config(FinetuneConfig.from_toml(tmp_path / "run.toml"), progress=False)
    assert finetune.has_lora(summary.result.model) and summary.result.steps == 4
    exported, tok = _load(summary.exported)
    assert not finetune.has_lora(exported)
    held = toy_choices(N_EVAL, 1)
    scores = finetune.score_choices(exported, tok, held)
    loss = float(finetune.multiple_choice_loss(jnp.asarray(scores), jnp.asarray(held.labels)))
    assert loss == pytest.approx(summary.result.best["loss"], abs=1e-4)  # the kept adapted model's; merged: rounding
