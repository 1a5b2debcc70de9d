"""Cutout: one or more square holes per example (DeVries & Taylor, 2017)."""

from __future__ import annotations

import torch

import dropspec
from torchdrop import _common, _draw


def center_shape(batch: int, num_holes: int, n_spatial: int) -> tuple[int, ...]:
    return (batch, num_holes, n_spatial)


def _hole_mask(centers: torch.Tensor, spatial, sizes) -> torch.Tensor:
    """True inside any hole: bool ``(N, *spatial)`` from integer ``centers (N, H, d)``."""
    inside = None
    n_spatial = len(spatial)
    for axis, (extent, size) in enumerate(zip(spatial, sizes)):
        start = centers[:, :, axis, None] - size // 2
        position = torch.arange(extent, dtype=centers.dtype, device=centers.device)
        on_axis = (position >= start) & (position < start + size)  # (N, H, extent)
        shape = [*on_axis.shape[:2]] + [1] * n_spatial
        shape[2 + axis] = extent
        on_axis = on_axis.reshape(shape)
        inside = on_axis if inside is None else inside & on_axis
    return inside.any(dim=1)


def cutout(
    x: torch.Tensor,
    size,
    *,
    key=None,
    generator: torch.Generator | None = None,
    num_holes: int = 1,
    centers: torch.Tensor | None = None,
    fill: float = 0.0,
    training: bool = True,
) -> torch.Tensor:
    """Cutout: sets ``num_holes`` boxes per example to ``fill``, in all channels.

    DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (2017): a hole centred at ``c`` covers ``[c - size//2, c - size//2 + size)`` on each axis,
    clipped at the borders (the anchoring of :func:`drop_block`'s "full" seeding); centres are
    uniform over the whole map, independently per example and hole, so holes may overlap and
    may hang over the edge. Nothing is rescaled.

    Args:
      x: input of shape ``(N, C, *spatial)``, 1 to 3 spatial dims, any float dtype.
      size: the hole size, an int or one int per spatial dim, each >= 0 (0: no hole).
      key: the raw data of a JAX key ``k``, ``jax.random.key_data(k)`` (a tuple of two ints, a
        uint32 array or an integer tensor; see :func:`torchdrop.random.key_data`): the centres
        are then exactly those ``jaxdrop.cutout`` draws with ``key=k``. Excludes ``generator``
        and ``centers``; under ``torch.compile``, pass a tuple.
      generator: the source of the centres; None uses PyTorch's global generator.
      num_holes: holes per example, >= 1.
      centers: integer centres replacing the draw, shape ``(N, num_holes, n_spatial)``, or
        ``(N, n_spatial)`` when ``num_holes == 1``, spatial axes in the order of ``x``'s
        (the same order as jaxdrop's); values outside the map are allowed.
      fill: the value written into the holes.
      training: if False, return ``x`` unchanged.

    Returns:
      A tensor like ``x``.

    Example:
      >>> import torch
      >>> y = cutout(torch.ones(1, 1, 4, 4), 2, centers=torch.tensor([[1, 1]]))
      >>> y[0, 0].int().tolist()
      [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    """
    x = _common.as_input(x)
    sizes = dropspec.check_sizes(size, x.ndim - 2, name="size", minimum=0)
    num_holes = dropspec.check_positive_int("num_holes", num_holes)
    fill = dropspec.check_fill(fill)
    if not _common.check_training(training):
        return x
    key = _common.check_source(generator, "centers", centers, key=key)
    spatial = tuple(x.shape[2:])
    expected = center_shape(x.shape[0], num_holes, len(spatial))
    if centers is not None:
        centers = torch.as_tensor(centers, device=x.device)
        dropspec.check_int_dtype("centers", centers.dtype)
        if num_holes == 1 and tuple(centers.shape) == expected[::2]:
            centers = centers[:, None, :]
        dropspec.check_shape("centers", centers.shape, expected, "one centre per example and hole")
    elif key is not None:
        centers = _draw.key_uniform_index(key, expected, spatial, device=x.device)
    else:
        centers = _draw.uniform_index(expected, spatial, generator=generator, device=x.device)
    hole = _hole_mask(centers.to(torch.int64), spatial, sizes)
    # A 0-d tensor of x's dtype, as jaxdrop's ``jnp.asarray(fill, x.dtype)`` (inf past float16's
    # range rather than masked_fill's overflow error).
    value = torch.tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(hole[:, None], value, x)
