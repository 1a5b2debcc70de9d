"""Realised DropBlock drop fraction against the requested rate.

For each configuration of DESIGN.md's table (64 examples x 16 channels, per-channel masks, five
draws), prints the mean fraction of units set to zero by torchvision's ``drop_block2d`` (valid
seeding), timm's ``drop_block_2d`` (full seeding, ``couple_channels=False``), torchdrop and
jaxdrop with the paper's and the exact calibration (valid seeding; exact also with full
seeding), and the fraction torchdrop's paper calibration is expected to drop (overlaps
included). The peers' files come from ``python -m tools.peers``; without them their columns
read "n/a".

Usage:
  python benchmarks/realised_rate.py [--quick] [--draws N]
"""

from __future__ import annotations

import argparse
import math
import time

import _harness  # noqa: F401  (puts the checkout on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
import torch

import dropspec
import jaxdrop
import torchdrop
from tools import peers

# (map size, block size, requested rate), as in DESIGN.md.
CONFIGS = [(56, 7, 0.1), (14, 7, 0.1), (14, 7, 0.3), (7, 3, 0.2), (28, 5, 0.3)]


def _fraction(out) -> float:
    return float((np.asarray(out) == 0).mean())


def _peer_columns():
    if peers.missing():
        return None, None
    torchvision, timm = peers.torchvision_drop_block(), peers.timm_drop()
    return (
        lambda x, rate, k: torchvision.drop_block2d(x, rate, k),
        lambda x, rate, k: timm.drop_block_2d(x, rate, k, couple_channels=False),
    )


def _expected_paper(size: int, block: int, rate: float) -> float:
    """1 - mean_p (1 - gamma)^n(p): what the paper calibration drops on average."""
    geometry = dropspec.block_geometry((size, size), (block, block), "valid")
    gamma = dropspec.gamma_from_rate(rate, geometry, "paper")
    return 1.0 - float(np.mean((1.0 - gamma) ** dropspec.cover_counts(geometry)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 examples, one draw")
    parser.add_argument("--draws", type=int, default=None, help="draws per cell (default 5)")
    args = parser.parse_args(argv)
    batch = 16 if args.quick else 64
    draws = args.draws or (1 if args.quick else 5)
    channels = 16
    torchvision, timm = _peer_columns()
    columns = {
        "torchvision": torchvision,
        "timm": timm,
        "torchdrop paper": lambda x, rate, k, g: torchdrop.drop_block(x, rate, k, generator=g),
        "torchdrop exact": lambda x, rate, k, g: torchdrop.drop_block(
            x, rate, k, generator=g, calibration="exact"
        ),
        "torchdrop exact full": lambda x, rate, k, g: torchdrop.drop_block(
            x, rate, k, generator=g, calibration="exact", seed_region="full"
        ),
        "jaxdrop paper": "paper",
        "jaxdrop exact": "exact",
    }
    print(
        f"Realised drop fraction: {batch} examples x {channels} channels, per-channel masks, "
        f"mean of {draws} draw(s). torch {torch.__version__}, jax {jax.__version__}; peers: "
        f"{peers.versions() if torchvision else 'absent (python -m tools.peers)'}."
    )
    header = ["map, block, rate", "paper expects", *columns]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    start = time.perf_counter()
    for size, block, rate in CONFIGS:
        x_t = torch.ones(batch, channels, size, size)
        x_j = jnp.ones((batch, size, size, channels))
        cells = [f"{size}x{size}, {block}, {rate}", f"{_expected_paper(size, block, rate):.3f}"]
        for name, column in columns.items():
            if column is None:
                cells.append("n/a")
                continue
            fractions = []
            for draw in range(draws):
                if isinstance(column, str):  # jaxdrop
                    key = jax.random.fold_in(jax.random.key(size * 1000 + block), draw)
                    out = jaxdrop.drop_block(x_j, rate, block, key=key, calibration=column)
                elif name in ("torchvision", "timm"):
                    torch.manual_seed(draw)
                    out = column(x_t, rate, block)
                else:
                    out = column(x_t, rate, block, torch.Generator().manual_seed(draw))
                fractions.append(_fraction(out))
            cells.append(f"{np.mean(fractions):.3f}")
        print("| " + " | ".join(cells) + " |")
    elapsed = time.perf_counter() - start
    print(f"({elapsed:.1f} s; one draw's standard error is at most {_worst_se(batch):.3f}.)")


def _worst_se(batch: int) -> float:
    """A loose bound on one draw's standard error: independent maps of 16 channels, each
    map's dropped fraction in [0, 1] (variance <= 1/4)."""
    return math.sqrt(0.25 / (batch * 16))


if __name__ == "__main__":
    main()
