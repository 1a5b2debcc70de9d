"""The random draws behind every jaxdrop mask.

All draws start from :func:`bits`, which returns exactly ``jax.random.bits(key, shape,
jnp.uint32)``. For threefry keys (JAX's default) it evaluates the threefry2x32 hash as one
fused elementwise computation: on CPU, JAX lowers the hash as a rolled loop that writes every
round to memory, about 10x slower on large masks; on accelerators it is the same unrolled hash
JAX uses. The counters are ``iota`` over the logical shape, so a batch-sharded draw gives the
same bits on one device or many (JAX's partitionable threefry layout). Other key
implementations (``rbg``, ``unsafe_rbg``) go through ``jax.random.bits`` unchanged.

On top of the bits, each draw is integer or bit arithmetic, so that ``torchdrop.random`` can
reproduce it exactly:

* :func:`bernoulli`: ``u < floor(p * 2**32)``, always True for ``p >= 1``. P(True) is within
  ``2**-32`` of ``p``: no float rounding, no bf16 bias.
* :func:`uniform`: ``jax.random.uniform``'s construction, 23 random mantissa bits in [0, 1).
* :func:`uniform_index`: ``floor(u * n / 2**32)`` for ``n < 2**31``, exact integer math.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import dropspec

__all__ = ["below_threshold", "bernoulli", "bits", "threshold", "uniform", "uniform_index"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = np.uint32(0x1BD11BDA)
_TWO_POW_32 = 4294967296.0


def _rotate_left(value, distance: int):
    return (value << np.uint32(distance)) | (value >> np.uint32(32 - distance))


def _threefry2x32(key1, key2, x0, x1):
    """The Threefry-2x32 block cipher, 20 rounds (Salmon et al., SC 2011), unrolled."""
    schedule = (key1, key2, key1 ^ key2 ^ _KS_PARITY)
    x0 = x0 + schedule[0]
    x1 = x1 + schedule[1]
    for block in range(5):
        for distance in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _threefry_key_data(key):
    """The uint32 pair of a threefry key, or None when the key uses another implementation."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"`key` must be a single PRNG key, got a key array of shape {key.shape}."
            )
        if str(jax.random.key_impl(key)) != "threefry2x32":
            return None
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32 or key.ndim != 1:
        raise TypeError(
            "`key` must be a PRNG key from jax.random.key(seed) or a raw uint32 key from "
            f"jax.random.PRNGKey(seed), got an array of dtype {key.dtype} and shape {key.shape}."
        )
    if key.shape != (2,) or jax.config.jax_default_prng_impl != "threefry2x32":
        return None
    return key


def _fused_key_data(key, shape):
    """The key's uint32 pair when the fused hash reproduces JAX's draw of ``shape`` (a threefry
    key, the partitionable layout, fewer than 2**32 values); None when JAX must draw."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    data = _threefry_key_data(key)
    if data is None or math.prod(shape) >= 2**32 or not jax.config.jax_threefry_partitionable:
        return None
    return data


def _flat_index(shape):
    """``iota`` of the flattened shape, built per axis so that sharding propagates through it."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
        stride *= shape[axis]
    return index


def _padded_flat_index(shape, padding):
    """Counters of the draw of ``shape`` laid into a border of ``padding`` widths (``(before,
    after)`` per axis): the flat index in ``shape`` of every position of the padded grid, and
    whether the position lies inside ``shape``. Built per axis, as :func:`_flat_index`."""
    padded = tuple(d + lo + hi for d, (lo, hi) in zip(shape, padding))
    index = jnp.zeros(padded, jnp.uint32)
    inside = jnp.ones(padded, bool)
    stride = 1
    for axis in reversed(range(len(shape))):
        position = lax.broadcasted_iota(jnp.int32, padded, axis) - np.int32(padding[axis][0])
        inside = inside & (position >= 0) & (position < shape[axis])
        clipped = jnp.clip(position, 0, shape[axis] - 1).astype(jnp.uint32)
        index = index + clipped * np.uint32(stride)
        stride *= shape[axis]
    return index, inside


def _padded_below_threshold(key, limits, shape, padding) -> jax.Array:
    """``jnp.pad(below_threshold(key, limits, shape), padding)``, computed in one pass.

    The same values (the hash of the same counters) with False in the border. XLA fuses a pad
    into the elementwise computation before it and then evaluates the hash element by element
    behind a bounds check, unvectorised: on CPU, drawing DropBlock's padded seed map that way
    took 1.3 ms for 100K seeds against 0.2 ms for the draw alone. Here the border is a select
    on an iota, which vectorises.
    """
    shape = tuple(int(d) for d in shape)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    data = _fused_key_data(key, shape)
    if data is None:
        return jnp.pad(below_threshold(key, limits, shape), padding)
    index, inside = _padded_flat_index(shape, padding)
    high, low = _threefry2x32(data[0], data[1], jnp.zeros(index.shape, jnp.uint32), index)
    limit, always = limits
    return inside & (((high ^ low) < limit) | always)


def bits(key, shape) -> jax.Array:
    """Uniform uint32 random bits, identical to ``jax.random.bits(key, shape, jnp.uint32)``.

    Args:
      key: a PRNG key (``jax.random.key``) or raw uint32 key (``jax.random.PRNGKey``).
      shape: the output shape.

    Returns:
      A uint32 array of ``shape``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdrop import random
      >>> key = jax.random.key(0)
      >>> bool((random.bits(key, (2, 3)) == jax.random.bits(key, (2, 3), jnp.uint32)).all())
      True
    """
    shape = tuple(int(d) for d in shape)
    data = _fused_key_data(key, shape)
    if data is None:
        return jax.random.bits(jnp.asarray(key), shape, jnp.uint32)
    high, low = _threefry2x32(data[0], data[1], jnp.zeros(shape, jnp.uint32), _flat_index(shape))
    return high ^ low


def threshold(p) -> tuple[jax.Array, jax.Array]:
    """The ``(threshold, always)`` pair with which ``u < threshold or always`` is Bernoulli(p).

    A Python float ``p`` is converted exactly, in float64 (``dropspec.keep_threshold``); an
    array ``p`` is converted in float32, in-graph, and clipped into [0, 1].
    """
    if isinstance(p, (int, float)):
        count = dropspec.keep_threshold(float(p))
        return jnp.uint32(count % 2**32), jnp.bool_(count == 2**32)
    p = jnp.clip(jnp.asarray(p, jnp.float32), 0.0, 1.0)
    always = p >= 1.0
    scaled = jnp.floor(jnp.where(always, 0.0, p) * np.float32(_TWO_POW_32))
    return lax.convert_element_type(scaled, jnp.uint32), always


def bernoulli(key, p, shape) -> jax.Array:
    """Booleans that are True with probability ``p`` (within ``2**-32``).

    Args:
      key: a PRNG key.
      p: a Python float or a scalar array (which may be traced) in [0, 1].
      shape: the output shape.

    Returns:
      A bool array of ``shape``: ``bits(key, shape) < floor(p * 2**32)``, or all True when
      ``p >= 1``.

    Example:
      >>> import jax
      >>> from jaxdrop import random
      >>> draws = random.bernoulli(jax.random.key(1), 0.25, (100_000,))
      >>> abs(float(draws.mean()) - 0.25) < 0.01
      True
    """
    return below_threshold(key, threshold(p), shape)


def below_threshold(key, limits: tuple[jax.Array, jax.Array], shape) -> jax.Array:
    """:func:`bernoulli` from a ``(threshold, always)`` pair made earlier by :func:`threshold`.

    Ops compute the pair outside ``jit``, so that a Python-float probability is converted
    exactly in float64 and passed in as data (no recompilation when it changes).
    """
    limit, always = limits
    return (bits(key, shape) < limit) | always


def uniform(key, shape) -> jax.Array:
    """Float32 values in [0, 1), identical to ``jax.random.uniform(key, shape)``."""
    mantissa = (bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000)
    return lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)


def _mul_high(a, b):
    """``floor(a * b / 2**32)`` for uint32 arrays, from 16-bit limbs (no uint64 needed)."""
    mask = np.uint32(0xFFFF)
    a_hi, a_lo = a >> np.uint32(16), a & mask
    b_hi, b_lo = b >> np.uint32(16), b & mask
    hi_lo, lo_hi = a_hi * b_lo, a_lo * b_hi
    middle = ((a_lo * b_lo) >> np.uint32(16)) + (hi_lo & mask) + (lo_hi & mask)
    return (
        a_hi * b_hi
        + (hi_lo >> np.uint32(16))
        + (lo_hi >> np.uint32(16))
        + (middle >> np.uint32(16))
    )


def uniform_index(key, shape, extent) -> jax.Array:
    """Integers uniform on ``[0, extent)``: ``floor(bits * extent / 2**32)`` as int32.

    Args:
      key: a PRNG key.
      shape: the output shape.
      extent: an int, or ints broadcastable to ``shape`` (e.g. one per trailing axis), each in
        ``[1, 2**31)``. Each value is off uniform by at most ``extent / 2**32``.
    """
    extent = np.broadcast_to(np.asarray(extent, np.uint32), shape)
    return _mul_high(bits(key, shape), jnp.asarray(extent)).astype(jnp.int32)
