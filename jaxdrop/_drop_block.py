"""DropBlock: dropping contiguous blocks of a feature map (Ghiasi, Lin, Le, NeurIPS 2018)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import dropspec
from jaxdrop import _common, random


class _SeedProbs(NamedTuple):
    """What the draw and the "expected" normaliser need to know about gamma."""

    threshold: jax.Array  # uint32: a seed is a draw below it ...
    always: jax.Array  # bool: ... or every position, when gamma == 1.
    keep_prob: jax.Array | None  # float32 (*spatial): P(kept), for normalize="expected".


def _geometry(shape, block_size, seed_region: str) -> dropspec.BlockGeometry:
    _, spatial, _ = dropspec.split_layout(shape, channels_last=True)
    block = dropspec.check_sizes(block_size, len(spatial), name="block_size", minimum=1)
    return dropspec.block_geometry(spatial, block, seed_region)


def drop_block_seed_shape(
    shape, block_size, *, share_channels: bool = False, seed_region: str = "valid"
) -> tuple[int, ...]:
    """The shape of :func:`drop_block`'s ``seeds`` for an input of ``shape``.

    Args:
      shape: the input shape ``(N, *spatial, C)``, 1 to 3 spatial dims.
      block_size: an int or one int per spatial dim.
      share_channels: one seed map per example (``C`` becomes 1) instead of one per channel.
      seed_region: "valid" (``S - k + 1`` seed positions per axis, ``k`` clipped to ``S``) or
        "full" (``S``).

    Returns:
      ``(N, *seed_spatial, 1 if share_channels else C)``.

    Example:
      >>> drop_block_seed_shape((8, 32, 16, 64), 5)
      (8, 28, 12, 64)
      >>> drop_block_seed_shape((8, 32, 16, 64), (5, 3), share_channels=True, seed_region="full")
      (8, 32, 16, 1)
    """
    dropspec.check_rank("shape", tuple(shape), "spatial")
    dropspec.check_bool("share_channels", share_channels)
    geometry = _geometry(shape, block_size, dropspec.check_choice("seed_region", seed_region))
    return dropspec.seed_shape(shape, geometry, share_channels, channels_last=True)


@functools.partial(jax.jit, static_argnames=("geometry", "calibration"))
def _traced_gamma(rate, geometry, calibration):
    rate = _common.traced_rate(rate)
    full = rate >= 1.0
    if calibration == "paper":
        gamma = rate * np.float32(dropspec.paper_factor(geometry))
    else:
        safe_rate = jnp.where(full, 0.5, rate)
        gamma = dropspec.solve_exact_gamma(safe_rate, dropspec.exact_calibration(geometry), jnp)
    return jnp.where(full, 1.0, jnp.clip(gamma, 0.0, 1.0))


def _gamma(rate, rate_value, geometry, calibration):
    if rate_value is not None:
        return dropspec.gamma_from_rate(rate_value, geometry, calibration)
    return _traced_gamma(rate, geometry, calibration)


def drop_block_gamma(
    shape, rate, block_size, *, seed_region: str = "valid", calibration: str = "paper"
):
    """The seed probability gamma that :func:`drop_block` uses for ``rate``.

    Args:
      shape: the input shape ``(N, *spatial, C)``.
      rate: the drop probability, a Python float or a scalar array (may be traced).
      block_size: an int or one int per spatial dim; clipped to the map.
      seed_region: "valid" or "full" (see :func:`drop_block`).
      calibration: "paper", the paper's Eq. 1 (``rate * prod(S) / (prod(k) * prod(S - k + 1))``,
        ``rate / prod(k)`` for full seeding), or "exact", solved so that the expected fraction of
        dropped units equals ``rate``.

    Returns:
      A Python float (computed in float64) for a Python ``rate``; a float32 array otherwise.
      ``rate == 1`` gives 1 under both calibrations.

    Example:
      >>> round(drop_block_gamma((1, 56, 56, 1), 0.1, 7), 6)
      0.00256
      >>> round(drop_block_gamma((1, 56, 56, 1), 0.1, 7, calibration="exact"), 6)
      0.002714
    """
    dropspec.check_rank("shape", tuple(shape), "spatial")
    rate_value = dropspec.check_rate(rate)
    geometry = _geometry(shape, block_size, dropspec.check_choice("seed_region", seed_region))
    return _gamma(rate, rate_value, geometry, dropspec.check_choice("calibration", calibration))


def _seed_probs(gamma, geometry, normalize: str) -> _SeedProbs:
    threshold, always = random.threshold(gamma)
    if normalize != "expected":
        return _SeedProbs(threshold, always, None)
    if isinstance(gamma, float):
        return _SeedProbs(threshold, always, dropspec.keep_probability_map(geometry, gamma))
    counts = dropspec.cover_counts(geometry).astype(np.float32)
    return _SeedProbs(threshold, always, jnp.exp(counts * jnp.log1p(-gamma)))


def _window_any(mask, axis: int, k: int):
    """``out[i] = any(mask[i:i + k])`` along ``axis``, by doubling: about log2(k) ORs."""
    covered = 1
    while covered < k:
        step = min(covered, k - covered)
        length = mask.shape[axis] - step
        mask = lax.slice_in_dim(mask, 0, length, axis=axis) | lax.slice_in_dim(
            mask, step, step + length, axis=axis
        )
        covered += step
    return mask


def _seed_padding(geometry: dropspec.BlockGeometry) -> tuple[tuple[int, int], ...]:
    """The border around the seeds (``(N, *seed_spatial, Cs)``) that :func:`_expand_seeds`
    needs: ``dropspec.dilation_padding`` on each spatial axis."""
    spatial = tuple(dropspec.dilation_padding(k, geometry.seed_region) for k in geometry.block)
    return ((0, 0), *spatial, (0, 0))


def _expand_seeds(padded_seeds, geometry: dropspec.BlockGeometry):
    """The dropped units: every unit that some seed's block covers, as bool ``(N, *S, Cs)``,
    from the seeds in their :func:`_seed_padding` border."""
    dropped = padded_seeds
    for axis, k in enumerate(geometry.block, start=1):
        dropped = _window_any(dropped, axis, k)
    return dropped


def _normalizer(keep, keep_prob, normalize: str, eps: float):
    """The factor applied to kept units (see :func:`drop_block`'s ``normalize``)."""
    if normalize == "none":
        return np.float32(1.0)
    if normalize == "expected":
        return (1.0 / jnp.maximum(keep_prob, np.float32(eps)))[None, ..., None]
    # Counting in integers is exact, and so the same in every framework and summation order.
    kept = _common.count_true(keep)
    if normalize == "batch":
        return np.float32(keep.size) / (jnp.sum(kept).astype(jnp.float32) + np.float32(eps))
    scale = np.float32(keep.size // keep.shape[0]) / (kept.astype(jnp.float32) + np.float32(eps))
    return _common.expand_to(scale, keep.ndim, (0,))


def _keep_mask(key, seeds, probs, geometry, seed_shape, channels: int):
    """The bool keep mask ``(N, *S, Cs)`` from the seeds, drawn from ``key`` unless given.

    A mask shared by ``channels > Cs`` channels is small next to ``x``: it is drawn into its
    border in one vectorised pass and materialised before and after the expansion (see
    ``_common.materialize``), so that neither the hash nor the ORs run once per channel. A
    per-channel mask is as large as ``x``, where an extra pass over it costs more than the
    recomputation it saves: there the draw is padded (XLA computes it once, behind the pad)
    and the expansion fuses into the select.
    """
    padding = _seed_padding(geometry)
    limits = (probs.threshold, probs.always)
    shared = seed_shape[-1] < channels
    if seeds is not None:
        padded = jnp.pad(seeds, padding)
    elif shared:
        drawn = random._padded_below_threshold(key, limits, seed_shape, padding)
        padded = _common.materialize(drawn)
    else:
        padded = jnp.pad(random.below_threshold(key, limits, seed_shape), padding)
    dropped = _expand_seeds(padded, geometry)
    return ~(_common.materialize(dropped) if shared else dropped)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _recomputed(x, key, probs, geometry, seed_shape, normalize, eps):
    """:func:`drop_block` whose backward pass redraws the mask from ``key`` instead of
    keeping it: nothing the size of ``x`` survives to the backward pass."""
    return _recomputed_forward(x, key, probs, geometry, seed_shape, normalize, eps)[0]


def _recomputed_forward(x, key, probs, geometry, seed_shape, normalize, eps):
    keep = _keep_mask(key, None, probs, geometry, seed_shape, x.shape[-1])
    scale = _normalizer(keep, probs.keep_prob, normalize, eps)
    return _common.masked_scale(x, keep, scale), (key, probs, scale)


def _recomputed_backward(geometry, seed_shape, normalize, eps, residuals, cotangent):
    key, probs, scale = residuals

    def redraw_and_rescale(cotangent):
        keep = _keep_mask(key, None, probs, geometry, seed_shape, cotangent.shape[-1])
        return _common.rescale(cotangent, keep, scale, saturate=False)

    # XLA would merge the redraw with the forward's identical one, or hoist it to the start
    # of the program, and keep the mask alive after all (an optimization barrier does not
    # stop it on CPU). A branch whose predicate reads the cotangent cannot run before the
    # cotangent exists; both branches are the same, so the predicate's value is irrelevant.
    arrived = cotangent.reshape(-1)[0] == cotangent.reshape(-1)[0]
    grad = lax.cond(arrived, redraw_and_rescale, redraw_and_rescale, cotangent)
    no_tangent = jax.tree.map(lambda leaf: np.zeros(leaf.shape, jax.dtypes.float0), (key, probs))
    return (grad, *no_tangent)


_recomputed.defvjp(_recomputed_forward, _recomputed_backward)


@functools.partial(
    jax.jit, static_argnames=("geometry", "seed_shape", "normalize", "eps", "recompute_mask")
)
def _drop_block(x, key, seeds, probs, *, geometry, seed_shape, normalize, eps, recompute_mask):
    if recompute_mask and seeds is None:
        return _recomputed(x, key, probs, geometry, seed_shape, normalize, eps)
    keep = _keep_mask(key, seeds, probs, geometry, seed_shape, x.shape[-1])
    scale = _normalizer(keep, probs.keep_prob, normalize, eps)
    return _common.masked_scale(x, keep, scale)


def drop_block(
    x,
    rate,
    block_size,
    *,
    key=None,
    seeds=None,
    deterministic: bool = False,
    share_channels: bool = False,
    seed_region: str = "valid",
    calibration: str = "paper",
    normalize: str = "batch",
    eps: float = 1e-6,
    recompute_mask: bool = False,
) -> jax.Array:
    """DropBlock: zeroes contiguous blocks of a feature map and rescales the rest.

    Seeds are drawn independently with probability gamma (see :func:`drop_block_gamma`); every
    unit inside a seed's block is dropped (Ghiasi et al., "DropBlock: A regularization method
    for convolutional networks", NeurIPS 2018, Algorithm 1). ``block_size = 1`` is Dropout and a
    block covering the whole map is SpatialDropout.

    ``rate`` is the probability of DROPPING a unit, as in ``flax.linen.Dropout``: timm's
    ``drop_prob``, torchvision's ``p``, and ``1 - keep_prob`` of the paper and TensorFlow.

    Args:
      x: input of shape ``(N, *spatial, C)`` with 1, 2 or 3 spatial dims, any float dtype.
      rate: drop probability in [0, 1], a Python float or a scalar array; an array may be
        traced (schedules need no recompilation) and is clipped into [0, 1].
      block_size: an int or one int per spatial dim, each >= 1 and clipped to the map; even
        sizes are allowed.
      key: a PRNG key; required unless ``seeds`` is given or ``deterministic`` is True.
      seeds: a boolean array of seed positions, shape ``drop_block_seed_shape(x.shape, ...)``,
        used instead of a random draw.
      deterministic: if True, return ``x`` unchanged (evaluation).
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
      recompute_mask: JAX only. Redraw the mask from ``key`` in the backward pass instead of
        keeping it (a custom VJP): saves one byte per unit of activation memory per layer,
        at the cost of drawing and expanding the seeds twice. Forward-mode differentiation
        (``jax.jvp``) is not available with it. Ignored when ``seeds`` are given.

    Returns:
      An array like ``x``. Masks and scales are computed in float32 whatever ``x``'s dtype; a
      float16 result saturates at +-65504 rather than overflowing.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((2, 16, 16, 4))
      >>> y = drop_block(x, 0.2, 5, key=jax.random.key(0), calibration="exact")
      >>> y.shape, bool((y == 0).any())
      ((2, 16, 16, 4), True)
    """
    x = _common.as_input(x)
    rate_value = dropspec.check_rate(rate)
    seed_region = dropspec.check_choice("seed_region", seed_region)
    calibration = dropspec.check_choice("calibration", calibration)
    normalize = dropspec.check_choice("normalize", normalize)
    share_channels = dropspec.check_bool("share_channels", share_channels)
    eps = dropspec.check_eps(eps)
    recompute_mask = dropspec.check_bool("recompute_mask", recompute_mask)
    geometry = _geometry(x.shape, block_size, seed_region)
    seed_shape = dropspec.seed_shape(x.shape, geometry, share_channels, channels_last=True)
    if dropspec.check_bool("deterministic", deterministic):
        return x
    _common.check_source(key, "seeds", seeds)
    if seeds is not None:
        seeds = jnp.asarray(seeds)
        dropspec.check_bool_dtype("seeds", seeds.dtype)
        dropspec.check_shape("seeds", seeds.shape, seed_shape, "see drop_block_seed_shape")
    elif rate_value == 0.0:
        return x
    else:
        _common.require_key(key, "seeds")
    probs = _seed_probs(_gamma(rate, rate_value, geometry, calibration), geometry, normalize)
    return _drop_block(
        x,
        key,
        seeds,
        probs,
        geometry=geometry,
        seed_shape=seed_shape,
        normalize=normalize,
        eps=eps,
        recompute_mask=recompute_mask,
    )
