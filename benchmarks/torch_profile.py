"""Where torchdrop's time goes on CPU: each stage of an op timed alone, next to the whole op,
its peer and a plain copy.

Stages of DropBlock (eager code): the seed draw, the expansion of the seeds into the dropped
units, the select mask and the count of kept units, and the masked rescale; with, for
comparison, the forms ``torch.compile`` traces (padded window ORs, a bool ``where``). DropPath
is timed whole. All candidates of a case run interleaved (see ``_harness``); the table gives
median milliseconds and the load average when the case finished.

    python benchmarks/torch_profile.py                  # the speed.py --quick cases
    python benchmarks/torch_profile.py --threads 1      # one intra-op thread
    python benchmarks/torch_profile.py --channels-last  # channels-last DropBlock input
"""

from __future__ import annotations

import argparse
import os

from _harness import interleaved, machine_line, markdown_table, quiet_allocator

RATE = 0.1


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def drop_block_candidates(share: bool, channels_last: bool, backward: bool):
    import torch

    import dropspec
    import torchdrop
    from tools import peers
    from torchdrop import _common, _draw, _drop_block

    torch.manual_seed(0)
    x = torch.randn(32, 64, 56, 56)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    region, eps = ("full", 1e-7) if share else ("valid", 1e-6)
    options = dict(share_channels=share, seed_region=region, eps=eps)
    geometry = _drop_block._geometry(x.shape, 7, region)
    seed_shape = dropspec.seed_shape(x.shape, geometry, share, channels_last=False)
    gamma = torchdrop.drop_block_gamma(x.shape, RATE, 7, seed_region=region)
    seeds = _draw.bernoulli(seed_shape, gamma)
    dropped = _drop_block._dropped_units(seeds, geometry, channels_last)
    select, kept = _drop_block._select_and_count(dropped, x, "batch")
    scale = _drop_block._normalizer(select, None, "batch", eps, kept)
    keep = ~_drop_block._expand_seeds(seeds, geometry)
    ops = {
        "draw": lambda: _draw.bernoulli(seed_shape, gamma),
        "expand": lambda: _drop_block._dropped_units(seeds, geometry, channels_last),
        "select+count": lambda: _drop_block._select_and_count(dropped, x, "batch"),
        "rescale": lambda: _common.masked_scale(x, select, scale),
        "traced expand": lambda: _drop_block._expand_seeds(seeds, geometry),
        "traced rescale": lambda: _common._MaskedScale.apply(x, keep, scale),
        "torchdrop": lambda: torchdrop.drop_block(x, RATE, 7, **options),
        "copy": lambda: x * 1.5,
    }
    try:
        if share:
            timm = peers.timm_drop()
            ops["timm"] = lambda: timm.drop_block_2d(x, RATE, 7)
        else:
            torchvision = peers.torchvision_drop_block()
            ops["torchvision"] = lambda: torchvision.drop_block2d(x, RATE, 7)
    except FileNotFoundError:
        pass
    if backward:
        return _with_backward(x, {k: v for k, v in ops.items() if k in WHOLE}, ops)
    return ops


WHOLE = {"torchdrop", "timm", "torchvision", "copy"}


def _with_backward(x, whole, ops):
    """The whole ops as forward+backward; the peers are recomputed from ``ops``' closures by
    calling them on a leaf that requires a gradient."""
    import torch

    leaf = x.detach().requires_grad_(True)
    cotangent = torch.ones_like(x)
    import torchdrop
    from tools import peers

    share = "timm" in whole
    region, eps = ("full", 1e-7) if share else ("valid", 1e-6)
    fns = {
        "torchdrop": lambda v: torchdrop.drop_block(
            v, RATE, 7, share_channels=share, seed_region=region, eps=eps
        ),
        "copy": lambda v: v * 1.5,
    }
    if "timm" in whole:
        timm = peers.timm_drop()
        fns["timm"] = lambda v: timm.drop_block_2d(v, RATE, 7)
    if "torchvision" in whole:
        torchvision = peers.torchvision_drop_block()
        fns["torchvision"] = lambda v: torchvision.drop_block2d(v, RATE, 7)

    def run(fn):
        def step():
            leaf.grad = None
            fn(leaf).backward(cotangent)
            return leaf.grad

        return step

    return {name + " fwd+bwd": run(fn) for name, fn in fns.items()}


def drop_path_candidates(backward: bool):
    import torch

    import torchdrop
    from tools import peers

    torch.manual_seed(0)
    x = torch.randn(64, 197, 768)
    fns = {"torchdrop": lambda v: torchdrop.drop_path(v, RATE), "copy": lambda v: v * 1.5}
    try:
        timm = peers.timm_drop()
        fns["timm"] = lambda v: timm.drop_path(v, RATE, training=True)
    except FileNotFoundError:
        pass
    if not backward:
        return {name: (lambda fn=fn: fn(x)) for name, fn in fns.items()}
    leaf = x.detach().requires_grad_(True)
    cotangent = torch.ones_like(x)

    def run(fn):
        def step():
            leaf.grad = None
            fn(leaf).backward(cotangent)
            return leaf.grad

        return step

    return {name + " fwd+bwd": run(fn) for name, fn in fns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    quiet_allocator()
    import torch

    torch.set_num_threads(args.threads)
    layout = "channels-last" if args.channels_last else "channels-first"
    print(f"# torchdrop stages, rate {RATE}, {layout}: median ms of {args.repeats} interleaved")
    print(f"# runs; {machine_line()}\n")
    rows = []
    cases = [
        (
            "per-channel b7 32x64x56x56",
            lambda b: drop_block_candidates(False, args.channels_last, b),
        ),
        ("shared b7 32x64x56x56", lambda b: drop_block_candidates(True, args.channels_last, b)),
        ("drop_path 64x197x768", drop_path_candidates),
    ]
    for label, make in cases:
        for backward in (False, True):
            times = interleaved(make(backward), repeats=args.repeats)
            for name, ms in times.items():
                rows.append([label, name, ms, _load()])
            print(f"  done: {label} {'fwd+bwd' if backward else 'fwd'}", flush=True)
    print()
    print(markdown_table(["case", "stage", "ms", "load average"], rows))


if __name__ == "__main__":
    main()
