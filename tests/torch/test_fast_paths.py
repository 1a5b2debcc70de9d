"""torchdrop's eager fast paths give the very bits of the traced (torch.compile) forms.

Eager code expands DropBlock seeds with flat byte ORs and applies masks by clearing bits (a
select mask, or zeroed rows); traced code keeps the bool ``where`` forms. Outputs and gradients
must agree bit for bit, including -0, infinities and NaNs in dropped and kept units, float16
saturation, channels-last layouts and every seeding and normalisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dropspec
import torchdrop
from torchdrop import _common, _draw, _drop_block

GEOMETRIES = [
    ((9,), (3,)),
    ((8,), (4,)),
    ((5,), (7,)),
    ((6, 9), (3, 3)),
    ((7, 5), (2, 4)),
    ((4, 3), (5, 5)),
    ((11, 10), (7, 1)),
    ((4, 5, 6), (2, 3, 1)),
    ((3, 4, 5), (3, 1, 6)),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _bits(t: torch.Tensor) -> np.ndarray:
    """The raw bits of a float tensor, so that -0 differs from +0 and NaN payloads count."""
    width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[t.element_size()]
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.detach().contiguous().cpu().numpy().view(width)


def _traced_rescale(x, keep, scale):
    """The traced form: ``where(keep, x * scale, 0)`` on a bool mask, with its gradient."""
    if isinstance(scale, torch.Tensor):
        scale = scale.detach()
    return _common._MaskedScale.apply(x, keep, scale)


def _awkward_input(shape, dtype, seed=0) -> torch.Tensor:
    """Signed values with -0, +-inf, NaN and (for float16) values that overflow when scaled."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape) * 3
    flat = values.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
    for i, special in zip(picks, [-0.0, np.inf, -np.inf, np.nan, -0.0, 60000.0, -65000.0, 1e-30]):
        flat[i] = special
    return torch.from_numpy(values).to(dtype)


def _drop_block_traced(x, seeds, block, **options):
    """drop_block with the traced expansion, count and bool rescale."""
    region = options.get("seed_region", "valid")
    geometry = _drop_block._geometry(x.shape, block, region)
    keep = ~_drop_block._expand_seeds(seeds, geometry)
    normalize = options.get("normalize", "batch")
    keep_prob = None
    if normalize == "expected":
        gamma = _drop_block._gamma(0.3, 0.3, geometry, "paper")
        keep_prob = _drop_block._keep_probability(gamma, geometry, x.device)
    scale = _drop_block._normalizer(keep, keep_prob, normalize, options.get("eps", 1e-6))
    return _traced_rescale(x, keep, scale)


@pytest.fixture(params=["numpy", "numpy-small-chunks", "torch"])
def on_host(request, monkeypatch):
    """Runs a test with the CPU's NumPy mask work (and, with tiny chunks, the chunked rescale
    on every shape), then with the tensor code other devices run."""
    if request.param == "numpy-small-chunks":
        monkeypatch.setattr(_common, "_CHUNK_BYTES", 16)
    if request.param == "torch":
        monkeypatch.setattr(_common, "on_host", lambda tensor: False)
    return request.param != "torch"


@pytest.mark.parametrize("region", ["valid", "full"])
@pytest.mark.parametrize(("spatial", "block"), GEOMETRIES)
@pytest.mark.parametrize("share", [False, True])
def test_drop_block_matches_traced_form(spatial, block, region, share, on_host):
    shape = (2, 3, *spatial)
    seed_shape = torchdrop.drop_block_seed_shape(
        shape, block, share_channels=share, seed_region=region
    )
    rng = np.random.default_rng(len(spatial) + 7 * share)
    seeds = torch.from_numpy(rng.random(seed_shape) < 0.1)
    for dtype in DTYPES:
        for normalize in ("batch", "example", "expected", "none"):
            options = dict(seed_region=region, normalize=normalize, share_channels=share)
            x = _awkward_input(shape, dtype).requires_grad_(True)
            out = torchdrop.drop_block(x, 0.3, block, seeds=seeds, **options)
            cotangent = _awkward_input(shape, dtype, seed=1)
            (grad,) = torch.autograd.grad(out, x, cotangent)
            expected = _drop_block_traced(x, seeds, block, **options)
            (expected_grad,) = torch.autograd.grad(expected, x, cotangent)
            np.testing.assert_array_equal(_bits(out), _bits(expected), err_msg=str(options))
            np.testing.assert_array_equal(_bits(grad), _bits(expected_grad), err_msg=str(options))


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("region", ["valid", "full"])
def test_drop_block_channels_last_matches_traced_form(share, region, on_host):
    for shape, block, layout in [
        ((3, 5, 9, 8), (3, 4), torch.channels_last),
        ((2, 4, 5, 6, 7), (2, 3, 3), torch.channels_last_3d),
    ]:
        seed_shape = torchdrop.drop_block_seed_shape(
            shape, block, share_channels=share, seed_region=region
        )
        seeds = torch.from_numpy(np.random.default_rng(3).random(seed_shape) < 0.15)
        x = _awkward_input(shape, torch.float32).to(memory_format=layout)
        options = dict(seed_region=region, share_channels=share)
        out = torchdrop.drop_block(x, 0.3, block, seeds=seeds, **options)
        assert out.is_contiguous(memory_format=layout)
        expected = _drop_block_traced(x.contiguous(), seeds, block, **options)
        np.testing.assert_array_equal(_bits(out), _bits(expected))


def test_dropped_units_against_padding_and_pooling(on_host):
    """The flat-buffer expansion equals the padded max-pool definition on random seeds, both
    layouts, including blocks as large as the map."""
    rng = np.random.default_rng(4)
    for spatial, block in [((56, 56), (7, 7)), ((7, 7), (7, 7)), ((9, 13), (1, 5))]:
        for region in ("valid", "full"):
            geometry = dropspec.block_geometry(spatial, block, region)
            for channels in (1, 4):
                shape = dropspec.seed_shape((3, channels, *spatial), geometry, False, False)
                seeds = torch.from_numpy(rng.random(shape) < 0.05)
                expected = _drop_block._expand_seeds(seeds, geometry)
                for channels_last in (False, True):
                    got = torch.as_tensor(
                        _drop_block._dropped_units(seeds, geometry, channels_last)
                    )
                    assert got.dtype == torch.uint8 and got.shape == expected.shape
                    assert torch.equal(got != 0, expected), (spatial, block, region)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "keep_shape"),
    [
        ((6, 5, 70), (6, 1, 1)),  # DropPath rows: the dropped rows are zeroed
        ((6, 5, 7), (6, 1, 1)),  # rows too short for that: a select mask
        ((4, 3, 8, 9), (4, 3, 1, 1)),  # SpatialDropout
        ((4, 3, 8, 9), (4, 1, 8, 9)),  # a shared DropBlock mask
        ((4, 3, 8, 9), (1, 1, 8, 9)),
        ((4, 3, 8, 9), (4, 3, 8, 9)),  # full size: an int8 select mask
        ((5, 4), ()),  # DropPath mode="batch"
    ],
)
@pytest.mark.parametrize("scale_kind", ["float", "tensor", "per-example", "zero"])
def test_masked_scale_matches_where(dtype, shape, keep_shape, scale_kind, on_host):
    rng = np.random.default_rng(5)
    for trial in range(4):
        keep = torch.as_tensor(rng.random(keep_shape) < [0.0, 0.3, 0.8, 1.0][trial])
        scale = {
            "float": 1 / 0.7,
            "tensor": torch.tensor(1.37),
            "per-example": torch.from_numpy(rng.random((shape[0],) + (1,) * (len(shape) - 1)))
            .float()
            .add(0.5),
            "zero": 0.0,
        }[scale_kind]
        for layout in ("contiguous", "channels_last", "transposed"):
            x = _awkward_input(shape, dtype, seed=trial)
            if layout == "channels_last":
                if x.ndim != 4:
                    continue
                x = x.to(memory_format=torch.channels_last)
            elif layout == "transposed":
                x = x.transpose(0, -1).contiguous().transpose(0, -1)
            x.requires_grad_(True)
            out = _common.masked_scale(x, keep, scale)
            expected = _traced_rescale(x, keep, scale)
            np.testing.assert_array_equal(_bits(out), _bits(expected), err_msg=layout)
            cotangent = _awkward_input(shape, dtype, seed=9)
            (grad,) = torch.autograd.grad(out, x, cotangent)
            (expected_grad,) = torch.autograd.grad(expected, x, cotangent)
            np.testing.assert_array_equal(_bits(grad), _bits(expected_grad), err_msg=layout)
            if layout == "channels_last":
                assert out.is_contiguous(memory_format=torch.channels_last)


def test_drop_path_and_spatial_dropout_zero_non_finite_units():
    x = torch.tensor([[float("inf"), -1.0], [float("nan"), -0.0], [-2.0, float("-inf")]])
    keep = torch.tensor([False, True, False])
    out = torchdrop.drop_path(x.expand(3, 2).reshape(3, 1, 2).expand(3, 64, 2), 0.5, keep=keep)
    assert _bits(out[0]).max() == 0 and _bits(out[2]).max() == 0
    assert torch.isnan(out[1, :, 0]).all() and _bits(out[1, :, 1]).tolist() == [2**31] * 64
    x4 = torch.full((2, 2, 9, 9), float("-inf"))
    out4 = torchdrop.spatial_dropout(x4, 0.5, keep=torch.tensor([[True, False], [False, True]]))
    assert (out4[0, 0] == float("-inf")).all() and _bits(out4[0, 1]).max() == 0


def test_double_backward_matches_traced_form():
    x = torch.randn(4, 3, 70, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([True, False, True, True])[:, None, None]
    f = lambda v: _common.masked_scale(v, keep, 1.5) ** 2
    assert torch.autograd.gradgradcheck(f, (x,))
    seeds = torch.rand(2, 3, 6, 6) < 0.2
    g = lambda v: torchdrop.drop_block(v, 0.3, 3, seeds=seeds, seed_region="full") ** 2
    assert torch.autograd.gradgradcheck(
        g, (x[:2, :, :36].reshape(2, 3, 6, 6).detach().requires_grad_(),)
    )


def _adjacent_pairs(flat: np.ndarray) -> int:
    return int(np.count_nonzero(flat[:-1] & flat[1:]))


@pytest.mark.parametrize("batch", ["default", "tiny"])
@pytest.mark.parametrize("p", [1e-4, 0.0026, 1 / 16])
def test_sparse_bernoulli_is_the_bernoulli_process(p, batch, monkeypatch):
    """The gap draws give independent Bernoulli(p) values: the count, the count in each
    sixteenth, the adjacent pairs and the gap tail match, also when many batches are needed."""
    if batch == "tiny":
        monkeypatch.setattr(_draw, "_gap_batch", lambda expected: 3)
    n = 1_000_000
    limit, _ = _draw.threshold(p)
    q = limit / 2**31
    generator = torch.Generator().manual_seed(int(p * 1e6))
    draws = [_draw.bernoulli((n,), p, generator=generator).numpy() for _ in range(4)]
    total = np.stack(draws).reshape(-1)

    def close(count, expected, spread=5):
        return abs(count - expected) <= spread * np.sqrt(expected * (1 - min(q, 0.5))) + 2

    assert close(np.count_nonzero(total), total.size * q)
    for part in np.split(total, 64):
        assert close(np.count_nonzero(part), part.size * q)
    pairs = sum(_adjacent_pairs(d) for d in draws)
    assert close(pairs, 4 * (n - 1) * q * q)
    gaps = np.diff(np.flatnonzero(total)) - 1
    for k in (1, int(0.5 / q), int(2 / q)):
        assert close(np.count_nonzero(gaps >= k), gaps.size * (1 - q) ** k)


def test_sparse_bernoulli_reproducible_and_exact_ends():
    a = _draw.bernoulli((3, 5000), 0.01, generator=torch.Generator().manual_seed(3))
    b = _draw.bernoulli((3, 5000), 0.01, generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, 5000) and a.dtype == torch.bool and torch.equal(a, b)
    torch.manual_seed(1)
    c = _draw.bernoulli((4096,), 0.001)
    torch.manual_seed(1)
    assert torch.equal(c, _draw.bernoulli((4096,), 0.001))
    assert not _draw.bernoulli((5000,), 1e-12, generator=torch.Generator()).any()


def test_drop_block_draws_only_its_seed_region_sparsely():
    """Large seed maps are drawn sparsely, still over the seed region only."""
    shape, block = (4, 8, 40, 36), (5, 3)
    seed_shape = torchdrop.drop_block_seed_shape(shape, block)
    gamma = torchdrop.drop_block_gamma(shape, 0.2, block)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torchdrop.drop_block(torch.ones(shape), 0.2, block, generator=a)
    _draw.bernoulli(seed_shape, gamma, generator=b)
    assert torch.equal(a.get_state(), b.get_state())


def test_chunked_rescale_is_taken_and_exact(monkeypatch):
    """A shared mask on a large input takes the chunked rescale, with a per-example scale too,
    and gives the bits of the one-shot passes."""
    monkeypatch.setattr(_common, "_CHUNK_BYTES", 4096)
    x = _awkward_input((6, 8, 12, 11), torch.float32)
    seeds = torch.from_numpy(np.random.default_rng(9).random((6, 1, 12, 11)) < 0.1)
    calls = []
    chunked = _common._rescale_in_chunks
    monkeypatch.setattr(_common, "_rescale_in_chunks", lambda *a: calls.append(1) or chunked(*a))
    for normalize in ("batch", "example"):
        options = dict(seed_region="full", share_channels=True, normalize=normalize)
        out = torchdrop.drop_block(x, 0.3, (3, 3), seeds=seeds, **options)
        expected = _drop_block_traced(x, seeds, (3, 3), **options)
        np.testing.assert_array_equal(_bits(out), _bits(expected))
    assert len(calls) == 2
