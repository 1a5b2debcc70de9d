"""The timing harness every benchmark script shares.

* Interleaved runs: candidates are timed in turn (A, B, C, A, B, C, ...) after a warm-up, and
  each is reported by its median, so that a slow phase of the machine hits all of them.
* The checkout on ``sys.path``: importing this module lets a script run as
  ``python benchmarks/<name>.py`` find ``jaxdrop``, ``torchdrop`` and ``tools`` whether or not
  the project is installed.
* A quiet allocator: on this kind of machine glibc returns large freed buffers to the kernel
  and every fresh output then costs page faults, which made timings bimodal (2 ms or 12 ms
  for the same copy). :func:`quiet_allocator` re-executes the script with glibc's mmap and
  trim thresholds raised, for every framework alike.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}


def quiet_allocator() -> None:
    """Re-executes the running script with :data:`MALLOC_ENV` set, unless it already is."""
    if all(os.environ.get(name) == value for name, value in MALLOC_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


# Seconds of idle time before each timed run (untimed).
PAUSE_S = 0.01


def synchronize(result) -> None:
    """Waits until ``result`` (a JAX pytree, a torch tensor or None) is computed."""
    if result is None:
        return
    if type(result).__module__.startswith("torch"):
        import torch

        if result.is_cuda:
            torch.cuda.synchronize(result.device)
        return
    import jax

    jax.block_until_ready(result)


def interleaved(
    candidates: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Median wall time in milliseconds of each zero-argument callable, timed in turn."""
    for _ in range(warmup):
        for run in candidates.values():
            synchronize(run())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            # Let the previous candidate's thread pool go idle: JAX's and torch's workers spin
            # a while after each op, and would otherwise compete with the next one for cores.
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            synchronize(run())
            samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    import platform

    parts = [f"{os.cpu_count()} CPU cores", f"Python {platform.python_version()}"]
    try:
        import jax

        parts.append(f"jax {jax.__version__} ({jax.default_backend()})")
    except ImportError:
        pass
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        pass
    return ", ".join(parts)
