"""torchdrop: structured dropout for PyTorch, the twin of jaxdrop.

The same ops, names, defaults, error messages and arithmetic as ``jaxdrop``, in PyTorch's
channels-first layout ``(N, C, *spatial)``: a ``generator`` (optional; PyTorch's global one by
default) replaces JAX's ``key`` and ``training`` replaces ``deterministic`` (``training=False``
is ``deterministic=True``). The pre-sampled arguments (``seeds``, ``keep``, ``centers``,
``noise``) replace the draw exactly as in jaxdrop, so both packages give the same output and
gradient for the same draw. Every op also takes ``key=``, the raw data of a JAX key
(``jax.random.key_data(k)``): it then draws, with ``torchdrop.random`` (JAX's threefry in pure
torch), exactly the numbers the jaxdrop op draws with ``key=k``, so that training runs compare
without injected draws. ``rate`` is always the probability of dropping.
"""

from torchdrop import random, schedules
from torchdrop._cutout import cutout
from torchdrop._drop_block import drop_block, drop_block_gamma, drop_block_seed_shape
from torchdrop._drop_path import drop_path
from torchdrop._modules import Cutout, DropBlock, DropPath, SpatialDropout, StochasticDepth, Uout
from torchdrop._spatial_dropout import spatial_dropout
from torchdrop._stochastic_depth import stochastic_depth
from torchdrop._uout import uout

__version__ = "0.1.0"

__all__ = [
    "Cutout",
    "DropBlock",
    "DropPath",
    "SpatialDropout",
    "StochasticDepth",
    "Uout",
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
