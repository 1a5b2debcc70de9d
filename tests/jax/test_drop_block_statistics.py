"""DropBlock statistics with fixed keys and 4-sigma bounds.

Each sigma is exact: the variance of the dropped fraction over independent maps, from the
covariance of overlapping cover sets (``tests.reference.drop_fraction_std``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import random
from tests.reference import drop_fraction_std, keep_probability_map

SIGMAS = 4.0

# (spatial, block, seed_region): 1-D, 2-D (square, H != W, even), 3-D, block ~ map.
CONFIGS = [
    ((32,), (5,), "valid"),
    ((16, 16), (3, 3), "valid"),
    ((14, 14), (7, 7), "valid"),
    ((14, 14), (7, 7), "full"),
    ((9, 13), (4, 2), "full"),
    ((7, 7), (3, 3), "valid"),
    ((6, 6, 6), (3, 3, 3), "full"),
]


def realised_fraction(shape, rate, block, key, **options):
    y = jaxdrop.drop_block(jnp.ones(shape), rate, block, key=key, normalize="none", **options)
    return float(jnp.mean(y == 0))


@pytest.mark.parametrize("spatial, block, seed_region", CONFIGS)
@pytest.mark.parametrize("rate", [0.05, 0.3, 0.7])
def test_exact_calibration_drops_the_requested_fraction(spatial, block, seed_region, rate):
    maps = 2048 if len(spatial) < 3 else 512
    shape = (maps // 8, *spatial, 8)
    gamma = jaxdrop.drop_block_gamma(
        shape, rate, block, seed_region=seed_region, calibration="exact"
    )
    sigma = drop_fraction_std(spatial, block, seed_region, gamma, maps)
    key = jax.random.fold_in(jax.random.key(0), int(rate * 100))
    got = realised_fraction(shape, rate, block, key, seed_region=seed_region, calibration="exact")
    assert abs(got - rate) < SIGMAS * sigma, (got, rate, sigma)


def test_paper_calibration_misses_the_rate_where_blocks_overlap_the_border():
    # The same check detects the paper formula's error, so it can fail.
    spatial, block, rate, maps = (14, 14), (7, 7), 0.3, 2048
    shape = (maps // 8, *spatial, 8)
    gamma = jaxdrop.drop_block_gamma(shape, rate, block, seed_region="full")
    sigma = drop_fraction_std(spatial, block, "full", gamma, maps)
    got = realised_fraction(shape, rate, block, jax.random.key(1), seed_region="full")
    # rate / k^2 ignores clipped border blocks and overlaps: about 0.21 instead of 0.3.
    assert rate - got > SIGMAS * sigma


@pytest.mark.parametrize("seed_region", ["valid", "full"])
def test_exact_calibration_with_a_traced_rate(seed_region):
    spatial, block, maps, rate = (14, 14), (5, 5), 2048, 0.25
    shape = (maps // 8, *spatial, 8)

    @jax.jit
    def fraction(rate, key):
        y = jaxdrop.drop_block(
            jnp.ones(shape),
            rate,
            block,
            key=key,
            seed_region=seed_region,
            calibration="exact",
            normalize="none",
        )
        return jnp.mean(y == 0)

    gamma = float(
        jaxdrop.drop_block_gamma(
            shape, jnp.float32(rate), block, seed_region=seed_region, calibration="exact"
        )
    )
    sigma = drop_fraction_std(spatial, block, seed_region, gamma, maps)
    got = float(fraction(jnp.float32(rate), jax.random.key(2)))
    assert abs(got - rate) < SIGMAS * sigma


@pytest.mark.parametrize("seed_region", ["valid", "full"])
def test_expected_normalisation_is_unbiased_at_every_position(seed_region):
    spatial, block, rate, maps = (8, 8), (3, 3), 0.3, 4096
    shape = (maps // 8, *spatial, 8)
    y = jaxdrop.drop_block(
        jnp.ones(shape),
        rate,
        block,
        key=jax.random.key(3),
        seed_region=seed_region,
        calibration="exact",
        normalize="expected",
    )
    gamma = jaxdrop.drop_block_gamma(
        shape, rate, block, seed_region=seed_region, calibration="exact"
    )
    keep = keep_probability_map(spatial, block, seed_region, gamma)
    sigma = np.sqrt((1.0 / keep - 1.0) / maps)
    mean = np.asarray(y).mean(axis=(0, 3))
    np.testing.assert_array_less(np.abs(mean - 1.0), SIGMAS * sigma)


def test_batch_normalisation_is_biased_at_the_border():
    # Contrast with the test above: "batch" rescales every unit alike, so with valid seeding
    # the rarely covered corners come out above 1 (the check would catch a biased "expected").
    spatial, block, rate, maps = (8, 8), (3, 3), 0.3, 4096
    shape = (maps // 8, *spatial, 8)
    y = jaxdrop.drop_block(
        jnp.ones(shape), rate, block, key=jax.random.key(3), calibration="exact", normalize="batch"
    )
    gamma = jaxdrop.drop_block_gamma(shape, rate, block, calibration="exact")
    keep = keep_probability_map(spatial, block, "valid", gamma)
    mean = np.asarray(y).mean(axis=(0, 3))
    corner_sigma = math.sqrt(mean[0, 0] ** 2 * (1 / keep[0, 0] - 1) / maps)
    assert mean[0, 0] - 1.0 > SIGMAS * corner_sigma


def test_block_size_one_is_dropout():
    shape, rate = (16, 10, 12, 8), 0.3
    key = jax.random.key(4)
    y = jaxdrop.drop_block(jnp.ones(shape), rate, 1, key=key, normalize="none")
    assert jaxdrop.drop_block_gamma(shape, rate, 1) == rate
    # Every unit is its own seed: the dropped set is exactly an elementwise Bernoulli(rate).
    np.testing.assert_array_equal(
        np.asarray(y == 0), np.asarray(random.bernoulli(key, rate, shape))
    )
    n = math.prod(shape)
    assert abs(float(jnp.mean(y == 0)) - rate) < SIGMAS * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("calibration", ["paper", "exact"])
def test_block_covering_the_map_is_spatial_dropout(calibration):
    shape, rate = (256, 5, 7, 16), 0.3
    assert jaxdrop.drop_block_gamma(shape, rate, (5, 7), calibration=calibration) == pytest.approx(
        rate, rel=1e-12
    )
    y = jaxdrop.drop_block(
        jnp.ones(shape),
        rate,
        (5, 7),
        key=jax.random.key(5),
        calibration=calibration,
        normalize="none",
    )
    channel_dropped = np.asarray(y == 0).reshape(shape[0], -1, shape[-1])
    whole = channel_dropped.all(axis=1)
    assert np.array_equal(whole, channel_dropped.any(axis=1))  # all or nothing per channel map
    maps = shape[0] * shape[-1]
    reference = jaxdrop.spatial_dropout(jnp.ones(shape), rate, key=jax.random.key(6))
    for fraction in (whole.mean(), float(jnp.mean(reference[:, 0, 0, :] == 0))):
        assert abs(fraction - rate) < SIGMAS * math.sqrt(rate * (1 - rate) / maps)


def test_shared_channels_drop_the_requested_fraction_per_example_map():
    spatial, block, rate, n = (14, 14), (5, 5), 0.2, 2048
    shape = (n, *spatial, 3)
    gamma = jaxdrop.drop_block_gamma(shape, rate, block, calibration="exact")
    sigma = drop_fraction_std(spatial, block, "valid", gamma, n)
    y = jaxdrop.drop_block(
        jnp.ones(shape),
        rate,
        block,
        key=jax.random.key(8),
        share_channels=True,
        calibration="exact",
        normalize="none",
    )
    dropped = np.asarray(y == 0)
    assert (dropped == dropped[..., :1]).all()
    assert abs(dropped.mean() - rate) < SIGMAS * sigma
