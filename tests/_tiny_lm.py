"""Tiny random causal LMs with a tiny byte-level BPE tokenizer, built offline in a second.

The tokenizer is trained (``tokenizers``' BPE trainer, deterministic) on a
fixed little corpus, with GPT-2's byte-level pre-tokenizer, so the space
before a word rides on the word's first token as with GPT-2 and SmolLM2.
Models are transformers' PyTorch classes with random weights, saved as
Hugging Face folders that ``jaxalign.lm.load`` reads.
"""

from __future__ import annotations

CORPUS = [
    "the cat sat on the mat and the dog ate the bone",
    "How do I open a jar? Twist the lid to the left. Hit the lid with a hammer.",
    "she went to the store to buy some milk, bread and eggs for breakfast",
    "water boils at one hundred degrees; ice melts when it gets warm",
    "red green blue yellow purple orange black white good bad yes no",
    "Alex gave Jordan a gift. How would Jordan feel? happy sad angry grateful",
]
VOCAB = 320


def tiny_tokenizer():
    """A fast GPT-2-style tokenizer (byte-level BPE, ``VOCAB`` tokens, eos ``<|endoftext|>`` = 0)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                bos_token="<|endoftext|>", unk_token="<|endoftext|>")


def tiny_hf_model(kind: str = "gpt2", seed: int = 0, vocab: int = VOCAB, noise: float = 0.1, tied: bool = False):
    """A transformers causal LM of ``kind`` ("gpt2", "llama", "gpt_neox") with random weights (eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                         bos_token_id=0, eos_token_id=0)
        cls = transformers.GPT2LMHeadModel
    elif kind == "llama":
        config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=64, tie_word_embeddings=tied,
                                          bos_token_id=0, eos_token_id=0)
        cls = transformers.LlamaForCausalLM
    elif kind == "gpt_neox":
        config = transformers.GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=64, rotary_pct=0.5,
                                            bos_token_id=0, eos_token_id=0)
        cls = transformers.GPTNeoXForCausalLM
    else:
        raise ValueError(kind)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape))
    return model


_SAVED: dict = {}


def saved_tiny(kind: str = "gpt2", tied: bool = False):
    """``save_tiny`` once per test session (a temporary folder removed at exit): (folder, torch model).

    Read-only for the tests that share it."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    key = (kind, tied)
    if key not in _SAVED:
        folder = Path(tempfile.mkdtemp(prefix=f"jaxalign-tiny-{kind}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SAVED[key] = save_tiny(folder / "model", kind, tied=tied)
    return _SAVED[key]


def save_tiny(folder, kind: str = "gpt2", seed: int = 0, tied: bool = False):
    """A Hugging Face folder (config, safetensors, tokenizer) of a tiny random model; returns (folder, torch model).

    ``tied``: Llama with tied embeddings (as SmolLM2); GPT-2 is always tied, GPT-NeoX never."""
    model = tiny_hf_model(kind, seed, tied=tied)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder, model


GOOD = ["good", "yes", "happy", "grateful", "warm", "milk", "bread"]
BAD = ["bad", "no", "sad", "angry", "black", "bone", "hammer"]


def toy_choices(n: int, seed: int):
    """A learnable two-option task: the right option is a 'good' word, the wrong one a 'bad' word (random order)."""
    import numpy as np

    from jaxalign import io

    r = np.random.default_rng(seed)
    prompts, choices, labels = [], [], []
    for _ in range(n):
        good, bad = str(r.choice(GOOD)), str(r.choice(BAD))
        label = int(r.integers(2))
        prompts.append("the cat sat on the mat and said")
        choices.append((good, bad) if label == 0 else (bad, good))
        labels.append(label)
    return io.MultipleChoice(prompts=prompts, choices=choices, labels=np.array(labels), name="toy")
