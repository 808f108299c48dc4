"""Tiny int8 .tflite models, converted once per session with the real TFLiteConverter.

A pytest plugin (loaded from tests/conftest.py) shared by tests/targets and tests/bundle."""

from __future__ import annotations

import numpy as np
import pytest

SEED = 1234


def convert_int8(model, input_shape, seed=SEED):
    from edgeslim._tf import tf

    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(32):
            yield [rng.standard_normal((1,) + tuple(input_shape)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def tiny_cnn():
    """conv1 (relu) -> dw1 (depthwise) -> flatten -> dense_out -> softmax, 8x8x1 in, 3 classes."""
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    return keras.Sequential(name="tiny_cnn", layers=[
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
        keras.layers.DepthwiseConv2D(3, name="dw1"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(3, name="dense_out"),
        keras.layers.Softmax(name="softmax"),
    ])


@pytest.fixture(scope="session")
def tiny_cnn_model():
    return tiny_cnn()


@pytest.fixture(scope="session")
def tiny_cnn_bytes(tiny_cnn_model):
    return convert_int8(tiny_cnn_model, (8, 8, 1))


@pytest.fixture(scope="session")
def tiny_cnn_fp16_bytes(tiny_cnn_model):
    """The same model converted with float16 weights (the GPU-delegate model)."""
    from edgeslim._tf import tf

    conv = tf.lite.TFLiteConverter.from_keras_model(tiny_cnn_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return conv.convert()


@pytest.fixture(scope="session")
def gelu_bytes():
    """An int8 GELU (a real TFLite builtin that TFLite Micro lacks), from layer 'act_gelu'."""
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    m = keras.Sequential(name="gelu_net", layers=[
        keras.layers.Input((8,)),
        keras.layers.Dense(8, name="d1"),
        keras.layers.Activation("gelu", name="act_gelu"),
        keras.layers.Dense(2, name="out"),
    ])
    return convert_int8(m, (8,))


@pytest.fixture(scope="session")
def cumsum_bytes():
    """tf.math.cumsum in a Lambda 'cum': the int8 converter leaves it in float32
    (DEQUANTIZE -> CUMSUM float -> QUANTIZE)."""
    from edgeslim._tf import keras, tf

    keras.utils.set_random_seed(SEED)
    m = keras.Sequential(name="cumsum_net", layers=[
        keras.layers.Input((8,)),
        keras.layers.Dense(8, name="d1"),
        keras.layers.Lambda(lambda x: tf.math.cumsum(x, axis=-1), name="cum"),
        keras.layers.Dense(2, name="out"),
    ])
    return convert_int8(m, (8,))


def with_scale(model_bytes: bytes, tensor_name_part: str, scale: float) -> tuple[bytes, str]:
    """The model with the first quantized activation tensor (no data in the file)
    whose name contains ``tensor_name_part`` given ``scale`` (re-serialized
    flatbuffer); and that name."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    for t in m.subgraphs[0].tensors:
        buf = m.buffers[t.buffer] if t.buffer else None
        if buf is not None and buf.data is not None and len(buf.data):
            continue  # weights: a tiny scale there is a zeroed channel, not a hazard
        if tensor_name_part in t.name.decode() and t.quantization is not None and t.quantization.scale is not None:
            t.quantization.scale = [scale] * len(t.quantization.scale)
            name = t.name.decode()
            break
    else:
        raise AssertionError(f"no quantized tensor named like {tensor_name_part}")
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), name


@pytest.fixture(scope="session")
def scale_patcher():
    return with_scale


@pytest.fixture(scope="session")
def macs_model():
    """9x9x3 -> conv 4 filters 3x3 stride 2 SAME (5x5x4) -> depthwise 3x3 multiplier 2 VALID
    (3x3x8) -> average pool 2x2 stride 1 (2x2x8) -> global average (MEAN, 8) -> dense 5."""
    from edgeslim._tf import keras

    keras.utils.set_random_seed(7)
    m = keras.Sequential(name="macs", layers=[
        keras.layers.Input((9, 9, 3)),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", name="dw"),
        keras.layers.AveragePooling2D(2, strides=1, name="pool"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        # a non-zero bias: the converter drops an all-zero FULLY_CONNECTED bias
        keras.layers.Dense(5, bias_initializer="ones", name="fc"),
    ])
    return convert_int8(m, (9, 9, 3))
