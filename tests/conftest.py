"""Shared test set-up: thread caps before TensorFlow loads, and models trained once per run."""

from __future__ import annotations

import os

# Before anything imports TensorFlow: two cores in CI, Keras 2 for TFMOT.
os.environ.setdefault("EDGESLIM_THREADS", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402

# Tiny converted models shared by tests/targets and tests/bundle, and the damaged model of the
# quantization-error tests (tests/ is on
# sys.path through pytest's `pythonpath` setting in pyproject.toml).
pytest_plugins = ["tiny_tflite", "damaged_model"]

SEED = 1234


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory):
    """The built-in digits data set as an .npz (x_train, y_train, x_test, y_test)."""
    from edgeslim import examples

    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    examples.write_digits_npz(path, seed=SEED)
    return path


@pytest.fixture(scope="session")
def digits_keras3_path(tmp_path_factory, digits_npz):
    """The built-in example model, trained briefly and saved with Keras 3 (.keras)."""
    from edgeslim import examples

    path = tmp_path_factory.mktemp("digits_model") / "digits_cnn.keras"
    examples.train_digits_model(path, digits_npz, seed=SEED)
    return path


@pytest.fixture(scope="session")
def digits_tfk_model(digits_keras3_path):
    """The example model bridged to tf_keras (Keras 2), ready for TFMOT."""
    from edgeslim.io.models import load_model

    return load_model(digits_keras3_path).model


@pytest.fixture(scope="session")
def digits_int8_bytes(digits_tfk_model, digits_npz):
    """The example model converted to int8 (calibrated on 128 training samples)."""
    import numpy as np

    from edgeslim import convert

    with np.load(digits_npz) as d:
        calib = d["x_train"][:128]
    return convert.to_int8_tflite(digits_tfk_model, calib)
