"""Times torchdrop.random's threefry draws against torch's own generators on CPU.

Each row times a torchdrop draw (A) and a torch baseline (B) for the same number of values,
run interleaved (A, B, A, B, ...) after a warm-up, and prints both medians and their ratio
A / B. torch's generators are not JAX-compatible, so the ratio is the price of reproducing
jaxdrop's masks bit for bit.

Usage (from the repository root)::

    python benchmarks/torch_threefry.py            # 1e5, 1e6 and 6.4e6 values
    python benchmarks/torch_threefry.py --quick    # 1e5 and 1e6 values, fewer repeats

The intra-op thread count is set to the machine's cores (``--threads`` to change it).

glibc's malloc serves buffers above its mmap threshold (128 KiB, rising to at most 32 MiB as
such buffers are freed) with fresh ``mmap`` pages and unmaps them on free, so a large draw
page-faults its buffers afresh every time; on the development machine that makes the timings
bimodal. Before torch is imported the script therefore sets
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184
MALLOC_TOP_PAD_=1073741824`` (keep buffers up to 4 GiB on the heap, never give memory back)
by re-executing itself when they are not already set.
"""

from __future__ import annotations

import os
import sys

_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}

if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from torchdrop import random  # noqa: E402

KEY = random.key(0)


def _rows(n: int) -> list[tuple[str, Callable[[], object], str, Callable[[], object]]]:
    """``(name A, draw A, name B, draw B)`` for ``n`` values."""
    shape = (n,)
    return [
        (
            "bits",
            lambda: random.bits(KEY, shape),
            "randint int64",
            lambda: torch.randint(0, 2**32, shape),
        ),
        ("bits", lambda: random.bits(KEY, shape), "rand", lambda: torch.rand(shape)),
        (
            "bernoulli(0.5)",
            lambda: random.bernoulli(KEY, 0.5, shape),
            "bernoulli_",
            lambda: torch.empty(shape, dtype=torch.bool).bernoulli_(0.5),
        ),
        (
            "bernoulli(0.5)",
            lambda: random.bernoulli(KEY, 0.5, shape),
            "rand() < 0.5",
            lambda: torch.rand(shape) < 0.5,
        ),
        ("uniform", lambda: random.uniform(KEY, shape), "rand", lambda: torch.rand(shape)),
    ]


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(
    a: Callable[[], object], b: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, timed alternately after two warm-up runs each."""
    for _ in range(2):
        a()
        b()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(_time(a))
        times_b.append(_time(b))
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repeats")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    parser.add_argument("--repeats", type=int, default=None, help="default: 7 quick, 15 full")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = (100_000, 1_000_000) if args.quick else (100_000, 1_000_000, 6_400_000)
    repeats = args.repeats or (7 if args.quick else 15)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads ({os.cpu_count()} cores), "
        f"load average {load}; median of {repeats} interleaved runs"
    )
    header = f"{'values':>9}  {'torchdrop (A)':<15} {'A ms':>8}  "
    header += f"{'torch (B)':<14} {'B ms':>8}  {'A/B':>6}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        for name_a, a, name_b, b in _rows(n):
            median_a, median_b = interleaved_medians(a, b, repeats)
            print(
                f"{n:>9.2g}  {name_a:<15} {median_a * 1e3:>8.2f}  {name_b:<14} "
                f"{median_b * 1e3:>8.2f}  {median_a / median_b:>6.2f}"
            )


if __name__ == "__main__":
    main()
