"""Pieces every torchdrop op shares: input checks, tensor rates, and the masked rescale.

The mirror of ``jaxdrop._common``: the same rules (through ``dropspec``), the same float32
arithmetic, channels-first layout.
"""

from __future__ import annotations

import numpy as np
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


def on_host(tensor: torch.Tensor) -> bool:
    """Whether eager code may do ``tensor``'s mask work in NumPy: a CPU tensor, not traced.

    Masks are bytes and small next to the input they select from (a DropBlock seed map, one
    flag per example), yet ATen forks any op above 32768 elements across its intra-op threads.
    On a busy CPU each fork-join can wait a scheduler tick for a thread (measured on the 2-core
    development machine under load: about 8 ms for an OR of 100K bytes, 0.05 ms alone), so
    torchdrop runs the byte work single-threaded in NumPy (zero-copy views of CPU tensors) and
    leaves the passes over the input to ATen's threads.
    """
    return tensor.device.type == "cpu" and not is_compiling()


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


# The integer type of each compute dtype's width: a select mask ANDs the output's bits.
_BITS_OF = {torch.float32: torch.int32, torch.float64: torch.int64}


def select_dtype(mask_numel: int, x: torch.Tensor) -> torch.dtype:
    """The dtype of a select mask of ``mask_numel`` units for ``x``: int8 (one byte a unit,
    widened while it is applied) for a mask near ``x``'s size; the integer width of ``x``'s
    compute dtype for a smaller broadcast mask (per example, channel or position), so that
    applying it is a plain in-place AND."""
    if mask_numel * 8 <= x.numel():
        return _BITS_OF[compute_dtype(x.dtype)]
    return torch.int8


def select_mask(keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The eager form of a keep mask: -1 (all bits set) where kept, 0 where dropped, in the
    dtype of :func:`select_dtype`. ``keep`` may be bool or a select mask already."""
    if keep.dtype == torch.bool:
        keep = keep.view(torch.int8).neg()
    return keep.to(select_dtype(keep.numel(), x))


def _by_rows(out: torch.Tensor, select: torch.Tensor) -> bool:
    """Whether ``select`` varies along leading dims only (DropPath, SpatialDropout on
    channels-first input), in contiguous rows of ``out`` of 64 units or more, on the host."""
    lead = select.ndim
    while lead > 0 and select.shape[lead - 1] == 1:
        lead -= 1
    return (
        on_host(out)
        and out.numel() >= 64 * select.numel() > 0
        and select.ndim == out.ndim
        and tuple(select.shape[:lead]) == tuple(out.shape[:lead])
        and out.is_contiguous()
    )


def _zero_dropped(out: torch.Tensor, select: torch.Tensor) -> None:
    """Sets ``out`` to +0 wherever ``select`` (-1 keep, 0 drop, broadcastable) is 0, in place.

    Clearing the bits makes a dropped unit exactly +0 whatever was computed there (a -0 from a
    negative input, a NaN from an infinite one), as a select does, in one in-place pass. For a
    mask by rows (:func:`_by_rows`) only the dropped rows are written (a NumPy fill, see
    :func:`on_host`).
    """
    if _by_rows(out, select):
        rows = np.flatnonzero(select.numpy().reshape(-1) == 0)
        if rows.size:
            out.numpy().reshape(select.numel(), -1)[rows] = 0.0
        return
    out.view(_BITS_OF[out.dtype]).bitwise_and_(select)


# Bytes of output per chunk of :func:`_rescale_in_chunks`: a chunk stays in the last-level
# cache between the multiply and the AND.
_CHUNK_BYTES = 4 << 20


def _in_chunks(wide: torch.Tensor, select: torch.Tensor, scale) -> bool:
    """Whether :func:`_rescale_in_chunks` applies: a host tensor of several chunks, outermost
    along dim 0, a small select mask of ``wide``'s integer width (:func:`select_dtype`) that is
    not by rows, and masks and scale of ``wide``'s rank (or a Python scale)."""
    operands = [select] if not isinstance(scale, torch.Tensor) else [select, scale]
    return (
        on_host(wide)
        and wide.nbytes >= 2 * _CHUNK_BYTES
        and wide.dtype in _BITS_OF
        and select.dtype == _BITS_OF[wide.dtype]
        and all(t.ndim == wide.ndim for t in operands)
        and wide.stride(0) == max(wide.stride())
        and not _by_rows(wide, select)
    )


def _rescale_in_chunks(wide: torch.Tensor, select: torch.Tensor, scale) -> torch.Tensor:
    """``wide * scale`` with the dropped units' bits cleared, a few MiB of dim 0 at a time.

    The same two ATen passes as :func:`_rescale`'s (a multiply, then an in-place AND with the
    broadcast select mask), with the AND reading the product from the cache instead of
    memory: measured 3.1 ms instead of 3.5 ms for 32x64x56x56 float32 with a shared mask on the
    2-core development machine (``benchmarks/torch_profile.py``).
    """
    out = torch.empty_like(wide)
    bits = out.view(_BITS_OF[wide.dtype])
    step = max(1, _CHUNK_BYTES * wide.shape[0] // wide.nbytes)

    def part(t, start):
        return t if not isinstance(t, torch.Tensor) or t.shape[0] == 1 else t[start : start + step]

    for start in range(0, wide.shape[0], step):
        torch.mul(part(wide, start), part(scale, start), out=part(out, start))
        part(bits, start).bitwise_and_(part(select, start))
    return out


def _rescale(values, mask, scale, saturate: bool):
    """``where(keep, values * scale, 0)`` in float32, cast back to ``values``' dtype.

    ``mask`` is either the bool ``keep`` (the form ``torch.compile`` traces) or a select mask
    from :func:`select_mask` (eager code): ``values * scale`` rounded once, then the dropped
    units' bits cleared in place. Both give the same bits: +0 where dropped even for infinite or
    NaN inputs, ``values * scale`` where kept. A gradient that is itself differentiated (double
    backward) takes the bool form, which autograd can record.
    """
    wide = widen(values)
    if mask.dtype != torch.bool and torch.is_grad_enabled() and values.requires_grad:
        mask = mask != 0
    if mask.dtype == torch.bool:
        out = torch.where(mask, wide * scale, 0.0)
    elif _in_chunks(wide, mask, scale):
        out = _rescale_in_chunks(wide, mask, scale)
    else:
        out = wide * scale
        _zero_dropped(out, mask)
    if not saturate:
        return out.to(values.dtype)
    return narrow(out, wide, values.dtype)


class _MaskedScale(torch.autograd.Function):
    """``where(keep, x * scale, 0)`` with the derivative ``where(keep, dx * scale, 0)``.

    The backward pass keeps only the mask (bool ``keep``, or its int select form) and the small
    ``scale``, never a float copy of the mask; no gradient flows to ``scale`` (nor to a rate
    behind it), and a float16 output clipped at its largest finite value passes its gradient
    straight through, as in ``jaxdrop._common.masked_scale``.
    """

    @staticmethod
    def forward(x, mask, scale):
        return _rescale(x, mask, scale, saturate=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, mask, scale = inputs
        if isinstance(scale, torch.Tensor):
            ctx.save_for_backward(mask, scale)
            ctx.scale = None
        else:
            ctx.save_for_backward(mask)
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
      keep: bool, broadcastable to ``x``; or, in eager code, an int8 select mask (-1 keep,
        0 drop; see :func:`select_mask`).
      scale: a Python float or a float32 tensor broadcastable to ``x``.

    Returns:
      A tensor like ``x``, in ``x``'s memory format when that is channels-last.
    """
    if not is_compiling():
        keep = select_mask(keep, x)
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
