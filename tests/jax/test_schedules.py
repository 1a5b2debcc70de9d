"""Schedules: the DropBlock linear ramp and per-block stochastic-depth rates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdrop
from jaxdrop import schedules
from tests.reference import drop_fraction_std


def test_linear_ramp_values():
    schedule = schedules.linear_ramp(0.2, total_steps=10, start_step=5)
    got = [float(schedule(step)) for step in (0, 5, 10, 15, 100)]
    np.testing.assert_allclose(got, [0.0, 0.0, 0.1, 0.2, 0.2], rtol=1e-6)


def test_linear_ramp_under_jit_drives_a_traced_rate_with_one_compilation():
    schedule = schedules.linear_ramp(0.5, total_steps=4)
    x = jnp.ones((64, 8, 8, 4))

    @jax.jit
    def fraction(step, key):
        y = jaxdrop.drop_block(x, schedule(step), 3, key=key, calibration="exact", normalize="none")
        return jnp.mean(y == 0)

    for step, rate in enumerate([0.0, 0.125, 0.25, 0.375, 0.5]):
        got = float(fraction(step, jax.random.key(step)))
        gamma = jaxdrop.drop_block_gamma(x.shape, rate, 3, calibration="exact")
        sigma = drop_fraction_std((8, 8), (3, 3), "valid", gamma, 64 * 4)
        assert abs(got - rate) <= 4 * sigma, (step, got, rate)
    assert fraction._cache_size() == 1


def test_linear_ramp_composes_with_optax_schedules():
    ramp = schedules.linear_ramp(0.3, total_steps=10)
    joined = optax.join_schedules([ramp, optax.constant_schedule(0.1)], boundaries=[20])
    np.testing.assert_allclose([float(joined(s)) for s in (5, 15, 25)], [0.15, 0.3, 0.1], rtol=1e-6)


def test_depth_rates_rules():
    np.testing.assert_allclose(schedules.depth_rates(0.5, 5), [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(
        schedules.depth_rates(0.5, 5, rule="linspace"), [0, 0.125, 0.25, 0.375, 0.5]
    )
    assert schedules.depth_rates(0.4, 1, rule="linspace") == [0.0]


def test_depth_rates_by_stage_count_depth_across_stages():
    stages = schedules.depth_rates(0.6, [1, 2, 3])
    assert [len(s) for s in stages] == [1, 2, 3]
    np.testing.assert_allclose(np.concatenate(stages), schedules.depth_rates(0.6, 6))


@pytest.mark.parametrize("rule", ["huang", "linspace"])
def test_depth_rates_end_at_the_final_rate_and_never_decrease(rule):
    rates = schedules.depth_rates(0.37, 12, rule=rule)
    assert rates[-1] == pytest.approx(0.37)
    assert np.all(np.diff(rates) >= 0)
