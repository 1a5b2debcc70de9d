"""Masks are the same on one device or eight, and only "batch" normalisation communicates.

The programs live in ``eight_devices.py`` and run in a subprocess, because XLA fixes the
number of simulated devices when it starts.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

PROGRAM = pathlib.Path(__file__).with_name("eight_devices.py")
ROOT = PROGRAM.parents[2]


def run_on_eight_devices(which: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(PROGRAM), which],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return run_on_eight_devices("ops")


@pytest.fixture(scope="module")
def training():
    return run_on_eight_devices("training")


NAMES = [
    "drop_block_batch",
    "drop_block_example",
    "drop_block_expected",
    "drop_block_none",
    "drop_block_example_grad",
    "drop_path",
    "drop_path_grad",
    "spatial_dropout",
    "cutout",
    "uout",
]


@pytest.mark.parametrize("name", NAMES)
def test_batch_sharded_output_is_bit_identical_and_stays_sharded(results, name):
    assert results[name]["identical"]
    assert results[name]["stays_sharded"]


@pytest.mark.parametrize("name", [n for n in NAMES if n != "drop_block_batch"])
def test_no_collective_outside_batch_normalisation(results, name):
    assert results[name]["collectives"] == []


def test_batch_normalisation_needs_exactly_its_all_reduce(results):
    assert results["drop_block_batch"]["collectives"] == ["all-reduce"]


@pytest.mark.parametrize("normalize", ["example", "expected", "batch", "None"])
def test_data_parallel_step_matches_one_device(training, normalize):
    result = training[normalize]
    assert result["loss8"] == pytest.approx(result["loss1"], rel=1e-6)
    assert result["max_rel_grad_diff"] < 1e-5
    assert result["other_collectives"] == []


def test_data_parallel_step_adds_only_the_batch_normalisation_all_reduce(training):
    gradients_only = training["None"]["all_reduce_elements"]
    assert gradients_only > 0
    assert training["example"]["all_reduce_elements"] == gradients_only
    assert training["expected"]["all_reduce_elements"] == gradients_only
    # One int32 count for each of the two DropBlock layers with batch normalisation.
    assert training["batch"]["all_reduce_elements"] == gradients_only + 2
