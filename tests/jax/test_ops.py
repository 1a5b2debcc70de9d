"""drop_path, stochastic_depth, spatial_dropout, cutout and uout: semantics and statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import random

SIGMAS = 4.0


def binomial_sigma(p, n):
    return math.sqrt(p * (1 - p) / n)


# ----------------------------------------------------------------------------- drop_path


@pytest.mark.parametrize("shape", [(6,), (6, 5), (6, 197, 8), (6, 3, 4, 5, 2)])
def test_drop_path_row_masks_whole_examples_of_any_rank(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    keep = jnp.array([True, False, True, True, False, True])
    y = jaxdrop.drop_path(x, 0.25, keep=keep)
    expected = np.where(np.asarray(keep).reshape((6,) + (1,) * (len(shape) - 1)), x / 0.75, 0)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)


def test_drop_path_batch_mode_drops_all_or_nothing():
    x = jnp.ones((5, 3))
    assert not np.asarray(jaxdrop.drop_path(x, 0.5, keep=jnp.array(False), mode="batch")).any()
    np.testing.assert_array_equal(
        np.asarray(jaxdrop.drop_path(x, 0.5, keep=jnp.array(True), mode="batch")),
        2 * np.ones((5, 3)),
    )


def test_drop_path_without_scaling_keeps_values():
    x = jnp.arange(4.0)[:, None]
    y = jaxdrop.drop_path(x, 0.5, keep=jnp.array([1, 0, 1, 0], bool), scale_by_keep=False)
    assert np.asarray(y).ravel().tolist() == [0.0, 0.0, 2.0, 0.0]


def test_drop_path_draw_is_one_bernoulli_per_example():
    n, rate = 20000, 0.3
    key = jax.random.key(1)
    y = jaxdrop.drop_path(jnp.ones((n, 3)), rate, key=key)
    dropped = np.asarray(y[:, 0] == 0)
    np.testing.assert_array_equal(dropped, ~np.asarray(random.bernoulli(key, 1 - rate, (n,))))
    assert (np.asarray(y == 0) == dropped[:, None]).all()
    assert abs(dropped.mean() - rate) < SIGMAS * binomial_sigma(rate, n)


def test_drop_path_is_unbiased():
    n, rate = 40000, 0.4
    y = jaxdrop.drop_path(jnp.ones((n,)), rate, key=jax.random.key(2))
    sigma = math.sqrt((1 / (1 - rate) - 1) / n)
    assert abs(float(jnp.mean(y)) - 1.0) < SIGMAS * sigma


# ------------------------------------------------------------------------ stochastic_depth


class CountingBranch:
    """Counts evaluations on concrete values (tracing for shapes does not count)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, h):
        if not isinstance(h, jax.core.Tracer):
            self.calls += 1
        return jnp.tanh(h).astype(jnp.bfloat16)  # the output dtype differs from the input's


def test_stochastic_depth_eager_does_not_call_a_dropped_branch():
    branch = CountingBranch()
    x = jnp.ones((2, 3))
    out = jaxdrop.stochastic_depth(branch, x, 0.5, keep=jnp.array(False))
    assert branch.calls == 0
    assert out.shape == (2, 3) and out.dtype == jnp.bfloat16 and not np.asarray(out, float).any()
    out = jaxdrop.stochastic_depth(branch, x, 0.5, keep=jnp.array(True))
    assert branch.calls == 1
    np.testing.assert_allclose(np.asarray(out, float), np.tanh(1.0) * 2, rtol=1e-2)


def test_stochastic_depth_batch_mode_lowers_to_a_cond_that_skips_the_branch():
    x = jnp.ones((4, 8))

    def step(x, key):
        return jaxdrop.stochastic_depth(lambda h: jnp.sin(h) @ jnp.ones((8, 8)), x, 0.5, key=key)

    jaxpr = str(jax.make_jaxpr(step)(x, jax.random.key(0)))
    assert "cond[" in jaxpr
    assert "dot_general" in jaxpr.split("cond[", 1)[1]  # the matmul lives inside the cond


def test_stochastic_depth_gradient_is_zero_exactly_when_dropped():
    w = jnp.full((3, 3), 0.5)
    x = jnp.ones((2, 3))

    def loss(w, key):
        return jnp.sum(jaxdrop.stochastic_depth(lambda h: h @ w, x, 0.5, key=key))

    seen = set()
    for seed in range(12):
        key = jax.random.key(seed)
        kept = bool(random.bernoulli(key, 0.5, ()))
        grad = jax.jit(jax.grad(loss))(w, key)
        assert bool(jnp.any(grad != 0)) == kept
        seen.add(kept)
    assert seen == {True, False}


@pytest.mark.parametrize(
    "scaling, train_scale, test_scale", [("inverted", 1 / 0.8, 1.0), ("test", 1.0, 0.8)]
)
def test_stochastic_depth_scaling_rules(scaling, train_scale, test_scale):
    x = jnp.ones((2, 2))
    train = jaxdrop.stochastic_depth(lambda h: 3 * h, x, 0.2, keep=jnp.array(True), scaling=scaling)
    test = jaxdrop.stochastic_depth(lambda h: 3 * h, x, 0.2, deterministic=True, scaling=scaling)
    np.testing.assert_allclose(np.asarray(train), 3 * train_scale, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(test), 3 * test_scale, rtol=1e-6)


def test_stochastic_depth_row_mode_masks_examples_and_handles_pytrees():
    x = jnp.ones((3, 2))
    keep = jnp.array([True, False, True])
    out = jaxdrop.stochastic_depth(
        lambda h: {"a": h, "b": h[:, :1] * 2}, x, 0.5, keep=keep, mode="row"
    )
    np.testing.assert_array_equal(np.asarray(out["a"][:, 0]), [2.0, 0.0, 2.0])
    np.testing.assert_array_equal(np.asarray(out["b"][:, 0]), [4.0, 0.0, 4.0])


def test_stochastic_depth_survival_rate_over_steps():
    x = jnp.ones((1, 1))
    rate, steps = 0.3, 4000
    keys = jax.random.split(jax.random.key(3), steps)
    outs = jax.vmap(lambda k: jaxdrop.stochastic_depth(lambda h: h, x, rate, key=k))(keys)
    dropped = float(jnp.mean(outs == 0))
    assert abs(dropped - rate) < SIGMAS * binomial_sigma(rate, steps)


def test_stochastic_depth_rate_one_never_calls_the_branch():
    branch = CountingBranch()
    out = jaxdrop.stochastic_depth(branch, jnp.ones((2, 3)), 1.0, key=jax.random.key(0))
    assert branch.calls == 0 and out.dtype == jnp.bfloat16 and not np.asarray(out, float).any()


# ------------------------------------------------------------------------ spatial_dropout


def test_spatial_dropout_drops_whole_channels_per_example():
    x = jnp.ones((2, 4, 4, 3))
    keep = jnp.array([[True, False, True], [False, True, True]])
    y = np.asarray(jaxdrop.spatial_dropout(x, 0.25, keep=keep))
    expected = np.where(np.asarray(keep)[:, None, None, :], 1 / 0.75, 0.0)
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), rtol=1e-6)


def test_spatial_dropout_statistics():
    n, c, rate = 400, 50, 0.2
    y = jaxdrop.spatial_dropout(jnp.ones((n, 2, 3, c)), rate, key=jax.random.key(4))
    per_map = np.asarray(y == 0).reshape(n, -1, c)
    assert (per_map.all(axis=1) == per_map.any(axis=1)).all()
    assert abs(per_map.all(axis=1).mean() - rate) < SIGMAS * binomial_sigma(rate, n * c)


# --------------------------------------------------------------------------------- cutout


def test_cutout_holes_are_anchored_like_full_seeding_and_clipped():
    x = jnp.ones((2, 6, 5, 2))
    centers = jnp.array([[[0, 0]], [[3, 4]]])
    y = np.asarray(jaxdrop.cutout(x, (3, 2), centers=centers, fill=-1.0))
    expected = np.ones((2, 6, 5, 2))
    expected[0, 0:2, 0:1] = -1  # rows [-1, 2), cols [-1, 1)
    expected[1, 2:5, 3:5] = -1  # rows [2, 5), cols [3, 5)
    np.testing.assert_array_equal(y, expected)


def test_cutout_many_holes_and_the_single_hole_centre_shape():
    x = jnp.ones((1, 8, 3))
    y = jaxdrop.cutout(x, 2, centers=jnp.array([[[1], [6]]]), num_holes=2)
    assert np.asarray(y[0, :, 0] == 0).tolist() == [1, 1, 0, 0, 0, 1, 1, 0]
    z = jaxdrop.cutout(x, 2, centers=jnp.array([[6]]))
    assert np.asarray(z[0, :, 0] == 0).tolist() == [0, 0, 0, 0, 0, 1, 1, 0]


def test_cutout_size_zero_leaves_the_input():
    x = jnp.arange(24.0).reshape(1, 4, 3, 2)
    np.testing.assert_array_equal(
        np.asarray(jaxdrop.cutout(x, 0, key=jax.random.key(0))), np.asarray(x)
    )


def test_cutout_centres_are_uniform_over_the_map_and_3d_works():
    n = 6000
    x = jnp.ones((n, 3, 4, 5, 1))
    y = np.asarray(jaxdrop.cutout(x, 1, key=jax.random.key(5)))
    holes = np.argwhere(y[..., 0] == 0)
    assert len(holes) == n  # size 1: exactly one unit per example
    counts = np.bincount(np.ravel_multi_index(holes[:, 1:].T, (3, 4, 5)), minlength=60)
    expected = n / 60
    assert np.abs(counts - expected).max() < SIGMAS * math.sqrt(expected * (1 - 1 / 60))


def test_cutout_gradient_is_zero_in_holes():
    x = jnp.ones((1, 4, 4, 1))
    grad = jax.grad(lambda x: jnp.sum(jaxdrop.cutout(x, 2, centers=jnp.array([[1, 1]]))))(x)
    assert float(grad.sum()) == 12.0


# ----------------------------------------------------------------------------------- uout


def test_uout_is_x_plus_x_times_noise():
    x = jnp.array([[1.0, -2.0, 4.0]])
    noise = jnp.array([[0.1, -0.2, 0.0]])
    np.testing.assert_allclose(
        np.asarray(jaxdrop.uout(x, 0.3, noise=noise)), [[1.1, -1.6, 4.0]], rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(jaxdrop.uout(x, 0.3, noise=jnp.array([0.5]))), [[1.5, -3.0, 6.0]], rtol=1e-6
    )


def test_uout_noise_is_uniform_on_minus_rate_to_rate():
    rate, n = 0.4, 200000
    y = np.asarray(jaxdrop.uout(jnp.ones((n,)), rate, key=jax.random.key(6)))
    r = y - 1.0
    assert r.min() >= -rate and r.max() < rate
    assert abs(r.mean()) < SIGMAS * rate / math.sqrt(3 * n)  # U(-a, a): variance a^2 / 3
    assert abs(r.var() - rate**2 / 3) < 0.01 * rate**2
    lag_one = np.corrcoef(r[:-1], r[1:])[0, 1]  # independent per element
    assert abs(lag_one) < SIGMAS / math.sqrt(n)
