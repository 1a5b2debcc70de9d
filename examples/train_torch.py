"""Train the same small ResNet on scikit-learn's digits with torchdrop (PyTorch).

The twin of ``train_flax.py``: the same data and split, batches, network, regularisers, rates,
schedule, optimiser and outputs, written with ``torch.nn`` and ``torchdrop`` in PyTorch's
channels-first layout, so that the two scripts can be read side by side::

    python examples/train_torch.py                         # DropBlock, 600 steps
    python examples/train_torch.py --regularizer droppath  # StochasticDepth per example
    python examples/train_torch.py --regularizer droppath --depth-mode batch  # skips branches
    python examples/train_torch.py --regularizer none --steps 300 --seed 1 --out /tmp/runs

The regularisers (see ``train_flax.py`` for the details, which are the same):

- ``dropblock``: :class:`torchdrop.DropBlock`, block 3 after every residual block, its ``rate``
  set each step from :func:`torchdrop.schedules.linear_ramp` (0 to 0.1 over training).
- ``dropout``: the same module with ``block_size=1`` and ``normalize="expected"`` (exactly
  inverted Dropout); ``spatial``: :class:`torchdrop.SpatialDropout`; same ramp.
- ``droppath``: each residual branch wrapped in :class:`torchdrop.StochasticDepth` with rates
  from :func:`torchdrop.schedules.depth_rates`, per example (``--depth-mode row``, default) or
  per step (``--depth-mode batch``: a dropped branch is not called, a Python ``if``).
- ``cutout``: :class:`torchdrop.Cutout`, one 4x4 hole per input image.

Parameters are initialised as Flax initialises them (truncated LeCun normal kernels, zero
biases), and BatchNorm uses Flax's momentum, so the two scripts differ in their random draws
and their floating-point arithmetic, not in their recipe. Masks are drawn from a
``torch.Generator`` seeded with ``--seed``.

Prints a progress bar and the final test accuracy, and writes ``OUT/torch_<regularizer>.png``
(training loss and test accuracy against the step). ``OUT`` is ``--out`` (default
``outputs/``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

import _common
import torch
from torch import nn

import torchdrop

WIDTHS = (16, 32)  # channels of the two stages (8x8 and 4x4 maps)
BLOCKS = (2, 2)  # residual blocks per stage
BN_MOMENTUM = 0.1  # torch's convention: Flax's momentum=0.9


def branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """The residual branch of a basic ResNet block: conv-BN-ReLU-conv-BN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
    )


def feature_drop(regularizer: str, rate: float, generator: torch.Generator) -> nn.Module:
    """The feature-map regulariser after a residual block (the identity for the others)."""
    if regularizer == "dropblock":
        return torchdrop.DropBlock(rate, _common.BLOCK_SIZE, generator=generator)
    if regularizer == "dropout":  # == inverted Dropout
        return torchdrop.DropBlock(rate, 1, normalize="expected", generator=generator)
    if regularizer == "spatial":
        return torchdrop.SpatialDropout(rate, generator=generator)
    return nn.Identity()


class Block(nn.Module):
    """A basic residual block followed by the feature-map regulariser.

    Args:
      in_channels: input channels.
      out_channels: output channels.
      stride: 2 where a stage halves the map.
      regularizer: one of ``_common.REGULARIZERS``.
      rate: the regulariser's final rate.
      depth_rate: this block's stochastic-depth rate (used by "droppath").
      depth_mode: StochasticDepth's mode, "row" or "batch".
      generator: the source of the masks.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        stride,
        regularizer,
        rate,
        depth_rate,
        depth_mode,
        generator,
    ):
        super().__init__()
        self.branch = branch(in_channels, out_channels, stride)
        if regularizer == "droppath":
            self.branch = torchdrop.StochasticDepth(
                self.branch, depth_rate, mode=depth_mode, generator=generator
            )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            )
        self.drop = feature_drop(regularizer, rate, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.shortcut(x) + self.branch(x)))


class ResNet(nn.Module):
    """A small ResNet for 8x8 images, ``(N, 1, 8, 8)`` in, logits out.

    Args:
      regularizer: one of ``_common.REGULARIZERS``.
      rate: the final drop rate (the deepest block's for "droppath").
      generator: the source of every mask.
      depth_mode: StochasticDepth's mode for "droppath", "row" or "batch".
      num_classes: outputs of the linear head.
    """

    def __init__(
        self,
        regularizer: str,
        rate: float,
        generator: torch.Generator,
        depth_mode: str = "row",
        num_classes: int = 10,
    ):
        super().__init__()
        self.cutout = nn.Identity()
        if regularizer == "cutout":
            self.cutout = torchdrop.Cutout(_common.CUTOUT_SIZE, generator=generator)
        self.stem = nn.Sequential(
            nn.Conv2d(1, WIDTHS[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(WIDTHS[0], momentum=BN_MOMENTUM),
            nn.ReLU(),
        )
        depth = torchdrop.schedules.depth_rates(rate, sum(BLOCKS))
        blocks, channels = [], WIDTHS[0]
        for stage, (width, count) in enumerate(zip(WIDTHS, BLOCKS)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                depth_rate = depth[len(blocks)]
                blocks.append(
                    Block(
                        channels,
                        width,
                        stride,
                        regularizer,
                        rate,
                        depth_rate,
                        depth_mode,
                        generator,
                    )
                )
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)
        init_like_flax(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(self.cutout(x)))
        return self.head(h.mean(dim=(2, 3)))

    def set_rate(self, rate: torch.Tensor) -> None:
        """Sets this step's rate on the feature-map regularisers (the schedule's value)."""
        for module in self.modules():
            if isinstance(module, torchdrop.DropBlock | torchdrop.SpatialDropout):
                module.rate = rate


def init_like_flax(model: nn.Module) -> None:
    """Flax's default initialisation: LeCun normal truncated at 2 std, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # truncation keeps variance
            nn.init.trunc_normal_(module.weight, 0.0, std, -2.0 * std, 2.0 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def train(
    config: _common.Config, data: _common.Digits | None = None, progress: bool = True
) -> _common.History:
    """Trains the ResNet as ``config`` says and evaluates it on the test set as it goes.

    Args:
      config: what to train.
      data: the digits split; loaded (``config.train_size``) if None.
      progress: show a tqdm progress bar.

    Returns:
      The training loss per step and the test accuracy every ``config.eval_every`` steps and
      after the last.
    """
    from tqdm import tqdm

    data = _common.load_digits(config.train_size) if data is None else data
    train_x = torch.from_numpy(data.train_images[:, None])  # (N, 1, 8, 8): channels-first
    train_y = torch.from_numpy(data.train_labels).long()
    test_x = torch.from_numpy(data.test_images[:, None])
    test_y = torch.from_numpy(data.test_labels).long()

    torch.manual_seed(config.seed)  # parameter initialisation
    generator = torch.Generator().manual_seed(config.seed)  # masks
    model = ResNet(config.regularizer, config.rate, generator, config.depth_mode)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _common.learning_rate_at(config, step) / config.learning_rate
    )
    # The DropBlock paper's scheduled rate: 0 at the first step, `rate` at the last.
    ramp = torchdrop.schedules.linear_ramp(config.rate, total_steps=max(1, config.steps - 1))
    history = _common.History()

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(-1) == test_y).float().mean().item()
        model.train()
        history.eval_steps.append(step)
        history.test_accuracy.append(accuracy)

    batches = _common.batch_indices(len(train_y), config.batch_size, config.steps, config.seed)
    bar = tqdm(batches, total=config.steps, disable=not progress, desc=config.regularizer)
    model.train()
    for step, index in enumerate(bar):
        index = torch.from_numpy(index)
        images, labels = train_x[index], train_y[index]
        rate = ramp(step)
        model.set_rate(rate)
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.steps.append(step)
        history.loss.append(loss.item())
        if config.regularizer in _common.RAMPED:
            history.rate.append(rate.item())
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            evaluate(step + 1)
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        bar.set_postfix(
            loss=f"{history.loss[-1]:.3f}",
            acc=f"{accuracy:.3f}",
            test=f"{history.test_accuracy[-1]:.3f}" if history.test_accuracy else "-",
        )
    bar.close()
    return history


def main(argv: Sequence[str] | None = None) -> _common.History:
    """Parses the command line, trains, prints the final test accuracy and writes the plot."""
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads: this network is so small that more threads mostly wait "
        "on each other (15x slower with 2 threads on a busy 2-core machine)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = _common.config_from_args(args)
    start = time.perf_counter()
    history = train(config, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    title = f"PyTorch ResNet on digits: {config.title}"
    path = _common.plot_curves(history, title, args.out / f"torch_{config.regularizer}.png")
    print(
        f"final test accuracy: {history.final_accuracy:.4f} "
        f"({config.regularizer}, {config.steps} steps, seed {config.seed}, {seconds:.0f} s)"
    )
    print(f"wrote {path}")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
