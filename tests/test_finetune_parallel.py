"""finetune.fit over several devices: data parallel, and FSDP-style sharded parameters.

In a subprocess with 8 forced CPU devices, the toy task of tests/_tiny_lm.py
is trained three ways from the same start: on one device, data parallel over
4 devices (each micro-batch of 4 items split over them) and with FSDP over 4
devices (every parameter and its Adam state split as well). The per-step
losses and the evaluation must be the same to float32 rounding, and the
final parameters too, but for weights whose gradient is at rounding level
(Adam moves those by ~lr whatever their size).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optax")
pytest.importorskip("torch")
pytest.importorskip("tokenizers")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

CHILD = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import jax, numpy as np
from _tiny_lm import saved_tiny, toy_choices
from jaxalign import finetune, lm
import jaxalign.finetune._train as T
folder = saved_tiny("gpt2")[0]
out, seen, step = {}, {}, T._step


def spy(graphdef, settings, total, params, *args):  # the trained parameters' layout at the first step
    leaves = jax.tree.leaves(params)
    seen.setdefault(name, {"devices": len(leaves[0].sharding.device_set), "n": len(leaves),
                           "split": sum(not x.sharding.is_fully_replicated for x in leaves)})
    return step(graphdef, settings, total, params, *args)


T._step = spy
for name, extra in (("one", {}), ("dp", {"devices": 4}), ("fsdp", {"devices": 4, "fsdp": True})):
    model, tok = lm.load(folder)
    losses = []
    settings = finetune.TrainConfig(lr=3e-3, epochs=1, batch_size=4, accumulation=2, seed=3, patience=0,
                                    eval_before=False, **extra)
    res = finetune.fit(model, tok, toy_choices(24, 0), toy_choices(8, 1), settings=settings, progress=False,
                       callback=lambda r: losses.append(r["loss"]) if r["event"] == "step" else None)
    params = jax.tree.leaves(jax.tree.map(np.asarray, __import__("flax").nnx.state(model, __import__("flax").nnx.Param)))
    out[name] = {"losses": losses, "params": [p.ravel()[:64].tolist() for p in params],
                 "eval": res.history[-1]["loss"], **seen[name]}
errors = {}
for bad in ({"devices": 3}, {"devices": 64}, {"fsdp": True}):
    try:
        finetune.fit(*lm.load(folder), toy_choices(8, 0), settings=finetune.TrainConfig(batch_size=4, **bad),
                     progress=False)
    except ValueError as e:
        errors[json.dumps(bad)] = str(e)
out["errors"] = errors
print(json.dumps(out))
"""


def test_data_parallel_and_fsdp_follow_the_one_device_trajectory():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600,
                          cwd=TESTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np

    one = out["one"]
    assert len(one["losses"]) == 3 and len(set(one["losses"])) == 3  # three distinct steps
    for name in ("dp", "fsdp"):
        np.testing.assert_allclose(out[name]["losses"], one["losses"], rtol=2e-5, atol=1e-6)
        # Adam's first steps move each weight by about lr * sign(gradient): a gradient at rounding level can
        # take the other sign under another summation order, so single weights may differ by up to 2 lr per
        # step; the bulk must agree to float32 rounding
        diff = np.abs(np.concatenate(out[name]["params"]) - np.concatenate(one["params"]))
        assert diff.max() <= 2 * 3e-3 * 3 and np.median(diff) < 1e-6, (diff.max(), np.median(diff))
        assert abs(out[name]["eval"] - one["eval"]) < 1e-4
    assert out["one"]["devices"] == 1 and out["dp"]["devices"] == 4 and out["dp"]["split"] == 0
    assert out["fsdp"]["split"] >= out["fsdp"]["n"] // 2  # most weights split over the 4 devices
    errors = out["errors"]
    assert "multiple of the 3 devices" in errors['{"devices": 3}']
    assert "64 devices asked for, this host has 8" in errors['{"devices": 64}']
    assert "set train.devices" in errors['{"fsdp": true}']
