"""Per-block drop rates for stochastic depth, in plain Python."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dropspec._checks import _is_int, check_choice, check_rate


def _check_depths(num_blocks) -> list[int]:
    rule = "an int >= 1 or a sequence of ints >= 1 (blocks per stage)"
    if _is_int(num_blocks):
        depths = [int(num_blocks)]
    elif isinstance(num_blocks, Sequence) and num_blocks and all(map(_is_int, num_blocks)):
        depths = [int(d) for d in num_blocks]
    else:
        raise TypeError(f"`num_blocks` must be {rule}, got {num_blocks!r}.")
    if any(d < 1 for d in depths):
        raise ValueError(f"`num_blocks` must be {rule}, got {num_blocks!r}.")
    return depths


def depth_rates(final_rate: float, num_blocks, rule: str = "huang"):
    """Drop rates that grow with depth, for stochastic depth or DropPath.

    Args:
      final_rate: the rate of the deepest block, a float in [0, 1].
      num_blocks: the number of blocks ``L``, or blocks per stage such as ``[3, 4, 6, 3]``.
      rule: "huang": ``l / L * final_rate`` for ``l = 1..L`` (Huang et al. 2016, linear decay
        of the survival probability to ``1 - final_rate``); "linspace":
        ``linspace(0, final_rate, L)``, the first block never dropped (timm).

    Returns:
      A list of ``L`` floats for an int ``num_blocks``; for stages, one list per stage,
      counting depth across all stages.

    Example:
      >>> depth_rates(0.5, 4)
      [0.125, 0.25, 0.375, 0.5]
      >>> depth_rates(0.75, [2, 2], rule="linspace")
      [[0.0, 0.25], [0.5, 0.75]]
    """
    final_rate = check_rate(final_rate, "final_rate")
    if final_rate is None:
        raise TypeError("`final_rate` must be a Python float in [0, 1], not an array.")
    rule = check_choice("rule", rule)
    depths = _check_depths(num_blocks)
    total = sum(depths)
    if rule == "huang":
        rates = [final_rate * depth / total for depth in range(1, total + 1)]
    else:
        rates = [float(r) for r in np.linspace(0.0, final_rate, total)]
    if _is_int(num_blocks):
        return rates
    stages, start = [], 0
    for depth in depths:
        stages.append(rates[start : start + depth])
        start += depth
    return stages
