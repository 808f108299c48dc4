"""Whole models through the generated C, bit-exact with tflite-micro on 200 inputs each:
the digits example (trained here, converted by edgeslim.convert), and a DS-CNN, a small
residual network and a MobileNet-style network (trained briefly on digits by
tools/gen_codegen_goldens.py). Also: the generated arena against TFLite Micro's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeslim.codegen import generate
from edgeslim.modelgraph import read as read_graph

N = 200
SEED = 1234


def _digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    from edgeslim._tf import tf
    from edgeslim.examples import load_digits_arrays

    x, y = load_digits_arrays()
    if size != x.shape[1]:
        x = tf.image.resize(x, (size, size)).numpy()
    return x, y


def _quantize_input(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    g = read_graph(model_bytes)
    t = g.tensors[g.inputs[0]]
    q = np.round(x / t.scale) + t.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


@pytest.fixture(scope="module")
def digits_int8(tmp_path_factory):
    """The built-in example's architecture and data, trained with tf_keras, int8."""
    from edgeslim._tf import keras
    from edgeslim.convert import to_int8_tflite
    from edgeslim.examples import build_digits_model, write_digits_npz

    npz = write_digits_npz(tmp_path_factory.mktemp("digits") / "digits.npz", seed=SEED)
    with np.load(npz) as d:
        x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    keras.utils.set_random_seed(SEED)
    model = build_digits_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(4e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    rng = np.random.default_rng(SEED)
    calib = x_train[rng.choice(len(x_train), 100, replace=False)]
    return to_int8_tflite(model, calib), x_test, y_test


def _model_case(name, chost, digits_int8):
    if name == "digits":
        model, x, y = digits_int8
    else:
        path = chost.goldens / "models" / f"{name}.tflite"
        meta = json.loads((chost.goldens / "index.json").read_text())[path.name]
        model = path.read_bytes()
        x, y = _digits_images(meta["input_size"])
        x, y = x[-N:], y[-N:]  # the generator trained on the first 1400 images
    return model, _quantize_input(model, x[:N]), y[:N]


@pytest.mark.parametrize("name", ["digits", "ds_cnn", "resnet", "mobilenet"])
def test_whole_model_bit_exact(name, tmp_path, chost, digits_int8):
    model, xq, y = _model_case(name, chost, digits_int8)
    result = generate(model, tmp_path / "c", name=name)
    ops = {o.op for o in result.ops}
    expected = {
        "digits": {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"},
        "ds_cnn": {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED"},
        "resnet": {"CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"},
        "mobilenet": {"PAD", "HARD_SWISH", "MUL", "LOGISTIC", "ADD", "MEAN", "CONCATENATION",
                      "MAX_POOL_2D", "AVERAGE_POOL_2D", "TANH", "SOFTMAX", "DEPTHWISE_CONV_2D"},
    }[name]
    assert expected <= ops, expected - ops
    exe = chost.build([result], tmp_path / "build")
    ref = chost.tflm(model, xq)
    got = chost.run(exe, 0, xq, ref.dtype, ref.shape[1:])
    assert got.shape[0] == N == 200
    np.testing.assert_array_equal(got, ref)
    # Trained, not degenerate: the C library classifies held-out digits.
    acc = float(np.mean(got.reshape(N, -1).argmax(axis=1) == y))
    assert acc >= 0.6, acc
    # The plan is sound and no worse than the bound by much.
    assert result.plan.peak >= result.plan.lower_bound > 0
    assert result.arena_size <= 1.25 * result.plan.lower_bound + 64


@pytest.mark.parametrize("name", ["digits", "ds_cnn", "resnet", "mobilenet"])
def test_arena_no_larger_than_tflite_micro(name, tmp_path, chost, digits_int8):
    """Arena plus the caller's input and output buffers against TFLite Micro's arena
    (which holds input and output too), measured in a child process."""
    from edgeslim.micro import measure_arena

    model, _, _ = _model_case(name, chost, digits_int8)
    result = generate(model, tmp_path / "c", name=name)
    tflm = measure_arena(model)
    ours = result.arena_size + result.input_bytes + result.output_bytes
    print(f"{name}: C arena {result.arena_size} + io {result.input_bytes + result.output_bytes}"
          f" (lower bound {result.plan.lower_bound}) vs TFLM arena {tflm}")
    assert ours <= tflm
