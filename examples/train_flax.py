"""Train a small ResNet on scikit-learn's digits with jaxdrop regularisation (Flax Linen, optax).

The Quickstart demo: real data (the 1797 8x8 digits bundled with scikit-learn, no download,
a fixed 1297 / 500 train / test split), a jitted training step, and one regulariser::

    python examples/train_flax.py                         # DropBlock, 600 steps, ~1 min on CPU
    python examples/train_flax.py --regularizer droppath  # StochasticDepth per example
    python examples/train_flax.py --regularizer droppath --depth-mode batch  # skips branches
    python examples/train_flax.py --regularizer none --steps 300 --seed 1 --out /tmp/runs

``--regularizer`` is one of ``none``, ``dropout``, ``spatial``, ``dropblock`` (default),
``droppath`` and ``cutout``. The network works on the digits at their own 8x8 resolution: a
3x3 stem, two residual blocks at 8x8 (16 channels), two at 4x4 (32 channels), global average
pooling and a dense layer. The feature-map regularisers act on the output of every residual
block:

- ``dropblock``: :class:`jaxdrop.linen.DropBlock`, block 3 on the 8x8 and the 4x4 maps (as the
  paper used block 7 on both 14x14 and 7x7 maps), its rate ramped from 0 to 0.1 over training
  by :func:`jaxdrop.schedules.linear_ramp`. The ramp is evaluated inside the jitted step from
  the traced step number and passed as the call-time ``rate``: one compilation for the run.
- ``dropout``: the same module with ``block_size=1`` and ``normalize="expected"``, which is
  exactly inverted Dropout (each unit kept with probability ``1 - rate``, scaled by
  ``1 / (1 - rate)``); same ramp.
- ``spatial``: :class:`jaxdrop.linen.SpatialDropout` (whole channels); same ramp.
- ``droppath``: every residual branch wrapped in :class:`jaxdrop.linen.StochasticDepth`, with
  per-block rates from :func:`jaxdrop.schedules.depth_rates` (Huang et al.'s linear rule,
  deepest block 0.2). ``--depth-mode row`` (default) drops per example (DropPath: the branch
  always runs, its output is masked); ``--depth-mode batch`` drops the branch for the whole
  batch and then does not compute it (``nn.cond``), Huang et al.'s speed-up. On CPU the
  skipping is a slow-down instead: XLA:CPU runs convolutions inside a conditional, and above
  all their filter gradients, far slower than at top level (jax issue #12868), about 0.8 s
  per step here against 0.02 s. Use it on GPU or TPU, or with dense branches.
- ``cutout``: :class:`jaxdrop.linen.Cutout`, one 4x4 hole per input image.

Prints a progress bar (training loss, batch accuracy, last test accuracy) and the final test
accuracy, and writes ``OUT/flax_<regularizer>.png``: the training loss and the test accuracy
against the step, titled with the regulariser. ``OUT`` is ``--out`` (default ``outputs/``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from jaxdrop import linen as jl

WIDTHS = (16, 32)  # channels of the two stages (8x8 and 4x4 maps)
BLOCKS = (2, 2)  # residual blocks per stage


class Branch(nn.Module):
    """The residual branch of a basic ResNet block: conv-BN-ReLU-conv-BN.

    Attributes:
      features: output channels.
      strides: the first conv's stride (2 where a stage halves the map).
    """

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = self.strides
        y = nn.Conv(self.features, (3, 3), strides=(s, s), use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)


class ResNet(nn.Module):
    """A small ResNet for 8x8 images with one of the regularisers of :mod:`_common`.

    Attributes:
      regularizer: one of ``_common.REGULARIZERS``.
      rate: the final drop rate (the deepest block's for "droppath").
      depth_mode: StochasticDepth's mode for "droppath", "row" or "batch".
      num_classes: outputs of the dense head.
    """

    regularizer: str = "dropblock"
    rate: float = 0.1
    depth_mode: str = "row"
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, rate: jax.Array | None = None) -> jax.Array:
        """Logits for images ``x`` of shape ``(N, 8, 8, 1)``.

        Args:
          x: the images, channels-last.
          train: training mode (drops, batch statistics) or evaluation (identity, running
            averages).
          rate: this step's drop rate for the feature-map regularisers (may be traced);
            defaults to the ``rate`` field.

        Returns:
          Logits of shape ``(N, num_classes)``.
        """
        det = not train
        if self.regularizer == "cutout":
            x = jl.Cutout(_common.CUTOUT_SIZE)(x, deterministic=det)
        h = nn.Conv(WIDTHS[0], (3, 3), use_bias=False, name="stem")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_bn")(h))
        depth = jaxdrop.schedules.depth_rates(self.rate, sum(BLOCKS))
        block = 0
        for stage, (width, count) in enumerate(zip(WIDTHS, BLOCKS)):
            for i in range(count):
                strides = 2 if stage > 0 and i == 0 else 1
                branch = Branch(width, strides, name=f"block{block}")
                shortcut = h
                if strides != 1 or h.shape[-1] != width:
                    shortcut = nn.Conv(
                        width, (1, 1), (strides, strides), use_bias=False, name=f"proj{block}"
                    )(h)
                    shortcut = nn.BatchNorm(
                        use_running_average=not train, momentum=0.9, name=f"proj{block}_bn"
                    )(shortcut)
                if self.regularizer == "droppath":
                    depth_drop = jl.StochasticDepth(branch, depth[block], mode=self.depth_mode)
                    out = depth_drop(h, train, deterministic=det)
                else:
                    out = branch(h, train)
                h = nn.relu(shortcut + out)
                h = self.feature_drop(h, det, rate)
                block += 1
        h = h.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(h)

    def feature_drop(self, h: jax.Array, deterministic: bool, rate) -> jax.Array:
        """The feature-map regulariser after a residual block (the identity for the others)."""
        if self.regularizer == "dropblock":
            layer = jl.DropBlock(self.rate, _common.BLOCK_SIZE)
        elif self.regularizer == "dropout":
            layer = jl.DropBlock(self.rate, 1, normalize="expected")  # == inverted Dropout
        elif self.regularizer == "spatial":
            layer = jl.SpatialDropout(self.rate)
        else:
            return h
        return layer(h, deterministic=deterministic, rate=rate)


@functools.cache
def _jitted_init() -> Callable:
    # The regularisers add no parameters or statistics, so one initialiser serves every
    # configuration and is compiled once per process.
    return jax.jit(lambda key, images: ResNet("none").init(key, images, train=False))


def init_variables(seed: int) -> tuple[dict, dict]:
    """The initial ``params`` and ``batch_stats`` of the ResNet (any regulariser).

    Args:
      seed: seeds the parameter initialisation.

    Returns:
      ``(params, batch_stats)``.
    """
    # An rbg key for the initialisers: XLA on CPU compiles threefry's normal draws slowly
    # (about 10 s more for this network). The dropout masks use the default threefry keys.
    key = jax.random.key(seed, impl="rbg")
    variables = _jitted_init()(key, jnp.zeros((1, 8, 8, 1), jnp.float32))
    return variables["params"], variables["batch_stats"]


@dataclasses.dataclass(frozen=True)
class Functions:
    """The optimiser and the jitted functions of one configuration."""

    optimizer: optax.GradientTransformation
    step: Callable
    predict: Callable


@functools.cache
def compile_functions(config: _common.Config) -> Functions:
    """Builds the optimiser, the jitted training step and the jitted prediction for ``config``.

    Cached. :func:`train` passes ``config`` with ``seed``, ``train_size`` and ``eval_every``
    reset (they are data, not code), so that runs differing only in them share one compilation
    (``compare_regularizers.py`` relies on it).

    Args:
      config: the run's configuration.

    Returns:
      The functions.
    """
    model = ResNet(config.regularizer, config.rate, config.depth_mode)
    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, config.steps
    )
    optimizer = optax.adamw(learning_rate, weight_decay=config.weight_decay)
    # The DropBlock paper's scheduled rate: 0 at the first step, `rate` at the last.
    ramp = jaxdrop.schedules.linear_ramp(config.rate, total_steps=max(1, config.steps - 1))

    @jax.jit
    def step(state, images, labels, step, key):
        params, batch_stats, opt_state = state
        rate = ramp(step)  # traced: a new value each step, no recompilation

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                rate=rate,
                rngs={"dropout": jax.random.fold_in(key, step)},
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (updates["batch_stats"], logits)

        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        accuracy = (logits.argmax(-1) == labels).mean()
        return (params, batch_stats, opt_state), loss, accuracy, rate

    @jax.jit
    def predict(state, images):
        params, batch_stats, _ = state
        logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
        return logits.argmax(-1)

    return Functions(optimizer, step, predict)


def _code_key(config: _common.Config) -> _common.Config:
    """``config`` with the fields that do not change the compiled code set to defaults."""
    return dataclasses.replace(config, seed=0, train_size=None, eval_every=0)


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
    fns = compile_functions(_code_key(config))
    train_x = jnp.asarray(data.train_images[..., None])  # (N, 8, 8, 1): channels-last
    train_y = jnp.asarray(data.train_labels)
    test_x = jnp.asarray(data.test_images[..., None])
    test_y = np.asarray(data.test_labels)

    params, batch_stats = init_variables(config.seed)
    state = (params, batch_stats, fns.optimizer.init(params))
    dropout_key = jax.random.key(config.seed)
    history = _common.History()

    def evaluate(step: int) -> None:
        accuracy = float((np.asarray(fns.predict(state, test_x)) == test_y).mean())
        history.eval_steps.append(step)
        history.test_accuracy.append(accuracy)

    batches = _common.batch_indices(len(train_y), config.batch_size, config.steps, config.seed)
    bar = tqdm(batches, total=config.steps, disable=not progress, desc=config.regularizer)
    for step, index in enumerate(bar):
        state, loss, accuracy, rate = fns.step(
            state, train_x[index], train_y[index], jnp.int32(step), dropout_key
        )
        history.steps.append(step)
        history.loss.append(float(loss))
        if config.regularizer in _common.RAMPED:
            history.rate.append(float(rate))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            evaluate(step + 1)
        bar.set_postfix(
            loss=f"{history.loss[-1]:.3f}",
            acc=f"{float(accuracy):.3f}",
            test=f"{history.test_accuracy[-1]:.3f}" if history.test_accuracy else "-",
        )
    bar.close()
    return history


def main(argv: Sequence[str] | None = None) -> _common.History:
    """Parses the command line, trains, prints the final test accuracy and writes the plot."""
    args = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    config = _common.config_from_args(args)
    start = time.perf_counter()
    history = train(config, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    title = f"Flax ResNet on digits: {config.title}"
    path = _common.plot_curves(history, title, args.out / f"flax_{config.regularizer}.png")
    print(
        f"final test accuracy: {history.final_accuracy:.4f} "
        f"({config.regularizer}, {config.steps} steps, seed {config.seed}, {seconds:.0f} s)"
    )
    print(f"wrote {path}")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
