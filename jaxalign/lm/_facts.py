"""What the rest of jaxalign may ask about a loaded model: causal or not, max length, shape.

The facts of an architecture live with it: each module registered in
``_registry.MODEL_TYPES`` has a ``Config`` that says ``causal`` (a class
attribute) and ``max_length`` (a property), so a new architecture is one
file plus one registry line and ``features`` needs no list of its own.
Models from outside ``jaxalign.lm`` are answered from a ``causal``
attribute, Hugging Face config names, or a probe.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxalign.lm._registry import MODEL_TYPES

__all__ = ["ModelFacts", "is_causal", "max_length", "model_facts"]


def is_causal(model) -> bool:
    """Whether ``model`` has a causal mask.

    A ``causal`` attribute of the model wins; a jaxalign architecture's
    ``Config.causal`` says it (GPT-2, GPT-NeoX, Llama causal; BERT not);
    anything else is probed: a causal model's first two hidden states do not
    change when the third token does.
    """
    flag = getattr(model, "causal", None)
    if isinstance(flag, bool):
        return flag
    if type(model).__module__ in MODEL_TYPES.values():
        known = getattr(type(getattr(model, "config", None)), "causal", None)
        if isinstance(known, bool):
            return known
    from jaxalign.lm._load import hidden_states

    a = np.asarray(hidden_states(model, np.array([[1, 2, 3]])))
    b = np.asarray(hidden_states(model, np.array([[1, 2, 4]])))
    return bool(np.allclose(a[:, :, :2], b[:, :, :2], atol=1e-6, rtol=1e-6))


def max_length(model) -> int | None:
    """The model's max length from its config, or None when it has none.

    ``config.max_length`` (every ``jaxalign.lm`` architecture's Config has it:
    GPT-2's ``n_positions``, the others' ``max_position_embeddings``, a GGUF
    file's ``context_length``), else a Hugging Face style ``n_positions`` /
    ``max_position_embeddings``.
    """
    config = getattr(model, "config", None)
    for name in ("max_length", "n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """Shape facts of a model's output: hidden states (``n_layers + 1``), width, logits or not."""

    n_states: int  # n_layers + 1
    dim: int
    has_logits: bool


def model_facts(model) -> ModelFacts:
    """Number of hidden states, width and whether there are logits, from
    ``jax.eval_shape`` (nothing is computed)."""
    graphdef, state = nnx.split(model)
    spec = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    out = jax.eval_shape(lambda s, i, m: nnx.merge(graphdef, s)(i, m), state, spec, spec)
    hidden = out.hidden_states
    return ModelFacts(int(hidden.shape[0]), int(hidden.shape[-1]), out.logits is not None)
