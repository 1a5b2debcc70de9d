"""DropBlock: dropping contiguous blocks of a feature map (Ghiasi, Lin, Le, NeurIPS 2018)."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

import dropspec
from torchdrop import _common, _draw


def _constant(fn):
    """Lets ``torch.compile`` run ``fn`` at trace time and bake its result in as a constant.

    The float64 NumPy arithmetic of ``dropspec`` (gamma, calibration, cover counts) depends
    only on Python constants: the rate, the option strings and the static shape. Dynamo cannot
    trace NumPy's ufunc methods, so it must not try. ``_geometry`` makes the spatial dims
    static, and compiled code sends a Python rate down the tensor path (see ``_gamma``), so no
    symbolic value reaches these functions. Eager code just calls them.
    """
    return torch.compiler.assume_constant_result(fn)


def _unflatten(seed_region: str, dims) -> dropspec.BlockGeometry:
    """The geometry from ``(*spatial, *block)``, flattened to plain ints for ``_constant``."""
    half = len(dims) // 2
    return dropspec.block_geometry(dims[:half], dims[half:], seed_region)


def _dims(geometry: dropspec.BlockGeometry) -> tuple[int, ...]:
    return (*geometry.spatial, *geometry.block)


_NUMPY_INT = {torch.int8: np.int8, torch.int32: np.int32, torch.int64: np.int64}


@_constant
def _host_gamma(rate: float, seed_region: str, calibration: str, *dims: int) -> float:
    return dropspec.gamma_from_rate(rate, _unflatten(seed_region, dims), calibration)


@_constant
def _host_paper_factor(seed_region: str, *dims: int) -> float:
    return dropspec.paper_factor(_unflatten(seed_region, dims))


@_constant
def _host_calibration(seed_region: str, *dims: int) -> tuple[tuple[float, ...], ...]:
    calibration = dropspec.exact_calibration(_unflatten(seed_region, dims))
    return tuple(calibration.exponents.tolist()), tuple(calibration.weights.tolist())


@_constant
def _host_cover_counts_1d(extent: int, k: int, seed_region: str) -> tuple[int, ...]:
    return tuple(dropspec.cover_counts_1d(extent, k, seed_region).tolist())


def _geometry(shape, block_size, seed_region: str) -> dropspec.BlockGeometry:
    _, spatial, _ = dropspec.split_layout(shape, channels_last=False)
    # Under torch.compile, operator.index specializes a dynamic extent to its value (with a
    # guard): the geometry and its float64 calibration are computed in Python from it.
    spatial = tuple([operator.index(extent) for extent in spatial])
    block = dropspec.check_sizes(block_size, len(spatial), name="block_size", minimum=1)
    return dropspec.block_geometry(spatial, block, seed_region)


def drop_block_seed_shape(
    shape, block_size, *, share_channels: bool = False, seed_region: str = "valid"
) -> tuple[int, ...]:
    """The shape of :func:`drop_block`'s ``seeds`` for an input of ``shape``.

    Args:
      shape: the input shape ``(N, C, *spatial)``, 1 to 3 spatial dims.
      block_size: an int or one int per spatial dim.
      share_channels: one seed map per example (``C`` becomes 1) instead of one per channel.
      seed_region: "valid" (``S - k + 1`` seed positions per axis, ``k`` clipped to ``S``) or
        "full" (``S``).

    Returns:
      ``(N, 1 if share_channels else C, *seed_spatial)``.

    Example:
      >>> drop_block_seed_shape((8, 64, 32, 16), 5)
      (8, 64, 28, 12)
      >>> drop_block_seed_shape((8, 64, 32, 16), (5, 3), share_channels=True, seed_region="full")
      (8, 1, 32, 16)
    """
    dropspec.check_rank("shape", tuple(shape), "spatial")
    dropspec.check_bool("share_channels", share_channels)
    geometry = _geometry(shape, block_size, dropspec.check_choice("seed_region", seed_region))
    return dropspec.seed_shape(shape, geometry, share_channels, channels_last=False)


class _TorchOn:
    """``torch`` as the array namespace of ``dropspec.solve_exact_gamma``, creating its constant
    tables on ``device`` (``xp=torch`` itself would put them on the CPU)."""

    log, log1p, max, exp, sum, expm1, where = (
        staticmethod(torch.log),
        staticmethod(torch.log1p),
        staticmethod(torch.max),
        staticmethod(torch.exp),
        staticmethod(torch.sum),
        staticmethod(torch.expm1),
        staticmethod(torch.where),
    )

    def __init__(self, device):
        self.device = device

    def asarray(self, values, dtype=None):
        return torch.as_tensor(values, dtype=dtype, device=self.device)


def _tensor_gamma(rate, geometry: dropspec.BlockGeometry, calibration: str, device):
    """Gamma for a tensor rate, in float32 and in-graph (``jaxdrop``'s ``_traced_gamma``)."""
    rate = _common.traced_rate(rate, device)
    full = rate >= 1.0
    if calibration == "paper":
        factor = _host_paper_factor(geometry.seed_region, *_dims(geometry))
        gamma = rate * torch.tensor(factor, dtype=torch.float32, device=rate.device)
    else:
        safe_rate = torch.where(full, 0.5, rate)
        exponents, weights = _host_calibration(geometry.seed_region, *_dims(geometry))
        table = dropspec.ExactCalibration(exponents, weights)
        gamma = dropspec.solve_exact_gamma(safe_rate, table, _TorchOn(rate.device))
    return torch.where(full, 1.0, torch.clamp(gamma, 0.0, 1.0))


def _gamma(rate, rate_value, geometry, calibration, device=None):
    if rate_value is None:
        return _tensor_gamma(rate, geometry, calibration, device)
    if _common.is_compiling():
        # Dynamo may make a float attribute symbolic (when it changes between calls), and the
        # float64 NumPy solve cannot take a symbolic value: compiled code treats a Python rate
        # as a float32 tensor rate.
        rate = torch.tensor(rate_value, dtype=torch.float32, device=device)
        return _tensor_gamma(rate, geometry, calibration, device)
    return _host_gamma(rate_value, geometry.seed_region, calibration, *_dims(geometry))


def drop_block_gamma(
    shape, rate, block_size, *, seed_region: str = "valid", calibration: str = "paper"
):
    """The seed probability gamma that :func:`drop_block` uses for ``rate``.

    Args:
      shape: the input shape ``(N, C, *spatial)``.
      rate: the drop probability, a Python float or a scalar tensor.
      block_size: an int or one int per spatial dim; clipped to the map.
      seed_region: "valid" or "full" (see :func:`drop_block`).
      calibration: "paper", the paper's Eq. 1 (``rate * prod(S) / (prod(k) * prod(S - k + 1))``,
        ``rate / prod(k)`` for full seeding), or "exact", solved so that the expected fraction of
        dropped units equals ``rate``.

    Returns:
      A Python float (computed in float64) for a Python ``rate``; a float32 tensor otherwise.
      ``rate == 1`` gives 1 under both calibrations.

    Example:
      >>> round(drop_block_gamma((1, 1, 56, 56), 0.1, 7), 6)
      0.00256
      >>> round(drop_block_gamma((1, 1, 56, 56), 0.1, 7, calibration="exact"), 6)
      0.002714
    """
    dropspec.check_rank("shape", tuple(shape), "spatial")
    rate_value = dropspec.check_rate(rate)
    geometry = _geometry(shape, block_size, dropspec.check_choice("seed_region", seed_region))
    calibration = dropspec.check_choice("calibration", calibration)
    device = rate.device if isinstance(rate, torch.Tensor) else None
    return _gamma(rate, rate_value, geometry, calibration, device)


def _window_any(mask: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """``out[i] = any(mask[i:i + k])`` along ``dim``, by doubling: about log2(k) ORs."""
    covered = 1
    while covered < k:
        step = min(covered, k - covered)
        length = mask.shape[dim] - step
        mask = mask.narrow(dim, 0, length) | mask.narrow(dim, step, length)
        covered += step
    return mask


def _expand_seeds(seeds: torch.Tensor, geometry: dropspec.BlockGeometry) -> torch.Tensor:
    """The dropped units: every unit that some seed's block covers, as bool ``(N, Cs, *S)``."""
    pads = []
    for k in reversed(geometry.block):  # F.pad lists the last dim first.
        pads.extend(dropspec.dilation_padding(k, geometry.seed_region))
    # Padded and ORed as uint8, not bool: Inductor's CPU code generator (torch 2.13) fails to
    # compile a padded bool tensor fused with a following convolution's kernels.
    dropped = torch.nn.functional.pad(seeds.to(torch.uint8), pads)
    for dim, k in enumerate(geometry.block, start=2):
        dropped = _window_any(dropped, dim, k)
    return dropped != 0


def _dropped_units(seeds: torch.Tensor, geometry: dropspec.BlockGeometry, channels_last: bool):
    """The dropped units as uint8 0/1 ``(N, Cs, *S)``, for eager code: what
    :func:`_expand_seeds` computes, in a few contiguous byte passes and laid out as ``x``
    (channels-last strides when ``channels_last``). A NumPy array for a CPU ``seeds`` (the byte
    work runs single-threaded there, see ``_common.on_host``), a tensor elsewhere.

    Each spatial axis gets ``k - 1`` zero slots after its seeds (the trailing ``k - 1`` positions
    of a "valid" axis are seed-free already), and the buffer is flattened. A unit is dropped iff
    a seed lies in the window of ``k`` slots that ends at it on each axis, so each axis is a
    sliding OR along the flat buffer at that axis' stride, by doubling (about log2(k) ORs of
    two shifted 1-D slices). A window running off the start of a row reads the previous row's
    zero slots (or the leading zero margin), never another row's seeds, so no axis needs its
    own padded copy. "full" seeding keeps the slots ``k // 2`` onwards of each axis (a strided
    view); "valid" seeding keeps the whole buffer.
    """
    batch, seed_channels = seeds.shape[:2]
    blocks = geometry.block
    buffer = [extent + k - 1 for extent, k in zip(seeds.shape[2:], blocks)]
    last = channels_last and seed_channels > 1
    physical = (batch, *buffer, seed_channels) if last else (batch, seed_channels, *buffer)
    strides, stride = [], 1
    for size in reversed(physical):
        strides.append(stride)
        stride *= size
    strides.reverse()
    axis_strides = strides[1:-1] if last else strides[2:]
    margin = sum((k - 1) * step for k, step in zip(blocks, axis_strides))
    if _common.on_host(seeds):
        xp, seeds = np, seeds.numpy()
        flat = np.zeros(margin + stride, dtype=np.uint8)
    else:
        xp = torch
        flat = torch.zeros(margin + stride, dtype=torch.uint8, device=seeds.device)
    body = flat[margin:].reshape(physical)
    body = xp.moveaxis(body, -1, 1) if last else body
    body[(slice(None), slice(None), *map(slice, seeds.shape[2:]))] = seeds
    if stride:
        for k, step in zip(blocks, axis_strides):
            covered = 1
            while covered < k:
                shift = min(covered, k - covered) * step
                flat = flat[:-shift] | flat[shift:]
                covered += shift // step
    dropped = flat.reshape(physical)
    dropped = xp.moveaxis(dropped, -1, 1) if last else dropped
    if geometry.seed_region == "full":
        crop = [slice(k // 2, k // 2 + e) for k, e in zip(blocks, geometry.spatial)]
        dropped = dropped[(slice(None), slice(None), *crop)]
    return dropped


def _select_and_count(dropped, x: torch.Tensor, normalize: str):
    """The select mask of ``_common.masked_scale`` (-1 kept, 0 dropped) from
    :func:`_dropped_units`, and the count of kept units that ``normalize`` needs (None when it
    needs none), as int64 in the layout of :func:`_normalizer`'s reduction."""
    width = _common.select_dtype(math.prod(dropped.shape), x)
    dims = tuple(range(1, dropped.ndim))
    if isinstance(dropped, np.ndarray):
        if width == torch.int8:
            select = dropped.view(np.int8) - np.int8(1)
        else:
            select = np.subtract(dropped, 1, dtype=_NUMPY_INT[width])
        kept = None
        if normalize == "batch":
            kept = torch.tensor(np.count_nonzero(select), dtype=torch.int64)
        elif normalize == "example":
            kept = torch.from_numpy(np.count_nonzero(select, axis=dims).astype(np.int64))
        return torch.from_numpy(select), kept
    select = (dropped.view(torch.int8) - 1).to(width)
    kept = None
    if normalize == "batch":
        kept = torch.count_nonzero(select)
    elif normalize == "example":
        kept = torch.count_nonzero(select, dim=dims)
    return select, kept


def _keep_probability(gamma, geometry: dropspec.BlockGeometry, device) -> torch.Tensor:
    """P(unit kept), ``(1 - gamma) ** n(p)``, float32 of shape ``(1, 1, *S)``: from
    ``dropspec`` in float64 for a Python gamma (as jaxdrop), in float32 in-graph otherwise."""
    n_spatial = len(geometry.spatial)
    if isinstance(gamma, float):
        keep_prob = dropspec.keep_probability_map(geometry, gamma)
        return torch.from_numpy(keep_prob).to(device).view(1, 1, *geometry.spatial)
    counts = torch.ones([1] * (n_spatial + 2), dtype=torch.float32, device=device)
    for axis, (extent, k) in enumerate(zip(geometry.spatial, geometry.block)):
        shape = [1] * (n_spatial + 2)
        shape[2 + axis] = extent
        per_axis = _host_cover_counts_1d(extent, k, geometry.seed_region)
        counts = counts * torch.tensor(per_axis, dtype=torch.float32, device=device).view(shape)
    return torch.exp(counts * torch.log1p(-gamma))


def _normalizer(keep: torch.Tensor, keep_prob, normalize: str, eps: float, kept=None):
    """The factor applied to kept units (see :func:`drop_block`'s ``normalize``). ``kept``, the
    count of kept units per reduction (see :func:`_select_and_count`), is counted from ``keep``
    when not given."""
    if normalize == "none":
        return 1.0
    eps32 = torch.tensor(eps, dtype=torch.float32, device=keep.device)
    if normalize == "expected":
        return 1.0 / torch.maximum(keep_prob, eps32)
    dims = tuple(range(keep.ndim)) if normalize == "batch" else tuple(range(1, keep.ndim))
    # Counting in integers is exact, and so the same in every framework and summation order.
    if kept is None:
        kept = keep.sum(dim=dims, dtype=torch.int64)
    counted = [1] * keep.ndim
    if normalize == "example":
        counted[0] = keep.shape[0]
    kept = kept.to(keep.device).reshape(counted)
    units = keep.numel() if normalize == "batch" else keep[0].numel()
    total = torch.ones((), dtype=torch.float32, device=keep.device) * units
    return total / (kept.to(torch.float32) + eps32)


def drop_block(
    x: torch.Tensor,
    rate,
    block_size,
    *,
    key=None,
    generator: torch.Generator | None = None,
    seeds: torch.Tensor | None = None,
    training: bool = True,
    share_channels: bool = False,
    seed_region: str = "valid",
    calibration: str = "paper",
    normalize: str = "batch",
    eps: float = 1e-6,
) -> torch.Tensor:
    """DropBlock: zeroes contiguous blocks of a feature map and rescales the rest.

    Seeds are drawn independently with probability gamma (see :func:`drop_block_gamma`); every
    unit inside a seed's block is dropped (Ghiasi et al., "DropBlock: A regularization method
    for convolutional networks", NeurIPS 2018, Algorithm 1). ``block_size = 1`` is Dropout and a
    block covering the whole map is SpatialDropout. The same op as ``jaxdrop.drop_block``, in
    channels-first layout.

    ``rate`` is the probability of DROPPING a unit, as in ``torch.nn.Dropout``: timm's
    ``drop_prob``, torchvision's ``p``, and ``1 - keep_prob`` of the paper and TensorFlow.

    Args:
      x: input of shape ``(N, C, *spatial)`` with 1, 2 or 3 spatial dims, any float dtype.
      rate: drop probability in [0, 1], a Python float or a scalar tensor; a tensor is clipped
        into [0, 1] in-graph (schedules need no recompilation under ``torch.compile``).
      block_size: an int or one int per spatial dim, each >= 1 and clipped to the map; even
        sizes are allowed.
      key: the raw data of a JAX key ``k``, ``jax.random.key_data(k)`` (a tuple of two ints, a
        uint32 array or an integer tensor; see :func:`torchdrop.random.key_data`): the seeds are
        then exactly those ``jaxdrop.drop_block`` draws with ``key=k``, drawn (by threefry, as
        JAX) in its channels-last seed shape and moved to channels-first. Excludes
        ``generator`` and ``seeds``; under ``torch.compile``, pass a tuple. One caveat: a
        tensor rate with ``calibration="exact"`` solves gamma in float32 with torch's ``log``
        and ``exp``, a few float32 ulps from XLA's, so a seed may differ where JAX's bits fall
        between the two thresholds (measured: at most 512 counts in 2**32 apart).
      generator: the source of the seeds; None uses PyTorch's global generator.
      seeds: a boolean tensor of seed positions, shape ``drop_block_seed_shape(x.shape, ...)``,
        used instead of a random draw.
      training: if False, return ``x`` unchanged (evaluation).
      share_channels: one spatial mask per example shared by all channels (timm's
        ``couple_channels=True``), instead of an independent mask per channel (the paper's
        reference code).
      seed_region: "valid": a seed is the first corner of a block lying wholly inside the map
        (paper, torchvision). "full": seeds anywhere, the block ``[s - k//2, s - k//2 + k)``
        around each, clipped at the borders (timm).
      calibration: "paper" (Eq. 1, ignores overlaps) or "exact" (expected drop fraction equals
        ``rate``).
      normalize: how kept units are rescaled. "batch": by ``numel / (kept + eps)`` over the
        whole mask (paper, torchvision, timm). "example": the same per example, with no
        coupling across the batch or devices. "expected": each position by ``1 / P(kept there)``
        (floored at ``eps``), exactly unbiased, with no reduction. "none": not at all.
      eps: added to the count of kept units ("batch", "example"); the floor of the keep
        probability ("expected"). torchvision uses 1e-6, timm 1e-7.

    Returns:
      A tensor like ``x``. Masks and scales are computed in float32 whatever ``x``'s dtype; a
      float16 result saturates at +-65504 rather than overflowing. Seeds are drawn with 2**-31
      resolution from a generator, 2**-32 from a key (see ``torchdrop._draw``).

    Under ``torch.compile`` the whole op is one graph. The spatial dims are specialised (a new
    map size recompiles; the batch dim may stay dynamic), and a Python ``rate`` is handled as
    a float32 tensor rate, because Dynamo may make a float symbolic: gamma is then solved in
    float32 in-graph (as for any tensor rate) rather than in float64 (a relative difference of
    about 1e-7). With ``key=``, compiled code therefore draws the seeds jaxdrop draws for the
    float32 array rate; against a Python rate in jaxdrop, a seed can differ only where JAX's
    bits fall between the two thresholds (about 1e-7 of gamma apart).

    Example:
      >>> import torch
      >>> x = torch.ones(2, 4, 16, 16)
      >>> g = torch.Generator().manual_seed(0)
      >>> y = drop_block(x, 0.2, 5, generator=g, calibration="exact")
      >>> tuple(y.shape), bool((y == 0).any())
      ((2, 4, 16, 16), True)
    """
    x = _common.as_input(x)
    rate_value = dropspec.check_rate(rate)
    seed_region = dropspec.check_choice("seed_region", seed_region)
    calibration = dropspec.check_choice("calibration", calibration)
    normalize = dropspec.check_choice("normalize", normalize)
    share_channels = dropspec.check_bool("share_channels", share_channels)
    eps = dropspec.check_eps(eps)
    geometry = _geometry(x.shape, block_size, seed_region)
    seed_shape = dropspec.seed_shape(x.shape, geometry, share_channels, channels_last=False)
    if not _common.check_training(training):
        return x
    key = _common.check_source(generator, "seeds", seeds, key=key)
    if seeds is not None:
        seeds = torch.as_tensor(seeds, device=x.device)
        dropspec.check_bool_dtype("seeds", seeds.dtype)
        dropspec.check_shape("seeds", seeds.shape, seed_shape, "see drop_block_seed_shape")
    elif rate_value == 0.0:
        return x
    gamma = _gamma(rate, rate_value, geometry, calibration, x.device)
    if seeds is None and key is not None:
        seeds = _draw.key_bernoulli(key, seed_shape, gamma, device=x.device, channel_axis=1)
    if seeds is None:
        seeds = _draw.bernoulli(
            seed_shape, gamma, generator=generator, device=x.device, channel_axis=1
        )
    if _common.is_compiling():
        keep, kept = ~_expand_seeds(seeds, geometry), None
    else:
        layout = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        channels_last = x.ndim in (4, 5) and x.is_contiguous(memory_format=layout)
        dropped = _dropped_units(seeds, geometry, channels_last and not x.is_contiguous())
        keep, kept = _select_and_count(dropped, x, normalize)
    keep_prob = _keep_probability(gamma, geometry, x.device) if normalize == "expected" else None
    scale = _normalizer(keep, keep_prob, normalize, eps, kept)
    return _common.masked_scale(x, keep, scale)
