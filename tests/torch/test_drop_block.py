"""torchdrop.drop_block: geometry against a brute-force reference, normalisations, statistics
of the realised drop fraction, precision and layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchdrop
from tests.reference import drop_fraction_std, keep_probability_map, paint_blocks

GEOMETRIES = [
    ((9,), (3,)),
    ((8,), (4,)),
    ((5,), (7,)),
    ((6, 9), (3, 3)),
    ((7, 5), (2, 4)),
    ((4, 3), (5, 5)),
    ((4, 5, 6), (2, 3, 1)),
    ((3, 4, 5), (3, 1, 6)),
]


@pytest.mark.parametrize("region", ["valid", "full"])
@pytest.mark.parametrize(("spatial", "block"), GEOMETRIES)
def test_geometry_matches_brute_force(spatial, block, region):
    shape = (2, 3, *spatial)
    seed_shape = torchdrop.drop_block_seed_shape(shape, block, seed_region=region)
    seeds = np.random.default_rng(len(spatial)).random(seed_shape) < 0.15
    out = torchdrop.drop_block(
        torch.ones(shape),
        0.5,
        block,
        seeds=torch.from_numpy(seeds),
        seed_region=region,
        normalize="none",
    )
    clipped = [min(k, e) for k, e in zip(block, spatial)]
    dropped = paint_blocks(np.moveaxis(seeds, 1, -1), spatial, clipped, region)
    np.testing.assert_array_equal(out.numpy() != 0, ~np.moveaxis(dropped, -1, 1))
    assert set(np.unique(out.numpy())) <= {0.0, 1.0}


def test_seed_shape_sizes():
    assert torchdrop.drop_block_seed_shape((8, 64, 32, 16), 5) == (8, 64, 28, 12)
    assert torchdrop.drop_block_seed_shape((8, 64, 32, 16), (40, 3)) == (8, 64, 1, 14)
    assert torchdrop.drop_block_seed_shape(
        (2, 3, 5, 6, 7), 2, share_channels=True, seed_region="full"
    ) == (2, 1, 5, 6, 7)


def test_even_block_reaches_one_further_below():
    """Full seeding, k = 4: a seed at s drops [s - 2, s + 1]."""
    seeds = torch.zeros(1, 1, 9, dtype=torch.bool)
    seeds[0, 0, 4] = True
    out = torchdrop.drop_block(
        torch.ones(1, 1, 9), 0.5, 4, seeds=seeds, seed_region="full", normalize="none"
    )
    assert out[0, 0].tolist() == [1, 1, 0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("share", [False, True])
def test_batch_and_example_normalisation(share):
    shape = (3, 2, 6, 7)
    seeds = torch.from_numpy(
        np.random.default_rng(0).random(
            torchdrop.drop_block_seed_shape(shape, 2, share_channels=share)
        )
        < 0.2
    )
    x = torch.ones(shape)
    kept = torchdrop.drop_block(x, 0.3, 2, seeds=seeds, share_channels=share, normalize="none")
    mask = kept[:, :1] if share else kept
    for normalize in ("batch", "example"):
        out = torchdrop.drop_block(
            x, 0.3, 2, seeds=seeds, share_channels=share, normalize=normalize, eps=1e-6
        )
        dims = tuple(range(mask.ndim)) if normalize == "batch" else tuple(range(1, mask.ndim))
        count = mask.sum(dim=dims, keepdim=True)
        units = mask.numel() if normalize == "batch" else mask[0].numel()
        scale = np.float32(units) / (count.numpy().astype(np.float32) + np.float32(1e-6))
        expected = np.where(kept.numpy() != 0, np.broadcast_to(scale, shape), 0)
        np.testing.assert_array_equal(out.numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("calibration", ["paper", "exact"])
@pytest.mark.parametrize("region", ["valid", "full"])
def test_expected_normalisation_is_one_over_keep_probability(region, calibration):
    spatial, block = (6, 5), (3, 2)
    gamma = torchdrop.drop_block_gamma(
        (1, 1, *spatial), 0.3, block, seed_region=region, calibration=calibration
    )
    seed_shape = torchdrop.drop_block_seed_shape((2, 2, *spatial), block, seed_region=region)
    out = torchdrop.drop_block(
        torch.ones(2, 2, *spatial),
        0.3,
        block,
        seeds=torch.zeros(seed_shape, dtype=torch.bool),
        seed_region=region,
        calibration=calibration,
        normalize="expected",
    )
    keep_prob = keep_probability_map(spatial, block, region, gamma)
    np.testing.assert_allclose(out[0, 0].numpy(), 1 / keep_prob, rtol=1e-6)


@pytest.mark.parametrize(
    ("spatial", "block", "rate", "region", "calibration", "share"),
    [
        ((14, 14), (7, 7), 0.3, "valid", "exact", False),
        ((14, 14), (7, 7), 0.3, "valid", "paper", False),
        ((12, 10), (4, 3), 0.2, "full", "exact", True),
        ((12, 10), (4, 3), 0.2, "full", "paper", False),
        ((20,), (5,), 0.1, "valid", "exact", False),
        ((6, 7, 5), (2, 3, 2), 0.25, "full", "exact", False),
    ],
)
def test_realised_drop_fraction(spatial, block, rate, region, calibration, share):
    """The dropped fraction over many independent maps is its exact expectation within 4 sigma
    (``tests.reference``: exact variance, overlaps included); with exact calibration that
    expectation is ``rate``."""
    batch, channels = 64, 8
    options = dict(seed_region=region, calibration=calibration)
    gamma = torchdrop.drop_block_gamma((1, 1, *spatial), rate, block, **options)
    clipped = [min(k, e) for k, e in zip(block, spatial)]
    mean = 1 - keep_probability_map(spatial, clipped, region, gamma).mean()
    if calibration == "exact":
        assert mean == pytest.approx(rate, abs=1e-9)
    g = torch.Generator().manual_seed(7)
    out = torchdrop.drop_block(
        torch.ones(batch, channels, *spatial),
        rate,
        block,
        generator=g,
        share_channels=share,
        normalize="none",
        **options,
    )
    maps = batch * (1 if share else channels)
    realised = float((out == 0).double().mean())
    sigma = drop_fraction_std(spatial, clipped, region, gamma, maps)
    assert abs(realised - mean) <= 4 * sigma, (realised, mean, sigma)


def test_draws_only_the_seed_region():
    """Valid seeding draws one number per valid seed position, nothing more."""
    shape, block = (2, 3, 10, 9), (4, 3)
    seed_shape = torchdrop.drop_block_seed_shape(shape, block)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torchdrop.drop_block(torch.ones(shape), 0.2, block, generator=a)
    torch.randint(0, 2**31, seed_shape, generator=b, dtype=torch.int32)
    assert torch.equal(a.get_state(), b.get_state())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
def test_rate_one_gives_zeros_and_finite_gradients(dtype, rate_kind):
    rate = 1.0 if rate_kind == "float" else torch.tensor(1.0)
    for normalize in ("batch", "example", "expected", "none"):
        x = torch.randn(2, 3, 5, 6, dtype=dtype, requires_grad=True)
        out = torchdrop.drop_block(x, rate, 3, generator=torch.Generator(), normalize=normalize)
        out.backward(torch.ones_like(out))
        assert out.dtype == dtype and bool((out == 0).all())
        assert bool(torch.isfinite(x.grad).all()) and bool((x.grad == 0).all())


def test_rate_zero_returns_the_input():
    x = torch.randn(2, 3, 5, 6)
    assert torchdrop.drop_block(x, 0.0, 3) is x
    assert torchdrop.drop_block(x, 0.5, 3, training=False) is x
    seeds = torch.zeros(2, 3, 3, 4, dtype=torch.bool)  # Given seeds are used even at rate 0.
    out = torchdrop.drop_block(x, 0.0, 3, seeds=seeds)
    assert out is not x and torch.allclose(out, x)


def test_tensor_rates_are_clipped():
    x = torch.ones(4, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(torchdrop.drop_block(x, torch.tensor(float("nan")), 3, generator=g), x * 1)
    assert bool((torchdrop.drop_block(x, torch.tensor(2.0), 3, generator=g) == 0).all())
    out = torchdrop.drop_block(x, torch.tensor(-1.0), 3, generator=g, normalize="none")
    assert torch.equal(out, x)


def test_float16_counts_beyond_65504_kept_units():
    """The kept units are counted in integers: 90 000 of them in float16 still normalise
    correctly (torchvision's float16 sum overflows to inf there)."""
    x = torch.ones(1, 1, 300, 300, dtype=torch.float16)
    seeds = torch.zeros(1, 1, 298, 298, dtype=torch.bool)
    seeds[0, 0, ::50, ::50] = True
    out = torchdrop.drop_block(x, 0.1, 3, seeds=seeds)
    reference = torchdrop.drop_block(x.float(), 0.1, 3, seeds=seeds)
    assert bool(torch.isfinite(out).all())
    assert int((out != 0).sum()) > 65504
    assert torch.equal(out, reference.half())


def test_float16_saturates_instead_of_overflowing():
    seeds = torch.ones(2, 3, 64, 64, dtype=torch.bool)
    seeds[0, 0, 0, 0] = False
    x = torch.full((2, 3, 64, 64), 4.0, dtype=torch.float16, requires_grad=True)
    out = torchdrop.drop_block(x, 0.5, 1, seeds=seeds)
    assert out[0, 0, 0, 0].item() == 65504.0 and bool(torch.isfinite(out).all())
    out.sum().backward()  # The gradient passes the saturation straight through.
    assert x.grad[0, 0, 0, 0].item() == pytest.approx(2 * 3 * 64 * 64, rel=1e-3)
    inf = torch.full((1, 1, 2, 2), float("inf"), dtype=torch.float16)
    no_seeds = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    assert bool(torch.isinf(torchdrop.drop_block(inf, 0.5, 1, seeds=no_seeds)).all())


def test_float64_stays_float64():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    seeds = torch.from_numpy(np.random.default_rng(1).random((2, 3, 4, 4)) < 0.2)
    f = lambda v: torchdrop.drop_block(v, 0.3, 3, seeds=seeds, normalize="expected")
    assert f(x).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (x,))


@pytest.mark.parametrize("share", [False, True])
def test_channels_last(share):
    x = torch.randn(2, 4, 7, 6)
    seed_shape = torchdrop.drop_block_seed_shape(x.shape, 3, share_channels=share)
    seeds = torch.from_numpy(np.random.default_rng(2).random(seed_shape) < 0.2)
    expected = torchdrop.drop_block(x, 0.3, 3, seeds=seeds, share_channels=share)
    x_cl = x.to(memory_format=torch.channels_last)
    out = torchdrop.drop_block(x_cl, 0.3, 3, seeds=seeds, share_channels=share)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    x3 = torch.randn(2, 4, 3, 5, 6).to(memory_format=torch.channels_last_3d)
    out3 = torchdrop.drop_block(x3, 0.3, 2, generator=torch.Generator().manual_seed(0))
    assert out3.is_contiguous(memory_format=torch.channels_last_3d)


def test_generator_reproducibility():
    x = torch.randn(4, 3, 9, 9)
    draw = lambda seed: torchdrop.drop_block(
        x, 0.3, 3, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    torch.manual_seed(4)
    first = torchdrop.drop_block(x, 0.3, 3)
    torch.manual_seed(4)
    assert torch.equal(torchdrop.drop_block(x, 0.3, 3), first)
