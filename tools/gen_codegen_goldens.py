"""Regenerate tests/codegen/goldens/: small int8 .tflite models for the C generator's tests.

Seeded and deterministic in what it builds (layer kinds, shapes, options); never edit
the outputs by hand. The tests compute reference outputs with tflite-micro themselves,
so the goldens are only inputs. Usage:

    .venv/bin/python tools/gen_codegen_goldens.py --models all --errors   # everything (~10 min)
    .venv/bin/python tools/gen_codegen_goldens.py --ops conv_2d,add   # some families only

ops/<family>_NN.tflite: 20 random single-op models per family (shapes, strides, padding,
dilation, depth multipliers, per-channel scales, activations drawn from a seeded RNG;
wide_depthwise: 10, ``--ops wide_depthwise --count 10``);
models/*.tflite: DS-CNN, residual net, MobileNet-style (and a clustered copy) trained
briefly on sklearn's digits; errors/*.tflite: models the generator must refuse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402

from edgeslim._tf import keras, tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "codegen" / "goldens"
SEED = 20240611
L = keras.layers


def convert(model, *, seed: int, float_io: bool = False, data=None) -> bytes:
    """Fully-integer conversion with a seeded representative data set."""
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)

    def rep():
        for i in range(32):
            if data is not None:
                yield [data[i % len(data)][None].astype(np.float32)]
            else:
                yield [rng.normal(0.0, 1.5, (1,) + shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _act(rng):
    return [None, "relu", "relu6"][rng.integers(0, 3)]


def _randomize(model, rng):
    """Weights with a spread of magnitudes so scales differ across channels."""
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            new = []
            for w in ws:
                if w.ndim >= 1:
                    gain = rng.uniform(0.05, 2.0, size=w.shape[-1]).astype(np.float32)
                    new.append((rng.normal(0, 1, w.shape) * gain).astype(np.float32))
                else:
                    new.append(w)
            layer.set_weights(new)
    return model


# ---- one builder per op: (rng) -> (keras model, options dict) -------------------------
def _dilated(rng, depthwise: bool):
    """A dilated convolution as one TF op with dilations (Keras' own layers lower dilation
    to SPACE_TO_BATCH_ND + conv + BATCH_TO_SPACE_ND, which the converter does not always
    fuse back); bias and activation follow, to be fused by the converter."""
    h, w, c = int(rng.integers(4, 10)), int(rng.integers(4, 10)), int(rng.integers(1, 6))
    k = (int(rng.integers(2, 4)), int(rng.integers(2, 4)))
    dil = int(rng.integers(2, 4))
    pad = ["SAME", "VALID"][rng.integers(0, 2)]
    if pad == "VALID" and (h < (k[0] - 1) * dil + 1 or w < (k[1] - 1) * dil + 1):
        pad = "SAME"
    mult = int(rng.integers(1, 3))
    out_c = c * mult if depthwise else int(rng.integers(1, 7))
    wshape = (k[0], k[1], c, mult) if depthwise else (k[0], k[1], c, out_c)
    gain = rng.uniform(0.05, 2.0, size=wshape[-1])
    filt = tf.constant((rng.normal(0, 1, wshape) * gain).astype(np.float32))
    bias = tf.constant(rng.normal(0, 1, out_c).astype(np.float32))
    act = _act(rng)

    def op(t):
        if depthwise:
            y = tf.raw_ops.DepthwiseConv2dNative(input=t, filter=filt, strides=[1, 1, 1, 1],
                                                 padding=pad, dilations=[1, dil, dil, 1])
        else:
            y = tf.nn.conv2d(t, filt, strides=1, padding=pad, dilations=dil)
        y = tf.nn.bias_add(y, bias)
        return {None: y, "relu": tf.nn.relu(y), "relu6": tf.nn.relu6(y)}[act]

    x = L.Input((h, w, c))
    return keras.Model(x, L.Lambda(op, name="dw" if depthwise else "conv")(x))


def b_conv_2d(rng):
    if rng.integers(0, 4) == 0:
        return _dilated(rng, depthwise=False)
    h, w, c = rng.integers(3, 10), rng.integers(3, 10), rng.integers(1, 6)
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride = int(rng.integers(1, 3))
    pad = ["same", "valid"][rng.integers(0, 2)]
    if pad == "valid" and (h < k[0] or w < k[1]):
        pad = "same"
    x = L.Input((h, w, c))
    y = L.Conv2D(int(rng.integers(1, 7)), k, strides=stride, padding=pad,
                 activation=_act(rng), use_bias=bool(rng.integers(0, 2)), name="conv")(x)
    return keras.Model(x, y)


def _depthwise(rng, h, w, c):
    """DEPTHWISE_CONV_2D on an h x w x c input: kernel, stride, padding, depth multiplier
    (1-3), activation and bias drawn from ``rng``, in this order."""
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride = int(rng.integers(1, 3))
    pad = ["same", "valid"][rng.integers(0, 2)]
    if pad == "valid" and (h < k[0] or w < k[1]):
        pad = "same"
    x = L.Input((h, w, c))
    y = L.DepthwiseConv2D(k, strides=stride, padding=pad,
                          depth_multiplier=int(rng.integers(1, 4)), activation=_act(rng),
                          use_bias=bool(rng.integers(0, 2)), name="dw")(x)
    return keras.Model(x, y)


def b_depthwise_conv_2d(rng):
    if rng.integers(0, 4) == 0:
        return _dilated(rng, depthwise=True)
    return _depthwise(rng, rng.integers(3, 10), rng.integers(3, 10), rng.integers(1, 6))


def b_wide_depthwise(rng):
    """DEPTHWISE_CONV_2D with 6-20 input channels (the optimized kernels' groups of four
    and eight channels, with and without a remainder) and depth multipliers 1-3."""
    return _depthwise(rng, rng.integers(3, 8), rng.integers(3, 8), rng.integers(6, 21))


def b_fully_connected(rng):
    n = int(rng.integers(1, 24))
    if rng.integers(0, 4) == 0:  # batch > 1 inside the op: input [batch, n]
        x = L.Input((n,), batch_size=int(rng.integers(2, 4)))
    else:
        x = L.Input((n,))
    y = L.Dense(int(rng.integers(1, 12)), activation=_act(rng),
                use_bias=bool(rng.integers(0, 2)), name="fc")(x)
    return keras.Model(x, y)


def _pool(rng, cls):
    h, w, c = rng.integers(2, 10), rng.integers(2, 10), rng.integers(1, 5)
    p = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pad = ["same", "valid"][rng.integers(0, 2)]
    if pad == "valid" and (h < p[0] or w < p[1]):
        pad = "same"
    x = L.Input((h, w, c))
    y = L.Conv2D(c, 1, name="pre")(x)  # gives the pool a quantized, non-input tensor
    y = cls(p, strides=s, padding=pad, name="pool")(y)
    return keras.Model(x, y)


def b_average_pool_2d(rng):
    return _pool(rng, L.AveragePooling2D)


def b_max_pool_2d(rng):
    return _pool(rng, L.MaxPooling2D)


def b_mean(rng):
    h, w, c = rng.integers(1, 9), rng.integers(1, 9), rng.integers(1, 6)
    x = L.Input((h, w, c))
    y = L.Conv2D(c, 1, name="pre")(x)
    kind = rng.integers(0, 3)
    if kind == 0:
        y = L.GlobalAveragePooling2D(name="gap")(y)
    elif kind == 1:
        y = L.GlobalAveragePooling2D(keepdims=True, name="gap")(y)
    else:
        y = L.Lambda(lambda t: tf.reduce_mean(t, axis=-1), name="mean_c")(y)
    return keras.Model(x, y)


def b_add(rng):
    h, w, c = rng.integers(2, 7), rng.integers(2, 7), rng.integers(1, 5)
    x = L.Input((h, w, c))
    a = L.Conv2D(c, 1, activation=_act(rng), name="a")(x)
    if rng.integers(0, 3) == 0:  # broadcast over H and W
        b = L.GlobalAveragePooling2D(keepdims=True, name="b")(x)
    else:
        b = L.Conv2D(c, int(rng.integers(1, 3)), padding="same", name="b")(x)
    y = L.Add(name="add")([a, b])
    if rng.integers(0, 2):
        y = L.ReLU(name="relu")(y)
    return keras.Model(x, y)


def b_mul(rng):
    h, w, c = rng.integers(2, 7), rng.integers(2, 7), rng.integers(1, 5)
    x = L.Input((h, w, c))
    a = L.Conv2D(c, 1, name="a")(x)
    if rng.integers(0, 2):  # squeeze-and-excite style broadcast
        b = L.GlobalAveragePooling2D(keepdims=True, name="b")(x)
    else:
        b = L.Conv2D(c, 1, name="b")(x)
    return keras.Model(x, L.Multiply(name="mul")([a, b]))


def b_reshape(rng):
    h, w, c = rng.integers(1, 6), rng.integers(1, 6), rng.integers(1, 5)
    x = L.Input((h, w, c), batch_size=1)  # static shapes: RESHAPE without SHAPE ops
    y = L.Conv2D(c, 1, name="pre")(x)
    kind = rng.integers(0, 3)
    if kind == 0:
        y = L.Flatten(name="flat")(y)  # the model's output: a copy
    elif kind == 1:
        y = L.Reshape((int(w), int(h * c)), name="reshape")(y)
        y = L.Dense(3, name="fc")(y)
    else:
        y = L.Flatten(name="flat")(y)
        y = L.Dense(int(rng.integers(1, 6)), name="fc")(y)
    return keras.Model(x, y)


def b_softmax(rng):
    x = L.Input((int(rng.integers(1, 20)),))
    y = L.Dense(int(rng.integers(2, 16)), name="fc")(x)
    return keras.Model(x, L.Softmax(name="softmax")(y))


def b_logistic(rng):
    x = L.Input((int(rng.integers(1, 20)),))
    y = L.Dense(int(rng.integers(1, 16)), name="fc")(x)
    return keras.Model(x, L.Activation("sigmoid", name="sigmoid")(y))


def b_tanh(rng):
    x = L.Input((int(rng.integers(1, 20)),))
    y = L.Dense(int(rng.integers(1, 16)), name="fc")(x)
    return keras.Model(x, L.Activation("tanh", name="tanh")(y))


def b_hard_swish(rng):
    h, w, c = rng.integers(1, 6), rng.integers(1, 6), rng.integers(1, 5)
    x = L.Input((h, w, c))
    y = L.Conv2D(int(rng.integers(1, 5)), 1, name="pre")(x)
    y = L.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) * (1.0 / 6.0), name="hswish")(y)
    return keras.Model(x, y)


def b_pad(rng):
    h, w, c = rng.integers(1, 6), rng.integers(1, 6), rng.integers(1, 4)
    x = L.Input((h, w, c))
    y = L.Conv2D(c, 1, name="pre")(x)
    pads = ((int(rng.integers(0, 3)), int(rng.integers(0, 3))),
            (int(rng.integers(0, 3)), int(rng.integers(0, 3))))
    if rng.integers(0, 3) == 0:
        v = float(rng.normal())
        y = L.Lambda(lambda t: tf.pad(t, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]],
                                      constant_values=v), name="padv2")(y)
    else:
        y = L.ZeroPadding2D(pads, name="pad")(y)
    return keras.Model(x, y)


def b_concatenation(rng):
    h, w, c = rng.integers(1, 6), rng.integers(1, 6), rng.integers(1, 4)
    x = L.Input((h, w, c))
    n = int(rng.integers(2, 4))
    branches = [L.Conv2D(int(rng.integers(1, 4)), 1, name=f"b{i}")(x) for i in range(n)]
    axis = -1 if rng.integers(0, 2) else 1
    if axis == 1:
        branches = [L.Conv2D(2, 1, name=f"s{i}")(b) for i, b in enumerate(branches)]
    return keras.Model(x, L.Concatenate(axis=axis, name="concat")(branches))


def b_quantize(rng):
    """Float input and output: QUANTIZE (float -> int8) first, DEQUANTIZE last."""
    x = L.Input((int(rng.integers(1, 16)),))
    y = L.Dense(int(rng.integers(1, 10)), name="fc")(x)
    return keras.Model(x, y)


def _snap16(w: np.ndarray) -> np.ndarray:
    """At most 16 distinct values per tensor (so per output channel after int8
    quantization): what weight clustering leaves behind."""
    levels = np.quantile(w, np.linspace(0.0, 1.0, 16))
    return levels[np.abs(w[..., None] - levels).argmin(axis=-1)].astype(np.float32)


def _cluster(model):
    for layer in model.layers:
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)):
            ws = layer.get_weights()
            ws[0] = _snap16(ws[0])
            layer.set_weights(ws)
    return model


def b_clustered(rng):
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED with clustered (<= 16 values) weights,
    for the 4-bit packed weights path."""
    kind = int(rng.integers(0, 3))
    if kind == 2:
        x = L.Input((int(rng.integers(33, 80)),))
        y = L.Dense(int(rng.integers(1, 12)), activation=_act(rng), name="fc")(x)
    else:
        h, w, c = int(rng.integers(3, 8)), int(rng.integers(3, 8)), int(rng.integers(4, 9))
        x = L.Input((h, w, c))
        if kind == 0:
            y = L.Conv2D(int(rng.integers(1, 7)), 3, strides=int(rng.integers(1, 3)),
                         padding="same", activation=_act(rng), name="conv")(x)
        else:
            y = L.DepthwiseConv2D((5, 7), padding="same", depth_multiplier=int(rng.integers(1, 3)),
                                  activation=_act(rng), name="dw")(x)
    return keras.Model(x, y)


def b_const_operand(rng):
    """ADD or MUL with a constant second operand, broadcast along some dimensions."""
    h, w, c = int(rng.integers(2, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    # Varying over H keeps the converter from folding the constant into the convolution.
    shape = [1, h, w if rng.integers(0, 2) else 1, c if rng.integers(0, 3) else 1]
    const = tf.constant(rng.normal(0, 1.5, shape).astype(np.float32))
    x = L.Input((h, w, c))
    y = L.Conv2D(c, 1, name="pre")(x)
    if rng.integers(0, 2):
        y = L.Lambda(lambda t: t + const, name="add_const")(y)
    else:
        y = L.Lambda(lambda t: t * const, name="mul_const")(y)
    return keras.Model(x, y)


BUILDERS = {name[2:]: fn for name, fn in globals().items() if name.startswith("b_")}
# Seeds derive from this order: append new families at the end so older goldens keep theirs.
FAMILY_ORDER = (
    "add", "average_pool_2d", "concatenation", "conv_2d", "depthwise_conv_2d",
    "fully_connected", "hard_swish", "logistic", "max_pool_2d", "mean", "mul", "pad",
    "quantize", "reshape", "softmax", "tanh", "clustered", "const_operand", "wide_depthwise",
)
FLOAT_IO = {"quantize"}


def gen_ops(ops, count: int) -> dict:
    index = {}
    for op in ops:
        for i in range(count):
            seed = SEED + 1000 * FAMILY_ORDER.index(op) + i
            rng = np.random.default_rng(seed)
            tf.random.set_seed(seed)
            keras.utils.set_random_seed(seed)
            model = _randomize(BUILDERS[op](rng), rng)
            if op == "clustered":
                model = _cluster(model)
            data = convert(model, seed=seed, float_io=op in FLOAT_IO)
            path = OUT / "ops" / f"{op}_{i:02d}.tflite"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            index[path.name] = {"op": op, "seed": seed}
            print(path.name, len(data), flush=True)
    return index


# ---- whole models, trained briefly on sklearn's digits (upsampled) -----------------
def _digits(size: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    x = tf.image.resize(x[..., None], (size, size)).numpy()
    return x, d.target.astype(np.int64)


def ds_cnn(size):
    x = L.Input((size, size, 1))
    y = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv0")(x)
    y = L.BatchNormalization(momentum=0.9, name="bn0")(y)
    y = L.ReLU(name="relu0")(y)
    for i in range(3):
        y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(y)
        y = L.BatchNormalization(momentum=0.9, name=f"dw{i}_bn")(y)
        y = L.ReLU(name=f"dw{i}_relu")(y)
        y = L.Conv2D(16, 1, use_bias=False, name=f"pw{i}")(y)
        y = L.BatchNormalization(momentum=0.9, name=f"pw{i}_bn")(y)
        y = L.ReLU(name=f"pw{i}_relu")(y)
    y = L.AveragePooling2D(int(y.shape[1]), name="avgpool")(y)
    y = L.Flatten(name="flatten")(y)
    return keras.Model(x, L.Dense(10, activation="softmax", name="fc")(y), name="ds_cnn")


def resnet(size):
    x = L.Input((size, size, 1))
    y = L.Conv2D(12, 3, padding="same", activation="relu", name="stem")(x)
    for i, (f, s) in enumerate(((12, 1), (16, 2), (24, 2))):
        r = L.Conv2D(f, 3, strides=s, padding="same", name=f"res{i}_a")(y)
        r = L.BatchNormalization(momentum=0.9, name=f"res{i}_a_bn")(r)
        r = L.ReLU(name=f"res{i}_a_relu")(r)
        r = L.Conv2D(f, 3, padding="same", name=f"res{i}_b")(r)
        r = L.BatchNormalization(momentum=0.9, name=f"res{i}_b_bn")(r)
        sc = y if (s == 1 and y.shape[-1] == f) else L.Conv2D(f, 1, strides=s, name=f"res{i}_sc")(y)
        y = L.ReLU(name=f"res{i}_out")(L.Add(name=f"res{i}_add")([r, sc]))
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(10, activation="softmax", name="fc")(y), name="resnet")


def mobilenet(size):
    """MobileNetV2/V3-style: expansion, depthwise, projection, residual ADD, hard-swish,
    squeeze-and-excite (MUL, LOGISTIC), ZeroPadding, max pooling and a concatenation."""

    def hswish(t, name):
        return L.Lambda(lambda v: v * tf.nn.relu6(v + 3.0) * (1.0 / 6.0), name=name)(t)

    x = L.Input((size, size, 1))
    y = L.ZeroPadding2D(1, name="pad0")(x)
    y = L.Conv2D(16, 3, strides=2, padding="valid", name="stem")(y)
    y = L.BatchNormalization(momentum=0.9, name="stem_bn")(y)
    y = hswish(y, "stem_hswish")
    for i, (exp, out, s) in enumerate(((32, 16, 1), (48, 24, 2), (72, 24, 1))):
        inp = y
        e = L.Conv2D(exp, 1, use_bias=False, name=f"b{i}_expand")(y)
        e = L.BatchNormalization(momentum=0.9, name=f"b{i}_expand_bn")(e)
        e = L.ReLU(6.0, name=f"b{i}_expand_relu6")(e)
        d = L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"b{i}_dw")(e)
        d = L.BatchNormalization(momentum=0.9, name=f"b{i}_dw_bn")(d)
        d = hswish(d, f"b{i}_dw_hswish")
        se = L.GlobalAveragePooling2D(keepdims=True, name=f"b{i}_se_pool")(d)
        se = L.Conv2D(8, 1, activation="relu", name=f"b{i}_se_reduce")(se)
        se = L.Conv2D(exp, 1, activation="sigmoid", name=f"b{i}_se_expand")(se)
        d = L.Multiply(name=f"b{i}_se_mul")([d, se])
        p = L.Conv2D(out, 1, use_bias=False, name=f"b{i}_project")(d)
        p = L.BatchNormalization(momentum=0.9, name=f"b{i}_project_bn")(p)
        y = L.Add(name=f"b{i}_add")([inp, p]) if (s == 1 and inp.shape[-1] == out) else p
    a = L.MaxPooling2D(2, name="branch_max")(y)
    b = L.AveragePooling2D(2, name="branch_avg")(y)
    y = L.Concatenate(name="concat")([a, b])
    y = L.Conv2D(64, 1, name="head")(y)
    y = hswish(y, "head_hswish")
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(10, name="logits")(y)
    y = L.Activation("tanh", name="tanh")(y)  # a bounded head, to exercise TANH
    return keras.Model(x, L.Softmax(name="softmax")(y), name="mobilenet")


MODELS = {"ds_cnn": (ds_cnn, 16, 6), "resnet": (resnet, 16, 6), "mobilenet": (mobilenet, 32, 6),
          "mobilenet_c16": (mobilenet, 32, 6)}  # the same, weights clustered to 16 values


def gen_models(names) -> dict:
    index = {}
    for name in names:
        build, size, epochs = MODELS[name]
        tf.random.set_seed(SEED)
        keras.utils.set_random_seed(SEED)
        x, y = _digits(size)
        model = build(size)
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hist = model.fit(x[:1400], y[:1400], epochs=epochs, batch_size=32, verbose=0,
                         validation_data=(x[1400:], y[1400:]))
        if name.endswith("_c16"):
            model = _cluster(model)
            acc_c = float(np.mean(model.predict(x[1400:], verbose=0).argmax(1) == y[1400:]))
            hist.history["val_accuracy"].append(acc_c)
        data = convert(model, seed=SEED, data=x[:200])
        path = OUT / "models" / f"{name}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        acc = float(hist.history["val_accuracy"][-1])
        index[path.name] = {"seed": SEED, "input_size": size, "float_val_accuracy": acc}
        print(path.name, len(data), f"val_acc={acc:.3f}", flush=True)
    return index


# ---- models the generator must refuse, with a clear error ------------------------------
def gen_errors() -> dict:
    index = {}
    keras.utils.set_random_seed(SEED)
    x = L.Input((4, 4, 2))
    y = L.Conv2D(3, 1, name="conv")(x)
    y = L.UpSampling2D(2, name="upsample")(y)  # RESIZE_NEAREST_NEIGHBOR: not in the C backend
    cases = {"unsupported_op": convert(keras.Model(x, y), seed=SEED)}
    x = L.Input((6,))
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, L.Dense(3, name="fc")(x)))
    cases["float_model"] = conv.convert()  # no quantization at all
    for name, data in cases.items():
        path = OUT / "errors" / f"{name}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        index[path.name] = {"seed": SEED}
        print(path.name, len(data), flush=True)
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default=",".join(FAMILY_ORDER))
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--models", default="", help="comma list of whole models, or 'all'")
    ap.add_argument("--no-ops", action="store_true")
    ap.add_argument("--errors", action="store_true", help="also the models that must be refused")
    args = ap.parse_args(argv)
    index_path = OUT / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    if not args.no_ops:
        index.update(gen_ops([o for o in args.ops.split(",") if o], args.count))
    names = list(MODELS) if args.models == "all" else [m for m in args.models.split(",") if m]
    index.update(gen_models(names))
    if args.errors:
        index.update(gen_errors())
    OUT.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
