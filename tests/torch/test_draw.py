"""torchdrop._draw: the one place torchdrop draws random numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dropspec
from torchdrop import _draw


def _within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.mark.parametrize("p", [1e-3, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("kind", ["float", "tensor"])
def test_bernoulli_rate(p, kind):
    n = 200_000
    g = torch.Generator().manual_seed(int(p * 1000))
    draws = _draw.bernoulli((n,), p if kind == "float" else torch.tensor(p), generator=g)
    assert draws.dtype == torch.bool and draws.shape == (n,)
    assert _within_4_sigma(int(draws.sum()), n, p)


@pytest.mark.parametrize("p", [0.0, 1.0, 1.5, -0.5])
def test_bernoulli_ends_are_exact(p):
    g = torch.Generator().manual_seed(0)
    expected = p >= 1.0
    for value in (p, torch.tensor(p)):
        if isinstance(value, float) and not 0 <= value <= 1:
            continue  # Python probabilities are checked by the ops; tensors are clipped here.
        draws = _draw.bernoulli((1000,), value, generator=g)
        assert bool((draws == expected).all())


def test_threshold_matches_dropspec():
    """31 bits: floor(p * 2**31), the float64 threshold of dropspec halved, for Python floats;
    the same from float32 in-graph for tensors whose value is exactly representable."""
    for p in [1e-9, 0.00256, 0.1, 0.25, 0.5, 0.75, 1 - 2**-20]:
        limit, always = _draw.threshold(p)
        assert limit == dropspec.keep_threshold(p) // 2 == math.floor(p * 2**31)
        assert always is False
    for p in [0.25, 0.5, 0.75, 2**-20]:
        limit, always = _draw.threshold(torch.tensor(p))
        assert limit.item() == math.floor(p * 2**31) and not always.item()
    assert _draw.threshold(1.0) == (0, True)
    assert _draw.threshold(torch.tensor(1.0))[1].item()


def test_bits_range_and_global_generator():
    torch.manual_seed(3)
    a = _draw.bits((4096,))
    torch.manual_seed(3)
    b = _draw.bits((4096,))
    assert torch.equal(a, b) and a.dtype == torch.int32
    assert int(a.min()) >= 0 and int(a.max()) < 2**31
    # The top bit of 31 is set about half the time: the draws span the whole range.
    assert _within_4_sigma(int((a >= 2**30).sum()), 4096, 0.5)


def test_uniform_index_is_uniform():
    n, extent = 60_000, (7, 3)
    g = torch.Generator().manual_seed(1)
    draws = _draw.uniform_index((n, 2), extent, generator=g)
    assert draws.dtype == torch.int64
    for axis, size in enumerate(extent):
        counts = np.bincount(draws[:, axis].numpy(), minlength=size)
        assert counts.size == size  # Nothing out of range.
        assert all(_within_4_sigma(int(c), n, 1 / size) for c in counts)


def test_uniform_range():
    u = _draw.uniform((100_000,), generator=torch.Generator().manual_seed(2))
    assert u.dtype == torch.float32 and float(u.min()) >= 0 and float(u.max()) < 1
    # mean of U(0, 1): sigma = sqrt(1/12 / n).
    assert abs(float(u.double().mean()) - 0.5) <= 4 * math.sqrt(1 / 12 / u.numel())
