"""torchdrop's nn.Modules, torch.compile, schedules and docstring examples."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import torchdrop

MODULES = {
    "DropBlock": lambda: torchdrop.DropBlock(0.3, 3, calibration="exact"),
    "DropBlock-tensor-rate": lambda: torchdrop.DropBlock(
        torch.tensor(0.3), (2, 3), seed_region="full", normalize="expected", calibration="exact"
    ),
    "DropPath": lambda: torchdrop.DropPath(0.3),
    "SpatialDropout": lambda: torchdrop.SpatialDropout(0.3),
    "Uout": lambda: torchdrop.Uout(0.3),
    "Cutout": lambda: torchdrop.Cutout(3, num_holes=2),
    "StochasticDepth": lambda: torchdrop.StochasticDepth(torch.nn.Conv2d(4, 4, 3, padding=1), 0.3),
    "StochasticDepth-row": lambda: torchdrop.StochasticDepth(
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.tensor(0.3), mode="row", scaling="test"
    ),
}


def test_repr():
    assert repr(torchdrop.DropBlock(0.1, 7)) == (
        "DropBlock(rate=0.1, block_size=7, share_channels=False, seed_region='valid', "
        "calibration='paper', normalize='batch', eps=1e-06)"
    )
    assert repr(torchdrop.DropPath(torch.tensor(0.25), mode="batch")) == (
        "DropPath(rate=0.25 (tensor), mode='batch', scale_by_keep=True)"
    )
    assert repr(torchdrop.Uout(0.2)) == "Uout(rate=0.2)"
    assert repr(torchdrop.Cutout((4, 2), fill=0.5)) == "Cutout(size=(4, 2), num_holes=1, fill=0.5)"
    assert "rate=0.5, mode='batch', scaling='inverted'" in repr(
        torchdrop.StochasticDepth(torch.nn.Identity(), 0.5)
    )


@pytest.mark.parametrize("name", MODULES)
def test_training_and_eval(name):
    """Training draws (from the module's generator when it has one); eval is the identity,
    except stochastic depth's "test" scaling, and its branch's own output."""
    module = MODULES[name]()
    x = torch.randn(4, 4, 8, 8)
    assert not list(module.buffers()) and module.training
    module.generator = torch.Generator().manual_seed(0)
    first = module(x)
    module.generator = torch.Generator().manual_seed(0)
    assert torch.equal(module(x), first)
    module.eval()
    expected = x
    if name.startswith("StochasticDepth"):
        expected = module.branch(x) * (0.7 if name.endswith("row") else 1.0)
    torch.testing.assert_close(module(x), expected)


def test_presampled_draws_as_forward_keywords():
    x = torch.ones(2, 3, 4, 4)
    keep = torch.tensor([True, False])
    torch.testing.assert_close(
        torchdrop.DropPath(0.5)(x, keep=keep)[:, 0, 0, 0], torch.tensor([2.0, 0.0])
    )
    seeds = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    assert torch.equal(torchdrop.DropBlock(0.5, 3, normalize="none")(x, seeds=seeds), x)
    with pytest.raises(ValueError, match="Pass either `generator` or `seeds`"):
        torchdrop.DropBlock(0.5, 3, generator=torch.Generator())(x, seeds=seeds)


def test_stochastic_depth_module_passes_arguments():
    class Branch(torch.nn.Module):
        def forward(self, a, b, *, scale):
            return (a + b) * scale

    module = torchdrop.StochasticDepth(Branch(), 0.5, generator=torch.Generator().manual_seed(1))
    outs = [module(torch.ones(2, 3), torch.ones(2, 3), scale=2.0) for _ in range(40)]
    values = {float(o[0, 0]) for o in outs}
    assert values == {0.0, 8.0}  # Dropped: zeros; kept: (1 + 1) * 2 / 0.5.


def test_channels_last_and_half_precision_modules():
    x = torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last)
    for dtype in (torch.float16, torch.bfloat16):
        for name, make in MODULES.items():
            module = make()
            module.generator = torch.Generator().manual_seed(2)
            out = module.to(dtype)(x.to(dtype))
            assert out.dtype == dtype and bool(torch.isfinite(out).all()), name
            if not name.startswith("StochasticDepth"):
                assert out.is_contiguous(memory_format=torch.channels_last), name


@pytest.mark.parametrize("name", MODULES)
def test_compiles_in_one_graph(name):
    """fullgraph=True: no graph break, forward and backward (Dynamo + AOTAutograd)."""
    torch._dynamo.reset()
    module = MODULES[name]()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 4, 8, 8, requires_grad=True)
    out = compiled(x)
    out.sum().backward()
    assert out.shape == x.shape and bool(torch.isfinite(x.grad).all())
    module.eval()
    torch.testing.assert_close(compiled(x), module(x))


def test_one_graph_for_every_module_and_changing_rates():
    """Every module in one graph; a tensor rate changes between steps without recompiling, and
    a new batch size compiles once more (a dynamic batch dim), not per size."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(*(make() for make in MODULES.values()))
    counter = CompileCounter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    ramp = torchdrop.schedules.linear_ramp(0.3, 3)
    for step, batch in enumerate([4, 4, 6, 5]):
        model[0].rate = ramp(step)
        x = torch.randn(batch, 4, 8, 8, requires_grad=True)
        compiled(x).sum().backward()
        assert bool(torch.isfinite(x.grad).all())
    assert counter.frame_count == 2


def test_inductor():
    """Inductor compiles DropBlock followed by a convolution branch, forward and backward (a
    padded bool mask there once broke its CPU code generator), and gives the eager values
    on given seeds."""
    torch._dynamo.reset()
    branch = torch.nn.Conv2d(4, 4, 3, padding=1)
    drop = torchdrop.DropBlock(torch.tensor(0.3), (2, 3), seed_region="full", calibration="exact")

    def f(x, seeds):
        h = drop(x, seeds=seeds)
        return h + torchdrop.stochastic_depth(branch, h, 0.3, keep=torch.tensor(True))

    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(4, 4, 8, 8, requires_grad=True)
    seeds = torch.rand(drop_seed_shape := (4, 4, 8, 8)) < 0.1
    assert drop_seed_shape == torchdrop.drop_block_seed_shape(x.shape, (2, 3), seed_region="full")
    out = compiled(x, seeds)
    out.sum().backward()
    grad, x.grad = x.grad, None
    expected = f(x, seeds)
    expected.sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, x.grad)


def test_compiled_stochastic_depth_masks_instead_of_skipping():
    """Under torch.compile the draw cannot steer Python: the branch runs (its BatchNorm updates
    its statistics) and is masked; each call gives zeros or the scaled branch output."""
    torch._dynamo.reset()
    branch = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    module = torchdrop.StochasticDepth(branch, 0.5)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 5, 5)
    kept = 2 * branch(x).detach()  # Training-mode BatchNorm: the same output every call.
    torch.manual_seed(0)
    dropped = []
    for calls in range(2, 22):
        out = compiled(x)
        assert int(branch[1].num_batches_tracked) == calls
        dropped.append(bool((out == 0).all()))
        if not dropped[-1]:
            torch.testing.assert_close(out, kept)
    assert 0 < sum(dropped) < 20


@pytest.mark.parametrize("normalize", ["batch", "expected"])
def test_compiled_drop_block_matches_eager_on_given_seeds(normalize):
    """With the seeds given, compiled and eager DropBlock agree; a new spatial size makes the
    dims dynamic, which DropBlock specialises again (its geometry is computed in Python)."""
    torch._dynamo.reset()

    def f(x, seeds):
        return torchdrop.drop_block(
            x, 0.3, 3, seeds=seeds, normalize=normalize, calibration="exact"
        )

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for size in (7, 9):
        x = torch.randn(2, 3, size, size)
        seeds = torch.rand(2, 3, size - 2, size - 2) < 0.2
        torch.testing.assert_close(compiled(x, seeds), f(x, seeds))


def test_schedules():
    ramp = torchdrop.schedules.linear_ramp(0.2, total_steps=10, start_step=5)
    assert [round(float(ramp(s)), 6) for s in (0, 5, 10, 15, 100)] == [0.0, 0.0, 0.1, 0.2, 0.2]
    value = ramp(torch.tensor(10))
    assert value.dtype == torch.float32 and value.shape == ()
    assert torchdrop.schedules.depth_rates(0.5, 4) == [0.125, 0.25, 0.375, 0.5]
