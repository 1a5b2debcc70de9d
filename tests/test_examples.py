"""The examples run end to end in a tiny setting and write what they promise.

Each script's ``main(argv)`` is called in-process (one JAX and one torch import for all), with a
few steps on a few digits and ``--out`` in a temporary folder.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
TINY = ["--steps", "3", "--train-size", "40", "--no-progress"]
FINAL = re.compile(r"final test accuracy: (\d\.\d{4})")


@pytest.fixture(scope="module")
def examples():
    """Imports the example scripts, which import each other as top-level modules."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def assert_png(path: pathlib.Path, min_side: int = 100) -> None:
    """``path`` is a readable PNG image of a sensible size."""
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 0, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side, image.shape
    assert np.ptp(image) > 0, "blank image"


def test_common_split_and_batches(examples):
    common = examples("_common")
    data = common.load_digits()
    assert data.train_images.shape == (1297, 8, 8) and data.test_images.shape == (500, 8, 8)
    assert abs(float(data.train_images.mean())) < 1e-4
    small = common.load_digits(100)
    assert len(small.train_labels) == 100 and set(small.train_labels) == set(range(10))
    np.testing.assert_array_equal(small.test_labels, data.test_labels)  # the same test digits
    batches = list(common.batch_indices(10, 4, 5, seed=0))
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(np.concatenate(batches[:2])) == sorted(set(np.concatenate(batches[:2])))
    config = common.Config(steps=100, learning_rate=1.0)
    assert common.learning_rate_at(config, 0) == 0.0
    assert common.learning_rate_at(config, config.warmup_steps) == pytest.approx(1.0)
    assert common.learning_rate_at(config, 100) == pytest.approx(0.0, abs=1e-12)


def test_learning_rate_matches_optax(examples):
    import optax

    common = examples("_common")
    config = common.Config(steps=200)
    reference = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, config.steps
    )
    for step in (0, 5, 10, 50, 199):
        expected = float(reference(step))  # float32
        assert common.learning_rate_at(config, step) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_train_flax_writes_curves_and_prints_accuracy(examples, tmp_path, capsys):
    history = examples("train_flax").main([*TINY, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    match = FINAL.search(out)
    assert match and float(match.group(1)) == pytest.approx(history.final_accuracy, abs=1e-4)
    assert len(history.loss) == 3 and np.isfinite(history.loss).all()
    assert history.rate[0] == 0.0 and history.rate[-1] == pytest.approx(0.1)  # the ramp
    assert_png(tmp_path / "flax_dropblock.png")
    # The ramped rate is traced: three steps with three rates, one compilation.
    train_flax = examples("train_flax")
    config = examples("_common").Config(steps=3)
    assert train_flax.compile_functions(train_flax._code_key(config)).step._cache_size() == 1


@pytest.mark.parametrize(
    "regularizer, depth_mode",
    [("dropout", "row"), ("spatial", "row"), ("cutout", "row"), ("droppath", "batch")],
)
def test_train_flax_step_traces_for_each_regularizer(examples, regularizer, depth_mode):
    """The steps that no other test compiles: traced (not compiled) with abstract values."""
    import jax
    import jax.numpy as jnp

    train_flax = examples("train_flax")
    common = examples("_common")
    config = common.Config(regularizer=regularizer, steps=10, depth_mode=depth_mode)
    fns = train_flax.compile_functions(config)
    params, batch_stats = train_flax.init_variables(0)
    state = (params, batch_stats, fns.optimizer.init(params))
    images = jax.ShapeDtypeStruct((8, 8, 8, 1), jnp.float32)
    labels = jax.ShapeDtypeStruct((8,), jnp.int32)
    _, loss, accuracy, _ = jax.eval_shape(
        fns.step, state, images, labels, jnp.int32(0), jax.random.key(0)
    )
    assert loss.shape == () and accuracy.shape == ()


TORCH_CASES = [(name, "row") for name in ("none", "dropout", "spatial", "dropblock", "cutout")]
TORCH_CASES += [("droppath", "row"), ("droppath", "batch")]


@pytest.mark.parametrize("regularizer, depth_mode", TORCH_CASES)
def test_train_torch_writes_curves_and_prints_accuracy(
    examples, tmp_path, capsys, regularizer, depth_mode
):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchdrop")
    argv = [*TINY, "--out", str(tmp_path), "--regularizer", regularizer]
    argv += ["--depth-mode", depth_mode]
    threads = torch.get_num_threads()
    try:
        history = examples("train_torch").main(argv)
    finally:
        torch.set_num_threads(threads)  # main() sets 1 thread for the process
    match = FINAL.search(capsys.readouterr().out)
    assert match and float(match.group(1)) == pytest.approx(history.final_accuracy, abs=1e-4)
    assert np.isfinite(history.loss).all()
    assert_png(tmp_path / f"torch_{regularizer}.png")


def test_torch_ramp_sets_the_rate_of_every_feature_drop(examples):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchdrop")
    train_torch = examples("train_torch")
    model = train_torch.ResNet("dropblock", 0.1, torch.Generator().manual_seed(0))
    model.set_rate(torch.tensor(0.05))
    rates = [float(block.drop.rate) for block in model.blocks]
    assert rates == pytest.approx([0.05] * len(model.blocks))


def test_compare_regularizers_prints_a_row_per_regularizer(examples, capsys):
    argv = ["--regularizers", "none,droppath", "--seeds", "2", "--steps", "3", "--train-size", "40"]
    accuracies = examples("compare_regularizers").main(argv)
    out = capsys.readouterr().out
    assert set(accuracies) == {"none", "droppath"}
    assert all(len(values) == 2 for values in accuracies.values())
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| regulariser |")
    assert len(rows) == 3
    assert rows[1].startswith("| no regulariser | - | ")
    assert rows[2].startswith("| DropPath (StochasticDepth, depth_rates) | 0.2 | ")
    assert re.search(r"\| [+-]\d\.\d{4} ± \d\.\d{4} \|$", rows[2])


def test_visualize_masks_writes_the_figure(examples, tmp_path, capsys):
    fractions = examples("visualize_masks").main(["--out", str(tmp_path)])
    assert_png(tmp_path / "masks.png", min_side=300)
    out = capsys.readouterr().out
    assert len(fractions) == 2
    for values in fractions.values():
        assert len(values) == 9
        assert 0.0 < values["Dropout"] < 0.3
        for name, value in values.items():
            assert f"| {name} |" in out
            assert 0.0 <= value <= 1.0


def test_variance_shift_measures_the_predicted_ratios(examples, capsys):
    results = examples("variance_shift").main(["--quick"])
    out = capsys.readouterr().out
    assert len(results) == len(
        [line for line in out.splitlines() if line.startswith("| D") or line.startswith("| U")]
    )
    for row in results:
        for key in ("c=0", "ReLU"):
            predicted, measured = row[key]
            assert measured == pytest.approx(predicted, rel=0.02), (row["op"], row["rate"], key)
    dropout = {row["rate"]: row["c=0"][1] for row in results if row["op"] == "Dropout"}
    uout = {row["rate"]: row["c=0"][1] for row in results if row["op"] == "Uout"}
    assert uout[0.1] < dropout[0.1] and uout[0.5] < dropout[0.5]
