"""DropPath, stochastic depth, SpatialDropout, Cutout, Uout and the schedules: jaxdrop and
torchdrop on identical draws give identical outputs and gradients."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxdrop
import torchdrop
from parity_tests import helpers
from parity_tests.tolerances import assert_close


def _compare(
    torch_op, jax_op, shape, *, dtype="float32", torch_kw, jax_kw, jax_dynamic=None, seed=0
):
    """Runs both ops on the same input and cotangent (torch layout ``shape``; rank >= 3 moves
    the channel axis for JAX) and compares outputs and input gradients."""
    rng = np.random.default_rng(seed)
    x = helpers.signed_input(rng, shape)
    cotangent = rng.standard_normal(shape).astype(np.float32)
    layout = helpers.to_jax_layout if len(shape) >= 3 else (lambda a: a)
    back = helpers.to_torch_layout if len(shape) >= 3 else (lambda a: a)
    out_t, grad_t = helpers.run_torch(
        lambda v: torch_op(v, **torch_kw),
        helpers.as_torch(x, dtype),
        helpers.as_torch(cotangent, dtype),
    )
    out_j, grad_j = helpers.run_jax(
        jax_op,
        helpers.as_jax(layout(x), dtype),
        helpers.as_jax(layout(cotangent), dtype),
        jax_dynamic,
        **jax_kw,
    )
    assert out_t.dtype == helpers.TORCH_DTYPES[dtype] and out_j.dtype == helpers.JAX_DTYPES[dtype]
    out_t, grad_t = helpers.to_numpy(out_t), helpers.to_numpy(grad_t)
    out_j, grad_j = back(helpers.to_numpy(out_j)), back(helpers.to_numpy(grad_j))
    np.testing.assert_array_equal(out_t != 0, out_j != 0, err_msg="kept units differ")
    label = f"{torch_op.__name__} {shape} {jax_kw}"
    assert_close(out_t, out_j, dtype, "output", label)
    assert_close(grad_t, grad_j, dtype, "grad", label)
    return out_t, grad_t


KEEP_ROW = np.array([True, False, True, True])


def _keep(mode: str, pattern: str) -> np.ndarray:
    if mode == "batch":
        return np.array(pattern != "none")
    return {"mixed": KEEP_ROW, "all": np.ones(4, bool), "none": np.zeros(4, bool)}[pattern]


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("rate", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("scale_by_keep", [True, False])
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_drop_path_options(mode, scale_by_keep, rate, rate_kind):
    pattern = "mixed" if rate < 1 else "none"
    keep = _keep(mode, "all" if mode == "batch" and rate < 1 else pattern)
    rate_t, rate_j = helpers.rate_pair(rate, rate_kind)
    options = dict(mode=mode, scale_by_keep=scale_by_keep)
    jax_kw, dynamic = dict(options), {"keep": jnp.asarray(keep)}
    (jax_kw if rate_kind == "float" else dynamic)["rate"] = rate_j
    _compare(
        torchdrop.drop_path,
        jaxdrop.drop_path,
        (4, 3, 5, 6),
        torch_kw=dict(options, rate=rate_t, keep=torch.from_numpy(keep)),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("shape", [(4,), (4, 7), (4, 2, 3, 4, 5)], ids=["rank1", "rank2", "rank5"])
@pytest.mark.parametrize("dtype", helpers.DTYPES)
def test_drop_path_ranks_and_dtypes(dtype, shape, mode):
    keep = _keep(mode, "mixed" if mode == "row" else "all")
    _compare(
        torchdrop.drop_path,
        jaxdrop.drop_path,
        shape,
        dtype=dtype,
        torch_kw=dict(rate=0.3, keep=torch.from_numpy(keep), mode=mode),
        jax_kw=dict(rate=0.3, mode=mode),
        jax_dynamic={"keep": jnp.asarray(keep)},
    )


# A nonlinear branch of correctly rounded operations only (no transcendental functions, whose
# last bits differ between XLA and ATen): the comparison measures stochastic depth itself.
def _branch_torch(h):
    return 1.5 * h + 0.25 * (h * h)


def _branch_jax(h):
    return 1.5 * h + 0.25 * (h * h)


def _sd_torch(x, branch=_branch_torch, **kwargs):
    return torchdrop.stochastic_depth(branch, x, **kwargs)


def _sd_jax(x, branch=_branch_jax, **kwargs):
    return jaxdrop.stochastic_depth(branch, x, **kwargs)


_sd_torch.__name__ = "stochastic_depth"


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("pattern", ["mixed", "none"])
@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("scaling", ["inverted", "test"])
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth(mode, scaling, rate_kind, pattern, training):
    """Given keep: the branch's scaled contribution, the dropped batch giving zeros (computed
    by lax.cond in JAX, skipped by a Python if in torch); at test time "test" scaling
    multiplies by the survival probability."""
    keep = _keep(mode, "all" if mode == "batch" and pattern == "mixed" else pattern)
    rate_t, rate_j = helpers.rate_pair(0.3, rate_kind)
    options = dict(mode=mode, scaling=scaling)
    torch_kw = dict(options, rate=rate_t, training=training)
    jax_kw = dict(options, deterministic=not training)
    dynamic = {}
    (jax_kw if rate_kind == "float" else dynamic)["rate"] = rate_j
    if training:
        torch_kw["keep"] = torch.from_numpy(keep)
        dynamic["keep"] = jnp.asarray(keep)
    _compare(
        _sd_torch,
        _sd_jax,
        (4, 3, 5, 6),
        torch_kw=torch_kw,
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )


@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_python_rate_extremes(mode, rate):
    """Python rate 0: the branch, unscaled, with no draw; rate 1: zeros of the branch's shape
    and dtype, with no draw and no branch call."""
    out, _ = _compare(
        _sd_torch,
        _sd_jax,
        (4, 3, 5, 6),
        dtype="float16" if rate == 1.0 else "float32",  # The dtype of the zeros.
        torch_kw=dict(rate=rate, mode=mode),
        jax_kw=dict(rate=rate, mode=mode),
    )
    assert (out == 0).all() == (rate == 1.0)


@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize(
    "shape", [(4, 3, 7), (4, 3, 5, 6), (4, 2, 3, 4, 5)], ids=["1d", "2d", "3d"]
)
def test_spatial_dropout(shape, dtype):
    rng = np.random.default_rng(len(shape))
    keep = rng.random(shape[:2]) < 0.6
    keep[0, 0], keep[-1, -1] = True, False
    out, _ = _compare(
        torchdrop.spatial_dropout,
        jaxdrop.spatial_dropout,
        shape,
        dtype=dtype,
        torch_kw=dict(rate=0.4, keep=torch.from_numpy(keep)),
        jax_kw=dict(rate=0.4),
        jax_dynamic={"keep": jnp.asarray(keep)},
    )
    kept_maps = (out != 0).reshape(*shape[:2], -1).all(axis=-1)
    np.testing.assert_array_equal(kept_maps, keep)


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_spatial_dropout_options(scale_by_keep, rate, rate_kind):
    keep = np.array([[True, False, True], [False, False, True]])
    if rate == 1.0:
        keep[:] = False
    rate_t, rate_j = helpers.rate_pair(rate, rate_kind)
    jax_kw, dynamic = dict(scale_by_keep=scale_by_keep), {"keep": jnp.asarray(keep)}
    (jax_kw if rate_kind == "float" else dynamic)["rate"] = rate_j
    _compare(
        torchdrop.spatial_dropout,
        jaxdrop.spatial_dropout,
        (2, 3, 4, 5),
        torch_kw=dict(rate=rate_t, keep=torch.from_numpy(keep), scale_by_keep=scale_by_keep),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )


CUTOUT_CASES = [
    # (id, shape (torch layout), size, num_holes, centres per example and hole)
    ("1d", (2, 3, 9), 3, 1, [[[4]], [[0]]]),
    ("2d-even-h!=w", (2, 3, 6, 9), (2, 4), 1, [[[2, 5]], [[5, 8]]]),
    (
        "2d-holes-outside",
        (2, 3, 6, 7),
        3,
        3,
        [[[0, 0], [-1, 3], [9, 9]], [[3, 3], [3, 4], [5, -2]]],
    ),
    ("2d-size0", (2, 3, 5, 5), (0, 3), 1, [[[2, 2]], [[1, 1]]]),
    ("2d-larger", (2, 3, 4, 5), 8, 1, [[[1, 3]], [[3, 0]]]),
    ("3d", (2, 3, 4, 5, 6), (2, 3, 4), 2, [[[1, 2, 3], [3, 4, 5]], [[0, 0, 0], [2, 1, 0]]]),
]


@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize(
    ("name", "shape", "size", "num_holes", "centers"),
    CUTOUT_CASES,
    ids=[c[0] for c in CUTOUT_CASES],
)
def test_cutout(name, shape, size, num_holes, centers, dtype):
    centers = np.array(centers, dtype=np.int32)
    if num_holes == 1 and name != "1d":
        centers = centers[:, 0]  # The (N, n_spatial) form.
    fill = -2.5 if name.startswith("2d") else 0.0
    out, grad = _compare(
        torchdrop.cutout,
        jaxdrop.cutout,
        shape,
        dtype=dtype,
        torch_kw=dict(size=size, num_holes=num_holes, centers=torch.from_numpy(centers), fill=fill),
        jax_kw=dict(size=size, num_holes=num_holes, fill=fill),
        jax_dynamic={"centers": jnp.asarray(centers)},
    )
    holes = grad == 0  # The cotangent is nonzero everywhere; holes pass no gradient.
    assert np.all(out[holes] == fill)
    assert holes.any() == (name != "2d-size0")


@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
def test_uout(rate_kind, broadcast, dtype):
    shape = (3, 4, 5, 6)
    rng = np.random.default_rng(7)
    noise_shape = (1, 4, 1, 1) if broadcast else shape
    noise = rng.uniform(-0.3, 0.3, noise_shape).astype(np.float32)
    rate_t, rate_j = helpers.rate_pair(0.3, rate_kind)
    jax_kw, dynamic = {}, {"noise": jnp.asarray(helpers.to_jax_layout(noise))}
    (jax_kw if rate_kind == "float" else dynamic)["rate"] = rate_j
    _compare(
        torchdrop.uout,
        jaxdrop.uout,
        shape,
        dtype=dtype,
        torch_kw=dict(rate=rate_t, noise=torch.from_numpy(noise)),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )


def test_uout_float16_saturates_alike():
    """x (1 + r) past 65504 saturates in both; an infinite input stays infinite."""
    x = np.array([[60000.0, -60000.0, np.inf, 2.0]], np.float32)
    noise = np.array([[0.5, 0.5, 0.5, 0.5]], np.float32)
    cotangent = np.ones_like(x)
    out_t, grad_t = helpers.run_torch(
        lambda v: torchdrop.uout(v, 0.5, noise=torch.from_numpy(noise)),
        helpers.as_torch(x, "float16"),
        helpers.as_torch(cotangent, "float16"),
    )
    out_j, grad_j = helpers.run_jax(
        jaxdrop.uout,
        helpers.as_jax(x, "float16"),
        helpers.as_jax(cotangent, "float16"),
        {"noise": jnp.asarray(noise)},
        rate=0.5,
    )
    out_t, out_j = helpers.to_numpy(out_t), helpers.to_numpy(out_j)
    np.testing.assert_array_equal(out_t, [[65504.0, -65504.0, np.inf, 3.0]])
    assert_close(out_t, out_j, "float16", "output", "uout saturation")
    assert_close(helpers.to_numpy(grad_t), helpers.to_numpy(grad_j), "float16", "grad", "uout")


@pytest.mark.parametrize("start_step", [0, 10])
def test_linear_ramp(start_step):
    steps = [0, 1, 9, 10, 37, 50, 99, 110, 1000]
    ours = torchdrop.schedules.linear_ramp(0.3, 100, start_step)
    theirs = jaxdrop.schedules.linear_ramp(0.3, 100, start_step)
    for step in steps:
        for kind in ("int", "array"):
            s_t = step if kind == "int" else torch.tensor(step)
            s_j = step if kind == "int" else jnp.asarray(step)
            value_t, value_j = ours(s_t), theirs(s_j)
            assert value_t.dtype == torch.float32 and value_j.dtype == jnp.float32
            assert_close(value_t.numpy(), np.asarray(value_j), "float32", "output", f"ramp {step}")


def test_depth_rates_is_shared():
    assert torchdrop.schedules.depth_rates is jaxdrop.schedules.depth_rates
