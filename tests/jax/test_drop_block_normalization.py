"""DropBlock normalisation: each scale exactly as documented, and no NaN/Inf ever."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from tests.reference import keep_probability_map, paint_blocks

SHAPE = (3, 7, 6, 4)
BLOCK = (3, 2)


def planted_case(share_channels=False, seed_region="valid", density=0.15, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=SHAPE).astype(np.float32)
    seed_shape = jaxdrop.drop_block_seed_shape(
        SHAPE, BLOCK, share_channels=share_channels, seed_region=seed_region
    )
    seeds = rng.random(seed_shape) < density
    keep = ~paint_blocks(seeds, SHAPE[1:-1], BLOCK, seed_region)
    return x, seeds, keep


def run(x, seeds, rate=0.2, **options):
    return np.asarray(
        jaxdrop.drop_block(jnp.asarray(x), rate, BLOCK, seeds=jnp.asarray(seeds), **options)
    )


@pytest.mark.parametrize("share_channels", [False, True])
def test_batch_scale_is_units_over_kept_plus_eps(share_channels):
    x, seeds, keep = planted_case(share_channels)
    units, kept = np.float32(keep.size), np.float32(keep.sum())
    scale = units / (kept + np.float32(1e-6))
    expected = np.where(np.broadcast_to(keep, SHAPE), x * scale, np.float32(0))
    np.testing.assert_array_equal(run(x, seeds, share_channels=share_channels), expected)


def test_example_scale_is_per_example():
    x, seeds, keep = planted_case()
    kept = keep.reshape(SHAPE[0], -1).sum(axis=1).astype(np.float32)
    units = np.float32(np.prod(SHAPE[1:]))
    scale = (units / (kept + np.float32(1e-3)))[:, None, None, None]
    expected = np.where(keep, x * scale, np.float32(0))
    np.testing.assert_array_equal(run(x, seeds, normalize="example", eps=1e-3), expected)
    assert len(np.unique(scale)) == SHAPE[0]  # the case does exercise different scales


def test_none_leaves_kept_units_bitwise_untouched():
    x, seeds, keep = planted_case()
    np.testing.assert_array_equal(run(x, seeds, normalize="none"), np.where(keep, x, 0))


@pytest.mark.parametrize("seed_region", ["valid", "full"])
@pytest.mark.parametrize("calibration", ["paper", "exact"])
def test_expected_scale_is_one_over_the_keep_probability(seed_region, calibration):
    x, seeds, keep = planted_case(seed_region=seed_region)
    gamma = jaxdrop.drop_block_gamma(
        SHAPE, 0.2, BLOCK, seed_region=seed_region, calibration=calibration
    )
    probability = keep_probability_map(SHAPE[1:-1], BLOCK, seed_region, gamma)[None, ..., None]
    expected = np.where(keep, x / probability, 0)
    got = run(x, seeds, normalize="expected", seed_region=seed_region, calibration=calibration)
    np.testing.assert_allclose(got, expected, rtol=2e-6)


@pytest.mark.parametrize("normalize", ["batch", "example", "expected", "none"])
@pytest.mark.parametrize("rate", [1.0, jnp.float32(1.0)])
def test_rate_one_gives_zeros_with_finite_gradients(normalize, rate):
    x = jax.random.normal(jax.random.key(0), SHAPE)

    def loss(x):
        return jnp.sum(
            jaxdrop.drop_block(x, rate, BLOCK, key=jax.random.key(1), normalize=normalize) ** 2
        )

    y = jaxdrop.drop_block(x, rate, BLOCK, key=jax.random.key(1), normalize=normalize)
    assert not np.asarray(y).any()
    grad = jax.grad(loss)(x)
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("normalize", ["batch", "example", "expected"])
def test_everything_dropped_by_planted_seeds_is_finite(normalize):
    seeds = np.ones(jaxdrop.drop_block_seed_shape(SHAPE, BLOCK), dtype=bool)
    y = jaxdrop.drop_block(jnp.ones(SHAPE), 0.5, BLOCK, seeds=seeds, normalize=normalize)
    assert np.array_equal(np.asarray(y), np.zeros(SHAPE))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("normalize", ["batch", "expected"])
def test_half_precision_comes_back_finite_in_its_own_dtype(dtype, normalize):
    # One kept unit among ~80k: the batch scale is ~8e4, past float16's 65504.
    shape = (4, 100, 100, 2)
    seeds = np.ones(jaxdrop.drop_block_seed_shape(shape, 1), dtype=bool)
    seeds[0, 0, 0, 0] = False
    x = jnp.full(shape, 3.0, dtype)
    y = jaxdrop.drop_block(x, 0.999, 1, seeds=seeds, normalize=normalize)
    assert y.dtype == dtype
    assert np.isfinite(np.asarray(y, np.float32)).all()
    assert float(y[0, 0, 0, 0]) > 1000


def test_float16_mask_sum_does_not_overflow_past_65504_kept_units():
    # torchvision sums the mask in the input dtype; 2**17 kept units overflow float16.
    shape = (2, 256, 256, 2)
    x = jnp.ones(shape, jnp.float16)
    seeds = np.zeros(jaxdrop.drop_block_seed_shape(shape, 3), dtype=bool)
    seeds[0, 10, 10, 0] = True
    y = jaxdrop.drop_block(x, 0.1, 3, seeds=seeds)
    scale = np.float32(np.prod(shape)) / (np.float32(np.prod(shape) - 9) + np.float32(1e-6))
    assert float(y[1, 0, 0, 0]) == float(np.float16(scale))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 256), (2, 257), (4, 1000, 3), (2, 70000, 4)])
def test_kept_units_are_counted_exactly(shape):
    from jaxdrop import _common

    mask = np.random.default_rng(len(shape)).random(shape) < 0.7
    mask[-1] = True  # a full row: every byte lane at its largest
    np.testing.assert_array_equal(
        np.asarray(_common.count_true(jnp.asarray(mask))), mask.reshape(shape[0], -1).sum(axis=1)
    )
