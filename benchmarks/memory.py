"""Activation memory of DropBlock in a jitted gradient, from XLA's compiled memory analysis.

A chain of layers ``h = tanh(op(h))`` (the issue's chain) and ``h = tanh(op(h) @ W)`` (a
chain whose activations XLA must store anyway, as in a real network) is differentiated
under ``jit``; the table gives the compiled ``temp_size_in_bytes`` minus that of the same
chain with ``op = h * 1.1``, for plain dropout
(``where(bernoulli(key, 1 - rate, shape), x / (1 - rate), 0)``), per-channel DropBlock,
DropBlock with ``recompute_mask=True`` (the mask is redrawn from the key in the backward
pass) and shared DropBlock; then the time of one gradient step with and without recompute.

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import argparse

from _harness import interleaved, machine_line, markdown_table, quiet_allocator

RATE, BLOCK = 0.1, 7


def build(op, depth: int, matmul: bool):
    import jax
    import jax.numpy as jnp

    def loss(x, w, key):
        h = x
        for i in range(depth):
            h = op(h, jax.random.fold_in(key, i))
            h = jnp.tanh(h @ w if matmul else h)
        return jnp.sum(h)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller tensor, fewer repeats")
    args = parser.parse_args()
    quiet_allocator()
    import jax
    import jax.numpy as jnp

    import jaxdrop

    shape = (8, 28, 28, 64) if args.quick else (32, 28, 28, 64)
    x = jax.random.normal(jax.random.key(0), shape)
    w = jnp.eye(shape[-1]) * 0.9
    key = jax.random.key(1)
    ops = {
        "multiply": lambda h, k: h * 1.1,
        "dropout": lambda h, k: jnp.where(
            jax.random.bernoulli(k, 1 - RATE, h.shape), h / (1 - RATE), 0
        ),
        "drop_block": lambda h, k: jaxdrop.drop_block(h, RATE, BLOCK, key=k),
        "drop_block recompute": lambda h, k: jaxdrop.drop_block(
            h, RATE, BLOCK, key=k, recompute_mask=True
        ),
        "drop_block shared": lambda h, k: jaxdrop.drop_block(
            h, RATE, BLOCK, key=k, share_channels=True
        ),
    }
    mib = 2.0**20
    activation = x.size * 4 / mib
    print(
        f"# memory: {shape}, f32 activation {activation:.2f} MiB, bool mask "
        f"{x.size / mib:.2f} MiB; {machine_line()}\n"
    )
    rows = []
    chains = [("tanh", 4, False), ("matmul+tanh", 4, True), ("matmul+tanh", 16, True)]
    for chain, depth, matmul in chains:
        temp = {
            name: build(op, depth, matmul)
            .lower(x, w, key)
            .compile()
            .memory_analysis()
            .temp_size_in_bytes
            for name, op in ops.items()
        }
        extra = {name: (temp[name] - temp["multiply"]) / mib for name in ops}
        for name in list(ops)[1:]:
            rows.append(
                [
                    f"{chain} x{depth}",
                    name,
                    extra[name],
                    extra[name] / depth,
                    extra[name] / extra["dropout"] if extra["dropout"] else None,
                ]
            )
    print(markdown_table(["chain", "op", "extra temp MiB", "per layer MiB", "vs dropout"], rows))
    steps = {name: build(ops[name], 4, True) for name in ("drop_block", "drop_block recompute")}
    times = interleaved(
        {name: (lambda step=step: step(x, w, key)) for name, step in steps.items()},
        repeats=5 if args.quick else 15,
    )
    print()
    print(
        markdown_table(
            ["gradient step, matmul+tanh x4", "ms"], [[name, t] for name, t in times.items()]
        )
    )


if __name__ == "__main__":
    main()
