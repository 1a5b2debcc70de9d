"""Where blocks may start and which units they cover (DropBlock, Ghiasi et al. 2018, Alg. 1).

Conventions, per spatial axis of extent ``S`` and clipped block size ``k = min(block, S)``:

* ``seed_region="valid"``: a seed ``s`` in ``[0, S - k]`` is the first corner of the block
  ``[s, s + k - 1]``, which lies wholly inside the map (the paper, torchvision).
* ``seed_region="full"``: a seed ``s`` in ``[0, S - 1]`` is the centre of the block
  ``[s - k // 2, s - k // 2 + k - 1]``, clipped at the borders (timm). For even ``k`` the
  block reaches one unit further below the seed than above it.

A unit is dropped when any block covers it. With independent seeds of probability gamma, unit
``p`` is kept with probability ``(1 - gamma) ** n(p)``, where ``n(p)`` (``cover_counts``) is the
number of seed positions whose block covers ``p``; it is the product of one count per axis.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class BlockGeometry(NamedTuple):
    """The static geometry of one DropBlock call, independent of layout.

    Attributes:
      spatial: the spatial extents ``S``.
      block: the block size per axis after clipping to ``S``.
      seed_spatial: the extents of the region where seeds are drawn.
      seed_region: "valid" or "full".
    """

    spatial: tuple[int, ...]
    block: tuple[int, ...]
    seed_spatial: tuple[int, ...]
    seed_region: str


def split_layout(shape, channels_last: bool) -> tuple[int, tuple[int, ...], int]:
    """Splits an input shape into ``(batch, spatial, channels)``."""
    shape = tuple(int(d) for d in shape)
    if channels_last:
        return shape[0], shape[1:-1], shape[-1]
    return shape[0], shape[2:], shape[1]


def block_geometry(spatial, block, seed_region: str) -> BlockGeometry:
    """Clips ``block`` to ``spatial`` and sizes the seed region."""
    clipped = tuple(min(k, s) for k, s in zip(block, spatial))
    if seed_region == "valid":
        seed_spatial = tuple(s - k + 1 for s, k in zip(spatial, clipped))
    else:
        seed_spatial = tuple(spatial)
    return BlockGeometry(tuple(spatial), clipped, seed_spatial, seed_region)


def seed_shape(shape, geometry: BlockGeometry, share_channels: bool, channels_last: bool):
    """The shape of the boolean seed array for an input of ``shape``, in the same layout."""
    batch, _, channels = split_layout(shape, channels_last)
    seed_channels = 1 if share_channels else channels
    if channels_last:
        return (batch, *geometry.seed_spatial, seed_channels)
    return (batch, seed_channels, *geometry.seed_spatial)


def dilation_padding(k: int, seed_region: str) -> tuple[int, int]:
    """Zeros to add before and after the seeds on one axis so that a window of ``k`` turns
    seeds into the dropped set: output ``p`` is dropped iff the window ``[p, p + k - 1]`` of the
    padded seeds holds a seed."""
    if seed_region == "valid":
        return k - 1, k - 1
    return k - 1 - k // 2, k // 2


def cover_counts_1d(extent: int, k: int, seed_region: str) -> np.ndarray:
    """For each position on an axis, how many seed positions have a block covering it."""
    p = np.arange(extent)
    if seed_region == "valid":
        return np.minimum(p, extent - k) - np.maximum(0, p - k + 1) + 1
    return np.minimum(p + k // 2, extent - 1) - np.maximum(0, p - k + 1 + k // 2) + 1


def cover_counts(geometry: BlockGeometry) -> np.ndarray:
    """``n(p)`` for every spatial position, shape ``geometry.spatial``, as int64."""
    counts = np.ones((), dtype=np.int64)
    for extent, k in zip(geometry.spatial, geometry.block):
        counts = np.multiply.outer(counts, cover_counts_1d(extent, k, geometry.seed_region))
    return counts


def drop_path_keep_shape(shape, mode: str) -> tuple[int, ...]:
    """The shape of DropPath's keep vector: ``(N,)`` in "row" mode, ``()`` in "batch" mode."""
    return (int(shape[0]),) if mode == "row" else ()


def num_positions(geometry: BlockGeometry) -> int:
    return math.prod(geometry.spatial)
