"""Stochastic depth that really skips dropped residual branches (Huang et al., ECCV 2016)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

import dropspec
from jaxdrop import _common, random


def _zeros_like_output(branch, x):
    shapes = jax.eval_shape(branch, x)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _scaled(tree, scale, keep=True):
    """Each leaf times ``scale`` (masked by ``keep``, broadcast along axis 0)."""

    def leaf(value):
        mask = keep if isinstance(keep, bool) else _common.expand_to(keep, value.ndim, (0,))
        return _common.masked_scale(value, mask, scale)

    return jax.tree.map(leaf, tree)


def _batch_size(x) -> int:
    leaves = jax.tree.leaves(x)
    shape = jnp.shape(leaves[0]) if leaves else ()
    dropspec.check_rank("x", shape, "batched")
    return shape[0]


def stochastic_depth(
    branch,
    x,
    rate,
    *,
    key=None,
    keep=None,
    mode: str = "batch",
    scaling: str = "inverted",
    deterministic: bool = False,
):
    """The scaled contribution ``b * branch(x)`` of a residual branch that survives with
    probability ``1 - rate``; the caller adds the shortcut.

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016), Eq. 2:
    ``H = ReLU(b * f(H_prev) + id(H_prev))`` with ``b ~ Bernoulli(1 - rate)`` per mini-batch.

    In "batch" mode a dropped branch is not computed at all: a Python ``if`` when ``keep`` is
    concrete (eager code), ``lax.cond`` under ``jit``, so the dropped steps are cheaper. Under
    ``vmap`` the ``cond`` becomes a ``select`` and both sides run (masking, no saving). The zeros
    returned have the shape and dtype the branch would have returned. In "row" mode the branch
    always runs and each example is masked (DropPath semantics).

    On XLA:CPU a convolution's weight gradient inside a conditional misses the fast path it gets
    at top level (jax#12868): with convolution branches, batch mode is then far slower on CPU
    (``benchmarks/stochastic_depth.py``); use "row" there. Matrix-product branches are fine.

    ``branch`` must be a pure function of ``x`` (closing over arrays is fine). A Flax module
    that updates mutable collections (BatchNorm statistics) cannot be skipped from outside
    Flax's lifted transforms, whose state would leak a tracer: wrap it in
    :class:`jaxdrop.linen.StochasticDepth` (``nn.cond``) or ``jaxdrop.nnx.StochasticDepth``.

    Args:
      branch: the residual branch ``f``, called as ``branch(x)``; returns an array or a pytree.
      x: the branch input: an array or pytree whose first leaf has the batch on axis 0.
      rate: drop probability in [0, 1], a Python float or a scalar array (may be traced).
      key: a PRNG key; required unless ``keep`` is given or ``deterministic`` is True.
      keep: bool array replacing the draw: ``()`` for "batch", ``(N,)`` for "row".
      mode: "batch" (one draw, the branch is skipped when dropped) or "row" (one per example).
      scaling: "inverted": kept outputs are divided by ``1 - rate`` in training and untouched
        at test time. "test": the paper's rule, unscaled in training and multiplied by
        ``1 - rate`` at test time.
      deterministic: if True, evaluate: ``branch(x)``, times ``1 - rate`` for ``scaling="test"``.

    Returns:
      The branch's output (pytree) scaled and masked as described.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> branch = lambda h: 2.0 * h
      >>> out = stochastic_depth(branch, jnp.ones((2, 3)), 0.5, keep=jnp.array(False))
      >>> out.tolist()
      [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
      >>> stochastic_depth(branch, jnp.ones((1, 2)), 0.5, keep=jnp.array(True)).tolist()
      [[4.0, 4.0]]
    """
    dropspec.check_branch(branch)
    rate_value = dropspec.check_rate(rate)
    mode = dropspec.check_choice("mode", mode)
    scaling = dropspec.check_choice("scaling", scaling)
    survival = _common.keep_probability(rate, rate_value)
    if dropspec.check_bool("deterministic", deterministic):
        out = branch(x)
        return _scaled(out, survival) if scaling == "test" else out
    keep_shape = (_batch_size(x),) if mode == "row" else ()
    _common.check_source(key, "keep", keep)
    if keep is not None:
        keep = _common.check_keep(keep, keep_shape, f"for mode={mode!r}")
    elif rate_value == 0.0:
        return branch(x)
    elif rate_value == 1.0:
        return _zeros_like_output(branch, x)
    else:
        _common.require_key(key, "keep")
        keep = random.bernoulli(key, survival, keep_shape)
    scale = _common.inverse_keep(survival) if scaling == "inverted" else 1.0
    if mode == "row":
        return _scaled(branch(x), scale, keep)
    if not isinstance(keep, jax.core.Tracer):
        return _scaled(branch(x), scale) if bool(keep) else _zeros_like_output(branch, x)
    return lax.cond(
        keep, lambda h: _scaled(branch(h), scale), lambda h: _zeros_like_output(branch, h), x
    )
