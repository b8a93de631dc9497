"""lm.generate and lm.answer_logodds against transformers' PyTorch models.

References: transformers' own greedy ``generate`` (``do_sample=False``) on
the same random tiny GPT-2, token for token; and the yes/no log-odds
computed from the PyTorch logits of each prompt + answer alone (float64
log-softmax, no padding, no batching). Tolerance 1e-4 nats (float32 sums of a
few tokens; measured differences ~1e-6).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from _tiny_lm import saved_tiny  # noqa: E402

from jaxalign import lm  # noqa: E402

PROMPTS = ["the cat sat on the mat. Is it good? Answer:", "How do I open a jar?",
           "water boils at one hundred degrees; ice melts when it gets warm. yes or no?"]


def _load(kind):
    folder, torch_model = saved_tiny(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = lm.load(folder)
    return model, tokenizer, torch_model


def _torch_answer_logprob(torch_model, tokenizer, prompt, answer):
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = head + tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(torch_model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(len(head), len(ids)))


def test_answer_logodds_equal_pytorch():
    """GPT-2 only: the scoring reads logits, the same for every architecture (each of which
    matches PyTorch's logits in its own tests)."""
    model, tokenizer, torch_model = _load("gpt2")
    # " hammer" is several tokens here: the multi-token path is exercised too; batches of 4
    # sequences (2 per prompt) with a short last batch, and one batch of all
    for (yes, no), batch in (((" yes", " no"), 4), ((" grateful", " hammer"), 16)):
        got = lm.answer_logodds(model, tokenizer, PROMPTS, yes=yes, no=no, batch_size=batch)
        ref = functools.partial(_torch_answer_logprob, torch_model, tokenizer)
        want = [ref(p, yes) - ref(p, no) for p in PROMPTS]
        assert got.shape == (3,) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert len(tokenizer(" hammer", add_special_tokens=False)["input_ids"]) > 1


def test_greedy_generation_equals_transformers():
    model, tokenizer, torch_model = _load("gpt2")
    for prompt in PROMPTS[:2]:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            ref = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=0)
        new = ref[0, len(ids):].tolist()
        got = lm.generate(model, tokenizer, prompt, max_new_tokens=12, stop_at_eos=False)
        assert got == tokenizer.decode(new, skip_special_tokens=True)
    # sampling: seeded and repeatable; a different seed usually differs (random weights: flat-ish logits)
    a = lm.generate(model, tokenizer, PROMPTS[0], max_new_tokens=8, temperature=1.0, seed=1, stop_at_eos=False)
    b = lm.generate(model, tokenizer, PROMPTS[0], max_new_tokens=8, temperature=1.0, seed=1, stop_at_eos=False)
    c = lm.generate(model, tokenizer, PROMPTS[0], max_new_tokens=8, temperature=1.0, seed=2, stop_at_eos=False)
    assert a == b and a != c


def test_bad_arguments_are_named():
    model, tokenizer, _ = _load("gpt2")
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(model, tokenizer, "the cat", max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(model, tokenizer, "the cat", temperature=-1.0)
    with pytest.raises(TypeError, match="prompts must be a list"):
        lm.answer_logodds(model, tokenizer, "the cat")
    with pytest.raises(ValueError, match="same tokens"):
        lm.answer_logodds(model, tokenizer, ["the cat"], yes=" no", no=" no")
    with pytest.raises(ValueError, match="chat template"):
        lm.generate(model, tokenizer, "the cat", chat=True)


def test_chat_template_wraps_the_prompt():
    model, tokenizer, _ = _load("gpt2")
    tokenizer = type(tokenizer).from_pretrained(saved_tiny("gpt2")[0])   # a copy: the shared one stays plain
    tokenizer.chat_template = "{% for m in messages %}user: {{ m['content'] }}\n{% endfor %}assistant:"
    wrapped = [f"user: {p}\nassistant:" for p in PROMPTS]
    np.testing.assert_allclose(lm.answer_logodds(model, tokenizer, PROMPTS, chat=True),
                               lm.answer_logodds(model, tokenizer, wrapped, yes="yes", no="no"), atol=1e-6)
    assert (lm.generate(model, tokenizer, PROMPTS[1], max_new_tokens=5, chat=True, stop_at_eos=False)
            == lm.generate(model, tokenizer, wrapped[1], max_new_tokens=5, stop_at_eos=False))
