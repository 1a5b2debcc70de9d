"""Masks are the same on one device or eight, and only "batch" normalisation communicates.

Runs in a subprocess because XLA's simulated device count is fixed at import time.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxdrop

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("data",))
    x = jax.random.normal(jax.random.key(0), (16, 12, 10, 4))
    sharded_x = jax.device_put(x, NamedSharding(mesh, P("data")))
    key = jax.random.key(1)

    def block(normalize, **options):
        return lambda x, k: jaxdrop.drop_block(x, 0.3, 3, key=k, normalize=normalize, **options)

    ops = {
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
    for name, op in ops.items():
        f = jax.jit(op)
        single = np.asarray(f(x, key))
        out = f(sharded_x, key)
        hlo = f.lower(sharded_x, key).compile().as_text()
        results[name] = {
            "identical": bool(np.array_equal(np.asarray(out), single)),
            "stays_sharded": not out.sharding.is_fully_replicated,
            "collectives": sorted(
                c for c in ("all-reduce", "all-gather", "all-to-all", "collective-permute")
                if c in hlo
            ),
        }
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def results():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


NAMES = [
    "drop_block_batch",
    "drop_block_example",
    "drop_block_expected",
    "drop_block_none",
    "drop_block_example_grad",
    "drop_path",
    "drop_path_grad",
    "spatial_dropout",
    "cutout",
    "uout",
]


@pytest.mark.parametrize("name", NAMES)
def test_batch_sharded_output_is_bit_identical_and_stays_sharded(results, name):
    assert results[name]["identical"]
    assert results[name]["stays_sharded"]


@pytest.mark.parametrize("name", [n for n in NAMES if n != "drop_block_batch"])
def test_no_collective_outside_batch_normalisation(results, name):
    assert results[name]["collectives"] == []


def test_batch_normalisation_needs_exactly_its_all_reduce(results):
    assert results["drop_block_batch"]["collectives"] == ["all-reduce"]
