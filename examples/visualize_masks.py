"""What each regulariser drops: Dropout, SpatialDropout, DropBlock and Cutout side by side.

Applies every op at the same drop rate, with fixed keys, to two inputs:

- a photograph that ships with matplotlib (Grace Hopper, cropped and resized to 64x64 RGB),
- the feature map of a small conv layer (16 random 5x5 filters, stride 2, ReLU) on the same
  photograph in grey, 32x32x16, shown as a 4x4 mosaic of its channels.

DropBlock appears with one mask shared by all channels and with a mask per channel, for blocks
3, 5 and 7; its seed rate uses ``calibration="exact"``, so the expected dropped fraction is the
rate for every block size. Cutout has no rate: its square hole is sized to cover the rate's
area (before clipping at the border). Under each panel is the fraction of units that panel
really dropped. Units are shown as they are zeroed, before any rescaling::

    python examples/visualize_masks.py                 # writes outputs/masks.png
    python examples/visualize_masks.py --rate 0.3 --out /tmp/figs

Writes ``OUT/masks.png`` and prints the realised drop fractions as a table.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop

IMAGE_SIDE = 64
FEATURE_CHANNELS = 16
BLOCKS = (3, 5, 7)


def photograph() -> jax.Array:
    """Grace Hopper from matplotlib's sample data: ``(1, 64, 64, 3)`` floats in [0, 1]."""
    import matplotlib.cbook
    import matplotlib.image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = matplotlib.image.imread(path)  # (600, 512, 3) uint8
    side = min(image.shape[:2])
    square = jnp.asarray(image[:side, :side], jnp.float32) / 255.0  # the top: her face
    small = jax.image.resize(square, (IMAGE_SIDE, IMAGE_SIDE, 3), "linear", antialias=True)
    return jnp.clip(small, 0.0, 1.0)[None]


def feature_map(image: jax.Array) -> jax.Array:
    """A conv layer's output: 16 random zero-mean 5x5 filters, stride 2, ReLU.

    Args:
      image: ``(1, H, W, 3)`` in [0, 1].

    Returns:
      ``(1, H/2, W/2, 16)``, each channel scaled to [0, 1].
    """
    grey = image.mean(axis=-1, keepdims=True)
    filters = jax.random.normal(jax.random.key(1), (5, 5, 1, FEATURE_CHANNELS))
    filters = filters - filters.mean(axis=(0, 1), keepdims=True)
    y = jax.lax.conv_general_dilated(
        grey, filters, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = jax.nn.relu(y)
    return y / (y.max(axis=(1, 2), keepdims=True) + 1e-6)


def ops(rate: float, side: int) -> dict[str, Callable]:
    """The regularisers to compare, each as ``op(x, key) -> y`` without rescaling.

    Args:
      rate: the drop rate of every op.
      side: the map's side, to size Cutout's hole.

    Returns:
      Panel titles mapped to ops.
    """
    table: dict[str, Callable] = {
        "Dropout": lambda x, key: jaxdrop.drop_block(x, rate, 1, key=key, normalize="none"),
        "SpatialDropout": lambda x, key: jaxdrop.spatial_dropout(
            x, rate, key=key, scale_by_keep=False
        ),
    }
    for shared in (True, False):
        for block in BLOCKS:
            name = f"DropBlock {block}\n{'shared' if shared else 'per channel'}"
            table[name] = lambda x, key, block=block, shared=shared: jaxdrop.drop_block(
                x,
                rate,
                block,
                key=key,
                share_channels=shared,
                calibration="exact",
                normalize="none",
            )
    table["Cutout"] = lambda x, key: jaxdrop.cutout(x, cutout_size(rate, side), key=key)
    return table


def cutout_size(rate: float, side: int) -> int:
    """The side of a square hole covering ``rate`` of a ``side x side`` map."""
    return max(1, round(math.sqrt(rate) * side))


DROPPED_COLOUR = (0.9, 0.15, 0.1)  # dropped feature-map units are painted red


def mosaic(x: np.ndarray, columns: int = 4, gap: int = 1, fill=1) -> np.ndarray:
    """Tiles the channels of an ``(H, W, C)`` map into one ``(H', W')`` image.

    Args:
      x: the map.
      columns: tiles per row.
      gap: pixels between tiles.
      fill: the value between tiles.

    Returns:
      The mosaic, in ``x``'s dtype.
    """
    h, w, c = x.shape
    rows = math.ceil(c / columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), fill, x.dtype)
    for i in range(c):
        r, q = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = x[..., i]
    return out


def show_photograph(y: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The photograph as the op leaves it: dropped pixels (per colour channel) are black."""
    del kept
    return np.clip(y[0], 0.0, 1.0)


def show_features(y: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The feature map as a mosaic of its channels, dropped units in red.

    A conv layer's ReLU output is mostly zero already, so a dropped unit is painted rather
    than shown black.
    """
    grey = mosaic(y[0])
    dropped = mosaic(~kept[0], fill=False)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[dropped] = DROPPED_COLOUR
    return rgb


def apply(op: Callable, x: jax.Array, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Applies ``op``; returns its output and where it kept units.

    The mask is read off the same op applied with the same key to ones (a unit of the input
    may be zero already).
    """
    kept = op(jnp.ones_like(x), key) != 0
    return np.asarray(op(x, key)), np.asarray(kept)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Draws the figure and prints the table; returns the dropped fractions per input and op."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.2, help="drop rate of every op")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = photograph()
    features = feature_map(image)
    side = features.shape[1]
    inputs = {
        f"photograph {IMAGE_SIDE}x{IMAGE_SIDE}x3": (image, show_photograph),
        f"conv features {side}x{side}x{FEATURE_CHANNELS}": (features, show_features),
    }
    columns = 1 + len(ops(args.rate, IMAGE_SIDE))
    fig, axes = plt.subplots(
        len(inputs),
        columns,
        figsize=(1.6 * columns, 2.3 * len(inputs)),
        squeeze=False,
        constrained_layout=True,
    )
    fractions: dict[str, dict[str, float]] = {}
    for row, (label, (x, show)) in enumerate(inputs.items()):
        key = jax.random.key(row)
        x_host = np.asarray(x)
        panels = {label: (x_host, np.ones(x.shape, bool), None)}
        for name, op in ops(args.rate, x.shape[1]).items():
            y, kept = apply(op, x, key)
            panels[name] = (y, kept, 1.0 - float(kept.mean()))
        fractions[label] = {}
        for ax, (name, (y, kept, fraction)) in zip(axes[row], panels.items()):
            ax.imshow(show(y, kept), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = name
            if name == "Cutout":
                hole = cutout_size(args.rate, x.shape[1])
                title = f"Cutout {hole}x{hole}"
            ax.set_title(title, fontsize=8)
            if fraction is not None:
                ax.set_xlabel(f"dropped {fraction:.3f}", fontsize=8)
                fractions[label][name.replace("\n", " ")] = fraction
    fig.suptitle(
        f"What each op drops at rate {args.rate:g}, one draw each (top: zeroed pixels; "
        "bottom: 16 channels, dropped units in red). DropBlock: exact calibration.",
        fontsize=10,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "masks.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)

    print(f"Realised drop fraction at rate {args.rate:g}, one draw each\n")
    print("| op | " + " | ".join(fractions) + " |")
    print("|---|" + "---:|" * len(fractions))
    for name in next(iter(fractions.values())):
        cells = " | ".join(f"{fractions[label][name]:.3f}" for label in fractions)
        print(f"| {name} | {cells} |")
    print(f"\nwrote {path}")
    return fractions


if __name__ == "__main__":
    main(sys.argv[1:])
