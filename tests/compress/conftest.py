"""Fixtures for the compression stages: a small DS-CNN on sklearn's digits, trained once.

The model is depthwise-separable on purpose (what microcontrollers run) and uses
5x5 depthwise kernels, so each depthwise output channel has 25 weights: more
than 16, so "<= 16 unique values per channel" after clustering is a real claim.
"""

from __future__ import annotations

import numpy as np
import pytest

SEED = 1234


def build_dscnn(keras, *, prelu: bool = False):
    """conv1 -> dw1 -> pw1 -> dw2 -> pw2 -> pool -> dense_out (logits), on 8x8x1."""
    L = keras.layers
    inp = keras.Input((8, 8, 1), name="input")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(5, padding="same", name="dw1")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Conv2D(32, 1, name="pw1")(x)
    x = (L.PReLU(shared_axes=[1, 2], name="prelu") if prelu else L.ReLU(name="relu3"))(x)
    x = L.DepthwiseConv2D(5, padding="same", name="dw2")(x)
    x = L.ReLU(name="relu4")(x)
    x = L.Conv2D(32, 1, name="pw2")(x)
    x = L.ReLU(name="relu5")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    out = L.Dense(10, name="dense_out")(x)
    return keras.Model(inp, out, name="dscnn")


@pytest.fixture(scope="session")
def digits_data():
    from sklearn.datasets import load_digits

    from edgeslim.io.dataset import Dataset

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(SEED)
    idx = rng.permutation(len(x))
    tr, va, te = idx[:1200], idx[1200:1500], idx[1500:]
    return Dataset(
        x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], x_test=x[te], y_test=y[te],
        task="classification", num_classes=10, source="sklearn digits",
    )


@pytest.fixture(scope="session")
def ctx(digits_data):
    from edgeslim.compress.context import StageContext

    return StageContext(data=digits_data, seed=SEED, batch_size=32, patience=2)


def _train(model, ctx, epochs):
    """Plain seeded training (no early stopping) at a brisk learning rate."""
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    ctx.compile(model, learning_rate=1e-2)
    model.fit(ctx.data.x_train, ctx.data.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def dscnn(ctx):
    """The trained float baseline (tf_keras logits), 0.91 test accuracy (seeded)."""
    from edgeslim._tf import keras

    keras.utils.set_random_seed(SEED)
    return _train(build_dscnn(keras), ctx, 15)


@pytest.fixture(scope="session")
def dscnn_prelu(dscnn):
    """The baseline with relu3 replaced by a PReLU, a layer outside TFMOT 0.8.1's QAT
    registry. Its slopes start at 0, so it computes exactly what the baseline does."""
    from edgeslim._tf import keras

    model = build_dscnn(keras, prelu=True)
    for layer in model.layers:
        if layer.name != "prelu" and layer.weights:
            layer.set_weights(dscnn.get_layer(layer.name).get_weights())
    return model


def to_int8(model, x_rep: np.ndarray) -> bytes:
    """Fully-integer TFLite (int8 in/out) with representative data: what edgeslim ships."""
    from edgeslim._tf import tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep():
        for i in range(min(100, len(x_rep))):
            yield [x_rep[i : i + 1]]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def int8_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an int8 .tflite with LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, z = inp["quantization"]
    hits = 0
    for i in range(len(x)):
        q = np.clip(np.round(x[i : i + 1] / s + z), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], q)
        it.invoke()
        hits += int(np.argmax(it.get_tensor(out["index"])[0]) == y[i])
    return hits / len(x)


# -- stage outcomes, each computed once per run ------------------------------------

# The prune run exercises every override rule at once:
#   dense_out: skipped by exact name; pw2: regex "^pw" -> 0.7;
#   pw1: exact name (0.6) wins over the same regex; conv1: default 0.5;
#   dw1, dw2: the depthwise default 0.25.
PRUNE_EXPECTED = {"conv1": 0.5, "pw1": 0.6, "pw2": 0.7, "dw1": 0.25, "dw2": 0.25}


@pytest.fixture(scope="session")
def pruned(dscnn, ctx):
    from edgeslim.compress.overrides import LayerOverride
    from edgeslim.compress.prune import PruneConfig, prune

    cfg = PruneConfig(
        sparsity=0.5,
        depthwise_sparsity=0.25,
        epochs=2,
        overrides=(
            LayerOverride(layer="dense_out", skip=True),
            LayerOverride(regex="^pw", sparsity=0.7),
            LayerOverride(layer="pw1", sparsity=0.6),
        ),
    )
    return prune(dscnn, cfg, ctx=ctx)


@pytest.fixture(scope="session")
def pruned_clustered(pruned, ctx):
    from edgeslim.compress.cluster import ClusterConfig, cluster

    return cluster(pruned.model, ClusterConfig(clusters=16, epochs=1), ctx=ctx)


@pytest.fixture(scope="session")
def chain_qat(pruned_clustered, ctx):
    from edgeslim.compress.qat import QATConfig, qat

    return qat(pruned_clustered.model, QATConfig(epochs=1), ctx=ctx,
               preserve={"sparsity", "clusters"})


@pytest.fixture(scope="session")
def tflite_of(digits_data):
    """Memoised int8 conversion: tflite_of(key, model) -> bytes."""
    cache = {}

    def get(key, model):
        if key not in cache:
            cache[key] = to_int8(model, digits_data.x_train)
        return cache[key]

    return get


# Helpers as fixtures: with --import-mode=importlib tests cannot import conftest.
@pytest.fixture(scope="session")
def helpers():
    import types

    return types.SimpleNamespace(
        to_int8=to_int8, int8_accuracy=int8_accuracy, build_dscnn=build_dscnn,
        prune_expected=dict(PRUNE_EXPECTED),
    )
