"""jaxalign's kernels run at full float32 matmul precision unless the user chose one.

On CPU the products are float32 whatever the setting, so what is tested here
is the rule itself: the precision in force while a kernel is traced, and the
precision written into its compiled dot products (GPUs would otherwise use
TensorFloat-32 for float32 products; see jaxalign/_precision.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign import _precision
from jaxalign.features import _extract, _surprisal
from jaxalign.lm import _load
from jaxalign.ridge import _scores, _solve, _spectral
from jaxalign.stats import _ceiling, _permutation


def _traced_precisions():
    seen = []

    @_precision.jit
    def f(a, b):
        seen.append(jax.config.jax_default_matmul_precision)
        return a @ b

    return f, seen


def test_highest_unless_the_user_chose():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)
    f, seen = _traced_precisions()
    np.testing.assert_allclose(np.asarray(f(a, a)), np.asarray(a) @ np.asarray(a), rtol=1e-5, atol=1e-5)
    assert seen == ["highest"]
    f(a, a)
    assert seen == ["highest"]  # cached: traced once
    with jax.default_matmul_precision("tensorfloat32"):
        f(a, a)
    assert seen == ["highest", "tensorfloat32"]  # the user's choice, compiled apart
    with jax.default_matmul_precision("bfloat16"):
        f(a, a)
    assert seen[-1] == "bfloat16"
    f(a, a)  # back outside the context: the highest-precision version again, no retrace
    assert len(seen) == 3


def test_static_arguments_pass_through():
    seen = []

    @_precision.jit(static_argnames=("k",))
    def g(x, k):
        seen.append(k)
        return x * k

    assert float(g(jnp.float32(2.0), k=3)) == 6.0
    assert float(g(jnp.float32(5.0), k=3)) == 15.0 and seen == [3]
    assert g.__name__ == "g" and g._cache_size() == 1


def test_compiled_dots_carry_highest_precision():
    a = jnp.ones((4, 4), jnp.float32) * jnp.arange(4.0)
    f, _ = _traced_precisions()
    with jax.default_matmul_precision(_precision.DEFAULT_PRECISION):
        text = f.jitted.lower(a, a).as_text()
    assert "HIGHEST" in text
    assert "HIGHEST" not in jax.jit(lambda x, y: x @ y).lower(a, a).as_text()


@pytest.mark.parametrize("kernel", [
    _solve.cv_batch, _solve.cv_batch_layers, _solve.fold_plan, _solve.fold_plan_layers,
    _spectral._basis_jit, _spectral._basis_jit_layers, _scores._moments,
    _extract._pooled, _surprisal._next_token_logprobs, _load._hidden_states, _ceiling._mixed_pearson,
])
def test_library_kernels_use_the_rule(kernel):
    assert hasattr(kernel, "jitted"), f"{kernel} is a plain jax.jit: GPUs would run it in TF32"


def test_no_plain_jax_jit_left_in_the_package():
    import pathlib

    root = pathlib.Path(_precision.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "_precision.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if ("jax.jit(" in code or "partial(jax.jit" in code or code.strip() == "@jax.jit") and "``" not in code:
                offenders.append(f"{path.relative_to(root)}:{i}")
    assert not offenders, offenders
    assert _permutation  # imported: its kernels are module-level wrappers too
