"""Speed of jaxdrop and torchdrop against the peers and against a plain copy.

One table: median milliseconds of interleaved runs, forward and forward+backward, for
DropBlock per-channel (valid seeding, batch normalisation: torchvision's semantics) and
shared (full seeding, one mask per example: timm's) with blocks 7 and 3 on the ResNet stage
shapes at N=32, and DropPath on ViT tokens (64x197x768), at rate 0.1. Columns: jaxdrop
(jitted), torchdrop (drawing from torch's generator), torchdrop (key=) (drawing jaxdrop's
numbers for the same JAX key with torchdrop.random's threefry), torchvision, timm,
``flax.linen.Dropout`` at the same rate, and a plain ``x * c`` in each framework (the
memory-copy limit). The ratio columns divide by the peer of the same semantics (torchvision for
per-channel DropBlock and DropPath, timm for shared); "key/gen" is the price of drawing JAX's
numbers in torch.

    python benchmarks/speed.py            # every case
    python benchmarks/speed.py --quick    # the headline cases, fewer repeats (CI)

torchvision and timm are loaded from the files ``python -m tools.peers`` fetches; without
them their columns read n/a.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

from _harness import interleaved, machine_line, markdown_table, quiet_allocator

RATE = 0.1


class Case(NamedTuple):
    op: str  # "per-channel", "shared" or "drop_path"
    shape: tuple[int, ...]  # channels-last
    block: int = 0

    @property
    def label(self) -> str:
        size = "x".join(map(str, self.shape))
        return f"{self.op} b{self.block} {size}" if self.block else f"{self.op} {size}"


STAGES = [(32, 56, 56, 64), (32, 28, 28, 128), (32, 14, 14, 256), (32, 7, 7, 512)]
ALL_CASES = [
    Case(op, shape, block)
    for op in ("per-channel", "shared")
    for block in (7, 3)
    for shape in STAGES
] + [Case("drop_path", (64, 197, 768))]
QUICK_CASES = [
    Case("per-channel", STAGES[0], 7),
    Case("shared", STAGES[0], 7),
    Case("drop_path", (64, 197, 768)),
]


def jax_candidates(case: Case, backward: bool):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import jaxdrop

    x = jax.random.normal(jax.random.key(0), case.shape)
    cotangent = jnp.ones_like(x)
    key = jax.random.key(1)

    if case.op == "per-channel":
        op = lambda x, k: jaxdrop.drop_block(x, RATE, case.block, key=k)
    elif case.op == "shared":
        op = lambda x, k: jaxdrop.drop_block(
            x, RATE, case.block, key=k, share_channels=True, seed_region="full", eps=1e-7
        )
    else:
        op = lambda x, k: jaxdrop.drop_path(x, RATE, key=k)
    dropout = nn.Dropout(RATE, deterministic=False)
    ops = {
        "jaxdrop": op,
        "flax Dropout": lambda x, k: dropout.apply({}, x, rngs={"dropout": k}),
        "copy (jax)": lambda x, k: x * 1.5,
    }

    def compile_one(fn):
        if backward:
            # The cotangent is an argument: a captured constant would be folded into the
            # program (a constant times a scale needs no pass over memory).
            step = jax.jit(lambda x, k, g: jax.vjp(lambda x: fn(x, k), x)[1](g))
            return lambda: step(x, key, cotangent)
        step = jax.jit(fn)
        return lambda: step(x, key)

    return {name: compile_one(fn) for name, fn in ops.items()}


def torch_candidates(case: Case, backward: bool):
    try:
        import torch

        import torchdrop
    except ImportError:
        return {}
    from tools import peers

    def load(loader):
        try:
            return loader()
        except FileNotFoundError:
            return None

    torch.manual_seed(0)
    n, *spatial, c = case.shape
    shape = (n, c, *spatial) if case.op != "drop_path" else case.shape
    x = torch.randn(shape)
    cotangent = torch.ones_like(x)
    key = torchdrop.random.key(1)  # jax.random.key(1), the key of the jaxdrop column.
    ops = {"copy (torch)": lambda x: x * 1.5}
    if case.op == "per-channel":
        ops["torchdrop"] = lambda x: torchdrop.drop_block(x, RATE, case.block)
        ops["torchdrop (key=)"] = lambda x: torchdrop.drop_block(x, RATE, case.block, key=key)
        torchvision = load(peers.torchvision_drop_block)
        if torchvision is not None:
            ops["torchvision"] = lambda x: torchvision.drop_block2d(x, RATE, case.block)
        timm = load(peers.timm_drop)
        if timm is not None:
            ops["timm"] = lambda x: timm.drop_block_2d(x, RATE, case.block, couple_channels=False)
    elif case.op == "shared":
        ops["torchdrop"] = lambda x: torchdrop.drop_block(
            x, RATE, case.block, share_channels=True, seed_region="full", eps=1e-7
        )
        ops["torchdrop (key=)"] = lambda x: torchdrop.drop_block(
            x, RATE, case.block, key=key, share_channels=True, seed_region="full", eps=1e-7
        )
        timm = load(peers.timm_drop)
        if timm is not None:
            ops["timm"] = lambda x: timm.drop_block_2d(x, RATE, case.block)
    else:
        ops["torchdrop"] = lambda x: torchdrop.drop_path(x, RATE)
        ops["torchdrop (key=)"] = lambda x: torchdrop.drop_path(x, RATE, key=key)
        torchvision = load(peers.torchvision_stochastic_depth)
        if torchvision is not None:
            ops["torchvision"] = lambda x: torchvision.stochastic_depth(x, RATE, "row")
        timm = load(peers.timm_drop)
        if timm is not None:
            ops["timm"] = lambda x: timm.drop_path(x, RATE, training=True)

    def prepare(fn):
        if not backward:
            return lambda: fn(x)
        leaf = x.detach().requires_grad_(True)

        def run():
            leaf.grad = None
            fn(leaf).backward(cotangent)
            return leaf.grad

        return run

    return {name: prepare(fn) for name, fn in ops.items()}


COLUMNS = [
    "jaxdrop",
    "torchdrop",
    "torchdrop (key=)",
    "torchvision",
    "timm",
    "flax Dropout",
    "copy (jax)",
    "copy (torch)",
]


def ratio(times, numerator, denominator):
    if times.get(numerator) is None or times.get(denominator) is None:
        return None
    return times[numerator] / times[denominator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="headline cases, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    quiet_allocator()
    import torch

    torch.set_num_threads(__import__("os").cpu_count())
    cases = QUICK_CASES if args.quick else ALL_CASES
    repeats = args.repeats or (7 if args.quick else 15)
    print(f"# speed, rate {RATE}: median ms of {repeats} interleaved runs; {machine_line()}\n")
    rows = []
    for case in cases:
        peer = "timm" if case.op == "shared" else "torchvision"
        for backward in (False, True):
            times = interleaved(
                {**jax_candidates(case, backward), **torch_candidates(case, backward)},
                repeats=repeats,
            )
            rows.append(
                [case.label, "fwd+bwd" if backward else "fwd"]
                + [times.get(column) for column in COLUMNS]
                + [
                    ratio(times, "jaxdrop", peer),
                    ratio(times, "jaxdrop", "flax Dropout"),
                    ratio(times, "jaxdrop", "copy (jax)"),
                    ratio(times, "torchdrop", peer),
                    ratio(times, "torchdrop", "copy (torch)"),
                    ratio(times, "torchdrop (key=)", "torchdrop"),
                ]
            )
            print(f"  done: {case.label} {'fwd+bwd' if backward else 'fwd'}", flush=True)
    header = [
        "case",
        "pass",
        *COLUMNS,
        "jax/peer",
        "jax/flax",
        "jax/copy",
        "torch/peer",
        "torch/copy",
        "key/gen",
    ]
    print()
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
