"""Argument rules and their error messages, identical in jaxdrop and torchdrop.

Every message names the argument, states the rule and shows the value received, so that a
user can fix the call without reading the source, e.g. "`rate` must be in [0, 1], got 1.5.".
Arrays are described by dtype name and shape only (never by their contents), which makes the
text the same whichever framework raised it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

OPTIONS: dict[str, tuple[str, ...]] = {
    "seed_region": ("valid", "full"),
    "calibration": ("paper", "exact"),
    "normalize": ("batch", "example", "expected", "none"),
    "mode": ("row", "batch"),
    "scaling": ("inverted", "test"),
    "rule": ("huang", "linspace"),
}
"""The string options of the ops, and the values each one accepts."""

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def dtype_name(dtype) -> str:
    """The dtype's name without a framework prefix: ``torch.float32`` -> ``float32``."""
    return str(dtype).removeprefix("torch.")


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_rate(rate, name: str = "rate") -> float | None:
    """Checks a drop probability.

    Args:
      rate: a Python/NumPy real number, or a scalar array or tensor of a real dtype.
      name: the argument's name, for the message.

    Returns:
      ``float(rate)`` for a number; ``None`` for an array, whose value may be traced and is
      therefore clipped into [0, 1] in-graph by the caller instead of checked here.

    Raises:
      TypeError: not a real number or a scalar array of a real dtype (bools included).
      ValueError: a number outside [0, 1] or NaN; an array that is not a scalar.
    """
    rule = "a real number in [0, 1] or a scalar array"
    if isinstance(rate, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be {rule}, got {rate!r} (bool).")
    if isinstance(rate, numbers.Real):
        value = float(rate)
        if not 0.0 <= value <= 1.0:  # NaN fails this test too.
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
        return value
    shape, dtype = getattr(rate, "shape", None), getattr(rate, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"`{name}` must be {rule}, got {rate!r} ({type(rate).__name__}).")
    if _shape(shape) != ():
        raise ValueError(
            f"`{name}` must be a scalar (shape ()), got an array of shape {_shape(shape)}."
        )
    kind = dtype_name(dtype)
    if kind not in FLOAT_DTYPES + INT_DTYPES:
        raise TypeError(f"`{name}` must have a floating-point or integer dtype, got {kind}.")
    return None


def check_sizes(value, n_spatial: int, *, name: str, minimum: int) -> tuple[int, ...]:
    """Checks a per-spatial-dim size such as ``block_size`` (minimum 1) or cutout's ``size`` (0).

    Returns:
      One int per spatial dim.
    """
    rule = f"an int or a sequence of {n_spatial} ints (one per spatial dim), each >= {minimum}"
    if _is_int(value):
        sizes = (int(value),) * n_spatial
        shown = int(value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and all(map(_is_int, value)):
        sizes = tuple(int(v) for v in value)
        shown = sizes
        if len(sizes) != n_spatial:
            raise ValueError(
                f"`{name}` must be {rule}, got {shown!r} "
                f"({len(sizes)} entries for {n_spatial} spatial dims)."
            )
    else:
        raise TypeError(f"`{name}` must be {rule}, got {value!r}.")
    if any(s < minimum for s in sizes):
        raise ValueError(f"`{name}` must be {rule}, got {shown!r}.")
    return sizes


def check_choice(name: str, value) -> str:
    """Checks a string option against ``OPTIONS[name]``."""
    choices = OPTIONS[name]
    listed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be one of {listed}, got {value!r} ({type(value).__name__})."
        )
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {listed}, got {value!r}.")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {value!r} ({type(value).__name__}).")
    return bool(value)


def check_positive_int(name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    return int(value)


def check_non_negative_int(name: str, value) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    return int(value)


def check_eps(eps) -> float:
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"`eps` must be a real number > 0, got {eps!r} ({type(eps).__name__}).")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            "`eps` must be a finite number > 0 (it keeps a fully dropped tensor from dividing "
            f"by zero), got {float(eps)!r}."
        )
    return float(eps)


def check_float_dtype(name: str, dtype) -> None:
    kind = dtype_name(dtype)
    if kind not in FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must have a floating-point dtype ({', '.join(FLOAT_DTYPES)}), got {kind}."
        )


def check_bool_dtype(name: str, dtype) -> None:
    kind = dtype_name(dtype)
    if kind != "bool":
        raise TypeError(f"`{name}` must be a boolean array, got dtype {kind}.")


def check_int_dtype(name: str, dtype) -> None:
    kind = dtype_name(dtype)
    if kind not in INT_DTYPES:
        raise TypeError(f"`{name}` must be an integer array, got dtype {kind}.")


RANK_RULES: dict[str, tuple[tuple[int, ...], str]] = {
    "spatial": ((3, 4, 5), "3, 4 or 5 (a batch dim, a channel dim and 1 to 3 spatial dims)"),
    "batched": (tuple(range(1, 33)), ">= 1 (a batch dim first)"),
    "any": (tuple(range(33)), ">= 0"),
}
"""The ranks each kind of op accepts, and how the message states them."""


def check_rank(name: str, shape, kind: str) -> None:
    """Checks that ``shape`` has a rank of ``RANK_RULES[kind]``."""
    ranks, rule = RANK_RULES[kind]
    if len(shape) not in ranks:
        raise ValueError(
            f"`{name}` must have rank {rule}, got rank {len(shape)} (shape {_shape(shape)})."
        )


def check_fill(fill) -> float:
    if isinstance(fill, (bool, np.bool_)) or not isinstance(fill, numbers.Real):
        raise TypeError(f"`fill` must be a real number, got {fill!r} ({type(fill).__name__}).")
    return float(fill)


def check_branch(branch) -> None:
    if not callable(branch):
        raise TypeError(
            "`branch` must be callable (the residual branch f, called as branch(x)), "
            f"got {type(branch).__name__}."
        )


def check_shape(name: str, shape, expected, hint: str) -> None:
    if _shape(shape) != _shape(expected):
        raise ValueError(
            f"`{name}` must have shape {_shape(expected)} ({hint}), got {_shape(shape)}."
        )


def check_broadcastable(name: str, shape, target) -> None:
    """Checks that an array of ``shape`` broadcasts to ``target`` without changing it."""
    shape, target = _shape(shape), _shape(target)
    fits = len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target))
    )
    if not fits:
        raise ValueError(f"`{name}` must broadcast to the shape of `x` {target}, got {shape}.")


def check_one_source(source: str, given: str, reason: str | None = None) -> None:
    """Refuses a call that passes two sources of one draw: by default a source of randomness
    and the pre-sampled draw that replaces it; ``reason`` says why otherwise."""
    reason = f"`{given}` replaces the random draw" if reason is None else reason
    raise ValueError(f"Pass either `{source}` or `{given}`, not both: {reason}.")
