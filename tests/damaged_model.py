"""A float model with one deliberately damaged layer (conv2), for the per-layer quantization
error: tests/test_quant_debug.py and tests/test_inspect_quant.py. A plugin of tests/conftest.py:
the ``damaged`` fixture converts it once per run."""

from __future__ import annotations

import numpy as np
import pytest

SEED = 1234


def damaged_model(keras, *, conv3: bool = True):
    """conv1 -> conv2 -> conv3 -> mean -> fc, 12x12x2 in, where conv2 is damaged.

    Input channel 7 of conv2 and conv3 is dead (its bias is -100 before the ReLU: always 0 on
    every input), so weights on it change nothing in float, but an outlier weight there sets
    the per-channel int8 scale. conv2's outliers (8.0, against weights of about 0.2) round
    most of its other weights to 0 or +-1 step: the damage. conv3's (16.0) damage it a little
    less, measured against the already noisy input, so the cumulative error keeps growing
    downstream of conv2 while conv2 is the layer that loses the most.

    ``conv3=False``: conv2 is the only damaged layer (conv2's channel 7 stays alive and conv3
    has no outlier), for tests that keep one layer in float and need the rest clean.
    """
    keras.utils.set_random_seed(SEED)
    inp = keras.layers.Input((12, 12, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(inp, x)

    def edit(name, outlier=None, dead=False):
        w, b = model.get_layer(name).get_weights()
        if outlier is not None:
            w[:, :, 7, :] = outlier
        if dead:
            b[7] = -100.0
        model.get_layer(name).set_weights([w, b])

    edit("conv1", dead=True)
    edit("conv2", outlier=8.0, dead=conv3)
    if conv3:
        edit("conv3", outlier=16.0)
    return model


@pytest.fixture(scope="session")
def damaged():
    """(the float tf_keras model, its int8 .tflite calibrated on 64 samples, 256 other samples)."""
    from edgeslim import convert
    from edgeslim._tf import keras

    model = damaged_model(keras)
    x = np.random.default_rng(SEED).standard_normal((320, 12, 12, 2)).astype(np.float32)
    return model, convert.to_int8_tflite(model, x[:64]), x[64:]
