"""Language models in Flax NNX, loaded from Hugging Face checkpoints or GGUF.

``load(name_or_path, revision=None, dtype=jnp.float32, devices=None) -> (model, tokenizer)``
reads a local Hugging Face directory, a Hub id from the local cache (e.g.
``load("EleutherAI/pythia-160m", revision="step1000")``) or a ``.gguf`` file;
``devices`` (``"auto"``, an int, a list of devices or a Mesh with a ``"model"``
axis) splits the weight matrices over several devices, tensor-parallel style,
for models too large for one.
``hidden_states(model, input_ids, attention_mask=None)`` returns every layer,
shape (n_layers + 1, batch, seq, dim), in transformers' ``output_hidden_states``
convention (GPT-2 XL: 49 states, the last after the final LayerNorm).

One module per architecture (``gpt2``, ``gpt_neox``, ``llama``, ``bert``),
each with a ``Config`` dataclass (``Config.from_hf``; its inverse ``Config.to_hf``
in the causal ones, for ``jaxalign.finetune.save_pretrained``; ``Config.max_length``
is the model's maximum sequence length), a ``Model`` whose call returns
``LMOutput(hidden_states, logits)``, ``load_state``, an explicit
checkpoint-name table, ``Config.causal`` (the attention mask kind), and ``SHARDING``, the axis each weight matrix is split
along over devices; ``MODEL_TYPES`` maps Hugging Face ``model_type`` to them.
``inspect(name_or_path, revision)`` locates a model and reads its config
(type, layer count, files) without loading a weight.
``is_causal(model)``, ``max_length(model)`` and ``model_facts(model)`` answer
what ``features`` needs to know about any model.
``generate(model, tokenizer, prompt)`` continues a prompt (greedy or sampled);
``answer_logodds(model, tokenizer, prompts)`` scores log p(" yes") - log p(" no")
after each prompt (a verifier for ``jaxalign.analysis.divergence``).
"""

from jaxalign.lm._common import LMOutput
from jaxalign.lm._facts import ModelFacts, is_causal, max_length, model_facts
from jaxalign.lm._generate import answer_logodds, generate
from jaxalign.lm._inspect import ModelSource, inspect
from jaxalign.lm._load import build_model, hidden_states, load, read_checkpoint, resolve
from jaxalign.lm._packaged import PACKAGED_MODELS, package_dir, packaged_model
from jaxalign.lm._registry import MODEL_TYPES

__all__ = [
    "LMOutput",
    "MODEL_TYPES",
    "ModelFacts",
    "ModelSource",
    "PACKAGED_MODELS",
    "answer_logodds",
    "build_model",
    "generate",
    "hidden_states",
    "inspect",
    "is_causal",
    "load",
    "max_length",
    "model_facts",
    "package_dir",
    "packaged_model",
    "read_checkpoint",
    "resolve",
]
