"""Uout: multiplicative uniform noise, robust to the variance shift (Li et al., CVPR 2019)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import dropspec
from jaxdrop import _common, random


@jax.jit
def _uout(x, key, noise, rate):
    if noise is None:
        noise = rate * (2.0 * random.uniform(key, x.shape) - 1.0)
    wide = _common.widen(x)
    return _common.narrow(wide + wide * noise.astype(wide.dtype), wide, x.dtype)


def uout(x, rate, *, key=None, noise=None, deterministic: bool = False) -> jax.Array:
    """Uout: ``x + x * r`` with ``r ~ U(-rate, rate)`` independently per element.

    Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch Normalization
    by Variance Shift" (CVPR 2019): uniform multiplicative noise shifts the variance between
    training and test far less than Dropout, so it sits better before BatchNorm. Here ``rate``
    is the paper's ``beta``, the half-width of the noise; the expectation is ``x``.

    Args:
      x: input of any shape and float dtype.
      rate: the noise half-width in [0, 1], a Python float or a scalar array (may be traced).
      key: a PRNG key; required unless ``noise`` is given or ``deterministic`` is True.
      noise: ``r`` itself, a float array shaped like ``x`` or broadcastable to it.
      deterministic: if True, return ``x`` unchanged.

    Returns:
      An array like ``x``, computed in float32.

    Example:
      >>> import jax.numpy as jnp
      >>> uout(jnp.array([1.0, 2.0]), 0.5, noise=jnp.array([0.5, -0.25])).tolist()
      [1.5, 1.5]
    """
    x = _common.as_input(x, "any")
    rate_value = dropspec.check_rate(rate)
    if dropspec.check_bool("deterministic", deterministic):
        return x
    _common.check_source(key, "noise", noise)
    if noise is not None:
        noise = jnp.asarray(noise)
        dropspec.check_float_dtype("noise", noise.dtype)
        dropspec.check_broadcastable("noise", noise.shape, x.shape)
    elif rate_value == 0.0:
        return x
    else:
        _common.require_key(key, "noise")
    rate = rate_value if rate_value is not None else _common.traced_rate(rate)
    return _uout(x, key, noise, rate)
