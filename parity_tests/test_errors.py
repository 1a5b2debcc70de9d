"""Every bad input gets the same exception type and message text from both packages.

The messages differ only where the packages do by design: ``generator`` for ``key``,
``training`` for ``deterministic``, and shapes in each package's own layout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxdrop
import torchdrop

X_T, X_J = torch.ones(2, 3, 6, 7), jnp.ones((2, 6, 7, 3))  # The same input, both layouts.
GEN, KEY = torch.Generator().manual_seed(0), jax.random.key(0)


def _branch(h):
    return h


class Case:
    """A call to each package that must raise alike; ``replace`` maps the JAX message's words
    to torchdrop's."""

    def __init__(self, name, torch_call, jax_call, replace=()):
        self.name, self.torch_call, self.jax_call, self.replace = (
            name,
            torch_call,
            jax_call,
            replace,
        )


def _op_pair(op: str, torch_x=X_T, jax_x=X_J):
    """Callers of ``op`` in each package with default arguments that the case overrides."""
    defaults = {
        "drop_block": {"rate": 0.1, "block_size": 3},
        "drop_path": {"rate": 0.1},
        "spatial_dropout": {"rate": 0.1},
        "uout": {"rate": 0.1},
        "cutout": {"size": 2},
        "stochastic_depth": {"rate": 0.1},
    }[op]

    def call_torch(**kw):
        kw = {**defaults, **kw}
        if op == "stochastic_depth":
            return torchdrop.stochastic_depth(kw.pop("branch", _branch), torch_x, **kw)
        return getattr(torchdrop, op)(torch_x, **kw)

    def call_jax(**kw):
        kw = {**defaults, **kw}
        if op == "stochastic_depth":
            return jaxdrop.stochastic_depth(kw.pop("branch", _branch), jax_x, **kw)
        return getattr(jaxdrop, op)(jax_x, **kw)

    return call_torch, call_jax


def _same(name, op, torch_kw, jax_kw=None, replace=(), **inputs):
    call_torch, call_jax = _op_pair(op, **inputs)
    jax_kw = torch_kw if jax_kw is None else jax_kw
    return Case(name, lambda: call_torch(**torch_kw), lambda: call_jax(**jax_kw), replace)


BAD_RATES = [
    ("negative", -0.1, -0.1),
    ("above-one", 1.5, 1.5),
    ("nan", math.nan, math.nan),
    ("bool", True, True),
    ("numpy-bool", np.bool_(False), np.bool_(False)),
    ("string", "0.1", "0.1"),
    ("list", [0.1], [0.1]),
    ("none", None, None),
    ("non-scalar", torch.full((2,), 0.1), jnp.full((2,), 0.1)),
    ("bool-array", torch.tensor(True), jnp.asarray(True)),
]
RATE_OPS = ["drop_block", "drop_path", "spatial_dropout", "uout", "stochastic_depth"]

CASES = [
    _same(f"{op}-rate-{name}", op, {"rate": rate_t}, {"rate": rate_j})
    for op in RATE_OPS
    for name, rate_t, rate_j in BAD_RATES
]
TRAINING = (("`deterministic`", "`training`"),)
SOURCE = (("`key`", "`generator`"),)
CASES += [
    # Every op: x of an integer dtype or the wrong rank, a non-bool mode flag.
    *[
        _same(f"{op}-x-int", op, {}, torch_x=X_T.int(), jax_x=X_J.astype(jnp.int32))
        for op in ["drop_block", "drop_path", "spatial_dropout", "uout", "cutout"]
    ],
    *[
        _same(f"{op}-x-rank2", op, {}, torch_x=torch.ones(2, 3), jax_x=jnp.ones((2, 3)))
        for op in ["drop_block", "spatial_dropout", "cutout"]
    ],
    _same(
        "drop_block-x-rank6",
        "drop_block",
        {},
        torch_x=torch.ones(1, 2, 2, 2, 2, 1),
        jax_x=jnp.ones((1, 2, 2, 2, 2, 1)),
    ),
    *[
        _same(f"{op}-x-rank0", op, {}, torch_x=torch.tensor(1.0), jax_x=jnp.asarray(1.0))
        for op in ["drop_path"]
    ],
    _same(
        "stochastic_depth-row-x-rank0",
        "stochastic_depth",
        {"mode": "row"},
        torch_x=torch.tensor(1.0),
        jax_x=jnp.asarray(1.0),
    ),
    *[
        _same(f"{op}-training-string", op, {"training": "yes"}, {"deterministic": "yes"}, TRAINING)
        for op in [
            "drop_block",
            "drop_path",
            "spatial_dropout",
            "uout",
            "cutout",
            "stochastic_depth",
        ]
    ],
    # DropBlock options.
    *[
        _same(f"drop_block-block_size-{value!r}", "drop_block", {"block_size": value})
        for value in [0, -2, (3,), (3, 3, 3), 2.5, "3", (3, 0), True, None]
    ],
    _same("drop_block-seed_region", "drop_block", {"seed_region": "middle"}),
    _same("drop_block-seed_region-int", "drop_block", {"seed_region": 1}),
    _same("drop_block-calibration", "drop_block", {"calibration": "best"}),
    _same("drop_block-normalize", "drop_block", {"normalize": "mean"}),
    _same("drop_block-normalize-none", "drop_block", {"normalize": None}),
    _same("drop_block-share_channels", "drop_block", {"share_channels": "yes"}),
    *[
        _same(f"drop_block-eps-{value!r}", "drop_block", {"eps": value})
        for value in [0.0, -1e-6, math.inf, math.nan, "1e-6", True]
    ],
    _same(
        "drop_block-seeds-float",
        "drop_block",
        {"seeds": torch.zeros(2, 3, 4, 5)},
        {"seeds": jnp.zeros((2, 4, 5, 3))},
    ),
    _same(
        "drop_block-seeds-int",
        "drop_block",
        {"seeds": torch.zeros(2, 3, 4, 5, dtype=torch.int32)},
        {"seeds": jnp.zeros((2, 4, 5, 3), jnp.int32)},
    ),
    _same(
        "drop_block-seeds-shape",
        "drop_block",
        {"seeds": torch.zeros(2, 1, 4, 5, dtype=torch.bool)},
        {"seeds": jnp.zeros((2, 4, 5, 1), bool)},
        replace=(("(2, 4, 5, 3)", "(2, 3, 4, 5)"), ("(2, 4, 5, 1)", "(2, 1, 4, 5)")),
    ),
    _same(
        "drop_block-seeds-shape-full",
        "drop_block",
        {"seeds": torch.zeros(2, 3, 4, 5, dtype=torch.bool), "seed_region": "full"},
        {"seeds": jnp.zeros((2, 4, 5, 3), bool), "seed_region": "full"},
        replace=(("(2, 6, 7, 3)", "(2, 3, 6, 7)"), ("(2, 4, 5, 3)", "(2, 3, 4, 5)")),
    ),
    _same(
        "drop_block-both-sources",
        "drop_block",
        {"generator": GEN, "seeds": torch.zeros(2, 3, 4, 5, dtype=torch.bool)},
        {"key": KEY, "seeds": jnp.zeros((2, 4, 5, 3), bool)},
        SOURCE,
    ),
    Case(
        "drop_block_seed_shape-rank2",
        lambda: torchdrop.drop_block_seed_shape((2, 3), 3),
        lambda: jaxdrop.drop_block_seed_shape((2, 3), 3),
    ),
    Case(
        "drop_block_seed_shape-share",
        lambda: torchdrop.drop_block_seed_shape((2, 3, 6, 7), 3, share_channels=1),
        lambda: jaxdrop.drop_block_seed_shape((2, 6, 7, 3), 3, share_channels=1),
    ),
    Case(
        "drop_block_seed_shape-region",
        lambda: torchdrop.drop_block_seed_shape((2, 3, 6, 7), 3, seed_region="x"),
        lambda: jaxdrop.drop_block_seed_shape((2, 6, 7, 3), 3, seed_region="x"),
    ),
    Case(
        "drop_block_seed_shape-block",
        lambda: torchdrop.drop_block_seed_shape((2, 3, 6, 7), (3, 3, 3)),
        lambda: jaxdrop.drop_block_seed_shape((2, 6, 7, 3), (3, 3, 3)),
    ),
    Case(
        "drop_block_gamma-rank6",
        lambda: torchdrop.drop_block_gamma((1,) * 6, 0.1, 3),
        lambda: jaxdrop.drop_block_gamma((1,) * 6, 0.1, 3),
    ),
    Case(
        "drop_block_gamma-rate",
        lambda: torchdrop.drop_block_gamma((1, 1, 6, 7), 1.5, 3),
        lambda: jaxdrop.drop_block_gamma((1, 6, 7, 1), 1.5, 3),
    ),
    Case(
        "drop_block_gamma-calibration",
        lambda: torchdrop.drop_block_gamma((1, 1, 6, 7), 0.1, 3, calibration="x"),
        lambda: jaxdrop.drop_block_gamma((1, 6, 7, 1), 0.1, 3, calibration="x"),
    ),
    # DropPath, stochastic depth, SpatialDropout.
    _same("drop_path-mode", "drop_path", {"mode": "col"}),
    _same("drop_path-scale_by_keep", "drop_path", {"scale_by_keep": 1}),
    _same(
        "drop_path-keep-shape",
        "drop_path",
        {"keep": torch.ones(3, dtype=torch.bool)},
        {"keep": jnp.ones(3, bool)},
    ),
    _same(
        "drop_path-keep-batch-shape",
        "drop_path",
        {"keep": torch.ones(2, dtype=torch.bool), "mode": "batch"},
        {"keep": jnp.ones(2, bool), "mode": "batch"},
    ),
    _same("drop_path-keep-float", "drop_path", {"keep": torch.ones(2)}, {"keep": jnp.ones(2)}),
    _same(
        "drop_path-both-sources",
        "drop_path",
        {"generator": GEN, "keep": torch.ones(2, dtype=torch.bool)},
        {"key": KEY, "keep": jnp.ones(2, bool)},
        SOURCE,
    ),
    _same("stochastic_depth-branch", "stochastic_depth", {"branch": 3}),
    _same("stochastic_depth-scaling", "stochastic_depth", {"scaling": "train"}),
    _same("stochastic_depth-mode", "stochastic_depth", {"mode": "col"}),
    _same(
        "stochastic_depth-keep-row",
        "stochastic_depth",
        {"mode": "row", "keep": torch.ones((), dtype=torch.bool)},
        {"mode": "row", "keep": jnp.ones((), bool)},
    ),
    _same(
        "stochastic_depth-keep-int",
        "stochastic_depth",
        {"keep": torch.tensor(1, dtype=torch.int32)},
        {"keep": jnp.asarray(1)},
    ),
    _same(
        "stochastic_depth-both-sources",
        "stochastic_depth",
        {"generator": GEN, "keep": torch.tensor(True)},
        {"key": KEY, "keep": jnp.asarray(True)},
        SOURCE,
    ),
    _same(
        "spatial_dropout-keep-shape",
        "spatial_dropout",
        {"keep": torch.ones(2, 4, dtype=torch.bool)},
        {"keep": jnp.ones((2, 4), bool)},
    ),
    _same("spatial_dropout-scale_by_keep", "spatial_dropout", {"scale_by_keep": "no"}),
    _same(
        "spatial_dropout-both-sources",
        "spatial_dropout",
        {"generator": GEN, "keep": torch.ones(2, 3, dtype=torch.bool)},
        {"key": KEY, "keep": jnp.ones((2, 3), bool)},
        SOURCE,
    ),
    # Cutout.
    *[
        _same(f"cutout-size-{value!r}", "cutout", {"size": value})
        for value in [-1, (2,), (2, -1), 2.5, "2", None]
    ],
    *[
        _same(f"cutout-num_holes-{value!r}", "cutout", {"num_holes": value})
        for value in [0, 1.5, -2]
    ],
    *[_same(f"cutout-fill-{value!r}", "cutout", {"fill": value}) for value in ["a", True, None]],
    _same(
        "cutout-centers-float",
        "cutout",
        {"centers": torch.zeros(2, 2)},
        {"centers": jnp.zeros((2, 2))},
    ),
    _same(
        "cutout-centers-bool",
        "cutout",
        {"centers": torch.zeros(2, 2, dtype=torch.bool)},
        {"centers": jnp.zeros((2, 2), bool)},
    ),
    _same(
        "cutout-centers-shape",
        "cutout",
        {"centers": torch.zeros(2, 2, 2, dtype=torch.int32)},
        {"centers": jnp.zeros((2, 2, 2), jnp.int32)},
    ),
    _same(
        "cutout-centers-holes",
        "cutout",
        {"centers": torch.zeros(2, 2, dtype=torch.int32), "num_holes": 2},
        {"centers": jnp.zeros((2, 2), jnp.int32), "num_holes": 2},
    ),
    _same(
        "cutout-both-sources",
        "cutout",
        {"generator": GEN, "centers": torch.zeros(2, 2, dtype=torch.int32)},
        {"key": KEY, "centers": jnp.zeros((2, 2), jnp.int32)},
        SOURCE,
    ),
    # Uout (rank-2 input: the same shape in both layouts).
    _same(
        "uout-noise-int",
        "uout",
        {"noise": torch.zeros(2, 3, dtype=torch.int32)},
        {"noise": jnp.zeros((2, 3), jnp.int32)},
        torch_x=torch.ones(2, 3),
        jax_x=jnp.ones((2, 3)),
    ),
    _same(
        "uout-noise-shape",
        "uout",
        {"noise": torch.zeros(5)},
        {"noise": jnp.zeros(5)},
        torch_x=torch.ones(2, 3),
        jax_x=jnp.ones((2, 3)),
    ),
    _same(
        "uout-noise-rank",
        "uout",
        {"noise": torch.zeros(1, 2, 3)},
        {"noise": jnp.zeros((1, 2, 3))},
        torch_x=torch.ones(2, 3),
        jax_x=jnp.ones((2, 3)),
    ),
    _same(
        "uout-both-sources",
        "uout",
        {"generator": GEN, "noise": torch.zeros(2, 3)},
        {"key": KEY, "noise": jnp.zeros((2, 3))},
        SOURCE,
        torch_x=torch.ones(2, 3),
        jax_x=jnp.ones((2, 3)),
    ),
    # Schedules.
    *[
        Case(
            f"linear_ramp-{args!r}",
            lambda args=args: torchdrop.schedules.linear_ramp(*args),
            lambda args=args: jaxdrop.schedules.linear_ramp(*args),
        )
        for args in [(1.5, 10), (0.1, 0), (0.1, 10, -1), (0.1, 2.5), (True, 10)]
    ],
    Case(
        "linear_ramp-array-rate",
        lambda: torchdrop.schedules.linear_ramp(torch.tensor(0.1), 10),
        lambda: jaxdrop.schedules.linear_ramp(jnp.asarray(0.1), 10),
    ),
    # The modules check their settings at construction, with the functional ops' messages.
    Case(
        "DropBlock-rate",
        lambda: torchdrop.DropBlock(1.5, 3),
        lambda: jaxdrop.drop_block(X_J, 1.5, 3),
    ),
    Case(
        "DropBlock-normalize",
        lambda: torchdrop.DropBlock(0.1, 3, normalize="mean"),
        lambda: jaxdrop.drop_block(X_J, 0.1, 3, normalize="mean"),
    ),
    Case(
        "DropBlock-eps",
        lambda: torchdrop.DropBlock(0.1, 3, eps=0),
        lambda: jaxdrop.drop_block(X_J, 0.1, 3, eps=0),
    ),
    Case(
        "DropPath-mode",
        lambda: torchdrop.DropPath(0.1, mode="col"),
        lambda: jaxdrop.drop_path(X_J, 0.1, mode="col"),
    ),
    Case(
        "StochasticDepth-scaling",
        lambda: torchdrop.StochasticDepth(torch.nn.Identity(), 0.1, scaling="x"),
        lambda: jaxdrop.stochastic_depth(_branch, X_J, 0.1, scaling="x"),
    ),
    Case(
        "SpatialDropout-rate",
        lambda: torchdrop.SpatialDropout(True),
        lambda: jaxdrop.spatial_dropout(X_J, True),
    ),
    Case("Uout-rate", lambda: torchdrop.Uout(2.0), lambda: jaxdrop.uout(X_J, 2.0)),
    Case(
        "Cutout-num_holes",
        lambda: torchdrop.Cutout(3, num_holes=0),
        lambda: jaxdrop.cutout(X_J, 3, num_holes=0),
    ),
    Case(
        "Cutout-fill",
        lambda: torchdrop.Cutout(3, fill="a"),
        lambda: jaxdrop.cutout(X_J, 3, fill="a"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_error(case):
    with pytest.raises((ValueError, TypeError)) as jax_error:
        case.jax_call()
    expected = str(jax_error.value)
    for old, new in case.replace:
        assert old in expected, f"{old!r} not in the JAX message {expected!r}"
        expected = expected.replace(old, new)
    with pytest.raises(jax_error.type) as torch_error:
        case.torch_call()
    assert str(torch_error.value) == expected


def test_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
