"""Keras -> TFLite: the float reference, the fully-integer model, the float16 GPU variant,
and the mixed-precision variants of the integer model (``[convert]`` in a recipe):

- whole-model 16x8: int16 activations, int8 weights (TFLite's
  ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`` ops set);
- int8 with some layers kept in float: TFLite's selective quantization, the public
  ``tf.lite.experimental.QuantizationDebugger`` with ``QuantizationDebugOptions(
  denylisted_nodes=...)`` and ``get_nondebug_quantized_model()``. The converter
  itself has no per-layer exclusion for full-integer quantization; the debugger
  calibrates once and re-quantizes the calibrated model leaving the denylisted
  nodes (the output tensors of the named layers' ops) in float, with
  QUANTIZE/DEQUANTIZE around them.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from edgeslim._quiet import native_output_to, native_stderr_to
from edgeslim._tf import tf
from edgeslim.errors import ConversionError, RecipeError

_OP_IN_MESSAGE = re.compile(r"'((?:tf|tfl)\.[A-Za-z0-9_]+)' op")
# MLIR locations name the Keras layer: callsite("model/layer_name/Op@__inference...
_LAYER_IN_MESSAGE = re.compile(r'callsite\("([^"@]+)/([A-Za-z0-9_]+)@')
# "Quantization to 16x8-bit not yet supported for op: 'HARD_SWISH'."
_NO_16X8_IN_MESSAGE = re.compile(r"16x8-bit not yet supported for op: '([A-Z0-9_]+)'")

ACTIVATIONS = ("int8", "int16")


@dataclass(frozen=True)
class ConvertConfig:
    """How the integer model is quantized (the ``[convert]`` table).

    ``activations``: "int8" (default) or "int16": whole-model 16x8, int16 activations and
    int8 weights, for targets whose runtime runs every op of the model at 16x8
    (the profile's ``ops.int16``).
    ``float_layers``: layers kept in float, each an exact Keras layer name or else a
    regular expression (``re.search``, as in ``[[prune.override]]``); for targets that
    run float ops (the profile's ``ops.tensor_types`` has "float32": Raspberry Pi,
    Android, web).
    ``float_worst``: also keep the N layers in float that add the most quantization
    error (measured on calibration samples, edgeslim.quant_debug).
    """

    activations: str = "int8"
    float_layers: tuple[str, ...] = ()
    float_worst: int = 0

    @property
    def mixed(self) -> bool:
        """True when the model is not plain int8."""
        return self.activations != "int8" or bool(self.float_layers) or self.float_worst > 0

    @property
    def keeps_float(self) -> bool:
        return bool(self.float_layers) or self.float_worst > 0

    def describe(self) -> str:
        if self.activations == "int16":
            return "16x8 (int16 activations, int8 weights)"
        parts = []
        if self.float_layers:
            parts.append("layers " + ", ".join(self.float_layers))
        if self.float_worst:
            parts.append(f"the {self.float_worst} worst layer(s) by added error")
        return "int8 with float " + " and ".join(parts) if parts else "int8"

    def validate(self) -> None:
        if self.activations not in ACTIVATIONS:
            raise RecipeError(
                f"convert.activations = {self.activations!r} is not one of "
                + ", ".join(repr(a) for a in ACTIVATIONS),
                '"int8": fully-integer int8; "int16": 16x8 (int16 activations, int8 weights).')
        if self.float_worst < 0:
            raise RecipeError(f"convert.float_worst = {self.float_worst} must be 0 or more",
                              "The number of layers to keep in float, e.g. 1.")
        for pattern in self.float_layers:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise RecipeError(f"convert.float_layers entry {pattern!r} is not a valid regular "
                                  f"expression: {exc}", "Give a layer name or a Python regex.") from None
        if self.activations == "int16" and self.keeps_float:
            raise RecipeError(
                "convert.activations = \"int16\" cannot be combined with float_layers/float_worst",
                "Choose one: whole-model 16x8, or int8 with some layers in float.")


def match_layers(patterns, layer_names) -> list[str]:
    """The layers ``patterns`` select, in model order: an entry equal to a layer's name
    selects that layer; any other entry is a regex matched with ``re.search``. An entry
    that selects no layer is an error (a typo would otherwise keep nothing in float)."""
    layer_names = list(layer_names)
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern in layer_names:
            chosen.add(pattern)
            continue
        hits = [n for n in layer_names if re.search(pattern, n)]
        if not hits:
            raise RecipeError(f"convert.float_layers entry {pattern!r} matches no layer of the model",
                              "Layers: " + ", ".join(layer_names) + ".")
        chosen.update(hits)
    return [n for n in layer_names if n in chosen]


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
        no16 = sorted(set(_NO_16X8_IN_MESSAGE.findall(text)))
        if no16:
            raise ConversionError(
                f"the model could not be converted to {what}: TFLite's converter has no 16x8 "
                f"(int16 activation) quantization for {', '.join(no16)}",
                "Replace the layer(s) using these ops (e.g. relu instead of hard_swish/elu), or "
                "convert with int8 activations (drop convert.activations = \"int16\").",
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
    return _integer_conversion(model, calib, tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                               tf.int8 if int8_io else None, allow_float_fallback, "int8",
                               "a fully-integer TFLite model")


def _integer_conversion(model, calib: np.ndarray, ops_set, io_type, allow_float_fallback: bool,
                        what: str, product: str) -> bytes:
    """Post-training quantization with ``ops_set`` (plus float builtins when
    ``allow_float_fallback``), ``io_type`` input/output tensors (None: float), and, without
    the fallback, any op left in float an error naming it."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calib)
    converter.target_spec.supported_ops = (
        [ops_set, tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float_fallback else [ops_set])
    if io_type is not None:
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    data = _convert(converter, product)
    if not allow_float_fallback:
        from edgeslim.tflite_inspect import inspect_tflite

        info = inspect_tflite(data)
        if info.float_ops:
            raise _float_op_error(info, what)
    return data


def _float_op_error(info, what: str) -> ConversionError:
    names = ", ".join(f"{op.opcode} (layer {op.layer or '?'})" for op in info.float_ops)
    return ConversionError(
        f"these ops stayed float after {what} conversion: {names}",
        "Replace those layers with integer-capable ones, or pass "
        "--allow-float-fallback to accept float ops (not for microcontrollers).",
    )


def to_int16x8_tflite(model, calib: np.ndarray, *, integer_io: bool = True,
                      allow_float_fallback: bool = False) -> bytes:
    """Whole-model 16x8: int16 activations, int8 weights (int32/int64 biases).

    ``integer_io``: int16 input and output tensors (else float32 with QUANTIZE/DEQUANTIZE
    at the edges). Ops the converter cannot quantize at 16x8 are a ConversionError
    naming them, unless ``allow_float_fallback`` (they then stay float).
    """
    return _integer_conversion(
        model, calib, tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
        tf.int16 if integer_io else None, allow_float_fallback, "16x8", "a 16x8 TFLite model")


def op_layers(model_bytes: bytes) -> list[tuple[object, str | None]]:
    """(op, Keras layer) for every op of the model's main subgraph, by the one layer rule
    (modelgraph.op_layer: an op with weights belongs to its weights' layer)."""
    from edgeslim import modelgraph

    graph = modelgraph.read(model_bytes)
    return [(op, op.layer) for op in graph.operators]


def float_layer_nodes(calibrated: bytes, layers) -> dict[str, list[str]]:
    """Layer -> the output tensor names of its ops in a calibrated model: the
    ``denylisted_nodes`` that keep the layer in float."""
    from edgeslim import modelgraph

    graph = modelgraph.read(calibrated)
    wanted = set(layers)
    nodes: dict[str, list[str]] = {name: [] for name in layers}
    for op in graph.operators:
        if op.layer in wanted and op.opcode not in modelgraph.BRIDGE_OPS:
            nodes[op.layer].extend(graph.tensors[i].name for i in op.outputs if i >= 0)
    return nodes


def to_mixed_float_tflite(model, calib: np.ndarray, float_layers, *, int8_io: bool = True) -> bytes:
    """Int8 with the Keras layers ``float_layers`` kept in float (selective quantization).

    Uses TFLite's quantization debugger (``tf.lite.experimental.QuantizationDebugger``,
    ``denylisted_nodes``, ``get_nondebug_quantized_model``): the model is calibrated once
    and quantized with the ops of those layers left out. ``int8_io``: int8 input and
    output (the debugger's ``fully_quantize``), else float32. A named layer whose ops
    cannot be found in the converted graph (folded away, e.g. a Flatten or a
    BatchNormalization) is a ConversionError naming it.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    native: list[str] = []
    try:
        with native_output_to(native), warnings.catch_warnings():
            # the debugger runs TensorFlow's own (deprecated) tf.lite.Interpreter internally
            warnings.simplefilter("ignore", UserWarning)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=_representative(calib[:1]),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(fully_quantize=int8_io))
    except Exception as exc:  # the converter raises several unrelated types
        text = (str(exc) + "\n" + "".join(native)).strip()
        raise ConversionError(
            f"the model could not be calibrated for int8 with float layers: {text.splitlines()[0][:400]}",
            "Run with --debug for the converter's full message.") from exc
    nodes = float_layer_nodes(debugger.calibrated_model, float_layers)
    missing = [layer for layer, names in nodes.items() if not names]
    if missing:
        raise ConversionError(
            f"convert.float_layers: layer(s) {', '.join(missing)} have no op of their own in the "
            "converted model (folded into a neighbour, or no computation)",
            "Name the layer that computes (the Conv2D/Dense the BatchNormalization or activation "
            "was folded into).")
    computing = [layer for op, layer in op_layers(debugger.calibrated_model)
                 if op.opcode not in ("QUANTIZE", "DEQUANTIZE")]
    if all(layer in nodes for layer in computing):
        raise ConversionError(
            f"convert.float_layers keeps every layer of the model in float ({', '.join(float_layers)}): "
            "nothing would be quantized",
            "Keep fewer layers in float (edgeslim ships quantized models).")
    try:
        with native_output_to(native), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                fully_quantize=int8_io, denylisted_nodes=[n for names in nodes.values() for n in names])
            return bytes(debugger.get_nondebug_quantized_model())
    except Exception as exc:
        text = (str(exc) + "\n" + "".join(native)).strip()
        raise ConversionError(
            f"the model could not be quantized with float layers: {text.splitlines()[0][:400]}",
            "Run with --debug for the converter's full message.") from exc
