"""SpatialDropout: dropping whole channels of a feature map (Tompson et al., CVPR 2015)."""

from __future__ import annotations

import jax

import dropspec
from jaxdrop import _common, random


def spatial_dropout(
    x,
    rate,
    *,
    key=None,
    keep=None,
    scale_by_keep: bool = True,
    deterministic: bool = False,
) -> jax.Array:
    """SpatialDropout: zeroes whole channels, independently per example.

    Each of the ``N * C`` feature maps is dropped with probability ``rate``, as PyTorch's
    ``Dropout1d/2d/3d`` and Keras' ``SpatialDropout`` do (Tompson et al., "Efficient Object
    Localization Using Convolutional Networks", CVPR 2015). Equal to :func:`drop_block` with a
    block covering the whole map.

    Args:
      x: input of shape ``(N, *spatial, C)``, 1 to 3 spatial dims, any float dtype.
      rate: drop probability in [0, 1], a Python float or a scalar array (may be traced).
      key: a PRNG key; required unless ``keep`` is given or ``deterministic`` is True.
      keep: bool array of shape ``(N, C)`` replacing the draw.
      scale_by_keep: divide kept channels by ``1 - rate`` (inverted dropout).
      deterministic: if True, return ``x`` unchanged.

    Returns:
      An array like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> keep = jnp.array([[True, False]])
      >>> y = spatial_dropout(jnp.ones((1, 3, 3, 2)), 0.5, keep=keep)
      >>> y[0, :, :, 0].sum().item(), y[0, :, :, 1].sum().item()
      (18.0, 0.0)
    """
    x = _common.as_input(x)
    rate_value = dropspec.check_rate(rate)
    scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
    keep_shape = (x.shape[0], x.shape[-1])
    if dropspec.check_bool("deterministic", deterministic):
        return x
    _common.check_source(key, "keep", keep)
    if keep is not None:
        keep = _common.check_keep(keep, keep_shape, "one entry per example and channel")
    elif rate_value == 0.0:
        return x
    else:
        _common.require_key(key, "keep")
    keep_prob = _common.keep_probability(rate, rate_value)
    scale = _common.inverse_keep(keep_prob) if scale_by_keep else 1.0
    limits = random.threshold(keep_prob)
    axes = (0, x.ndim - 1)
    return _common.drop_units(x, key, keep, limits, scale, keep_shape=keep_shape, keep_axes=axes)
