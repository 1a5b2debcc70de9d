"""Cutout: one or more square holes per example (DeVries & Taylor, 2017)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import dropspec
from jaxdrop import _common, random


def center_shape(batch: int, num_holes: int, n_spatial: int) -> tuple[int, ...]:
    return (batch, num_holes, n_spatial)


def _hole_mask(centers, spatial, sizes):
    """True inside any hole: bool ``(N, *spatial)`` from integer ``centers (N, H, d)``."""
    inside = None
    n_spatial = len(spatial)
    for axis, (extent, size) in enumerate(zip(spatial, sizes)):
        start = centers[:, :, axis, None] - size // 2
        position = jnp.arange(extent, dtype=centers.dtype)
        on_axis = (position >= start) & (position < start + size)  # (N, H, extent)
        shape = list(on_axis.shape[:2]) + [1] * n_spatial
        shape[2 + axis] = extent
        on_axis = on_axis.reshape(shape)
        inside = on_axis if inside is None else inside & on_axis
    return inside.any(axis=1)


@functools.partial(jax.jit, static_argnames=("sizes", "num_holes"))
def _cutout(x, key, centers, fill, *, sizes, num_holes):
    spatial = x.shape[1:-1]
    if centers is None:
        shape = center_shape(x.shape[0], num_holes, len(spatial))
        centers = random.uniform_index(key, shape, np.asarray(spatial))
    hole = _hole_mask(centers.astype(jnp.int32), spatial, sizes)
    return jnp.where(hole[..., None], jnp.asarray(fill, x.dtype), x)


def cutout(
    x,
    size,
    *,
    key=None,
    num_holes: int = 1,
    centers=None,
    fill: float = 0.0,
    deterministic: bool = False,
) -> jax.Array:
    """Cutout: sets ``num_holes`` boxes per example to ``fill``, in all channels.

    DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (2017): a hole centred at ``c`` covers ``[c - size//2, c - size//2 + size)`` on each axis,
    clipped at the borders (the anchoring of :func:`drop_block`'s "full" seeding); centres are
    uniform over the whole map, independently per example and hole, so holes may overlap and
    may hang over the edge. Nothing is rescaled. Works under ``jit`` and ``vmap``.

    Args:
      x: input of shape ``(N, *spatial, C)``, 1 to 3 spatial dims, any float dtype.
      size: the hole size, an int or one int per spatial dim, each >= 0 (0: no hole).
      key: a PRNG key; required unless ``centers`` is given or ``deterministic`` is True.
      num_holes: holes per example, >= 1.
      centers: integer centres replacing the draw, shape ``(N, num_holes, n_spatial)``, or
        ``(N, n_spatial)`` when ``num_holes == 1``; values outside the map are allowed.
      fill: the value written into the holes.
      deterministic: if True, return ``x`` unchanged.

    Returns:
      An array like ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> y = cutout(jnp.ones((1, 4, 4, 1)), 2, centers=jnp.array([[1, 1]]))
      >>> y[0, :, :, 0].astype(int).tolist()
      [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    """
    x = _common.as_input(x)
    sizes = dropspec.check_sizes(size, x.ndim - 2, name="size", minimum=0)
    num_holes = dropspec.check_positive_int("num_holes", num_holes)
    fill = dropspec.check_fill(fill)
    if dropspec.check_bool("deterministic", deterministic):
        return x
    _common.check_source(key, "centers", centers)
    if centers is not None:
        centers = jnp.asarray(centers)
        dropspec.check_int_dtype("centers", centers.dtype)
        expected = center_shape(x.shape[0], num_holes, x.ndim - 2)
        if num_holes == 1 and centers.shape == expected[::2]:
            centers = centers[:, None, :]
        dropspec.check_shape("centers", centers.shape, expected, "one centre per example and hole")
    else:
        _common.require_key(key, "centers")
    return _cutout(x, key, centers, fill, sizes=sizes, num_holes=num_holes)
