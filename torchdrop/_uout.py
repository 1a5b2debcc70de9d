"""Uout: multiplicative uniform noise, robust to the variance shift (Li et al., CVPR 2019)."""

from __future__ import annotations

import torch

import dropspec
from torchdrop import _common, _draw


def uout(
    x: torch.Tensor,
    rate,
    *,
    key=None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Uout: ``x + x * r`` with ``r ~ U(-rate, rate)`` independently per element.

    Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch Normalization
    by Variance Shift" (CVPR 2019): uniform multiplicative noise shifts the variance between
    training and test far less than Dropout, so it sits better before BatchNorm. Here ``rate``
    is the paper's ``beta``, the half-width of the noise; the expectation is ``x``.

    Args:
      x: input of any shape and float dtype.
      rate: the noise half-width in [0, 1], a Python float or a scalar tensor.
      key: the raw data of a JAX key ``k``, ``jax.random.key_data(k)`` (a tuple of two ints, a
        uint32 array or an integer tensor; see :func:`torchdrop.random.key_data`): the noise is
        then exactly what ``jaxdrop.uout`` draws with ``key=k``, drawn in its channels-last
        shape for rank >= 3 and moved to channels-first. Excludes ``generator`` and ``noise``;
        under ``torch.compile``, pass a tuple.
      generator: the source of the noise; None uses PyTorch's global generator.
      noise: ``r`` itself, a float tensor shaped like ``x`` or broadcastable to it.
      training: if False, return ``x`` unchanged.

    Returns:
      A tensor like ``x``, computed in float32 (float16 saturates at +-65504).

    Example:
      >>> import torch
      >>> uout(torch.tensor([1.0, 2.0]), 0.5, noise=torch.tensor([0.5, -0.25])).tolist()
      [1.5, 1.5]
    """
    x = _common.as_input(x, "any")
    rate_value = dropspec.check_rate(rate)
    if not _common.check_training(training):
        return x
    key = _common.check_source(generator, "noise", noise, key=key)
    if noise is not None:
        noise = torch.as_tensor(noise, device=x.device)
        dropspec.check_float_dtype("noise", noise.dtype)
        dropspec.check_broadcastable("noise", noise.shape, x.shape)
    elif rate_value == 0.0:
        return x
    else:
        rate = rate_value if rate_value is not None else _common.traced_rate(rate, x.device)
        channel_axis = 1 if x.ndim >= 3 else None
        if key is not None:
            u = _draw.key_uniform(key, x.shape, device=x.device, channel_axis=channel_axis)
        else:
            u = _draw.uniform(
                x.shape, generator=generator, device=x.device, channel_axis=channel_axis
            )
        noise = rate * (2.0 * u - 1.0)
    wide = _common.widen(x)
    return _common.narrow(wide + wide * noise.to(wide.dtype), wide, x.dtype)
