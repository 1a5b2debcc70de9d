"""Whole-model parity: a small ResNet with DropBlock, DropPath and stochastic depth, written once
in Flax Linen over the jaxdrop functional ops and once in torch.nn over torchdrop, with the
same weights gives the same logits, parameter gradients and BatchNorm statistics in training
(branch kept and dropped) and evaluation: with the same injected draws, and with no injected
draws at all, each framework drawing from one integer seed (layer ``i``'s key is
``fold_in(key(seed), i)`` in both)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxdrop
import torchdrop
from parity_tests import helpers
from parity_tests.tolerances import TOLERANCES, assert_close, relative_error

BATCH, SIZE, CLASSES = 4, 16, 10
MOMENTUM, EPS = 0.1, 1e-5  # BatchNorm, in torch's convention (Flax's momentum is 1 - 0.1).


class FlaxNet(nn.Module):
    """stem -> residual block under stochastic depth -> DropBlock -> downsampling block with
    DropPath on its branch -> DropBlock (even, shared, full, per-example) -> head."""

    @nn.compact
    def __call__(self, x, draws, train: bool, keys=None):
        det = not train
        keys = keys or {}

        def conv(features, k, stride, name):
            pad = [(k // 2, k // 2)] * 2
            return nn.Conv(features, (k, k), strides=stride, padding=pad, name=name)

        def bn(name):
            return nn.BatchNorm(
                use_running_average=det, momentum=1 - MOMENTUM, epsilon=EPS, name=name
            )

        x = nn.relu(bn("stem_bn")(conv(8, 3, 1, "stem_conv")(x)))
        # The stochastic-depth branch holds no BatchNorm: jaxdrop's functional stochastic_depth
        # cannot skip a Flax branch that updates batch_stats (see the report).
        first, second = conv(8, 3, 1, "b1_conv1"), conv(8, 3, 1, "b1_conv2")
        branch = lambda h: second(nn.relu(first(h)))
        x = nn.relu(
            x
            + jaxdrop.stochastic_depth(
                branch, x, 0.3, key=keys.get("sd"), keep=draws.get("sd"), deterministic=det
            )
        )
        x = jaxdrop.drop_block(
            x, 0.2, 3, key=keys.get("db1"), seeds=draws.get("db1"), deterministic=det
        )
        h = nn.relu(bn("b2_bn1")(conv(16, 3, 2, "b2_conv1")(x)))
        h = bn("b2_bn2")(conv(16, 3, 1, "b2_conv2")(h))
        h = jaxdrop.drop_path(h, 0.25, key=keys.get("dp"), keep=draws.get("dp"), deterministic=det)
        x = nn.relu(h + conv(16, 1, 2, "b2_proj")(x))
        x = jaxdrop.drop_block(
            x,
            0.3,
            2,
            key=keys.get("db2"),
            seeds=draws.get("db2"),
            share_channels=True,
            seed_region="full",
            calibration="exact",
            normalize="example",
            deterministic=det,
        )
        return nn.Dense(CLASSES, name="head")(x.mean(axis=(1, 2)))


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        conv, bn = torch.nn.Conv2d, lambda c: torch.nn.BatchNorm2d(c, eps=EPS, momentum=MOMENTUM)
        self.stem_conv, self.stem_bn = conv(3, 8, 3, padding=1), bn(8)
        self.b1 = torch.nn.Sequential(
            conv(8, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 8, 3, padding=1)
        )
        self.db1 = torchdrop.DropBlock(0.2, 3)
        self.b2_conv1, self.b2_bn1 = conv(8, 16, 3, stride=2, padding=1), bn(16)
        self.b2_conv2, self.b2_bn2 = conv(16, 16, 3, padding=1), bn(16)
        self.dp = torchdrop.DropPath(0.25)
        self.b2_proj = conv(8, 16, 1, stride=2)
        self.db2 = torchdrop.DropBlock(
            0.3,
            2,
            share_channels=True,
            seed_region="full",
            calibration="exact",
            normalize="example",
        )
        self.head = torch.nn.Linear(16, CLASSES)

    def forward(self, x, draws, keys=None):
        relu, keys = torch.relu, keys or {}
        x = relu(self.stem_bn(self.stem_conv(x)))
        sd = torchdrop.stochastic_depth(
            self.b1, x, 0.3, key=keys.get("sd"), keep=draws.get("sd"), training=self.training
        )
        x = self.db1(relu(x + sd), key=keys.get("db1"), seeds=draws.get("db1"))
        h = relu(self.b2_bn1(self.b2_conv1(x)))
        h = self.dp(self.b2_bn2(self.b2_conv2(h)), key=keys.get("dp"), keep=draws.get("dp"))
        x = self.db2(relu(h + self.b2_proj(x)), key=keys.get("db2"), seeds=draws.get("db2"))
        return self.head(x.mean(dim=(2, 3)))


# Flax parameter path -> torch parameter name.
CONVS = {
    "stem_conv": "stem_conv",
    "b1_conv1": "b1.0",
    "b1_conv2": "b1.2",
    "b2_conv1": "b2_conv1",
    "b2_conv2": "b2_conv2",
    "b2_proj": "b2_proj",
}
NORMS = ("stem_bn", "b2_bn1", "b2_bn2")


def _pairs():
    """(Flax path, torch name, Flax -> torch layout function) for every parameter."""
    hwio_to_oihw = lambda a: np.transpose(a, (3, 2, 0, 1))
    pairs = [("head/kernel", "head.weight", np.transpose), ("head/bias", "head.bias", None)]
    for flax_name, torch_name in CONVS.items():
        pairs.append((f"{flax_name}/kernel", f"{torch_name}.weight", hwio_to_oihw))
        pairs.append((f"{flax_name}/bias", f"{torch_name}.bias", None))
    for name in NORMS:
        pairs.append((f"{name}/scale", f"{name}.weight", None))
        pairs.append((f"{name}/bias", f"{name}.bias", None))
    return pairs


def _get(tree, path):
    for key in path.split("/"):
        tree = tree[key]
    return np.asarray(tree)


def _draws(rng, keep_branch: bool):
    """Seeds and keep vectors for every layer, in torch layout."""
    db1_shape = torchdrop.drop_block_seed_shape((BATCH, 8, SIZE, SIZE), 3)
    db2_shape = torchdrop.drop_block_seed_shape(
        (BATCH, 16, SIZE // 2, SIZE // 2), 2, share_channels=True, seed_region="full"
    )
    return {
        "sd": np.array(keep_branch),
        "db1": rng.random(db1_shape) < 0.03,
        "dp": np.array([True, False, True, True]),
        "db2": rng.random(db2_shape) < 0.08,
    }


def _jax_draws(draws):
    layout = {"db1": helpers.to_jax_layout, "db2": helpers.to_jax_layout}
    return {k: jnp.asarray(layout.get(k, lambda a: a)(v)) for k, v in draws.items()}


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    cotangent = rng.standard_normal((BATCH, CLASSES)).astype(np.float32)
    flax_model = FlaxNet()
    # The variables' structure from tracing Flax's init (compiling it takes XLA half a
    # minute), filled with random weights and non-trivial running statistics.
    init_draws = _jax_draws(_draws(rng, keep_branch=True))
    shapes = jax.eval_shape(
        lambda key, v: flax_model.init(key, v, init_draws, train=True),
        jax.random.key(0),
        jnp.asarray(helpers.to_jax_layout(x)),
    )
    fill = lambda s: (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(
        np.float32
    )
    params = jax.tree.map(fill, shapes["params"])
    stats = {
        name: {
            "mean": rng.normal(0, 0.3, value["mean"].shape).astype(np.float32),
            "var": rng.uniform(0.5, 1.5, value["var"].shape).astype(np.float32),
        }
        for name, value in shapes["batch_stats"].items()
    }
    variables = {"params": params, "batch_stats": stats}
    torch_model = TorchNet()
    state = torch_model.state_dict()
    for flax_path, torch_name, move in _pairs():
        value = _get(variables["params"], flax_path)
        state[torch_name] = torch.tensor(move(value) if move else value)
    for name in NORMS:
        state[f"{name}.running_mean"] = torch.tensor(stats[name]["mean"])
        state[f"{name}.running_var"] = torch.tensor(stats[name]["var"])
    torch_model.load_state_dict(state)
    return x, cotangent, flax_model, variables, torch_model


LAYERS = ("sd", "db1", "dp", "db2")  # Layer i draws from fold_in(key(seed), i).
SEEDS = {"dropped": 0, "kept": 3}  # Stochastic depth drops the branch for seed 0, not for 3.


@pytest.mark.parametrize("mode", ["train-kept", "train-dropped", "eval"])
def test_model(setup, mode):
    train = mode != "eval"
    draws = _draws(np.random.default_rng(1), keep_branch=mode != "train-dropped")
    errors = _check(setup, train, draws if train else {}, skipped=mode == "train-dropped")
    print(f"{mode}: {errors}")


@pytest.mark.parametrize("outcome", sorted(SEEDS))
def test_model_from_one_seed(setup, outcome):
    """Training mode with no injected draws: every layer draws from its own key, derived from
    one integer seed by JAX in one framework and by torchdrop.random in the other."""
    seed = SEEDS[outcome]
    jax_keys = {name: jax.random.fold_in(jax.random.key(seed), i) for i, name in enumerate(LAYERS)}
    torch_keys = {
        name: torchdrop.random.fold_in(torchdrop.random.key(seed), i)
        for i, name in enumerate(LAYERS)
    }
    for name in LAYERS:
        assert torch_keys[name] == tuple(int(w) for w in jax.random.key_data(jax_keys[name]))
    errors = _check(setup, True, {}, keys=(jax_keys, torch_keys), skipped=outcome == "dropped")
    print(f"seed {seed} ({outcome} branch): {errors}")


def _errors(actual, expected) -> tuple[float, float]:
    """The largest absolute error, and the largest relative one above the absolute tolerance."""
    _, atol = TOLERANCES["float32 model"]["output"]
    absolute = float(np.max(np.abs(actual - expected)))
    return absolute, relative_error(actual, expected, atol)


def _check(setup, train, draws, *, skipped, keys=None):
    """Runs both models on ``draws`` (or, with ``keys`` = (JAX keys, torch keys), drawing from
    the keys), compares logits, parameter gradients and BatchNorm statistics, and returns the
    largest (absolute, relative) errors of the logits and of the gradients."""
    x, cotangent, flax_model, variables, torch_model = setup
    jax_keys, torch_keys = keys or ({}, {})

    # The stochastic-depth keep stays a concrete constant (closed over, not traced), so that
    # jaxdrop takes its Python branch: a traced keep would call the Flax branch inside
    # lax.cond. The other draws are traced arguments of the jitted gradient. Drawn from a key,
    # the keep is concrete only outside jit: the keyed run differentiates without jit.
    jax_draws = _jax_draws(draws)
    branch_keep = jax_draws.pop("sd", None)

    def value_and_grad(params, batch_stats, x, traced_draws, keys):
        def loss(params):
            logits, updates = flax_model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                {**traced_draws, "sd": branch_keep} if draws else {},
                train=train,
                keys=keys,
                mutable=["batch_stats"],
            )
            return jnp.sum(logits * cotangent), (logits, updates)

        return jax.grad(loss, has_aux=True)(params)

    grads_j, (logits_j, updates_j) = (value_and_grad if keys else jax.jit(value_and_grad))(
        variables["params"],
        variables["batch_stats"],
        jnp.asarray(helpers.to_jax_layout(x)),
        jax_draws,
        jax_keys,
    )

    model = torch_model.train(train)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)
    logits_t = model(
        torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in draws.items()}, torch_keys
    )
    logits_t.backward(torch.from_numpy(cotangent))
    named = dict(model.named_parameters())

    assert_close(
        logits_t.detach().numpy(), np.asarray(logits_j), "float32 model", "output", "logits"
    )
    errors = {"logits": _errors(logits_t.detach().numpy(), np.asarray(logits_j)), "grads": (0, 0)}
    for flax_path, torch_name, move in _pairs():
        grad_j = _get(grads_j, flax_path)
        grad_t = named[torch_name].grad
        # A skipped branch gives its parameters no gradient in torch (None), zeros in JAX.
        grad_t = (
            np.zeros_like(move(grad_j) if move else grad_j) if grad_t is None else grad_t.numpy()
        )
        grad_j = move(grad_j) if move else grad_j
        assert_close(grad_t, grad_j, "float32 model", "grad", torch_name)
        errors["grads"] = tuple(map(max, errors["grads"], _errors(grad_t, grad_j)))
    assert (named["b1.0.weight"].grad is None) == skipped
    assert np.any(_get(grads_j, "b1_conv1/kernel") != 0) != skipped

    for name in NORMS:
        new_j = updates_j["batch_stats"][name]
        old_mean, old_var = (
            state[f"{name}.running_mean"].numpy(),
            state[f"{name}.running_var"].numpy(),
        )
        mean_t = model.state_dict()[f"{name}.running_mean"].numpy()
        var_t = model.state_dict()[f"{name}.running_var"].numpy()
        assert_close(mean_t, np.asarray(new_j["mean"]), "float32 model", "output", f"{name} mean")
        # torch updates the running variance with the unbiased batch variance, Flax with the
        # biased one: n / (n - 1) apart, n the units per channel.
        n = BATCH * (SIZE if name == "stem_bn" else SIZE // 2) ** 2
        biased = (np.asarray(new_j["var"]) - (1 - MOMENTUM) * old_var) / MOMENTUM
        expected_var = (
            (1 - MOMENTUM) * old_var + MOMENTUM * biased * n / (n - 1) if train else old_var
        )
        assert_close(var_t, expected_var, "float32 model", "output", f"{name} var")
        if not train:
            np.testing.assert_array_equal(mean_t, old_mean)
    model.load_state_dict(state)  # The next mode starts from the same statistics.
    return errors
