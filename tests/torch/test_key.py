"""torchdrop's ops with ``key=``: each draws JAX's numbers for the key, in jaxdrop's layout.

Each test rebuilds the draw from ``jax.random`` itself (bits, uniform) and the op's documented
rule (threshold, shape, channel axis), passes it to the op as the pre-sampled argument, and
requires the keyed call to give the very same tensor. The comparison against jaxdrop's outputs
is in ``parity_tests/test_key.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax", reason="jax.random is the reference of the key= draws")
import jax.numpy as jnp  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

import dropspec  # noqa: E402
import torchdrop  # noqa: E402
from torchdrop import _draw  # noqa: E402
from torchdrop import random as tr  # noqa: E402

# Typed keys of several origins: seeds, a split, a fold_in chain, a raw PRNGKey.
JAX_KEYS = [
    jax.random.key(0),
    jax.random.key(2**32 - 1),
    jax.random.key(-12345),
    jax.random.split(jax.random.key(3), 4)[3],
    jax.random.fold_in(jax.random.fold_in(jax.random.key(11), 2**32 - 1), 7),
    jax.random.wrap_key_data(jax.random.PRNGKey(5)),
]


def _words(jax_key) -> np.ndarray:
    return np.asarray(jax.random.key_data(jax_key))


# Every form torchdrop accepts for the key's raw data, cycled through by the tests.
KEY_FORMS = [
    lambda k: tuple(int(w) for w in _words(k)),
    lambda k: _words(k),  # NumPy uint32 (2,)
    lambda k: jax.random.key_data(k),  # a JAX uint32 array
    lambda k: torch.tensor(_words(k).astype(np.int64)),
    lambda k: list(int(w) for w in _words(k)),
]


def _key_cases():
    """``(jax key, the same key in one of torchdrop's accepted forms)``, a few per test."""
    return [(k, KEY_FORMS[i % len(KEY_FORMS)](k)) for i, k in enumerate(JAX_KEYS)]


def _bits(jax_key, shape) -> np.ndarray:
    """``jax.random.bits`` as int64 values in [0, 2**32)."""
    return np.asarray(jax.random.bits(jax_key, shape, jnp.uint32)).astype(np.int64)


def _float32_threshold(p: float) -> int:
    """A tensor probability's threshold: ``floor(p * 2**32)`` in float32, as jaxdrop's arrays."""
    p32 = np.float32(min(max(p, 0.0), 1.0))
    return int(np.floor(p32 * np.float32(2**32)))


def _below(jax_key, shape, p, kind: str) -> np.ndarray:
    """JAX's Bernoulli draw: bits below the threshold of ``p`` (float64 for a Python float)."""
    if kind == "float":
        limit = dropspec.keep_threshold(p)
    else:
        limit = 2**32 if np.float32(p) >= 1 else _float32_threshold(p)
    return np.asarray(_bits(jax_key, shape) < limit)


def _to_torch_layout(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 1)))


def _rate(value: float, kind: str):
    return value if kind == "float" else torch.tensor(value, dtype=torch.float32)


def _x(shape, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(0.5, 1.5, shape).astype(np.float32))


# --------------------------------------------------------------------------------------------
# The draws of each op, against jax.random.
# --------------------------------------------------------------------------------------------

DROP_BLOCK_CASES = [
    # (shape in torch layout, block, options)
    ((2, 3, 11), 3, {}),
    ((2, 3, 9, 7), 3, {}),
    ((2, 5, 8, 6), (2, 4), {"seed_region": "full"}),
    ((3, 4, 7, 7), 3, {"share_channels": True}),
    ((2, 4, 6, 9), 4, {"share_channels": True, "seed_region": "full", "normalize": "example"}),
    ((2, 3, 4, 5, 6), 2, {"calibration": "exact", "normalize": "expected"}),
    ((2, 3, 5, 6, 4), (3, 1, 2), {"seed_region": "full", "share_channels": True}),
    ((2, 3, 4, 3), 7, {"calibration": "exact"}),  # The block is clipped to the map.
]


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize(
    ("shape", "block", "options"), DROP_BLOCK_CASES, ids=[str(c[:2]) for c in DROP_BLOCK_CASES]
)
def test_drop_block_draws_jax_seeds_channels_last(shape, block, options, rate_kind):
    """The seeds are bits of shape (N, *seed_spatial, Cs) below gamma's threshold, moved to
    channels-first: drop_block(key=k) == drop_block(seeds=those)."""
    x = _x(shape)
    seed_options = {k: v for k, v in options.items() if k in ("share_channels", "seed_region")}
    seed_shape = torchdrop.drop_block_seed_shape(shape, block, **seed_options)
    jax_seed_shape = (seed_shape[0], *seed_shape[2:], seed_shape[1])
    calibration = options.get("calibration", "paper")
    region = options.get("seed_region", "valid")
    rate = _rate(0.3, rate_kind)
    gamma = torchdrop.drop_block_gamma(
        shape, rate, block, seed_region=region, calibration=calibration
    )
    nontrivial = 0
    for jax_key, key in _key_cases():
        gamma_value = gamma if rate_kind == "float" else gamma.item()
        seeds = _to_torch_layout(_below(jax_key, jax_seed_shape, gamma_value, rate_kind))
        nontrivial += bool(seeds.any() and not seeds.all())
        got = torchdrop.drop_block(x, rate, block, key=key, **options)
        want = torchdrop.drop_block(x, rate, block, seeds=seeds, **options)
        assert torch.equal(got, want)
    assert nontrivial >= len(JAX_KEYS) - 2, "most keys should draw some seeds, not all"


def test_a_layout_mistake_would_be_seen():
    """Drawing the seeds in torch's own layout gives another mask: the tests above would fail
    if the channel axis were not moved."""
    shape = (2, 4, 9, 7)
    x, jax_key = _x(shape), JAX_KEYS[0]
    seed_shape = torchdrop.drop_block_seed_shape(shape, 3)
    unmoved = torch.from_numpy(_below(jax_key, seed_shape, 0.05, "float"))
    keyed = torchdrop.drop_block(x, 0.3, 3, key=KEY_FORMS[0](jax_key))
    assert not torch.equal(keyed, torchdrop.drop_block(x, 0.3, 3, seeds=unmoved))


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("shape", [(16,), (16, 5), (16, 3, 4, 5)], ids=["rank1", "rank2", "rank4"])
def test_drop_path_draws_jax_keep(shape, mode, rate_kind):
    x = _x(shape)
    keep_shape = shape[:1] if mode == "row" else ()
    for jax_key, key in _key_cases():
        keep = torch.from_numpy(_below(jax_key, keep_shape, 1 - 0.4, rate_kind))
        rate = _rate(0.4, rate_kind)
        got = torchdrop.drop_path(x, rate, key=key, mode=mode)
        assert torch.equal(got, torchdrop.drop_path(x, rate, keep=keep, mode=mode))


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize(
    "shape", [(6, 5, 7), (6, 5, 3, 4), (6, 5, 2, 3, 4)], ids=["1d", "2d", "3d"]
)
def test_spatial_dropout_draws_jax_keep(shape, rate_kind):
    x = _x(shape)
    for jax_key, key in _key_cases():
        keep = torch.from_numpy(_below(jax_key, shape[:2], 1 - 0.5, rate_kind))
        rate = _rate(0.5, rate_kind)
        got = torchdrop.spatial_dropout(x, rate, key=key)
        assert torch.equal(got, torchdrop.spatial_dropout(x, rate, keep=keep))


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_draws_jax_keep(mode, rate_kind):
    x = _x((8, 3, 4))
    branch = lambda h: 2.0 * h
    keep_shape = (8,) if mode == "row" else ()
    outcomes = set()
    for jax_key, key in _key_cases():
        keep = _below(jax_key, keep_shape, 1 - 0.5, rate_kind)
        outcomes.add(bool(keep.any()))
        rate = _rate(0.5, rate_kind)
        got = torchdrop.stochastic_depth(branch, x, rate, key=key, mode=mode)
        want = torchdrop.stochastic_depth(branch, x, rate, keep=torch.from_numpy(keep), mode=mode)
        assert torch.equal(got, want)
    if mode == "batch":
        assert outcomes == {False, True}, "the keys should drop and keep the branch"


@pytest.mark.parametrize(
    ("shape", "size", "num_holes"),
    [((4, 2, 13), 3, 1), ((4, 2, 9, 6), (2, 4), 3), ((4, 2, 5, 6, 7), 2, 2)],
    ids=["1d", "2d", "3d"],
)
def test_cutout_draws_jax_centres(shape, size, num_holes):
    """Centres: floor(bits * extent / 2**32) for bits of shape (N, num_holes, n_spatial)."""
    x = _x(shape)
    spatial = np.asarray(shape[2:], np.int64)
    for jax_key, key in _key_cases():
        bits = _bits(jax_key, (shape[0], num_holes, len(spatial)))
        centers = torch.from_numpy((bits * spatial) >> 32)
        got = torchdrop.cutout(x, size, key=key, num_holes=num_holes, fill=-1.0)
        want = torchdrop.cutout(x, size, centers=centers, num_holes=num_holes, fill=-1.0)
        assert torch.equal(got, want)


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4)])
def test_uout_draws_jax_uniform_channels_last(shape, rate_kind):
    """noise = rate * (2 u - 1), u = jax.random.uniform of x's channels-last shape (rank >= 3)."""
    x = _x(shape)
    channels_last = len(shape) >= 3
    jax_shape = (shape[0], *shape[2:], shape[1]) if channels_last else shape
    for jax_key, key in _key_cases():
        u = np.array(jax.random.uniform(jax_key, jax_shape))
        u = torch.from_numpy(np.array(np.moveaxis(u, -1, 1) if channels_last else u))
        rate = _rate(0.3, rate_kind)
        noise = rate * (2.0 * u - 1.0)
        assert torch.equal(torchdrop.uout(x, rate, key=key), torchdrop.uout(x, rate, noise=noise))


def test_python_probabilities_are_converted_in_float64():
    """A Python p is compared in float64, as jaxdrop does: with bits u just below
    floor(p * 2**32) but above the float32 threshold, the draw is True (float32 would say
    False), and a tensor p takes the float32 threshold."""
    jax_key = JAX_KEYS[1]
    bits = _bits(jax_key, (64,))
    # u with a low byte in [1, 127]: float32 rounds (u + 1) / 2**32 down, below u.
    index = int(np.flatnonzero((bits >= 2**31) & (bits % 256 >= 1) & (bits % 256 < 128))[0])
    p = (int(bits[index]) + 1) / 2**32
    assert dropspec.keep_threshold(p) == bits[index] + 1 and _float32_threshold(p) <= bits[index]
    key = KEY_FORMS[0](jax_key)
    assert bool(_draw.key_bernoulli(key, (64,), p)[index])
    assert not bool(_draw.key_bernoulli(key, (64,), torch.tensor(p))[index])


def test_draw_helpers_move_the_channel_axis():
    assert _draw.jax_shape((2, 3, 4, 5), 1) == (2, 4, 5, 3)
    assert _draw.jax_shape((2, 3), None) == (2, 3)
    key = tr.key(4)
    moved = _draw.key_bernoulli(key, (2, 3, 4, 5), 0.5, channel_axis=1)
    assert torch.equal(moved, tr.bernoulli(key, 0.5, (2, 4, 5, 3)).movedim(-1, 1))
    uniform = _draw.key_uniform(key, (2, 3, 4), channel_axis=1)
    assert torch.equal(uniform, tr.uniform(key, (2, 4, 3)).movedim(-1, 1))


# --------------------------------------------------------------------------------------------
# Rates at the ends, dtypes, modules.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
def test_rate_one_drops_everything_and_rate_zero_nothing(rate_kind):
    x, key = _x((2, 3, 6, 6)), tr.key(1)
    for op in (
        lambda r: torchdrop.drop_block(x, r, 3, key=key),
        lambda r: torchdrop.drop_path(x, r, key=key),
        lambda r: torchdrop.spatial_dropout(x, r, key=key),
    ):
        assert bool((op(_rate(1.0, rate_kind)) == 0).all())
        assert torch.equal(op(_rate(0.0, rate_kind)), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_key_draws_do_not_depend_on_the_dtype(dtype):
    """The mask comes from the key alone: the same units are dropped in every dtype."""
    x, key = _x((2, 3, 8, 8)), tr.key(6)
    for op in (
        lambda v: torchdrop.drop_block(v, 0.3, 3, key=key),
        lambda v: torchdrop.spatial_dropout(v, 0.5, key=key),
        lambda v: torchdrop.cutout(v, 3, key=key),
    ):
        out = op(x.to(dtype))
        assert out.dtype == dtype
        assert torch.equal(out != 0, op(x) != 0)


def test_modules_take_the_key_in_forward():
    x, key = _x((4, 3, 8, 8)), tr.fold_in(tr.key(0), 9)
    pairs = [
        (torchdrop.DropBlock(0.2, 3), lambda: torchdrop.drop_block(x, 0.2, 3, key=key)),
        (torchdrop.DropPath(0.5), lambda: torchdrop.drop_path(x, 0.5, key=key)),
        (torchdrop.SpatialDropout(0.5), lambda: torchdrop.spatial_dropout(x, 0.5, key=key)),
        (torchdrop.Uout(0.3), lambda: torchdrop.uout(x, 0.3, key=key)),
        (torchdrop.Cutout(3, num_holes=2), lambda: torchdrop.cutout(x, 3, key=key, num_holes=2)),
    ]
    for module, functional in pairs:
        assert torch.equal(module(x, key=key), functional()), type(module).__name__
        assert torch.equal(module.eval()(x, key=key), x)  # Evaluation ignores the key.


def test_backward_keeps_the_keyed_mask():
    x = _x((2, 3, 8, 8)).requires_grad_(True)
    out = torchdrop.drop_block(x, 0.3, 3, key=tr.key(2))
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad != 0, out != 0)


# --------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------

X = torch.ones(2, 3, 6, 7)
OPS = {
    "drop_block": (lambda **kw: torchdrop.drop_block(X, 0.1, 3, **kw), "seeds"),
    "drop_path": (lambda **kw: torchdrop.drop_path(X, 0.1, **kw), "keep"),
    "spatial_dropout": (lambda **kw: torchdrop.spatial_dropout(X, 0.1, **kw), "keep"),
    "stochastic_depth": (lambda **kw: torchdrop.stochastic_depth(abs, X, 0.1, **kw), "keep"),
    "cutout": (lambda **kw: torchdrop.cutout(X, 2, **kw), "centers"),
    "uout": (lambda **kw: torchdrop.uout(X, 0.1, **kw), "noise"),
}
PRESAMPLED = {
    "seeds": torch.zeros(2, 3, 4, 5, dtype=torch.bool),
    "keep": torch.ones(2, dtype=torch.bool),
    "centers": torch.zeros(2, 2, dtype=torch.int64),
    "noise": torch.zeros(2, 3, 6, 7),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_key_and_generator_are_refused_together(op):
    call, _ = OPS[op]
    message = (
        "Pass either `key` or `generator`, not both: `key` draws jaxdrop's random numbers, "
        "`generator` torch's."
    )
    with pytest.raises(ValueError) as error:
        call(key=(0, 1), generator=torch.Generator())
    assert str(error.value) == message


@pytest.mark.parametrize("op", sorted(OPS))
def test_key_and_the_presampled_draw_are_refused_together(op):
    call, presampled = OPS[op]
    with pytest.raises(ValueError) as error:
        call(key=(0, 1), **{presampled: PRESAMPLED[presampled]})
    expected = f"Pass either `key` or `{presampled}`, not both: `{presampled}` replaces the"
    assert str(error.value) == f"{expected} random draw."


BAD_KEYS = [
    (jax.random.key(0), TypeError, "got a typed JAX key of dtype key<fry>"),
    (3, TypeError, "for an int seed use torchdrop.random.key(seed)"),
    ((1, 2, 3), ValueError, "got tuple (1, 2, 3)"),
    ((0, 2**32), ValueError, "each in [0, 2**32), got (0, 4294967296)"),
    (np.zeros(2, np.int32), TypeError, "got an array of dtype int32"),
    (torch.zeros(2), TypeError, "got a tensor of dtype float32"),
    (torch.zeros(3, dtype=torch.int64), ValueError, "got shape (3,)"),
]


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize(("key", "error", "text"), BAD_KEYS, ids=[c[2][:24] for c in BAD_KEYS])
def test_bad_keys_get_the_messages_of_key_data(op, key, error, text):
    call, _ = OPS[op]
    with pytest.raises(error) as raised:
        tr.key_data(key)
    with pytest.raises(error) as from_op:
        call(key=key)
    assert str(from_op.value) == str(raised.value)
    assert text in str(from_op.value)


def test_evaluation_ignores_the_key_as_jaxdrop_ignores_it():
    for call, _ in OPS.values():
        assert torch.equal(call(key="not a key", training=False), X)


# --------------------------------------------------------------------------------------------
# torch.compile.
# --------------------------------------------------------------------------------------------


def test_compiled_ops_take_key_tuples_without_recompiling():
    """fullgraph=True with key tuples: the compiled draws equal the eager ones (which are
    jax.random's, tested above), and new keys recompile once (their ints become dynamic), not
    per key. DropBlock's Python rate runs as a float32 tensor rate when compiled (see its
    docstring), so eager code gets the same float32 tensor rate."""
    torch._dynamo.reset()
    layers = torch.nn.ModuleList(
        [
            torchdrop.DropBlock(torch.tensor(0.2), 3, calibration="exact"),
            torchdrop.SpatialDropout(0.3),
            torchdrop.Uout(0.2),
            torchdrop.Cutout(2),
        ]
    )

    def step(x, keys, shared_rate):
        for layer, k in zip(layers, keys):
            x = layer(x, key=k)
        x = x + torchdrop.drop_block(x, shared_rate, 2, key=keys[4], share_channels=True)
        return torchdrop.drop_path(x, 0.25, key=keys[5])

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, fullgraph=True, backend=counter)
    x = _x((4, 3, 8, 8))
    for seed in (0, 1, 2, 2**32 - 1):
        # Keys derived outside: fold_in in compiled code would specialize on each new key.
        keys = [tr.fold_in(tr.key(seed), i) for i in range(6)]
        got = compiled(x, keys, 0.1)
        torch.testing.assert_close(got, step(x, keys, torch.tensor(0.1)), rtol=0, atol=0)
    assert counter.frame_count == 2


def test_inductor_compiles_a_keyed_drop_block_forward_and_backward():
    torch._dynamo.reset()
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def f(x, key):
        return conv(torchdrop.drop_block(x, torch.tensor(0.3), 3, key=key)).sum()

    compiled = torch.compile(f, fullgraph=True)
    x = _x((2, 3, 8, 8)).requires_grad_(True)
    key = tr.key(8)
    compiled(x, key).backward()
    grad, x.grad = x.grad, None
    f(x, key).backward()
    torch.testing.assert_close(grad, x.grad)
    assert math.isfinite(float(grad.abs().sum()))
