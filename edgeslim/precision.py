"""Mixed precision for the build: which integer model a candidate becomes (``[convert]``).

- plain int8 (the default): :func:`edgeslim.convert.to_int8_tflite`;
- whole-model 16x8 (``activations = "int16"``): :func:`edgeslim.convert.to_int16x8_tflite`;
- int8 with float layers (``float_layers``, ``float_worst``):
  :func:`edgeslim.convert.to_mixed_float_tflite`. ``float_worst = N`` converts to int8
  first, measures each layer's added quantization error on calibration samples
  (edgeslim.quant_debug: the training data, never the validation split the guard
  decides on) and keeps the N worst in float.

Every mixed conversion also keeps the same model's plain int8 file, so the report can
show what the mixed precision bought: accuracy on validation and test, and bytes
(:func:`comparison`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Samples the layer-error measurement of ``float_worst`` runs on (quant_debug's default).
WORST_SAMPLES = 256


@dataclass
class Converted:
    """A candidate's integer model as it ships, and its plain int8 twin (None when plain)."""

    tflite: bytes
    int8_tflite: bytes | None = None
    float_layers: list[str] = field(default_factory=list)
    worst: list[dict] = field(default_factory=list)  # the float_worst ranking used


def convert_model(model, cfg, build, calib: np.ndarray) -> Converted:
    """``model`` converted as ``cfg`` (a ConvertConfig) says; ``build`` is the recipe's
    BuildConfig (int8_io, allow_float_fallback); ``calib`` the calibration samples."""
    from edgeslim import convert

    fallback = build.allow_float_fallback
    int8 = convert.to_int8_tflite(model, calib, int8_io=build.int8_io, allow_float_fallback=fallback)
    if not cfg.mixed:
        return Converted(tflite=int8)
    if cfg.activations == "int16":
        data = convert.to_int16x8_tflite(model, calib, integer_io=build.int8_io, allow_float_fallback=fallback)
        return Converted(tflite=data, int8_tflite=int8)
    names = layer_names(model)
    layers = convert.match_layers(cfg.float_layers, names) if cfg.float_layers else []
    worst: list[dict] = []
    if cfg.float_worst:
        worst = worst_layers(int8, model, calib, cfg.float_worst, exclude=layers)
        layers = [n for n in names if n in set(layers) | {w["layer"] for w in worst}]
    data = convert.to_mixed_float_tflite(model, calib, layers, int8_io=build.int8_io)
    check_float_layers(data, layers)
    return Converted(tflite=data, int8_tflite=int8, float_layers=layers, worst=worst)


def layer_names(model) -> list[str]:
    """The model's layers a recipe can name, in order (the input placeholder is not one)."""
    return [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]


def worst_layers(int8_bytes: bytes, model, x: np.ndarray, n: int, *, exclude=()) -> list[dict]:
    """The ``n`` layers whose int8 quantization adds the most error (quant_debug's
    per-layer added SNR loss on ``x``), worst first, leaving out ``exclude``."""
    from edgeslim import quant_debug

    errors = quant_debug.worst_first(quant_debug.layer_errors(int8_bytes, model, x, max_samples=WORST_SAMPLES))
    names = set(layer_names(model))
    out = []
    for e in errors:
        if e.layer in names and e.layer not in exclude and e.layer not in {w["layer"] for w in out}:
            out.append({"layer": e.layer, "op": e.op, "added_snr_db": float(e.added_snr_db)})
        if len(out) == n:
            break
    return out


def check_float_layers(data: bytes, layers) -> None:
    """The converted model computes in float exactly in ``layers``: every float op
    (QUANTIZE/DEQUANTIZE aside) belongs to one of them, and each of them has one."""
    from edgeslim.convert import op_layers
    from edgeslim.errors import ConversionError

    found = {layer for op, layer in op_layers(data) if op.opcode not in ("QUANTIZE", "DEQUANTIZE")
             and "FLOAT32" in op.input_dtypes + op.output_dtypes}
    extra = sorted(str(x) for x in found - set(layers))
    missing = [n for n in layers if n not in found]
    if extra or missing:
        raise ConversionError(
            "the converter did not keep exactly the requested layers in float: "
            + (f"also float: {', '.join(extra)}" if extra else "")
            + ("; " if extra and missing else "")
            + (f"still integer: {', '.join(missing)}" if missing else ""),
            "Run with --debug and report the model: selective quantization (TFLite's quantization "
            "debugger) did not behave as documented for it.")


def comparison(ctx, cfg, converted: Converted, *, shipped_val: float, shipped_test: float, float_val: float,
               float_test: float, test_split: str) -> dict | None:
    """What the mixed precision bought over plain int8 of the same model: validation and
    test metric (LiteRT, the same splits as the rest of the report) and bytes."""
    if converted.int8_tflite is None:
        return None
    from edgeslim import evaluate

    ds = ctx.data
    int8_val = ctx.score(evaluate.run_litert(converted.int8_tflite, ds.x_val), ds.y_val)
    int8_test = ctx.score(evaluate.run_litert(converted.int8_tflite, ds.x_test), ds.y_test)
    sign = 1.0 if ds.higher_is_better else -1.0
    return {
        "mode": "16x8" if cfg.activations == "int16" else "float-layers",
        "describe": cfg.describe(),
        "float_layers": list(converted.float_layers),
        "worst": list(converted.worst),
        "metric": ds.metric_name,
        "interpreter": "LiteRT",
        "test_split": test_split,
        "val_samples": int(len(ds.x_val)),
        "test_samples": int(len(ds.x_test)),
        "float": {"val": float_val, "test": float_test},
        "int8": {"val": int8_val, "test": int8_test, "bytes": len(converted.int8_tflite)},
        "mixed": {"val": shipped_val, "test": shipped_test, "bytes": len(converted.tflite)},
        # positive = the mixed model is better (higher accuracy, lower MSE)
        "gain": {"val": sign * (shipped_val - int8_val), "test": sign * (shipped_test - int8_test)},
        "bytes_ratio": len(converted.tflite) / len(converted.int8_tflite),
    }
