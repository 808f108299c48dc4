"""The command line on bad input: a clear message, exit code 2, no traceback, nothing written,
the user's files untouched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim._tf import tf  # noqa: F401  (used by the Lambda below)
from edgeslim.cli import cli


def run(args):
    """Run `edgeslim ARGS` as main() does: --debug may stand anywhere."""
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    return CliRunner().invoke(cli, args, obj={"debug": debug}, catch_exceptions=True)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_clean_failure(result, *words):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert "error:" in result.output
    for w in words:
        assert w in result.output, (w, result.output)


def test_help_lists_commands():
    result = run(["--help"])
    assert result.exit_code == 0
    for cmd in ("build", "check", "targets", "example"):
        assert cmd in result.output


def test_missing_model_file(tmp_path, digits_npz):
    out = tmp_path / "out"
    result = run(["build", str(tmp_path / "nope.keras"), "--data", str(digits_npz), "-o", str(out)])
    _assert_clean_failure(result, "nope.keras")
    assert not (out / "rpi").exists()


def test_corrupt_model_file(tmp_path, digits_npz):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    before = _digest(bad)
    out = tmp_path / "out"
    result = run(["build", str(bad), "--data", str(digits_npz), "-o", str(out)])
    _assert_clean_failure(result, "bad.keras")
    assert _digest(bad) == before
    assert not (out / "rpi").exists()


def test_unknown_target(tmp_path, digits_keras3_path, digits_npz):
    result = run(["build", str(digits_keras3_path), "--data", str(digits_npz), "--target", "pdp11",
                  "-o", str(tmp_path)])
    _assert_clean_failure(result, "pdp11", "cortex-m4", "rpi4")


def test_data_shape_mismatch_names_both_shapes(tmp_path, digits_keras3_path):
    data = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.random((50, 28, 28), dtype=np.float32), y_train=rng.integers(0, 10, 50))
    before = _digest(data)
    result = run(["build", str(digits_keras3_path), "--data", str(data), "-o", str(tmp_path / "o")])
    _assert_clean_failure(result, "(28, 28)", "(8, 8, 1)")
    assert _digest(data) == before


def test_labels_that_do_not_fit_the_output(tmp_path, digits_keras3_path):
    data = tmp_path / "labels.npz"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 13, 60)
    y[0] = 12
    np.savez(data, x_train=rng.random((60, 8, 8, 1), dtype=np.float32), y_train=y)
    result = run(["build", str(digits_keras3_path), "--data", str(data), "-o", str(tmp_path / "o")])
    _assert_clean_failure(result, "12", "10")


def test_invalid_recipe_key(tmp_path, digits_keras3_path, digits_npz):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[prune]\nsparsity = 0.5\nspeed = 'fast'\n")
    result = run(["build", str(digits_keras3_path), "--data", str(digits_npz), "--recipe", str(recipe),
                  "-o", str(tmp_path / "o")])
    _assert_clean_failure(result, "prune.speed", "sparsity", "epochs")


def test_debug_shows_the_traceback(tmp_path, digits_npz):
    result = run(["build", str(tmp_path / "nope.keras"), "--data", str(digits_npz), "--debug"])
    assert result.exit_code != 0
    assert result.exc_info is not None and result.exc_info[0].__name__.endswith("Error")


@pytest.fixture(scope="module")
def erf_model_h5(tmp_path_factory):
    """A model with an op TFLite has no builtin for (tf.math.erf in a Lambda), saved as .h5."""
    from edgeslim._tf import keras

    # `tf` must be a module global here (not a closure cell) so the Lambda can be saved;
    # tf_keras resolves it again when the trusted file is loaded.
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(16, name="fc")(x)
    x = keras.layers.Lambda(lambda t: tf.math.erf(t), name="erf_layer")(x)
    out = keras.layers.Dense(10, activation="softmax", name="out")(x)
    model = keras.Model(inp, out)
    path = tmp_path_factory.mktemp("erf") / "erf.h5"
    model.save(path)
    return path


def test_lambda_model_is_refused_without_trust(tmp_path, erf_model_h5, digits_npz):
    result = run(["build", str(erf_model_h5), "--data", str(digits_npz), "-o", str(tmp_path)])
    _assert_clean_failure(result, "--trust-model")


def test_model_that_fails_to_convert_names_the_op(tmp_path, erf_model_h5, digits_npz):
    out = tmp_path / "out"
    result = run(["build", str(erf_model_h5), "--data", str(digits_npz), "--trust-model",
                  "--no-prune", "--no-cluster", "--no-qat", "-o", str(out)])
    _assert_clean_failure(result, "Erf", "erf_layer")
    # nothing half-written: the output folder is only created once the model is ready
    assert not out.exists() or list(out.iterdir()) == []
