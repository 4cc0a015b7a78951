"""The model's building blocks whose backward passes we write ourselves: linear layers and norms.

They compute what nnx.Linear, nnx.LayerNorm and nnx.RMSNorm compute, with the same parameter names
and initialisation keys (so seeds and checkpoints carry over); only how their gradients are formed
differs, for CPU speed:
- linear layers see tokens flattened to (B*T, width), so a weight gradient contracts one axis;
- a weight gradient never asks XLA:CPU for a dot with a transposed operand (`matmul`), a form it runs
  at about half its matmul speed;
- bias and norm-scale gradients are matrix-vector products (`token_sum`), not reductions.
Other backends' libraries take transposes and reductions natively, so there these are plain ops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.config import ModelConfig


def resolve_compute_dtype(name: str) -> jnp.dtype:
    """`auto` means bf16 on accelerators and fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)


def token_sum(x_NxC: jax.Array) -> jax.Array:
    """Sum over the token axis: a parameter gradient of a bias or a norm scale.

    On CPU it is a ones-vector matmul: XLA:CPU splits a reduction over B*T rows into a
    reduce-window and a reduce that ran well below memory speed inside the step, while YNNPACK's
    matrix-vector product reads the rows once (4% off the whole step of a d_model 256 model).
    Accumulated in float32 whatever the compute dtype; returned in x's dtype, as autodiff expects.
    """
    if jax.default_backend() != "cpu":
        return jnp.sum(x_NxC, axis=0, dtype=jnp.float32).astype(x_NxC.dtype)
    ones_1xN = jnp.ones((1, x_NxC.shape[0]), x_NxC.dtype)
    return jnp.matmul(ones_1xN, x_NxC, preferred_element_type=jnp.float32)[0].astype(x_NxC.dtype)


@jax.custom_vjp
def add_bias(y_NxO: jax.Array, b_O: jax.Array) -> jax.Array:
    """y + b, whose bias gradient is a `token_sum`."""
    return y_NxO + b_O


add_bias.defvjp(lambda y_NxO, b_O: (y_NxO + b_O, None), lambda _, dy_NxO: (dy_NxO, token_sum(dy_NxO)))


def _affine(xhat_NxC: jax.Array, scale_C: jax.Array, bias_C: jax.Array | None) -> jax.Array:
    y_NxC = xhat_NxC * scale_C
    return y_NxC if bias_C is None else y_NxC + bias_C


@jax.custom_vjp
def scale_shift(xhat_NxC: jax.Array, scale_C: jax.Array, bias_C: jax.Array | None) -> jax.Array:
    """A norm's affine output xhat * scale (+ bias), whose parameter gradients are `token_sum`s."""
    return _affine(xhat_NxC, scale_C, bias_C)


def _scale_shift_fwd(xhat_NxC, scale_C, bias_C):
    return _affine(xhat_NxC, scale_C, bias_C), (xhat_NxC, scale_C, bias_C is None)


def _scale_shift_bwd(residuals, dy_NxC):
    xhat_NxC, scale_C, no_bias = residuals
    dbias_C = None if no_bias else token_sum(dy_NxC)
    return dy_NxC * scale_C, token_sum(dy_NxC * xhat_NxC), dbias_C


scale_shift.defvjp(_scale_shift_fwd, _scale_shift_bwd)


class Norm(nnx.Module):
    """LayerNorm or RMSNorm over the last axis, in float32, as nnx.LayerNorm / nnx.RMSNorm compute
    them (same parameter names and init keys, so checkpoints and seeds carry over); written out so
    their parameter gradients go through `scale_shift`."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.d_model
        self.layernorm = cfg.norm == "layernorm"
        self.epsilon = 1e-5 if self.layernorm else 1e-6
        self.scale = nnx.Param(nnx.initializers.ones(rngs.params(), (d,), jnp.float32))
        has_bias = self.layernorm and cfg.use_bias
        self.bias = nnx.Param(nnx.initializers.zeros(rngs.params(), (d,), jnp.float32)) if has_bias else None

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        *lead, d = x_BxTxD.shape
        x_NxD = x_BxTxD.astype(jnp.float32).reshape(-1, d)
        mean_sq_Nx1 = jnp.mean(jnp.square(x_NxD), axis=-1, keepdims=True)
        if self.layernorm:
            mean_Nx1 = jnp.mean(x_NxD, axis=-1, keepdims=True)
            var_Nx1 = jnp.maximum(0.0, mean_sq_Nx1 - jnp.square(mean_Nx1))  # nnx's fast variance
            xhat_NxD = (x_NxD - mean_Nx1) * jax.lax.rsqrt(var_Nx1 + self.epsilon)
        else:
            xhat_NxD = x_NxD * jax.lax.rsqrt(mean_sq_Nx1 + self.epsilon)
        bias = None if self.bias is None else self.bias[...]
        return scale_shift(xhat_NxD, self.scale[...], bias).reshape(*lead, d)


def _transposed(x_MxN: jax.Array) -> jax.Array:
    """x.T as a real copy: the barrier stops XLA from folding the transpose back into a dot."""
    return jax.lax.optimization_barrier(x_MxN.T)


@jax.custom_vjp
def matmul(x_NxI: jax.Array, w_IxO: jax.Array) -> jax.Array:
    """x @ w for 2-D operands; only its backward differs from `@` (see `_matmul_bwd`)."""
    return x_NxI @ w_IxO


def _matmul_fwd(x_NxI: jax.Array, w_IxO: jax.Array):
    return x_NxI @ w_IxO, (x_NxI, w_IxO)


def _matmul_bwd(residuals, dy_NxO: jax.Array):
    """dw = x.T @ dy contracts the token axis of both operands, a form XLA:CPU runs at about half
    its matmul speed. On CPU the narrower of x and dy is copied transposed first (B*T x min(I, O)
    floats), so the dot itself is a plain one; other backends' libraries take transposes natively.
    """
    x_NxI, w_IxO = residuals
    dx_NxI = dy_NxO @ w_IxO.T
    if jax.default_backend() != "cpu":
        return dx_NxI, x_NxI.T @ dy_NxO
    if x_NxI.shape[1] <= dy_NxO.shape[1]:
        return dx_NxI, jax.lax.optimization_barrier(_transposed(x_NxI) @ dy_NxO)
    return dx_NxI, _transposed(jax.lax.optimization_barrier(_transposed(dy_NxO) @ x_NxI))


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Linear(nnx.Module):
    """x @ kernel (+ bias) in `dtype`, with nnx.Linear's parameter names and init keys.

    Tokens are flattened to (B*T, I) for the matmul: the weight gradient then contracts one axis,
    where on (B, T, I) activations XLA:CPU first copied them into (I, B*T) order, fusing the
    elementwise backward (GELU's, say) into a strided copy that took longer than the matmul.
    """

    def __init__(self, d_in: int, d_out: int, std: float, use_bias: bool, dtype, rngs: nnx.Rngs):
        self.kernel = nnx.Param(nnx.initializers.normal(stddev=std)(rngs.params(), (d_in, d_out), jnp.float32))
        self.bias = nnx.Param(nnx.initializers.zeros(rngs.params(), (d_out,), jnp.float32)) if use_bias else None
        self.dtype = dtype

    def __call__(self, x_BxTxI: jax.Array) -> jax.Array:
        *lead, width = x_BxTxI.shape
        y_NxO = matmul(x_BxTxI.reshape(-1, width).astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y_NxO = add_bias(y_NxO, self.bias[...].astype(self.dtype))
        return y_NxO.reshape(*lead, -1)
