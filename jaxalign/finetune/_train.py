"""The training loop: Optax AdamW over a causal LM, resumable from Orbax checkpoints.

What one optimizer step does (``_step``: ``_gradients`` then ``_apply``, each
compiled once per padded shape and shared by every run of the same model):

1. ``accumulation`` micro-batches, stacked on a leading axis, run through
   ``lax.scan``; each adds the gradient of its share of the step's loss::

       L = (1 - r) * sum_items(w * nll_mc) / N_mc + r * sum_tokens(nll_lm) / N_lm

   where ``nll_mc = logsumexp_j s_j - s_label`` over the options' summed
   shifted log-likelihoods (``_losses``), ``nll_lm`` the next-token
   negative log-likelihood of text windows, ``w`` 1 for real items and 0
   for padding, ``N_mc`` / ``N_lm`` the step's real items / scored tokens
   (counted on the host, so every micro-batch is scaled by the same
   numbers and the accumulated gradient is that of the step's mean loss)
   and ``r`` the LM ratio (0: multiple choice only; 1: text only).
2. Optax: ``clip_by_global_norm(clip)`` then ``adamw`` with the learning
   rate schedule (linear warmup from 0, then constant, linear or cosine
   decay to ``min_lr_ratio * lr`` at the last step) and decoupled weight
   decay on kernels and embeddings only (not biases or norm scales).

What is trained: every ``nnx.Param``, or, when the model carries LoRA
adapters (``_lora.add_lora``), only the adapters (``nnx.LoRAParam``): the
rest of the model (base weights, dropout keys) enters the step as a frozen
argument, so gradients, the optimizer state and checkpoints are
adapter-sized, and the fingerprint records a hash of the frozen weights.

How the step computes (``_training_graphdef``): the model's graph with every
Flax layer's compute dtype set to ``compute_dtype`` (bfloat16: the float32
parameters are cast inside each layer, gradients come back float32 to the
float32 master weights; bfloat16's exponent range needs no loss scaling),
blocks rematerialised with ``remat`` and LoRA dropout on. Evaluations run
the model's own graph (float32, deterministic).

Shapes: multiple-choice items are packed (``pack``, the default: each
item's shared prompt once, then its options, ``_encode.pack_choices``) into
rows padded to 4 lengths per octave (``_fine_bucket``: under 25% padding),
and their option tokens likewise; unpacked, every option is one text padded
to a power of two from 16 (``features._batching.bucket_length``). The batch
is always ``accumulation x batch_size`` (the last step of an epoch is
filled with weight-0 padding), so a run compiles one step per padded shape.

Order and resumption: the items of epoch e are visited in the permutation
``_core.seeds.rng(seed, "finetune order", "epoch e")``; step g of a run
always takes the same items (epoch ``g // steps_per_epoch``, position
``g % steps_per_epoch``), text windows mixed in likewise follow
``rng(seed, "finetune text order", "pass p")`` by their global position.
LoRA dropout masks fold ``step * accumulation + micro-batch`` into keys
fixed when the adapters were made. Nothing else is random, so a run is a
function of (parameters, optimizer state, step): the periodic checkpoint
holds the first two and the step, and a killed run resumes bit for bit.

Evaluation after each epoch (and every ``eval_every`` steps): validation
loss and accuracy for multiple choice (``score_encoded``, the zero-shot
scorer), loss and perplexity for text. Early stopping after ``patience``
evaluations without improvement of the monitored metric; the best
evaluation's parameters are kept (saved to ``best/`` and returned). The
evaluation before training (step 0, ``eval_before``) is logged as the
base model's score but is not a candidate for "best".
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxalign._core.files import atomic_write_text, writable_dir
from jaxalign._core.seeds import rng
from jaxalign._precision import jit as _jit
from jaxalign.features._batching import bucket_length
from jaxalign.finetune import _lora
from jaxalign.finetune._checkpoint import Checkpoints, _jsonable, data_hash, tree_hash
from jaxalign.finetune._config import TrainConfig
from jaxalign.finetune._encode import (
    EncodedChoices,
    EncodedText,
    encode_choices,
    encode_text,
    fine_bucket,
    pack_choices,
)
from jaxalign.finetune._log import RunLog, finite_or_none, plot_curves
from jaxalign.finetune._losses import sequence_logprob, token_logprobs
from jaxalign.finetune._score import _token_budget, check_causal, merged, packed_scores, score_encoded
from jaxalign.lm import max_length

__all__ = ["TrainResult", "fit", "split_items"]


def _optax():
    try:
        import optax
    except ImportError as error:  # pragma: no cover - optional dependency
        raise ImportError("fine-tuning needs optax and orbax-checkpoint: pip install 'jaxalign[finetune]'") from error
    return optax


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` returns.

    model
        the model passed in, updated in place to the kept parameters (the
        best evaluation's, or the last step's without validation data).
    history
        every evaluation record (step, epoch, loss, accuracy, perplexity, ...).
    best
        the kept evaluation's record (None without validation data).
    steps
        optimizer steps done; ``stopped_early``: patience ran out.
    out
        the run folder (None when nothing was written).
    seconds, tokens_per_s
        wall time of the call; real tokens per second of the training steps
        run by this call, leaving out the first step of each padded shape
        (which compiles it) and the evaluations (0 when no other step ran).
    resumed_from
        the checkpoint step this call resumed from (None: started afresh).
    """

    model: nnx.Module
    history: list[dict]
    best: dict | None
    steps: int
    stopped_early: bool
    out: Path | None
    seconds: float
    resumed_from: int | None = None
    tokens_per_s: float = 0.0


def split_items(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) item indices: a seeded ``fraction`` of ``range(n)`` held out, both sorted.

    At least one item is held out when ``fraction > 0`` (and one kept for
    training); ``fraction == 0`` holds none out.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_out = 0 if fraction == 0 else min(n - 1, max(1, int(round(fraction * n))))
    if n_out < 0 or (fraction > 0 and n < 2):
        raise ValueError(f"cannot hold out a validation part of {n} item(s)")
    order = rng(seed, "finetune held-out split").permutation(n)
    return np.sort(order[n_out:]), np.sort(order[:n_out])


# ----------------------------------------------------------------- the plan


@dataclasses.dataclass
class _Plan:
    """The data of a run, encoded, and how steps walk through it."""

    mc: EncodedChoices | None
    mc_eval: EncodedChoices | None
    text: EncodedText | None
    text_eval: EncodedText | None
    lm_ratio: float
    settings: TrainConfig
    context: int

    @property
    def primary(self) -> str:
        return "mc" if self.mc is not None else "lm"

    @property
    def n_primary(self) -> int:
        return self.mc.n_items if self.mc is not None else len(self.text)

    @property
    def per_step(self) -> int:
        return self.settings.batch_size * self.settings.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_primary // self.per_step)

    @property
    def total_steps(self) -> int:
        total = self.settings.epochs * self.steps_per_epoch
        return min(total, self.settings.max_steps) if self.settings.max_steps else total

    def order(self, epoch: int) -> np.ndarray:
        return rng(self.settings.seed, "finetune order", f"epoch {epoch}").permutation(self.n_primary)

    def step_items(self, step: int) -> np.ndarray:
        """Primary indices of optimizer step ``step``, (accumulation, batch_size); -1 = padding."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        idx = self.order(epoch)[pos * self.per_step:(pos + 1) * self.per_step]
        out = np.full(self.per_step, -1, np.int64)
        out[: idx.size] = idx
        return out.reshape(self.settings.accumulation, self.settings.batch_size)

    def text_windows(self, step: int) -> np.ndarray:
        """Windows of text mixed into step ``step`` (secondary LM loss), (accumulation, batch_size)."""
        n, per = len(self.text), self.per_step
        flat = step * per + np.arange(per)
        passes, pos = np.divmod(flat, n)
        out = np.empty(per, np.int64)
        for p in np.unique(passes):
            perm = rng(self.settings.seed, "finetune text order", f"pass {int(p)}").permutation(n)
            out[passes == p] = perm[pos[passes == p]]
        return out.reshape(self.settings.accumulation, self.settings.batch_size)

    def batch(self, step: int) -> tuple[dict, np.ndarray, int]:
        """Host arrays of step ``step``, the loss normalisers [(1-r)/N_mc, r/N_lm] and its real tokens."""
        items = self.step_items(step)
        arrays, tokens = {}, 0
        norms = np.zeros(2, np.float32)
        if self.mc is not None:
            arrays |= (_mc_packed_arrays if self.settings.pack else _mc_arrays)(self.mc, items, self.context)
            n_mc = float(arrays["mc_weight"].sum())
            norms[0] = (1.0 - self.lm_ratio) / n_mc
            tokens += int(self.mc.lengths[items[items >= 0]].sum())
        windows = self.text_windows(step) if self.mc is not None and self.lm_ratio > 0 else (
            items if self.mc is None else None)
        if windows is not None:
            arrays |= _lm_arrays(self.text, windows)
            m = arrays["lm_mask"]
            n_lm = float(((m[..., 1:] > 0) & (m[..., :-1] > 0)).sum())
            norms[1] = (self.lm_ratio if self.mc is not None else 1.0) / max(n_lm, 1.0)
            tokens += int(m.sum())
        return arrays, norms, tokens


def _mc_arrays(enc: EncodedChoices, items: np.ndarray, context: int) -> dict:
    acc, b = items.shape
    k = enc.n_options
    real = items[items >= 0]
    length = bucket_length(int(enc.lengths[real].max()), context)
    ids = np.zeros((acc, b, k, length), np.int32)
    target = np.zeros((acc, b, k, length), bool)
    labels = np.zeros((acc, b), np.int32)
    weight = np.zeros((acc, b), np.float32)
    for a in range(acc):
        for j in range(b):
            i = items[a, j]
            if i < 0:
                continue
            for o in range(k):
                seq = enc.ids[i * k + o]
                ids[a, j, o, : seq.size] = seq
                target[a, j, o, : seq.size] = enc.target[i * k + o]
            labels[a, j] = enc.labels[i]
            weight[a, j] = 1.0
    return {"mc_ids": ids, "mc_target": target, "mc_labels": labels, "mc_weight": weight}


def _mc_packed_arrays(enc: EncodedChoices, items: np.ndarray, context: int) -> dict:
    """``_mc_arrays``' items as packed rows (``_encode.pack_choices``), sizes in ``_encode.fine_bucket``."""
    packed = pack_choices(enc, items, bucket=fine_bucket)
    labels = np.where(items >= 0, enc.labels[np.maximum(items, 0)], 0).astype(np.int32)
    return {"mc_ids": packed["ids"], "mc_segment": packed["segment"], "mc_positions": packed["positions"],
            "mc_source": packed["source"], "mc_token": packed["token"], "mc_option": packed["option"],
            "mc_labels": labels, "mc_weight": (items >= 0).astype(np.float32)}


def _lm_arrays(text: EncodedText, windows: np.ndarray) -> dict:
    real = windows >= 0
    safe = np.where(real, windows, 0)
    ids = text.ids[safe]
    mask = text.mask[safe] * real[..., None]
    return {"lm_ids": ids.astype(np.int32), "lm_mask": mask.astype(np.int32)}


# ------------------------------------------------------------ the optimizer


def schedule(settings: TrainConfig, total_steps: int):
    """The learning rate per optimizer step (an optax schedule): warmup, then the decay of ``settings``."""
    optax = _optax()
    lr, warm = settings.lr, min(settings.warmup_steps, max(total_steps - 1, 0))
    end = settings.min_lr_ratio * lr
    decay_steps = max(total_steps - warm, 1)
    if settings.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif settings.schedule == "linear":
        after = optax.linear_schedule(lr, end, decay_steps)
    else:
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=settings.min_lr_ratio)
    if warm == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def _decay_mask(params):
    """Weight decay on kernels and embeddings, not on biases or norm scales."""
    def leaf(path, _):
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        return not (names and names[-1] in ("bias", "scale"))

    return jax.tree_util.tree_map_with_path(leaf, params)


def global_norm(tree) -> jax.Array:
    """sqrt(sum of every leaf's squared entries), float32: each leaf's sum of squares as a dot product with
    itself. ``optax.tree.norm`` squares every leaf into a temporary array first, which XLA:CPU fills in
    freshly allocated memory each step (with :func:`clip_by_global_norm`, SmolLM2's AdamW update took
    0.26 s instead of 0.33 s)."""
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(jnp.dot(x, x, precision=jax.lax.Precision.HIGHEST) for x in leaves))


def clip_by_global_norm(max_norm: float):
    """``optax.clip_by_global_norm`` (the same state; the same updates to float32 rounding) with
    :func:`global_norm`, scaling by one scalar factor, which XLA fuses into the Adam moments' updates
    (optax's ``select(norm < max, t, t / norm * max)`` is written to a temporary array first)."""
    optax = _optax()

    def update(updates, state, params=None):
        norm = global_norm(updates)
        factor = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda t: t * factor.astype(t.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def optimizer(settings: TrainConfig, total_steps: int, params):
    """``clip_by_global_norm`` (when ``clip`` > 0) then AdamW with :func:`schedule`."""
    optax = _optax()
    parts = [clip_by_global_norm(settings.clip)] if settings.clip > 0 else []
    parts.append(optax.adamw(schedule(settings, total_steps), b1=settings.b1, b2=settings.b2, eps=settings.eps,
                             weight_decay=settings.weight_decay, mask=_decay_mask(params)))
    return optax.chain(*parts)


# ------------------------------------------------------------- the step


def _terms(graphdef, params, mb, norms, frozen=None):
    """The micro-batch's share of the step's loss, and its sums for the log.

    ``params`` are the trained parameters (every ``nnx.Param``, or only the
    LoRA adapters), ``frozen`` the rest of the model's state: (dropout keys,
    frozen weights), as pure dicts (None: nothing is frozen)."""
    model = nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, *frozen)
    total = jnp.zeros((), jnp.float32)
    stats = {}
    if "mc_segment" in mb:  # packed rows (_mc_packed_arrays)
        scores = packed_scores(model, *(mb[f"mc_{k}"] for k in ("ids", "segment", "positions", "source", "token",
                                                                "option")))
    elif "mc_ids" in mb:
        ids = mb["mc_ids"]
        b, k, length = ids.shape
        flat = ids.reshape(b * k, length)
        scores = sequence_logprob(model(flat).logits, flat, mb["mc_target"].reshape(b * k, length)).reshape(b, k)
    if "mc_ids" in mb:
        labels, w = mb["mc_labels"], mb["mc_weight"]
        nll = jax.nn.logsumexp(scores, axis=-1) - jnp.take_along_axis(scores, labels[:, None], axis=-1)[:, 0]
        mc_sum = jnp.sum(w * nll)
        total = total + norms[0] * mc_sum
        stats |= {"mc_sum": mc_sum, "mc_n": jnp.sum(w),
                  "mc_correct": jnp.sum(w * (jnp.argmax(scores, axis=-1) == labels))}
    if "lm_ids" in mb:
        ids, mask = mb["lm_ids"], mb["lm_mask"]
        lp = token_logprobs(model(ids).logits, ids)
        m = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
        lm_sum = -jnp.sum(jnp.where(m, lp, 0.0))
        total = total + norms[1] * lm_sum
        stats |= {"lm_sum": lm_sum, "lm_n": jnp.sum(m).astype(jnp.float32)}
    return total, stats


@functools.partial(_jit, static_argnums=0)
def _gradients(graphdef, params, batch, norms, frozen=None, step=0):
    """The gradient of a step's loss and its sums for the log: the micro-batches (leading axis of ``batch``)
    run through ``lax.scan``, each adding the gradient of its share (``_terms``). Static: the model's
    structure, so every run of a model shares the compiled function (one per padded shape).

    ``frozen`` = (LoRA dropout keys, frozen weights) or None; micro-batch ``i`` of optimizer step ``step``
    folds ``step * accumulation + i`` into every dropout key, so dropout masks are a function of the step
    (a resumed run draws the same ones)."""
    n_micro = jax.tree.leaves(batch)[0].shape[0]

    def one(mb, i):
        fr = None if frozen is None else (_lora.fold_dropout_keys(frozen[0], step * n_micro + i), frozen[1])
        (_, s), g = jax.value_and_grad(_terms, argnums=1, has_aux=True)(graphdef, params, mb, norms, fr)
        return g, s

    def micro(carry, xs):
        g, s = one(*xs)
        return (jax.tree.map(jnp.add, carry[0], g), jax.tree.map(jnp.add, carry[1], s)), None

    # the first micro-batch's gradient starts the sum (no zero-filled copy of the parameters' size: one
    # micro-batch holds one gradient, several hold two), the others are added in a scan
    grads, stats = one(jax.tree.map(lambda x: x[0], batch), 0)
    if n_micro > 1:
        rest = (jax.tree.map(lambda x: x[1:], batch), jnp.arange(1, n_micro))
        (grads, stats), _ = jax.lax.scan(micro, (grads, stats), rest)
    return grads, stats


@functools.partial(_jit, static_argnums=(0, 1), donate_argnums=(2, 3))
def _apply(settings: TrainConfig, total_steps: int, params, opt_state, grads):
    """The optimizer's update (clipping, AdamW, schedule) and the gradient's global norm."""
    optax = _optax()
    norm = global_norm(grads)
    updates, opt_state = optimizer(settings, total_steps, params).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, norm


#: The TrainConfig fields :func:`optimizer` reads.
_OPTIMIZER_KEYS = ("lr", "weight_decay", "b1", "b2", "eps", "schedule", "warmup_steps", "min_lr_ratio", "clip")


def _optimizer_settings(settings: TrainConfig) -> TrainConfig:
    """``settings`` with every field the optimizer does not read at its default: ``_apply``'s static argument,
    so runs that differ only in data, evaluation, compute dtype or remat share its compiled update."""
    return TrainConfig(**{k: getattr(settings, k) for k in _OPTIMIZER_KEYS})


def _step(graphdef, settings: TrainConfig, total_steps: int, params, opt_state, batch, norms, frozen=None,
          step=0):
    """One optimizer step (see the module docstring): the parameters and optimizer state after it, its sums."""
    grads, stats = _gradients(graphdef, params, batch, norms, frozen, jnp.asarray(step, jnp.int32))
    params, opt_state, stats["grad_norm"] = _apply(_optimizer_settings(settings), total_steps, params, opt_state,
                                                   grads)
    return params, opt_state, stats


@functools.partial(_jit, static_argnums=0)
def _lm_sums(graphdef, states, ids, mask):
    """(summed next-token NLL, scored tokens) of text windows."""
    lp = token_logprobs(merged(graphdef, states)(ids).logits, ids)
    m = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    return -jnp.sum(jnp.where(m, lp, 0.0)), jnp.sum(m)


# ------------------------------------------------------------ evaluation


def _evaluate(plan: _Plan, graphdef, states: tuple, vocab: int) -> dict:
    out: dict = {}
    s = plan.settings
    if plan.mc_eval is not None:
        scores = score_encoded(graphdef, states, plan.mc_eval, vocab_size=vocab, context=plan.context,
                               batch_size=s.eval_batch_size or None, progress=False, pack=s.pack)
        labels = plan.mc_eval.labels
        nll = np.logaddexp.reduce(scores, axis=1) - scores[np.arange(len(labels)), labels]
        out |= {"mc_loss": float(nll.mean()), "accuracy": float((scores.argmax(1) == labels).mean()),
                "chance": 1.0 / plan.mc_eval.n_options, "n_items": int(len(labels))}
    if plan.text_eval is not None:
        rows = s.eval_batch_size or max(1, _token_budget(vocab) // plan.text_eval.ids.shape[1])
        total, count = 0.0, 0
        for i in range(0, len(plan.text_eval), rows):
            ids = np.zeros((rows, plan.text_eval.ids.shape[1]), np.int32)
            mask = np.zeros_like(ids)
            chunk = slice(i, min(i + rows, len(plan.text_eval)))
            n = chunk.stop - chunk.start
            ids[:n], mask[:n] = plan.text_eval.ids[chunk], plan.text_eval.mask[chunk]
            a, c = _lm_sums(graphdef, states, jnp.asarray(ids), jnp.asarray(mask))
            total, count = total + float(a), count + int(c)
        out |= {"lm_loss": total / max(count, 1), "perplexity": math.exp(min(total / max(count, 1), 700.0))}
    if "mc_loss" in out and "lm_loss" in out:
        out["loss"] = (1 - plan.lm_ratio) * out["mc_loss"] + plan.lm_ratio * out["lm_loss"]
    else:
        out["loss"] = out.get("mc_loss", out.get("lm_loss"))
    return out


def _better(record: dict, best: dict | None, monitor: str) -> bool:
    if best is None:
        return True
    if monitor == "accuracy":
        return record["accuracy"] > best["accuracy"]
    return record["loss"] < best["loss"]


# ------------------------------------------------------------------ fit


def _fingerprint(model, params, frozen, plan: _Plan) -> dict:
    s = plan.settings
    config = model.config
    extra = {}
    lora = _lora.lora_settings(model)
    if lora is not None:  # adapters only are saved: they must go back onto the same base weights
        extra = {"lora": lora, "base_weights": tree_hash(frozen[1])}
        if jax.tree.leaves(frozen[0]):  # and draw the same dropout masks
            extra["dropout_keys"] = tree_hash(frozen[0])
    return extra | {
        "model": {"class": f"{type(model).__module__}.{type(model).__name__}",
                  **(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {"config": repr(config)})},
        "parameters": {".".join(str(getattr(k, "key", k)) for k in path): list(np.shape(x))
                       for path, x in jax.tree_util.tree_flatten_with_path(params)[0]},
        "settings": {k: getattr(s, k) for k in ("lr", "weight_decay", "b1", "b2", "eps", "schedule", "warmup_steps",
                                                "min_lr_ratio", "batch_size", "accumulation", "clip", "seed")}
        | {"total_steps": plan.total_steps, "lm_ratio": plan.lm_ratio}
        | ({} if s.compute_dtype == "float32" else {"compute_dtype": s.compute_dtype}),
        "data": {
            "train": data_hash(*(plan.mc.ids if plan.mc else ()), *(plan.mc.target if plan.mc else ()),
                               plan.mc.labels if plan.mc else None, plan.text.ids if plan.text else None),
            "eval": data_hash(*(plan.mc_eval.ids if plan.mc_eval else ()),
                              plan.mc_eval.labels if plan.mc_eval else None,
                              plan.text_eval.ids if plan.text_eval else None),
        },
    }


def _check_labels(mc, what: str):
    if mc is not None and mc.labels is None:
        raise ValueError(f"the {what} multiple-choice set has no labels: training and validation need them")


def fit(
    model: nnx.Module,
    tokenizer,
    train=None,
    eval=None,
    *,
    text=None,
    eval_text=None,
    lm_ratio: float = 0.0,
    seq_len: int = 256,
    settings: TrainConfig | None = None,
    out=None,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 2,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[dict], None] | None = None,
    name: str | None = None,
) -> TrainResult:
    """Fine-tune a causal LM of :mod:`jaxalign.lm` (see the module docstring for the algorithm).

    model, tokenizer
        from ``jaxalign.lm.load``; ``model`` is trained in place (its arrays
        are reused, not copied), ends with the kept parameters and is
        returned in the result; a call that raises (or is interrupted)
        leaves it with the parameters of the last step done. A model with
        LoRA adapters (:func:`jaxalign.finetune.add_lora`) trains only them.
    train, eval
        :class:`jaxalign.io.MultipleChoice` training and validation sets
        (labels needed), or None.
    text, eval_text
        raw text (a string or a list of documents) for the causal-LM loss:
        alone (``train=None``), or mixed into multiple choice with weight
        ``lm_ratio`` (0 < lm_ratio < 1); cut into windows of ``seq_len`` tokens.
    settings
        a :class:`TrainConfig` (default: the MEG study's protocol), with
        ``compute_dtype`` ("bfloat16": bfloat16 compute on float32 master
        weights) and ``remat`` (rematerialised blocks).
    out
        run folder: ``log.jsonl``, ``curve.png``, ``result.json``, Orbax
        ``checkpoints/`` (every ``checkpoint_every`` steps, the latest
        ``keep_checkpoints`` kept, and one at the end) and ``best/``. With
        ``resume`` (default) a folder holding checkpoints of the same run
        (same model, settings and data) continues from the latest; another
        run's checkpoints raise ValueError naming what differs. None: nothing
        is written and nothing resumes.
    progress
        a tqdm bar with loss, accuracy and tokens/s (None: on a terminal).
    callback
        called with every log record (steps, evaluations) as it is written.
    name
        the model's name in the curve's title (default: its architecture).

    Raises ValueError for an empty or unlabelled data set, a ratio that does
    not fit the data given, options longer than the model's context, or a
    non-causal model.
    """
    t_start = time.perf_counter()
    settings = TrainConfig() if settings is None else settings
    check_causal(model)
    _check_labels(train, "training")
    _check_labels(eval, "validation")
    if train is None and text is None:
        raise ValueError("nothing to train on: give a multiple-choice train set, text, or both")
    if train is not None and text is not None and not 0 < lm_ratio < 1:
        raise ValueError(f"mixing text into multiple choice needs 0 < lm_ratio < 1, got {lm_ratio}")
    if train is not None and text is None and lm_ratio != 0:
        raise ValueError(f"lm_ratio={lm_ratio} needs text to train the causal-LM loss on")
    if settings.monitor == "accuracy" and eval is None:
        raise ValueError("monitor='accuracy' needs a multiple-choice validation set")
    context = max_length(model)
    plan = _Plan(
        mc=None if train is None else encode_choices(tokenizer, train, context),
        mc_eval=None if eval is None else encode_choices(tokenizer, eval, context),
        text=None if text is None else encode_text(tokenizer, text, min(seq_len, context)),
        text_eval=None if eval_text is None else encode_text(tokenizer, eval_text, min(seq_len, context)),
        lm_ratio=float(lm_ratio) if train is not None else 1.0, settings=settings, context=context,
    )
    has_eval = plan.mc_eval is not None or plan.text_eval is not None
    vocab = int(model.config.vocab_size)

    # trained: every parameter, or only the LoRA adapters; frozen: dropout keys and the other weights
    trainable = nnx.LoRAParam if _lora.has_lora(model) else nnx.Param
    graphdef, state, keys, base = nnx.split(model, trainable, _lora.LoRAKey, ...)
    # the model's own arrays: the update step donates them (trained in place, no second copy; the model is
    # given the parameters of the last step, or the best evaluation's, before fit returns or raises)
    params = nnx.to_pure_dict(state)
    frozen = (nnx.to_pure_dict(keys), nnx.to_pure_dict(base))
    train_graphdef = _training_graphdef(graphdef, (params, *frozen), settings, trainable)
    tx = optimizer(settings, plan.total_steps, params)
    fingerprint = _fingerprint(model, params, frozen, plan)
    mesh = _data_mesh(settings)
    if mesh is not None:  # data parallel (and FSDP): parameters placed before the optimizer state is made
        params = jax.device_put(params, _param_shardings(params, mesh, settings.fsdp))
        frozen = jax.device_put(frozen, _param_shardings(frozen, mesh, settings.fsdp))
    opt_state = tx.init(params)

    folder = None if out is None else writable_dir(out, "fine-tuning output folder")
    ckpt = None if folder is None else Checkpoints(folder, keep_checkpoints)
    start, history, best, bad, best_params, resumed_from, finished = 0, [], None, 0, None, None, False
    if ckpt is not None and resume:
        meta = ckpt.check(fingerprint)
        if meta is not None:
            params, opt_state, meta = ckpt.restore(ckpt.latest_step(), params, opt_state)
            if mesh is not None:  # restored on the host layout: back onto the devices
                params = jax.device_put(params, _param_shardings(params, mesh, settings.fsdp))
                opt_state = jax.device_put(opt_state, _param_shardings(opt_state, mesh, settings.fsdp))
            start, history, best, bad = meta["step"], meta["history"], meta["best"], meta["bad"]
            finished, resumed_from = meta.get("finished", False), meta["step"]
            ckpt.forget_after(start)
            if best is not None:
                restored, _ = ckpt.restore_best(params, best["step"])
                if restored is None:
                    raise ValueError(f"{folder}: the best checkpoint of step {best['step']} is missing from best/")
                best_params = jax.tree.map(np.array, restored)
    elif ckpt is not None and ckpt.latest_step() is not None:
        raise ValueError(f"{folder} already holds checkpoints (step {ckpt.latest_step()}): resume=True "
                         "continues them; or use another folder")

    log = None
    if folder is not None:
        log = RunLog(folder / "log.jsonl", resume_step=resumed_from)

    def emit(record):
        record = _jsonable(record)
        if log is not None:
            log.write(record)
        if callback is not None:
            callback(record)

    def meta_now(step, done):
        return {"step": step, "history": history, "best": best, "bad": bad, "finished": done,
                "fingerprint": fingerprint, "steps_per_epoch": plan.steps_per_epoch}

    def curve():
        if folder is not None:
            task = {"mc": "multiple-choice", "lm": "causal-LM"}[plan.primary]
            title = f"{name or type(model).__module__.rsplit('.', 1)[-1]}: {task} fine-tuning"
            plot_curves(log.records(), folder / "curve.png", title=title)

    emit({"event": "resume" if resumed_from is not None else "start", "step": start,
          "total_steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch,
          "train_items": plan.n_primary, "task": plan.primary, "lm_ratio": plan.lm_ratio,
          "settings": settings.model_dump()})

    if start == 0 and has_eval and settings.eval_before and not finished:
        record = {"event": "eval", "step": 0, "epoch": 0.0, **_evaluate(plan, graphdef, (params, *frozen), vocab),
                  "best": False}
        history.append(_jsonable(record))
        emit(record)

    from tqdm.auto import tqdm

    bar = tqdm(total=plan.total_steps, initial=start, unit="step", desc="fine-tuning",
               disable=(None if progress is None else not progress), leave=False)
    stopped_early = finished and settings.patience > 0 and bad >= settings.patience
    step, n_tokens, step_seconds, shapes = start, 0, 0.0, set()
    try:
        while step < plan.total_steps and not finished:
            t0 = time.perf_counter()
            arrays, norms, tokens = plan.batch(step)
            if mesh is None:
                batch = {k: jnp.asarray(v) for k, v in arrays.items()}
            else:  # (micro-batches, items, ...): the items of each micro-batch split over the devices
                batch = {k: jax.device_put(v, NamedSharding(mesh, P(None, "data"))) for k, v in arrays.items()}
            params, opt_state, stats = _step(train_graphdef, settings, plan.total_steps, params, opt_state, batch,
                                             jnp.asarray(norms), frozen, step)
            stats = {k: float(v) for k, v in stats.items()}
            step += 1
            seconds = time.perf_counter() - t0
            shape = tuple(v.shape for v in arrays.values())
            compiled = shape not in shapes  # the first step of each padded shape compiles it
            shapes.add(shape)
            if not compiled:
                n_tokens, step_seconds = n_tokens + tokens, step_seconds + seconds
            lr = float(schedule(settings, plan.total_steps)(step - 1))
            mc = stats.get("mc_sum", 0.0) / stats["mc_n"] if stats.get("mc_n") else None
            lmv = stats.get("lm_sum", 0.0) / stats["lm_n"] if stats.get("lm_n") else None
            loss = (1 - plan.lm_ratio) * (mc or 0.0) + plan.lm_ratio * (lmv or 0.0)
            record = {"event": "step", "step": step, "epoch": step / plan.steps_per_epoch, "loss": loss,
                      "mc_loss": mc, "lm_loss": lmv,
                      "accuracy": stats["mc_correct"] / stats["mc_n"] if stats.get("mc_n") else None,
                      "grad_norm": finite_or_none(stats["grad_norm"]), "lr": lr, "tokens": tokens,
                      "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9), "new_shape": compiled}
            emit(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss is {loss} at step {step}: lower lr, or clip gradients")

            epoch_end = step % plan.steps_per_epoch == 0
            improved_now = False
            if has_eval and (epoch_end or step == plan.total_steps
                             or (settings.eval_every and step % settings.eval_every == 0)):
                result = _evaluate(plan, graphdef, (params, *frozen), vocab)
                record = {"event": "eval", "step": step, "epoch": step / plan.steps_per_epoch, **result}
                improved = _better(record, best, settings.monitor)
                record["best"] = improved_now = improved
                if improved:
                    best, bad = _jsonable(record), 0
                    best_params = jax.tree.map(np.array, params)  # a host copy (np.array copies)
                    if ckpt is not None:  # then a periodic checkpoint of this step (see _checkpoint)
                        ckpt.save_best(step, params, {"record": best})
                else:
                    bad += 1
                history.append(_jsonable(record))
                emit(record)
                curve()
                if settings.patience and bad >= settings.patience:
                    stopped_early = finished = True
            done = finished or step == plan.total_steps
            if ckpt is not None and (done or improved_now or (checkpoint_every and step % checkpoint_every == 0)):
                ckpt.save(step, params, opt_state, meta_now(step, done))
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.wait()
        if not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(params)):
            nnx.update(model, _as_state(state, params))  # the model never holds donated (deleted) arrays

    if best_params is not None:
        params = best_params
    elif has_eval and best is None:
        warnings.warn("no evaluation was made: the last parameters are kept", stacklevel=2)
    nnx.update(model, _as_state(state, params))
    seconds = time.perf_counter() - t_start
    emit({"event": "end", "step": step, "stopped_early": stopped_early, "best_step": None if best is None
          else best["step"], "seconds": seconds})
    result = TrainResult(model, history, best, step, stopped_early, folder, seconds, resumed_from,
                         n_tokens / step_seconds if step_seconds else 0.0)
    if folder is not None:
        curve()
        summary = {"steps": step, "total_steps": plan.total_steps, "stopped_early": stopped_early,
                   "best": best, "history": history, "resumed_from": resumed_from, "seconds": seconds,
                   "settings": settings.model_dump()}
        atomic_write_text(folder / "result.json", json.dumps(_jsonable(summary), indent=2) + "\n")
        log.close()
        ckpt.close()
    return result


def _data_mesh(settings: TrainConfig):
    """A 1-D ("data",) mesh over this host's devices for ``settings.devices``, or None (one device)."""
    want = settings.devices
    if want == 1:
        if settings.fsdp:
            raise ValueError("train.fsdp shards parameters over devices: set train.devices ('auto' or a "
                             "count > 1)")
        return None
    local = jax.local_devices()
    n = len(local) if want == "auto" else int(want)
    if not 1 <= n <= len(local):
        raise ValueError(f"train.devices: {want!r} devices asked for, this host has {len(local)}")
    if settings.batch_size % n:
        raise ValueError(f"train.batch_size ({settings.batch_size}) must be a multiple of the {n} devices of "
                         "train.devices: each micro-batch is split evenly over them")
    return Mesh(np.asarray(local[:n]), ("data",))


def _param_shardings(tree, mesh, fsdp: bool):
    """Replicated leaves, or (FSDP) each leaf split along its largest axis the device count divides."""
    n = mesh.size

    def one(x):
        shape = np.shape(x)
        if fsdp and shape:
            axes = [a for a in np.argsort(shape)[::-1] if shape[a] % n == 0 and shape[a] >= n]
            if axes:
                spec = [None] * len(shape)
                spec[int(axes[0])] = "data"
                return NamedSharding(mesh, P(*spec))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree)


def _training_graphdef(graphdef, states, settings: TrainConfig, trainable):
    """The graph of the model as training steps run it: blocks rematerialised (``settings.remat``), every
    layer computing in ``settings.compute_dtype`` (its parameters stay as they are: float32 master
    weights), LoRA dropout on. Evaluations use the model's own graph."""
    model = nnx.merge(graphdef, *states)
    if settings.remat:
        if not hasattr(model, "remat"):
            raise ValueError(f"remat: {type(model).__module__}.{type(model).__name__} cannot rematerialise its blocks")
        model.remat = True
    dtype = jnp.dtype(settings.compute_dtype)
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        if dtype != jnp.float32 and hasattr(node, "param_dtype") and hasattr(node, "dtype"):
            node.dtype = dtype  # Flax layers: compute dtype, apart from param_dtype
        if isinstance(node, _lora.LoRALinear):
            node.deterministic = False
    return nnx.split(model, trainable, _lora.LoRAKey, ...)[0]


def _as_state(template, pure):
    """``template`` (an nnx.State of parameters) with the values of the pure dict ``pure``, on device."""
    nnx.replace_by_pure_dict(template, jax.tree.map(jnp.asarray, pure))
    return template
