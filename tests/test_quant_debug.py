"""Per-layer quantization error (edgeslim.quant_debug) on real conversions and LiteRT runs."""

from __future__ import annotations

import numpy as np
import pytest

from damaged_model import SEED
from edgeslim.errors import DataError

# An int8 layer of a healthy model: rounding one tensor to 8 bits gives ~40 dB on these models;
# 30 dB leaves room for accumulation over the digits model's 9 layers.
HEALTHY_DB = 30.0


def test_the_damaged_layer_is_named_first(damaged):
    from edgeslim.quant_debug import layer_errors, worst_first

    model, tflite, x = damaged
    errors = layer_errors(tflite, model, x)
    by = {e.layer: e for e in errors}
    assert [e.layer for e in errors] == ["conv1", "conv2", "conv3", "gap", "fc"]
    ranked = worst_first(errors)
    assert ranked[0].layer == "conv2"
    # it loses most, by far: >= 15 dB, and >= 10 dB more than any other layer
    assert by["conv2"].added_snr_db >= 15.0
    assert by["conv2"].added_snr_db - ranked[1].added_snr_db >= 10.0
    # ... while the lowest cumulative SNR is downstream of it (ranking by SNR would blame conv3)
    lowest = min(errors, key=lambda e: e.snr_db)
    assert lowest.op_index > by["conv2"].op_index
    assert lowest.snr_db <= by["conv2"].snr_db - 1.5
    # the undamaged layers add little: conv1 and the layers after the damage
    for name in ("conv1", "gap", "fc"):
        assert by[name].added_snr_db < 3.0, by[name]
    assert by["conv1"].snr_db >= HEALTHY_DB
    # the diagnosis: its int8 weights use a handful of levels, so keep it float or fix the weights
    assert by["conv2"].weight_median_steps <= 4
    assert "outliers" in by["conv2"].suggestion and "float" in by["conv2"].suggestion
    assert by["conv1"].suggestion == ""
    assert by["conv2"].rmse_steps > 2.0 > by["conv1"].rmse_steps


def test_a_healthy_model_is_above_the_threshold_everywhere(digits_tfk_model, digits_int8_bytes, digits_npz):
    from edgeslim.quant_debug import analyse

    with np.load(digits_npz) as d:
        x = d["x_test"]
    tflite = digits_int8_bytes

    def history(model):  # which layer produced each layer's output, and each layer's call count
        return [(layer.name, len(layer._inbound_nodes), layer.output._keras_history.layer.name)
                for layer in model.layers]

    before = history(digits_tfk_model)
    result = analyse(tflite, digits_tfk_model, x, max_samples=200)
    # the caller's model is untouched: the per-layer cuts are made on a copy (cutting the
    # model itself rewired its tensors' history, and the channel stage then saw another graph)
    assert history(digits_tfk_model) == before
    assert result.samples == 200
    names = [e.layer for e in result.errors]
    keras_names = [layer.name for layer in digits_tfk_model.layers]
    assert set(names) <= set(keras_names) and len(names) == len(set(names))
    # every layer with weights is measured; the output Dense (FULLY_CONNECTED + SOFTMAX) as one
    assert {"conv1", "dw1", "pw1", "dw2", "pw2", "fc1", "output"} <= set(names)
    out = next(e for e in result.errors if e.layer == "output")
    assert out.ops == ["FULLY_CONNECTED", "SOFTMAX"] and out.added_method == "propagated"
    for e in result.errors:
        assert e.snr_db >= HEALTHY_DB, e
        assert e.suggestion == "", e
        assert e.rmse_steps is not None and 0.2 <= e.rmse_steps <= 1.5, e
    assert [s["op"] for s in result.skipped] == ["FULLY_CONNECTED"]
    assert result.to_dict()["worst_first"][0] in names


def test_fused_batchnorm_and_relu_and_float_io():
    """conv + BatchNorm + ReLU layer is one CONV_2D: reported under conv1, compared with relu1's
    output; a float-in/float-out model's QUANTIZE and DEQUANTIZE are skipped and listed."""
    from edgeslim import convert
    from edgeslim._tf import keras
    from edgeslim.quant_debug import analyse

    keras.utils.set_random_seed(SEED)
    inp = keras.layers.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inp, x)
    xs = np.random.default_rng(SEED).standard_normal((96, 8, 8, 1)).astype(np.float32)
    result = analyse(convert.to_int8_tflite(model, xs[:32], int8_io=False), model, xs)
    first = result.errors[0]
    assert (first.op, first.layer, first.compared_with) == ("CONV_2D", "conv1", "relu1")
    assert [e.layer for e in result.errors] == ["conv1", "flat", "fc"]
    assert {s["op"] for s in result.skipped} == {"QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED"}
    assert result.input_snr_db is not None and result.input_snr_db > 30.0
    assert all(e.snr_db > HEALTHY_DB for e in result.errors)


def test_inputs_that_do_not_fit(damaged):
    from edgeslim.quant_debug import layer_errors

    model, tflite, _ = damaged
    with pytest.raises(DataError, match="do not fit"):
        layer_errors(tflite, model, np.zeros((4, 8, 8, 2), np.float32))
    with pytest.raises(DataError, match="no samples"):
        layer_errors(tflite, model, np.zeros((0, 12, 12, 2), np.float32))


def test_a_keras3_model_is_bridged_to_tf_keras_first():
    import keras as keras3

    from edgeslim import convert
    from edgeslim.io.keras3_bridge import bridge_keras3_model
    from edgeslim.quant_debug import layer_errors

    keras3.utils.set_random_seed(SEED)
    m3 = keras3.Sequential([keras3.Input((6, 6, 1)),
                            keras3.layers.Conv2D(4, 3, activation="relu", name="k3conv"),
                            keras3.layers.Flatten(name="k3flat"),
                            keras3.layers.Dense(3, name="k3dense")])
    xs = np.random.default_rng(SEED).standard_normal((64, 6, 6, 1)).astype(np.float32)
    tflite = convert.to_int8_tflite(bridge_keras3_model(m3)[0], xs[:32])
    errors = layer_errors(tflite, m3, xs)
    assert [e.layer for e in errors] == ["k3conv", "k3flat", "k3dense"]
    assert all(e.snr_db > HEALTHY_DB for e in errors)
