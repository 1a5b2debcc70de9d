"""Slow, obvious NumPy references the tests compare jaxdrop against.

Written independently of the library: blocks are painted seed by seed with explicit loops,
and the statistics are derived from first principles, not from jaxdrop's own formulas.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def block_start(seed: int, k: int, seed_region: str) -> int:
    """First covered index of the block a seed at ``seed`` starts on one axis."""
    return seed if seed_region == "valid" else seed - k // 2


def paint_blocks(seeds: np.ndarray, spatial, block, seed_region: str) -> np.ndarray:
    """The dropped mask, channels-last ``(N, *spatial, Cs)``, painted seed by seed.

    Args:
      seeds: bool ``(N, *seed_spatial, Cs)``.
      spatial: the map's extents.
      block: the clipped block size per axis.
      seed_region: "valid" or "full".
    """
    n, cs = seeds.shape[0], seeds.shape[-1]
    dropped = np.zeros((n, *spatial, cs), dtype=bool)
    for index in zip(*np.nonzero(seeds)):
        example, *position, channel = index
        window = [example]
        for p, k, extent in zip(position, block, spatial):
            start = block_start(p, k, seed_region)
            window.append(slice(max(start, 0), min(start + k, extent)))
        window.append(channel)
        dropped[tuple(window)] = True
    return dropped


def keep_probability_map(spatial, block, seed_region: str, gamma: float) -> np.ndarray:
    """P(unit kept) per position, by counting for each unit the seeds that would cover it."""
    seed_spatial = (
        [s - k + 1 for s, k in zip(spatial, block)] if seed_region == "valid" else list(spatial)
    )
    covers = np.zeros(spatial, dtype=np.int64)
    for seed in itertools.product(*(range(s) for s in seed_spatial)):
        window = []
        for p, k, extent in zip(seed, block, spatial):
            start = block_start(p, k, seed_region)
            window.append(slice(max(start, 0), min(start + k, extent)))
        covers[tuple(window)] += 1
    return (1.0 - gamma) ** covers


def _cover_interval(p, k, extent, seed_region):
    """Seeds (an interval, on one axis) whose block covers position(s) ``p``."""
    if seed_region == "valid":
        return np.maximum(0, p - k + 1), np.minimum(p, extent - k)
    return np.maximum(0, p - k + 1 + k // 2), np.minimum(p + k // 2, extent - 1)


def drop_fraction_std(spatial, block, seed_region: str, gamma: float, maps: int) -> float:
    """The exact standard deviation of the dropped fraction over ``maps`` independent maps.

    Units p and q are both kept iff no seed covers either: ``(1 - gamma) ** |C(p) u C(q)|``
    where the cover sets C are boxes, so ``|C(p) n C(q)|`` is a product of interval overlaps.
    """
    grids = np.meshgrid(*(np.arange(s) for s in spatial), indexing="ij")
    positions = [g.ravel() for g in grids]
    union_minus = np.ones((positions[0].size, positions[0].size), dtype=np.int64)
    sizes = np.ones(positions[0].size, dtype=np.int64)
    for p, k, extent in zip(positions, block, spatial):
        lo, hi = _cover_interval(p, k, extent, seed_region)
        sizes = sizes * (hi - lo + 1)
        overlap = np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :]) + 1
        union_minus = union_minus * np.maximum(overlap, 0)
    union = sizes[:, None] + sizes[None, :] - union_minus
    keep = (1.0 - gamma) ** sizes
    covariance = (1.0 - gamma) ** union - np.outer(keep, keep)
    variance_one_map = covariance.sum() / sizes.size**2
    return math.sqrt(variance_one_map / maps)
