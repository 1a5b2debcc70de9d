"""How much faster is stochastic depth when dropped branches are skipped rather than masked?

Huang et al. (ECCV 2016) report about 25% faster training, because a residual branch dropped
for the mini-batch is not computed. ``mode="batch"`` skips it (``lax.cond`` / ``nn.cond``);
``mode="row"`` (DropPath semantics) computes every branch and masks examples. Both are timed on
the same model with the same rates, as a jitted gradient step:

1. A Flax Linen residual MLP of ``jaxdrop.linen.StochasticDepth`` blocks, full train step
   (forward, backward, optax update): (a) every other branch dropped, through traced call-time
   rates of 1 and 0; (b) rates ``depth_rates(0.5, 8)`` with a fresh dropout key per step.
2. The functional ``jaxdrop.stochastic_depth`` on an 8-block residual MLP (batch 512, width 256,
   three matmuls per branch): (a) half of the branches dropped by a fixed ``keep`` pattern,
   where skipping must be at least 1.8x faster than masking (2x ideal); (b) rates rising
   linearly to 0.5 with random keys, against the expected saving: the mean drop rate is the
   expected fraction of branch compute skipped (28% for ``depth_rates(0.5, 8)``).
3. The same half-dropped comparison with 3x3 convolution branches (batch 32, 16x16x32): on
   XLA:CPU a convolution's weight gradient inside a conditional misses the fast path it gets
   at top level (jax#12868), so skipping loses there; accelerators need their own measurement.

Each timing is the median over runs interleaved A, B, A, B, ... after warm-up (the shared
``benchmarks/_harness.py``), so that drifts in machine load hit both sides alike; a run is a
fixed sequence of steps (with random keys, the same keys for A and B).

Memory allocator: before importing jax the script re-executes itself with
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184
MALLOC_TOP_PAD_=1073741824`` unless they are already set (``_harness.quiet_allocator``).
Otherwise glibc returns the large step buffers to the OS after each step and page-faults them
back in on the next, which makes CPU timings bimodal.

Usage::

    python benchmarks/stochastic_depth.py          # about 3 minutes on 2 CPU cores
    python benchmarks/stochastic_depth.py --quick  # about a minute
"""

from __future__ import annotations

import os
import sys

from _harness import interleaved, machine_line, markdown_table, quiet_allocator

if __name__ == "__main__":
    quiet_allocator()  # glibc reads its settings at start-up: before jax is imported.


import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from jaxdrop import linen as jl

BLOCKS, BATCH, WIDTH = 8, 512, 256
HALF_DROPPED = np.arange(BLOCKS) % 2 == 1  # blocks 1, 3, 5, 7 are dropped


def _mlp_branch(weights):
    """Three matmuls with ReLUs between: ``x -> relu(x W1) -> relu(. W2) -> . W3``."""

    def branch(h):
        for w in weights[:-1]:
            h = jax.nn.relu(h @ w)
        return h @ weights[-1]

    return branch


def _normal(seed: int, shape) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def functional_params(seed: int) -> list[list[jax.Array]]:
    """Three ``(WIDTH, WIDTH)`` weights per block, scaled by ``1 / sqrt(WIDTH)``."""
    scale = 1.0 / np.sqrt(WIDTH)
    return [
        [scale * _normal(seed + 3 * b + i, (WIDTH, WIDTH)) for i in range(3)] for b in range(BLOCKS)
    ]


def functional_forward(params, x, rates, *, mode, keep=None, key=None):
    """The residual MLP; ``keep`` (one bool per block) or ``key`` decides the draws."""
    h = x
    for block, weights in enumerate(params):
        if keep is not None:
            block_keep = keep[block] if mode == "batch" else jnp.broadcast_to(keep[block], (BATCH,))
            sources = {"keep": block_keep}
        else:
            sources = {"key": jax.random.fold_in(key, block)}
        branch = _mlp_branch(weights)
        h = h + jaxdrop.stochastic_depth(branch, h, rates[block], mode=mode, **sources)
    return h


def functional_step(mode: str, use_keep: bool):
    """A jitted SGD step on ``mean(forward(x)**2)``: value, gradient and update."""

    def loss(params, x, rates, draw):
        sources = {"keep": draw} if use_keep else {"key": draw}
        out = functional_forward(params, x, rates, mode=mode, **sources)
        return jnp.mean(out**2)

    @jax.jit
    def step(params, x, rates, draw):
        value, grads = jax.value_and_grad(loss)(params, x, rates, draw)
        return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), value

    return step


class MLPBranch(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.relu(nn.Dense(self.width, use_bias=False)(x))
        return nn.Dense(self.width, use_bias=False)(x)


class ResidualMLP(nn.Module):
    """``BLOCKS`` residual blocks ``h + StochasticDepth(MLPBranch)(h)``."""

    mode: str

    @nn.compact
    def __call__(self, x, rates):
        for block in range(BLOCKS):
            depth = jl.StochasticDepth(MLPBranch(WIDTH), 0.0, mode=self.mode, deterministic=False)
            x = x + depth(x, rate=rates[block])
        return x


def linen_step(mode: str, optimizer):
    """A jitted optax train step of :class:`ResidualMLP`; ``rates`` are traced."""
    model = ResidualMLP(mode)

    def loss(params, x, rates, key):
        out = model.apply({"params": params}, x, rates, rngs={"dropout": key})
        return jnp.mean(out**2)

    @jax.jit
    def step(params, opt_state, x, rates, key):
        value, grads = jax.value_and_grad(loss)(params, x, rates, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return model, step


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to time: ``repeats`` interleaved runs after ``warmup`` rounds. A run is
    ``fixed_steps`` steps for a fixed drop pattern, or ``random_steps`` steps with one key each
    (the same keys in every run and in both modes)."""

    repeats: int
    warmup: int
    fixed_steps: int
    random_steps: int


QUICK = Plan(repeats=9, warmup=1, fixed_steps=2, random_steps=6)
FULL = Plan(repeats=25, warmup=2, fixed_steps=2, random_steps=12)


def _runner(step, args_per_step):
    """A run: ``step`` once per argument tuple; returns the last result (the harness waits)."""

    def run():
        for args in args_per_step[:-1]:
            jax.block_until_ready(step(*args))
        return step(*args_per_step[-1])

    return run


def batch_skip_fraction(keys, rates) -> float:
    """The fraction of (step, block) branches that batch mode skips for these keys.

    Redraws the survival decisions exactly as :func:`jaxdrop.stochastic_depth` makes them.
    """
    dropped = [
        not bool(jaxdrop.random.bernoulli(jax.random.fold_in(key, b), 1.0 - rates[b], ()))
        for key in keys
        for b in range(BLOCKS)
    ]
    return float(np.mean(dropped))


def compare(name: str, runs: dict, plan: Plan, steps: int, note: str = "") -> list:
    """A table row: median milliseconds per step of ``runs["batch"]`` and ``runs["row"]``."""
    median = interleaved(runs, repeats=plan.repeats, warmup=plan.warmup)
    batch, row = median["batch"] / steps, median["row"] / steps
    return [name, batch, row, f"{row / batch:.2f}x", note]


def expected_note(rates, keys=None) -> str:
    """The expected fraction of branch compute skipped (mean rate) and the ideal speed-up."""
    expected = float(np.mean(rates))
    note = f"skips {expected:.0%} expected, ideal {1 / (1 - expected):.2f}x"
    if keys is not None:
        drawn = batch_skip_fraction(keys, np.asarray(rates))
        note += f"; these keys skip {drawn:.0%}, ideal {1 / (1 - drawn):.2f}x"
    return note


def linen_rows(plan: Plan, depth_rates) -> list[list]:
    x = _normal(0, (BATCH, WIDTH))
    optimizer = optax.sgd(1e-3)
    half = jnp.where(jnp.asarray(HALF_DROPPED), 1.0, 0.0)
    keys = [jax.random.key(100 + s) for s in range(plan.random_steps)]
    cases = (
        ("half dropped (rates 1, 0)", half, keys[: plan.fixed_steps], "target >= 1.8x"),
        ("depth_rates(0.5, 8)", depth_rates, keys, expected_note(depth_rates)),
    )
    rows = []
    for label, rates, case_keys, note in cases:
        runs = {}
        for mode in ("batch", "row"):
            model, step = linen_step(mode, optimizer)
            rngs = {"params": jax.random.key(1), "dropout": keys[0]}
            params = model.init(rngs, x, rates)["params"]
            opt_state = optimizer.init(params)
            runs[mode] = _runner(step, [(params, opt_state, x, rates, k) for k in case_keys])
        rows.append(compare(f"Linen train step, {label}", runs, plan, len(case_keys), note))
    return rows


def functional_rows(plan: Plan, depth_rates) -> list[list]:
    params = functional_params(1)
    x = _normal(0, (BATCH, WIDTH))
    keep = jnp.asarray(~HALF_DROPPED)
    half_rates = jnp.full((BLOCKS,), 0.5)
    keys = [jax.random.key(200 + s) for s in range(plan.random_steps)]
    fixed = [(params, x, half_rates, keep)] * plan.fixed_steps
    randomised = [(params, x, depth_rates, k) for k in keys]
    modes = ("batch", "row")

    def runs(data, **options):
        return {mode: _runner(functional_step(mode, **options), data) for mode in modes}

    return [
        compare(
            "functional grad step, keep: half dropped",
            runs(fixed, use_keep=True),
            plan,
            plan.fixed_steps,
            "target >= 1.8x (2x ideal)",
        ),
        compare(
            "functional grad step, depth_rates(0.5, 8)",
            runs(randomised, use_keep=False),
            plan,
            plan.random_steps,
            expected_note(depth_rates, keys),
        ),
    ]


def conv_rows(plan: Plan) -> list[list]:
    """The same half-dropped comparison with 3x3 convolution branches, where XLA:CPU runs a
    convolution's weight gradient inside a conditional without its fast path (jax#12868)."""
    x = _normal(0, (32, 16, 16, 32))
    kernels = [_normal(10 + b, (3, 3, 32, 32)) * 0.05 for b in range(4)]
    keep = jnp.asarray([True, False, True, False])

    def conv(h, kernel):
        return jax.lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def step(mode):
        def loss(kernels, x, keep):
            h = x
            for b, kernel in enumerate(kernels):
                branch = lambda t, kernel=kernel: jax.nn.relu(conv(t, kernel))
                keep_b = keep[b] if mode == "batch" else jnp.broadcast_to(keep[b], (x.shape[0],))
                h = h + jaxdrop.stochastic_depth(branch, h, 0.5, keep=keep_b, mode=mode)
            return jnp.sum(h**2)

        return jax.jit(jax.grad(loss))

    data = [(kernels, x, keep)] * plan.fixed_steps
    runs = {mode: _runner(step(mode), data) for mode in ("batch", "row")}
    note = "XLA:CPU: conv gradients inside cond lose their fast path"
    return [compare("conv grad step, keep: half dropped", runs, plan, plan.fixed_steps, note)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (about a minute)")
    plan = QUICK if parser.parse_args().quick else FULL
    depth_rates = jnp.asarray(jaxdrop.schedules.depth_rates(0.5, BLOCKS), jnp.float32)
    print(f"machine: {machine_line()}, load average {os.getloadavg()[0]:.1f}")
    print(
        f"residual MLP: {BLOCKS} blocks, batch {BATCH}, width {WIDTH}, 3 matmuls per branch; "
        f"median of {plan.repeats} interleaved runs after {plan.warmup} warm-up\n"
    )
    functional = functional_rows(plan, depth_rates)
    header = ["step", "batch mode (skip) ms", "row mode (mask) ms", "speed-up", "note"]
    rows = linen_rows(plan, depth_rates) + functional + conv_rows(plan)
    print(markdown_table(header, rows))
    fixed = functional[0][2] / functional[0][1]
    verdict = "meets" if fixed >= 1.8 else "MISSES"
    print(f"\nskipping half of the branches is {fixed:.2f}x faster than masking: {verdict} 1.8x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
