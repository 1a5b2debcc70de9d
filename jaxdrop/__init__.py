"""jaxdrop: structured dropout for JAX and Flax.

Functional ops take an explicit PRNG ``key`` (or a pre-sampled draw), work under ``jit``,
``vmap`` and ``grad``, and accept a traced ``rate``. Flax modules live in ``jaxdrop.linen`` and
``jaxdrop.nnx``; the PyTorch twin is ``torchdrop``.

Layout is channels-last, ``(N, *spatial, C)``. ``rate`` is always the probability of dropping.
"""

from jaxdrop import random, schedules
from jaxdrop._cutout import cutout
from jaxdrop._drop_block import drop_block, drop_block_gamma, drop_block_seed_shape
from jaxdrop._drop_path import drop_path
from jaxdrop._spatial_dropout import spatial_dropout
from jaxdrop._stochastic_depth import stochastic_depth
from jaxdrop._uout import uout

__version__ = "0.1.0"

__all__ = [
    "cutout",
    "drop_block",
    "drop_block_gamma",
    "drop_block_seed_shape",
    "drop_path",
    "random",
    "schedules",
    "spatial_dropout",
    "stochastic_depth",
    "uout",
]


def __getattr__(name: str):
    # The Flax modules import flax; load them on first use only.
    if name in ("linen", "nnx"):
        import importlib

        return importlib.import_module(f"jaxdrop.{name}")
    raise AttributeError(f"module 'jaxdrop' has no attribute {name!r}")
