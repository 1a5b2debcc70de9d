"""Every bad input gets the contract's message: the argument, the rule and the value."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import schedules

X = jnp.ones((2, 6, 6, 3))
KEY = jax.random.key(0)

CASES = [
    # rate
    (
        lambda: jaxdrop.drop_block(X, -0.1, 3, key=KEY),
        ValueError,
        "`rate` must be in [0, 1], got -0.1.",
    ),
    (
        lambda: jaxdrop.drop_block(X, 1.5, 3, key=KEY),
        ValueError,
        "`rate` must be in [0, 1], got 1.5.",
    ),
    (
        lambda: jaxdrop.drop_path(X, float("nan"), key=KEY),
        ValueError,
        "`rate` must be in [0, 1], got nan.",
    ),
    (
        lambda: jaxdrop.spatial_dropout(X, True, key=KEY),
        TypeError,
        "`rate` must be a real number in [0, 1] or a scalar array, got True (bool).",
    ),
    (
        lambda: jaxdrop.uout(X, "0.1", key=KEY),
        TypeError,
        "`rate` must be a real number in [0, 1] or a scalar array, got '0.1' (str).",
    ),
    (
        lambda: jaxdrop.drop_block(X, jnp.array([0.1, 0.2]), 3, key=KEY),
        ValueError,
        "`rate` must be a scalar (shape ()), got an array of shape (2,).",
    ),
    (
        lambda: jaxdrop.drop_path(X, jnp.array(True), key=KEY),
        TypeError,
        "`rate` must have a floating-point or integer dtype, got bool.",
    ),
    # block_size
    (
        lambda: jaxdrop.drop_block(X, 0.1, 0, key=KEY),
        ValueError,
        "`block_size` must be an int or a sequence of 2 ints (one per spatial dim), each >= 1, "
        "got 0.",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, (3, -1), key=KEY),
        ValueError,
        "`block_size` must be an int or a sequence of 2 ints (one per spatial dim), each >= 1, "
        "got (3, -1).",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, (3, 3, 3), key=KEY),
        ValueError,
        "`block_size` must be an int or a sequence of 2 ints (one per spatial dim), each >= 1, "
        "got (3, 3, 3) (3 entries for 2 spatial dims).",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 2.5, key=KEY),
        TypeError,
        "`block_size` must be an int or a sequence of 2 ints (one per spatial dim), each >= 1, "
        "got 2.5.",
    ),
    # options
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, key=KEY, seed_region="same"),
        ValueError,
        "`seed_region` must be one of 'valid', 'full', got 'same'.",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, key=KEY, calibration="approx"),
        ValueError,
        "`calibration` must be one of 'paper', 'exact', got 'approx'.",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, key=KEY, normalize="mean"),
        ValueError,
        "`normalize` must be one of 'batch', 'example', 'expected', 'none', got 'mean'.",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, key=KEY, normalize=None),
        TypeError,
        "`normalize` must be one of 'batch', 'example', 'expected', 'none', got None (NoneType).",
    ),
    (
        lambda: jaxdrop.drop_path(X, 0.1, key=KEY, mode="sample"),
        ValueError,
        "`mode` must be one of 'row', 'batch', got 'sample'.",
    ),
    (
        lambda: jaxdrop.stochastic_depth(jnp.tanh, X, 0.1, key=KEY, scaling="train"),
        ValueError,
        "`scaling` must be one of 'inverted', 'test', got 'train'.",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, key=KEY, share_channels=1),
        TypeError,
        "`share_channels` must be a bool, got 1 (int).",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, key=KEY, eps=0.0),
        ValueError,
        "`eps` must be a finite number > 0 (it keeps a fully dropped tensor from dividing by "
        "zero), got 0.0.",
    ),
    # x
    (
        lambda: jaxdrop.drop_block(jnp.ones((2, 6)), 0.1, 3, key=KEY),
        ValueError,
        "`x` must have rank 3, 4 or 5 (a batch dim, a channel dim and 1 to 3 spatial dims), "
        "got rank 2 (shape (2, 6)).",
    ),
    (
        lambda: jaxdrop.drop_path(jnp.ones(()), 0.1, key=KEY),
        ValueError,
        "`x` must have rank >= 1 (a batch dim first), got rank 0 (shape ()).",
    ),
    (
        lambda: jaxdrop.drop_block(jnp.ones((2, 6, 6, 3), jnp.int32), 0.1, 3, key=KEY),
        TypeError,
        "`x` must have a floating-point dtype (float16, bfloat16, float32, float64), got int32.",
    ),
    # the source of randomness
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3),
        ValueError,
        "`key` is required when `deterministic` is False: pass key=jax.random.key(0) (in a Flax "
        "module, an rng stream named by `rng_collection`), or pass `seeds` to give the draw "
        "yourself.",
    ),
    (
        lambda: jaxdrop.cutout(X, 2),
        ValueError,
        "`key` is required when `deterministic` is False: pass key=jax.random.key(0) (in a Flax "
        "module, an rng stream named by `rng_collection`), or pass `centers` to give the draw "
        "yourself.",
    ),
    (
        lambda: jaxdrop.drop_path(X, 0.1, key=KEY, keep=jnp.ones((2,), bool)),
        ValueError,
        "Pass either `key` or `keep`, not both: `keep` replaces the random draw.",
    ),
    # pre-sampled draws
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, seeds=jnp.ones((2, 4, 4), bool)),
        ValueError,
        "`seeds` must have shape (2, 4, 4, 3) (see drop_block_seed_shape), got (2, 4, 4).",
    ),
    (
        lambda: jaxdrop.drop_block(X, 0.1, 3, seeds=jnp.ones((2, 4, 4, 3))),
        TypeError,
        "`seeds` must be a boolean array, got dtype float32.",
    ),
    (
        lambda: jaxdrop.drop_path(X, 0.1, keep=jnp.ones((2, 1), bool)),
        ValueError,
        "`keep` must have shape (2,) (for mode='row'), got (2, 1).",
    ),
    (
        lambda: jaxdrop.spatial_dropout(X, 0.1, keep=jnp.ones((2,), bool)),
        ValueError,
        "`keep` must have shape (2, 3) (one entry per example and channel), got (2,).",
    ),
    (
        lambda: jaxdrop.cutout(X, 2, centers=jnp.ones((2, 2))),
        TypeError,
        "`centers` must be an integer array, got dtype float32.",
    ),
    (
        lambda: jaxdrop.cutout(X, 2, num_holes=2, centers=jnp.ones((2, 2), int)),
        ValueError,
        "`centers` must have shape (2, 2, 2) (one centre per example and hole), got (2, 2).",
    ),
    (
        lambda: jaxdrop.uout(X, 0.1, noise=jnp.ones((5,))),
        ValueError,
        "`noise` must broadcast to the shape of `x` (2, 6, 6, 3), got (5,).",
    ),
    # cutout's own arguments
    (
        lambda: jaxdrop.cutout(X, 2, key=KEY, num_holes=0),
        ValueError,
        "`num_holes` must be an int >= 1, got 0.",
    ),
    (
        lambda: jaxdrop.cutout(X, -1, key=KEY),
        ValueError,
        "`size` must be an int or a sequence of 2 ints (one per spatial dim), each >= 0, got -1.",
    ),
    (
        lambda: jaxdrop.cutout(X, 2, key=KEY, fill="0"),
        TypeError,
        "`fill` must be a real number, got '0' (str).",
    ),
    # stochastic depth and schedules
    (
        lambda: jaxdrop.stochastic_depth(None, X, 0.1, key=KEY),
        TypeError,
        "`branch` must be callable (the residual branch f, called as branch(x)), got NoneType.",
    ),
    (
        lambda: schedules.linear_ramp(0.1, 0),
        ValueError,
        "`total_steps` must be an int >= 1, got 0.",
    ),
    (
        lambda: schedules.linear_ramp(1.2, 10),
        ValueError,
        "`final_rate` must be in [0, 1], got 1.2.",
    ),
    (
        lambda: schedules.depth_rates(0.1, [2, 0]),
        ValueError,
        "`num_blocks` must be an int >= 1 or a sequence of ints >= 1 (blocks per stage), "
        "got [2, 0].",
    ),
    (
        lambda: schedules.depth_rates(0.1, 4, rule="cosine"),
        ValueError,
        "`rule` must be one of 'huang', 'linspace', got 'cosine'.",
    ),
    (
        lambda: jaxdrop.drop_block_gamma(
            (2, 6, 6, 3), 0.1, 3, calibration="exact", seed_region="x"
        ),
        ValueError,
        "`seed_region` must be one of 'valid', 'full', got 'x'.",
    ),
]


@pytest.mark.parametrize("call, error, message", CASES)
def test_bad_input_message(call, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


def test_arguments_are_checked_in_evaluation_mode_too():
    with pytest.raises(ValueError, match="`rate` must be in"):
        jaxdrop.drop_block(X, 2.0, 3, deterministic=True)


def test_deterministic_needs_no_key():
    np.testing.assert_array_equal(
        np.asarray(jaxdrop.drop_block(X, 0.5, 3, deterministic=True)), np.asarray(X)
    )


def test_key_must_be_a_single_key():
    with pytest.raises(ValueError, match="`key` must be a single PRNG key"):
        jaxdrop.drop_block(X, 0.1, 3, key=jax.random.split(KEY, 2))
