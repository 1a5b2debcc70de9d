"""``torch.nn`` modules over the functional ops: ``self.training`` decides, as for Dropout.

Each module keeps its settings as plain attributes (``rate`` may be replaced between steps by a
schedule: under ``torch.compile`` use a tensor rate, whose value changes without recompiling)
and an optional ``generator`` (None: PyTorch's global generator; leave it None under
``torch.compile``, which cannot trace a Generator). The pre-sampled draw of each op may be
passed to ``forward`` as a keyword, and so may ``key``, the raw data of a JAX key, with which
the module draws exactly what the jaxdrop op draws with that key (see the functional ops).
``StochasticDepth.forward`` passes its keywords on to the branch: call
:func:`torchdrop.stochastic_depth` with ``key=`` there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import dropspec
from torchdrop._cutout import cutout
from torchdrop._drop_block import drop_block
from torchdrop._drop_path import drop_path
from torchdrop._spatial_dropout import spatial_dropout
from torchdrop._stochastic_depth import apply as _stochastic_depth
from torchdrop._uout import uout

__all__ = ["Cutout", "DropBlock", "DropPath", "SpatialDropout", "StochasticDepth", "Uout"]


def _shown(rate) -> str:
    return f"{rate.item():g} (tensor)" if isinstance(rate, torch.Tensor) else f"{rate:g}"


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al., NeurIPS 2018) as a module; see :func:`torchdrop.drop_block`.

    Args:
      rate: drop probability in [0, 1], a Python float or a scalar tensor.
      block_size: an int or one int per spatial dim (clipped to the map; even sizes allowed).
      share_channels: one mask per example shared by all channels.
      seed_region: "valid" or "full".
      calibration: "paper" or "exact".
      normalize: "batch", "example", "expected" or "none".
      eps: see :func:`torchdrop.drop_block`.
      generator: the source of the seeds; None uses PyTorch's global generator.

    Shape:
      ``(N, C, *spatial)`` in and out, 1 to 3 spatial dims.

    Example:
      >>> import torch
      >>> layer = DropBlock(0.1, 3, calibration="exact")
      >>> layer
      DropBlock(rate=0.1, block_size=3, share_channels=False, seed_region='valid', calibration='exact', normalize='batch', eps=1e-06)
      >>> x = torch.randn(2, 4, 8, 8)
      >>> bool(torch.equal(layer.eval()(x), x))
      True
    """  # noqa: E501

    def __init__(
        self,
        rate,
        block_size,
        *,
        share_channels: bool = False,
        seed_region: str = "valid",
        calibration: str = "paper",
        normalize: str = "batch",
        eps: float = 1e-6,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        dropspec.check_rate(rate)
        self.rate = rate
        self.block_size = block_size
        self.share_channels = dropspec.check_bool("share_channels", share_channels)
        self.seed_region = dropspec.check_choice("seed_region", seed_region)
        self.calibration = dropspec.check_choice("calibration", calibration)
        self.normalize = dropspec.check_choice("normalize", normalize)
        self.eps = dropspec.check_eps(eps)
        self.generator = generator

    def forward(
        self, x: torch.Tensor, *, seeds: torch.Tensor | None = None, key=None
    ) -> torch.Tensor:
        return drop_block(
            x,
            self.rate,
            self.block_size,
            key=key,
            generator=self.generator,
            seeds=seeds,
            training=self.training,
            share_channels=self.share_channels,
            seed_region=self.seed_region,
            calibration=self.calibration,
            normalize=self.normalize,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"rate={_shown(self.rate)}, block_size={self.block_size}, "
            f"share_channels={self.share_channels}, seed_region={self.seed_region!r}, "
            f"calibration={self.calibration!r}, normalize={self.normalize!r}, eps={self.eps:g}"
        )


class DropPath(nn.Module):
    """DropPath (per-example stochastic depth) as a module; see :func:`torchdrop.drop_path`.

    Args:
      rate: drop probability in [0, 1] (timm's ``drop_prob``).
      mode: "row" (one draw per example) or "batch".
      scale_by_keep: divide kept examples by ``1 - rate``.
      generator: the source of the draw; None uses PyTorch's global generator.

    Shape:
      ``(N, ...)`` in and out, any rank >= 1.

    Example:
      >>> import torch
      >>> DropPath(0.2)
      DropPath(rate=0.2, mode='row', scale_by_keep=True)
      >>> DropPath(0.5)(torch.ones(3, 2), keep=torch.tensor([True, False, True]))[:, 0].tolist()
      [2.0, 0.0, 2.0]
    """

    def __init__(
        self,
        rate,
        *,
        mode: str = "row",
        scale_by_keep: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        dropspec.check_rate(rate)
        self.rate = rate
        self.mode = dropspec.check_choice("mode", mode)
        self.scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
        self.generator = generator

    def forward(
        self, x: torch.Tensor, *, keep: torch.Tensor | None = None, key=None
    ) -> torch.Tensor:
        return drop_path(
            x,
            self.rate,
            key=key,
            generator=self.generator,
            keep=keep,
            mode=self.mode,
            scale_by_keep=self.scale_by_keep,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return f"rate={_shown(self.rate)}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"


class StochasticDepth(nn.Module):
    """A residual branch that survives with probability ``1 - rate`` (Huang et al., ECCV 2016).

    ``forward(*args, **kwargs)`` returns the branch's scaled contribution
    ``b * branch(*args, **kwargs)``; the caller adds the shortcut. In "batch" mode a dropped
    branch is not called (see :func:`torchdrop.stochastic_depth`, which also says what
    ``torch.compile`` does instead).

    Args:
      branch: the residual branch, an ``nn.Module`` (registered as the submodule ``branch``) or
        a callable.
      rate: drop probability in [0, 1], a Python float or a scalar tensor.
      mode: "batch" (skip the branch when dropped) or "row" (mask per example).
      scaling: "inverted" or "test".
      generator: the source of the draw; None uses PyTorch's global generator.

    Example:
      >>> import torch
      >>> block = StochasticDepth(torch.nn.Linear(3, 3), 0.5)
      >>> block
      StochasticDepth(
        rate=0.5, mode='batch', scaling='inverted'
        (branch): Linear(in_features=3, out_features=3, bias=True)
      )
      >>> x = torch.ones(2, 3)
      >>> bool(torch.equal(block.eval()(x), block.branch(x)))
      True
    """

    def __init__(
        self,
        branch: Callable,
        rate,
        *,
        mode: str = "batch",
        scaling: str = "inverted",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        dropspec.check_rate(rate)
        self.branch = branch
        self.rate = rate
        self.mode = dropspec.check_choice("mode", mode)
        self.scaling = dropspec.check_choice("scaling", scaling)
        self.generator = generator

    def forward(self, *args, **kwargs):
        return _stochastic_depth(
            self.branch,
            args,
            kwargs,
            self.rate,
            generator=self.generator,
            mode=self.mode,
            scaling=self.scaling,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return f"rate={_shown(self.rate)}, mode={self.mode!r}, scaling={self.scaling!r}"


class SpatialDropout(nn.Module):
    """SpatialDropout (whole channels) as a module; see :func:`torchdrop.spatial_dropout`.

    Args:
      rate: drop probability in [0, 1].
      scale_by_keep: divide kept channels by ``1 - rate``.
      generator: the source of the draw; None uses PyTorch's global generator.

    Shape:
      ``(N, C, *spatial)`` in and out, 1 to 3 spatial dims.

    Example:
      >>> SpatialDropout(0.1)
      SpatialDropout(rate=0.1, scale_by_keep=True)
    """

    def __init__(
        self, rate, *, scale_by_keep: bool = True, generator: torch.Generator | None = None
    ):
        super().__init__()
        dropspec.check_rate(rate)
        self.rate = rate
        self.scale_by_keep = dropspec.check_bool("scale_by_keep", scale_by_keep)
        self.generator = generator

    def forward(
        self, x: torch.Tensor, *, keep: torch.Tensor | None = None, key=None
    ) -> torch.Tensor:
        return spatial_dropout(
            x,
            self.rate,
            key=key,
            generator=self.generator,
            keep=keep,
            scale_by_keep=self.scale_by_keep,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return f"rate={_shown(self.rate)}, scale_by_keep={self.scale_by_keep}"


class Uout(nn.Module):
    """Uout (Li et al., CVPR 2019) as a module; see :func:`torchdrop.uout`.

    Args:
      rate: the noise half-width ``beta`` in [0, 1].
      generator: the source of the noise; None uses PyTorch's global generator.

    Shape:
      any shape in and out.

    Example:
      >>> Uout(0.3)
      Uout(rate=0.3)
    """

    def __init__(self, rate, *, generator: torch.Generator | None = None):
        super().__init__()
        dropspec.check_rate(rate)
        self.rate = rate
        self.generator = generator

    def forward(
        self, x: torch.Tensor, *, noise: torch.Tensor | None = None, key=None
    ) -> torch.Tensor:
        return uout(
            x, self.rate, key=key, generator=self.generator, noise=noise, training=self.training
        )

    def extra_repr(self) -> str:
        return f"rate={_shown(self.rate)}"


class Cutout(nn.Module):
    """Cutout (DeVries & Taylor, 2017) as a module, active in training only; see
    :func:`torchdrop.cutout`.

    Args:
      size: the hole size, an int or one int per spatial dim.
      num_holes: holes per example.
      fill: the value written into the holes.
      generator: the source of the centres; None uses PyTorch's global generator.

    Shape:
      ``(N, C, *spatial)`` in and out, 1 to 3 spatial dims.

    Example:
      >>> Cutout(8, num_holes=2)
      Cutout(size=8, num_holes=2, fill=0.0)
    """

    def __init__(
        self,
        size,
        *,
        num_holes: int = 1,
        fill: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.size = size
        self.num_holes = dropspec.check_positive_int("num_holes", num_holes)
        self.fill = dropspec.check_fill(fill)
        self.generator = generator

    def forward(
        self, x: torch.Tensor, *, centers: torch.Tensor | None = None, key=None
    ) -> torch.Tensor:
        return cutout(
            x,
            self.size,
            key=key,
            generator=self.generator,
            num_holes=self.num_holes,
            centers=centers,
            fill=self.fill,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, num_holes={self.num_holes}, fill={self.fill}"
