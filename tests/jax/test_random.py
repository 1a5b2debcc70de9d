"""jaxdrop.random: bit-identical to jax.random, and exact threshold and index draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdrop import random

KEYS = {
    "key0": jax.random.key(0),
    "key_big": jax.random.key(2**40 + 5),
    "raw": jax.random.PRNGKey(123),
    "folded": jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 7), 3),
    "split": jax.random.split(jax.random.key(2), 3)[2],
}
SHAPES = [(), (1,), (7,), (3, 4), (2, 3, 4, 5), (64, 197, 1)]


@pytest.mark.parametrize("key", KEYS.values(), ids=KEYS.keys())
@pytest.mark.parametrize("shape", SHAPES)
def test_bits_and_uniform_equal_jax_random(key, shape):
    np.testing.assert_array_equal(
        np.asarray(random.bits(key, shape)), np.asarray(jax.random.bits(key, shape, jnp.uint32))
    )
    np.testing.assert_array_equal(
        np.asarray(random.uniform(key, shape)), np.asarray(jax.random.uniform(key, shape))
    )


def test_bits_under_jit_and_vmap_equal_jax_random():
    keys = jax.random.split(jax.random.key(3), 5)
    ours = jax.jit(jax.vmap(lambda k: random.bits(k, (4, 6))))(keys)
    theirs = jax.vmap(lambda k: jax.random.bits(k, (4, 6), jnp.uint32))(keys)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


PADDINGS = [
    ((0, 0), (3, 3), (3, 3), (0, 0)),
    ((0, 0), (2, 1), (0, 4), (0, 0)),
    ((1, 0), (0, 0), (6, 6), (2, 1)),
]


@pytest.mark.parametrize("key", [KEYS["key0"], KEYS["raw"], jax.random.key(5, impl="rbg")])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_padded_draw_equals_the_draw_then_a_pad(key, padding, p):
    """The one-pass padded draw (DropBlock's shared seed maps) is the draw, then a pad."""
    shape, limits = (3, 5, 4, 2), random.threshold(p)
    want = jnp.pad(random.below_threshold(key, limits, shape), padding)
    got = jax.jit(random._padded_below_threshold, static_argnums=(2, 3))(
        key, limits, shape, padding
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert 0 < p < 1 or bool(got.any()) == (p == 1.0)


def test_other_key_implementations_fall_back_to_jax_random():
    key = jax.random.key(5, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(random.bits(key, (10,))), np.asarray(jax.random.bits(key, (10,), jnp.uint32))
    )


@pytest.mark.parametrize("p", [0.0, 1e-9, 0.1, 0.5, 1 - 1e-9, 1.0])
def test_bernoulli_is_bits_below_the_integer_threshold(p):
    key = jax.random.key(8)
    draws = np.asarray(random.bits(key, (5000,))).astype(np.uint64)
    expected = draws < min(int(np.floor(p * 2**32)), 2**32) if p < 1 else np.ones(5000, bool)
    np.testing.assert_array_equal(np.asarray(random.bernoulli(key, p, (5000,))), expected)
    traced = jax.jit(lambda q: random.bernoulli(key, q, (5000,)))(jnp.float32(p))
    limit = np.floor(np.float64(np.float32(p)) * 2**32)
    expected_traced = draws < limit if p < 1 else np.ones(5000, bool)
    np.testing.assert_array_equal(np.asarray(traced), expected_traced)


def test_bernoulli_frequency():
    n, p = 200000, 0.013
    got = float(random.bernoulli(jax.random.key(9), p, (n,)).mean())
    assert abs(got - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_uniform_index_is_the_exact_high_word_of_the_product():
    key = jax.random.key(10)
    extent = np.array([3, 1000, 2**31 - 1], np.uint64)
    draws = np.asarray(random.bits(key, (4000, 3))).astype(np.uint64)
    expected = (draws * extent) >> np.uint64(32)
    got = np.asarray(random.uniform_index(key, (4000, 3), extent.astype(np.int64)))
    np.testing.assert_array_equal(got, expected.astype(np.int64))
    assert got[:, 0].min() == 0 and got[:, 0].max() == 2
