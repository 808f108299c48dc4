"""Keras -> TFLite: the float reference, the fully-integer model, the float16 GPU variant."""

from __future__ import annotations

import re

import numpy as np

from edgeslim._quiet import native_stderr_to
from edgeslim._tf import tf
from edgeslim.errors import ConversionError

_OP_IN_MESSAGE = re.compile(r"'((?:tf|tfl)\.[A-Za-z0-9_]+)' op")
# MLIR locations name the Keras layer: callsite("model/layer_name/Op@__inference...
_LAYER_IN_MESSAGE = re.compile(r'callsite\("([^"@]+)/([A-Za-z0-9_]+)@')


def calibration_sample(x: np.ndarray, n: int, seed: int | None) -> np.ndarray:
    """``n`` training samples for calibrating activation ranges (seeded choice)."""
    n = min(int(n), len(x))
    rng = np.random.default_rng(0 if seed is None else seed)
    idx = np.sort(rng.choice(len(x), size=n, replace=False))
    return np.asarray(x[idx], dtype=np.float32)


def _representative(calib: np.ndarray):
    def gen():
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    return gen


def _convert(converter, what: str) -> bytes:
    native: list[str] = []
    try:
        with native_stderr_to(native):
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises several unrelated types
        text = str(exc) + "\n" + "".join(native)
        ops = sorted(set(_OP_IN_MESSAGE.findall(text)))
        if ops:
            layers = sorted({
                path.split("/")[-1] for path, op in _LAYER_IN_MESSAGE.findall(text)
                if any(o.split(".", 1)[1] == op for o in ops)
            })
            where = f" in layer(s) {', '.join(layers)}" if layers else ""
            raise ConversionError(
                f"the model could not be converted to {what}: unsupported op(s) "
                f"{', '.join(ops)}{where}",
                "Replace the layer(s) using these ops with TFLite builtin equivalents, "
                "or pass --allow-float-fallback to keep them in float (not for microcontrollers).",
            ) from exc
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ConversionError(
            f"the model could not be converted to {what}: {first[:400]}",
            "Run with --debug for the converter's full message.",
        ) from exc


def to_float_tflite(model) -> bytes:
    """The plain float32 .tflite: the size baseline the report compares against."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return _convert(converter, "a float TFLite model")


def to_fp16_tflite(model) -> bytes:
    """float16 weights, float32 compute: what the Android GPU delegate runs."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _convert(converter, "a float16 TFLite model")


def to_int8_tflite(
    model,
    calib: np.ndarray,
    *,
    int8_io: bool = True,
    allow_float_fallback: bool = False,
) -> bytes:
    """Fully-integer conversion (int8 weights and activations).

    ``calib`` is the representative data set. Without ``allow_float_fallback``,
    the converter may only use int8 builtin kernels, and any op left in float
    afterwards is an error naming the op.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calib)
    if allow_float_fallback:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    data = _convert(converter, "a fully-integer TFLite model")
    if not allow_float_fallback:
        from edgeslim.tflite_inspect import inspect_tflite

        info = inspect_tflite(data)
        if info.float_ops:
            names = ", ".join(f"{op.opcode} (layer {op.layer or '?'})" for op in info.float_ops)
            raise ConversionError(
                f"these ops stayed float after int8 conversion: {names}",
                "Replace those layers with int8-capable ones, or pass "
                "--allow-float-fallback to accept float ops (not for microcontrollers).",
            )
    return data
