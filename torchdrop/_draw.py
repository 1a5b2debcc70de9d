"""Every random number torchdrop draws comes from here.

Today the source of randomness is a ``torch.Generator`` (or, when it is None, PyTorch's global
generator of the tensor's device). The draws are integer arithmetic on 31 uniform random bits:
``torch.Tensor.random_()`` on an int32 tensor in eager code (one 32-bit Mersenne Twister output
per value, its top bit cleared: about 2.3x faster on CPU than ``torch.randint(0, 2**31)``, which
spends a 64-bit draw and a division on each value, and 1.25x faster than ``torch.rand``), and
``torch.randint(0, 2**31, dtype=torch.int32)`` under ``torch.compile``, which traces it. Both are
uniform on ``[0, 2**31)``; they consume the generator differently, so eager draws differ from
those of earlier versions for the same seed (the distribution and the resolution do not):

* :func:`bernoulli`: ``u < floor(p * 2**31)``, always True for ``p >= 1``. P(True) is within
  ``2**-31`` of ``p`` and exactly 0 and 1 at the ends: no float rounding, no half-precision
  bias, even for the small seed rates of DropBlock (gamma ~ 1e-3). Eager CPU code draws a
  Python ``p`` of at most 1/16 over 1024 values or more sparsely (:func:`_sparse_bernoulli`):
  it draws the gaps between the True values, about ``p * n`` numbers instead of ``n`` (for
  DropBlock's 5.1M seed positions at gamma 0.0026, 0.5 ms instead of 19 ms). That is the same
  Bernoulli process with the same ``P(True) = floor(p * 2**31) / 2**31``, up to the float64
  rounding of a logarithm (a relative error near 1e-16, far inside the ``2**-31`` above), so the
  realised rate does not change; which values come out for a given seed does.
* :func:`uniform_index`: ``floor(u * n / 2**31)``, each value off uniform by at most
  ``n / 2**31``.
* :func:`uniform`: ``torch.rand`` in float32, 24 random bits in [0, 1).

The second source is a JAX key (the uint32 pair of ``jax.random.key_data(k)``): the ``key_*``
functions draw with the threefry port in ``torchdrop.random``, so that a key gives the very
numbers jaxdrop draws with ``key=k``. JAX draws in channels-last order, so each call site says
where its shape keeps the channel axis (``channel_axis``; None when the shape is the same in
both layouts, such as ``(N,)``, ``(N, C)`` or cutout's centres): the key path draws the shape
with that axis moved last, as jaxdrop does, and moves it back with ``movedim(-1,
channel_axis)``. Generator draws ignore ``channel_axis``.

Under ``torch.compile`` a ``Generator`` cannot be traced (PyTorch 2.13): leave it None there,
and note that compiled code draws from Inductor's own generator, so its numbers differ from
eager ones for the same seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import dropspec
from torchdrop import random

BITS = 31
_HIGH = 1 << BITS


def bits(shape, *, generator=None, device=None, channel_axis=None) -> torch.Tensor:
    """Uniform integers in ``[0, 2**31)``, int32, of ``shape``.

    Args:
      shape: the output shape.
      generator: the source; None uses the global generator of ``device``.
      device: where to draw.
      channel_axis: where ``shape`` keeps the channel axis (see the module docstring).
    """
    del channel_axis  # Generator draws are layout-free; the key= path will use it.
    # generator=None is left out: torch.compile cannot trace that overload with a dynamic shape.
    source = {} if generator is None else {"generator": generator}
    if torch.compiler.is_compiling():
        return torch.randint(0, _HIGH, tuple(shape), dtype=torch.int32, device=device, **source)
    # random_() on int32: uniform on [0, 2**31), the same range as randint's, at half the cost.
    return torch.empty(tuple(shape), dtype=torch.int32, device=device).random_(**source)


def threshold(p, device=None):
    """The ``(limit, always)`` pair with which ``bits < limit or always`` is Bernoulli(p).

    A Python float ``p`` gives Python values converted exactly in float64
    (``dropspec.keep_threshold``); a tensor ``p`` gives int32 and bool tensors computed in
    float32, in-graph, with ``p`` clipped into [0, 1].
    """
    if isinstance(p, (int, float)):
        count = dropspec.keep_threshold(float(p)) >> (32 - BITS)
        return (0, True) if count >= _HIGH else (count, False)
    p = torch.clamp(torch.as_tensor(p, dtype=torch.float32, device=device), 0.0, 1.0)
    always = p >= 1.0
    scaled = torch.floor(torch.where(always, 0.0, p) * float(_HIGH))
    return scaled.to(torch.int32), always


# Python probabilities at most this, over at least _SPARSE_MIN values, are drawn sparsely.
_SPARSE_P = 1 / 16
_SPARSE_MIN = 1024


def _gap_batch(expected: float) -> int:
    """How many gaps to draw at once when ``expected`` True values remain: 6 sigma more, so
    that a second batch is almost never needed."""
    return int(expected + 6 * math.sqrt(expected) + 16)


def _sparse_bernoulli(shape, limit: int, generator=None) -> torch.Tensor:
    """Bernoulli(``limit / 2**31``) booleans of ``shape`` on the CPU, from the gaps between them.

    In a sequence of independent Bernoulli(q) values the number of False values before each
    True is geometric, ``P(gap >= k) = (1 - q) ** k``, independently of the others. A gap is
    ``floor(log(1 - u) / log(1 - q))`` for ``u`` uniform in [0, 1) with 53 random bits
    (``torch.rand`` in float64): exact but for the rounding of the two logarithms. Gaps are
    drawn in batches of a few more than the expected count until they pass the end; the values
    drawn past it are discarded.
    """
    size = math.prod(shape)
    q = limit / _HIGH
    log_keep = math.log1p(-q)
    flat = np.zeros(size, dtype=bool)
    source = {} if generator is None else {"generator": generator}
    last = -1
    while True:
        count = _gap_batch((size - 1 - last) * q)
        u = torch.rand(count, dtype=torch.float64, **source).numpy()
        gaps = np.floor(np.log1p(-u) / log_keep)
        steps = np.minimum(gaps, size).astype(np.int64) + 1  # No int64 overflow for huge gaps.
        positions = last + np.cumsum(steps)
        inside = positions[positions < size]
        flat[inside] = True
        if inside.size < count:
            return torch.from_numpy(flat.reshape(tuple(shape)))
        last = int(positions[-1])


def bernoulli(shape, p, *, generator=None, device=None, channel_axis=None) -> torch.Tensor:
    """Booleans that are True with probability ``p`` (within ``2**-31``).

    Args:
      shape: the output shape.
      p: a Python float or a scalar tensor in [0, 1].
      generator: the source; None uses the global generator of ``device``.
      device: where to draw.
      channel_axis: where ``shape`` keeps the channel axis (see the module docstring).

    Returns:
      A bool tensor of ``shape``.

    Example:
      >>> import torch
      >>> draws = bernoulli((100_000,), 0.25, generator=torch.Generator().manual_seed(0))
      >>> abs(draws.float().mean().item() - 0.25) < 0.01
      True
    """
    limit, always = threshold(p, device)
    if isinstance(always, bool):
        if always:
            return torch.ones(tuple(shape), dtype=torch.bool, device=device)
        if limit == 0:
            return torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    host = torch.device(device or "cpu").type == "cpu" and not torch.compiler.is_compiling()
    sparse = isinstance(always, bool) and limit <= _SPARSE_P * _HIGH
    if host and sparse and math.prod(shape) >= _SPARSE_MIN:
        return _sparse_bernoulli(shape, limit, generator)
    draws = bits(shape, generator=generator, device=device, channel_axis=channel_axis)
    if not isinstance(always, bool):
        return (draws < limit) | always
    # always is False here: no pass to OR it in. Eager CPU code compares in NumPy, on one
    # thread: see torchdrop._common.on_host.
    if host:
        return torch.from_numpy(np.asarray(np.less(draws.numpy(), limit)))
    return draws < limit


def uniform(shape, *, generator=None, device=None, channel_axis=None) -> torch.Tensor:
    """Float32 values uniform in [0, 1) (``torch.rand``: 24 random bits)."""
    del channel_axis  # As in bits().
    source = {} if generator is None else {"generator": generator}
    return torch.rand(tuple(shape), dtype=torch.float32, device=device, **source)


def uniform_index(shape, extent, *, generator=None, device=None) -> torch.Tensor:
    """Integers uniform on ``[0, extent)`` as int64: ``floor(bits * extent / 2**31)``.

    Args:
      shape: the output shape.
      extent: an int, or ints broadcastable to ``shape`` (e.g. one per trailing axis), each in
        ``[1, 2**31)``.
      generator: the source; None uses the global generator of ``device``.
      device: where to draw.
    """
    draws = bits(shape, generator=generator, device=device).to(torch.int64)
    extent = torch.as_tensor(extent, dtype=torch.int64, device=device)
    return (draws * extent) >> BITS


# --------------------------------------------------------------------------------------------
# The key= path: jaxdrop's draws, bit for bit (torchdrop.random), in torch's layout.
# --------------------------------------------------------------------------------------------


def jax_shape(shape, channel_axis=None) -> tuple[int, ...]:
    """The shape jaxdrop draws for torch's ``shape``: the channel axis, if any, moved last."""
    shape = tuple(shape)
    if channel_axis is None:
        return shape
    return (*shape[:channel_axis], *shape[channel_axis + 1 :], shape[channel_axis])


def _torch_layout(draws: torch.Tensor, channel_axis) -> torch.Tensor:
    return draws if channel_axis is None else draws.movedim(-1, channel_axis)


def key_bernoulli(key, shape, p, *, device=None, channel_axis=None) -> torch.Tensor:
    """``jaxdrop.random.bernoulli(key, p, jax_shape(shape, channel_axis))`` in torch's layout.

    Args:
      key: a threefry key as ``torchdrop.random.key_data`` returns it.
      shape: the output shape (torch layout).
      p: a Python float (its threshold converted in float64, as jaxdrop does for a Python
        float) or a scalar tensor (in float32, clipped into [0, 1], as for a JAX array).
      device: where to draw.
      channel_axis: where ``shape`` keeps the channel axis (see the module docstring).

    Returns:
      A bool tensor of ``shape``, a view of the channels-last draw.
    """
    limits = random.threshold(p)
    draws = random.below_threshold(key, limits, jax_shape(shape, channel_axis), device=device)
    return _torch_layout(draws, channel_axis)


def key_uniform(key, shape, *, device=None, channel_axis=None) -> torch.Tensor:
    """``jax.random.uniform(key, jax_shape(shape, channel_axis))`` (float32, 23 random bits)
    in torch's layout."""
    draws = random.uniform(key, jax_shape(shape, channel_axis), device=device)
    return _torch_layout(draws, channel_axis)


def key_uniform_index(key, shape, extent, *, device=None) -> torch.Tensor:
    """``jaxdrop.random.uniform_index(key, shape, extent)``, as int64; ``shape`` is the same
    in both layouts (cutout's centres). ``extent``: ints broadcastable to ``shape``, each in
    ``[1, 2**31)``, passed on as a tensor (which ``torch.compile`` traces)."""
    extent = torch.as_tensor(extent, dtype=torch.int64, device=device)
    return random.uniform_index(key, tuple(shape), extent, device=device)
