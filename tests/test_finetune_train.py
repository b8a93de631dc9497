"""finetune.fit: a tiny model learns a toy task, and a run killed with SIGKILL resumes bit for bit.

The toy task (tests/_tiny_lm.py): two options, the right one a 'good' word,
the wrong one a 'bad' word; a 2-layer GPT-2 learns it in a few dozen steps.
The same run is trained three ways: uninterrupted (in this process); in a
subprocess, at the same time, killed with ``kill -9`` partway; then resumed
here from that run's latest Orbax checkpoint. The resumed run's parameters, optimizer state,
per-step losses and evaluations must equal the uninterrupted run's exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("optax")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from _tiny_lm import saved_tiny, toy_choices  # noqa: E402

from jaxalign import finetune, lm  # noqa: E402
from jaxalign.finetune._checkpoint import Checkpoints  # noqa: E402
from jaxalign.finetune._log import read_log  # noqa: E402

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SETTINGS = dict(lr=3e-3, epochs=3, batch_size=2, accumulation=2, schedule="cosine", warmup_steps=2,
                patience=0, weight_decay=0.01, seed=7)
N_TRAIN, N_EVAL = 24, 8  # 6 steps per epoch, 18 steps

# The run to be killed. It pauses after logging step 7 until the file GO exists (so the parent can start it
# first and train its own uninterrupted run meanwhile), then goes on at 0.1 s per step until the kill.
CHILD = """
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
from _tiny_lm import toy_choices
from jaxalign import finetune, lm
folder, out, go, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
model, tok = lm.load(folder)
def pace(record):
    if record["event"] != "step":
        return
    while record["step"] >= 7 and not os.path.exists(go):
        time.sleep(0.01)
    time.sleep(0.1)
finetune.fit(model, tok, toy_choices(%d, 0), toy_choices(%d, 1), settings=finetune.TrainConfig(**settings),
             out=out, checkpoint_every=3, progress=False, callback=pace)
""" % (N_TRAIN, N_EVAL)


def _load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.load(folder)


def _fit(folder, out, **kw):
    model, tok = _load(folder)
    return finetune.fit(model, tok, toy_choices(N_TRAIN, 0), toy_choices(N_EVAL, 1),
                        settings=finetune.TrainConfig(**SETTINGS), out=out, checkpoint_every=3, progress=False, **kw)


@pytest.fixture(scope="module")
def tiny():
    return saved_tiny("gpt2")[0]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """The uninterrupted run, trained here while a subprocess trains the same run until it is killed with
    SIGKILL somewhere in steps 7-10 (periodic checkpoints every 3 steps, one may be in flight): (reference
    result, its folder, the killed run's folder)."""
    killed = tmp_path_factory.mktemp("killed")
    out, go, child_log = killed / "run", killed / "go", killed / "child.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    with open(child_log, "w") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny), str(out), str(go), json.dumps(SETTINGS)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ref_out = tmp_path_factory.mktemp("uninterrupted")
            reference = _fit(tiny, ref_out)
            deadline = time.monotonic() + 240
            while True:  # the child waits after logging step 7
                steps = [r["step"] for r in read_log(out / "log.jsonl") if r.get("event") == "step"]
                if steps and steps[-1] >= 7:
                    break
                assert child.poll() is None, child_log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the training subprocess did not reach step 7"
                time.sleep(0.02)
            go.touch()
            time.sleep(0.15)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child_log.read_text()[-3000:]
    return reference, ref_out, out


@pytest.fixture(scope="module")
def uninterrupted(runs):
    return runs[0], runs[1]


def test_loss_falls_and_accuracy_rises(uninterrupted, tiny):
    result, out = uninterrupted
    history = result.history
    assert history[0]["step"] == 0 and not history[0]["best"]  # the base model, logged
    assert [h["step"] for h in history] == [0, 6, 12, 18]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["accuracy"] >= history[0]["accuracy"] + 0.25 and history[-1]["accuracy"] >= 0.75
    # the kept model is the best evaluation's: scoring it again gives that evaluation's numbers
    scores = finetune.score_choices(result.model, _load(tiny)[1], toy_choices(N_EVAL, 1))
    assert (scores.argmax(1) == toy_choices(N_EVAL, 1).labels).mean() == pytest.approx(result.best["accuracy"])
    # outputs: a JSON-lines log, the curve, the summary, checkpoints
    records = read_log(out / "log.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 19))
    assert all(r["tokens_per_s"] > 0 and r["lr"] >= 0 for r in steps) and steps[0]["lr"] == 0.0  # warmup from 0
    assert records[0]["event"] == "start" and records[-1]["event"] == "end"
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "result.json").read_text())
    assert summary["steps"] == 18 and summary["best"]["step"] == result.best["step"]
    assert Checkpoints(out).latest_step() == 18


def test_resume_after_kill_equals_an_uninterrupted_run(tiny, runs):
    reference, ref_out, out = runs
    killed_log = read_log(out / "log.jsonl")
    assert not any(r["event"] == "end" for r in killed_log) and max(r["step"] for r in killed_log) < 18

    resumed = _fit(tiny, out)
    assert resumed.resumed_from is not None and 3 <= resumed.resumed_from < 18  # checkpoints at 3, 6 (+ best), ...
    # same trajectory: every step's loss, every evaluation, the kept model, the final state
    steps = lambda folder: [(r["step"], r["loss"], r["grad_norm"]) for r in read_log(folder / "log.jsonl")
                            if r["event"] == "step"]
    assert steps(out) == steps(ref_out)
    assert resumed.history == reference.history
    for a, b in zip(jax.tree.leaves(jax.tree.map(np.asarray, _params(resumed.model))),
                    jax.tree.leaves(jax.tree.map(np.asarray, _params(reference.model)))):
        assert np.array_equal(a, b)
    import orbax.checkpoint as ocp

    a, b = (Checkpoints(folder).latest.restore(18, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
            for folder in (out, ref_out))  # params and optimizer state of the last step, bit for bit
    assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(b)) > 0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def _params(model):
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_text_alone_loss_and_perplexity_fall(tiny):
    from _tiny_lm import CORPUS

    text = "\n".join(CORPUS * 2)
    model, tok = _load(tiny)
    settings = finetune.TrainConfig(lr=3e-3, epochs=2, batch_size=4, patience=0, seed=1, eval_before=True)
    result = finetune.fit(model, tok, text=text, eval_text=CORPUS[0], seq_len=32, settings=settings, progress=False)
    first, last = result.history[0], result.history[-1]
    assert first["perplexity"] == pytest.approx(np.exp(first["lm_loss"])) and "accuracy" not in first
    assert last["lm_loss"] < first["lm_loss"] - 0.5


def test_mixed_objective_equals_its_two_losses_weighted(tiny):
    """A step mixing text into multiple choice (lm_ratio 0.25): the objective the step differentiates equals
    0.75 * the items' mean option cross-entropy + 0.25 * the windows' mean token NLL, each computed
    directly with the public losses; the windows follow the seeded text order, every window once per pass."""
    from _tiny_lm import CORPUS
    from flax import nnx

    from jaxalign.finetune._train import _Plan, _terms

    model, tok = _load(tiny)
    mc, text = toy_choices(N_EVAL, 0), finetune.encode_text(tok, "\n".join(CORPUS * 2), 32)
    settings = finetune.TrainConfig(batch_size=4, accumulation=2, seed=3)  # 8 items: the shapes of other tests
    plan = _Plan(finetune.encode_choices(tok, mc), None, text, None, 0.25, settings, 64)
    arrays, norms, _ = plan.batch(0)
    seen = np.concatenate([plan.text_windows(s).ravel() for s in range(-(-len(text) // plan.per_step))])
    assert sorted(seen[: len(text)]) == list(range(len(text)))  # one pass visits every window once
    graphdef, state = nnx.split(model, nnx.Param)
    objective = jax.jit(lambda p, mb: _terms(graphdef, p, mb, jnp.asarray(norms))[0])
    params = nnx.to_pure_dict(state)
    got = sum(float(objective(params, {k: jnp.asarray(v[a]) for k, v in arrays.items()})) for a in range(2))

    items, windows = plan.step_items(0).ravel(), plan.text_windows(0).ravel()
    sub = mc.subset(items)
    scores = finetune.score_choices(model, tok, sub)
    mc_loss = float(finetune.multiple_choice_loss(jnp.asarray(scores), jnp.asarray(sub.labels)))
    logits = nnx.jit(lambda m, x: m(x).logits)(model, jnp.asarray(text.ids[windows]))
    lm_loss = float(finetune.causal_lm_loss(logits, jnp.asarray(text.ids[windows]), jnp.asarray(text.mask[windows])))
    assert got == pytest.approx(float(finetune.mixed_loss(mc_loss, lm_loss, 0.25)), rel=1e-5)


def test_bad_input_and_another_runs_checkpoints_are_named(tiny, uninterrupted, tmp_path):
    from flax import nnx

    from jaxalign import io
    from jaxalign.lm import gpt2

    _, out = uninterrupted
    model, tok = _load(tiny)
    other = dict(SETTINGS, lr=1e-3)
    with pytest.raises(ValueError, match=r"holds checkpoints of another run \(step 18\), which differs in: "
                                         r"settings \(lr: 0.003 there, 0.001 here\)"):
        finetune.fit(model, tok, toy_choices(N_TRAIN, 0), toy_choices(N_EVAL, 1),
                     settings=finetune.TrainConfig(**other), out=out)
    wider = gpt2.Model(gpt2.Config(vocab_size=320, n_positions=64, n_embd=48, n_layer=2, n_head=2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"another run .* model \(n_embd: 32 there, 48 here\); parameters \(h.attn.c_attn.bias: \[2, 96\] there, \[2, 144\] here"):
        finetune.fit(wider, tok, toy_choices(N_TRAIN, 0), toy_choices(N_EVAL, 1),
                     settings=finetune.TrainConfig(**SETTINGS), out=out)
    with pytest.raises(ValueError, match=r"already holds checkpoints \(step 18\)"):
        finetune.fit(model, tok, toy_choices(N_TRAIN, 0), settings=finetune.TrainConfig(**SETTINGS), out=out,
                     resume=False)
    unlabelled = io.MultipleChoice(prompts=["a b"], choices=[("x", "y")])
    with pytest.raises(ValueError, match="training multiple-choice set has no labels"):
        finetune.fit(model, tok, unlabelled)
    with pytest.raises(ValueError, match="lm_ratio=0.5 needs text"):
        finetune.fit(model, tok, toy_choices(4, 0), lm_ratio=0.5)
    with pytest.raises(ValueError, match="needs 0 < lm_ratio < 1"):
        finetune.fit(model, tok, toy_choices(4, 0), text="the cat sat on the mat")
    with pytest.raises(ValueError, match="has no items"):
        finetune.fit(model, tok, io.MultipleChoice(prompts=[], choices=[], labels=np.zeros(0, int)))
    with pytest.raises(ValueError, match="no text to train on"):
        finetune.fit(model, tok, text="   ")
    long = io.MultipleChoice(prompts=["q"], choices=[("a", " ".join(["the cat sat on the mat"] * 30))], labels=[0])
    with pytest.raises(ValueError, match="longer than the model's context of 64 tokens"):
        finetune.fit(model, tok, long)


def test_curve_cuts_single_step_spikes_and_says_so():
    """Single-item steps spike to 100x the running mean: the loss axis stops at
    1.3x the largest running-mean or validation loss and the legend counts the
    steps above it; without spikes the axis shows every step."""
    from jaxalign.finetune._log import curve_figure

    rng = np.random.default_rng(0)
    loss = rng.exponential(1.0, 400)
    loss[::50] = 150.0  # 8 spikes
    records = [{"event": "step", "step": i + 1, "loss": float(v)} for i, v in enumerate(loss)]
    records += [{"event": "eval", "step": s, "loss": 1.2 - s / 1000, "accuracy": 0.6, "chance": 0.5,
                 "best": True} for s in (0, 200, 400)]
    fig = curve_figure(records, "tiny")
    ax = fig.axes[0]
    top = ax.get_ylim()[1]
    assert 1.0 < top < 20.0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"train (step; {int((loss > top).sum())} above the axis)" in labels and (loss > top).sum() >= 8
    calm = [dict(r, loss=float(3 + 0.3 * rng.standard_normal())) if r["event"] == "step" else r
            for r in records]
    ax = curve_figure(calm).axes[0]
    assert ax.get_ylim()[1] >= max(r["loss"] for r in calm if r["event"] == "step")
    assert not any("above the axis" in t.get_text() for t in ax.get_legend().get_texts())
