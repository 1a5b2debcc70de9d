"""A two-minute tour of jaxdrop: every op once, and what it does to a batch of ones.

Prints, for each op, the requested rate, the fraction of units it zeroed and the mean of its
output (which inverted scaling keeps near 1), then the DropBlock calibration table: the
fraction the paper's formula really drops, and the exact calibration's.

    python examples/tour.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxdrop

SHAPE = (64, 28, 28, 16)  # (N, H, W, C): channels-last


def branch(h):
    return jnp.tanh(h)


def ops(rate: float):
    key = jax.random.key(0)
    return {
        "drop_block(block=5)": lambda x: jaxdrop.drop_block(x, rate, 5, key=key),
        "drop_block(block=5, exact, expected)": lambda x: jaxdrop.drop_block(
            x, rate, 5, key=key, calibration="exact", normalize="expected"
        ),
        "drop_block(block=7, shared)": lambda x: jaxdrop.drop_block(
            x, rate, 7, key=key, share_channels=True
        ),
        "drop_path(row)": lambda x: jaxdrop.drop_path(x, rate, key=key),
        "stochastic_depth(batch)": lambda x: jaxdrop.stochastic_depth(branch, x, rate, key=key),
        "spatial_dropout": lambda x: jaxdrop.spatial_dropout(x, rate, key=key),
        "cutout(size=8, 2 holes)": lambda x: jaxdrop.cutout(x, 8, key=key, num_holes=2),
        "uout": lambda x: jaxdrop.uout(x, rate, key=key),
    }


def main() -> None:
    rate = 0.2
    x = jnp.ones(SHAPE)
    print(f"jax {jax.__version__} on {jax.default_backend()}; input {SHAPE}, rate {rate}\n")
    print(f"{'op':40s} {'zeroed':>8s} {'mean out':>9s}")
    for name, op in ops(rate).items():
        y = jax.jit(op)(x)
        print(f"{name:40s} {float(jnp.mean(y == 0)):8.3f} {float(jnp.mean(y)):9.3f}")

    print("\nDropBlock: realised drop fraction, per-channel masks, 64 x 16 maps, valid seeding")
    print(f"{'map':>6s} {'block':>5s} {'rate':>5s} {'paper':>7s} {'exact':>7s}")
    for size, block, rate in [(56, 7, 0.1), (14, 7, 0.1), (14, 7, 0.3), (7, 3, 0.2), (28, 5, 0.3)]:
        x = jnp.ones((64, size, size, 16))
        fractions = []
        for calibration in ("paper", "exact"):
            y = jaxdrop.drop_block(
                x, rate, block, key=jax.random.key(1), calibration=calibration, normalize="none"
            )
            fractions.append(float(jnp.mean(y == 0)))
        print(f"{size:>4d}^2 {block:>5d} {rate:>5.1f} {fractions[0]:7.3f} {fractions[1]:7.3f}")


if __name__ == "__main__":
    main()
