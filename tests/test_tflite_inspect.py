"""tflite_inspect on small models with hand-set weights, so every figure is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeslim.errors import ModelFormatError
from edgeslim.tflite_inspect import inspect_tflite, merge_targets, unmet_targets

SEED = 7


def _model():
    """conv (4 out, 3x3, 4 in) -> depthwise 3x3 -> flatten -> dense 3, weights set by hand.

    conv: output channel o has its first 9*o input values zeroed (sparsity o/4 per channel,
    3/8 overall) and 2:4 groups along its 4 input channels in channel 0 only.
    depthwise: channel c holds c + 2 distinct values (0.1 * k, k = 1..c+2).
    dense: output row j has 8*j zeros out of 16 * 4 = 64 ... see below.
    """
    from edgeslim._tf import keras

    L = keras.layers
    inp = keras.Input((6, 6, 4), name="x")
    h = L.Conv2D(4, 3, padding="same", name="conv_a")(inp)
    h = L.DepthwiseConv2D(3, padding="same", name="dw_a")(h)
    h = L.Flatten(name="flat")(h)
    out = L.Dense(3, name="fc_a")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(SEED)

    conv = rng.uniform(0.2, 1.0, (3, 3, 4, 4)).astype(np.float32)  # [H, W, I, O]
    for o in range(4):
        flat = conv[..., o].reshape(-1)
        flat[: 9 * o] = 0.0
        conv[..., o] = flat.reshape(3, 3, 4)
    # channel 0: in every group of 4 input channels zero the first two
    conv[:, :, 0:2, 0] = 0.0
    dw = np.zeros((3, 3, 4, 1), np.float32)
    for c in range(4):
        vals = 0.1 * np.arange(1, c + 3)
        dw[..., c, 0] = np.resize(vals, 9).reshape(3, 3)
    fc = rng.uniform(0.2, 1.0, (144, 3)).astype(np.float32)
    fc[:72, 2] = 0.0  # row 2 of the TFLite [O, I] matrix is half zeros
    model.get_layer("conv_a").set_weights([conv, np.zeros(4, np.float32)])
    model.get_layer("dw_a").set_weights([dw, np.zeros(4, np.float32)])
    model.get_layer("fc_a").set_weights([fc, np.zeros(3, np.float32)])
    return model, conv, dw, fc


@pytest.fixture(scope="module")
def converted():
    from edgeslim._tf import tf

    model, conv, dw, fc = _model()
    rng = np.random.default_rng(SEED)
    rep = rng.uniform(0, 1, (20, 6, 6, 4)).astype(np.float32)

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    int8 = c.convert()
    flt = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return {"int8": int8, "float": flt, "conv": conv, "dw": dw, "fc": fc,
            "layers": [l.name for l in model.layers]}


def test_ops_names_and_dtypes(converted):
    info = inspect_tflite(converted["int8"], converted["layers"])
    assert info.op_names == ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE"]
    by_op = {o.opcode: o for o in info.ops}
    assert by_op["CONV_2D"].layer == "conv_a"
    assert by_op["DEPTHWISE_CONV_2D"].layer == "dw_a"
    assert by_op["FULLY_CONNECTED"].layer == "fc_a"
    assert by_op["CONV_2D"].input_dtypes == ["INT8", "INT8", "INT32"]
    assert info.input_dtypes == ["INT8"] and info.output_dtypes == ["INT8"]
    assert info.float_ops == []


def test_float_model_lists_float_ops_by_layer(converted):
    info = inspect_tflite(converted["float"])
    assert {o.opcode for o in info.float_ops} == {
        "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE"}
    assert {o.layer for o in info.float_ops if o.opcode != "RESHAPE"} == {"conv_a", "dw_a", "fc_a"}
    w = info.weights_by_layer()
    # float weights: sparsity is exact zeros of the float values
    assert w["conv_a"].dtype == "FLOAT32" and w["conv_a"].quantization == "none"
    assert w["conv_a"].sparsity == pytest.approx(np.mean(converted["conv"] == 0))


def test_weights_sparsity_unique_and_layout(converted):
    info = inspect_tflite(converted["int8"], converted["layers"])
    w = info.weights_by_layer()
    conv, dw, fc = converted["conv"], converted["dw"], converted["fc"]

    c = w["conv_a"]
    assert c.shape == (4, 3, 3, 4) and c.dtype == "INT8" and c.channels == 4
    assert c.quantization == "per-channel" and c.zero_point == 0
    assert c.sparsity == pytest.approx(np.mean(conv == 0))
    # TFLite conv layout [O, H, W, I] = Keras [H, W, I, O] transposed
    np.testing.assert_array_equal(c.zeros_mask(), np.transpose(conv, (3, 0, 1, 2)) == 0)

    d = w["dw_a"]
    assert d.shape == (1, 3, 3, 4) and d.channel_axis == 3
    # channel c holds c + 2 distinct values, so per-channel counts are 2, 3, 4, 5
    assert d.unique_per_channel_max == 5
    assert d.unique_per_channel_mean == pytest.approx(3.5)
    assert d.blocks_2of4 is None  # 2:4 is not defined for depthwise kernels

    f = w["fc_a"]
    assert f.shape == (3, 144) and f.channel_axis == 0
    assert f.sparsity == pytest.approx(np.mean(fc == 0))
    json.dumps(info.to_dict())  # report.json-ready
    assert info.to_dict()["weights"][0]["layer"] == "conv_a"
    assert info.weight_sparsity == pytest.approx(
        (np.sum(conv == 0) + np.sum(fc == 0)) / (conv.size + dw.size + fc.size))


def test_two_of_four_blocks(converted):
    w = inspect_tflite(converted["int8"]).weights_by_layer()
    zeros = w["conv_a"].zeros_mask().reshape(-1, 4)
    assert w["conv_a"].blocks_2of4 == pytest.approx(np.mean(zeros.sum(axis=1) >= 2))
    # channel 0 (the first 9 groups) is 2:4; not every group of the tensor is
    assert zeros[:9].sum(axis=1).min() >= 2
    assert w["conv_a"].blocks_2of4 < 1.0


def test_unmet_targets(converted):
    info = inspect_tflite(converted["int8"], converted["layers"])
    sp = info.weights_by_layer()["conv_a"].sparsity
    targets = merge_targets(
        {"conv_a": {"sparsity": sp, "structure": "2:4"}, "fc_a": {"sparsity": 0.9}},
        {"dw_a": {"clusters": 4}, "conv_a": {"clusters": 36}, "gone": {"clusters": 8}},
    )
    unmet = {(u["layer"], u["key"]) for u in unmet_targets(info, targets)}
    assert unmet == {("conv_a", "structure"), ("fc_a", "sparsity"), ("dw_a", "clusters"),
                     ("gone", "layer")}


def test_not_a_tflite_file():
    with pytest.raises(ModelFormatError, match="not a TFLite model") as err:
        inspect_tflite(b"PK\x03\x04 definitely a zip")
    assert err.value.hint
