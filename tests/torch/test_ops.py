"""torchdrop's DropPath, stochastic depth, SpatialDropout, Cutout and Uout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchdrop


def _within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1e-9


# DropPath


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drop_path_rate_and_scale(rate):
    n = 20_000
    x = torch.ones(n, 3)
    out = torchdrop.drop_path(x, rate, generator=torch.Generator().manual_seed(0))
    dropped = (out[:, 0] == 0).numpy()
    assert _within_4_sigma(int(dropped.sum()), n, rate)
    assert bool((out == 0).all(dim=1).eq(out[:, 0] == 0).all())  # Whole rows.
    np.testing.assert_allclose(out[~torch.from_numpy(dropped)].numpy(), 1 / (1 - rate), rtol=1e-6)


def test_drop_path_batch_mode_drops_all_or_nothing():
    g = torch.Generator().manual_seed(1)
    outcomes = [
        torchdrop.drop_path(torch.ones(5, 2), 0.5, mode="batch", generator=g) for _ in range(400)
    ]
    dropped = [bool((o == 0).all()) for o in outcomes]
    assert all(bool((o == 0).all()) or bool((o == 2).all()) for o in outcomes)
    assert _within_4_sigma(sum(dropped), 400, 0.5)


@pytest.mark.parametrize("rate", [1.0, torch.tensor(1.0)])
def test_drop_path_rate_one(rate):
    x = torch.randn(4, 3, requires_grad=True)
    out = torchdrop.drop_path(x, rate, keep=torch.ones(4, dtype=torch.bool))
    out.sum().backward()
    assert bool((out == 0).all()) and bool((x.grad == 0).all())  # No 0/0, no NaN.


def test_drop_path_tensor_rate_gets_no_gradient():
    rate = torch.tensor(0.25, requires_grad=True)
    x = torch.randn(4, 3, requires_grad=True)
    out = torchdrop.drop_path(x, rate, keep=torch.tensor([True, False, True, True]))
    out.sum().backward()
    assert rate.grad is None
    torch.testing.assert_close(x.grad[0], torch.full((3,), 4 / 3))


# Stochastic depth


class Counting(torch.nn.Module):
    def __init__(self, features=4, stride=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(features, 2 * features, 3, stride=stride, padding=1)
        self.bn = torch.nn.BatchNorm2d(2 * features)
        self.calls = 0

    def forward(self, x):
        # Shape inference runs the module on the meta device: count the calls on data only.
        self.calls += x.device.type != "meta"
        return self.bn(self.conv(x))


def test_dropped_branch_is_not_computed():
    """A dropped branch is not called and its BatchNorm statistics stay; the zeros have the
    branch's output shape (here, another shape than the input) and dtype."""
    branch = Counting(stride=2)
    x = torch.randn(2, 4, 8, 8)
    stats = branch.bn.running_mean.clone()
    out = torchdrop.stochastic_depth(branch, x, 0.5, keep=torch.tensor(False))
    assert branch.calls == 0 and torch.equal(branch.bn.running_mean, stats)
    assert out.shape == (2, 8, 4, 4) and out.dtype == x.dtype and bool((out == 0).all())
    out = torchdrop.stochastic_depth(branch, x, 0.5, keep=torch.tensor(True))
    assert branch.calls == 1 and not torch.equal(branch.bn.running_mean, stats)
    torch.testing.assert_close(out, 2 * branch.train()(x) / 1, rtol=1e-5, atol=1e-5)


def test_dropped_branch_output_of_other_dtype_and_pytree():
    branch = lambda h: {"half": h.half()[:, :2], "pair": (h.sum(dim=1), h.mean())}
    x = torch.randn(3, 4, 5)
    out = torchdrop.stochastic_depth(branch, x, 0.5, keep=torch.tensor(False))
    assert out["half"].shape == (3, 2, 5) and out["half"].dtype == torch.float16
    assert out["pair"][0].shape == (3, 5) and out["pair"][1].shape == ()
    assert all(bool((v == 0).all()) for v in (out["half"], *out["pair"]))
    kept = torchdrop.stochastic_depth(branch, x, 0.5, keep=torch.tensor(True))
    torch.testing.assert_close(kept["pair"][0], 2 * x.sum(dim=1))


def test_dropped_closures():
    """A function branch runs on meta inputs to learn its output shape; one that cannot (here
    a BatchNorm with real buffers) gets an error that says what to pass instead."""
    conv, bn = torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(2)
    x, dropped = torch.randn(1, 2, 4, 4), torch.tensor(False)
    out = torchdrop.stochastic_depth(lambda h: conv(h)[:, :, 1:], x, 0.5, keep=dropped)
    assert out.shape == (1, 3, 3, 4) and bool((out == 0).all())
    with pytest.raises(TypeError, match=r"pass the branch as a torch\.nn\.Module"):
        torchdrop.stochastic_depth(lambda h: bn(h), x, 0.5, keep=dropped)
    assert torchdrop.stochastic_depth(bn, x, 0.5, keep=dropped).shape == x.shape


def test_output_shape_is_inferred_once_per_input_shape(monkeypatch):
    from torchdrop import _stochastic_depth

    calls = []
    infer = _stochastic_depth._infer_spec
    monkeypatch.setattr(_stochastic_depth, "_infer_spec", lambda *a: calls.append(1) or infer(*a))
    branch = Counting()
    for shape in [(2, 4, 6, 6), (2, 4, 6, 6), (3, 4, 6, 6), (2, 4, 6, 6)]:
        out = torchdrop.stochastic_depth(branch, torch.randn(shape), 0.5, keep=torch.tensor(False))
        assert out.shape == (shape[0], 8, 6, 6)
    assert len(calls) == 2


@pytest.mark.parametrize("rate", [0.3, torch.tensor(0.3)])
def test_stochastic_depth_scaling(rate):
    x = torch.randn(4, 3)
    double = lambda h: 2 * h
    keep = torch.tensor([True, False, True, False])
    row = torchdrop.stochastic_depth(double, x, rate, keep=keep, mode="row")
    torch.testing.assert_close(row, torch.where(keep[:, None], 2 * x / 0.7, 0.0))
    test = torchdrop.stochastic_depth(double, x, rate, keep=keep, mode="row", scaling="test")
    torch.testing.assert_close(test, torch.where(keep[:, None], 2 * x, 0.0))
    evaluated = torchdrop.stochastic_depth(double, x, rate, scaling="test", training=False)
    torch.testing.assert_close(evaluated, 2 * x * 0.7)
    assert torch.equal(torchdrop.stochastic_depth(double, x, rate, training=False), 2 * x)


def test_stochastic_depth_survival_rate():
    g = torch.Generator().manual_seed(3)
    branch = Counting()
    x = torch.randn(1, 4, 3, 3)
    for _ in range(400):
        torchdrop.stochastic_depth(branch, x, 0.3, generator=g)
    assert _within_4_sigma(branch.calls, 400, 0.7)


def test_stochastic_depth_python_rate_extremes():
    branch = Counting()
    x = torch.randn(2, 4, 3, 3)
    zeros = torchdrop.stochastic_depth(branch, x, 1.0)
    assert branch.calls == 0 and bool((zeros == 0).all())
    torch.testing.assert_close(torchdrop.stochastic_depth(branch, x, 0.0), branch(x))


def test_stochastic_depth_tensor_rate_one_is_finite():
    x = torch.randn(2, 3, requires_grad=True)
    out = torchdrop.stochastic_depth(lambda h: 3 * h, x, torch.tensor(1.0), keep=torch.tensor(True))
    out.sum().backward()
    assert bool((out == 0).all()) and bool(torch.isfinite(x.grad).all())


# SpatialDropout


def test_spatial_dropout_drops_whole_channels():
    g = torch.Generator().manual_seed(4)
    out = torchdrop.spatial_dropout(torch.ones(200, 16, 3, 4), 0.25, generator=g)
    per_map = out.flatten(2)
    dropped = (per_map == 0).all(dim=2)
    assert bool(((per_map == 0).any(dim=2) == dropped).all())  # All of a map or nothing.
    assert _within_4_sigma(int(dropped.sum()), 200 * 16, 0.25)
    assert bool((per_map[~dropped] == 1 / 0.75).all())


def test_spatial_dropout_rate_one_and_no_scaling():
    x = torch.randn(2, 3, 4, requires_grad=True)
    out = torchdrop.spatial_dropout(x, torch.tensor(1.0), keep=torch.ones(2, 3, dtype=torch.bool))
    out.sum().backward()
    assert bool((out == 0).all()) and bool(torch.isfinite(x.grad).all())
    keep = torch.tensor([[True, False, True], [False, True, True]])
    out = torchdrop.spatial_dropout(x, 0.5, keep=keep, scale_by_keep=False)
    assert torch.equal(out, torch.where(keep[..., None], x, 0.0))


# Cutout


def test_cutout_hole_geometry():
    x = torch.ones(2, 1, 6, 7)
    centers = torch.tensor([[[0, 6]], [[3, 3]]])
    out = torchdrop.cutout(x, (3, 4), centers=centers, fill=-1.0)
    # Example 0: rows [-1, 2) clipped to [0, 2), cols [4, 8) clipped to [4, 7).
    expected0 = np.ones((6, 7))
    expected0[0:2, 4:7] = -1
    expected1 = np.ones((6, 7))
    expected1[2:5, 1:5] = -1
    np.testing.assert_array_equal(out[0, 0].numpy(), expected0)
    np.testing.assert_array_equal(out[1, 0].numpy(), expected1)


def test_cutout_centres_are_uniform():
    n, size = 6000, (5, 3)
    g = torch.Generator().manual_seed(5)
    x = torch.ones(n, 1, *size)
    out = torchdrop.cutout(x, 1, generator=g)
    holes = (out[:, 0] == 0).reshape(n, -1)
    assert bool((holes.sum(dim=1) == 1).all())  # One single-unit hole each.
    counts = holes.sum(dim=0).numpy()
    assert all(_within_4_sigma(int(c), n, 1 / 15) for c in counts)


def test_cutout_several_holes_and_no_rescale():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 3, 10, 10)
    out = torchdrop.cutout(x, 2, num_holes=3, generator=g, fill=0.5)
    changed = out != x
    assert bool((changed == changed[:, :1]).all())  # The same holes in every channel.
    assert bool((out[changed] == 0.5).all())
    per_example = changed[:, 0].flatten(1).sum(dim=1)
    assert bool((per_example <= 12).all()) and bool((per_example > 0).all())
    assert torch.equal(torchdrop.cutout(x, 2, training=False), x)


# Uout


def test_uout_noise_range_and_mean():
    g = torch.Generator().manual_seed(8)
    x = torch.full((200_000,), 2.0)
    out = torchdrop.uout(x, 0.3, generator=g)
    r = out / x - 1
    assert float(r.min()) >= -0.3 - 1e-6 and float(r.max()) <= 0.3 + 1e-6
    # r ~ U(-0.3, 0.3): variance 0.3**2 / 3.
    assert abs(float(r.double().mean())) <= 4 * math.sqrt(0.09 / 3 / x.numel())
    assert torch.equal(torchdrop.uout(x, 0.0), x) and torch.equal(
        torchdrop.uout(x, 0.3, training=False), x
    )


def test_uout_gradient_and_half_precision():
    x = torch.tensor([1.0, -2.0, 60000.0], dtype=torch.float16, requires_grad=True)
    noise = torch.tensor([0.5, 0.25, 0.5])
    out = torchdrop.uout(x, 0.5, noise=noise)
    assert out.tolist() == [1.5, -2.5, 65504.0]
    out.sum().backward()
    assert x.grad.tolist() == [1.5, 1.25, 0.0]
