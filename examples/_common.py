"""Framework-free pieces shared by ``train_flax.py`` and ``train_torch.py``.

Data (scikit-learn's bundled digits, a fixed split), the order of the training batches, the
command line, the training recipe (rates, optimiser settings) and the learning-curve plot live
here once, so that the two training scripts differ only in the framework code.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np

REGULARIZERS = ("none", "dropout", "spatial", "dropblock", "droppath", "cutout")

# Final drop rate of each regulariser: the DropBlock paper's keep_prob = 0.9 for the three
# feature-map ops (ramped up from 0 over training, the paper's scheduled DropBlock), a deepest-
# block rate of 0.2 for stochastic depth (Huang's linear rule over the blocks), and Cutout
# holes half the image side (DeVries & Taylor's 16 on 32x32 CIFAR-10).
DEFAULT_RATES = {
    "none": 0.0,
    "dropout": 0.1,
    "spatial": 0.1,
    "dropblock": 0.1,
    "droppath": 0.2,
    "cutout": 0.0,
}
RAMPED = ("dropout", "spatial", "dropblock")  # rates ramped up by the linear schedule
BLOCK_SIZE = 3  # DropBlock's block on both the 8x8 and the 4x4 maps
CUTOUT_SIZE = 4  # holes on the 8x8 input images

TITLES = {
    "none": "no regulariser",
    "dropout": "Dropout",
    "spatial": "SpatialDropout",
    "dropblock": f"DropBlock (block {BLOCK_SIZE}, linear ramp)",
    "droppath": "DropPath (StochasticDepth, depth_rates)",
    "cutout": f"Cutout ({CUTOUT_SIZE}x{CUTOUT_SIZE} on the input)",
}

TEST_SIZE = 500  # fixed held-out digits; the other 1297 are the training set
SPLIT_SEED = 0  # the split is the same for every --seed


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run: what both frameworks need to train the same way.

    Attributes:
      regularizer: one of :data:`REGULARIZERS`.
      rate: the final drop rate (see :data:`DEFAULT_RATES`); ignored by "none" and "cutout".
      steps: optimiser steps.
      seed: parameter initialisation, batch order and drop masks.
      train_size: how many of the 1297 training digits to use (stratified subset).
      batch_size: examples per step.
      learning_rate: AdamW's peak learning rate (cosine decay to 0 after a 5% warm-up).
      weight_decay: AdamW's decoupled weight decay.
      eval_every: steps between two test-set evaluations.
      depth_mode: StochasticDepth's mode for "droppath": "row" (one draw per example, the
        branch always runs) or "batch" (one draw per step, a dropped branch is skipped).
    """

    regularizer: str = "dropblock"
    rate: float = 0.1
    steps: int = 600
    seed: int = 0
    train_size: int | None = None
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    eval_every: int = 25
    depth_mode: str = "row"

    @property
    def title(self) -> str:
        """A plot title naming the regulariser and its rate."""
        name = TITLES[self.regularizer]
        if self.regularizer in ("none", "cutout"):
            return name
        if self.regularizer == "droppath" and self.depth_mode == "batch":
            name = name.replace("DropPath", "stochastic depth, skipping")
        return f"{name}, rate {self.rate:g}"

    @property
    def warmup_steps(self) -> int:
        """Linear learning-rate warm-up: 5% of the steps."""
        return max(1, self.steps // 20)


def learning_rate_at(config: Config, step: int) -> float:
    """The learning rate at ``step``: linear warm-up, then cosine decay to 0.

    The same formula as ``optax.warmup_cosine_decay_schedule(0, lr, warmup, steps)``; the torch
    script uses it through ``LambdaLR``.
    """
    peak, warmup = config.learning_rate, config.warmup_steps
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return peak * 0.5 * (1.0 + np.cos(np.pi * progress))


@dataclasses.dataclass
class Digits:
    """The digits split: images ``(N, 8, 8)`` float32, standardised; labels ``(N,)`` int32."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_digits(train_size: int | None = None) -> Digits:
    """scikit-learn's 1797 bundled 8x8 digits, split 1297 / 500 with a fixed stratified split.

    Pixels (0..16) are standardised with the training set's mean and standard deviation.

    Args:
      train_size: keep only this many training digits (a stratified subset, the same for every
        call); None keeps all 1297. The test set is always the same 500 digits.

    Returns:
      The split, as :class:`Digits`.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    data = sklearn_digits()
    images = data.images.astype(np.float32)
    labels = data.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
    )
    if train_size is not None and train_size < len(y_train):
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=train_size, random_state=SPLIT_SEED, stratify=y_train
        )
    mean, std = x_train.mean(), x_train.std()
    return Digits(
        (x_train - mean) / std, y_train, ((x_test - mean) / std).astype(np.float32), y_test
    )


def batch_indices(num_examples: int, batch_size: int, steps: int, seed: int) -> Iterator:
    """Indices of the training batches: reshuffled each epoch, full batches only.

    Both training scripts draw their batches from here, so for one seed they see the same
    examples in the same order.

    Args:
      num_examples: size of the training set.
      batch_size: examples per batch (capped at ``num_examples``).
      steps: how many batches to yield.
      seed: seeds the shuffling.

    Yields:
      ``steps`` int arrays of shape ``(batch_size,)``.
    """
    batch_size = min(batch_size, num_examples)
    rng = np.random.default_rng(seed)
    order, position = rng.permutation(num_examples), 0
    for _ in range(steps):
        if position + batch_size > num_examples:
            order, position = rng.permutation(num_examples), 0
        yield order[position : position + batch_size]
        position += batch_size


def parser(description: str) -> argparse.ArgumentParser:
    """The command line shared by the training scripts."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--regularizer", choices=REGULARIZERS, default="dropblock")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="final drop rate; default: 0.1 for dropout, spatial and dropblock, 0.2 (deepest "
        "block) for droppath",
    )
    p.add_argument("--steps", type=int, default=Config.steps, help="optimiser steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-size", type=int, default=None, help="use a subset of the 1297 training digits"
    )
    p.add_argument(
        "--depth-mode",
        choices=("row", "batch"),
        default="row",
        help="droppath: drop branches per example (row, DropPath) or per step, skipping the "
        "dropped ones (batch, Huang et al.; slow under JAX on CPU, see train_flax.py)",
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` that the parsed command line asks for."""
    rate = DEFAULT_RATES[args.regularizer] if args.rate is None else args.rate
    return Config(
        regularizer=args.regularizer,
        rate=rate,
        steps=args.steps,
        seed=args.seed,
        train_size=args.train_size,
        depth_mode=args.depth_mode,
    )


@dataclasses.dataclass
class History:
    """What a run records: loss and scheduled rate each step, test accuracy every few steps."""

    steps: list[int] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    rate: list[float] = dataclasses.field(default_factory=list)
    eval_steps: list[int] = dataclasses.field(default_factory=list)
    test_accuracy: list[float] = dataclasses.field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        """The test accuracy after the last step."""
        return self.test_accuracy[-1]


def plot_curves(history: History, title: str, path: pathlib.Path) -> pathlib.Path:
    """Writes a PNG with the training loss and the test accuracy against the step.

    Args:
      history: the run's record.
      title: the figure title (names the regulariser).
      path: where to write the PNG; its folder is created.

    Returns:
      ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    loss = np.asarray(history.loss)
    ax_loss.plot(history.steps, loss, color="0.75", lw=0.8, label="per step")
    window = max(1, len(loss) // 30)
    if len(loss) > window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(history.steps[window - 1 :], smooth, color="C0", label=f"mean of {window}")
    ax_loss.set(xlabel="step", ylabel="training loss (cross-entropy)", yscale="log")
    ax_loss.legend(frameon=False, loc="upper center")
    if any(history.rate):
        ax_rate = ax_loss.twinx()
        ax_rate.plot(history.steps, history.rate, color="C2", ls="--")
        ax_rate.set_ylabel("drop rate (linear ramp)", color="C2")
        ax_rate.set_ylim(0, 1.1 * max(history.rate))
        ax_rate.tick_params(axis="y", colors="C2")
    ax_acc.plot(history.eval_steps, history.test_accuracy, color="C1", marker=".")
    low = min(history.test_accuracy)
    ax_acc.set(xlabel="step", ylabel="test accuracy", ylim=(max(0.0, low - 0.02), 1.0))
    ax_acc.set_title(f"final {history.final_accuracy:.3f}", fontsize=10)
    ax_acc.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
