"""Packed multiple choice (finetune.pack_choices, TrainConfig.pack) against one text per option.

A packed row holds an item's shared token prefix once, then each option's
other tokens at their own positions, each option attending to the prefix and
to itself (``_encode`` module docstring). The reference is the model run on
each option's text alone: every hidden state of the packed row must equal the
one of the same token in its own text (float32, 2e-5 absolute on O(1)
hidden states; measured ~1e-6), for the three causal architectures; and the
training step's loss and gradients must equal the unpacked step's (whose
gradients tests/test_finetune_score.py checks against PyTorch).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("optax")

from _tiny_lm import saved_tiny, toy_choices  # noqa: E402

from jaxalign import finetune, io, lm  # noqa: E402
from jaxalign.finetune._encode import EncodedChoices, packed_mask  # noqa: E402

# options sharing their first words (the shared prefix runs past the prompt), an option equal to another,
# a joining space that is a token of its own ('I'), three options of different lengths
MC = io.MultipleChoice(
    prompts=["the cat sat on", "How do I open a jar?", "Alex gave Jordan a gift. How would Jordan feel?"],
    choices=[("the mat", "the hat and the dog", "I went to the store"),
             ("Twist the lid.", "Twist the lid.", "Hit it with a hammer, then twist the lid."),
             ("grateful", "angry and sad", "grateful and happy")],
    labels=np.array([0, 2, 1]), name="pack")


def _load(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.load(saved_tiny(kind)[0])


def test_layout_by_hand():
    """pack_choices on hand-written token ids: prefix once, suffixes, positions, sources, padding."""
    ids = (np.array([5, 6, 7, 8]), np.array([5, 6, 9]),  # item 0: shared prefix [5, 6]
           np.array([1, 2]), np.array([1, 2]))  # item 1: two equal texts, the prefix is all of them
    target = (np.array([0, 0, 1, 1], bool), np.array([0, 0, 1], bool),
              np.array([0, 1], bool), np.array([0, 1], bool))
    enc = EncodedChoices(ids, target, 2, 2, np.array([1, 0]))
    p = finetune.pack_choices(enc, np.array([0, -1, 1]), length=8, scored=4)
    np.testing.assert_array_equal(p["ids"][0], [5, 6, 7, 8, 9, 0, 0, 0])
    np.testing.assert_array_equal(p["segment"][0], [0, 0, 1, 1, 2, -1, -1, -1])
    np.testing.assert_array_equal(p["positions"][0], [0, 1, 2, 3, 2, 0, 0, 0])
    # option 0 scores tokens 2, 3 (predicted at rows 1 and 2), option 1 its token 2 (predicted at row 1)
    np.testing.assert_array_equal(p["source"][0], [1, 2, 1, 0])
    np.testing.assert_array_equal(p["token"][0], [7, 8, 9, 0])
    np.testing.assert_array_equal(p["option"][0], [[1, 0], [1, 0], [0, 1], [0, 0]])
    assert (p["segment"][1] == -1).all() and not p["option"][1].any()  # the padding item
    np.testing.assert_array_equal(p["ids"][2][:2], [1, 2])
    np.testing.assert_array_equal(p["segment"][2][:3], [0, 0, -1])
    np.testing.assert_array_equal(p["source"][2][:2], [0, 0])  # both options' token 1, from row 0
    np.testing.assert_array_equal(p["option"][2][:3], [[1, 0], [0, 1], [0, 0]])
    mask = np.asarray(packed_mask(jnp.asarray(p["segment"][0])))
    assert mask[4].tolist() == [True, True, False, False, True, False, False, False]  # option 1 skips option 0
    assert mask[3].tolist() == [True, True, True, True, False, False, False, False]
    rounded = finetune.pack_choices(enc, np.array([0, 1]), bucket=lambda n: 2 * n)  # needs L = 5, S = 3
    assert rounded["ids"].shape == (2, 10) and rounded["source"].shape == (2, 6)
    with pytest.raises(ValueError, match="length >= 5"):
        finetune.pack_choices(enc, np.array([0]), length=4)


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_packed_hidden_states_equal_each_text_alone(kind):
    model, tok = _load(kind)
    enc = finetune.encode_choices(tok, MC)
    packed = finetune.pack_choices(enc, np.arange(len(MC)))
    out = model(jnp.asarray(packed["ids"]), packed_mask(jnp.asarray(packed["segment"])),
                jnp.asarray(packed["positions"])).hidden_states
    k = enc.n_options
    for i in range(len(MC)):
        seg, pos = packed["segment"][i], packed["positions"][i]
        assert (seg == 0).sum() >= 3  # the prompt is shared, at least
        for o in range(k):
            alone = np.asarray(model(jnp.asarray(enc.ids[i * k + o])[None]).hidden_states[:, 0])
            rows = np.flatnonzero((seg == 0) | (seg == o + 1))  # the prefix, then this option, in order
            np.testing.assert_array_equal(pos[rows], np.arange(len(enc.ids[i * k + o])))
            np.testing.assert_allclose(np.asarray(out[:, i, rows]), alone, atol=2e-5, err_msg=f"{i} {o}")


def test_packed_step_equals_the_unpacked_step():
    """_gradients on packed and unpacked arrays of the same items (2 micro-batches, a padding item)."""
    from jaxalign.finetune._train import _gradients, _mc_arrays, _mc_packed_arrays

    model, tok = _load("llama")
    enc = finetune.encode_choices(tok, MC)
    items = np.array([[0, 1], [2, -1]])
    graphdef, state = nnx.split(model, nnx.Param)
    got = []
    for arrays in (_mc_arrays, _mc_packed_arrays):
        batch = {k: jnp.asarray(v) for k, v in arrays(enc, items, 64).items()}
        got.append(_gradients(graphdef, nnx.to_pure_dict(state), batch, jnp.array([1 / 3, 0.0])))
    (g0, s0), (g1, s1) = got
    assert set(s0) == set(s1)
    for key in s0:
        assert float(s1[key]) == pytest.approx(float(s0[key]), abs=1e-5), key
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_fit_packed_and_unpacked_follow_the_same_trajectory():
    """Two optimizer steps of 2 x 2 items: the same losses and parameters, packed or not. Adam's first
    steps move every weight by ~lr * sign(gradient), which float32 noise in a near-zero gradient can flip;
    eps = 1 makes the update ~lr * gradient, so parameters compare to 1e-6."""
    mc = toy_choices(8, 5)
    runs = []
    for pack in (True, False):
        model, tok = _load("gpt2")
        records = []
        settings = finetune.TrainConfig(lr=0.1, eps=1.0, epochs=1, batch_size=2, accumulation=2, pack=pack,
                                        eval_before=False, patience=0)
        finetune.fit(model, tok, mc, settings=settings, progress=False,
                     callback=lambda r: records.append(r) if r["event"] == "step" else None)
        runs.append(([r["loss"] for r in records], jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))))
    (loss_p, params_p), (loss_u, params_u) = runs
    assert len(loss_p) == 2
    np.testing.assert_allclose(loss_p, loss_u, atol=1e-5)
    for a, b in zip(params_p, params_u):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    base = jax.tree.leaves(nnx.to_pure_dict(nnx.state(_load("gpt2")[0], nnx.Param)))
    assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(params_p, base)) > 1e-3  # moved


def test_model_inputs_are_checked():
    model, _ = _load("llama")
    ids = jnp.zeros((2, 5), jnp.int32)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(ids, jnp.ones((2, 5, 4), bool))
    with pytest.raises(ValueError, match="position_ids shape"):
        model(ids, None, jnp.zeros((2, 4), jnp.int32))
    gpt2, _ = _load("gpt2")
    with pytest.raises(ValueError, match="position_ids reach 64"):
        gpt2(ids, None, jnp.full((2, 5), 64, jnp.int32))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_clip_and_norm_equal_optax(scale):
    """finetune's global norm and clipping (a dot product per leaf, one scale factor) against optax's
    clip_by_global_norm + AdamW on random gradients below and above the clip norm, small and large."""
    import optax

    from jaxalign.finetune._train import clip_by_global_norm, global_norm

    rng = np.random.default_rng(int(scale * 1000) % 7)
    params = {"a": jnp.asarray(rng.standard_normal((40, 30)), jnp.float32),
              "b": {"c": jnp.asarray(rng.standard_normal(17), jnp.float32)}}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape) * scale, jnp.float32), params)
    want = np.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(grads)))
    assert float(global_norm(grads)) == pytest.approx(want, rel=1e-6)
    ours = optax.chain(clip_by_global_norm(1.0), optax.adamw(1e-2))
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    s_ours, s_ref = ours.init(params), ref.init(params)
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_ref)  # checkpoints keep their layout
    for _ in range(3):
        u_ours, s_ours = ours.update(grads, s_ours, params)
        u_ref, s_ref = ref.update(grads, s_ref, params)
        for x, y in zip(jax.tree.leaves((u_ours, s_ours)), jax.tree.leaves((u_ref, s_ref))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-12)
