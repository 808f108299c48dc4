"""Regenerate tests/prebuilt/goldens/: .tflite files "converted elsewhere" for the tests of
`edgeslim build model.tflite` (edgeslim/prebuilt.py).

- float_io.tflite: int8 inside (CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, FULLY_CONNECTED,
  SOFTMAX) with float32 input and output (QUANTIZE / DEQUANTIZE at the edges);
- float.tflite: the same model left in float32 (must be refused);
- dynamic_range.tflite: int8 weights, float activations (must be refused).

The int8-I/O models (CONV/DEPTHWISE/FC/AVERAGE_POOL, a residual ADD, SOFTMAX) are the code
generator's goldens, tests/codegen/goldens/models/{ds_cnn,resnet}.tflite
(tools/gen_codegen_goldens.py). Seeded: the same TensorFlow gives the same files.

    python tools/gen_prebuilt_goldens.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "prebuilt" / "goldens"
SEED = 20261130


def _model():
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = L.AveragePooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(64, activation="relu", name="hidden")(x)  # > 1024 weights: dynamic-range quantizes it
    out = L.Dense(3, activation="softmax", name="fc")(x)
    m = keras.Model(inp, out, name="prebuilt")
    rng = np.random.default_rng(SEED)
    x_train = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y_train = (x_train.mean(axis=(1, 2, 3)) > 0).astype(np.int64) + (x_train[:, :4].mean(axis=(1, 2, 3)) > 0.3)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return m, x_train


def main() -> None:
    from edgeslim._tf import tf

    OUT.mkdir(parents=True, exist_ok=True)
    model, x = _model()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (OUT / "float.tflite").write_bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    (OUT / "dynamic_range.tflite").write_bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (OUT / "float_io.tflite").write_bytes(conv.convert())  # float32 I/O: the converter's default
    (OUT / "index.json").write_text(json.dumps({"seed": SEED, "tensorflow": tf.__version__,
                                                "input_shape": [8, 8, 1], "classes": 3}, indent=1) + "\n")
    for p in sorted(OUT.glob("*.tflite")):
        print(p.name, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
