"""Identical inputs for both packages, layout moves, and one forward/backward runner each."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import torch

DTYPES = ("float32", "bfloat16", "float16")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def to_jax_layout(array: np.ndarray) -> np.ndarray:
    """Channels-first ``(N, C, *S)`` to channels-last ``(N, *S, C)``."""
    return np.moveaxis(array, 1, -1)


def to_torch_layout(array: np.ndarray) -> np.ndarray:
    return np.moveaxis(array, -1, 1)


def signed_input(rng: np.random.Generator, shape) -> np.ndarray:
    """float32 values with 0.5 <= |x| <= 1.5: never zero, so kept units are nonzero."""
    magnitude = rng.uniform(0.5, 1.5, shape)
    return (magnitude * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def as_torch(array: np.ndarray, dtype: str = "float32") -> torch.Tensor:
    """A float32 NumPy array rounded to ``dtype`` (the same rounding as :func:`as_jax`)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(TORCH_DTYPES[dtype])


def as_jax(array: np.ndarray, dtype: str = "float32") -> jax.Array:
    return jnp.asarray(np.ascontiguousarray(array)).astype(JAX_DTYPES[dtype])


def to_numpy(value) -> np.ndarray:
    """A torch tensor or JAX array as float32 NumPy (exact for the half-precision dtypes)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).cpu().numpy()
    value = np.asarray(value)
    if value.dtype in (ml_dtypes.bfloat16, np.float16):
        return value.astype(np.float32)
    return value


def rate_pair(value: float, kind: str):
    """The same rate for both packages: Python floats, or float32 scalar tensor and array."""
    if kind == "float":
        return value, value
    return torch.tensor(value, dtype=torch.float32), jnp.asarray(value, jnp.float32)


def run_torch(fn, x: torch.Tensor, cotangent: torch.Tensor):
    """``fn(x)`` and the gradient of ``sum(fn(x) * cotangent)`` with respect to ``x``."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    if out.requires_grad:
        out.backward(cotangent)
    grad = x.grad if x.grad is not None else torch.zeros_like(x)
    return out.detach(), grad


def run_jax(op, x: jax.Array, cotangent: jax.Array, dynamic: dict | None = None, **static):
    """``op(x, **dynamic, **static)`` and its input gradient for ``cotangent``, under ``jit``.

    ``dynamic`` holds the arrays (pre-sampled draws, array rates), passed as traced arguments;
    ``static`` the Python options (rates given as floats among them), part of the cache key.
    One compilation serves every case with the same op, options, shapes and dtypes.
    """
    return _jax_value_and_grad(x, cotangent, dynamic or {}, op=op, static=tuple(static.items()))


@functools.partial(jax.jit, static_argnames=("op", "static"))
def _jax_value_and_grad(x, cotangent, dynamic, *, op, static):
    out, vjp = jax.vjp(lambda v: op(v, **dynamic, **dict(static)), x)
    (grad,) = vjp(cotangent.astype(out.dtype))
    return out, grad
