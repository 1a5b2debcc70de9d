"""Tests of the Flax NNX modules in ``jaxdrop.nnx``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdrop import nnx as jn

# Parameters are initialised from rbg keys: XLA on CPU compiles threefry's normal draws slowly
# (seconds per initializer), and the dropout streams are what these tests are about.
PARAMS_KEY = jax.random.key(0, impl="rbg")
X = jnp.asarray(np.random.default_rng(0).standard_normal((8, 8, 8, 3)), jnp.float32)
LABELS = jnp.arange(8) % 4
OPS = (jn.DropBlock, jn.DropPath, jn.SpatialDropout, jn.StochasticDepth, jn.Uout)


def _tree_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool((u == v).all()), a, b)))


def _tree_changed_everywhere(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool((u != v).any()), a, b)))


def _is_zero(tree) -> bool:
    return all(bool((leaf == 0).all()) for leaf in jax.tree.leaves(tree))


def _copy(state):
    return jax.tree.map(jnp.copy, state)


class ConvBranch(nnx.Module):
    """conv-BN: a (one-conv) residual branch of a ResNet block."""

    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(channels, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv(x))


class TinyResNet(nnx.Module):
    """Two residual blocks under StochasticDepth; Uout, DropBlock, SpatialDropout, DropPath in
    the trunk. ``regularize=False`` runs the same layers with every op left out."""

    def __init__(self, rngs: nnx.Rngs, depth_rates=(0.1, 0.2)):
        self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.uout = jn.Uout(0.1, rngs=rngs)
        self.drop_block = jn.DropBlock(0.1, 3, calibration="exact", rngs=rngs)
        self.blocks = nnx.List(
            [jn.StochasticDepth(ConvBranch(8, rngs), rate, rngs=rngs) for rate in depth_rates]
        )
        self.spatial_dropout = jn.SpatialDropout(0.1, rngs=rngs)
        self.drop_path = jn.DropPath(0.1, rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x, regularize: bool = True):
        h = self.stem(x)
        if regularize:
            h = self.drop_block(self.uout(h))
        for block in self.blocks:
            contribution = block(h) if regularize else block.branch(h)
            h = nnx.relu(h + contribution)
        if regularize:
            h = self.spatial_dropout(h)
        h = h.mean(axis=(1, 2))
        if regularize:
            h = self.drop_path(h)
        return self.head(h)


def _model(dropout_seed: int = 1) -> TinyResNet:
    return TinyResNet(nnx.Rngs(params=PARAMS_KEY, dropout=dropout_seed))


@nnx.jit
def _forward(model, x):
    return model(x)


def _loss(model, x, labels):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()


def test_train_and_eval_switch_every_op():
    model = _model()
    ops = [module for _, module in nnx.iter_modules(model) if isinstance(module, OPS)]
    assert len(ops) == 6
    assert all(op.deterministic is False for op in ops)  # nnx.Dropout's default: training
    first, second = _forward(model, X), _forward(model, X)
    assert not np.array_equal(first, second)  # the dropout streams moved on

    model.eval()
    assert all(op.deterministic is True for op in ops)
    evaluated = _forward(model, X)
    np.testing.assert_array_equal(evaluated, _forward(model, X))
    plain = nnx.jit(lambda model, x: model(x, regularize=False))
    np.testing.assert_array_equal(evaluated, plain(model, X))

    model.train()
    assert all(op.deterministic is False for op in ops)
    viewed = nnx.view(model, deterministic=True, use_running_average=True)
    assert all(op.deterministic is False for op in ops)  # a view leaves the model alone
    np.testing.assert_array_equal(_forward(viewed, X), evaluated)


def test_dropout_seed_decides_the_draws():
    a, b, c = _model(1), _model(1), _model(2)
    out_a, out_b, out_c = _forward(a, X), _forward(b, X), _forward(c, X)
    np.testing.assert_array_equal(out_a, out_b)
    assert not np.array_equal(out_a, out_c)


def test_split_merge_round_trip_gives_identical_outputs():
    model = _model()
    _forward(model, X)  # move the streams and batch statistics away from their start
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, _copy(state))
    for _ in range(2):
        np.testing.assert_array_equal(_forward(model, X), _forward(copy, X))
    assert _tree_equal(nnx.state(model), nnx.state(copy))


def test_nnx_jit_training_step_reduces_the_loss():
    model = _model()
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, labels):
        loss, grads = nnx.value_and_grad(_loss)(model, x, labels)
        optimizer.update(model, grads)
        return loss

    def held_out_loss(model):
        """Mean training loss of 4 calls on a copy whose dropout streams are reseeded to 99."""
        probe = nnx.clone(model)
        nnx.reseed(probe, dropout=99)
        logits = [_forward(probe, X) for _ in range(4)]
        return np.mean(
            [optax.softmax_cross_entropy_with_integer_labels(z, LABELS).mean() for z in logits]
        )

    before = held_out_loss(model)
    for _ in range(20):
        assert np.isfinite(float(step(model, optimizer, X, LABELS)))
    after = held_out_loss(model)
    assert after < 0.5 * before, (before, after)


SMALL_X = X[:4]


def _one_block(rate: float = 0.5, **options) -> jn.StochasticDepth:
    rngs = nnx.Rngs(params=PARAMS_KEY, dropout=3)
    return jn.StochasticDepth(ConvBranch(3, rngs), rate, rngs=rngs, **options)


def test_skipped_branch_leaves_batchnorm_state_unchanged():
    block = _one_block()
    dropped = []
    for _ in range(32):
        before = _copy(nnx.state(block.branch))
        stats_before = _copy(nnx.state(block.branch, nnx.BatchStat))
        out = _forward(block, SMALL_X)
        dropped.append(_is_zero(out))
        if dropped[-1]:
            assert _tree_equal(nnx.state(block.branch), before)
        else:
            stats = nnx.state(block.branch, nnx.BatchStat)
            assert _tree_changed_everywhere(stats, stats_before)
    # rate 0.5 over 32 draws: both outcomes occur unless something is broken (P = 2**-31).
    assert 0 < sum(dropped) < len(dropped)


def test_batch_mode_compiles_to_a_cond_and_row_mode_does_not():
    def jaxpr(mode):
        graphdef, state = nnx.split(_one_block(mode=mode))
        return str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(SMALL_X))(state))

    assert "cond[" in jaxpr("batch")
    assert "cond[" not in jaxpr("row")


def test_skipped_branch_gets_exactly_zero_gradient():
    block = _one_block()

    def loss(block):
        out = block(SMALL_X)
        return jnp.sum(out**2), out

    grad = nnx.jit(nnx.grad(loss, has_aux=True))
    dropped = []
    for _ in range(16):
        grads, out = grad(block)
        dropped.append(_is_zero(out))
        assert bool((grads.branch.conv.kernel[...] == 0).all()) == dropped[-1]
    assert 0 < sum(dropped) < len(dropped)


def test_row_mode_runs_the_branch_and_masks_examples():
    block = _one_block(mode="row")
    rows_dropped = 0
    for _ in range(8):
        before = _copy(nnx.state(block.branch, nnx.BatchStat))
        full = nnx.clone(block).branch(SMALL_X)
        out = _forward(block, SMALL_X)
        assert _tree_changed_everywhere(nnx.state(block.branch, nnx.BatchStat), before)
        for row, full_row in zip(out, full):
            if _is_zero(row):
                rows_dropped += 1
            else:
                np.testing.assert_allclose(row, 2.0 * full_row, rtol=1e-5, atol=1e-6)
    assert 0 < rows_dropped < 8 * len(SMALL_X)


def test_test_scaling_and_call_time_overrides():
    block = _one_block(rate=0.25, scaling="test")
    block.branch.eval()  # fixed normalisation, so that every call computes the same branch
    branch_out = block.branch(SMALL_X)
    np.testing.assert_allclose(block(SMALL_X, deterministic=True), 0.75 * branch_out, rtol=1e-6)
    kept = [out for out in (_forward(block, SMALL_X) for _ in range(8)) if not _is_zero(out)]
    assert kept
    for out in kept:  # unscaled in training (ulp differences: the branch runs inside a cond)
        np.testing.assert_allclose(out, branch_out, rtol=1e-5, atol=1e-6)
    assert _is_zero(block(SMALL_X, rate=1.0))
    block.eval()
    np.testing.assert_allclose(block(SMALL_X), 0.75 * branch_out, rtol=1e-6)
    assert not _is_zero(block(SMALL_X, deterministic=False, rate=0.0))


def _fraction_dropped(module, x, rates):
    """Drop fraction per rate from one nnx.jit function of a traced rate; also its trace count."""
    traces = []

    @nnx.jit
    def fraction(module, rate):
        traces.append(None)
        return jnp.mean(module(x, rate=rate) == 0)

    return [float(fraction(module, jnp.float32(r))) for r in rates], len(traces)


RATES = (0.0, 0.1, 0.5, 0.9, 1.0)


@pytest.mark.parametrize(
    ("make", "shape", "units"),
    [
        # units: independent draws behind the fraction, for the binomial bound.
        (lambda rngs: jn.DropPath(0.3, rngs=rngs), (4096, 2), 4096),
        (lambda rngs: jn.SpatialDropout(0.3, rngs=rngs), (64, 2, 2, 64), 64 * 64),
        (
            lambda rngs: jn.DropBlock(0.3, 3, calibration="exact", normalize="expected", rngs=rngs),
            (16, 16, 16, 16),
            None,
        ),
    ],
    ids=["DropPath", "SpatialDropout", "DropBlock"],
)
def test_traced_rate_sets_the_drop_fraction_with_one_compilation(make, shape, units):
    measured, traces = _fraction_dropped(make(nnx.Rngs(dropout=5)), jnp.ones(shape), RATES)
    assert traces == 1
    assert measured[0] == 0.0 and measured[-1] == 1.0
    for rate, got in zip(RATES[1:-1], measured[1:-1]):
        # 5 binomial standard deviations; DropBlock's blocks (<= 9 units, overlapping) are
        # correlated, so its bound uses numel / 9 independent blocks at most.
        n = units or np.prod(shape) / 9
        assert abs(got - rate) <= 5 * np.sqrt(rate * (1 - rate) / n), (rate, got)


def test_traced_depth_rate_sets_the_skip_fraction_with_one_compilation():
    block = _one_block()
    traces = []

    @nnx.jit
    def skipped(block, rate):
        traces.append(None)
        return jnp.all(block(SMALL_X, rate=rate) == 0)

    for rate in (0.2, 0.7):
        fraction = np.mean([bool(skipped(block, jnp.float32(rate))) for _ in range(128)])
        assert abs(fraction - rate) <= 5 * np.sqrt(rate * (1 - rate) / 128), (rate, fraction)
    assert len(traces) == 1


def _all_modules(rngs):
    return [
        jn.DropBlock(0.2, 3, rngs=rngs),
        jn.DropPath(0.2, rngs=rngs),
        jn.SpatialDropout(0.2, rngs=rngs),
        jn.Uout(0.2, rngs=rngs),
        jn.Cutout(2, rngs=rngs),
        jn.StochasticDepth(nnx.Linear(3, 3, rngs=nnx.Rngs(PARAMS_KEY)), 0.2, rngs=rngs),
    ]


NAMES = ["DropBlock", "DropPath", "SpatialDropout", "Uout", "Cutout", "StochasticDepth"]
IMAGE = jnp.ones((2, 8, 8, 3))


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_missing_rngs_names_the_stream_to_pass(index):
    module = _all_modules(None)[index]
    expected = (
        f"{NAMES[index]} needs an rng stream named 'dropout' when deterministic is False: "
        f"pass rngs=nnx.Rngs\\(dropout=0\\) to the {NAMES[index]} constructor"
    )
    with pytest.raises(ValueError, match=expected):
        module(IMAGE)
    module.eval()
    assert module(IMAGE).shape[:-1] == IMAGE.shape[:-1]  # evaluation needs no rng stream


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_deterministic_none_everywhere_is_an_error(index):
    module = _all_modules(nnx.Rngs(dropout=0))[index]
    module.deterministic = None
    with pytest.raises(ValueError, match=r"`deterministic` must be a bool.*got None"):
        module(IMAGE)
    assert module(IMAGE, deterministic=True).shape[:-1] == IMAGE.shape[:-1]


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_call_time_deterministic_overrides_the_attribute(index):
    module = _all_modules(nnx.Rngs(dropout=0))[index]
    reference = module(IMAGE, deterministic=True)
    module.eval()
    # Each op changes this input when it acts (StochasticDepth: zeros, or the branch * 1.25).
    assert not np.array_equal(module(IMAGE, deterministic=False), reference)
    np.testing.assert_array_equal(module(IMAGE), reference)


def test_rngs_without_the_stream_is_an_error():
    with pytest.raises(ValueError, match=r"`rngs` must have a stream named 'noise'.*\['params'\]"):
        jn.DropPath(0.1, rng_collection="noise", rngs=nnx.Rngs(params=0))
    with pytest.raises(TypeError, match=r"`rngs` must be an nnx.Rngs, .* got int"):
        jn.DropPath(0.1, rngs=0)
    layer = jn.DropPath(0.5, rng_collection="noise", rngs=nnx.Rngs(noise=0))
    assert not _is_zero(layer(jnp.ones((64, 1))))


def test_recompute_mask_gives_the_same_output_and_gradient():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 4)), jnp.float32)

    def value_and_grad(recompute_mask):
        layer = jn.DropBlock(0.3, 3, recompute_mask=recompute_mask, rngs=nnx.Rngs(dropout=0))
        loss = lambda layer, x: jnp.sum(layer(x) * x)
        return nnx.jit(nnx.value_and_grad(loss, argnums=1))(layer, x)

    (kept_value, kept_grad), (redrawn_value, redrawn_grad) = map(value_and_grad, (False, True))
    np.testing.assert_array_equal(kept_value, redrawn_value)
    np.testing.assert_array_equal(kept_grad, redrawn_grad)


def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\], got 1.5"):
        jn.DropBlock(1.5, 3)
    with pytest.raises(ValueError, match=r"`mode` must be one of 'row', 'batch', got 'rows'"):
        jn.StochasticDepth(nnx.Linear(2, 2, rngs=nnx.Rngs(PARAMS_KEY)), 0.1, mode="rows")


def test_repr_shows_the_settings():
    text = repr(jn.DropBlock(0.1, 5, seed_region="full", calibration="exact"))
    for setting in ("rate=0.1", "block_size=5", "seed_region='full'", "calibration='exact'"):
        assert setting in text
    text = repr(_one_block(mode="row"))
    assert "branch=ConvBranch(" in text and "rate=0.5" in text and "mode='row'" in text
