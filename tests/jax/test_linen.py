"""Tests of the Flax Linen modules in ``jaxdrop.linen``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdrop
from jaxdrop import linen as jl

KEYS = [jax.random.key(i) for i in range(32)]
# Parameters are initialised from rbg keys: XLA on CPU compiles threefry's normal draws slowly
# (seconds per initializer), and the dropout keys are what these tests are about.
INIT_KEY = jax.random.key(0, impl="rbg")


def _tree_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool((u == v).all()), a, b)))


def _tree_changed_everywhere(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool((u != v).any()), a, b)))


def _is_zero(tree) -> bool:
    return all(bool((leaf == 0).all()) for leaf in jax.tree.leaves(tree))


class ConvBranch(nn.Module):
    """conv-BN: a (one-conv) residual branch of a ResNet block."""

    features: int = 8

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), use_bias=False)(x)
        return nn.BatchNorm(use_running_average=not train)(y)


class TinyResNet(nn.Module):
    """Two residual blocks under StochasticDepth; DropBlock, Uout, SpatialDropout, DropPath in
    the trunk. With ``regularize=False`` the same network without any of the ops."""

    depth_rates: tuple[float, ...] = (0.1, 0.2)
    regularize: bool = True
    classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool):
        det = not train
        h = nn.Conv(8, (3, 3), name="stem")(x)
        if self.regularize:
            h = jl.Uout(0.1)(h, deterministic=det)
            h = jl.DropBlock(0.1, 3, calibration="exact")(h, deterministic=det)
        for i, rate in enumerate(self.depth_rates):
            branch = ConvBranch(name=f"branch{i}")
            if self.regularize:
                contribution = jl.StochasticDepth(branch, rate)(h, train, deterministic=det)
            else:
                contribution = branch(h, train)
            h = nn.relu(h + contribution)
        if self.regularize:
            h = jl.SpatialDropout(0.1)(h, deterministic=det)
        h = h.mean(axis=(1, 2))
        if self.regularize:
            h = jl.DropPath(0.1)(h, deterministic=det)
        return nn.Dense(self.classes, name="head")(h)


X = jnp.asarray(np.random.default_rng(0).standard_normal((8, 8, 8, 3)), jnp.float32)
LABELS = jnp.arange(8) % 4


@pytest.fixture(scope="module")
def variables():
    return jax.jit(TinyResNet().init, static_argnames="train")(INIT_KEY, X, train=False)


@pytest.fixture(scope="module")
def train_apply():
    @jax.jit
    def apply(variables, key):
        return TinyResNet().apply(
            variables, X, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )

    return apply


def test_init_creates_every_branch_variable(variables):
    plain = jax.jit(TinyResNet(regularize=False).init, static_argnames="train")(
        INIT_KEY, X, train=False
    )
    assert jax.tree.structure(variables) == jax.tree.structure(plain)
    for i in range(2):
        assert set(variables["params"][f"branch{i}"]) == {"Conv_0", "BatchNorm_0"}
        assert set(variables["batch_stats"][f"branch{i}"]) == {"BatchNorm_0"}


def test_train_mode_depends_on_the_dropout_key(variables, train_apply):
    out_a, _ = train_apply(variables, KEYS[0])
    out_a_again, _ = train_apply(variables, KEYS[0])
    out_b, _ = train_apply(variables, KEYS[1])
    np.testing.assert_array_equal(out_a, out_a_again)
    assert not np.array_equal(out_a, out_b)


def test_eval_mode_is_the_network_without_the_ops(variables):
    apply = TinyResNet().apply
    eval_a = apply(variables, X, train=False, rngs={"dropout": KEYS[0]})
    eval_b = apply(variables, X, train=False, rngs={"dropout": KEYS[1]})
    eval_no_rng = apply(variables, X, train=False)
    plain = TinyResNet(regularize=False).apply(variables, X, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_array_equal(eval_a, eval_no_rng)
    np.testing.assert_array_equal(eval_a, plain)


def test_jitted_optax_step_reduces_the_loss(variables, train_apply):
    model = TinyResNet()
    optimizer = optax.adam(3e-2)

    def loss_fn(params, batch_stats, key):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            X,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()
        return loss, updates["batch_stats"]

    @jax.jit
    def step(params, batch_stats, opt_state, key):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, key
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    def held_out_loss(params, batch_stats):
        """The training loss under 4 fixed dropout keys that the steps never use."""
        losses = []
        for key in KEYS[-4:]:
            logits, _ = train_apply({"params": params, "batch_stats": batch_stats}, key)
            losses.append(optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean())
        return float(np.mean(losses))

    params, batch_stats = variables["params"], variables["batch_stats"]
    before = held_out_loss(params, batch_stats)
    opt_state = optimizer.init(params)
    for key in KEYS[:20]:
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, key)
        assert np.isfinite(float(loss))
    after = held_out_loss(params, batch_stats)
    assert after < 0.5 * before, (before, after)


class OneBlock(nn.Module):
    """A single StochasticDepth block, to watch one branch. ``remat``: "depth" wraps the
    StochasticDepth module in ``nn.remat``, "branch" the branch."""

    rate: float = 0.5
    mode: str = "batch"
    scaling: str = "inverted"
    remat: str = "none"

    @nn.compact
    def __call__(self, x, train: bool = True, rate=None):
        depth_cls, branch_cls = jl.StochasticDepth, ConvBranch
        if self.remat == "depth":
            depth_cls = nn.remat(jl.StochasticDepth, static_argnums=(2,))
        if self.remat == "branch":
            branch_cls = nn.remat(ConvBranch, static_argnums=(2,))
        # Under remat, keyword arguments are traced: `deterministic` goes to the constructor.
        flags = dict(mode=self.mode, scaling=self.scaling, deterministic=not train)
        depth = depth_cls(branch_cls(name="branch"), self.rate, **flags)
        return depth(x, train, rate=rate)


SMALL_X = X[:4]


def _one_block_variables(**fields):
    return OneBlock(**fields).init(INIT_KEY, SMALL_X, train=False)


def _run_keys(model, variables, keys):
    """Per key: (branch contribution, new batch_stats)."""
    apply = jax.jit(
        lambda v, k: model.apply(v, SMALL_X, rngs={"dropout": k}, mutable=["batch_stats"])
    )
    return [apply(variables, key) for key in keys]


def test_training_mode_init_creates_the_branch_variables_whatever_the_draw():
    model = OneBlock()
    expected = jax.tree.structure(_one_block_variables())
    init = jax.jit(lambda rngs: model.init(rngs, SMALL_X, train=True))
    apply = jax.jit(lambda v, rngs: model.apply(v, SMALL_X, rngs=rngs, mutable=True)[0])
    outcomes = set()
    for key in KEYS[:8]:
        rngs = {"params": INIT_KEY, "dropout": key}
        variables = init(rngs)
        assert jax.tree.structure(variables) == expected
        outcomes.add(_is_zero(apply(variables, rngs)))
    assert outcomes == {True, False}
    for key in KEYS[:2]:  # eager init: the draw is concrete, no cond is traced
        eager = model.init({"params": INIT_KEY, "dropout": key}, SMALL_X, train=True)
        assert jax.tree.structure(eager) == expected


@pytest.mark.parametrize("remat", ["none", "depth", "branch"])
def test_skipped_branch_leaves_batch_stats_bit_identical(remat):
    model = OneBlock(remat=remat)
    variables = _one_block_variables(remat=remat)
    dropped = []
    for out, updates in _run_keys(model, variables, KEYS):
        was_dropped = _is_zero(out)
        dropped.append(was_dropped)
        if was_dropped:
            assert _tree_equal(updates["batch_stats"], variables["batch_stats"])
        else:
            assert _tree_changed_everywhere(updates["batch_stats"], variables["batch_stats"])
    # rate 0.5 over 32 keys: both outcomes occur unless something is broken (P = 2**-31).
    assert 0 < sum(dropped) < len(dropped)


def test_batch_mode_compiles_to_a_cond_and_row_mode_does_not():
    def jaxpr(mode):
        model = OneBlock(mode=mode)
        variables = _one_block_variables(mode=mode)
        fn = lambda k: model.apply(variables, SMALL_X, rngs={"dropout": k}, mutable=True)
        return str(jax.make_jaxpr(fn)(KEYS[0]))

    assert "cond[" in jaxpr("batch")
    assert "cond[" not in jaxpr("row")


def test_skipped_branch_gets_exactly_zero_gradient():
    model = OneBlock()
    variables = _one_block_variables()

    def loss(params, key):
        out, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            SMALL_X,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        return jnp.sum(out**2), out

    grad = jax.jit(jax.grad(loss, has_aux=True))
    dropped = []
    for key in KEYS[:16]:
        grads, out = grad(variables["params"], key)
        kernel_grad = grads["branch"]["Conv_0"]["kernel"]
        dropped.append(_is_zero(out))
        assert bool((kernel_grad == 0).all()) == dropped[-1]
    assert 0 < sum(dropped) < len(dropped)


def test_row_mode_runs_the_branch_and_masks_examples():
    model = OneBlock(mode="row")
    variables = _one_block_variables(mode="row")
    full, _ = model.apply(variables, SMALL_X, train=True, rate=0.0, mutable=["batch_stats"])
    rows_dropped = 0
    for out, updates in _run_keys(model, variables, KEYS[:8]):
        assert _tree_changed_everywhere(updates["batch_stats"], variables["batch_stats"])
        for row, full_row in zip(out, full):
            if _is_zero(row):
                rows_dropped += 1
            else:
                np.testing.assert_allclose(row, 2.0 * full_row, rtol=1e-5, atol=1e-6)
    assert 0 < rows_dropped < 8 * len(SMALL_X)


def test_test_scaling_is_unscaled_in_training_and_scaled_at_test():
    model = OneBlock(scaling="test", rate=0.25)
    variables = _one_block_variables(scaling="test", rate=0.25)
    full, _ = model.apply(variables, SMALL_X, train=True, rate=0.0, mutable=["batch_stats"])
    kept = [out for out, _ in _run_keys(model, variables, KEYS[:8]) if not _is_zero(out)]
    assert kept
    for out in kept:  # (ulp differences: the kept branch runs inside a cond)
        np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-6)
    at_test = model.apply(variables, SMALL_X, train=False)
    branch = ConvBranch().apply({k: v["branch"] for k, v in variables.items()}, SMALL_X, False)
    np.testing.assert_allclose(at_test, 0.75 * branch, rtol=1e-6)


def test_rate_one_skips_without_running_the_branch():
    model = OneBlock()
    variables = _one_block_variables()
    apply = jax.jit(
        lambda v, k: model.apply(v, SMALL_X, rate=1.0, rngs={"dropout": k}, mutable=["batch_stats"])
    )
    out, updates = apply(variables, KEYS[0])
    assert out.shape == (4, 8, 8, 8) and _is_zero(out)
    assert _tree_equal(updates["batch_stats"], variables["batch_stats"])


class SetupParent(nn.Module):
    """A parent that builds the block in ``setup`` rather than inline."""

    def setup(self):
        self.depth = jl.StochasticDepth(ConvBranch(features=3), 0.5)

    def __call__(self, x, train: bool):
        return x + self.depth(x, train, deterministic=not train)


def test_setup_parent_skips_and_keeps_batch_stats():
    variables = SetupParent().init(INIT_KEY, SMALL_X, train=False)
    assert "branch" in variables["batch_stats"]["depth"]
    apply = jax.jit(
        lambda v, k: SetupParent().apply(
            v, SMALL_X, train=True, rngs={"dropout": k}, mutable=["batch_stats"]
        )
    )
    outcomes = set()
    for key in KEYS[:16]:
        out, updates = apply(variables, key)
        skipped = bool((out == SMALL_X).all())
        outcomes.add(skipped)
        unchanged = _tree_equal(updates["batch_stats"], variables["batch_stats"])
        assert unchanged == skipped
    assert outcomes == {True, False}


def test_pytree_output_and_keyword_arguments():
    class Pair(nn.Module):
        @nn.compact
        def __call__(self, a, *, shift):
            return {"sum": nn.Dense(3)(a) + shift, "count": jnp.sum(a > 0, axis=-1)}

    pair = jl.StochasticDepth(Pair(), 0.5, deterministic=False)
    rngs = {"params": INIT_KEY, "dropout": KEYS[1]}
    pair_vars = pair.init(rngs, jnp.ones((2, 5)), shift=1.0)
    call = jax.jit(
        lambda k: pair.apply(pair_vars, jnp.ones((2, 5)), shift=1.0, rngs={"dropout": k})
    )
    results = [call(k) for k in KEYS[:16]]
    for tree in results:
        assert tree["sum"].shape == (2, 3) and tree["count"].dtype == jnp.int32
    assert 0 < sum(_is_zero(tree) for tree in results) < 16


def _fraction_dropped(module, x, rates):
    """Drop fraction per rate from one jitted function of a traced rate; also its trace count."""
    traces = []

    @jax.jit
    def fraction(rate, key):
        traces.append(None)
        y = module.apply({}, x, deterministic=False, rate=rate, rngs={"dropout": key})
        return jnp.mean(y == 0)

    measured = [float(fraction(jnp.float32(r), jax.random.key(i))) for i, r in enumerate(rates)]
    return measured, len(traces), fraction._cache_size()


RATES = (0.0, 0.1, 0.5, 0.9, 1.0)


@pytest.mark.parametrize(
    ("module", "shape", "units"),
    [
        # units: independent draws behind the fraction, for the binomial bound.
        (jl.DropPath(0.3), (4096, 2), 4096),
        (jl.SpatialDropout(0.3), (64, 2, 2, 64), 64 * 64),
        (jl.DropBlock(0.3, 3, calibration="exact", normalize="expected"), (16, 16, 16, 16), None),
    ],
    ids=["DropPath", "SpatialDropout", "DropBlock"],
)
def test_traced_rate_sets_the_drop_fraction_with_one_compilation(module, shape, units):
    measured, traces, cache_size = _fraction_dropped(module, jnp.ones(shape), RATES)
    assert traces == 1 and cache_size == 1
    assert measured[0] == 0.0 and measured[-1] == 1.0
    for rate, got in zip(RATES[1:-1], measured[1:-1]):
        # 5 binomial standard deviations; DropBlock's blocks (<= 9 units, overlapping) are
        # correlated, so its bound uses 16 * 16 * 16 * 16 / 9 independent blocks at most.
        n = units or np.prod(shape) / 9
        assert abs(got - rate) <= 5 * np.sqrt(rate * (1 - rate) / n), (rate, got)


def test_traced_rate_sets_the_uout_noise_width():
    module = jl.Uout(0.0)
    traces = []

    @jax.jit
    def widest(rate, key):
        traces.append(None)
        y = module.apply(
            {}, jnp.ones((4096,)), deterministic=False, rate=rate, rngs={"dropout": key}
        )
        return jnp.max(jnp.abs(y - 1))

    for rate in (0.05, 0.5):
        width = float(widest(jnp.float32(rate), KEYS[0]))
        # 4096 uniform draws in [-rate, rate): the widest lies within 0.2% of rate.
        assert 0.99 * rate <= width <= rate
    assert len(traces) == 1


def test_traced_depth_rate_sets_the_skip_fraction_with_one_compilation():
    model = OneBlock()
    variables = _one_block_variables()
    traces = []

    @jax.jit
    def skipped(rate, key):
        traces.append(None)
        out, _ = model.apply(
            variables, SMALL_X, rate=rate, rngs={"dropout": key}, mutable=["batch_stats"]
        )
        return jnp.all(out == 0)

    keys = [jax.random.key(1000 + i) for i in range(128)]
    for rate in (0.2, 0.7):
        fraction = np.mean([bool(skipped(jnp.float32(rate), k)) for k in keys])
        assert abs(fraction - rate) <= 5 * np.sqrt(rate * (1 - rate) / len(keys)), (rate, fraction)
    assert len(traces) == 1 and skipped._cache_size() == 1


def test_schedule_inside_one_compiled_step():
    schedule = jaxdrop.schedules.linear_ramp(0.5, total_steps=10)
    module = jl.DropPath(0.0, deterministic=False)
    x = jnp.ones((2048, 1))
    traces = []

    @jax.jit
    def step(step_count, key):
        traces.append(None)
        return jnp.mean(module.apply({}, x, rate=schedule(step_count), rngs={"dropout": key}) == 0)

    fractions = [float(step(jnp.int32(s), jax.random.key(s))) for s in (0, 5, 10)]
    assert fractions[0] == 0.0
    assert abs(fractions[1] - 0.25) < 0.05 and abs(fractions[2] - 0.5) < 0.06
    assert len(traces) == 1


ALL_MODULES = [
    jl.DropBlock(0.2, 3),
    jl.DropPath(0.2),
    jl.SpatialDropout(0.2),
    jl.Uout(0.2),
    jl.Cutout(2),
    jl.StochasticDepth(nn.Dense(3), 0.2),
]
IDS = [type(m).__name__ for m in ALL_MODULES]
IMAGE = jnp.ones((2, 4, 4, 3))


def _init(module):
    return module.init(INIT_KEY, IMAGE, deterministic=True)


@pytest.mark.parametrize("module", ALL_MODULES, ids=IDS)
def test_deterministic_missing_is_an_error(module):
    variables = _init(module)
    with pytest.raises(
        ValueError, match=r"`deterministic` must be passed exactly once.*got neither"
    ):
        module.apply(variables, IMAGE, rngs={"dropout": KEYS[0]})


@pytest.mark.parametrize("module", ALL_MODULES, ids=IDS)
def test_deterministic_given_twice_is_an_error(module):
    variables = _init(module)
    twice = module.clone(deterministic=True)
    with pytest.raises(
        ValueError, match=r"exactly once.*got both: deterministic=True .* deterministic=False"
    ):
        twice.apply(variables, IMAGE, deterministic=False, rngs={"dropout": KEYS[0]})


@pytest.mark.parametrize("module", ALL_MODULES, ids=IDS)
def test_missing_rng_names_the_collection_to_pass(module):
    variables = _init(module)
    name = type(module).__name__
    expected = (
        f"{name} needs an rng stream named 'dropout' when deterministic is False: "
        "pass rngs={'dropout': key} to apply()"
    )
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        module.apply(variables, IMAGE, deterministic=False)
    custom = module.clone(rng_collection="noise")
    with pytest.raises(ValueError, match=r"rng stream named 'noise'.*rngs=\{'noise': key\}"):
        custom.apply(variables, IMAGE, deterministic=False, rngs={"dropout": KEYS[0]})
    out = custom.apply(variables, IMAGE, deterministic=False, rngs={"noise": KEYS[0]})
    evaluated = module.apply(variables, IMAGE, deterministic=True)
    assert jax.tree.structure(out) == jax.tree.structure(evaluated)


WITH_RATE = [m for m in ALL_MODULES if hasattr(m, "rate")]


@pytest.mark.parametrize("module", WITH_RATE, ids=[type(m).__name__ for m in WITH_RATE])
def test_no_rng_needed_in_eval_or_at_static_rate_zero(module):
    variables = _init(module)
    evaluated = module.apply(variables, IMAGE, deterministic=True)
    at_zero = module.apply(variables, IMAGE, deterministic=False, rate=0.0)
    np.testing.assert_array_equal(evaluated, at_zero)


def test_traced_deterministic_says_to_use_the_constructor():
    remat = nn.remat(jl.DropPath)(0.1)
    with pytest.raises(TypeError, match=r"got a traced value: under nn.remat.*constructor"):
        remat.apply({}, IMAGE, deterministic=True)


def test_recompute_mask_gives_the_same_output_and_gradient():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 4)), jnp.float32)

    def value_and_grad(recompute_mask):
        layer = jl.DropBlock(0.3, 3, recompute_mask=recompute_mask, deterministic=False)
        f = lambda x: jnp.sum(layer.apply({}, x, rngs={"dropout": KEYS[0]}) * x)
        return jax.jit(jax.value_and_grad(f))(x)

    (kept_value, kept_grad), (redrawn_value, redrawn_grad) = map(value_and_grad, (False, True))
    np.testing.assert_array_equal(kept_value, redrawn_value)
    np.testing.assert_array_equal(kept_grad, redrawn_grad)
    assert "recompute_mask = True" in repr(jl.DropBlock(0.1, 3, recompute_mask=True))


def test_call_time_rate_is_checked_like_the_functional_op():
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\], got 1.5"):
        jl.DropPath(0.1).apply({}, IMAGE, deterministic=False, rate=1.5)


def test_repr_shows_the_settings():
    text = repr(jl.DropBlock(0.1, 5, seed_region="full", calibration="exact"))
    for setting in (
        "rate = 0.1",
        "block_size = 5",
        "seed_region = 'full'",
        "calibration = 'exact'",
    ):
        assert setting in text
    text = repr(jl.StochasticDepth(nn.Dense(3), 0.3, mode="row"))
    assert "branch = Dense(" in text and "rate = 0.3" in text and "mode = 'row'" in text
