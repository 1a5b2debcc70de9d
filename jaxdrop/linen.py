"""Flax Linen modules over the jaxdrop functional ops.

Each module is a thin wrapper: it resolves ``deterministic`` (given to the constructor or at call
time, exactly once, as ``flax.linen.Dropout`` does), takes ``rate`` from its field unless a
call-time ``rate`` overrides it, draws a key from the rng stream named by ``rng_collection``
only when it actually drops, and calls the matching op in :mod:`jaxdrop`.

A call-time ``rate`` may be a traced scalar, so a schedule (:mod:`jaxdrop.schedules`) runs inside
one compiled training step::

    rate = jaxdrop.schedules.linear_ramp(0.1, total_steps=5000)(step)
    y = model.apply(variables, x, rate=rate, rngs={"dropout": key})

``rate`` is always the probability of dropping: timm's ``drop_prob``, torchvision's ``p`` and
TensorFlow's ``1 - keep_prob``. Layout is channels-last, ``(N, *spatial, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import dropspec
from jaxdrop import _common, random
from jaxdrop._cutout import cutout
from jaxdrop._drop_block import drop_block
from jaxdrop._drop_path import drop_path
from jaxdrop._spatial_dropout import spatial_dropout
from jaxdrop._stochastic_depth import _scaled, stochastic_depth
from jaxdrop._uout import uout

__all__ = ["Cutout", "DropBlock", "DropPath", "SpatialDropout", "StochasticDepth", "Uout"]

Rate = float | jax.Array


def _merge_deterministic(module: nn.Module, deterministic: bool | None) -> bool:
    """The ``deterministic`` given to the constructor or at call time, exactly once."""
    name = type(module).__name__
    rule = f"`deterministic` must be passed exactly once, to the {name} constructor or at call time"
    if module.deterministic is None and deterministic is None:
        raise ValueError(
            f"{rule}, got neither: e.g. {name}(..., deterministic=not train) or "
            "layer(x, deterministic=not train)."
        )
    if module.deterministic is not None and deterministic is not None:
        raise ValueError(
            f"{rule}, got both: deterministic={module.deterministic!r} in the constructor and "
            f"deterministic={deterministic!r} at call time."
        )
    value = deterministic if module.deterministic is None else module.deterministic
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            "`deterministic` must be a Python bool, got a traced value: under nn.remat, nn.jit "
            f"or nn.scan, give it to the constructor, {name}(..., deterministic=not train), "
            "or mark the argument static."
        )
    return dropspec.check_bool("deterministic", value)


def _make_key(module: nn.Module) -> jax.Array:
    """A fresh key from the rng stream ``module.rng_collection``, with a helpful error."""
    collection = module.rng_collection
    if not module.has_rng(collection):
        raise ValueError(
            f"{type(module).__name__} needs an rng stream named {collection!r} when "
            f"deterministic is False: pass rngs={{{collection!r}: key}} to apply() (to init(), "
            f"{{'params': key, {collection!r}: key}}), or set deterministic=True to evaluate."
        )
    return module.make_rng(collection)


def _dropout_key(module: nn.Module, deterministic: bool, rate: Rate) -> jax.Array | None:
    """A key when the module may drop; None in evaluation or when ``rate`` is statically 0.

    Nothing random happens then, so no rng stream is needed.
    """
    if deterministic or dropspec.check_rate(rate) == 0.0:
        return None
    return _make_key(module)


class DropBlock(nn.Module):
    """DropBlock: zeroes contiguous blocks of a feature map and rescales the rest.

    Ghiasi, Lin, Le, "DropBlock: A regularization method for convolutional networks"
    (NeurIPS 2018). Wraps :func:`jaxdrop.drop_block`, which documents every option.

    ``rate`` is the probability of dropping a unit: timm's ``drop_prob``, torchvision's ``p``,
    ``1 - keep_prob`` of the paper and TensorFlow. The paper ramps it up from 0 during training
    (:func:`jaxdrop.schedules.linear_ramp`); pass the ramp's value as the call-time ``rate``.

    Attributes:
      rate: drop probability in [0, 1].
      block_size: an int or one int per spatial dim, clipped to the map; even sizes allowed.
      share_channels: one mask per example for all channels (default False: one per channel).
      seed_region: "valid" (default, paper and torchvision) or "full" (timm).
      calibration: "paper" (default, the paper's gamma) or "exact" (drops ``rate`` in
        expectation, overlaps and borders included).
      normalize: "batch" (default), "example", "expected" or "none".
      eps: keeps a fully dropped tensor from dividing by zero (default 1e-6).
      recompute_mask: redraw the mask in the backward pass instead of keeping it (default
        False): less activation memory, twice the mask work; no ``jax.jvp``.
      deterministic: if True, return the input unchanged; if None (default), it must be
        passed at call time.
      rng_collection: the rng stream that masks are drawn from (default "dropout").

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = DropBlock(rate=0.2, block_size=3)
      >>> x = jnp.ones((2, 8, 8, 4))  # (N, H, W, C)
      >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
      >>> y.shape, bool((y == 0).any())
      ((2, 8, 8, 4), True)
      >>> bool((layer.apply({}, x, deterministic=True) == x).all())
      True
    """

    rate: float
    block_size: int | Sequence[int]
    share_channels: bool = False
    seed_region: str = "valid"
    calibration: str = "paper"
    normalize: str = "batch"
    eps: float = 1e-6
    recompute_mask: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(
        self, x: jax.Array, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies DropBlock.

        Args:
          x: input of shape ``(N, *spatial, C)`` with 1 to 3 spatial dims.
          deterministic: if True, return ``x`` unchanged; give it here or to the constructor.
          rate: replaces the ``rate`` field for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = _merge_deterministic(self, deterministic)
        rate = self.rate if rate is None else rate
        return drop_block(
            x,
            rate,
            self.block_size,
            key=_dropout_key(self, deterministic, rate),
            deterministic=deterministic,
            share_channels=self.share_channels,
            seed_region=self.seed_region,
            calibration=self.calibration,
            normalize=self.normalize,
            eps=self.eps,
            recompute_mask=self.recompute_mask,
        )


class DropPath(nn.Module):
    """DropPath: zeroes whole examples of a residual branch (per-sample stochastic depth).

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016), in the per-example form
    of timm's ``DropPath`` and torchvision's ``StochasticDepth``. Apply it to the branch output,
    ``y = x + DropPath(rate)(f(x), deterministic=not train)``; the branch is always computed (see
    :class:`StochasticDepth` to skip it). Wraps :func:`jaxdrop.drop_path`.

    ``rate``: timm's ``drop_prob``, torchvision's ``p``, ``1 - survival_prob`` (TF
    ``keep_prob``).

    Attributes:
      rate: drop probability in [0, 1].
      mode: "row" (default), one draw per example on axis 0; "batch", one for the batch.
      scale_by_keep: divide kept examples by ``1 - rate`` (default True).
      deterministic: if True, return the input unchanged; if None (default), it must be
        passed at call time.
      rng_collection: the rng stream that masks are drawn from (default "dropout").

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = DropPath(rate=0.5, deterministic=False)
      >>> y = layer.apply({}, jnp.ones((8, 3)), rngs={"dropout": jax.random.key(0)})
      >>> sorted(set(y[:, 0].tolist()))  # each row is dropped (0) or kept and scaled by 2
      [0.0, 2.0]
    """

    rate: float
    mode: str = "row"
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(
        self, x: jax.Array, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies DropPath.

        Args:
          x: the branch output, shape ``(N, ...)``, any rank >= 1.
          deterministic: if True, return ``x`` unchanged; give it here or to the constructor.
          rate: replaces the ``rate`` field for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = _merge_deterministic(self, deterministic)
        rate = self.rate if rate is None else rate
        return drop_path(
            x,
            rate,
            key=_dropout_key(self, deterministic, rate),
            mode=self.mode,
            scale_by_keep=self.scale_by_keep,
            deterministic=deterministic,
        )


class SpatialDropout(nn.Module):
    """SpatialDropout: zeroes whole channels, independently per example.

    Tompson et al., "Efficient Object Localization Using Convolutional Networks" (CVPR 2015);
    PyTorch's ``Dropout1d/2d/3d`` and Keras' ``SpatialDropout``. Wraps
    :func:`jaxdrop.spatial_dropout`.

    ``rate``: the probability of dropping a channel (torch's ``p``, TF ``1 - keep_prob``).

    Attributes:
      rate: drop probability in [0, 1].
      scale_by_keep: divide kept channels by ``1 - rate`` (default True).
      deterministic: if True, return the input unchanged; if None (default), it must be
        passed at call time.
      rng_collection: the rng stream that masks are drawn from (default "dropout").

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = SpatialDropout(rate=0.5, deterministic=False)
      >>> y = layer.apply({}, jnp.ones((1, 4, 4, 6)), rngs={"dropout": jax.random.key(1)})
      >>> y.shape, sorted(set(y[0].reshape(16, 6)[0].tolist()))  # per channel: 0 or 2
      ((1, 4, 4, 6), [0.0, 2.0])
    """

    rate: float
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(
        self, x: jax.Array, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies SpatialDropout.

        Args:
          x: input of shape ``(N, *spatial, C)`` with 1 to 3 spatial dims.
          deterministic: if True, return ``x`` unchanged; give it here or to the constructor.
          rate: replaces the ``rate`` field for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = _merge_deterministic(self, deterministic)
        rate = self.rate if rate is None else rate
        return spatial_dropout(
            x,
            rate,
            key=_dropout_key(self, deterministic, rate),
            scale_by_keep=self.scale_by_keep,
            deterministic=deterministic,
        )


class Uout(nn.Module):
    """Uout: ``x + x * r`` with ``r ~ U(-rate, rate)`` per element.

    Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch Normalization
    by Variance Shift" (CVPR 2019): uniform noise with mean 0 shifts the variance between
    training and test less than Dropout, so it sits well before BatchNorm. ``rate`` is the
    paper's ``beta``, the noise half-width (not a drop probability; nothing is zeroed). Wraps
    :func:`jaxdrop.uout`.

    Attributes:
      rate: the noise half-width in [0, 1].
      deterministic: if True, return the input unchanged; if None (default), it must be
        passed at call time.
      rng_collection: the rng stream that the noise is drawn from (default "dropout").

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = Uout(rate=0.1).apply(
      ...     {}, jnp.ones((2, 5)), deterministic=False, rngs={"dropout": jax.random.key(0)}
      ... )
      >>> bool((jnp.abs(y - 1) <= 0.1).all())
      True
    """

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(
        self, x: jax.Array, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies Uout.

        Args:
          x: input of any shape.
          deterministic: if True, return ``x`` unchanged; give it here or to the constructor.
          rate: replaces the ``rate`` field for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = _merge_deterministic(self, deterministic)
        rate = self.rate if rate is None else rate
        return uout(
            x, rate, key=_dropout_key(self, deterministic, rate), deterministic=deterministic
        )


class Cutout(nn.Module):
    """Cutout: sets ``num_holes`` boxes per example to ``fill``, in all channels.

    DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (2017). Holes are centred uniformly over the map and clipped at its borders; nothing is
    rescaled. Wraps :func:`jaxdrop.cutout`. It has no rate: every example gets its holes.

    Attributes:
      size: the hole size, an int or one int per spatial dim.
      num_holes: holes per example (default 1).
      fill: the value written into the holes (default 0.0).
      deterministic: if True, return the input unchanged; if None (default), it must be
        passed at call time.
      rng_collection: the rng stream that centres are drawn from (default "dropout").

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = Cutout(size=2, deterministic=False).apply(
      ...     {}, jnp.ones((3, 8, 8, 1)), rngs={"dropout": jax.random.key(0)}
      ... )
      >>> y.shape, bool((y.sum(axis=(1, 2, 3)) >= 64 - 4).all())
      ((3, 8, 8, 1), True)
    """

    size: int | Sequence[int]
    num_holes: int = 1
    fill: float = 0.0
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        """Applies Cutout.

        Args:
          x: input of shape ``(N, *spatial, C)`` with 1 to 3 spatial dims.
          deterministic: if True, return ``x`` unchanged; give it here or to the constructor.

        Returns:
          An array like ``x``.
        """
        deterministic = _merge_deterministic(self, deterministic)
        return cutout(
            x,
            self.size,
            key=None if deterministic else _make_key(self),
            num_holes=self.num_holes,
            fill=self.fill,
            deterministic=deterministic,
        )


def _identity(tree):
    return tree


def _zeros_like_output(branch: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Zeros shaped like ``branch(*args, **kwargs)``, found without computing it.

    The branch is traced abstractly on an unbound copy of itself, so neither its variables nor
    the rng counters of the bound module change.
    """
    unbound, variables = branch.unbind()
    # Dummy keys for the rng streams the call has: only shapes are computed.
    rngs = {name: jax.random.key(0) for name in branch.scope.rngs}

    def call(variables):
        return unbound.apply(variables, *args, rngs=rngs, mutable=True, **kwargs)[0]

    shapes = jax.eval_shape(call, variables)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


class StochasticDepth(nn.Module):
    """Stochastic depth that skips a dropped residual branch instead of masking it.

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016): the block computes
    ``H = ReLU(b * f(H_prev) + id(H_prev))`` with ``b ~ Bernoulli(1 - rate)`` per mini-batch.
    This module holds the branch ``f`` and returns its contribution ``b * f(...)`` (scaled, see
    ``scaling``); the caller adds the shortcut. Wraps :func:`jaxdrop.stochastic_depth`.

    In "batch" mode a dropped branch is not computed: ``nn.cond`` under ``jit`` (a Python
    ``if`` in eager code), which is where the training speed-up comes from. The zeros returned
    then have the shape and dtype of the branch's output; the branch's parameters get a zero
    gradient, and its mutable collections (e.g. ``batch_stats``) are left exactly unchanged.
    At init the branch always runs, so that all of its variables are created. Under ``vmap``
    the ``cond`` becomes a select and both sides run (masking, no saving). "row" mode masks
    each example (DropPath semantics) and always computes the branch.

    On XLA:CPU a convolution's weight gradient inside a conditional misses the fast path it gets
    at top level (jax#12868): with convolution branches, batch mode is then far slower on CPU
    (``benchmarks/stochastic_depth.py``); use "row" there. Matrix-product branches are fine.

    ``rate``: timm's ``drop_prob``, torchvision's ``p``, ``1 - p_l`` in the paper (TF
    ``keep_prob = 1 - rate``). :func:`jaxdrop.schedules.depth_rates` gives the paper's linear
    decay over blocks.

    Attributes:
      branch: the residual branch, a Linen module.
      rate: drop probability in [0, 1].
      mode: "batch" (default: one draw per call, the branch is skipped when dropped) or "row"
        (one draw per example, the branch always runs).
      scaling: "inverted" (default: kept outputs divided by ``1 - rate`` in training, identity
        at test) or "test" (the paper: unscaled in training, times ``1 - rate`` at test).
      deterministic: if True, return the branch's output (times ``1 - rate`` for
        ``scaling="test"``); if None (default), it must be passed at call time.
      rng_collection: the rng stream that the survival draw comes from (default "dropout").

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> class Block(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool):
      ...         branch = nn.Sequential([nn.Dense(4), nn.relu])
      ...         return x + StochasticDepth(branch, rate=0.5)(x, deterministic=not train)
      >>> x = jnp.ones((2, 4))
      >>> variables = Block().init(jax.random.key(0), x, train=False)
      >>> y = Block().apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
      >>> y.shape
      (2, 4)
    """

    branch: nn.Module
    rate: float
    mode: str = "batch"
    scaling: str = "inverted"
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __call__(
        self, *args, deterministic: bool | None = None, rate: Rate | None = None, **kwargs
    ) -> Any:
        """Returns the branch's scaled contribution for this call.

        Args:
          *args: passed on to the branch.
          deterministic: if True, evaluate; give it here or to the constructor. It is not
            passed to the branch.
          rate: replaces the ``rate`` field for this call; may be a traced scalar.
          **kwargs: passed on to the branch.

        Returns:
          The branch's output (an array or a pytree), scaled and dropped as described.
        """
        deterministic = _merge_deterministic(self, deterministic)
        rate = self.rate if rate is None else rate
        mode = dropspec.check_choice("mode", self.mode)
        scaling = dropspec.check_choice("scaling", self.scaling)
        key = _dropout_key(self, deterministic, rate)
        if key is None or mode == "row" or self.is_initializing():
            # The branch runs anyway: mask (or scale) its output.
            out = self.branch(*args, **kwargs)
            return stochastic_depth(
                _identity,
                out,
                rate,
                key=key,
                mode=mode,
                scaling=scaling,
                deterministic=deterministic,
            )
        survival = _common.keep_probability(rate, dropspec.check_rate(rate))
        keep = random.bernoulli(key, survival, ())
        scale = _common.inverse_keep(survival) if scaling == "inverted" else 1.0

        def run(module):
            return _scaled(module.branch(*args, **kwargs), scale)

        def skip(module):
            return _zeros_like_output(module.branch, args, kwargs)

        if not isinstance(keep, jax.core.Tracer):
            return run(self) if bool(keep) else skip(self)
        return nn.cond(keep, run, skip, self)
