"""The random draws behind every torchdrop mask, bit for bit those of ``jaxdrop.random``.

A JAX threefry key is a pair of uint32 words, ``jax.random.key_data(key)``. Here it is a plain
``(int, int)`` tuple (:func:`key_data` converts the other forms), so keys are Python constants:
:func:`key`, :func:`split` and :func:`fold_in` run in pure Python, cost no tensor work and
compile away under ``torch.compile``.

:func:`bits` is JAX's default PRNG draw, ``jax.random.bits(key, shape, jnp.uint32)`` with the
partitionable threefry layout (JAX's default since 0.5): element ``i`` of the flattened shape
is ``y0 ^ y1`` where ``(y0, y1) = threefry2x32(key, i >> 32, i & 0xFFFFFFFF)``. The draws on top
of it are the integer arithmetic of ``jaxdrop.random``, so they agree exactly:

* :func:`bernoulli`: ``bits < floor(p * 2**32)``, always True for ``p >= 1``.
* :func:`uniform`: ``jax.random.uniform``'s 23 random mantissa bits in [0, 1).
* :func:`uniform_index`: ``floor(bits * n / 2**32)`` for ``n < 2**31``.

PyTorch has almost no uint32 kernels on CPU, so the hash runs on int32 tensors holding the
same bits: addition and multiplication wrap modulo ``2**32`` exactly as uint32 would, and the
logical right shift is an arithmetic shift followed by a mask. That is 2-4x faster than masked
int64 arithmetic (half the memory traffic), and in-place updates avoid fresh buffers. On CPU
the counters are hashed in chunks of ``2**20``, which stay in the cache across the ~110
elementwise passes. The hash is a custom op (``torchdrop::threefry_bits``), which
``torch.compile`` calls as one opaque kernel: Inductor, left to inline the passes, takes time
exponential in their depth to lower them.

Under ``torch.compile``, a key tuple passed into the compiled function may change between
calls without recompiling (its ints become symbolic inputs of the graph). :func:`split` and
:func:`fold_in` need plain ints, so inside a compiled function each new key or ``data`` value
they see recompiles it: derive per-step keys outside, e.g. ``step_fn(fold_in(key, step))``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch

import dropspec

__all__ = [
    "below_threshold",
    "bernoulli",
    "bits",
    "fold_in",
    "key",
    "key_data",
    "split",
    "threefry2x32",
    "threshold",
    "uniform",
    "uniform_index",
]

KeyData = tuple[int, int]
"""A threefry key: the two uint32 words of ``jax.random.key_data(key)``, as Python ints."""

_MASK32 = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = 0x1BD11BDA
_SIGN_BIT = 1 << 31
_CPU_CHUNK = 1 << 20  # Three int32 buffers of this size (12 MiB) stay in a typical L3 cache.
_MAX_CHUNK = 1 << 30  # Keeps int32 counters exact and never straddles a high-word change.
_PYTHON_SPLIT_LIMIT = 4096  # Above this many subkeys split hashes a tensor instead.
_KEY_RULE = "a pair of uint32 values (jax.random.key_data(key))"


# --------------------------------------------------------------------------------------------
# Keys.
# --------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_int_dtype(dtype: torch.dtype) -> bool:
    return not (dtype == torch.bool or dtype.is_floating_point or dtype.is_complex)


def _key_words(words, kind: str) -> KeyData:
    if not all(map(_is_int, words)):
        raise TypeError(f"`key` must be {_KEY_RULE}, got {kind} {tuple(words)!r}.")
    if len(words) != 2:
        raise ValueError(f"`key` must be {_KEY_RULE}, got {kind} {tuple(words)!r}.")
    k1, k2 = (int(w) for w in words)
    if not (0 <= k1 <= _MASK32 and 0 <= k2 <= _MASK32):
        raise ValueError(f"`key` must be {_KEY_RULE}, each in [0, 2**32), got ({k1}, {k2}).")
    return k1, k2


def key_data(key) -> KeyData:
    """The two uint32 words of a threefry key, as a tuple of Python ints.

    Args:
      key: ``jax.random.key_data(k)`` for a JAX key ``k`` (or a raw ``jax.random.PRNGKey``), as
        a tuple or list of two ints, an array with dtype uint32 and shape ``(2,)`` (NumPy, or
        anything ``numpy.asarray`` reads, such as a JAX array), or a torch tensor of any
        integer dtype and shape ``(2,)``. Each word must be in ``[0, 2**32)``. A tensor is read
        on the host, so under ``torch.compile`` pass the tuple instead.

    Returns:
      ``(k1, k2)``, the key as every function of this module takes it.

    Raises:
      TypeError: ``key`` is not one of the forms above (a typed JAX key or an int seed, say).
      ValueError: a key of the wrong shape or with a word outside ``[0, 2**32)``.

    Example:
      >>> from torchdrop import random
      >>> random.key_data([0, 42])
      (0, 42)
    """
    if isinstance(key, (tuple, list)):
        return _key_words(key, type(key).__name__)
    if isinstance(key, torch.Tensor):
        if not _is_int_dtype(key.dtype):
            raise TypeError(
                f"`key` must be {_KEY_RULE}, got a tensor of dtype "
                f"{dropspec.dtype_name(key.dtype)}; pass an integer tensor."
            )
        if tuple(key.shape) != (2,):
            raise ValueError(f"`key` must be {_KEY_RULE}, got shape {tuple(key.shape)}.")
        words = key.tolist()
        if key.dtype == torch.int32 and min(words) < 0:
            raise ValueError(
                f"`key` must be {_KEY_RULE}, each in [0, 2**32), got an int32 tensor holding "
                f"{tuple(words)}; pass key.view(torch.uint32) if it holds uint32 bits."
            )
        return _key_words(words, "tensor")
    dtype = getattr(key, "dtype", None)
    if dtype is not None and getattr(key, "shape", None) is not None:
        if str(dtype).startswith("key<"):
            raise TypeError(
                f"`key` must be {_KEY_RULE}, got a typed JAX key of dtype {dtype}; "
                "pass jax.random.key_data(key)."
            )
        array = np.asarray(key)
        if array.dtype != np.uint32:
            raise TypeError(f"`key` must be {_KEY_RULE}, got an array of dtype {array.dtype}.")
        if array.shape != (2,):
            raise ValueError(f"`key` must be {_KEY_RULE}, got shape {array.shape}.")
        return int(array[0]), int(array[1])
    hint = "; for an int seed use torchdrop.random.key(seed)" if _is_int(key) else ""
    raise TypeError(f"`key` must be {_KEY_RULE}, got {key!r} ({type(key).__name__}){hint}.")


def key(seed: int, *, x64: bool = False) -> KeyData:
    """The key that ``jax.random.key(seed)`` (or ``jax.random.PRNGKey(seed)``) holds.

    JAX reads the seed as an int64 and, with ``jax_enable_x64`` off (its default), then
    truncates it to 32 bits: the key is ``(0, seed mod 2**32)``. With x64 on, the key is the
    two's-complement int64 split into its high and low words.

    Args:
      seed: an int in ``[-2**63, 2**63)``, the range JAX accepts.
      x64: reproduce JAX with ``jax_enable_x64`` on. Default False.

    Returns:
      ``(k1, k2)``, equal to ``jax.random.key_data(jax.random.key(seed))``.

    Raises:
      TypeError: ``seed`` is not an int.
      ValueError: ``seed`` is outside ``[-2**63, 2**63)``.

    Example:
      >>> from torchdrop import random
      >>> random.key(-1), random.key(-1, x64=True), random.key(2**40 + 5, x64=True)
      ((0, 4294967295), (4294967295, 4294967295), (256, 5))
    """
    if not _is_int(seed):
        raise TypeError(f"`seed` must be an int, got {seed!r} ({type(seed).__name__}).")
    seed = int(seed)
    if not -(2**63) <= seed < 2**63:
        raise ValueError(
            f"`seed` must be in [-2**63, 2**63) (an int64, as JAX reads it), got {seed}."
        )
    high = (seed >> 32) & _MASK32 if x64 else 0
    return high, seed & _MASK32


# --------------------------------------------------------------------------------------------
# The threefry2x32 block cipher (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
# SC 2011): 20 rounds of add, rotate and xor, with the key injected every four rounds.
# --------------------------------------------------------------------------------------------


def _schedule(k1: int, k2: int) -> tuple[int, int, int]:
    return k1, k2, k1 ^ k2 ^ _KS_PARITY


def _injections(k1: int, k2: int) -> list[tuple[int, int]]:
    """The constants added to ``(x0, x1)`` after each of the five blocks of four rounds."""
    ks = _schedule(k1, k2)
    return [(ks[(b + 1) % 3], (ks[(b + 2) % 3] + b + 1) & _MASK32) for b in range(5)]


def _threefry_scalar(k1: int, k2: int, x0: int, x1: int) -> KeyData:
    """threefry2x32 of one counter pair, in Python ints (for keys: exact, and free to trace)."""
    x0, x1 = (x0 + k1) & _MASK32, (x1 + k2) & _MASK32
    for block, (add0, add1) in enumerate(_injections(k1, k2)):
        for d in _ROTATIONS[block % 2]:
            x0 = (x0 + x1) & _MASK32
            x1 = (((x1 << d) | (x1 >> (32 - d))) & _MASK32) ^ x0
        x0, x1 = (x0 + add0) & _MASK32, (x1 + add1) & _MASK32
    return x0, x1


def _as_int32(value: int) -> int:
    """The int32 with the bits of ``value mod 2**32`` (branch-free: ``value`` may be symbolic)."""
    return ((value + _SIGN_BIT) & _MASK32) - _SIGN_BIT


def _rounds_int32_(
    k1: int, k2: int, x0: torch.Tensor, x1: torch.Tensor, *, first_add_done: bool, tweak1: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 rounds on int32 tensors already holding ``x0 + k1`` and ``x1 + k2``, in place.

    ``first_add_done`` says that ``x0`` already holds the first round's ``x0 + x1``; ``tweak1``
    is added to the final ``x1`` (``2**31`` flips its sign bit, see ``_hash_counters``).
    """
    spare = torch.empty_like(x1)
    for block, (add0, add1) in enumerate(_injections(k1, k2)):
        for step, d in enumerate(_ROTATIONS[block % 2]):
            if not (first_add_done and block == step == 0):
                x0.add_(x1)
            # rotl(x1, d) = (x1 << d) + (x1 >>> (32 - d)), the logical shift being an
            # arithmetic shift with the sign copies masked off; `alpha` fuses the left shift.
            rotated = torch.bitwise_right_shift(x1, 32 - d, out=spare).bitwise_and_((1 << d) - 1)
            spare, x1 = x1, rotated.add_(x1, alpha=1 << d).bitwise_xor_(x0)
        x0.add_(_as_int32(add0))
        x1.add_(_as_int32(add1 + (tweak1 if block == 4 else 0)))
    return x0, x1


def _counter_dtype_check(name: str, tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"`{name}` must be an integer tensor, got {type(tensor).__name__}.")
    if not _is_int_dtype(tensor.dtype):
        raise TypeError(
            f"`{name}` must be an integer tensor, got dtype {dropspec.dtype_name(tensor.dtype)}."
        )


def _to_int32_bits(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.int32:
        return tensor
    if tensor.dtype == torch.uint32:
        return tensor.view(torch.int32)
    # Any other integer dtype: keep the low 32 bits, as a wrapped int32.
    low = tensor.to(torch.int64).bitwise_and(_MASK32)
    return torch.where(low >= _SIGN_BIT, low - (1 << 32), low).to(torch.int32)


def _to_uint32_values(tensor: torch.Tensor) -> torch.Tensor:
    """int32 bits as int64 values in ``[0, 2**32)``."""
    return tensor.to(torch.int64).bitwise_and_(_MASK32)


@torch.library.custom_op("torchdrop::threefry2x32", mutates_args=())
def _threefry2x32_op(
    k1: int, k2: int, x0: torch.Tensor, x1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cipher on int32 counter bits of one shape.

    A custom op, so that ``torch.compile`` keeps it opaque: inlined, the ~110 dependent
    elementwise ops with their fan-out make Inductor's lowering take exponential time.
    """
    x0 = x0.add(_as_int32(k1))
    x1 = x1.add(_as_int32(k2))
    return _rounds_int32_(k1, k2, x0, x1, first_add_done=False)


@_threefry2x32_op.register_fake
def _(k1: int, k2: int, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x0), torch.empty_like(x1)


def threefry2x32(key, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The threefry2x32 block cipher (20 rounds) applied elementwise to counter pairs.

    Equal to JAX's ``threefry2x32_p`` primitive (``jax.extend.random.threefry2x32_p``).

    Args:
      key: a threefry key (see :func:`key_data`).
      x0: the first (high) counter word, an integer tensor of any shape: int64 values are read
        modulo ``2**32``, int32 values as their two's-complement bits, uint32 as is.
      x1: the second (low) counter word, same rules, broadcastable with ``x0``.

    Returns:
      ``(y0, y1)``: int64 tensors of the broadcast shape holding values in ``[0, 2**32)``.

    Example:
      >>> import torch
      >>> from torchdrop import random
      >>> y0, y1 = random.threefry2x32((0, 0), torch.tensor([0, 0]), torch.tensor([0, 1]))
      >>> (y0 ^ y1).tolist()  # == jax.random.bits(jax.random.key(0), (2,), jnp.uint32)
      [4070199207, 4202968722]
    """
    k1, k2 = key_data(key)
    _counter_dtype_check("x0", x0)
    _counter_dtype_check("x1", x1)
    x0, x1 = torch.broadcast_tensors(_to_int32_bits(x0), _to_int32_bits(x1))
    y0, y1 = _threefry2x32_op(k1, k2, x0.contiguous(), x1.contiguous())
    return _to_uint32_values(y0), _to_uint32_values(y1)


def _concrete(words: KeyData) -> KeyData:
    """The key as plain ints, for threefry in Python.

    Under ``torch.compile`` an int that changed between calls is symbolic, and 20 rounds of
    threefry on it build expressions too large to trace: ``operator.index`` makes Dynamo
    specialize it (guarded) instead.
    """
    return operator.index(words[0]), operator.index(words[1])


def split(key, num: int = 2) -> tuple[KeyData, ...]:
    """``num`` new keys, equal to ``jax.random.split(key, num)`` (partitionable threefry).

    Key ``i`` is ``threefry2x32(key, 0, i)``, computed in Python ints: no tensor work, and a
    constant under ``torch.compile``.

    Args:
      key: a threefry key (see :func:`key_data`).
      num: the number of keys, >= 0. Default 2.

    Returns:
      A tuple of ``num`` keys ``(k1, k2)``; key ``i`` equals
      ``jax.random.key_data(jax.random.split(key, num)[i])``.

    Example:
      >>> from torchdrop import random
      >>> random.split(random.key(0))
      ((1797259609, 2579123966), (928981903, 3453687069))
    """
    k1, k2 = _concrete(key_data(key))
    if not _is_int(num) or num < 0:
        raise ValueError(f"`num` must be an int >= 0, got {num!r}.")
    num = operator.index(num)
    if num <= _PYTHON_SPLIT_LIMIT:
        return tuple(_threefry_scalar(k1, k2, 0, i) for i in range(num))
    high, low = threefry2x32((k1, k2), torch.zeros(num, dtype=torch.int64), torch.arange(num))
    return tuple(zip(high.tolist(), low.tolist(), strict=True))


def fold_in(key, data: int) -> KeyData:
    """A new key from ``key`` and an int, equal to ``jax.random.fold_in(key, data)``.

    It is ``threefry2x32(key, 0, data)``, computed in Python ints (the same as the subkey
    ``data`` of a large enough :func:`split`).

    Args:
      key: a threefry key (see :func:`key_data`).
      data: an int in ``[0, 2**32)`` (JAX converts it to uint32 and refuses other values).

    Returns:
      The new key ``(k1, k2)``.

    Example:
      >>> from torchdrop import random
      >>> random.fold_in(random.key(0), 1)
      (928981903, 3453687069)
    """
    k1, k2 = _concrete(key_data(key))
    if not _is_int(data):
        raise TypeError(
            f"`data` must be an int in [0, 2**32), got {data!r} ({type(data).__name__})."
        )
    if not 0 <= data <= _MASK32:
        raise ValueError(f"`data` must be an int in [0, 2**32) (a uint32), got {int(data)}.")
    return _threefry_scalar(k1, k2, 0, operator.index(data))


# --------------------------------------------------------------------------------------------
# Bits and the draws built on them.
# --------------------------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, ...]:
    rule = "a sequence of ints >= 0"
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"`shape` must be {rule}, got {shape!r} ({type(shape).__name__}).")
    if not all(map(_is_int, shape)):
        raise TypeError(f"`shape` must be {rule}, got {tuple(shape)!r}.")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"`shape` must be {rule}, got {shape}.")
    return shape


def _hash_counters(
    k1: int, k2: int, start: int, count: int, device: torch.device, tweak1: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y0, y1)`` of the flat counters ``start, ..., start + count - 1``, as int32 bits.

    The counters must share their high word and ``count`` must be below ``2**31``.
    """
    # Round one's x1 = low counter + k2, and x0 = (high counter + k1) + x1.
    x1 = torch.arange(count, dtype=torch.int32, device=device).add_(_as_int32(start + k2))
    x0 = x1.add(_as_int32((start >> 32) + k1))
    return _rounds_int32_(k1, k2, x0, x1, first_add_done=True, tweak1=tweak1)


@torch.library.custom_op("torchdrop::threefry_bits", mutates_args=())
def _threefry_bits_op(
    k1: int, k2: int, size: int, tweak1: int, device: torch.device | None
) -> torch.Tensor:
    """``y0 ^ y1`` of the counters ``0, ..., size - 1``, as int32 bits.

    Opaque under ``torch.compile`` (see ``_threefry2x32_op``). On CPU the counters go in
    chunks that keep the ~110 passes in cache.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    chunk = _CPU_CHUNK if device.type == "cpu" else _MAX_CHUNK
    if size <= chunk:
        y0, y1 = _hash_counters(k1, k2, 0, size, device, tweak1)
        return y0.bitwise_xor_(y1)
    out = torch.empty(size, dtype=torch.int32, device=device)
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        y0, y1 = _hash_counters(k1, k2, start, stop - start, device, tweak1)
        torch.bitwise_xor(y0, y1, out=out[start:stop])
    return out


@_threefry_bits_op.register_fake
def _(k1: int, k2: int, size: int, tweak1: int, device: torch.device | None) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int32, device=device)


def _bits_int32(key, shape, device, *, flip_sign: bool = False) -> torch.Tensor:
    """:func:`bits` as int32 bits of ``shape``; with ``flip_sign``, xored with ``2**31``.

    The sign flip turns the unsigned order of the bits into int32's signed order. It costs
    nothing: adding ``2**31`` to the final ``x1`` flips the same bit.
    """
    k1, k2 = key_data(key)
    shape = _check_shape(shape)
    device = torch.device(device) if device is not None else None
    tweak1 = _SIGN_BIT if flip_sign else 0
    return _threefry_bits_op(k1, k2, math.prod(shape), tweak1, device).view(shape)


def bits(key, shape: Sequence[int], *, device=None) -> torch.Tensor:
    """Uniform random 32-bit words, equal to ``jax.random.bits(key, shape, jnp.uint32)``.

    Args:
      key: a threefry key (see :func:`key_data`).
      shape: the output shape, a sequence of ints >= 0.
      device: where to compute; default torch's default device (CPU unless changed).

    Returns:
      An int64 tensor of ``shape`` holding the uint32 values, in ``[0, 2**32)``.

    Example:
      >>> from torchdrop import random
      >>> random.bits(random.key(0), (2, 3)).tolist()
      [[4070199207, 4202968722, 1427181096], [2012915765, 2447653815, 710830403]]
    """
    return _to_uint32_values(_bits_int32(key, shape, device))


def threshold(p) -> tuple[int, bool] | tuple[torch.Tensor, torch.Tensor]:
    """The ``(threshold, always)`` pair with which ``u < threshold or always`` is Bernoulli(p).

    As in ``jaxdrop.random.threshold``: a Python float (or int, bool) ``p`` is converted
    exactly, in float64 (``dropspec.keep_threshold``); anything else is converted to a float32
    tensor, clipped into [0, 1] and scaled in float32.

    Args:
      p: a Python number, or a tensor (or NumPy value) of probabilities.

    Returns:
      ``(int, bool)`` for a Python number, else ``(int64 tensor, bool tensor)`` of ``p``'s
      shape; the threshold is in ``[0, 2**32)``, and 0 where ``always`` is True.

    Example:
      >>> import torch
      >>> from torchdrop import random
      >>> random.threshold(0.5), random.threshold(1.0)
      ((2147483648, False), (0, True))
      >>> [t.item() for t in random.threshold(torch.tensor(0.25))]
      [1073741824, False]
    """
    if isinstance(p, (int, float)):
        count = dropspec.keep_threshold(float(p))
        return count % 2**32, count == 2**32
    p = torch.as_tensor(p).to(torch.float32).clamp(0.0, 1.0)
    always = p >= 1.0
    scaled = torch.floor(torch.where(always, 0.0, p) * 4294967296.0)
    return scaled.to(torch.int64), always


def bernoulli(key, p, shape: Sequence[int], *, device=None) -> torch.Tensor:
    """Booleans that are True with probability ``p`` (within ``2**-32``).

    Equal to ``jaxdrop.random.bernoulli(key, p, shape)`` for the same key and the same ``p``
    (a Python float here for a Python float there; a float32 tensor for a float32 array).

    Args:
      key: a threefry key (see :func:`key_data`).
      p: a Python float, or a tensor (scalar, or broadcastable to ``shape``), see
        :func:`threshold`.
      shape: the output shape, a sequence of ints >= 0.
      device: where to compute; default torch's default device (CPU unless changed).

    Returns:
      A bool tensor of ``shape``: ``bits(key, shape) < floor(p * 2**32)``, or True where
      ``p >= 1``.

    Example:
      >>> from torchdrop import random
      >>> draws = random.bernoulli(random.key(1), 0.25, (100_000,))
      >>> abs(draws.float().mean().item() - 0.25) < 0.01
      True
      >>> random.bernoulli(random.key(0), 0.5, (6,)).tolist()
      [False, False, True, True, False, True]
    """
    shape = _check_shape(shape)
    limits = threshold(p)
    p_shape = tuple(limits[1].shape) if isinstance(limits[1], torch.Tensor) else ()
    if not _broadcasts_to(p_shape, shape):
        raise ValueError(
            f"`p` must be a number or a tensor broadcastable to `shape` {shape}, "
            f"got shape {p_shape}."
        )
    return below_threshold(key, limits, shape, device=device)


def _check_limits(limits, shape: tuple[int, ...]):
    """``(limit, always)`` as Python ``(int, bool)``, or as broadcastable tensors."""
    rule = "a (threshold, always) pair from threshold(p)"
    if not (isinstance(limits, (tuple, list)) and len(limits) == 2):
        raise TypeError(f"`limits` must be {rule}, got {limits!r}.")
    limit, always = limits
    if not isinstance(limit, torch.Tensor) and not isinstance(always, torch.Tensor):
        if not (_is_int(limit) and isinstance(always, (bool, np.bool_))):
            raise TypeError(f"`limits` must be {rule}, got ({limit!r}, {always!r}).")
        if not 0 <= limit <= _MASK32:
            raise ValueError(f"`limits` must be {rule}: a threshold in [0, 2**32), got {limit}.")
        return limit, bool(always)
    limit, always = torch.as_tensor(limit), torch.as_tensor(always)
    if not _is_int_dtype(limit.dtype):
        kind = dropspec.dtype_name(limit.dtype)
        raise TypeError(f"`limits` must be {rule}: an integer threshold, got dtype {kind}.")
    if always.dtype != torch.bool:
        kind = dropspec.dtype_name(always.dtype)
        raise TypeError(f"`limits` must be {rule}: a bool `always`, got dtype {kind}.")
    for part in (limit, always):
        if not _broadcasts_to(tuple(part.shape), shape):
            raise ValueError(
                f"`limits` must broadcast to `shape` {shape}, got shape {tuple(part.shape)}."
            )
    return limit, always


def below_threshold(key, limits, shape: Sequence[int], *, device=None) -> torch.Tensor:
    """:func:`bernoulli` from a ``(threshold, always)`` pair made earlier by :func:`threshold`.

    Equal to ``jaxdrop.random.below_threshold``. Computing the pair first lets a caller convert
    a Python-float probability exactly, in float64, and pass it on as data.

    Args:
      key: a threefry key (see :func:`key_data`).
      limits: ``(threshold, always)``: Python ``(int, bool)``, the threshold in ``[0, 2**32)``,
        or an int64 tensor and a bool tensor, each broadcastable to ``shape`` (tensor
        thresholds are not range-checked).
      shape: the output shape, a sequence of ints >= 0.
      device: where to compute; default torch's default device (CPU unless changed).

    Returns:
      A bool tensor of ``shape``: ``bits(key, shape) < threshold``, or True where ``always``.

    Example:
      >>> from torchdrop import random
      >>> random.below_threshold(random.key(0), random.threshold(0.5), (6,)).tolist()
      [False, False, True, True, False, True]
    """
    shape = _check_shape(shape)
    limit, always = _check_limits(limits, shape)
    if isinstance(always, bool):
        if always or limit == 0:
            key_data(key)
            return torch.full(shape, always, dtype=torch.bool, device=device)
        return _bits_int32(key, shape, device, flip_sign=True) < _as_int32(limit ^ _SIGN_BIT)
    flipped = _bits_int32(key, shape, device, flip_sign=True)
    # A threshold below 2**32 less 2**31 fits in int32: compare in the signed order.
    signed_limit = (limit.to(flipped.device, torch.int64) - _SIGN_BIT).to(torch.int32)
    return (flipped < signed_limit) | always.to(flipped.device)


def uniform(key, shape: Sequence[int], *, device=None) -> torch.Tensor:
    """Float32 values in [0, 1), equal to ``jax.random.uniform(key, shape)``.

    The value is ``(bits >> 9) * 2**-23``: the top 23 bits as the mantissa, as in JAX.

    Args:
      key: a threefry key (see :func:`key_data`).
      shape: the output shape, a sequence of ints >= 0.
      device: where to compute; default torch's default device (CPU unless changed).

    Returns:
      A float32 tensor of ``shape``.

    Example:
      >>> from torchdrop import random
      >>> random.uniform(random.key(0), (3,)).tolist()
      [0.9476670026779175, 0.9785798788070679, 0.33229148387908936]
    """
    mantissa = _bits_int32(key, shape, device).bitwise_right_shift_(9).bitwise_and_(0x7FFFFF)
    return mantissa.to(torch.float32).mul_(2.0**-23)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without changing it."""
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False)
    )


def _check_extent(extent, shape: tuple[int, ...]):
    rule = "an int, or ints broadcastable to `shape`, each in [1, 2**31)"
    if isinstance(extent, torch.Tensor):
        if not _is_int_dtype(extent.dtype):
            kind = dropspec.dtype_name(extent.dtype)
            raise TypeError(f"`extent` must be {rule}, got a tensor of dtype {kind}.")
        values = extent
    elif _is_int(extent):
        if not 1 <= extent < 2**31:
            raise ValueError(f"`extent` must be {rule}, got {int(extent)}.")
        return int(extent)
    else:
        array = np.asarray(extent)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"`extent` must be {rule}, got {extent!r} (dtype {array.dtype}).")
        if array.size and not (array.min() >= 1 and array.max() < 2**31):
            raise ValueError(f"`extent` must be {rule}, got {array.tolist()!r}.")
        values = torch.as_tensor(array.astype(np.int64))
    if not _broadcasts_to(tuple(values.shape), shape):
        raise ValueError(
            f"`extent` must be {rule}, got shape {tuple(values.shape)} for `shape` {shape}."
        )
    return values


def uniform_index(key, shape: Sequence[int], extent, *, device=None) -> torch.Tensor:
    """Integers uniform on ``[0, extent)``: ``floor(bits * extent / 2**32)``, exactly.

    Equal to ``jaxdrop.random.uniform_index`` (which returns int32; the values are the same).

    Args:
      key: a threefry key (see :func:`key_data`).
      shape: the output shape, a sequence of ints >= 0.
      extent: an int, or ints (sequence, NumPy array or integer tensor) broadcastable to
        ``shape`` (e.g. one per trailing axis), each in ``[1, 2**31)``. A tensor's values are
        not checked. Each value is off uniform by at most ``extent / 2**32``.
      device: where to compute; default torch's default device (CPU unless changed).

    Returns:
      An int64 tensor of ``shape``.

    Example:
      >>> from torchdrop import random
      >>> random.uniform_index(random.key(0), (2, 3), [10, 100, 1000]).tolist()
      [[9, 97, 332], [4, 56, 165]]
    """
    shape = _check_shape(shape)
    extent = _check_extent(extent, shape)
    words = _to_uint32_values(_bits_int32(key, shape, device))
    if isinstance(extent, torch.Tensor):
        extent = extent.to(device=words.device, dtype=torch.int64)
    # words * extent < 2**32 * 2**31 fits in int64: the product is exact.
    return words.mul_(extent).bitwise_right_shift_(32)
