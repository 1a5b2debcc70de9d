"""Programs the sharding tests run in a subprocess with 8 simulated CPU devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/jax/eight_devices.py ops
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/jax/eight_devices.py training

Each prints one JSON line. "ops": every op on a batch-sharded input against the unsharded
input, and which collectives its compiled HLO holds. "training": a data-parallel training
step of a small Flax model using every op, for each DropBlock normalisation and without the
regularisers ("None"), against one device, with the elements its all-reduces carry.
"""

import json
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdrop

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute")


def ops() -> dict:
    mesh = jax.make_mesh((8,), ("data",))
    x = jax.random.normal(jax.random.key(0), (16, 12, 10, 4))
    sharded_x = jax.device_put(x, NamedSharding(mesh, P("data")))
    key = jax.random.key(1)

    def block(normalize, **options):
        return lambda x, k: jaxdrop.drop_block(x, 0.3, 3, key=k, normalize=normalize, **options)

    candidates = {
        "drop_block_batch": block("batch"),
        "drop_block_example": block("example"),
        "drop_block_expected": block("expected", calibration="exact", seed_region="full"),
        "drop_block_none": block("none", share_channels=True),
        "drop_block_example_grad": jax.grad(lambda x, k: jnp.sum(block("example")(x, k) ** 2)),
        "drop_path": lambda x, k: jaxdrop.drop_path(x, 0.3, key=k),
        "drop_path_grad": jax.grad(lambda x, k: jnp.sum(jaxdrop.drop_path(x, 0.3, key=k) ** 2)),
        "spatial_dropout": lambda x, k: jaxdrop.spatial_dropout(x, 0.3, key=k),
        "cutout": lambda x, k: jaxdrop.cutout(x, 3, key=k),
        "uout": lambda x, k: jaxdrop.uout(x, 0.3, key=k),
    }
    results = {}
    for name, op in candidates.items():
        f = jax.jit(op)
        single = np.asarray(f(x, key))
        out = f(sharded_x, key)
        hlo = f.lower(sharded_x, key).compile().as_text()
        results[name] = {
            "identical": bool(np.array_equal(np.asarray(out), single)),
            "stays_sharded": not out.sharding.is_fully_replicated,
            "collectives": sorted(c for c in COLLECTIVES if c in hlo),
        }
    return results


class Net(nn.Module):
    """A small residual conv net with every op; ``normalize=None`` leaves them all out."""

    normalize: str | None

    @nn.compact
    def __call__(self, x, key):
        keys = jax.random.split(key, 7)
        on = self.normalize is not None
        if on:
            x = jaxdrop.cutout(x, 4, key=keys[0])
        h = nn.relu(nn.Conv(16, (3, 3))(x))
        if on:
            h = jaxdrop.drop_block(h, 0.2, 3, key=keys[1], normalize=self.normalize)
            h = jaxdrop.drop_block(
                h,
                0.2,
                5,
                key=keys[2],
                share_channels=True,
                calibration="exact",
                normalize=self.normalize,
            )
            h = jaxdrop.spatial_dropout(h, 0.1, key=keys[3])
            h = jaxdrop.uout(h, 0.1, key=keys[4])
        branch = nn.Conv(16, (3, 3))
        second = nn.Conv(16, (3, 3))
        if on:
            h = h + jaxdrop.stochastic_depth(
                lambda t: nn.relu(branch(t)), h, 0.3, key=keys[5], mode="row"
            )
            h = h + jaxdrop.drop_path(nn.relu(second(h)), 0.3, key=keys[6])
        else:
            h = h + nn.relu(branch(h))
            h = h + nn.relu(second(h))
        return nn.Dense(10)(h.mean(axis=(1, 2)))


def all_reduce_elements(hlo: str) -> int:
    """How many elements the all-reduces of a compiled program carry, all summed."""
    total = 0
    for line in hlo.splitlines():
        if "all-reduce(" in line or "all-reduce-start(" in line:
            result_types = line.split("=", 1)[1].split("all-reduce")[0]
            for dims in re.findall(r"\[([\d,]*)\]", result_types):
                total += int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def training() -> dict:
    mesh = jax.make_mesh((8,), ("data",))
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    x = jax.random.normal(jax.random.key(0), (32, 16, 16, 3))
    y = jax.random.randint(jax.random.key(1), (32,), 0, 10)
    key = jax.random.key(2)
    results = {}
    for normalize in ("example", "expected", "batch", None):
        net = Net(normalize)
        params = net.init(jax.random.key(3), x, key)

        def loss_fn(params, x, y, key, net=net):
            logits = net.apply(params, x, key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        step = jax.jit(jax.value_and_grad(loss_fn))
        loss1, grads1 = step(params, x, y, key)
        args = (
            jax.device_put(params, replicated),
            jax.device_put(x, data),
            jax.device_put(y, data),
            key,
        )
        loss8, grads8 = step(*args)
        hlo = step.lower(*args).compile().as_text()
        relative = jax.tree.map(
            lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-12)),
            grads1,
            grads8,
        )
        results[str(normalize)] = {
            "loss1": float(loss1),
            "loss8": float(loss8),
            "max_rel_grad_diff": max(jax.tree.leaves(relative)),
            "all_reduce_elements": all_reduce_elements(hlo),
            "other_collectives": sorted(c for c in COLLECTIVES[1:] if c in hlo),
        }
    return results


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    print(json.dumps({"ops": ops, "training": training}[sys.argv[1]]()))
