"""torchdrop against the peers' own code: torchvision's drop_block2d/drop_block3d and
stochastic_depth, timm's drop_block_2d and drop_path.

Each peer draws its seeds (or keep vector) from PyTorch's global generator. The test runs the
peer under ``torch.manual_seed``, resets the seed, draws the same Bernoulli tensor again (same
shape, dtype, probability and call order), and gives it to torchdrop with the options that
describe the peer; the outputs must agree within the tolerance table. The peers' files are
fetched by ``python -m tools.peers``; the tests skip when they are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchdrop
from parity_tests import helpers
from parity_tests.tolerances import assert_close
from tools import peers

pytestmark = pytest.mark.skipif(
    bool(peers.missing()),
    reason=f"the peers' files are not in {peers.default_dest()}: run `python -m tools.peers`",
)


@pytest.fixture(scope="module")
def torchvision_drop_block():
    return peers.torchvision_drop_block()


@pytest.fixture(scope="module")
def torchvision_stochastic_depth():
    return peers.torchvision_stochastic_depth()


@pytest.fixture(scope="module")
def timm():
    return peers.timm_drop()


def _input(shape, dtype, seed=0):
    return helpers.as_torch(helpers.signed_input(np.random.default_rng(seed), shape), dtype)


def _redraw(seed: int, shape, dtype, p: float) -> torch.Tensor:
    """The peer's draw again: ``torch.empty(shape, dtype).bernoulli_(p)`` after ``seed``."""
    torch.manual_seed(seed)
    return torch.empty(shape, dtype=dtype).bernoulli_(p).bool()


def _peer_seeds(seed: int, x, rate: float, block: int, *, share=False, region="valid"):
    """The seeds a peer drew after ``torch.manual_seed(seed)``: Bernoulli over ``region``'s
    seed positions, with the valid-seeding paper gamma that both peers compute."""
    shape = torchdrop.drop_block_seed_shape(
        x.shape, block, share_channels=share, seed_region=region
    )
    return _redraw(seed, shape, x.dtype, torchdrop.drop_block_gamma(x.shape, rate, block))


def _compare(ours, theirs, dtype: str, what: str):
    ours, theirs = helpers.to_numpy(ours), helpers.to_numpy(theirs)
    np.testing.assert_array_equal(ours != 0, theirs != 0, err_msg=f"{what}: masks differ")
    assert (ours == 0).any() or "keep" in what, f"{what}: nothing dropped, a weak case"
    assert_close(ours, theirs, dtype, "output", what, comparison="torchdrop vs peer")


TORCHVISION_2D = [(8, 8, 3), (7, 10, 3), (9, 6, 5), (5, 5, 7), (6, 9, 1)]


@pytest.mark.parametrize("p", [0.1, 0.4])
@pytest.mark.parametrize(("h", "w", "block"), TORCHVISION_2D)
def test_torchvision_drop_block2d(torchvision_drop_block, h, w, block, p):
    """Valid seeding, one mask per channel, batch normalisation, eps 1e-6."""
    x = _input((3, 4, h, w), "float32")
    torch.manual_seed(17)
    theirs = torchvision_drop_block.drop_block2d(x, p, block, eps=1e-6)
    k = min(block, h, w)  # torchvision clips one size for both axes.
    seeds = _peer_seeds(17, x, p, k)
    ours = torchdrop.drop_block(x, p, k, seeds=seeds, eps=1e-6)
    _compare(ours, theirs, "float32", f"torchvision drop_block2d {h}x{w} k={block}")


@pytest.mark.parametrize(("shape", "block"), [((4, 5, 6), 3), ((5, 5, 5), 7), ((3, 6, 4), 1)])
def test_torchvision_drop_block3d(torchvision_drop_block, shape, block):
    x = _input((2, 3, *shape), "float32")
    torch.manual_seed(5)
    theirs = torchvision_drop_block.drop_block3d(x, 0.3, block, eps=1e-6)
    k = min(block, *shape)
    seeds = _peer_seeds(5, x, 0.3, k)
    ours = torchdrop.drop_block(x, 0.3, k, seeds=seeds, eps=1e-6)
    _compare(ours, theirs, "float32", f"torchvision drop_block3d {shape} k={block}")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torchvision_drop_block2d_half(torchvision_drop_block, dtype):
    """Half precision: torchvision draws and sums the mask in the input dtype; the results agree
    within two units in the last place while the count of kept units stays exact in float16."""
    x = _input((2, 3, 9, 8), dtype)
    torch.manual_seed(3)
    theirs = torchvision_drop_block.drop_block2d(x, 0.3, 3)
    seeds = _peer_seeds(3, x, 0.3, 3)
    _compare(torchdrop.drop_block(x, 0.3, 3, seeds=seeds), theirs, dtype, "torchvision half")


def test_torchvision_float16_overflow(torchvision_drop_block):
    """Past 65504 kept units torchvision's float16 mask sum is inf and its output all zeros;
    torchdrop counts in integers and matches the float32 result."""
    x = torch.ones(1, 1, 300, 300, dtype=torch.float16)
    torch.manual_seed(11)
    theirs = torchvision_drop_block.drop_block2d(x, 0.05, 3)
    assert (theirs == 0).all(), "torchvision no longer overflows: update this test"
    seeds = _peer_seeds(11, x, 0.05, 3)
    ours = torchdrop.drop_block(x, 0.05, 3, seeds=seeds)
    torch.manual_seed(11)
    reference = torchvision_drop_block.drop_block2d(x.float(), 0.05, 3)
    assert torch.isfinite(ours).all() and (ours != 0).float().mean() > 0.9
    _compare(ours, reference, "float16", "float16 overflow")


TIMM_2D = [(8, 8, 3), (7, 10, 4), (9, 6, 2), (5, 4, 7), (6, 6, 6), (6, 7, 1)]


@pytest.mark.parametrize("couple_channels", [True, False])
@pytest.mark.parametrize(("h", "w", "block"), TIMM_2D)
def test_timm_drop_block_2d(timm, h, w, block, couple_channels):
    """Full seeding (block centred on the seed, even sizes reaching one further below), the
    valid-region gamma, a shared or per-channel mask, batch normalisation, eps 1e-7."""
    x = _input((3, 4, h, w), "float32")
    torch.manual_seed(23)
    theirs = timm.drop_block_2d(x, 0.2, block, couple_channels=couple_channels)
    seeds = _peer_seeds(23, x, 0.2, block, share=couple_channels, region="full")
    ours = torchdrop.drop_block(
        x, 0.2, block, seeds=seeds, share_channels=couple_channels, seed_region="full", eps=1e-7
    )
    _compare(ours, theirs, "float32", f"timm drop_block_2d {h}x{w} k={block}")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_timm_drop_block_2d_half(timm, dtype):
    x = _input((2, 3, 8, 9), dtype)
    torch.manual_seed(29)
    theirs = timm.drop_block_2d(x, 0.25, 4)
    seeds = _peer_seeds(29, x, 0.25, 4, share=True, region="full")
    ours = torchdrop.drop_block(
        x, 0.25, 4, seeds=seeds, share_channels=True, seed_region="full", eps=1e-7
    )
    _compare(ours, theirs, dtype, "timm half")


@pytest.mark.parametrize("scale_by_keep", [True, False])
@pytest.mark.parametrize("p", [0.3, 1.0])
@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (6, 7)])
def test_timm_drop_path(timm, shape, p, scale_by_keep):
    x = _input(shape, "float32")
    torch.manual_seed(31)
    theirs = timm.drop_path(x, p, training=True, scale_by_keep=scale_by_keep)
    keep = _redraw(31, (shape[0],) + (1,) * (len(shape) - 1), x.dtype, 1 - p).view(-1)
    ours = torchdrop.drop_path(x, p, keep=keep, scale_by_keep=scale_by_keep)
    _compare(ours, theirs, "float32", f"timm drop_path keep={keep.tolist()}")


@pytest.mark.parametrize("p", [0.3, 0.6, 1.0])
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_torchvision_stochastic_depth(torchvision_stochastic_depth, mode, p):
    """torchvision's stochastic_depth is torchdrop's drop_path, and stochastic_depth of an
    identity branch, with the same keep draw."""
    x = _input((6, 3, 4, 5), "float32")
    torch.manual_seed(37)
    theirs = torchvision_stochastic_depth.stochastic_depth(x, p, mode)
    shape = [x.shape[0] if mode == "row" else 1] + [1] * (x.ndim - 1)
    keep = _redraw(37, shape, x.dtype, 1 - p).view(-1 if mode == "row" else ())
    what = f"torchvision stochastic_depth {mode} keep={keep.tolist()}"
    _compare(torchdrop.drop_path(x, p, keep=keep, mode=mode), theirs, "float32", what)
    sd = torchdrop.stochastic_depth(lambda h: h, x, p, keep=keep, mode=mode)
    _compare(sd, theirs, "float32", what)
