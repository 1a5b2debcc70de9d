"""DropPath: dropping whole examples of a residual branch (per-sample stochastic depth)."""

from __future__ import annotations

import torch

import dropspec
from torchdrop import _common, _draw


def drop_path(
    x: torch.Tensor,
    rate,
    *,
    key=None,
    generator: torch.Generator | None = None,
    keep: torch.Tensor | None = None,
    mode: str = "row",
    scale_by_keep: bool = True,
    training: bool = True,
) -> torch.Tensor:
    """DropPath: zeroes whole examples (``mode="row"``) or the whole batch (``"batch"``).

    Meant for the residual branch of a block, ``y = x + drop_path(f(x), rate)``: timm's
    ``drop_path`` and torchvision's ``stochastic_depth`` (Huang et al., "Deep Networks with
    Stochastic Depth", ECCV 2016, per-sample variant). ``rate`` is the probability of dropping
    (timm's ``drop_prob``, torchvision's ``p``, ``1 - survival_prob``). To skip computing a
    dropped branch altogether, use :func:`stochastic_depth`.

    Args:
      x: the branch output, shape ``(N, ...)``, any rank >= 1, any float dtype.
      rate: drop probability in [0, 1], a Python float or a scalar tensor.
      key: the raw data of a JAX key ``k``, ``jax.random.key_data(k)`` (a tuple of two ints, a
        uint32 array or an integer tensor; see :func:`torchdrop.random.key_data`): ``keep`` is
        then exactly what ``jaxdrop.drop_path`` draws with ``key=k``. Excludes ``generator``
        and ``keep``; under ``torch.compile``, pass a tuple.
      generator: the source of the draw; None uses PyTorch's global generator.
      keep: bool tensor replacing the draw: shape ``(N,)`` for "row", ``()`` for "batch".
      mode: "row", one draw per example (axis 0); "batch", one draw for the whole batch.
      scale_by_keep: divide kept examples by ``1 - rate`` (inverted scaling, unbiased). With
        ``rate == 1`` nothing is kept and nothing is divided.
      training: if False, return ``x`` unchanged.

    Returns:
      A tensor like ``x``.

    Example:
      >>> import torch
      >>> y = drop_path(torch.ones(4, 3), 0.5, keep=torch.tensor([True, False, True, True]))
      >>> y[:, 0].tolist()
      [2.0, 0.0, 2.0, 2.0]
    """
    x = _common.as_input(x, "batched")
    rate_value = dropspec.check_rate(rate)
    mode = dropspec.check_choice("mode", mode)
    scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
    keep_shape = dropspec.drop_path_keep_shape(x.shape, mode)
    if not _common.check_training(training):
        return x
    key = _common.check_source(generator, "keep", keep, key=key)
    if keep is not None:
        keep = _common.check_keep(keep, keep_shape, f"for mode={mode!r}", x.device)
    elif rate_value == 0.0:
        return x
    keep_prob = _common.keep_probability(rate, rate_value, x.device)
    scale = _common.inverse_keep(keep_prob) if scale_by_keep else 1.0
    axes = tuple(range(len(keep_shape)))
    if keep is None and key is not None:
        keep = _draw.key_bernoulli(key, keep_shape, keep_prob, device=x.device)
    return _common.drop_units(
        x, generator, keep, keep_prob, scale, keep_shape=keep_shape, keep_axes=axes
    )
