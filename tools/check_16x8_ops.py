#!/usr/bin/env python3
"""Which ops each runtime runs at 16x8 (int16 activations, int8 weights), by running them.

For each case, a one-op (or two-op) tf_keras model is converted with TFLite's
EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 ops set (int16 I/O, and
with --float-io float32 I/O), run on LiteRT (ai-edge-litert) and on the pinned
tflite-micro interpreter (reference kernels, child process), and compared with the
float model. An op "runs" on a runtime when the model allocates and invokes there.

The table it prints is the evidence behind ``ops.int16`` in targets/cortex-m-base.toml
(TFLite Micro) and targets/rpi-base.toml, targets/android.toml (LiteRT); it exits 1 when
a profile lists an op that failed, or misses one that ran.

  PYTHONPATH=. .venv/bin/python tools/check_16x8_ops.py [--float-io] [case ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("EDGESLIM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SEED = 0


def cases():
    from edgeslim._tf import keras, tf

    L = keras.layers

    def seq(shape, *layers):
        inp = keras.Input(shape)
        x = inp
        for layer in layers:
            x = layer(x)
        return keras.Model(inp, x)

    def fn(shape, f):
        inp = keras.Input(shape)
        return keras.Model(inp, f(inp))

    def lam(f):
        return L.Lambda(f)

    return {
        "conv": lambda: seq((8, 8, 2), L.Conv2D(4, 3, activation="relu")),
        "depthwise": lambda: seq((8, 8, 2), L.DepthwiseConv2D(3)),
        "dense": lambda: seq((8,), L.Dense(4)),
        "max_pool": lambda: seq((8, 8, 2), L.MaxPooling2D(2)),
        "avg_pool": lambda: seq((8, 8, 2), L.AveragePooling2D(2)),
        "softmax": lambda: seq((8,), L.Softmax()),
        "sigmoid": lambda: seq((8,), L.Activation("sigmoid")),
        "tanh": lambda: seq((8,), L.Activation("tanh")),
        "add": lambda: fn((8,), lambda x: L.Add()([x, L.Dense(8)(x)])),
        "mul": lambda: fn((8,), lambda x: L.Multiply()([x, L.Dense(8)(x)])),
        "sub": lambda: fn((8,), lambda x: L.Subtract()([x, L.Dense(8)(x)])),
        "concat": lambda: fn((8,), lambda x: L.Concatenate()([x, L.Dense(8)(x)])),
        "maximum": lambda: fn((8,), lambda x: L.Maximum()([x, L.Dense(8)(x)])),
        "minimum": lambda: fn((8,), lambda x: L.Minimum()([x, L.Dense(8)(x)])),
        "reshape": lambda: seq((8, 8, 2), L.Reshape((16, 8))),
        "global_avg_pool": lambda: seq((8, 8, 2), L.GlobalAveragePooling2D()),
        "pad": lambda: seq((8, 8, 2), L.ZeroPadding2D(1)),
        "relu": lambda: seq((8,), L.ReLU()),
        "relu6": lambda: seq((8,), L.ReLU(6.0)),
        "leaky_relu": lambda: seq((8,), L.LeakyReLU(0.1)),
        "elu": lambda: seq((8,), L.ELU()),
        "gelu": lambda: seq((8,), L.Activation("gelu")),
        "prelu": lambda: seq((8,), L.PReLU()),
        "conv_transpose": lambda: seq((4, 4, 2), L.Conv2DTranspose(2, 3, strides=2, padding="same")),
        "upsample_nearest": lambda: seq((4, 4, 2), L.UpSampling2D(2)),
        "upsample_bilinear": lambda: seq((4, 4, 2), L.UpSampling2D(2, interpolation="bilinear")),
        "permute": lambda: seq((4, 6), L.Permute((2, 1))),
        "strided_slice": lambda: seq((8,), lam(lambda x: x[:, 2:6])),
        "slice": lambda: seq((4, 6), lam(lambda x: tf.slice(x, [0, 1, 2], [-1, 2, 3]))),
        "split": lambda: seq((8,), lam(lambda x: tf.split(x, 2, axis=-1)[1])),
        "unstack": lambda: seq((2, 8), lam(lambda x: tf.unstack(x, axis=1)[1])),
        "matmul": lambda: fn((4, 6), lambda x: lam(lambda t: tf.matmul(t, t, transpose_b=True))(x)),
        "exp": lambda: seq((8,), lam(lambda x: tf.exp(x))),
        "rsqrt": lambda: seq((8,), lam(lambda x: tf.math.rsqrt(tf.abs(x) + 1.0))),
        "reduce_max": lambda: seq((8,), lam(lambda x: tf.reduce_max(x, axis=-1, keepdims=True))),
        "reduce_sum": lambda: seq((8,), lam(lambda x: tf.reduce_sum(x, axis=-1, keepdims=True))),
        "neg": lambda: seq((8,), lam(lambda x: -x)),
        "square": lambda: seq((8,), lam(lambda x: tf.square(x))),
        "l2_normalize": lambda: seq((8,), lam(lambda x: tf.math.l2_normalize(x, axis=-1))),
        "conv1d": lambda: seq((16, 3), L.Conv1D(4, 3)),
    }


def run_case(build, *, float_io: bool) -> dict:
    from edgeslim import evaluate, micro
    from edgeslim._tf import keras, tf
    from edgeslim.targets import read_model, runs_at_16x8

    keras.utils.set_random_seed(SEED)
    model = build()
    calib = np.random.default_rng(SEED).standard_normal((32,) + tuple(model.input_shape[1:])).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int16
        conv.inference_output_type = tf.int16
    try:
        data = conv.convert()
    except Exception as exc:  # the converter's refusal is the finding
        return {"convert": str(exc).strip().splitlines()[0][:120], "ops": []}
    ops = [o.opcode for o in read_model(data).operators if runs_at_16x8(o)]
    x = calib[:4]
    ref = model.predict(x, verbose=0)
    out = {"convert": "ok", "ops": ops}
    try:
        out["litert_max_abs_err"] = float(np.max(np.abs(evaluate.run_litert(data, x) - ref)))
    except Exception as exc:
        out["litert"] = str(exc).splitlines()[0][:120]
    try:
        qin, qout = evaluate.io_details(data)
        got = qout.dequantize(micro.run(data, qin.quantize(x), timeout=120))
        out["tflm_max_abs_err"] = float(np.max(np.abs(got - ref)))
    except Exception as exc:
        out["tflm"] = str(exc).splitlines()[0][:120]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float-io", action="store_true", help="float32 input/output (QUANTIZE/DEQUANTIZE at the edges)")
    ap.add_argument("case", nargs="*")
    args = ap.parse_args(argv)
    from edgeslim.targets import load_target

    table = cases()
    ran = {"litert": set(), "tflm": set()}
    failed = {"litert": set(), "tflm": set()}
    for name in args.case or list(table):
        r = run_case(table[name], float_io=args.float_io)
        for rt in ("litert", "tflm"):
            if r["convert"] == "ok":
                (failed[rt] if rt in r else ran[rt]).update(r["ops"])
        cells = [f"{k}={v if isinstance(v, str) else f'{v:.2g}'}" for k, v in r.items() if k != "ops"]
        print(f"{name:18s} {','.join(r['ops']) or '-':45s} {'  '.join(cells)}", flush=True)
    bad = 0
    for rt, profile in (("tflm", "cortex-m4"), ("litert", "rpi4"), ("litert", "android")):
        listed = load_target(profile).int16_ops
        # an op that failed in one case may have run in another (e.g. SHAPE): failed-only counts
        wrong = sorted((failed[rt] - ran[rt]) & listed)
        missing = sorted(ran[rt] - listed)
        if wrong or missing:
            bad = 1
        print(f"{profile} ({rt}): listed but failed: {wrong or '-'}; ran but not listed: {missing or '-'}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
