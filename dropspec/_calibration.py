"""Seed rate (gamma) calibration and the integer Bernoulli threshold.

Two calibrations map the requested drop fraction ``rate`` to the seed probability gamma:

* ``"paper"`` (Ghiasi et al. 2018, Eq. 1): ``gamma = rate * prod(S) / (prod(k) * prod(S - k + 1))``
  for valid seeding and ``rate / prod(k)`` for full seeding, with ``k`` clipped to ``S``. It
  ignores overlapping blocks and borders, so the realised drop fraction is not ``rate``.
* ``"exact"``: gamma solves ``mean_p (1 - gamma) ** n(p) = 1 - rate``, where ``n(p)`` is the
  number of seeds covering unit ``p`` (see ``_geometry``), so the expected fraction of dropped
  units is ``rate`` exactly, overlaps and borders included.

``rate == 1`` always gives ``gamma == 1``: every unit is dropped whatever the calibration.

The exact equation is solved by Newton's method on ``t = log(1 - gamma)``. The left side,
``log mean_p exp(n(p) t)``, is a log-sum-exp of lines in ``t``: convex and increasing, so Newton
started at ``t = 0`` (right of the root) decreases monotonically to the root. It takes at most
six float32 steps over the shapes and rates we tried, so a fixed ``newton_step_count()`` runs
unrolled inside compiled code, with a traced rate.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from dropspec._geometry import BlockGeometry, cover_counts

_NEWTON_STEPS = 12


def newton_step_count() -> int:
    """The fixed number of Newton steps the exact calibration takes, in any precision."""
    return _NEWTON_STEPS


class ExactCalibration(NamedTuple):
    """The distinct cover counts ``n`` of a geometry and the fraction of units having each.

    Attributes:
      exponents: the distinct values of ``n(p)``, float64.
      weights: the fraction of positions with that value, float64, summing to 1.
    """

    exponents: np.ndarray
    weights: np.ndarray


def paper_factor(geometry: BlockGeometry) -> float:
    """``gamma / rate`` under the paper's calibration."""
    block_units = math.prod(geometry.block)
    if geometry.seed_region == "full":
        return 1.0 / block_units
    valid_seeds = math.prod(s - k + 1 for s, k in zip(geometry.spatial, geometry.block))
    return math.prod(geometry.spatial) / (block_units * valid_seeds)


@functools.lru_cache(maxsize=256)
def exact_calibration(geometry: BlockGeometry) -> ExactCalibration:
    counts = cover_counts(geometry).ravel()
    values, multiplicity = np.unique(counts, return_counts=True)
    return ExactCalibration(values.astype(np.float64), multiplicity / counts.size)


def solve_exact_gamma(rate, calibration: ExactCalibration, xp):
    """Solves the exact calibration for a rate in [0, 1), in the array namespace ``xp``.

    ``xp`` is ``numpy``, ``jax.numpy`` or ``torch``; ``rate`` a scalar of that namespace, whose
    dtype sets the precision. The caller maps ``rate == 1`` to ``gamma == 1``.
    """
    exponents = xp.asarray(calibration.exponents, dtype=rate.dtype)
    weights = xp.asarray(calibration.weights, dtype=rate.dtype)
    log_weights = xp.log(weights)
    target = xp.log1p(-rate)
    t = rate * 0
    for _ in range(_NEWTON_STEPS):
        lines = log_weights + exponents * t
        top = xp.max(lines)
        terms = xp.exp(lines - top)
        total = xp.sum(terms)
        log_keep_lse = top + xp.log(total)
        # For small drop fractions log-sum-exp cancels to ~0; 1 - keep from expm1 stays exact.
        dropped = -xp.sum(weights * xp.expm1(exponents * t))
        log_keep = xp.where(dropped < 0.5, xp.log1p(-dropped), log_keep_lse)
        slope = xp.sum(terms * exponents) / total
        t = t - (log_keep - target) / slope
    return -xp.expm1(t)


def gamma_from_rate(rate: float, geometry: BlockGeometry, calibration: str) -> float:
    """The seed probability for a Python-float ``rate`` in [0, 1], computed in float64."""
    if rate >= 1.0:
        return 1.0
    if rate <= 0.0:
        return 0.0
    if calibration == "paper":
        return min(rate * paper_factor(geometry), 1.0)
    gamma = solve_exact_gamma(np.float64(rate), exact_calibration(geometry), np)
    return float(min(max(gamma, 0.0), 1.0))


def keep_probability_map(geometry: BlockGeometry, gamma: float) -> np.ndarray:
    """P(unit kept) at every spatial position, ``(1 - gamma) ** n(p)``, as float32.

    Computed in float64 and rounded once, so every framework and every code path (eager,
    jitted, constant-folded) gets the same values for a Python-float gamma.
    """
    counts = cover_counts(geometry)
    if gamma >= 1.0:
        return np.zeros(counts.shape, np.float32)
    return np.exp(counts * math.log1p(-gamma)).astype(np.float32)


def keep_threshold(p: float) -> int:
    """The integer threshold of a Bernoulli(p) draw from uint32 random bits.

    A draw ``u`` (uniform on ``[0, 2**32)``) is True iff ``u < keep_threshold(p)``, which happens
    with probability ``floor(p * 2**32) / 2**32``: within ``2**-32`` of ``p``, and exactly 0 and
    1 at the ends. The result ``2**32`` (for ``p >= 1``) means "always".
    """
    if p >= 1.0:
        return 1 << 32
    if p <= 0.0:
        return 0
    return math.floor(p * 4294967296.0)
