"""Pieces every jaxdrop op shares: input checks, traced rates, and the masked rescale."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import dropspec
from jaxdrop import random

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def as_input(x, kind: str = "spatial") -> jax.Array:
    """``x`` as an array of a floating dtype and a rank of ``dropspec.RANK_RULES[kind]``."""
    x = jnp.asarray(x)
    dropspec.check_float_dtype("x", x.dtype)
    dropspec.check_rank("x", x.shape, kind)
    return x


def require_key(key, presampled: str):
    """Raises the missing-key error of a random op whose pre-sampled argument is ``presampled``."""
    if key is None:
        raise ValueError(
            "`key` is required when `deterministic` is False: pass key=jax.random.key(0) (in a "
            "Flax module, an rng stream named by `rng_collection`), or pass "
            f"`{presampled}` to give the draw yourself."
        )


def check_source(key, presampled_name: str, presampled) -> None:
    if key is not None and presampled is not None:
        dropspec.check_one_source("key", presampled_name)


def traced_rate(rate) -> jax.Array:
    """An array rate as float32, clipped into [0, 1]; NaN counts as 0 (drop nothing)."""
    rate = jnp.asarray(rate, jnp.float32)
    return jnp.where(rate > 0, jnp.minimum(rate, 1.0), 0.0)


def inverse_keep(keep_prob) -> jax.Array | float:
    """``1 / keep_prob``, and 0 where ``keep_prob == 0`` so that no 0/0 reaches a gradient."""
    if isinstance(keep_prob, float):
        return 1.0 / keep_prob if keep_prob > 0 else 0.0
    positive = keep_prob > 0
    return jnp.where(positive, 1.0 / jnp.where(positive, keep_prob, 1.0), 0.0)


def compute_dtype(dtype):
    """Float32 for half and single precision inputs; float64 stays float64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def widen(values) -> jax.Array:
    """``values`` in the dtype the math runs in: float32, or float64 for float64."""
    return values.astype(compute_dtype(values.dtype))


def narrow(result, wide_input, dtype) -> jax.Array:
    """Casts a float32 ``result`` back to ``dtype``; float16 saturates at +-65504.

    A finite input may be scaled past float16's range (a large normalisation when almost
    everything is dropped); it comes back as the largest finite value, not inf. Non-finite
    inputs stay as they are.
    """
    if dtype == jnp.float16:
        clipped = jnp.clip(result, -_FLOAT16_MAX, _FLOAT16_MAX)
        result = jnp.where(jnp.isfinite(wide_input), clipped, result)
    return result.astype(dtype)


def rescale(values, keep, scale, saturate: bool):
    """``where(keep, values * scale, 0)`` in float32, cast back to ``values``' dtype."""
    wide = widen(values)
    out = jnp.where(keep, wide * scale, 0)
    if not saturate:
        return out.astype(values.dtype)
    return narrow(out, wide, values.dtype)


@jax.custom_jvp
def masked_scale(x, keep, scale):
    """``where(keep, x * scale, 0)`` computed in float32 and returned in ``x``'s dtype.

    The derivative is ``where(keep, dx * scale, 0)``: reverse mode keeps only the boolean
    ``keep`` and the (broadcastable, small) ``scale`` for the backward pass, never a float copy
    of the mask. No gradient flows to ``scale`` (nor to the rate behind it), and a float16
    output clipped at its largest finite value passes its gradient straight through.

    Args:
      x: the input, any float dtype.
      keep: bool, broadcastable to ``x``.
      scale: float32, broadcastable to ``x``.
    """
    return rescale(x, keep, scale, saturate=True)


@masked_scale.defjvp
def _masked_scale_jvp(primals, tangents):
    x, keep, scale = primals
    return masked_scale(x, keep, scale), rescale(tangents[0], keep, scale, saturate=False)


def materialize(mask) -> jax.Array:
    """``mask`` (bool), computed once into a buffer of its own.

    XLA fuses cheap elementwise producers into each consumer and recomputes them on every read:
    a broadcast select over 64 channels would redo a seed map's window ORs 64 times per unit,
    and each OR of shifted slices would redo the hash of the draw before it (on CPU, shared
    DropBlock at 32x56x56x64 took 1.7x a copy that way). ``optimization_barrier`` does not stop
    it on XLA:CPU; a reduction is never fused into its consumers, so an OR over a new axis of
    two (the mask and False) is the barrier, at the cost of one pass over the mask.
    """
    return jnp.any(jnp.stack([mask, jnp.zeros_like(mask)], axis=-1), axis=-1)


_WORDS_PER_SUM = 64  # byte lanes of a uint32 sum of 64 words hold at most 64: no carry.
_BYTES_PER_SUM = 4 * _WORDS_PER_SUM


def count_true(mask) -> jax.Array:
    """The number of True values per example (axis 0), as int32 of shape ``(N,)``.

    Exact in any summation order. Four mask bytes are read as one uint32 whose byte lanes
    are summed in parallel (lanes never carry within a group of 64 words), which XLA runs
    about 15x faster on CPU than a bool-to-int32 reduction. Counting per example keeps a
    batch-sharded mask sharded.
    """
    rows = mask.shape[0]
    flat = mask.reshape(rows, -1)
    length = flat.shape[1]
    packed = length // _BYTES_PER_SUM * _BYTES_PER_SUM
    total = jnp.sum(flat[:, packed:], axis=1, dtype=jnp.int32)
    if packed:
        body = flat[:, :packed].astype(jnp.uint8).reshape(rows, -1, _WORDS_PER_SUM, 4)
        words = lax.bitcast_convert_type(body, jnp.uint32)
        lanes = jnp.sum(words, axis=-1, dtype=jnp.uint32)
        byte = np.uint32(0xFF)
        per_group = (
            (lanes & byte)
            + ((lanes >> np.uint32(8)) & byte)
            + ((lanes >> np.uint32(16)) & byte)
            + (lanes >> np.uint32(24))
        )
        total = total + jnp.sum(per_group, axis=1, dtype=jnp.int32)
    return total


def expand_to(mask, ndim: int, axes) -> jax.Array:
    """Reshapes a per-example or per-channel array for broadcasting against rank ``ndim``.

    ``axes`` are the positions of ``mask``'s dims in the full rank, e.g. ``(0, ndim - 1)`` for an
    ``(N, C)`` mask against channels-last input.
    """
    shape = [1] * ndim
    for axis, size in zip(axes, mask.shape):
        shape[axis] = size
    return mask.reshape(shape)


def keep_probability(rate, rate_value):
    """``1 - rate``: a Python float for a Python rate, a clipped float32 array otherwise."""
    if rate_value is not None:
        return 1.0 - rate_value
    return 1.0 - traced_rate(rate)


def check_keep(keep, shape, hint: str) -> jax.Array:
    keep = jnp.asarray(keep)
    dropspec.check_bool_dtype("keep", keep.dtype)
    dropspec.check_shape("keep", keep.shape, shape, hint)
    return keep


@functools.partial(jax.jit, static_argnames=("keep_shape", "keep_axes"))
def drop_units(x, key, keep, limits, scale, *, keep_shape, keep_axes):
    """Keeps whole slices of ``x``: a Bernoulli keep array over ``keep_axes`` (drawn from
    ``key`` below ``limits`` unless ``keep`` is given), broadcast over the other axes."""
    if keep is None:
        keep = random.below_threshold(key, limits, keep_shape)
    return masked_scale(x, expand_to(keep, x.ndim, keep_axes), scale)
