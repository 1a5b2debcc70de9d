"""DropBlock geometry, exactly: planted seeds give exactly the expected blocks."""

import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxdrop
from tests.reference import paint_blocks


def dropped_mask(shape, block_size, seeds, **options):
    """Which units drop_block zeroes, for planted seeds, with no rescaling."""
    x = jnp.ones(shape)
    y = jaxdrop.drop_block(
        x, 0.5, block_size, seeds=jnp.asarray(seeds), normalize="none", **options
    )
    return np.asarray(y == 0)


def plant(seed_shape, *positions):
    seeds = np.zeros(seed_shape, dtype=bool)
    for position in positions:
        seeds[position] = True
    return seeds


def expected_mask(shape, *windows):
    mask = np.zeros(shape, dtype=bool)
    for window in windows:
        mask[window] = True
    return mask


def test_valid_odd_block_on_non_square_map_starts_at_the_seed():
    shape = (1, 6, 8, 1)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 3), (0, 1, 2, 0))
    assert seeds.shape == (1, 4, 6, 1)
    expected = expected_mask(shape, (0, slice(1, 4), slice(2, 5), 0))
    np.testing.assert_array_equal(dropped_mask(shape, 3, seeds), expected)


def test_valid_even_rectangular_block():
    shape = (1, 5, 7, 1)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, (2, 4)), (0, 3, 0, 0))
    expected = expected_mask(shape, (0, slice(3, 5), slice(0, 4), 0))
    np.testing.assert_array_equal(dropped_mask(shape, (2, 4), seeds), expected)


def test_valid_seed_in_last_corner_reaches_the_border_exactly():
    shape = (1, 7, 9, 1)
    seed_shape = jaxdrop.drop_block_seed_shape(shape, 4)
    seeds = plant(seed_shape, (0, seed_shape[1] - 1, seed_shape[2] - 1, 0))
    expected = expected_mask(shape, (0, slice(3, 7), slice(5, 9), 0))
    np.testing.assert_array_equal(dropped_mask(shape, 4, seeds), expected)


def test_full_odd_block_is_centred_and_clipped_at_the_border():
    shape = (1, 6, 6, 1)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 3, seed_region="full"), (0, 0, 0, 0))
    expected = expected_mask(shape, (0, slice(0, 2), slice(0, 2), 0))
    np.testing.assert_array_equal(dropped_mask(shape, 3, seeds, seed_region="full"), expected)


def test_full_even_block_reaches_one_further_below_the_seed():
    # k = 4 around s covers [s - 2, s + 1].
    shape = (1, 6, 6, 1)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 4, seed_region="full"), (0, 2, 5, 0))
    expected = expected_mask(shape, (0, slice(0, 4), slice(3, 6), 0))
    np.testing.assert_array_equal(dropped_mask(shape, 4, seeds, seed_region="full"), expected)


def test_block_larger_than_the_map_is_clipped_valid():
    shape = (1, 4, 6, 1)
    seed_shape = jaxdrop.drop_block_seed_shape(shape, 10)
    assert seed_shape == (1, 1, 1, 1)
    seeds = plant(seed_shape, (0, 0, 0, 0))
    np.testing.assert_array_equal(dropped_mask(shape, 10, seeds), np.ones(shape, dtype=bool))


def test_block_larger_than_the_map_is_clipped_full():
    # Clipped to (4, 6); centred at (0, 0): rows [-2, 2), cols [-3, 3).
    shape = (1, 4, 6, 1)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 10, seed_region="full"), (0, 0, 0, 0))
    expected = expected_mask(shape, (0, slice(0, 2), slice(0, 3), 0))
    np.testing.assert_array_equal(dropped_mask(shape, 10, seeds, seed_region="full"), expected)


def test_one_spatial_dim():
    shape = (2, 10, 3)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 4), (1, 5, 2))
    expected = expected_mask(shape, (1, slice(5, 9), 2))
    np.testing.assert_array_equal(dropped_mask(shape, 4, seeds), expected)


def test_three_spatial_dims_with_a_block_per_axis():
    shape = (1, 4, 5, 6, 2)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, (2, 3, 1)), (0, 1, 0, 2, 1))
    expected = expected_mask(shape, (0, slice(1, 3), slice(0, 3), slice(2, 3), 1))
    np.testing.assert_array_equal(dropped_mask(shape, (2, 3, 1), seeds), expected)


def test_shared_channels_drop_the_same_block_in_every_channel():
    shape = (2, 6, 6, 3)
    seed_shape = jaxdrop.drop_block_seed_shape(shape, 2, share_channels=True)
    assert seed_shape == (2, 5, 5, 1)
    seeds = plant(seed_shape, (1, 2, 3, 0))
    expected = expected_mask(shape, (1, slice(2, 4), slice(3, 5), slice(None)))
    np.testing.assert_array_equal(dropped_mask(shape, 2, seeds, share_channels=True), expected)


def test_per_channel_seed_drops_only_its_channel():
    shape = (2, 6, 6, 3)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 2), (0, 0, 0, 2))
    expected = expected_mask(shape, (0, slice(0, 2), slice(0, 2), 2))
    np.testing.assert_array_equal(dropped_mask(shape, 2, seeds), expected)


def test_overlapping_blocks_drop_their_union():
    shape = (1, 8, 8, 1)
    seeds = plant(jaxdrop.drop_block_seed_shape(shape, 3), (0, 1, 1, 0), (0, 2, 3, 0))
    expected = expected_mask(
        shape, (0, slice(1, 4), slice(1, 4), 0), (0, slice(2, 5), slice(3, 6), 0)
    )
    np.testing.assert_array_equal(dropped_mask(shape, 3, seeds), expected)


def test_no_seeds_drop_nothing():
    shape = (1, 5, 5, 2)
    seeds = np.zeros(jaxdrop.drop_block_seed_shape(shape, 3), dtype=bool)
    assert not dropped_mask(shape, 3, seeds).any()


@st.composite
def block_cases(draw):
    n_spatial = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=n_spatial, max_size=n_spatial)))
    block = tuple(draw(st.lists(st.integers(1, 10), min_size=n_spatial, max_size=n_spatial)))
    seed_region = draw(st.sampled_from(["valid", "full"]))
    share_channels = draw(st.booleans())
    shape = (draw(st.integers(1, 2)), *spatial, draw(st.integers(1, 3)))
    seed_shape = jaxdrop.drop_block_seed_shape(
        shape, block, share_channels=share_channels, seed_region=seed_region
    )
    density = draw(st.sampled_from([0.02, 0.1, 0.4]))
    seeds = draw(hnp.arrays(np.float64, seed_shape, elements=st.floats(0, 1))) < density
    return shape, block, seed_region, share_channels, seeds


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(block_cases())
def test_dropped_set_is_exactly_the_union_of_the_seeds_blocks(case):
    shape, block, seed_region, share_channels, seeds = case
    got = dropped_mask(shape, block, seeds, seed_region=seed_region, share_channels=share_channels)
    clipped = [min(k, s) for k, s in zip(block, shape[1:-1])]
    painted = paint_blocks(seeds, shape[1:-1], clipped, seed_region)
    np.testing.assert_array_equal(got, np.broadcast_to(painted, shape))


@pytest.mark.parametrize("seed_region", ["valid", "full"])
def test_random_draw_geometry_matches_the_painter(seed_region):
    # The random path goes through the same expansion: recover the seeds it drew and repaint.
    import jax

    from jaxdrop import random

    shape, block, rate = (3, 11, 9, 4), (3, 2), 0.2
    key = jax.random.key(7)
    x = jnp.ones(shape)
    y = jaxdrop.drop_block(x, rate, block, key=key, seed_region=seed_region, normalize="none")
    gamma = jaxdrop.drop_block_gamma(shape, rate, block, seed_region=seed_region)
    seeds = random.bernoulli(
        key, gamma, jaxdrop.drop_block_seed_shape(shape, block, seed_region=seed_region)
    )
    painted = paint_blocks(np.asarray(seeds), shape[1:-1], block, seed_region)
    assert painted.any()
    np.testing.assert_array_equal(np.asarray(y == 0), painted)
