"""Drop-rate schedules: the DropBlock ramp and per-block stochastic-depth rates.

:func:`linear_ramp` returns a function of the step that gives a float32 scalar tensor: set it as
a module's ``rate`` (or pass it to an op) each step; a tensor rate changes value without
recompiling under ``torch.compile``. :func:`depth_rates` is ``dropspec``'s, shared with jaxdrop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import dropspec
from dropspec import depth_rates

__all__ = ["depth_rates", "linear_ramp"]


def linear_ramp(final_rate: float, total_steps: int, start_step: int = 0) -> Callable:
    """A schedule that ramps the drop rate linearly from 0 to ``final_rate``.

    The DropBlock paper's "scheduled DropBlock" (Ghiasi et al. 2018, Sec. 3): ``keep_prob``
    decreases linearly from 1 to its target, which beat a fixed rate.

    Args:
      final_rate: the rate reached at ``start_step + total_steps`` and held afterwards.
      total_steps: the length of the ramp, >= 1.
      start_step: the step at which the ramp starts (rate 0 before it).

    Returns:
      ``schedule(step) -> rate``, a float32 scalar tensor; ``step`` may be a Python int or an
      integer tensor (the result is on its device).

    Example:
      >>> schedule = linear_ramp(0.1, total_steps=100)
      >>> [round(float(schedule(s)), 3) for s in (0, 50, 100, 500)]
      [0.0, 0.05, 0.1, 0.1]
    """
    final_rate = dropspec.check_rate(final_rate, "final_rate")
    if final_rate is None:
        raise TypeError("`final_rate` must be a Python float in [0, 1], not an array.")
    total_steps = dropspec.check_positive_int("total_steps", total_steps)
    start_step = dropspec.check_non_negative_int("start_step", start_step)

    def schedule(step) -> torch.Tensor:
        progress = (torch.as_tensor(step).to(torch.float32) - start_step) / total_steps
        return final_rate * torch.clamp(progress, 0.0, 1.0)

    return schedule
