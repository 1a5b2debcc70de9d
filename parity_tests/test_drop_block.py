"""DropBlock: jaxdrop and torchdrop on identical seeds give identical masks, outputs, gradients,
seed shapes and gammas."""

from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxdrop
import torchdrop
from parity_tests import helpers
from parity_tests.tolerances import assert_close

# (name, spatial, block_size): 1 to 3 spatial dims, odd and even blocks, H != W, blocks larger
# than the map (clipped), block 1 (Dropout).
GEOMETRIES = [
    ("1d-odd", (9,), 3),
    ("1d-even", (8,), 4),
    ("1d-larger", (5,), 7),
    ("2d-odd-h!=w", (6, 9), 3),
    ("2d-even-h!=w", (7, 5), (2, 4)),
    ("2d-even", (8, 8), 4),
    ("2d-larger", (4, 3), 5),
    ("2d-block1", (5, 6), 1),
    ("3d-even", (4, 5, 6), 2),
    ("3d-mixed-larger", (3, 4, 5), (3, 1, 6)),
]
GEOMETRY = {name: (spatial, block) for name, spatial, block in GEOMETRIES}
REGIONS = ("valid", "full")
NORMALIZE = ("batch", "example", "expected", "none")
CALIBRATIONS = ("paper", "exact")
RATES = (0.0, 0.1, 0.6, 1.0)


def _check(
    spatial,
    block,
    *,
    dtype="float32",
    rate=0.3,
    rate_kind="float",
    density=0.12,
    seed=0,
    batch=2,
    channels=3,
    **options,
):
    """Runs both packages on the same seeds; compares masks bit for bit, outputs and input
    gradients within the tolerance table. Returns the torch keep mask."""
    rng = np.random.default_rng(seed)
    shape = (batch, channels, *spatial)
    x = helpers.signed_input(rng, shape)
    cotangent = rng.standard_normal(shape).astype(np.float32)
    seed_kwargs = {k: options[k] for k in ("share_channels", "seed_region") if k in options}
    seed_shape = torchdrop.drop_block_seed_shape(shape, block, **seed_kwargs)
    jax_seed_shape = jaxdrop.drop_block_seed_shape(
        helpers.to_jax_layout(np.empty(shape)).shape, block, **seed_kwargs
    )
    assert helpers.to_jax_layout(np.empty(seed_shape)).shape == jax_seed_shape
    seeds = rng.random(seed_shape) < density
    if 0 < density < 1:  # Some units dropped, some kept, whatever the draw.
        seeds.flat[0], seeds[-1] = True, False
    rate_t, rate_j = helpers.rate_pair(rate, rate_kind)

    out_t, grad_t = helpers.run_torch(
        lambda v: torchdrop.drop_block(v, rate_t, block, seeds=torch.from_numpy(seeds), **options),
        helpers.as_torch(x, dtype),
        helpers.as_torch(cotangent, dtype),
    )
    dynamic = {"seeds": jnp.asarray(helpers.to_jax_layout(seeds))}
    static = dict(options, block_size=block)
    (dynamic if rate_kind == "tensor" else static)["rate"] = rate_j
    out_j, grad_j = helpers.run_jax(
        jaxdrop.drop_block,
        helpers.as_jax(helpers.to_jax_layout(x), dtype),
        helpers.as_jax(helpers.to_jax_layout(cotangent), dtype),
        dynamic,
        **static,
    )
    assert out_t.dtype == helpers.TORCH_DTYPES[dtype]
    assert out_j.dtype == helpers.JAX_DTYPES[dtype]
    out_t, grad_t = helpers.to_numpy(out_t), helpers.to_numpy(grad_t)
    out_j = helpers.to_torch_layout(helpers.to_numpy(out_j))
    grad_j = helpers.to_torch_layout(helpers.to_numpy(grad_j))
    # x has no zeros and every scale is positive, so the kept units are the nonzero outputs.
    keep_t, keep_j = out_t != 0, out_j != 0
    np.testing.assert_array_equal(keep_t, keep_j, err_msg="keep masks differ")
    label = f"drop_block {spatial} k={block} {options}"
    assert_close(out_t, out_j, dtype, "output", label)
    assert_close(grad_t, grad_j, dtype, "grad", label)
    return keep_t


@pytest.mark.parametrize(
    ("index", "case"),
    list(enumerate(itertools.product([g[0] for g in GEOMETRIES], REGIONS, (False, True)))),
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_geometry(index, case):
    """Every geometry with both seed regions and both channel modes (float32); normalisation
    and calibration cycle through their values across the cases."""
    name, region, share = case
    spatial, block = GEOMETRY[name]
    keep = _check(
        spatial,
        block,
        seed_region=region,
        share_channels=share,
        normalize=NORMALIZE[index % 4],
        calibration=CALIBRATIONS[index // 4 % 2],
        seed=index,
    )
    assert keep.any() and not keep.all(), "the case should drop some units and keep others"
    if share:  # One mask for all channels.
        assert (keep == keep[:, :1]).all()


CASES_2D_3D = pytest.mark.parametrize(
    ("spatial", "block", "region", "share"),
    [((7, 5), (2, 4), "valid", True), ((3, 4, 5), 2, "full", False)],
    ids=["2d-even-valid-shared", "3d-full"],
)


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("calibration", CALIBRATIONS)
@CASES_2D_3D
def test_expected_normalisation(spatial, block, region, share, calibration, rate, rate_kind):
    """Calibration x rate (Python float and tensor): with the seeds given, gamma reaches the
    output through the "expected" normaliser 1 / P(kept at p)."""
    _check(
        spatial,
        block,
        rate=rate,
        rate_kind=rate_kind,
        seed_region=region,
        share_channels=share,
        normalize="expected",
        calibration=calibration,
        eps=1e-3 if rate == 1.0 else 1e-6,
    )


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("normalize", NORMALIZE)
@CASES_2D_3D
def test_rate_extremes_with_seeds(spatial, block, region, share, normalize, rate, rate_kind):
    """Given seeds replace the draw whatever the rate, 0 and 1 included."""
    _check(
        spatial,
        block,
        rate=rate,
        rate_kind=rate_kind,
        seed_region=region,
        share_channels=share,
        normalize=normalize,
        calibration="exact",
    )


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("name", ["1d-even", "2d-odd-h!=w", "3d-even"])
@pytest.mark.parametrize("dtype", helpers.DTYPES)
def test_dtypes(dtype, name, normalize):
    """float32, bfloat16 and float16 for every rank and normalisation; the seed region and the
    channel mode alternate across the cases."""
    spatial, block = GEOMETRY[name]
    index = NORMALIZE.index(normalize) + helpers.DTYPES.index(dtype)
    _check(
        spatial,
        block,
        dtype=dtype,
        seed_region=REGIONS[index % 2],
        normalize=normalize,
        share_channels=index % 3 == 0,
        calibration="exact",
    )


@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_everything_dropped(normalize, dtype):
    """Rate 1 (Python float and tensor alternately) and seeds everywhere: zeros and zero
    (finite) gradients, no 0/0."""
    index = NORMALIZE.index(normalize) + helpers.DTYPES.index(dtype)
    keep = _check(
        (5, 6),
        3,
        dtype=dtype,
        rate=1.0,
        rate_kind=("float", "tensor")[index % 2],
        density=1.0,
        normalize=normalize,
        seed_region="full",
    )
    assert not keep.any()


@pytest.mark.parametrize("dtype", helpers.DTYPES)
def test_nothing_dropped(dtype):
    keep = _check((5, 6), 3, dtype=dtype, density=0.0, normalize="batch")
    assert keep.all()


def test_float16_saturates_alike():
    """A huge normalisation scale (one kept unit in 2 * 3 * 64 * 64) saturates float16 at
    +-65504 in both, rather than overflowing to inf."""
    shape, block = (2, 3, 64, 64), 1
    seeds = np.ones(shape, dtype=bool)
    seeds[0, 0, 0, 0] = False
    x = np.full(shape, 4.0, np.float32)
    out_t = torchdrop.drop_block(
        helpers.as_torch(x, "float16"), 0.5, block, seeds=torch.tensor(seeds)
    )
    out_j = jaxdrop.drop_block(
        helpers.as_jax(helpers.to_jax_layout(x), "float16"),
        0.5,
        block,
        seeds=jnp.asarray(helpers.to_jax_layout(seeds)),
    )
    out_t, out_j = helpers.to_numpy(out_t), helpers.to_torch_layout(helpers.to_numpy(out_j))
    assert out_t[0, 0, 0, 0] == 65504.0
    assert_close(out_t, out_j, "float16", "output", "saturation")


@pytest.mark.parametrize(("name", "spatial", "block"), GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("region", REGIONS)
def test_seed_shape(name, spatial, block, share, region):
    shape = (2, 5, *spatial)
    ours = torchdrop.drop_block_seed_shape(shape, block, share_channels=share, seed_region=region)
    theirs = jaxdrop.drop_block_seed_shape(
        (2, *spatial, 5), block, share_channels=share, seed_region=region
    )
    assert (ours[0], *ours[2:], ours[1]) == theirs


GAMMA_RATES = (0.0, 1e-3, 0.1, 0.5, 0.9, 1.0)


@pytest.mark.parametrize("calibration", CALIBRATIONS)
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize(("name", "spatial", "block"), GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
def test_gamma(name, spatial, block, region, calibration):
    """Python rates: the same float64 gamma, exactly."""
    options = dict(seed_region=region, calibration=calibration)
    for rate in GAMMA_RATES:
        ours = torchdrop.drop_block_gamma((1, 1, *spatial), rate, block, **options)
        theirs = jaxdrop.drop_block_gamma((1, *spatial, 1), rate, block, **options)
        assert isinstance(ours, float) and ours == theirs, (rate, ours, theirs)


TENSOR_GAMMA_GEOMETRIES = ["1d-larger", "2d-even-h!=w", "2d-block1", "3d-mixed-larger"]


@pytest.mark.parametrize("calibration", CALIBRATIONS)
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("name", TENSOR_GAMMA_GEOMETRIES)
def test_tensor_gamma(name, region, calibration):
    """Tensor rates: float32 in-graph, within the float32 tolerance of each other and within a
    few float32 ulps of the float64 value; out-of-range and NaN rates are clipped alike."""
    spatial, block = GEOMETRY[name]
    options = dict(seed_region=region, calibration=calibration)
    rates = (*GAMMA_RATES, -0.5, 1.5, math.nan)
    ours = [
        torchdrop.drop_block_gamma((1, 1, *spatial), torch.tensor(r), block, **options)
        for r in rates
    ]
    theirs = [
        jaxdrop.drop_block_gamma((1, *spatial, 1), jnp.asarray(r, jnp.float32), block, **options)
        for r in rates
    ]
    assert all(g.dtype == torch.float32 for g in ours)
    ours, theirs = np.array([g.item() for g in ours]), np.array([float(g) for g in theirs])
    assert_close(ours, theirs, "float32", "output", f"gamma {name} {options}")
    exact = [jaxdrop.drop_block_gamma((1, *spatial, 1), r, block, **options) for r in GAMMA_RATES]
    # The float32 solve is within a few float32 ulps of the float64 one.
    np.testing.assert_allclose(ours[: len(exact)], exact, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(ours[len(exact) :], [0.0, 1.0, 0.0])
