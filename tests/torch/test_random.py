"""torchdrop.random against jax.random and jaxdrop.random, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax", reason="jax.random is the reference torchdrop.random must match")
pytest.importorskip("hypothesis", reason="the property test needs hypothesis")
import jax.numpy as jnp  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax.extend.random import threefry2x32_p  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

from jaxdrop import random as jr  # noqa: E402
from torchdrop import random as tr  # noqa: E402

SEEDS = (
    0,
    1,
    2**31,
    2**32 - 1,
    2**32,
    2**40 + 5,
    -1,
    -(2**31) - 1,
    -(2**40) - 5,
    2**63 - 1,
    -(2**63),
)
PROBABILITIES = (0.0, 1e-9, 0.1, 0.5, 1 - 1e-9, 1.0)
SHAPES = ((), (1,), (7,), (3, 4), (2, 3, 4, 5), (64, 197, 1), (13, 17, 3), (0,), (5, 0, 3))


def _words(jax_keys) -> np.ndarray:
    """The uint32 words of typed or raw JAX keys, shape (..., 2)."""
    if jnp.issubdtype(jax_keys.dtype, jax.dtypes.prng_key):
        jax_keys = jax.random.key_data(jax_keys)
    return np.asarray(jax_keys)


def _data(jax_key) -> tuple[int, int]:
    """The uint32 pair of one typed or raw JAX key, as Python ints."""
    return tuple(int(w) for w in _words(jax_key))


def _jax_fold_chain():
    k = jax.random.key(11)
    for data in (0, 2**32 - 1, 12345):
        k = jax.random.fold_in(k, data)
    return k


def _torch_fold_chain():
    k = tr.key(11)
    for data in (0, 2**32 - 1, 12345):
        k = tr.fold_in(k, data)
    return k


# Each case: a JAX key and the same key built with torchdrop alone.
KEY_CASES = {
    "seed0": (lambda: jax.random.key(0), lambda: tr.key(0)),
    "seed2**32-1": (lambda: jax.random.key(2**32 - 1), lambda: tr.key(2**32 - 1)),
    "seed2**40+5": (lambda: jax.random.key(2**40 + 5), lambda: tr.key(2**40 + 5)),
    "seed-12345": (lambda: jax.random.key(-12345), lambda: tr.key(-12345)),
    "PRNGKey7": (lambda: jax.random.PRNGKey(7), lambda: tr.key(7)),
    "split": (lambda: jax.random.split(jax.random.key(3), 3)[2], lambda: tr.split(tr.key(3), 3)[2]),
    "fold_chain": (_jax_fold_chain, _torch_fold_chain),
    "split_of_fold": (
        lambda: jax.random.split(jax.random.fold_in(jax.random.key(5), 9))[0],
        lambda: tr.split(tr.fold_in(tr.key(5), 9))[0],
    ),
}


@pytest.fixture(params=sorted(KEY_CASES), scope="module")
def keys(request):
    """``(jax_key, torch_key)`` for one case, checked equal here so every test relies on it."""
    make_jax, make_torch = KEY_CASES[request.param]
    jax_key, torch_key = make_jax(), make_torch()
    assert torch_key == _data(jax_key)
    return jax_key, torch_key


def _jax_bits(jax_key, shape) -> np.ndarray:
    return np.asarray(jax.random.bits(jax_key, shape, jnp.uint32)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Keys.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_key_matches_jax(seed):
    assert tr.key(seed) == _data(jax.random.key(seed)) == _data(jax.random.PRNGKey(seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_key_x64_matches_jax_with_x64(seed):
    with jax.enable_x64(True):
        expected = _data(jax.random.key(seed))
    assert tr.key(seed, x64=True) == expected


@pytest.mark.parametrize("seed", (2**63, -(2**63) - 1, 2**64 - 1))
def test_key_refuses_seeds_that_jax_refuses(seed):
    with pytest.raises(OverflowError):
        jax.random.key(seed)
    with pytest.raises(ValueError, match=r"`seed` must be in \[-2\*\*63, 2\*\*63\)"):
        tr.key(seed)


@pytest.mark.parametrize("seed", (1.0, True, "0", None))
def test_key_refuses_non_int_seeds(seed):
    with pytest.raises(TypeError, match="`seed` must be an int"):
        tr.key(seed)


def test_key_data_accepts_every_form_of_the_pair():
    raw = jax.random.key_data(jax.random.fold_in(jax.random.key(1), 2))
    expected = _data(raw)
    assert expected[0] >= 2**31 and 0 < expected[1]  # Both words used, one past int32.
    forms = [
        expected,
        list(expected),
        raw,
        np.asarray(raw),
        torch.tensor(expected, dtype=torch.int64),
        torch.tensor(np.asarray(raw).view(np.int32)).view(torch.uint32),
    ]
    assert [tr.key_data(form) for form in forms] == [expected] * len(forms)
    assert tr.key_data(jax.random.PRNGKey(77)) == (0, 77)
    assert tr.key_data(torch.tensor([5, 2**31 - 1], dtype=torch.int32)) == (5, 2**31 - 1)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            np.zeros(3, np.uint32),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), got shape (3,).",
        ),
        (
            (1, 2, 3),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), "
            "got tuple (1, 2, 3).",
        ),
        (
            (2**32, 0),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), "
            "each in [0, 2**32), got (4294967296, 0).",
        ),
        (
            (-1, 0),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), "
            "each in [0, 2**32), got (-1, 0).",
        ),
        (
            (1.0, 2),
            TypeError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), got tuple (1.0, 2).",
        ),
        (
            0,
            TypeError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), got 0 (int); "
            "for an int seed use torchdrop.random.key(seed).",
        ),
        (
            np.zeros(2, np.int64),
            TypeError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), "
            "got an array of dtype int64.",
        ),
        (
            torch.zeros(2),
            TypeError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), got a tensor of "
            "dtype float32; pass an integer tensor.",
        ),
        (
            torch.zeros(2, 2, dtype=torch.int64),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), got shape (2, 2).",
        ),
        (
            torch.tensor([-1, 0], dtype=torch.int32),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), each in "
            "[0, 2**32), got an int32 tensor holding (-1, 0); pass key.view(torch.uint32) if it "
            "holds uint32 bits.",
        ),
        (
            torch.tensor([0, 2**32], dtype=torch.int64),
            ValueError,
            "`key` must be a pair of uint32 values (jax.random.key_data(key)), "
            "each in [0, 2**32), got (0, 4294967296).",
        ),
    ],
)
def test_key_data_error_messages(bad, error, message):
    with pytest.raises(error) as raised:
        tr.key_data(bad)
    assert str(raised.value) == message


def test_key_data_refuses_a_typed_jax_key_with_a_hint():
    with pytest.raises(
        TypeError, match=r"typed JAX key of dtype key<fry>; pass jax\.random\.key_data"
    ):
        tr.bits(jax.random.key(0), (3,))


@pytest.mark.parametrize("num", (0, 1, 2, 3, 7, 5000))
def test_split_matches_jax(keys, num):
    jax_key, torch_key = keys
    expected = tuple(tuple(int(w) for w in row) for row in _words(jax.random.split(jax_key, num)))
    got = tr.split(torch_key, num)
    assert isinstance(got, tuple) and len(got) == num
    assert got == expected


@pytest.mark.parametrize("data", (0, 1, 7, 2**31, 2**32 - 1))
def test_fold_in_matches_jax(keys, data):
    jax_key, torch_key = keys
    assert tr.fold_in(torch_key, data) == _data(jax.random.fold_in(jax_key, data))


@pytest.mark.parametrize(
    ("data", "error"), [(-1, ValueError), (2**32, ValueError), (1.5, TypeError)]
)
def test_fold_in_refuses_what_is_not_a_uint32(data, error):
    with pytest.raises(error, match=r"`data` must be an int in \[0, 2\*\*32\)"):
        tr.fold_in((0, 0), data)


@pytest.mark.parametrize("num", (-1, 2.0))
def test_split_refuses_bad_num(num):
    with pytest.raises(ValueError, match="`num` must be an int >= 0"):
        tr.split((0, 0), num)


# --------------------------------------------------------------------------------------------
# The cipher and the bits.
# --------------------------------------------------------------------------------------------


def test_threefry2x32_matches_the_jax_primitive_on_arbitrary_counters():
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 2**32, size=(4, 257), dtype=np.uint64).astype(np.uint32)
    x1 = rng.integers(0, 2**32, size=(4, 257), dtype=np.uint64).astype(np.uint32)
    x0[0, :3] = (0, 2**32 - 1, 2**31)
    k1, k2 = 0x9E3779B9, 0xFFFFFFFF
    want0, want1 = threefry2x32_p.bind(
        jnp.uint32(k1), jnp.uint32(k2), jnp.asarray(x0), jnp.asarray(x1)
    )
    for as_tensor in (
        lambda a: torch.from_numpy(a.astype(np.int64)),
        lambda a: torch.from_numpy(a.view(np.int32)),
        lambda a: torch.from_numpy(a.view(np.int32)).view(torch.uint32),
    ):
        got0, got1 = tr.threefry2x32((k1, k2), as_tensor(x0), as_tensor(x1))
        assert got0.dtype == got1.dtype == torch.int64
        np.testing.assert_array_equal(got0.numpy(), np.asarray(want0).astype(np.int64))
        np.testing.assert_array_equal(got1.numpy(), np.asarray(want1).astype(np.int64))


def test_threefry2x32_broadcasts_and_refuses_float_counters():
    counters = torch.arange(6).reshape(2, 3)
    y0, y1 = tr.threefry2x32((1, 2), torch.tensor(0), counters)
    z0, z1 = tr.threefry2x32((1, 2), torch.zeros(2, 3, dtype=torch.int64), counters)
    assert torch.equal(y0, z0) and torch.equal(y1, z1)
    with pytest.raises(TypeError, match="`x1` must be an integer tensor, got dtype float32"):
        tr.threefry2x32((1, 2), counters, counters.float())


def test_counter_high_word_matches_the_jax_primitive():
    """Counters past 2**32 carry a high word (only reached by draws of 2**32 values or more)."""
    k1, k2 = tr.key(2024)
    for start in (2**32, 3 * 2**32 + 2**32 - 100):
        y0, y1 = tr._hash_counters(k1, k2, start, 100, torch.device("cpu"), 0)
        high = jnp.full((100,), start >> 32, jnp.uint32)
        low = jnp.arange(100, dtype=jnp.uint32) + jnp.uint32(start & 0xFFFFFFFF)
        want0, want1 = threefry2x32_p.bind(jnp.uint32(k1), jnp.uint32(k2), high, low)
        np.testing.assert_array_equal(
            tr._to_uint32_values(y0).numpy(), np.asarray(want0).astype(np.int64)
        )
        np.testing.assert_array_equal(
            tr._to_uint32_values(y1).numpy(), np.asarray(want1).astype(np.int64)
        )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bits_matches_jax(keys, shape):
    jax_key, torch_key = keys
    got = tr.bits(torch_key, shape)
    assert got.dtype == torch.int64 and tuple(got.shape) == shape
    expected = _jax_bits(jax_key, shape)
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(np.asarray(jr.bits(jax_key, shape)).astype(np.int64), expected)


def test_bits_in_cpu_chunks_matches_jax():
    """2**20 + 1025 values: one full chunk and a partial one."""
    jax_key = jax.random.key(99)
    got = tr.bits(tr.key(99), (1025, 1025))
    np.testing.assert_array_equal(got.numpy(), _jax_bits(jax_key, (1025, 1025)))


def test_bits_chunk_seams_match_jax(monkeypatch):
    monkeypatch.setattr(tr, "_CPU_CHUNK", 1000)
    jax_key = jax.random.split(jax.random.key(4))[1]
    got = tr.bits(tr.split(tr.key(4))[1], (7, 1003))
    np.testing.assert_array_equal(got.numpy(), _jax_bits(jax_key, (7, 1003)))


def test_bits_accepts_devices_and_shape_sequences():
    expected = tr.bits((3, 4), (2, 5))
    assert torch.equal(tr.bits((3, 4), [2, 5], device="cpu"), expected)
    assert torch.equal(tr.bits((3, 4), torch.Size([2, 5]), device=torch.device("cpu")), expected)
    assert torch.equal(tr.bits((3, 4), (np.int64(2), 5)), expected)


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [
        (5, TypeError, r"`shape` must be a sequence of ints >= 0, got 5 \(int\)"),
        ((2.0, 3), TypeError, r"`shape` must be a sequence of ints >= 0, got \(2\.0, 3\)"),
        ((2, -1), ValueError, r"`shape` must be a sequence of ints >= 0, got \(2, -1\)"),
    ],
)
def test_bits_refuses_bad_shapes(shape, error, match):
    with pytest.raises(error, match=match):
        tr.bits((0, 0), shape)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_draws_on_cuda_match_jax():
    jax_key = jax.random.key(31)
    shape = (64, 197, 3)
    got = tr.bits(tr.key(31), shape, device="cuda")
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), _jax_bits(jax_key, shape))
    p = torch.tensor(0.3, device="cuda")
    np.testing.assert_array_equal(
        tr.bernoulli(tr.key(31), p, shape, device="cuda").cpu().numpy(),
        np.asarray(jr.bernoulli(jax_key, jnp.float32(0.3), shape)),
    )


# --------------------------------------------------------------------------------------------
# Draws.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", (*PROBABILITIES, 4.7 * 2.0**-32, 1 - 2.0**-32, 1e-10, -0.5, 1.5))
def test_threshold_matches_jaxdrop(p):
    """4.7 * 2**-32 tells floor from round; 1 - 2**-32 is the largest p short of 'always'."""
    limit, always = tr.threshold(p)
    want_limit, want_always = jr.threshold(p)
    assert (limit, always) == (int(want_limit), bool(want_always))
    limit, always = tr.threshold(torch.tensor(p, dtype=torch.float32))
    want_limit, want_always = jr.threshold(jnp.float32(p))
    assert limit.dtype == torch.int64 and always.dtype == torch.bool
    assert (limit.item(), always.item()) == (int(want_limit), bool(want_always))


@pytest.mark.parametrize("shape", ((), (7,), (3, 4), (64, 197, 1), (13, 17, 3)), ids=str)
@pytest.mark.parametrize("p", PROBABILITIES)
def test_bernoulli_python_float_matches_jaxdrop(keys, shape, p):
    jax_key, torch_key = keys
    got = tr.bernoulli(torch_key, p, shape)
    assert got.dtype == torch.bool and tuple(got.shape) == shape
    np.testing.assert_array_equal(got.numpy(), np.asarray(jr.bernoulli(jax_key, p, shape)))


@pytest.mark.parametrize("shape", ((), (7,), (64, 197, 1)), ids=str)
@pytest.mark.parametrize("p", (*PROBABILITIES, -0.5, 1.5, 2.0**-32, 0.7))
def test_bernoulli_float32_tensor_matches_jaxdrop(keys, shape, p):
    jax_key, torch_key = keys
    got = tr.bernoulli(torch_key, torch.tensor(p, dtype=torch.float32), shape)
    assert got.dtype == torch.bool and tuple(got.shape) == shape
    want = jr.bernoulli(jax_key, jnp.asarray(p, jnp.float32), shape)
    np.testing.assert_array_equal(got.numpy(), np.asarray(want))


def test_bernoulli_per_row_probabilities_match_jaxdrop():
    p = np.array([[0.0], [0.2], [0.9], [1.0]], np.float32)
    got = tr.bernoulli(tr.key(8), torch.from_numpy(p), (4, 50))
    np.testing.assert_array_equal(
        got.numpy(), np.asarray(jr.bernoulli(jax.random.key(8), jnp.asarray(p), (4, 50)))
    )


@pytest.mark.parametrize("p", PROBABILITIES)
def test_below_threshold_matches_jaxdrop_for_python_and_tensor_limits(keys, p):
    jax_key, torch_key = keys
    shape = (13, 17, 3)
    want = np.asarray(jr.below_threshold(jax_key, jr.threshold(p), shape))
    limit, always = tr.threshold(p)
    np.testing.assert_array_equal(
        tr.below_threshold(torch_key, (limit, always), shape).numpy(), want
    )
    as_data = (torch.tensor(limit, dtype=torch.int64), torch.tensor(always))
    np.testing.assert_array_equal(tr.below_threshold(torch_key, as_data, shape).numpy(), want)


@pytest.mark.parametrize(
    ("limits", "error", "match"),
    [
        (
            0.5,
            TypeError,
            r"`limits` must be a \(threshold, always\) pair from threshold\(p\), got 0\.5\.",
        ),
        ((0.5, False), TypeError, r"got \(0\.5, False\)\."),
        ((2**32, False), ValueError, r"a threshold in \[0, 2\*\*32\), got 4294967296\."),
        (
            (torch.tensor(0.5), torch.tensor(False)),
            TypeError,
            r"an integer threshold, got dtype float32\.",
        ),
        ((torch.tensor(5), torch.tensor(0)), TypeError, r"a bool `always`, got dtype int64\."),
        (
            (torch.ones(2, dtype=torch.int64), torch.tensor(False)),
            ValueError,
            r"`limits` must broadcast to `shape` \(3,\), got shape \(2,\)\.",
        ),
    ],
)
def test_below_threshold_refuses_bad_limits(limits, error, match):
    with pytest.raises(error, match=match):
        tr.below_threshold((0, 0), limits, (3,))


def test_bernoulli_refuses_p_that_would_change_the_shape():
    with pytest.raises(ValueError, match=r"`p` must be .* `shape` \(4,\), got shape \(3, 1\)\."):
        tr.bernoulli((0, 0), torch.full((3, 1), 0.5), (4,))


@pytest.mark.parametrize("limit", (1, 2**24, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 2**8, 2**32 - 1))
def test_bernoulli_compares_the_bits_unsigned(limit):
    """Thresholds around int32's sign bit, where a signed comparison would go wrong."""
    values = tr.bits((7, 8), (1 << 16,))
    got = tr.bernoulli((7, 8), limit / 2**32, (1 << 16,))
    assert torch.equal(got, values < limit)
    p = torch.tensor(limit / 2**32, dtype=torch.float32)
    if p.item() * 2**32 == limit:  # Exact in float32.
        assert torch.equal(tr.bernoulli((7, 8), p, (1 << 16,)), values < limit)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_uniform_matches_jax(keys, shape):
    jax_key, torch_key = keys
    got = tr.uniform(torch_key, shape)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    np.testing.assert_array_equal(got.numpy(), np.asarray(jax.random.uniform(jax_key, shape)))
    np.testing.assert_array_equal(got.numpy(), np.asarray(jr.uniform(jax_key, shape)))


@pytest.mark.parametrize("extent", (1, 7, 197, 2**31 - 1))
def test_uniform_index_int_extent_matches_jaxdrop(keys, extent):
    jax_key, torch_key = keys
    got = tr.uniform_index(torch_key, (64, 197, 1), extent)
    assert got.dtype == torch.int64
    want = np.asarray(jr.uniform_index(jax_key, (64, 197, 1), extent)).astype(np.int64)
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize(
    "as_extent",
    (tuple, np.asarray, lambda e: torch.tensor(e, dtype=torch.int32)),
    ids=("tuple", "numpy", "tensor"),
)
def test_uniform_index_per_axis_extent_matches_jaxdrop(keys, as_extent):
    jax_key, torch_key = keys
    extent = (197, 13, 1, 2**31 - 1)
    got = tr.uniform_index(torch_key, (50, 4), as_extent(extent))
    want = np.asarray(jr.uniform_index(jax_key, (50, 4), extent)).astype(np.int64)
    np.testing.assert_array_equal(got.numpy(), want)
    assert (got.numpy() < np.asarray(extent)).all()


@pytest.mark.parametrize(
    ("extent", "error", "match"),
    [
        (0, ValueError, r"each in \[1, 2\*\*31\), got 0\."),
        (2**31, ValueError, r"each in \[1, 2\*\*31\), got 2147483648\."),
        ([3, 0, 2], ValueError, r"got \[3, 0, 2\]\."),
        (2.5, TypeError, r"got 2\.5 \(dtype float64\)\."),
        ((4, 5), ValueError, r"got shape \(2,\) for `shape` \(3, 3\)\."),
        (torch.ones(3), TypeError, r"got a tensor of dtype float32\."),
    ],
)
def test_uniform_index_refuses_bad_extents(extent, error, match):
    with pytest.raises(
        error, match=r"`extent` must be an int, or ints broadcastable to `shape`.*" + match
    ):
        tr.uniform_index((0, 0), (3, 3), extent)


@settings(derandomize=True, max_examples=30, deadline=None)
@given(
    k1=st.integers(0, 2**32 - 1),
    k2=st.integers(0, 2**32 - 1),
    shape=st.lists(st.integers(0, 9), max_size=3).map(tuple),
    p=st.floats(0.0, 1.0),
)
def test_property_bits_and_bernoulli_match_jax(k1, k2, shape, p):
    jax_key = jnp.asarray([k1, k2], jnp.uint32)
    np.testing.assert_array_equal(tr.bits((k1, k2), shape).numpy(), _jax_bits(jax_key, shape))
    np.testing.assert_array_equal(
        tr.bernoulli((k1, k2), p, shape).numpy(), np.asarray(jr.bernoulli(jax_key, p, shape))
    )
    np.testing.assert_array_equal(
        tr.bernoulli((k1, k2), torch.tensor(p, dtype=torch.float32), shape).numpy(),
        np.asarray(jr.bernoulli(jax_key, jnp.float32(p), shape)),
    )


# --------------------------------------------------------------------------------------------
# torch.compile.
# --------------------------------------------------------------------------------------------


def test_bernoulli_under_torch_compile_fullgraph_matches_jaxdrop():
    torch._dynamo.reset()
    shape = (64, 197, 1)

    @torch.compile(fullgraph=True)
    def masks(p):
        key = tr.fold_in(tr.split(tr.key(21))[1], 4)
        return tr.bernoulli(key, 0.3, shape), tr.bernoulli(key, p, shape) & (p > 0)

    jax_key = jax.random.fold_in(jax.random.split(jax.random.key(21))[1], 4)
    by_float, by_tensor = masks(torch.tensor(0.6))
    np.testing.assert_array_equal(by_float.numpy(), np.asarray(jr.bernoulli(jax_key, 0.3, shape)))
    np.testing.assert_array_equal(
        by_tensor.numpy(), np.asarray(jr.bernoulli(jax_key, jnp.float32(0.6), shape))
    )


def test_changing_key_tuple_under_torch_compile_neither_recompiles_nor_drifts():
    torch._dynamo.reset()
    shape = (4, 33)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(
        lambda key: tr.bernoulli(key, 0.3, shape), fullgraph=True, backend=counter
    )
    for seed in (0, 1, 2**31 + 3, 2**32 - 1, 77):
        jax_key = jax.random.fold_in(jax.random.key(9), seed)
        got = compiled(tr.fold_in(tr.key(9), seed))
        np.testing.assert_array_equal(got.numpy(), np.asarray(jr.bernoulli(jax_key, 0.3, shape)))
    # The first call compiles, the second marks the ints dynamic; no more after that.
    assert counter.frame_count == 2


_COMPILED_FOLD_IN = """
import json, torch
from torchdrop import random as tr
compiled = torch.compile(lambda step: tr.bits(tr.fold_in((11, 12), step), (9,)), fullgraph=True)
print(json.dumps([compiled(step).tolist() for step in range(3)]))
"""


def test_fold_in_inside_torch_compile_specializes_instead_of_tracing_symbolically():
    """Step 1 makes `step` symbolic: threefry traced on symbolic ints would never finish.

    Run in a subprocess, so that a regression fails on the time limit instead of hanging.
    """
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _COMPILED_FOLD_IN],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    key = jnp.asarray([11, 12], jnp.uint32)
    want = [_jax_bits(jax.random.fold_in(key, step), (9,)).tolist() for step in range(3)]
    assert got == want
