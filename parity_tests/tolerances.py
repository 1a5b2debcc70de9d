"""The one table of tolerances every parity comparison uses, by dtype.

jaxdrop and torchdrop do the same float32 arithmetic, so op outputs and gradients differ by at
most the last-place rounding of a float32 value computed in a different order (XLA and ATen
fuse and vectorise differently), which a cast to a half-precision dtype may turn into one unit
in its last place. The half-precision rows allow two units (bfloat16: 8 significant bits, so
2**-6 relative; float16: 11, so 2**-9), because the peers (timm, torchvision) round an
intermediate (the normalisation scale) to the input dtype before the final product. The model
row covers a whole network, where convolutions and BatchNorm sum in different orders in XLA
and oneDNN.

Each comparison also requires identical shapes and identical non-finite positions, with no NaN
anywhere: NaNs are never masked away.
"""

from __future__ import annotations

import numpy as np

# row -> kind -> (rtol, atol); |actual - expected| <= atol + rtol * |expected|.
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "float32": {"output": (1e-6, 1e-7), "grad": (1e-6, 1e-7)},
    "bfloat16": {"output": (2**-6, 1e-6), "grad": (2**-6, 1e-6)},
    "float16": {"output": (2**-9, 1e-7), "grad": (2**-9, 1e-7)},
    "float32 model": {"output": (1e-4, 1e-5), "grad": (1e-4, 1e-5)},
}

# The worst relative error seen per comparison, row and kind in this session (printed by
# conftest.py): "jaxdrop vs torchdrop", or "torchdrop vs peer" for the oracle tests.
WORST: dict[tuple[str, str, str], float] = {}


def relative_error(actual: np.ndarray, expected: np.ndarray, floor: float = 0.0) -> float:
    """max |a - e| / max(|a|, |e|) over finite entries larger than ``floor`` (the absolute
    tolerance, below which a relative error says nothing)."""
    finite = np.isfinite(actual) & np.isfinite(expected)
    a, e = actual[finite].astype(np.float64), expected[finite].astype(np.float64)
    scale = np.maximum(np.abs(a), np.abs(e))
    nonzero = scale > floor
    if not nonzero.any():
        return 0.0
    return float(np.max(np.abs(a - e)[nonzero] / scale[nonzero]))


def assert_close(
    actual,
    expected,
    row: str,
    kind: str = "output",
    what: str = "",
    comparison: str = "jaxdrop vs torchdrop",
) -> None:
    """Asserts that ``actual`` matches ``expected`` within ``TOLERANCES[row][kind]``.

    Args:
      actual, expected: arrays of the same shape (NumPy, or anything ``np.asarray`` takes).
      row: a key of ``TOLERANCES`` (the dtype name, or "float32 model").
      kind: "output" or "grad".
      what: a label for the failure message.
      comparison: what is compared, for the summary of worst errors.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    label = f"{what} ({row}, {kind})"
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    assert not np.isnan(actual).any(), f"{label}: NaN in the first value"
    assert not np.isnan(expected).any(), f"{label}: NaN in the second value"
    same_inf = np.array_equal(np.isinf(actual), np.isinf(expected))
    assert same_inf, f"{label}: infinities at different positions"
    assert np.array_equal(actual[np.isinf(actual)], expected[np.isinf(expected)]), label
    rtol, atol = TOLERANCES[row][kind]
    finite = np.isfinite(expected)
    a, e = actual[finite], expected[finite]
    excess = np.abs(a - e) - (atol + rtol * np.abs(e))
    error = relative_error(actual, expected, atol)
    entry = (comparison, row, kind)
    WORST[entry] = max(WORST.get(entry, 0.0), error)
    if excess.size and excess.max() > 0:
        index = int(np.argmax(excess))
        raise AssertionError(
            f"{label}: {int((excess > 0).sum())} of {excess.size} values differ beyond "
            f"rtol={rtol:g}, atol={atol:g}; worst: {a[index]!r} vs {e[index]!r}; "
            f"max relative error {error:.3g}"
        )
