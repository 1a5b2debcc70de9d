"""Same key, same mask: torchdrop given the raw data of a JAX key draws what jaxdrop draws with
that key, so outputs and gradients agree with nothing injected.

Masks (the nonzero outputs: inputs are never zero) must agree bit for bit, values within the
tolerance table. The one exception is measured, not assumed: a tensor rate with
``calibration="exact"`` solves gamma in float32 with each framework's own ``log`` and ``exp``,
whose last bits differ (see ``test_exact_calibration_tensor_thresholds``).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxdrop
import torchdrop
from jaxdrop import random as jr
from parity_tests import helpers
from parity_tests.tolerances import assert_close
from torchdrop import random as tr

# Keys of several origins; every one is used by every case below.
KEYS = [
    jax.random.key(0),
    jax.random.key(1),
    jax.random.key(2**32 - 1),
    jax.random.key(-7),
    jax.random.split(jax.random.key(5), 3)[1],
    jax.random.fold_in(jax.random.key(42), 2**31 + 9),
]
# The raw data in each form torchdrop accepts, cycled through by the cases.
KEY_FORMS = [
    lambda k: tuple(int(w) for w in jax.random.key_data(k)),
    lambda k: np.asarray(jax.random.key_data(k)),
    lambda k: jax.random.key_data(k),
    lambda k: torch.tensor(np.asarray(jax.random.key_data(k)).astype(np.int64)),
]


def _compare(
    torch_op, jax_op, shape, *, dtype="float32", torch_kw, jax_kw, jax_dynamic=None, seed=0
):
    """For every key of ``KEYS``: runs torchdrop with ``key=<raw data>`` and jaxdrop with
    ``key=<the key>`` on the same input and cotangent (torch layout ``shape``; rank >= 3 moves
    the channel axis for JAX); compares kept units bit for bit and outputs and input gradients
    within the tolerance table. Returns the torch outputs."""
    rng = np.random.default_rng(seed)
    x = helpers.signed_input(rng, shape)
    cotangent = rng.standard_normal(shape).astype(np.float32)
    layout = helpers.to_jax_layout if len(shape) >= 3 else (lambda a: a)
    back = helpers.to_torch_layout if len(shape) >= 3 else (lambda a: a)
    x_t, cot_t = helpers.as_torch(x, dtype), helpers.as_torch(cotangent, dtype)
    x_j, cot_j = helpers.as_jax(layout(x), dtype), helpers.as_jax(layout(cotangent), dtype)
    outputs = []
    for index, key in enumerate(KEYS):
        key_data = KEY_FORMS[(index + seed) % len(KEY_FORMS)](key)
        out_t, grad_t = helpers.run_torch(
            lambda v, key_data=key_data: torch_op(v, key=key_data, **torch_kw), x_t, cot_t
        )
        out_j, grad_j = helpers.run_jax(
            jax_op, x_j, cot_j, {**(jax_dynamic or {}), "key": key}, **jax_kw
        )
        assert out_t.dtype == helpers.TORCH_DTYPES[dtype]
        out_t, grad_t = helpers.to_numpy(out_t), helpers.to_numpy(grad_t)
        out_j, grad_j = back(helpers.to_numpy(out_j)), back(helpers.to_numpy(grad_j))
        label = f"{getattr(torch_op, '__name__', 'op')} {shape} {jax_kw} key {index}"
        np.testing.assert_array_equal(out_t != 0, out_j != 0, err_msg=f"{label}: masks differ")
        assert_close(out_t, out_j, dtype, "output", label)
        assert_close(grad_t, grad_j, dtype, "grad", label)
        outputs.append(out_t)
    return outputs


def _rates(value: float, kind: str, jax_kw: dict, dynamic: dict):
    """The torch rate; the JAX rate goes into ``jax_kw`` (static float) or ``dynamic``."""
    rate_t, rate_j = helpers.rate_pair(value, kind)
    (jax_kw if kind == "float" else dynamic)["rate"] = rate_j
    return rate_t


def _some_dropped(outputs) -> bool:
    """Across the keys, some units dropped and some kept."""
    kept = np.stack([out != 0 for out in outputs])
    return bool(kept.any() and not kept.all())


# --------------------------------------------------------------------------------------------
# DropBlock.
# --------------------------------------------------------------------------------------------

GEOMETRIES = [
    ("1d-odd", (9,), 3),
    ("1d-even", (8,), 4),
    ("1d-larger", (5,), 7),
    ("2d-odd-h!=w", (6, 9), 3),
    ("2d-even-h!=w", (7, 5), (2, 4)),
    ("2d-block1", (5, 6), 1),
    ("3d-even", (4, 5, 6), 2),
    ("3d-mixed-larger", (3, 4, 5), (3, 1, 6)),
]
GEOMETRY = {name: (spatial, block) for name, spatial, block in GEOMETRIES}
NORMALIZE = ("batch", "example", "expected", "none")
CALIBRATIONS = ("paper", "exact")


def _drop_block(spatial, block, *, dtype="float32", rate=0.3, rate_kind="float", seed=0, **options):
    jax_kw, dynamic = dict(options, block_size=block), {}
    rate_t = _rates(rate, rate_kind, jax_kw, dynamic)
    return _compare(
        torchdrop.drop_block,
        jaxdrop.drop_block,
        (2, 3, *spatial),
        dtype=dtype,
        torch_kw=dict(options, rate=rate_t, block_size=block),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
        seed=seed,
    )


@pytest.mark.parametrize(
    ("index", "case"),
    list(
        enumerate(itertools.product([g[0] for g in GEOMETRIES], ("valid", "full"), (False, True)))
    ),
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_drop_block_geometry(index, case):
    """Every geometry, seed region and channel mode (Python rate); normalisation and
    calibration cycle through their values across the cases."""
    name, region, share = case
    spatial, block = GEOMETRY[name]
    outputs = _drop_block(
        spatial,
        block,
        seed_region=region,
        share_channels=share,
        normalize=NORMALIZE[index % 4],
        calibration=CALIBRATIONS[index // 4 % 2],
        seed=index,
    )
    assert _some_dropped(outputs)
    if share:  # One mask for all channels.
        assert all(((out != 0) == (out[:, :1] != 0)).all() for out in outputs)


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("name", ["1d-even", "2d-odd-h!=w", "3d-even"])
def test_drop_block_tensor_rate_paper(name, rate, normalize):
    """A float32 tensor rate, paper calibration: gamma is one float32 product in both, so the
    threshold and the mask are identical."""
    spatial, block = GEOMETRY[name]
    _drop_block(spatial, block, rate=rate, rate_kind="tensor", normalize=normalize)


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("region", ["valid", "full"])
@pytest.mark.parametrize("name", ["1d-larger", "2d-even-h!=w", "3d-mixed-larger"])
def test_drop_block_tensor_rate_exact(name, region, share):
    """A float32 tensor rate, exact calibration: the thresholds may differ by a few counts in
    2**32 (see test_exact_calibration_tensor_thresholds); on these keys the masks agree."""
    spatial, block = GEOMETRY[name]
    _drop_block(
        spatial,
        block,
        rate=0.3,
        rate_kind="tensor",
        seed_region=region,
        share_channels=share,
        calibration="exact",
        normalize="expected",
    )


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("name", ["1d-odd", "2d-even-h!=w", "3d-even"])
@pytest.mark.parametrize("dtype", helpers.DTYPES)
def test_drop_block_dtypes(dtype, name, normalize):
    spatial, block = GEOMETRY[name]
    index = NORMALIZE.index(normalize) + helpers.DTYPES.index(dtype)
    _drop_block(
        spatial,
        block,
        dtype=dtype,
        rate_kind=("float", "tensor")[index % 2],
        seed_region=("valid", "full")[index // 2 % 2],
        share_channels=index % 3 == 0,
        normalize=normalize,
    )


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_drop_block_rate_extremes(rate, rate_kind):
    outputs = _drop_block((6, 5), 3, rate=rate, rate_kind=rate_kind, calibration="exact", eps=1e-3)
    assert all(((out == 0).all() if rate == 1 else (out != 0).all()) for out in outputs)


# --------------------------------------------------------------------------------------------
# DropPath, stochastic depth, SpatialDropout, Cutout, Uout.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale_by_keep", [True, False])
@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("shape", [(8,), (8, 7), (8, 3, 5, 6)], ids=["rank1", "rank2", "rank4"])
def test_drop_path(shape, mode, rate_kind, scale_by_keep):
    jax_kw, dynamic = dict(mode=mode, scale_by_keep=scale_by_keep), {}
    rate_t = _rates(0.5, rate_kind, jax_kw, dynamic)
    outputs = _compare(
        torchdrop.drop_path,
        jaxdrop.drop_path,
        shape,
        torch_kw=dict(rate=rate_t, mode=mode, scale_by_keep=scale_by_keep),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )
    assert _some_dropped(outputs)


@pytest.mark.parametrize("dtype", helpers.DTYPES)
def test_drop_path_dtypes(dtype):
    _compare(
        torchdrop.drop_path,
        jaxdrop.drop_path,
        (8, 3, 4, 5),
        dtype=dtype,
        torch_kw=dict(rate=0.3),
        jax_kw=dict(rate=0.3),
    )


# A branch of correctly rounded operations only (see test_ops.py).
def _branch(h):
    return 1.5 * h + 0.25 * (h * h)


def _sd_torch(x, **kwargs):
    return torchdrop.stochastic_depth(_branch, x, **kwargs)


def _sd_jax(x, **kwargs):
    return jaxdrop.stochastic_depth(_branch, x, **kwargs)


_sd_torch.__name__ = "stochastic_depth"


@pytest.mark.parametrize("scaling", ["inverted", "test"])
@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth(mode, rate_kind, scaling):
    """Batch mode: the keys both keep and drop the branch (lax.cond in JAX under jit, a Python
    branch in torch)."""
    jax_kw, dynamic = dict(mode=mode, scaling=scaling), {}
    rate_t = _rates(0.5, rate_kind, jax_kw, dynamic)
    outputs = _compare(
        _sd_torch,
        _sd_jax,
        (8, 3, 5, 6),
        torch_kw=dict(rate=rate_t, mode=mode, scaling=scaling),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )
    assert _some_dropped(outputs)
    if mode == "batch":
        assert {bool((out == 0).all()) for out in outputs} == {False, True}


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize(
    "shape", [(4, 6, 7), (4, 6, 5, 6), (4, 6, 3, 4, 5)], ids=["1d", "2d", "3d"]
)
def test_spatial_dropout(shape, dtype, rate_kind):
    jax_kw, dynamic = {}, {}
    rate_t = _rates(0.4, rate_kind, jax_kw, dynamic)
    outputs = _compare(
        torchdrop.spatial_dropout,
        jaxdrop.spatial_dropout,
        shape,
        dtype=dtype,
        torch_kw=dict(rate=rate_t),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )
    assert _some_dropped(outputs)
    for out in outputs:  # Whole maps.
        maps = (out != 0).reshape(*shape[:2], -1)
        assert (maps.all(axis=-1) | ~maps.any(axis=-1)).all()


CUTOUT_CASES = [
    ("1d", (3, 2, 11), 3, 1),
    ("2d-even-h!=w", (3, 2, 6, 9), (2, 4), 1),
    ("2d-holes", (3, 2, 7, 7), 3, 3),
    ("2d-larger", (3, 2, 4, 5), 6, 2),
    ("3d", (3, 2, 4, 5, 6), (2, 3, 2), 2),
]


@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize(
    ("name", "shape", "size", "num_holes"), CUTOUT_CASES, ids=[c[0] for c in CUTOUT_CASES]
)
def test_cutout(name, shape, size, num_holes, dtype):
    options = dict(size=size, num_holes=num_holes, fill=0.0)
    outputs = _compare(
        torchdrop.cutout, jaxdrop.cutout, shape, dtype=dtype, torch_kw=options, jax_kw=options
    )
    assert _some_dropped(outputs)
    # Centres differ between keys: the holes move.
    assert len({out.tobytes() for out in outputs}) > 1


@pytest.mark.parametrize("rate_kind", ["float", "tensor"])
@pytest.mark.parametrize("dtype", helpers.DTYPES)
@pytest.mark.parametrize("shape", [(5,), (4, 6), (3, 4, 5), (3, 4, 5, 6), (2, 3, 4, 2, 3)])
def test_uout(shape, dtype, rate_kind):
    """The noise is drawn in jaxdrop's channels-last shape (rank >= 3) and moved: a noise drawn
    in torch's own layout would differ far beyond the tolerance."""
    jax_kw, dynamic = {}, {}
    rate_t = _rates(0.3, rate_kind, jax_kw, dynamic)
    _compare(
        torchdrop.uout,
        jaxdrop.uout,
        shape,
        dtype=dtype,
        torch_kw=dict(rate=rate_t),
        jax_kw=jax_kw,
        jax_dynamic=dynamic,
    )


def test_raw_prng_keys_and_key_chains():
    """A raw ``jax.random.PRNGKey`` and keys derived in torchdrop.random from the same seed."""
    x = np.random.default_rng(3).uniform(0.5, 1.5, (4, 3, 8, 8)).astype(np.float32)
    for seed in (0, 17, 2**32 - 2):
        raw = jax.random.PRNGKey(seed)
        derived = jax.random.fold_in(jax.random.split(raw)[1], 6)
        torch_derived = tr.fold_in(tr.split(tr.key(seed))[1], 6)
        for jax_key, torch_key in ((raw, np.asarray(raw)), (derived, torch_derived)):
            out_j = jaxdrop.drop_block(jnp.asarray(helpers.to_jax_layout(x)), 0.2, 3, key=jax_key)
            out_t = torchdrop.drop_block(torch.from_numpy(x), 0.2, 3, key=torch_key)
            out_j = helpers.to_torch_layout(np.asarray(out_j))
            np.testing.assert_array_equal(out_t.numpy() != 0, out_j != 0)
            assert_close(out_t.numpy(), out_j, "float32", "output", f"seed {seed}")


@settings(derandomize=True, max_examples=25, deadline=None)
@given(
    words=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    spatial=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    block=st.integers(1, 4),
    rate=st.floats(0.05, 0.95),
    region=st.sampled_from(["valid", "full"]),
    share=st.booleans(),
)
def test_property_any_key_and_shape(words, spatial, batch, channels, block, rate, region, share):
    """Random raw keys (JAX's jax.random.wrap_key_data of the same words) and shapes: the
    DropBlock masks and the Uout noise agree bit for bit."""
    shape = (batch, channels, *spatial)
    rng = np.random.default_rng(sum(shape))
    x = helpers.signed_input(rng, shape)
    key = jax.random.wrap_key_data(jnp.asarray(words, jnp.uint32))
    options = dict(seed_region=region, share_channels=share)
    out_t = torchdrop.drop_block(torch.from_numpy(x), rate, block, key=words, **options)
    x_j = jnp.asarray(helpers.to_jax_layout(x))
    out_j = helpers.to_torch_layout(
        np.asarray(jaxdrop.drop_block(x_j, rate, block, key=key, **options))
    )
    np.testing.assert_array_equal(out_t.numpy() != 0, out_j != 0)
    assert_close(out_t.numpy(), out_j, "float32", "output", f"drop_block {shape} {options}")
    noise_t = torchdrop.uout(torch.ones(shape), rate, key=words).numpy() - 1.0
    noise_j = helpers.to_torch_layout(np.asarray(jaxdrop.uout(jnp.ones(x_j.shape), rate, key=key)))
    np.testing.assert_array_equal(noise_t, noise_j - 1.0)


# --------------------------------------------------------------------------------------------
# Exact calibration with a tensor rate: float32 log/exp differ in their last bits.
# --------------------------------------------------------------------------------------------

THRESHOLD_RATES = np.linspace(0.002, 0.998, 100, dtype=np.float32)
# Measured over these rates and geometries: up to 8 float32 ulps of gamma apart (half of the
# cases agree exactly), i.e. up to a few hundred counts of the 2**32 threshold scale.
MAX_ULPS = 12


@pytest.mark.parametrize("region", ["valid", "full"])
@pytest.mark.parametrize("name", ["1d-larger", "2d-odd-h!=w", "2d-block1", "3d-even"])
def test_exact_calibration_tensor_thresholds(name, region):
    """Each framework solves the exact calibration in float32 with its own log and exp: gamma
    agrees within ``MAX_ULPS`` float32 ulps, so the thresholds differ by at most
    ``MAX_ULPS * ulp(gamma) * 2**32`` counts, and a seed can differ only where JAX's bits fall
    between the two thresholds; this checks both on full-size draws."""
    spatial, block = GEOMETRY[name]
    options = dict(seed_region=region, calibration="exact")
    shape_t, shape_j = (4, 8, *spatial), (4, *spatial, 8)
    gamma_j = jax.jit(lambda r: jaxdrop.drop_block_gamma(shape_j, r, block, **options))
    gamma_t = lambda r: torchdrop.drop_block_gamma(shape_t, torch.tensor(r), block, **options)
    ours = np.array([gamma_t(r).item() for r in THRESHOLD_RATES], np.float32)
    theirs = np.array([gamma_j(jnp.float32(r)) for r in THRESHOLD_RATES], np.float32)
    ulps = np.abs(ours.view(np.int32).astype(np.int64) - theirs.view(np.int32).astype(np.int64))
    assert ulps.max() <= MAX_ULPS, ulps.max()
    seed_shape = jaxdrop.drop_block_seed_shape(shape_j, block, seed_region=region)
    key = jax.random.key(len(name))
    key_t = tr.key_data(jax.random.key_data(key))
    bits = np.asarray(jax.random.bits(key, seed_shape, jnp.uint32)).astype(np.int64)
    for rate, g_t, g_j in zip(THRESHOLD_RATES[::9], ours[::9], theirs[::9]):
        limits_t, limits_j = tr.threshold(torch.tensor(g_t)), jr.threshold(jnp.float32(g_j))
        low, high = sorted((int(limits_t[0]), int(limits_j[0])))
        seeds_t = tr.below_threshold(key_t, limits_t, seed_shape).numpy()
        seeds_j = np.asarray(jr.below_threshold(key, limits_j, seed_shape))
        band = (bits >= low) & (bits < high)
        assert not ((seeds_t != seeds_j) & ~band).any(), rate


# --------------------------------------------------------------------------------------------
# Identical errors.
# --------------------------------------------------------------------------------------------

X_T, X_J = torch.ones(2, 3, 6, 7), jnp.ones((2, 6, 7, 3))
KEY_J = jax.random.key(0)
KEY_T = tuple(int(w) for w in jax.random.key_data(KEY_J))
BOTH = {
    "drop_block": (
        lambda **kw: torchdrop.drop_block(X_T, 0.1, 3, **kw),
        lambda **kw: jaxdrop.drop_block(X_J, 0.1, 3, **kw),
        "seeds",
        torch.zeros(2, 3, 4, 5, dtype=torch.bool),
        jnp.zeros((2, 4, 5, 3), bool),
    ),
    "drop_path": (
        lambda **kw: torchdrop.drop_path(X_T, 0.1, **kw),
        lambda **kw: jaxdrop.drop_path(X_J, 0.1, **kw),
        "keep",
        torch.ones(2, dtype=torch.bool),
        jnp.ones(2, bool),
    ),
    "stochastic_depth": (
        lambda **kw: torchdrop.stochastic_depth(abs, X_T, 0.1, **kw),
        lambda **kw: jaxdrop.stochastic_depth(abs, X_J, 0.1, **kw),
        "keep",
        torch.tensor(True),
        jnp.asarray(True),
    ),
    "spatial_dropout": (
        lambda **kw: torchdrop.spatial_dropout(X_T, 0.1, **kw),
        lambda **kw: jaxdrop.spatial_dropout(X_J, 0.1, **kw),
        "keep",
        torch.ones(2, 3, dtype=torch.bool),
        jnp.ones((2, 3), bool),
    ),
    "cutout": (
        lambda **kw: torchdrop.cutout(X_T, 2, **kw),
        lambda **kw: jaxdrop.cutout(X_J, 2, **kw),
        "centers",
        torch.zeros(2, 2, dtype=torch.int32),
        jnp.zeros((2, 2), jnp.int32),
    ),
    "uout": (
        lambda **kw: torchdrop.uout(X_T, 0.1, **kw),
        lambda **kw: jaxdrop.uout(X_J, 0.1, **kw),
        "noise",
        torch.zeros(2, 3, 6, 7),
        jnp.zeros((2, 6, 7, 3)),
    ),
}


@pytest.mark.parametrize("op", sorted(BOTH))
def test_key_with_the_presampled_draw_same_error(op):
    call_t, call_j, name, given_t, given_j = BOTH[op]
    with pytest.raises(ValueError) as jax_error:
        call_j(key=KEY_J, **{name: given_j})
    with pytest.raises(ValueError) as torch_error:
        call_t(key=KEY_T, **{name: given_t})
    assert str(torch_error.value) == str(jax_error.value)


@pytest.mark.parametrize("op", sorted(BOTH))
def test_a_keyed_call_checks_its_other_arguments_alike(op):
    """With a key, a bad rate (or size) still gets the shared message, before any draw."""
    call_t, call_j, *_ = BOTH[op]
    bad = {"num_holes": 0} if op == "cutout" else {"training": "yes"}
    jax_bad = {"num_holes": 0} if op == "cutout" else {"deterministic": "yes"}
    with pytest.raises((TypeError, ValueError)) as jax_error:
        call_j(key=KEY_J, **jax_bad)
    with pytest.raises(jax_error.type) as torch_error:
        call_t(key=KEY_T, **bad)
    expected = str(jax_error.value).replace("`deterministic`", "`training`")
    assert str(torch_error.value) == expected
