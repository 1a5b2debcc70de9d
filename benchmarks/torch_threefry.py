"""Times torchdrop.random's threefry draws against torch's own generators on CPU.

Each row times a torchdrop draw (A) and a torch baseline (B) for the same number of values,
interleaved (A, B, A, B, ...) after a warm-up (``_harness``), and prints both medians and
their ratio A / B. torch's generators are not JAX-compatible, so the ratio is the price of
reproducing jaxdrop's masks bit for bit.

    python benchmarks/torch_threefry.py            # 1e5, 1e6 and 6.4e6 values
    python benchmarks/torch_threefry.py --quick    # 1e5 and 1e6 values, fewer repeats

The intra-op thread count is set to the machine's cores (``--threads`` to change it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from _harness import interleaved, machine_line, markdown_table, quiet_allocator


def _rows(n: int, random, torch) -> list[tuple[str, Callable[[], object], str, Callable]]:
    """``(name A, draw A, name B, draw B)`` for ``n`` values."""
    key, shape = random.key(0), (n,)
    bits = lambda: random.bits(key, shape)
    bernoulli = lambda: random.bernoulli(key, 0.5, shape)
    return [
        ("bits", bits, "randint int64", lambda: torch.randint(0, 2**32, shape)),
        ("bits", bits, "rand", lambda: torch.rand(shape)),
        (
            "bernoulli(0.5)",
            bernoulli,
            "bernoulli_",
            lambda: torch.empty(shape, dtype=torch.bool).bernoulli_(0.5),
        ),
        ("bernoulli(0.5)", bernoulli, "rand() < 0.5", lambda: torch.rand(shape) < 0.5),
        ("uniform", lambda: random.uniform(key, shape), "rand", lambda: torch.rand(shape)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repeats")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--repeats", type=int, default=None, help="default: 7 quick, 15 full")
    args = parser.parse_args()
    quiet_allocator()
    import torch

    from torchdrop import random

    torch.set_num_threads(args.threads)
    sizes = (100_000, 1_000_000) if args.quick else (100_000, 1_000_000, 6_400_000)
    repeats = args.repeats or (7 if args.quick else 15)
    print(
        f"# torchdrop.random vs torch generators: median ms of {repeats} interleaved runs; "
        f"{machine_line()}, load average {os.getloadavg()[0]:.1f}\n"
    )
    rows = []
    for n in sizes:
        for name_a, a, name_b, b in _rows(n, random, torch):
            times = interleaved({"A": a, "B": b}, repeats=repeats, warmup=2)
            rows.append(
                [f"{n:.2g}", name_a, times["A"], name_b, times["B"], times["A"] / times["B"]]
            )
    print(markdown_table(["values", "torchdrop (A)", "A ms", "torch (B)", "B ms", "A/B"], rows))


if __name__ == "__main__":
    main()
