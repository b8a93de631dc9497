"""Full float32 matrix products on every backend.

On NVIDIA GPUs from Ampere on, XLA runs float32 matrix products at JAX's
``"default"`` precision as TensorFloat-32: inputs rounded to 10 mantissa bits
(relative error ~1e-3 instead of ~1e-7). That is fast, but it is not the
float32 arithmetic that jaxalign's results are tested against (float64
numpy/scipy, himalaya, PyTorch, which keeps TF32 off for matrix products by
default), and it moves ridge scores, chosen penalties and hidden states by far
more than their stated tolerances.

jaxalign therefore compiles its numerical kernels at ``"highest"`` precision
(true float32 products; on CPU this is what XLA does anyway, at the same
speed), unless the user has chosen a precision: inside
``with jax.default_matmul_precision("tensorfloat32"):`` (or with the
``jax_default_matmul_precision`` config set), that choice is respected, so
TF32 speed is one line away for those who want it. bfloat16 models are
unaffected (their products are bfloat16 either way).

``jit`` below is a drop-in replacement for ``jax.jit`` (decorator or call,
with the same keyword arguments) that applies this rule each time the
function is called: the precision is part of JAX's trace context, so each
setting gets its own compiled version and none leaks into another.
"""

from __future__ import annotations

import functools

import jax

#: precision used for jaxalign's kernels when the user has not chosen one
DEFAULT_PRECISION = "highest"


def user_precision():
    """The matmul precision the user set (config or context), or None."""
    return jax.config.jax_default_matmul_precision


def jit(fun=None, /, **jit_kwargs):
    """``jax.jit`` that runs ``fun`` at full float32 matmul precision unless the user chose one."""
    if fun is None:
        return functools.partial(jit, **jit_kwargs)
    jitted = jax.jit(fun, **jit_kwargs)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        if user_precision() is None:
            with jax.default_matmul_precision(DEFAULT_PRECISION):
                return jitted(*args, **kwargs)
        return jitted(*args, **kwargs)

    call.jitted = jitted  # the underlying jax.jit object (lower, _cache_size, ...)
    call._cache_size = jitted._cache_size
    return call
