"""SpatialDropout: dropping whole channels of a feature map (Tompson et al., CVPR 2015)."""

from __future__ import annotations

import torch

import dropspec
from torchdrop import _common, _draw


def spatial_dropout(
    x: torch.Tensor,
    rate,
    *,
    key=None,
    generator: torch.Generator | None = None,
    keep: torch.Tensor | None = None,
    scale_by_keep: bool = True,
    training: bool = True,
) -> torch.Tensor:
    """SpatialDropout: zeroes whole channels, independently per example.

    Each of the ``N * C`` feature maps is dropped with probability ``rate``, as PyTorch's
    ``Dropout1d/2d/3d`` and Keras' ``SpatialDropout`` do (Tompson et al., "Efficient Object
    Localization Using Convolutional Networks", CVPR 2015). Equal to :func:`drop_block` with a
    block covering the whole map.

    Args:
      x: input of shape ``(N, C, *spatial)``, 1 to 3 spatial dims, any float dtype.
      rate: drop probability in [0, 1], a Python float or a scalar tensor.
      key: the raw data of a JAX key ``k``, ``jax.random.key_data(k)`` (a tuple of two ints, a
        uint32 array or an integer tensor; see :func:`torchdrop.random.key_data`): ``keep`` is
        then exactly what ``jaxdrop.spatial_dropout`` draws with ``key=k`` (shape ``(N, C)`` in
        both layouts). Excludes ``generator`` and ``keep``; under ``torch.compile``, pass a
        tuple.
      generator: the source of the draw; None uses PyTorch's global generator.
      keep: bool tensor of shape ``(N, C)`` replacing the draw.
      scale_by_keep: divide kept channels by ``1 - rate`` (inverted dropout).
      training: if False, return ``x`` unchanged.

    Returns:
      A tensor like ``x``.

    Example:
      >>> import torch
      >>> keep = torch.tensor([[True, False]])
      >>> y = spatial_dropout(torch.ones(1, 2, 3, 3), 0.5, keep=keep)
      >>> y[0, 0].sum().item(), y[0, 1].sum().item()
      (18.0, 0.0)
    """
    x = _common.as_input(x)
    rate_value = dropspec.check_rate(rate)
    scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
    keep_shape = (x.shape[0], x.shape[1])
    if not _common.check_training(training):
        return x
    key = _common.check_source(generator, "keep", keep, key=key)
    if keep is not None:
        keep = _common.check_keep(keep, keep_shape, "one entry per example and channel", x.device)
    elif rate_value == 0.0:
        return x
    keep_prob = _common.keep_probability(rate, rate_value, x.device)
    scale = _common.inverse_keep(keep_prob) if scale_by_keep else 1.0
    if keep is None and key is not None:
        keep = _draw.key_bernoulli(key, keep_shape, keep_prob, device=x.device)
    return _common.drop_units(
        x, generator, keep, keep_prob, scale, keep_shape=keep_shape, keep_axes=(0, 1)
    )
