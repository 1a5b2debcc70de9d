"""Flax NNX modules over the jaxdrop functional ops.

Each module keeps its own rng stream, forked at construction from ``rngs`` (as
``flax.nnx.Dropout`` does), and a ``deterministic`` attribute that ``model.train()`` and
``model.eval()`` switch (``nnx.view(model, deterministic=...)`` works too). A call may override
both ``deterministic`` and ``rate``; the call-time ``rate`` may be a traced scalar, so a schedule
(:mod:`jaxdrop.schedules`) runs inside one compiled step::

    rate = jaxdrop.schedules.linear_ramp(0.1, total_steps=5000)(step)
    y = model(x, rate=rate)  # inside nnx.jit, model calls its DropBlock(..., rate=rate)

``rate`` is always the probability of dropping: timm's ``drop_prob``, torchvision's ``p`` and
TensorFlow's ``1 - keep_prob``. Layout is channels-last, ``(N, *spatial, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

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
RngsArg = nnx.Rngs | nnx.RngStream | None


def _fork_stream(rngs: RngsArg, collection: str, owner: str):
    """The module's own stream, forked from ``rngs[collection]``; ``nnx.data(None)`` if none."""
    if rngs is None:
        return nnx.data(None)
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    if isinstance(rngs, nnx.Rngs):
        try:
            return rngs[collection].fork()
        except KeyError:
            raise ValueError(
                f"`rngs` must have a stream named {collection!r} (or 'default') for {owner}, "
                f"got streams {sorted(rngs)}: e.g. rngs=nnx.Rngs(0, {collection}=1)."
            ) from None
    raise TypeError(
        f"`rngs` must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}."
    )


class _RandomModule(nnx.Module):
    """What every module here shares: its rng stream and its ``deterministic`` switch."""

    def _init_random(self, deterministic: bool | None, rng_collection: str, rngs: RngsArg):
        if deterministic is not None:
            dropspec.check_bool("deterministic", deterministic)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = _fork_stream(rngs, rng_collection, type(self).__name__)

    def _resolve_deterministic(self, deterministic: bool | None) -> bool:
        """The call's ``deterministic`` if given, else the attribute."""
        value = self.deterministic if deterministic is None else deterministic
        if value is None:
            raise ValueError(
                f"`deterministic` must be a bool, given to the {type(self).__name__} constructor, "
                "set by model.train() / model.eval(), or passed at call time, got None."
            )
        return dropspec.check_bool("deterministic", value)

    def _make_key(self) -> jax.Array:
        if self.rngs is None:
            name = type(self).__name__
            raise ValueError(
                f"{name} needs an rng stream named {self.rng_collection!r} when deterministic "
                f"is False: pass rngs=nnx.Rngs({self.rng_collection}=0) to the {name} "
                "constructor, or call model.eval() (or pass deterministic=True) to evaluate."
            )
        return self.rngs()

    def _dropout_key(self, deterministic: bool, rate: Rate) -> jax.Array | None:
        """A key when the module may drop; None in evaluation or when ``rate`` is statically 0."""
        if deterministic or dropspec.check_rate(rate) == 0.0:
            return None
        return self._make_key()

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the module evaluates (no randomness).
        """
        if deterministic is not None:
            self.deterministic = deterministic


class DropBlock(_RandomModule):
    """DropBlock: zeroes contiguous blocks of a feature map and rescales the rest.

    Ghiasi, Lin, Le, "DropBlock: A regularization method for convolutional networks"
    (NeurIPS 2018). Wraps :func:`jaxdrop.drop_block`, which documents every option.

    ``rate`` is the probability of dropping a unit: timm's ``drop_prob``, torchvision's ``p``,
    ``1 - keep_prob`` of the paper and TensorFlow. The paper ramps it up from 0 during training
    (:func:`jaxdrop.schedules.linear_ramp`); pass the ramp's value as the call-time ``rate``.

    Args:
      rate: drop probability in [0, 1].
      block_size: an int or one int per spatial dim, clipped to the map; even sizes allowed.
      share_channels: one mask per example for all channels (default False: one per channel).
      seed_region: "valid" (default, paper and torchvision) or "full" (timm).
      calibration: "paper" (default) or "exact" (drops ``rate`` in expectation).
      normalize: "batch" (default), "example", "expected" or "none".
      eps: keeps a fully dropped tensor from dividing by zero (default 1e-6).
      recompute_mask: redraw the mask in the backward pass instead of keeping it (default
        False): less activation memory, twice the mask work; no ``jax.jvp``.
      deterministic: if True, return the input unchanged (default False: training).
      rng_collection: the stream of ``rngs`` that masks are drawn from (default "dropout").
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; required unless the module only evaluates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = DropBlock(0.2, 3, rngs=nnx.Rngs(dropout=0))
      >>> x = jnp.ones((2, 8, 8, 4))  # (N, H, W, C)
      >>> y = layer(x)
      >>> y.shape, bool((y == 0).any())
      ((2, 8, 8, 4), True)
      >>> layer.eval()
      >>> bool((layer(x) == x).all())
      True
    """

    def __init__(
        self,
        rate: float,
        block_size: int | Sequence[int],
        *,
        share_channels: bool = False,
        seed_region: str = "valid",
        calibration: str = "paper",
        normalize: str = "batch",
        eps: float = 1e-6,
        recompute_mask: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsArg = None,
    ):
        dropspec.check_rate(rate)
        self.rate = rate
        self.block_size = block_size
        self.share_channels = share_channels
        self.seed_region = dropspec.check_choice("seed_region", seed_region)
        self.calibration = dropspec.check_choice("calibration", calibration)
        self.normalize = dropspec.check_choice("normalize", normalize)
        self.eps = dropspec.check_eps(eps)
        self.recompute_mask = dropspec.check_bool("recompute_mask", recompute_mask)
        self._init_random(deterministic, rng_collection, rngs)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies DropBlock.

        Args:
          x: input of shape ``(N, *spatial, C)`` with 1 to 3 spatial dims.
          deterministic: overrides the attribute for this call.
          rate: overrides the attribute for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = self._resolve_deterministic(deterministic)
        rate = self.rate if rate is None else rate
        return drop_block(
            x,
            rate,
            self.block_size,
            key=self._dropout_key(deterministic, rate),
            deterministic=deterministic,
            share_channels=self.share_channels,
            seed_region=self.seed_region,
            calibration=self.calibration,
            normalize=self.normalize,
            eps=self.eps,
            recompute_mask=self.recompute_mask,
        )


class DropPath(_RandomModule):
    """DropPath: zeroes whole examples of a residual branch (per-sample stochastic depth).

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016), in the per-example form
    of timm's ``DropPath`` and torchvision's ``StochasticDepth``. Apply it to the branch output,
    ``y = x + self.drop_path(f(x))``; the branch is always computed (see
    :class:`StochasticDepth` to skip it). Wraps :func:`jaxdrop.drop_path`.

    ``rate``: timm's ``drop_prob``, torchvision's ``p``, ``1 - survival_prob`` (TF
    ``keep_prob``).

    Args:
      rate: drop probability in [0, 1].
      mode: "row" (default), one draw per example on axis 0; "batch", one for the batch.
      scale_by_keep: divide kept examples by ``1 - rate`` (default True).
      deterministic: if True, return the input unchanged (default False: training).
      rng_collection: the stream of ``rngs`` that masks are drawn from (default "dropout").
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; required unless the module only evaluates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = DropPath(0.5, rngs=nnx.Rngs(dropout=0))
      >>> y = layer(jnp.ones((8, 3)))
      >>> sorted(set(y[:, 0].tolist()))  # each row is dropped (0) or kept and scaled by 2
      [0.0, 2.0]
    """

    def __init__(
        self,
        rate: float,
        *,
        mode: str = "row",
        scale_by_keep: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsArg = None,
    ):
        dropspec.check_rate(rate)
        self.rate = rate
        self.mode = dropspec.check_choice("mode", mode)
        self.scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
        self._init_random(deterministic, rng_collection, rngs)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies DropPath.

        Args:
          x: the branch output, shape ``(N, ...)``, any rank >= 1.
          deterministic: overrides the attribute for this call.
          rate: overrides the attribute for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = self._resolve_deterministic(deterministic)
        rate = self.rate if rate is None else rate
        return drop_path(
            x,
            rate,
            key=self._dropout_key(deterministic, rate),
            mode=self.mode,
            scale_by_keep=self.scale_by_keep,
            deterministic=deterministic,
        )


class SpatialDropout(_RandomModule):
    """SpatialDropout: zeroes whole channels, independently per example.

    Tompson et al., "Efficient Object Localization Using Convolutional Networks" (CVPR 2015);
    PyTorch's ``Dropout1d/2d/3d`` and Keras' ``SpatialDropout``. Wraps
    :func:`jaxdrop.spatial_dropout`.

    ``rate``: the probability of dropping a channel (torch's ``p``, TF ``1 - keep_prob``).

    Args:
      rate: drop probability in [0, 1].
      scale_by_keep: divide kept channels by ``1 - rate`` (default True).
      deterministic: if True, return the input unchanged (default False: training).
      rng_collection: the stream of ``rngs`` that masks are drawn from (default "dropout").
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; required unless the module only evaluates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = SpatialDropout(0.5, rngs=nnx.Rngs(dropout=1))
      >>> y = layer(jnp.ones((1, 4, 4, 6)))
      >>> y.shape, sorted(set(y[0].reshape(16, 6)[0].tolist()))  # per channel: 0 or 2
      ((1, 4, 4, 6), [0.0, 2.0])
    """

    def __init__(
        self,
        rate: float,
        *,
        scale_by_keep: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsArg = None,
    ):
        dropspec.check_rate(rate)
        self.rate = rate
        self.scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
        self._init_random(deterministic, rng_collection, rngs)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies SpatialDropout.

        Args:
          x: input of shape ``(N, *spatial, C)`` with 1 to 3 spatial dims.
          deterministic: overrides the attribute for this call.
          rate: overrides the attribute for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = self._resolve_deterministic(deterministic)
        rate = self.rate if rate is None else rate
        return spatial_dropout(
            x,
            rate,
            key=self._dropout_key(deterministic, rate),
            scale_by_keep=self.scale_by_keep,
            deterministic=deterministic,
        )


class Uout(_RandomModule):
    """Uout: ``x + x * r`` with ``r ~ U(-rate, rate)`` per element.

    Li, Chen, Hu, Yang, "Understanding the Disharmony between Dropout and Batch Normalization
    by Variance Shift" (CVPR 2019): uniform noise with mean 0 shifts the variance between
    training and test less than Dropout, so it sits well before BatchNorm. ``rate`` is the
    paper's ``beta``, the noise half-width (not a drop probability; nothing is zeroed). Wraps
    :func:`jaxdrop.uout`.

    Args:
      rate: the noise half-width in [0, 1].
      deterministic: if True, return the input unchanged (default False: training).
      rng_collection: the stream of ``rngs`` that the noise is drawn from (default "dropout").
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; required unless the module only evaluates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> y = Uout(0.1, rngs=nnx.Rngs(dropout=0))(jnp.ones((2, 5)))
      >>> bool((jnp.abs(y - 1) <= 0.1).all())
      True
    """

    def __init__(
        self,
        rate: float,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsArg = None,
    ):
        dropspec.check_rate(rate)
        self.rate = rate
        self._init_random(deterministic, rng_collection, rngs)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rate: Rate | None = None
    ) -> jax.Array:
        """Applies Uout.

        Args:
          x: input of any shape.
          deterministic: overrides the attribute for this call.
          rate: overrides the attribute for this call; may be a traced scalar.

        Returns:
          An array like ``x``.
        """
        deterministic = self._resolve_deterministic(deterministic)
        rate = self.rate if rate is None else rate
        return uout(
            x, rate, key=self._dropout_key(deterministic, rate), deterministic=deterministic
        )


class Cutout(_RandomModule):
    """Cutout: sets ``num_holes`` boxes per example to ``fill``, in all channels.

    DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (2017). Holes are centred uniformly over the map and clipped at its borders; nothing is
    rescaled. Wraps :func:`jaxdrop.cutout`. It has no rate: every example gets its holes.

    Args:
      size: the hole size, an int or one int per spatial dim.
      num_holes: holes per example (default 1).
      fill: the value written into the holes (default 0.0).
      deterministic: if True, return the input unchanged (default False: training).
      rng_collection: the stream of ``rngs`` that centres are drawn from (default "dropout").
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; required unless the module only evaluates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> y = Cutout(2, rngs=nnx.Rngs(dropout=0))(jnp.ones((3, 8, 8, 1)))
      >>> y.shape, bool((y.sum(axis=(1, 2, 3)) >= 64 - 4).all())
      ((3, 8, 8, 1), True)
    """

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        num_holes: int = 1,
        fill: float = 0.0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsArg = None,
    ):
        self.size = size
        self.num_holes = dropspec.check_positive_int("num_holes", num_holes)
        self.fill = fill
        self._init_random(deterministic, rng_collection, rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """Applies Cutout.

        Args:
          x: input of shape ``(N, *spatial, C)`` with 1 to 3 spatial dims.
          deterministic: overrides the attribute for this call.

        Returns:
          An array like ``x``.
        """
        deterministic = self._resolve_deterministic(deterministic)
        return cutout(
            x,
            self.size,
            key=None if deterministic else self._make_key(),
            num_holes=self.num_holes,
            fill=self.fill,
            deterministic=deterministic,
        )


def _identity(tree):
    return tree


def _zeros_like_output(branch: nnx.Module, args: tuple, kwargs: dict) -> Any:
    """Zeros shaped like ``branch(*args, **kwargs)``; ``nnx.eval_shape`` leaves its state alone."""
    shapes = nnx.eval_shape(lambda module: module(*args, **kwargs), branch)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


class StochasticDepth(_RandomModule):
    """Stochastic depth that skips a dropped residual branch instead of masking it.

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016): the block computes
    ``H = ReLU(b * f(H_prev) + id(H_prev))`` with ``b ~ Bernoulli(1 - rate)`` per mini-batch.
    This module keeps the branch ``f`` as its attribute ``branch`` and returns its contribution
    ``b * f(...)`` (scaled, see ``scaling``); the caller adds the shortcut. Wraps
    :func:`jaxdrop.stochastic_depth`.

    In "batch" mode a dropped branch is not computed: ``nnx.cond`` under ``nnx.jit`` (a Python
    ``if`` in eager code), which is where the training speed-up comes from. The zeros returned
    then have the shape and dtype of the branch's output; its parameters get a zero gradient,
    and its state (e.g. BatchNorm statistics, rng counts) is left exactly unchanged. Under
    ``vmap`` the ``cond`` becomes a select and both sides run. "row" mode masks each example
    (DropPath semantics) and always computes the branch.

    On XLA:CPU a convolution's weight gradient inside a conditional misses the fast path it gets
    at top level (jax#12868): with convolution branches, batch mode is then far slower on CPU
    (``benchmarks/stochastic_depth.py``); use "row" there. Matrix-product branches are fine.

    ``rate``: timm's ``drop_prob``, torchvision's ``p``, ``1 - p_l`` in the paper (TF
    ``keep_prob = 1 - rate``). :func:`jaxdrop.schedules.depth_rates` gives the paper's linear
    decay over blocks.

    Args:
      branch: the residual branch, an NNX module (or any callable graph node).
      rate: drop probability in [0, 1].
      mode: "batch" (default: one draw per call, the branch is skipped when dropped) or "row"
        (one draw per example, the branch always runs).
      scaling: "inverted" (default: kept outputs divided by ``1 - rate`` in training, identity
        at test) or "test" (the paper: unscaled in training, times ``1 - rate`` at test).
      deterministic: if True, return the branch's output (times ``1 - rate`` for
        ``scaling="test"``); default False (training).
      rng_collection: the stream of ``rngs`` that survival draws come from (default "dropout").
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``; required unless the module only evaluates.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> rngs = nnx.Rngs(params=0, dropout=1)
      >>> branch = nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.relu)
      >>> depth = StochasticDepth(branch, 0.5, rngs=rngs)
      >>> x = jnp.ones((2, 4))
      >>> y = x + depth(x)  # the branch ran (scaled by 2) or was skipped (zeros)
      >>> depth.eval()
      >>> bool((x + depth(x) == x + branch(x)).all())
      True
    """

    def __init__(
        self,
        branch: nnx.Module,
        rate: float,
        *,
        mode: str = "batch",
        scaling: str = "inverted",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsArg = None,
    ):
        dropspec.check_rate(rate)
        self.branch = branch
        self.rate = rate
        self.mode = dropspec.check_choice("mode", mode)
        self.scaling = dropspec.check_choice("scaling", scaling)
        self._init_random(deterministic, rng_collection, rngs)

    def __call__(
        self, *args, deterministic: bool | None = None, rate: Rate | None = None, **kwargs
    ) -> Any:
        """Returns the branch's scaled contribution for this call.

        Args:
          *args: passed on to the branch.
          deterministic: overrides the attribute for this call; not passed to the branch.
          rate: overrides the attribute for this call; may be a traced scalar.
          **kwargs: passed on to the branch.

        Returns:
          The branch's output (an array or a pytree), scaled and dropped as described.
        """
        deterministic = self._resolve_deterministic(deterministic)
        rate = self.rate if rate is None else rate
        key = self._dropout_key(deterministic, rate)
        if key is None or self.mode == "row":
            return stochastic_depth(
                _identity,
                self.branch(*args, **kwargs),
                rate,
                key=key,
                mode=self.mode,
                scaling=self.scaling,
                deterministic=deterministic,
            )
        survival = _common.keep_probability(rate, dropspec.check_rate(rate))
        keep = random.bernoulli(key, survival, ())
        scale = _common.inverse_keep(survival) if self.scaling == "inverted" else 1.0

        def run(branch):
            return _scaled(branch(*args, **kwargs), scale)

        def skip(branch):
            return _zeros_like_output(branch, args, kwargs)

        if not isinstance(keep, jax.core.Tracer):
            return run(self.branch) if bool(keep) else skip(self.branch)
        return nnx.cond(keep, run, skip, self.branch)
