"""The memory options of finetune.fit: bfloat16 compute on float32 master weights, rematerialised blocks.

References and tolerances:
- remat: the step's loss sums and every gradient with ``remat=True`` equal those without, to float32
  rounding (rtol 1e-5, atol 1e-5 x the gradient's largest entry: the same arithmetic, summed in
  another order where XLA fuses the recomputation differently), and the traced step
  really holds jax.checkpoint's (remat) primitive;
- bfloat16: the step's multiple-choice loss within 2% of the float32 loss (bfloat16 keeps 8 significant bits,
  ~0.4% per rounding; measured ~0.3% here) and gradients pointing the same way (cosine > 0.99); the
  gradients (so the optimizer state) and the trained parameters stay float32, and training lowers the loss.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("optax")
pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from _tiny_lm import saved_tiny, toy_choices  # noqa: E402

from jaxalign import finetune, lm  # noqa: E402
from jaxalign.finetune import _lora  # noqa: E402
from jaxalign.finetune._train import _gradients, _Plan, _training_graphdef  # noqa: E402


REMAT = re.compile(r"= (remat\w*|checkpoint)\[")  # jax.checkpoint's primitive (remat2 in jax 0.10)


def _load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.load(folder)


# test_finetune_train's data, shapes and optimizer: a pytest session compiles the float32 step, the evaluation
# and the optimizer update once
N_TRAIN, N_EVAL = 24, 8
SETTINGS = dict(lr=3e-3, epochs=3, batch_size=2, accumulation=2, schedule="cosine", warmup_steps=2,
                patience=0, weight_decay=0.01, seed=7)


def _step_inputs(kind, tied):
    """(model, tokenizer, split states, a step's batch and normalisers) for the toy task on a tiny model."""
    model, tok = _load(saved_tiny(kind, tied=tied)[0])
    cfg = finetune.TrainConfig(**SETTINGS)
    plan = _Plan(finetune.encode_choices(tok, toy_choices(N_TRAIN, 0)), None, None, None, 0.0, cfg, 64)
    arrays, norms, _ = plan.batch(0)
    graphdef, params, keys, base = nnx.split(model, nnx.Param, _lora.LoRAKey, ...)
    states = (nnx.to_pure_dict(params), nnx.to_pure_dict(keys), nnx.to_pure_dict(base))
    batch = {k: jnp.asarray(v) for k, v in arrays.items()}
    return model, tok, graphdef, states, batch, jnp.asarray(norms)


def _grads(graphdef, states, batch, norms, trace=True, **settings):
    train = _training_graphdef(graphdef, states, finetune.TrainConfig(**settings), nnx.Param)
    step = jnp.asarray(0, jnp.int32)  # as fit passes it (so fit reuses the compiled step)
    grads, stats = _gradients(train, states[0], batch, norms, states[1:], step)
    if not trace:
        return grads, stats, None
    text = str(jax.make_jaxpr(lambda p: _gradients.__wrapped__(train, p, batch, norms, states[1:], step))(states[0]))
    return grads, stats, text


def test_remat_gives_the_same_loss_and_gradients():
    _, _, graphdef, states, batch, norms = _step_inputs("gpt2", True)
    g0, s0, plain = _grads(graphdef, states, batch, norms)
    g1, s1, remat = _grads(graphdef, states, batch, norms, remat=True)
    assert REMAT.search(remat) and not REMAT.search(plain)
    assert float(s0["mc_sum"]) > 0
    for k in s0:
        np.testing.assert_allclose(float(s1[k]), float(s0[k]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0), strict=True):
        scale = np.abs(np.asarray(b)).max()
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
def test_remat_wraps_the_blocks_of_every_causal_architecture(kind):
    """The other architectures run their blocks through the same ``run_block``: traced (not compiled), their
    gradient holds one remat primitive, inside the scan over the blocks, and none without remat."""
    from jaxalign.lm import gpt_neox, llama

    model = nnx.eval_shape(lambda: {"llama": lambda: llama.Model(llama.Config(
        vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=4)), "gpt_neox": lambda: gpt_neox.Model(gpt_neox.Config(
            vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=8))}[kind]())
    graphdef, state = nnx.split(model)
    ids = jnp.zeros((1, 4), jnp.int32)
    texts = []
    for remat in (False, True):
        model.remat = remat
        graphdef, _ = nnx.split(model)
        loss = lambda s, g=graphdef: nnx.merge(g, s)(ids).logits.sum()
        texts.append(str(jax.make_jaxpr(jax.grad(loss))(state)))
    assert not REMAT.search(texts[0]) and len(REMAT.findall(texts[1])) == 1


def test_bfloat16_compute_is_close_to_float32_and_keeps_float32_master_weights():
    model, tok, graphdef, states, batch, norms = _step_inputs("gpt2", True)
    g32, s32, _ = _grads(graphdef, states, batch, norms, trace=False)
    g16, s16, text = _grads(graphdef, states, batch, norms, compute_dtype="bfloat16")
    assert "bf16[" in text  # the step really computes in bfloat16
    assert float(s16["mc_sum"]) == pytest.approx(float(s32["mc_sum"]), rel=2e-2)
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g16, g32))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g16))
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99

    settings = finetune.TrainConfig(**SETTINGS, compute_dtype="bfloat16")  # 18 steps
    result = finetune.fit(model, tok, toy_choices(N_TRAIN, 0), toy_choices(N_EVAL, 1), settings=settings,
                          progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert {str(x.dtype) for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {"float32"}
