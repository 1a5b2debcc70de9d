"""Test accuracy of each regulariser on a small digits training set, over several seeds.

A small-scale analogue of the DropBlock paper's ImageNet comparison (Ghiasi et al. 2018,
Table 1: ResNet-50 with Dropout, DropPath, SpatialDropout, Cutout and DropBlock): the ResNet,
training step and settings of ``train_flax.py`` (imported, not copied), trained on a fixed,
stratified subset of the digits so that regularisation has something to do, and evaluated on
the same 500 test digits. Each seed sets the initialisation, the batch order and the masks;
the same seed gives every regulariser the same initial network and batches, so the last column
compares each one with no regulariser seed by seed::

    python examples/compare_regularizers.py           # 200 digits, 5 seeds, 600 steps: ~10 min
    python examples/compare_regularizers.py --quick   # 200 digits, 2 seeds, 150 steps
    python examples/compare_regularizers.py --regularizers none,dropblock --seeds 3

Prints a Markdown table: regulariser, final rate, test accuracy mean and standard deviation
over the seeds, and the mean and standard deviation of the paired difference from "none".
Writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

import _common
import numpy as np
import train_flax


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Trains every regulariser on every seed, prints the table; returns accuracies."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train-size", type=int, default=200, help="training digits used")
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 per regulariser (default 5)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimiser steps per run (default 600)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="default to 2 seeds of 150 steps instead"
    )
    parser.add_argument(
        "--regularizers",
        default=",".join(_common.REGULARIZERS),
        help="comma-separated subset of " + ", ".join(_common.REGULARIZERS),
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 2 if args.quick else 5
    if args.steps is None:
        args.steps = 150 if args.quick else 600
    names = args.regularizers.split(",")
    unknown = sorted(set(names) - set(_common.REGULARIZERS))
    if unknown:
        parser.error(f"unknown regularizers {unknown}; choose from {_common.REGULARIZERS}")

    data = _common.load_digits(args.train_size)
    base = _common.Config(steps=args.steps, eval_every=args.steps)  # evaluate once, at the end
    accuracies: dict[str, list[float]] = {}
    start = time.perf_counter()
    for name in names:
        config = dataclasses.replace(base, regularizer=name, rate=_common.DEFAULT_RATES[name])
        accuracies[name] = []
        for seed in range(args.seeds):
            history = train_flax.train(
                dataclasses.replace(config, seed=seed), data=data, progress=False
            )
            accuracies[name].append(history.final_accuracy)
        mean = np.mean(accuracies[name])
        print(f"  {name:10s} {mean:.4f}  ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    print(
        f"\nTest accuracy on the 500 test digits; {len(data.train_labels)} training digits, "
        f"{args.steps} steps, seeds 0-{args.seeds - 1} (mean ± std over seeds)\n"
    )
    print("| regulariser | rate | test accuracy | difference from none |")
    print("|---|---:|---:|---:|")
    baseline = np.asarray(accuracies["none"]) if "none" in accuracies else None
    for name, values in accuracies.items():
        values = np.asarray(values)
        ddof = 1 if len(values) > 1 else 0
        rate = _common.DEFAULT_RATES[name]
        if name == "cutout":
            rate_cell = f"{_common.CUTOUT_SIZE}x{_common.CUTOUT_SIZE} hole"
        elif name == "none":
            rate_cell = "-"
        else:
            rate_cell = f"{rate:g}"
        diff_cell = "-"
        if baseline is not None and name != "none":
            diff = values - baseline
            diff_cell = f"{diff.mean():+.4f} ± {diff.std(ddof=ddof):.4f}"
        print(
            f"| {_common.TITLES[name]} | {rate_cell} | "
            f"{values.mean():.4f} ± {values.std(ddof=ddof):.4f} | {diff_cell} |"
        )
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    return accuracies


if __name__ == "__main__":
    main(sys.argv[1:])
