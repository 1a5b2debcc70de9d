"""dropspec: geometry against a brute-force painter, calibration against its definition."""

import math

import numpy as np
import pytest

import dropspec
from tests.reference import keep_probability_map

GEOMETRIES = [
    ((56, 56), (7, 7), "valid"),
    ((14, 14), (7, 7), "full"),
    ((9, 13), (4, 2), "valid"),
    ((9, 13), (4, 2), "full"),
    ((5,), (8,), "valid"),
    ((5,), (8,), "full"),
    ((4, 5, 6), (2, 3, 4), "full"),
]


@pytest.mark.parametrize("spatial, block, region", GEOMETRIES)
def test_cover_counts_match_painting_every_seed(spatial, block, region):
    geometry = dropspec.block_geometry(spatial, block, region)
    painted = keep_probability_map(spatial, geometry.block, region, 0.5)
    np.testing.assert_allclose(0.5 ** dropspec.cover_counts(geometry), painted)


@pytest.mark.parametrize("spatial, block, region", GEOMETRIES)
@pytest.mark.parametrize("rate", [1e-6, 0.1, 0.5, 0.9, 0.999])
def test_exact_gamma_makes_the_expected_drop_fraction_equal_the_rate(spatial, block, region, rate):
    geometry = dropspec.block_geometry(spatial, block, region)
    gamma = dropspec.gamma_from_rate(rate, geometry, "exact")
    expected_dropped = 1.0 - keep_probability_map(spatial, geometry.block, region, gamma).mean()
    assert expected_dropped == pytest.approx(rate, rel=1e-9)


@pytest.mark.parametrize("spatial, block, region", GEOMETRIES)
def test_float32_newton_agrees_with_float64(spatial, block, region):
    geometry = dropspec.block_geometry(spatial, block, region)
    calibration = dropspec.exact_calibration(geometry)
    for rate in (1e-4, 0.05, 0.3, 0.8, 0.99):
        single = dropspec.solve_exact_gamma(np.float32(rate), calibration, np)
        double = dropspec.gamma_from_rate(float(np.float32(rate)), geometry, "exact")
        assert single.dtype == np.float32
        assert single == pytest.approx(double, rel=2e-5)


def test_paper_factor_is_equation_one():
    geometry = dropspec.block_geometry((56, 40), (7, 5), "valid")
    assert dropspec.paper_factor(geometry) == pytest.approx(56 * 40 / (35 * 50 * 36))
    full = dropspec.block_geometry((56, 40), (7, 5), "full")
    assert dropspec.paper_factor(full) == pytest.approx(1 / 35)


def test_gamma_ends():
    geometry = dropspec.block_geometry((7, 7), (3, 3), "valid")
    for calibration in ("paper", "exact"):
        assert dropspec.gamma_from_rate(0.0, geometry, calibration) == 0.0
        assert dropspec.gamma_from_rate(1.0, geometry, calibration) == 1.0


def test_keep_threshold():
    assert dropspec.keep_threshold(0.0) == 0
    assert dropspec.keep_threshold(1.0) == 2**32
    assert dropspec.keep_threshold(0.5) == 2**31
    assert dropspec.keep_threshold(1e-10) == math.floor(1e-10 * 2**32)


def test_seed_shapes_in_both_layouts():
    geometry = dropspec.block_geometry((10, 8), (3, 9), "valid")
    assert geometry.block == (3, 8)
    assert dropspec.seed_shape((2, 10, 8, 5), geometry, False, channels_last=True) == (2, 8, 1, 5)
    assert dropspec.seed_shape((2, 5, 10, 8), geometry, True, channels_last=False) == (2, 1, 8, 1)
