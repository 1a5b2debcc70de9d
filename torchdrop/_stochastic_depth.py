"""Stochastic depth that really skips dropped residual branches (Huang et al., ECCV 2016)."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

import torch
from torch.utils import _pytree as pytree

import dropspec
from torchdrop import _common, _draw

# branch -> {input signature: output spec}. Filled by _output_spec, at most once per branch
# and input signature; entries go when the branch does.
_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(branch, args, kwargs):
    """What the shapes of ``branch(*args, **kwargs)`` may depend on, or None if unhashable."""
    leaves, structure = pytree.tree_flatten((args, kwargs))
    described = tuple(
        (tuple(leaf.shape), leaf.dtype, leaf.device) if isinstance(leaf, torch.Tensor) else leaf
        for leaf in leaves
    )
    signature = (repr(structure), described, getattr(branch, "training", None))
    try:
        hash(signature)
    except TypeError:
        return None
    return signature


def _to_meta(tree):
    return pytree.tree_map(lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v, tree)


def _infer_spec(branch, args, kwargs, device):
    """The output spec of the branch, from running it on the meta device (no data, no state).

    An ``nn.Module`` runs with meta copies of its parameters and buffers
    (``torch.func.functional_call``), so its real buffers (e.g. BatchNorm statistics) are not
    touched; any other callable is called on meta copies of the inputs.
    """
    meta_args, meta_kwargs = _to_meta((args, kwargs))
    try:
        with torch.no_grad():
            if isinstance(branch, torch.nn.Module):
                named = itertools.chain(
                    branch.named_parameters(remove_duplicate=False),
                    branch.named_buffers(remove_duplicate=False),
                )
                state = {name: value.to("meta") for name, value in named}
                out = torch.func.functional_call(branch, state, meta_args, meta_kwargs)
            else:
                out = branch(*meta_args, **meta_kwargs)
    except Exception as error:
        raise TypeError(
            "stochastic_depth could not run the dropped `branch` on the meta device to learn "
            "the shape of the zeros it returns instead; pass the branch as a torch.nn.Module "
            "(its parameters and buffers are swapped for meta copies), or a function of its "
            f"inputs only. The meta call raised {type(error).__name__}: {error}"
        ) from error
    return pytree.tree_map(
        lambda v: (tuple(v.shape), v.dtype, device) if isinstance(v, torch.Tensor) else v, out
    )


def _output_spec(branch, args, kwargs, device):
    signature = _signature(branch, args, kwargs)
    try:
        cached = _SPECS.setdefault(branch, {})
    except TypeError:  # Not weakly referenceable: no cache.
        cached = {}
    if signature is None or signature not in cached:
        spec = _infer_spec(branch, args, kwargs, device)
        if signature is None:
            return spec
        cached[signature] = spec
    return cached[signature]


def _zeros_like_output(branch, args, kwargs, device):
    """Zeros shaped like ``branch(*args, **kwargs)``, without calling it on real data."""
    spec = _output_spec(branch, args, kwargs, device)
    is_spec = lambda v: isinstance(v, tuple) and len(v) == 3 and isinstance(v[1], torch.dtype)
    return pytree.tree_map(
        lambda v: torch.zeros(v[0], dtype=v[1], device=v[2]) if is_spec(v) else v,
        spec,
        is_leaf=is_spec,
    )


def _scaled(tree, scale, keep):
    """Each tensor leaf times ``scale``, masked by ``keep`` (broadcast along axis 0)."""

    def leaf(value):
        if not isinstance(value, torch.Tensor):
            return value
        mask = _common.expand_to(keep, value.ndim, (0,)) if keep.ndim else keep
        return _common.masked_scale(value, mask, scale)

    return pytree.tree_map(leaf, tree)


def _first_leaf(args):
    leaves = pytree.tree_leaves(args)
    return leaves[0] if leaves else None


def _batch_size(args) -> int:
    first = _first_leaf(args)
    shape = tuple(getattr(first, "shape", ()))
    dropspec.check_rank("x", shape, "batched")
    return shape[0]


def _device(args):
    first = _first_leaf(args)
    return first.device if isinstance(first, torch.Tensor) else torch.device("cpu")


def apply(
    branch: Callable,
    args: tuple,
    kwargs: dict,
    rate,
    *,
    key=None,
    generator: torch.Generator | None = None,
    keep: torch.Tensor | None = None,
    mode: str = "batch",
    scaling: str = "inverted",
    training: bool = True,
):
    """:func:`stochastic_depth` for ``branch(*args, **kwargs)``; the batch is the first leaf's
    axis 0. ``StochasticDepth.forward`` calls this."""
    dropspec.check_branch(branch)
    rate_value = dropspec.check_rate(rate)
    mode = dropspec.check_choice("mode", mode)
    scaling = dropspec.check_choice("scaling", scaling)
    device = _device(args)
    survival = _common.keep_probability(rate, rate_value, device)
    true = torch.ones((), dtype=torch.bool, device=device)
    if not _common.check_training(training):
        out = branch(*args, **kwargs)
        return _scaled(out, survival, true) if scaling == "test" else out
    keep_shape = (_batch_size(args),) if mode == "row" else ()
    key = _common.check_source(generator, "keep", keep, key=key)
    compiling = _common.is_compiling()
    if keep is not None:
        keep = _common.check_keep(keep, keep_shape, f"for mode={mode!r}", device)
    elif rate_value == 0.0:
        return branch(*args, **kwargs)
    elif rate_value == 1.0:
        if compiling:
            return pytree.tree_map(torch.zeros_like, branch(*args, **kwargs))
        return _zeros_like_output(branch, args, kwargs, device)
    elif key is not None:
        keep = _draw.key_bernoulli(key, keep_shape, survival, device=device)
    else:
        keep = _draw.bernoulli(keep_shape, survival, generator=generator, device=device)
    scale = _common.inverse_keep(survival) if scaling == "inverted" else 1.0
    if mode == "row" or compiling:
        # Under torch.compile a Python branch on a random draw cannot be captured in one graph:
        # batch mode computes the branch and masks it, as jaxdrop does under vmap.
        return _scaled(branch(*args, **kwargs), scale, keep)
    if bool(keep):
        return _scaled(branch(*args, **kwargs), scale, true)
    return _zeros_like_output(branch, args, kwargs, device)


def stochastic_depth(
    branch: Callable,
    x,
    rate,
    *,
    key=None,
    generator: torch.Generator | None = None,
    keep: torch.Tensor | None = None,
    mode: str = "batch",
    scaling: str = "inverted",
    training: bool = True,
):
    """The scaled contribution ``b * branch(x)`` of a residual branch that survives with
    probability ``1 - rate``; the caller adds the shortcut.

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016), Eq. 2:
    ``H = ReLU(b * f(H_prev) + id(H_prev))`` with ``b ~ Bernoulli(1 - rate)`` per mini-batch.

    In "batch" mode a dropped branch is not computed at all (a Python ``if`` on the draw, one
    host sync), so dropped steps are cheaper and its buffers (BatchNorm statistics) are not
    updated. The zeros returned instead have the shape and dtype the branch would have
    returned, learnt once per branch and input shapes by running the branch on PyTorch's meta
    device (no data, real buffers untouched) and cached: pass an ``nn.Module``, or a function
    of its inputs only (a function closing over real tensors cannot run on meta inputs and
    raises TypeError when first dropped). The output is assumed to be on the device of the
    first input. Under ``torch.compile`` the draw cannot steer Python, so batch mode computes
    the branch and masks it (the same values; the branch's buffers are updated), and
    ``rate == 1`` returns zeros after computing it. In "row" mode the branch always runs and
    each example is masked (DropPath semantics).

    Args:
      branch: the residual branch ``f``, called as ``branch(x)``; returns a tensor or a pytree
        of tensors.
      x: the branch input: a tensor or pytree whose first leaf has the batch on axis 0.
      rate: drop probability in [0, 1], a Python float or a scalar tensor.
      key: the raw data of a JAX key ``k``, ``jax.random.key_data(k)`` (a tuple of two ints, a
        uint32 array or an integer tensor; see :func:`torchdrop.random.key_data`): ``keep`` is
        then exactly what ``jaxdrop.stochastic_depth`` draws with ``key=k``. Excludes
        ``generator`` and ``keep``; under ``torch.compile``, pass a tuple.
      generator: the source of the draw; None uses PyTorch's global generator.
      keep: bool tensor replacing the draw: ``()`` for "batch", ``(N,)`` for "row".
      mode: "batch" (one draw, the branch is skipped when dropped) or "row" (one per example).
      scaling: "inverted": kept outputs are divided by ``1 - rate`` in training and untouched
        at test time. "test": the paper's rule, unscaled in training and multiplied by
        ``1 - rate`` at test time.
      training: if False, evaluate: ``branch(x)``, times ``1 - rate`` for ``scaling="test"``.

    Returns:
      The branch's output (pytree) scaled and masked as described.

    Example:
      >>> import torch
      >>> branch = lambda h: 2.0 * h
      >>> stochastic_depth(branch, torch.ones(2, 3), 0.5, keep=torch.tensor(False)).tolist()
      [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
      >>> stochastic_depth(branch, torch.ones(1, 2), 0.5, keep=torch.tensor(True)).tolist()
      [[4.0, 4.0]]
    """
    return apply(
        branch,
        (x,),
        {},
        rate,
        key=key,
        generator=generator,
        keep=keep,
        mode=mode,
        scaling=scaling,
        training=training,
    )
