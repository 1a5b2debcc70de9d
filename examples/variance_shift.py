"""Variance shift (Li et al., CVPR 2019, arXiv 1801.05134), measured for Dropout and Uout.

A BatchNorm layer normalises with batch statistics in training and with running averages of
them at test. If a regulariser before it changes the variance of what it sees between the two
modes, the running variance no longer fits the test-time features: Li et al. call this the
variance shift, and blame it for Dropout-before-BatchNorm networks doing worse at test.

This script feeds a batch of unit-variance feature maps ``x`` of shape ``(2048, 8, 8, 64)``
through a regulariser, then through a fixed 1x1 convolution (a weight layer, as in the paper's
analysis: regulariser -> conv -> BN), and compares, per output channel, the variance over
``(N, H, W)`` in training mode (regulariser on) with the variance in test mode (regulariser
off, the identity): the printed ratio is train / test, averaged over the 64 channels. Two
kinds of input: zero-mean Gaussian features, and ReLU outputs standardised to unit variance
(mean c = 0.68).

What the analysis predicts, for iid inputs of mean c and variance v = 1 (the weight layer sums
independent terms, so the shift carries through it unchanged):

- Dropout at rate p (kept units scaled by 1 / (1 - p)): ratio (c^2 + v) / (1 - p) - c^2, i.e.
  1 / (1 - p) for zero-mean inputs.
- Uout at rate beta (x + x * r, r ~ U(-beta, beta)): ratio (c^2 + v)(1 + beta^2 / 3) - c^2,
  i.e. 1 + beta^2 / 3 for zero-mean inputs: much smaller at the same rate.

Both are multiplicative noise of mean 1; the shift is 1 + s^2 (1 + c^2 / v) for a noise of
variance s^2, which is p / (1 - p) for Dropout and beta^2 / 3 for Uout. The last rows give Uout
the same noise variance as Dropout at 0.1 and 0.2, which gives the same shift. The last column
is what BatchNorm at test then outputs: its standard deviation sqrt(1 / ratio) instead of 1::

    python examples/variance_shift.py            # prints the Markdown table (about 10 s)
    python examples/variance_shift.py --quick    # a smaller batch

Writes nothing; prints the table.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

import jaxdrop

DROPOUT_RATES = (0.1, 0.2, 0.3, 0.5)
UOUT_RATES = (0.1, 0.2, 0.3, 0.5)
MATCHED_DROPOUT = (0.1, 0.2)  # Uout with the noise variance of Dropout at these rates
CHANNELS = 64


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted Dropout: DropBlock with ``block_size=1`` scales kept units by 1 / (1 - rate)."""
    return jaxdrop.drop_block(x, rate, 1, key=key, normalize="expected")


def uout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Uout: ``x + x * r`` with ``r ~ U(-rate, rate)``."""
    return jaxdrop.uout(x, rate, key=key)


def predicted(op: str, rate: float, mean: float) -> float:
    """The train / test variance ratio for iid unit-variance inputs of the given mean."""
    c2 = mean**2
    if op == "Dropout":
        return (c2 + 1.0) / (1.0 - rate) - c2
    return (c2 + 1.0) * (1.0 + rate**2 / 3.0) - c2


def inputs(batch: int, key: jax.Array) -> dict[str, tuple[jax.Array, float]]:
    """The two unit-variance inputs, each with its mean c: N(0, 1), and ReLU outputs."""
    z = jax.random.normal(key, (batch, 8, 8, CHANNELS))
    relu_mean = 1.0 / math.sqrt(2.0 * math.pi)  # of max(z, 0) for z ~ N(0, 1)
    relu_std = math.sqrt(0.5 - relu_mean**2)
    return {
        "c=0": (z, 0.0),
        "ReLU": (jnp.maximum(z, 0.0) / relu_std, relu_mean / relu_std),
    }


@functools.partial(jax.jit, static_argnums=0)
def variance_ratio(
    regularizer: Callable, x: jax.Array, rate: jax.Array, weight: jax.Array, key: jax.Array
) -> jax.Array:
    """Mean over channels of Var_train / Var_test of ``regularizer(x, rate, key) @ weight``.

    The variances are taken over all axes but the channel, as BatchNorm's statistics are.
    ``rate`` is traced: one compilation per regulariser and input.
    """
    test = jnp.einsum("nhwc,cd->nhwd", x, weight)
    train = jnp.einsum("nhwc,cd->nhwd", regularizer(x, rate, key), weight)
    return jnp.mean(train.var(axis=(0, 1, 2)) / test.var(axis=(0, 1, 2)))


def rows() -> list[tuple[str, str, float]]:
    """(op, label, rate) for each row of the table."""
    table = [("Dropout", f"{p:g}", p) for p in DROPOUT_RATES]
    table += [("Uout", f"{b:g}", b) for b in UOUT_RATES]
    for p in MATCHED_DROPOUT:
        beta = math.sqrt(3.0 * p / (1.0 - p))
        table.append(("Uout", f"{beta:.3f} (noise of Dropout {p:g})", beta))
    return table


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Measures and prints the table; returns its rows as dicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a batch of 256 instead of 2048")
    args = parser.parse_args(argv)
    batch = 256 if args.quick else 2048

    data_key, weight_key, drop_key = jax.random.split(jax.random.key(0), 3)
    features = inputs(batch, data_key)
    weight = jax.random.normal(weight_key, (CHANNELS, CHANNELS)) / math.sqrt(CHANNELS)
    ops = {"Dropout": dropout, "Uout": uout}

    print(
        f"Train / test variance after regulariser -> 1x1 conv, per channel over "
        f"({batch}, 8, 8), mean of {CHANNELS} channels; BN std: what BatchNorm outputs at "
        "test, sqrt(test / train)\n"
    )
    header = ["op", "rate"]
    for name in features:
        header += [f"predicted, {name}", f"measured, {name}", f"BN std, {name}"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "---:|" * (len(header) - 2))
    results = []
    for op, label, rate in rows():
        cells, result = [op, label], {"op": op, "rate": rate}
        for name, (x, mean) in features.items():
            ratio = float(variance_ratio(ops[op], x, jnp.float32(rate), weight, drop_key))
            expected = predicted(op, rate, mean)
            cells += [f"{expected:.3f}", f"{ratio:.3f}", f"{1.0 / math.sqrt(ratio):.3f}"]
            result[name] = (expected, ratio)
        print("| " + " | ".join(cells) + " |")
        results.append(result)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
