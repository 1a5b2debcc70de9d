"""jit, vmap, grad and traced rates for every op."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop

X_SHAPE = (4, 9, 7, 3)


def branch(h):
    return jnp.tanh(h) * 2.0


# Each op as f(x, rate, key).
OPS = {
    "drop_block": lambda x, r, k: jaxdrop.drop_block(x, r, 3, key=k),
    "drop_block_exact_expected": lambda x, r, k: jaxdrop.drop_block(
        x, r, (2, 3), key=k, calibration="exact", normalize="expected", seed_region="full"
    ),
    "drop_block_shared_example": lambda x, r, k: jaxdrop.drop_block(
        x, r, 4, key=k, share_channels=True, normalize="example"
    ),
    "drop_path_row": lambda x, r, k: jaxdrop.drop_path(x, r, key=k),
    "drop_path_batch": lambda x, r, k: jaxdrop.drop_path(x, r, key=k, mode="batch"),
    "stochastic_depth_batch": lambda x, r, k: jaxdrop.stochastic_depth(branch, x, r, key=k),
    "stochastic_depth_row": lambda x, r, k: jaxdrop.stochastic_depth(
        branch, x, r, key=k, mode="row"
    ),
    "spatial_dropout": lambda x, r, k: jaxdrop.spatial_dropout(x, r, key=k),
    "uout": lambda x, r, k: jaxdrop.uout(x, r, key=k),
    "cutout": lambda x, r, k: jaxdrop.cutout(x, 3, key=k, num_holes=2),
}


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(42), X_SHAPE)


@pytest.mark.parametrize("name", OPS)
def test_jit_and_eager_agree_bitwise(name, x):
    op = OPS[name]
    key = jax.random.key(3)
    eager = op(x, 0.4, key)
    jitted = jax.jit(op, static_argnums=1)(x, 0.4, key)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


@pytest.mark.parametrize("name", OPS)
def test_vmap_over_keys_equals_separate_calls(name, x):
    op = OPS[name]
    keys = jax.random.split(jax.random.key(5), 4)
    batched = jax.vmap(lambda k: op(x, 0.4, k))(keys)
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(op(x, 0.4, key)))


@pytest.mark.parametrize("name", [n for n in OPS if n != "cutout"])
def test_python_float_and_float32_array_rate_give_the_same_result(name, x):
    op = OPS[name]
    key = jax.random.key(9)
    np.testing.assert_allclose(
        np.asarray(op(x, 0.25, key)), np.asarray(op(x, jnp.float32(0.25), key)), rtol=1e-6
    )


@pytest.mark.parametrize("name", [n for n in OPS if n != "cutout"])
def test_traced_rate_changes_the_result_without_recompiling(name):
    op = OPS[name]
    x = jnp.ones((64, 8, 8, 4))
    jitted = jax.jit(lambda x, r, k: op(x, r, k))
    key = jax.random.key(0)
    low = jitted(x, jnp.float32(0.05), key)
    high = jitted(x, jnp.float32(0.6), key)
    assert jitted._cache_size() == 1
    if name == "uout":
        spread = lambda y: float(jnp.std(y))
        assert spread(high) > 5 * spread(low)
    else:
        assert float(jnp.mean(high == 0)) > float(jnp.mean(low == 0)) + 0.2


def test_traced_rate_drop_fraction_follows_the_rate():
    x = jnp.ones((256, 12, 12, 8))
    fraction = jax.jit(
        lambda r, k: jnp.mean(
            jaxdrop.drop_block(x, r, 3, key=k, calibration="exact", normalize="none") == 0
        )
    )
    for rate in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
        got = float(fraction(jnp.float32(rate), jax.random.key(1)))
        assert abs(got - rate) < 0.01, (rate, got)
    assert fraction._cache_size() == 1


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("traced", [False, True])
def test_gradient_is_finite_at_rate_zero_and_one(name, rate, traced, x):
    op = OPS[name]
    rate = jnp.float32(rate) if traced else rate
    grad = jax.jit(jax.grad(lambda x, r: jnp.sum(op(x, r, jax.random.key(1)) ** 2)))(x, rate)
    assert np.isfinite(np.asarray(grad)).all()
    if name != "cutout" and float(rate) == 0.0:
        expected = jax.grad(
            lambda x: jnp.sum(branch(x) ** 2) if "stochastic" in name else jnp.sum(x**2)
        )(x)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-5)


@pytest.mark.parametrize("name", ["drop_block", "drop_path_row", "spatial_dropout"])
def test_gradient_is_the_same_mask_and_scale(name, x):
    op = OPS[name]
    key = jax.random.key(11)
    y, vjp = jax.vjp(lambda x: op(x, 0.3, key), x)
    (grad,) = vjp(jnp.ones_like(y))
    ratio = np.asarray(y) / np.asarray(x)
    np.testing.assert_allclose(np.asarray(grad), ratio, rtol=1e-5)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_in_gives_the_same_dtype_out(name, dtype, x):
    y = OPS[name](x.astype(dtype), 0.3, jax.random.key(2))
    assert y.dtype == dtype
    assert np.isfinite(np.asarray(y, np.float32)).all()


@pytest.mark.parametrize("name", [n for n in OPS if n != "cutout"])
def test_deterministic_is_the_identity_or_evaluation(name, x):
    calls = {
        "drop_block": lambda: jaxdrop.drop_block(x, 0.5, 3, deterministic=True),
        "drop_path": lambda: jaxdrop.drop_path(x, 0.5, deterministic=True),
        "spatial_dropout": lambda: jaxdrop.spatial_dropout(x, 0.5, deterministic=True),
        "uout": lambda: jaxdrop.uout(x, 0.5, deterministic=True),
        "stochastic_depth": lambda: jaxdrop.stochastic_depth(branch, x, 0.5, deterministic=True),
    }
    family = next(k for k in calls if name.startswith(k))
    expected = branch(x) if family == "stochastic_depth" else x
    np.testing.assert_array_equal(np.asarray(calls[family]()), np.asarray(expected))


@pytest.mark.parametrize("normalize", ["batch", "example", "expected", "none"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_recomputed_mask_gives_the_same_value_and_gradient(normalize, dtype, x):
    x = x.astype(dtype)
    key = jax.random.key(13)

    def loss(x, recompute):
        y = jaxdrop.drop_block(x, 0.3, 3, key=key, normalize=normalize, recompute_mask=recompute)
        return jnp.sum(jnp.sin(y.astype(jnp.float32)))

    stored = jax.jit(jax.value_and_grad(lambda x: loss(x, False)))(x)
    redrawn = jax.jit(jax.value_and_grad(lambda x: loss(x, True)))(x)
    assert float(stored[0]) == float(redrawn[0])
    np.testing.assert_array_equal(
        np.asarray(stored[1], np.float32), np.asarray(redrawn[1], np.float32)
    )


def test_recomputed_mask_keeps_nothing_mask_sized_for_the_backward_pass():
    x = jnp.ones((8, 16, 16, 32))
    w = jnp.eye(32)

    depth = 4

    def temp_bytes(recompute):
        def loss(x, w):
            h = x
            for i in range(depth):
                key = jax.random.fold_in(jax.random.key(0), i)
                h = jnp.tanh(jaxdrop.drop_block(h, 0.1, 5, key=key, recompute_mask=recompute) @ w)
            return jnp.sum(h)

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    mask_bytes = x.size  # one bool per unit and layer when the mask is kept
    # Saved: the masks of all layers, less a few scalars the redraw keeps instead.
    assert temp_bytes(False) - temp_bytes(True) >= (depth - 0.5) * mask_bytes
