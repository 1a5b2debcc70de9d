"""Pieces every torchdrop op shares: input checks, tensor rates, and the masked rescale.

The mirror of ``jaxdrop._common``: the same rules (through ``dropspec``), the same float32
arithmetic, channels-first layout.
"""

from __future__ import annotations

import torch

import dropspec
from torchdrop import _draw, random

FLOAT16_MAX = 65504.0


def is_compiling() -> bool:
    """Whether the caller is being traced by ``torch.compile``."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch < 2.3


def as_input(x, kind: str = "spatial") -> torch.Tensor:
    """``x`` as a tensor of a floating dtype and a rank of ``dropspec.RANK_RULES[kind]``."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    dropspec.check_float_dtype("x", x.dtype)
    dropspec.check_rank("x", x.shape, kind)
    return x


def check_source(generator, presampled_name: str, presampled, key=None):
    """Refuses two sources for one draw; returns ``key`` as ``(k1, k2)`` ints, or None.

    ``key`` (JAX's numbers), ``generator`` (torch's) and the pre-sampled draw exclude each other.
    A key is read by ``torchdrop.random.key_data``, whose messages say what a key may be.
    """
    if key is not None and generator is not None:
        dropspec.check_one_source(
            "key", "generator", "`key` draws jaxdrop's random numbers, `generator` torch's"
        )
    if key is not None and presampled is not None:
        dropspec.check_one_source("key", presampled_name)
    if generator is not None and presampled is not None:
        dropspec.check_one_source("generator", presampled_name)
    return None if key is None else random.key_data(key)


def check_training(training) -> bool:
    return dropspec.check_bool("training", training)


def traced_rate(rate, device=None) -> torch.Tensor:
    """A tensor rate as float32, clipped into [0, 1]; NaN counts as 0 (drop nothing)."""
    rate = torch.as_tensor(rate, dtype=torch.float32, device=device)
    return torch.where(rate > 0, torch.clamp(rate, max=1.0), 0.0)


def keep_probability(rate, rate_value, device=None):
    """``1 - rate``: a Python float for a Python rate, a clipped float32 tensor otherwise."""
    if rate_value is not None:
        return 1.0 - rate_value
    return 1.0 - traced_rate(rate, device)


def inverse_keep(keep_prob):
    """``1 / keep_prob``, and 0 where ``keep_prob == 0`` so that no 0/0 reaches a gradient."""
    if isinstance(keep_prob, float):
        return 1.0 / keep_prob if keep_prob > 0 else 0.0
    positive = keep_prob > 0
    return torch.where(positive, 1.0 / torch.where(positive, keep_prob, 1.0), 0.0)


def compute_dtype(dtype) -> torch.dtype:
    """Float32 for half and single precision inputs; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def widen(values: torch.Tensor) -> torch.Tensor:
    """``values`` in the dtype the math runs in: float32, or float64 for float64."""
    return values.to(compute_dtype(values.dtype))


def narrow(result: torch.Tensor, wide_input: torch.Tensor, dtype) -> torch.Tensor:
    """Casts a float32 ``result`` back to ``dtype``; float16 saturates at +-65504.

    A finite input may be scaled past float16's range (a large normalisation when almost
    everything is dropped); it comes back as the largest finite value, not inf. Non-finite
    inputs stay as they are.
    """
    if dtype == torch.float16:
        clipped = torch.clamp(result, -FLOAT16_MAX, FLOAT16_MAX)
        result = torch.where(torch.isfinite(wide_input), clipped, result)
    return result.to(dtype)


def _rescale(values, keep, scale, saturate: bool):
    """``where(keep, values * scale, 0)`` in float32, cast back to ``values``' dtype."""
    wide = widen(values)
    out = torch.where(keep, wide * scale, 0.0)
    if not saturate:
        return out.to(values.dtype)
    return narrow(out, wide, values.dtype)


class _MaskedScale(torch.autograd.Function):
    """``where(keep, x * scale, 0)`` with the derivative ``where(keep, dx * scale, 0)``.

    The backward pass keeps only the boolean ``keep`` and the small ``scale``, never a float
    copy of the mask; no gradient flows to ``scale`` (nor to a rate behind it), and a float16
    output clipped at its largest finite value passes its gradient straight through, as in
    ``jaxdrop._common.masked_scale``.
    """

    @staticmethod
    def forward(x, keep, scale):
        return _rescale(x, keep, scale, saturate=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, keep, scale = inputs
        if isinstance(scale, torch.Tensor):
            ctx.save_for_backward(keep, scale)
            ctx.scale = None
        else:
            ctx.save_for_backward(keep)
            ctx.scale = scale

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        scale = saved[1] if ctx.scale is None else ctx.scale
        return _rescale(grad, saved[0], scale, saturate=False), None, None


def masked_scale(x: torch.Tensor, keep: torch.Tensor, scale) -> torch.Tensor:
    """``where(keep, x * scale, 0)`` computed in float32 and returned in ``x``'s dtype.

    Args:
      x: the input, any float dtype.
      keep: bool, broadcastable to ``x``.
      scale: a Python float or a float32 tensor broadcastable to ``x``.

    Returns:
      A tensor like ``x``, in ``x``'s memory format when that is channels-last.
    """
    if x.ndim in (4, 5) and keep.shape == x.shape:
        # A full-size contiguous mask would otherwise decide the output's layout.
        layout = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        if x.is_contiguous(memory_format=layout) and not x.is_contiguous():
            keep = keep.contiguous(memory_format=layout)
    if isinstance(scale, torch.Tensor):
        scale = scale.detach()
    return _MaskedScale.apply(x, keep, scale)


def expand_to(mask: torch.Tensor, ndim: int, axes) -> torch.Tensor:
    """Reshapes a per-example or per-channel tensor for broadcasting against rank ``ndim``.

    ``axes`` are the positions of ``mask``'s dims in the full rank, e.g. ``(0, 1)`` for an
    ``(N, C)`` mask against channels-first input.
    """
    shape = [1] * ndim
    for axis, size in zip(axes, mask.shape):
        shape[axis] = size
    return mask.reshape(shape)


def check_keep(keep, shape, hint: str, device=None) -> torch.Tensor:
    keep = torch.as_tensor(keep, device=device)
    dropspec.check_bool_dtype("keep", keep.dtype)
    dropspec.check_shape("keep", keep.shape, shape, hint)
    return keep


def drop_units(x, generator, keep, keep_prob, scale, *, keep_shape, keep_axes):
    """Keeps whole slices of ``x``: a Bernoulli(``keep_prob``) keep tensor over ``keep_axes``
    (drawn unless ``keep`` is given), broadcast over the other axes."""
    if keep is None:
        keep = _draw.bernoulli(keep_shape, keep_prob, generator=generator, device=x.device)
    return masked_scale(x, expand_to(keep, x.ndim, keep_axes), scale)
