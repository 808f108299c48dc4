"""Per-layer quantization error: where the int8 model parts from the float one, and which layer does it.

Every op output of the int8 model is read from LiteRT's interpreter (with
``experimental_preserve_all_tensors``, so intermediate tensors survive ``invoke``), dequantized
with its own scale and zero point, and compared with the same tensor of the float Keras model
(a sub-model whose outputs are the layers' outputs) on the same real inputs:

- ``snr_db``: cumulative signal-to-noise ratio, ``10 log10(sum f^2 / sum (q - f)^2)``: the error
  of everything up to and including this op;
- ``rmse_steps``: RMSE over the tensor's quantization step (its output scale). Rounding alone
  gives about 0.29 (``1/sqrt(12)``); several steps mean the error came from upstream or from the
  op's weights, not from rounding its output;
- ``added_snr_db``: the SNR of the op's input minus the SNR of its output, the dB this op loses.
  Errors accumulate, so the layer with the lowest SNR is usually not the one to fix; the one
  with the largest loss is. :func:`worst_first` ranks by it.

Op -> Keras layer: TFLite names an op's output after the Keras ops fused into it ("model/relu1/
Relu;model/conv1/Conv2D" for conv1 + BatchNorm bn1 folded + ReLU layer relu1). The float tensor
to compare is the output of the *last* of those layers in the model's order (relu1); the
layer the op is reported under is the one its weights came from (conv1), the rule of
:mod:`edgeslim.tflite_inspect`. Tensors with no Keras counterpart (QUANTIZE/DEQUANTIZE at the
edges, the internal ops of a layer lowered to several ops) are skipped and listed.

The Keras model must be the one the int8 model was converted from (for a QAT build, the QAT
model: its fake-quant wrappers are part of "the float model"). A Keras 3 model is bridged to
tf_keras first (:mod:`edgeslim.io.keras3_bridge`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeslim.errors import DataError, EdgeslimError

# A layer that loses at least this many dB, ending below GOOD_SNR_DB, gets a suggestion.
ADDED_DB_FLAG = 3.0
GOOD_SNR_DB = 30.0
# Median |int8 weight| of a channel at or below this many steps: a few outliers set the
# channel's scale and the other weights are rounded to a handful of levels.
WEIGHT_LEVELS_FLAG = 4
_BATCH = 32
SNR_CAP_DB = 99.0  # an exact tensor (no error at all) counts as this many dB in added_snr_db


@dataclass
class LayerError:
    op_index: int
    op: str  # builtin name, e.g. "CONV_2D" (the op whose output is the layer's output)
    layer: str  # the Keras layer the op came from (its weights' layer when it has weights)
    tensor: str  # the op's output tensor name in the .tflite
    snr_db: float  # cumulative: this tensor, dequantized, vs the float model's
    rmse_steps: float | None  # RMSE / output scale (None for a float tensor)
    added_snr_db: float  # input SNR - output SNR: what this op adds
    suggestion: str
    compared_with: str = ""  # the Keras layer whose output is this tensor's float counterpart
    input_snr_db: float | None = None  # cumulative SNR of the op's input (the worst, for several)
    # the SNR the output would have if this op were exact: the float layer(s) run on the
    # dequantized int8 input; added_snr_db = propagated_snr_db - snr_db
    propagated_snr_db: float | None = None
    added_method: str = "propagated"  # or "input" (input_snr_db - snr_db) where Keras cannot cut the graph
    ops: list[str] = field(default_factory=list)  # all ops of the layer (["FULLY_CONNECTED", "SOFTMAX"])
    weight_median_steps: float | None = None  # median |int8 weight| (per tensor), when it has weights

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("snr_db", "added_snr_db", "input_snr_db", "propagated_snr_db", "rmse_steps"):
            if d[k] is not None:
                d[k] = _finite(round(d[k], 3))
        return d


@dataclass
class QuantErrors:
    """:func:`analyse`'s answer: the measured layers, what was skipped, and on how many samples."""

    errors: list[LayerError]
    skipped: list[dict] = field(default_factory=list)  # {"op_index", "op", "tensor", "reason"}
    samples: int = 0
    input_snr_db: float | None = None  # the model input's own quantization

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "input_snr_db": None if self.input_snr_db is None else _finite(round(self.input_snr_db, 3)),
            "layers": [e.to_dict() for e in self.errors],
            "worst_first": [e.layer for e in worst_first(self.errors)],
            "skipped": self.skipped,
        }


def _finite(v: float):
    """JSON has no infinity: an exact tensor (no error at all) is reported as 999 dB."""
    return v if math.isfinite(v) else (999.0 if v > 0 else -999.0)


def snr_db(signal_power: float, noise_power: float) -> float:
    if noise_power <= 0.0:
        return math.inf
    if signal_power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def layer_errors(int8_model_bytes: bytes, keras_model, x: np.ndarray, *,
                 max_samples: int = 256) -> list[LayerError]:
    """Per-op quantization error of ``int8_model_bytes`` against ``keras_model`` on inputs ``x``
    (float, as the Keras model takes them; the first ``max_samples``), in execution order."""
    return analyse(int8_model_bytes, keras_model, x, max_samples=max_samples).errors


def worst_first(errors: list[LayerError]) -> list[LayerError]:
    """``errors`` ranked by the SNR each layer loses (largest first), then by lowest SNR."""
    return sorted(errors, key=lambda e: (-_finite(e.added_snr_db), _finite(e.snr_db), e.op_index))


# -- the measurement -----------------------------------------------------------------------------


def _tf_keras_model(keras_model):
    from edgeslim._tf import keras

    if isinstance(keras_model, keras.Model):
        return keras_model
    try:
        import keras as keras3
    except ImportError:  # pragma: no cover - keras 3 ships with TensorFlow >= 2.16
        keras3 = None
    if keras3 is not None and isinstance(keras_model, keras3.Model):
        from edgeslim.io.keras3_bridge import bridge_keras3_model

        return bridge_keras3_model(keras_model)[0]
    raise EdgeslimError(
        f"expected a Keras model for the float reference, got {type(keras_model).__name__}",
        "Pass the Keras model the .tflite was converted from (edgeslim.io.models.load_model(...).model).",
    )


def _private_copy(model):
    """A copy of the tf_keras ``model`` with its weights (TFMOT's quantize wrappers known), or
    ``model`` itself when Keras cannot clone it."""
    import contextlib

    from edgeslim._tf import keras

    try:
        import tensorflow_model_optimization as tfmot

        scope = tfmot.quantization.keras.quantize_scope()
    except ImportError:  # pragma: no cover - a main dependency
        scope = contextlib.nullcontext()
    try:
        with scope:
            copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except Exception:  # noqa: BLE001 - custom layers without get_config: measure without cuts
        return model
    return copy


def _float_counterparts(info, tensor_names: dict[int, str], layers_in_order: list[str],
                        input_tensor: int, output_tensors: list[int], output_layers: list[str]):
    """op index -> the Keras layer whose output is that op's output tensor, or a skip reason.

    ``output_layers``: the layer behind each model output ("@output<i>" when there is none)."""
    from edgeslim.modelgraph import layer_candidates

    order = {name: i for i, name in enumerate(layers_in_order)}
    model_out = {t: i for i, t in enumerate(output_tensors)}
    found: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for op in info.ops:  # a float output: the op before its DEQUANTIZE computes the output
        if op.opcode == "DEQUANTIZE" and len(op.outputs) == 1 and op.outputs[0] in model_out:
            model_out[op.inputs[0]] = model_out.pop(op.outputs[0])
            reasons[op.index] = "dequantizes the model output (compared before it)"
    for op in info.ops:
        if op.index in reasons:
            continue
        if len(op.outputs) != 1:
            reasons[op.index] = f"{len(op.outputs)} outputs"
            continue
        t = op.outputs[0]
        if op.opcode == "QUANTIZE" and op.inputs == [input_tensor]:
            found[op.index] = "@input"  # the float input, quantized: its own error
            continue
        names = []
        for c in layer_candidates(tensor_names[t]):
            for n in (c, c[len("quant_"):] if c.startswith("quant_") else None):
                if n and n in order:
                    names.append(n)
        if t in model_out:
            found[op.index] = output_layers[model_out[t]]
        elif names:
            found[op.index] = max(names, key=order.__getitem__)
        else:
            reasons[op.index] = "no Keras layer output with this name"
    # A layer lowered to several ops: only the last one's output is the layer's output.
    last: dict[str, int] = {}
    for i, name in found.items():
        last[name] = max(i, last.get(name, -1))
    parts: dict[int, list[int]] = {i: [] for i in last.values()}
    for i, name in sorted(found.items()):
        parts[last[name]].append(i)
        if last[name] != i:
            reasons[i] = f"an intermediate tensor of layer {name!r} (measured with op {last[name]})"
            del found[i]
    return found, reasons, parts


def analyse(int8_model_bytes: bytes, keras_model, x: np.ndarray, *,
            max_samples: int = 256) -> QuantErrors:
    """:func:`layer_errors` with the skipped tensors and the input's own SNR."""
    from edgeslim._tf import keras
    from edgeslim.tflite_inspect import inspect_tflite

    model = _tf_keras_model(keras_model)
    cut_ok = True
    if model is keras_model:
        # Cutting a functional model at intermediate tensors (the per-layer models below)
        # rewires those tensors' Keras history: work on a copy, so the caller's model stays
        # as it was (the channel stage, for one, walks that history). A model Keras cannot
        # clone is measured without the cuts (added error from the SNR drop instead).
        model = _private_copy(model)
        cut_ok = model is not keras_model
    x = _check_inputs(model, x, max_samples)
    layer_names = [layer.name for layer in model.layers]
    info = inspect_tflite(int8_model_bytes, layer_names)
    from edgeslim.evaluate import litert_interpreter

    interp = litert_interpreter(bytes(int8_model_bytes), preserve_all_tensors=True)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    tensor_names = {i: d["name"] for i, d in details.items()}
    in_detail = interp.get_input_details()
    if len(in_detail) != 1:
        raise EdgeslimError(f"per-layer quantization error needs a one-input .tflite; it has "
                            f"{len(in_detail)} inputs", None)
    in_index = in_detail[0]["index"]
    found, reasons, parts = _float_counterparts(info, tensor_names, layer_names, in_index,
                                         [d["index"] for d in interp.get_output_details()],
                                         [_output_layer(model, i) for i in range(len(model.outputs))])
    ops = {op.index: op for op in info.ops}
    producers = {t: op.index for op in info.ops for t in op.outputs}
    const = {i for i in details if i not in producers and i != in_index}  # weights, biases, shapes

    # The Keras tensor behind each compared .tflite tensor.
    by_name = {layer.name: layer for layer in model.layers}
    keras_of: dict[int, object] = {in_index: model.inputs[0]}
    for op_index, name in list(found.items()):
        t = ops[op_index].outputs[0]
        try:
            keras_of[t] = _keras_tensor(model, by_name, name)
        except (AttributeError, ValueError, RuntimeError) as exc:  # shared or multi-output layers
            reasons[op_index] = f"layer {name!r} has no single output ({exc.__class__.__name__})"
            del found[op_index]
    measured = {ops[i].outputs[0] for i in found}
    order = sorted(measured)
    sub = keras.Model(model.inputs, [keras_of[t] for t in order]) if order else None

    # For each op, the float layers from its (measured) inputs to its output, fed the int8
    # inputs: what its output would be if this op were exact and only its inputs carried error.
    # A layer lowered to several ops (Dense + softmax: FULLY_CONNECTED, SOFTMAX) is one step.
    local: dict[int, tuple[list[int], object]] = {}
    for op_index in found:
        if found[op_index] == "@input":
            continue
        ins = _group_inputs([ops[i] for i in parts[op_index]], const)
        if not cut_ok or not ins or any(i not in keras_of for i in ins):
            continue
        try:
            local[op_index] = (ins, keras.Model([keras_of[i] for i in ins], keras_of[ops[op_index].outputs[0]]))
        except Exception:  # noqa: BLE001 - a graph Keras cannot cut there: fall back to the SNR drop
            continue

    in_q = _quant(details[in_index])
    sums: dict[int, _Sums] = {t: _Sums() for t in order}
    prop: dict[int, _Sums] = {i: _Sums() for i in local}
    in_sums = _Sums()
    current = None
    for start in range(0, len(x), _BATCH):
        chunk = x[start: start + _BATCH]
        if current != len(chunk):
            interp.resize_tensor_input(in_index, [len(chunk), *in_detail[0]["shape"][1:]])
            _allocate(interp)
            current = len(chunk)
        q_in = _quantize(chunk, in_q, details[in_index]["dtype"])
        interp.set_tensor(in_index, q_in)
        interp.invoke()
        deq = {in_index: _dequantize(q_in, in_q)}
        if in_q is not None:
            in_sums.add(chunk, deq[in_index])
        floats = sub(chunk, training=False) if sub is not None else []
        floats = floats if isinstance(floats, (list, tuple)) else [floats]
        ref = {}
        for t, f in zip(order, floats):
            q = _dequantize(interp.get_tensor(t), _quant(details[t]))
            f = np.asarray(f)
            if q.size != f.size:
                op_index = producers[t]
                reasons[op_index] = (f"shape {tuple(q.shape)} differs from layer {found[op_index]!r}'s "
                                     f"output {tuple(f.shape)}")
                continue
            deq[t] = q
            ref[t] = f.astype(np.float64).reshape(q.shape)
            sums[t].add(ref[t], q)
        for op_index, (ins, model_k) in local.items():
            t = ops[op_index].outputs[0]
            if t not in ref or any(i not in deq for i in ins):
                continue
            feeds = [deq[i].reshape((len(chunk), *_shape(keras_of[i]))).astype(np.float32) for i in ins]
            p = np.asarray(model_k(feeds if len(feeds) > 1 else feeds[0], training=False))
            prop[op_index].add(ref[t], p.astype(np.float64).reshape(ref[t].shape))

    for op_index in list(found):
        if op_index in reasons:
            del found[op_index]
    tensor_snr = {t: sums[t].snr for t in order if ops[producers[t]].index in found}
    input_snr = in_sums.snr if in_q is not None else math.inf
    input_quantized = in_q is not None
    for op_index, name in found.items():
        if name == "@input":  # a float model input quantized by the model: the input's own error
            input_snr = tensor_snr[ops[op_index].outputs[0]]
            input_quantized = True
            reasons[op_index] = "quantizes the float model input (its SNR is input_snr_db)"

    def snr_of(t: int, seen: frozenset = frozenset()) -> float:
        """The cumulative SNR at tensor ``t``; through skipped ops, the worst of their inputs."""
        if t in tensor_snr:
            return tensor_snr[t]
        if t == in_index or t not in producers or t in seen:
            return input_snr
        ins = [i for i in ops[producers[t]].inputs if i >= 0 and i not in const]
        return min((snr_of(i, seen | {t}) for i in ins), default=input_snr)

    weights = {w.op_index: w for w in info.weights}
    errors = []
    for op_index in sorted(found):
        if found[op_index] == "@input":
            continue
        op = ops[op_index]
        t = op.outputs[0]
        s, qt = sums[t], _quant(details[t])
        group = [ops[i] for i in parts[op_index]]
        in_snr = min((snr_of(i) for i in _group_inputs(group, const)), default=input_snr)
        out_snr = tensor_snr[t]
        p = prop.get(op_index)
        if p is not None and p.count:
            # the SNR this output would have if the op were exact, minus the SNR it has
            propagated = p.snr
            added, method = _added(propagated, out_snr), "propagated"
        else:
            propagated = None
            added, method = _added(in_snr, out_snr), "input"
        w = next((weights[g.index] for g in group if g.index in weights), None)
        median = (float(np.median(np.abs(w.values.astype(np.int32))))
                  if w is not None and w.values.size else None)
        compared = _user_name(by_name, _keras_name(model, found[op_index]))
        # an op with weights is named after their layer (conv1 when conv1 + bn1 + relu1 were fused)
        layer = next((_user_name(by_name, g.layer) for g in group if g.index in weights and g.layer),
                     compared)
        errors.append(LayerError(
            op_index=op_index, op=op.opcode, layer=layer, tensor=tensor_names[t], ops=[g.opcode for g in group],
            snr_db=out_snr, rmse_steps=None if qt is None else s.rmse / qt[0], added_snr_db=added,
            suggestion="", compared_with=compared, input_snr_db=in_snr, propagated_snr_db=propagated,
            added_method=method, weight_median_steps=median,
        ))
    for e in errors:
        e.suggestion = suggest(e)
    skipped = [{"op_index": i, "op": ops[i].opcode,
                "tensor": tensor_names[ops[i].outputs[0]] if ops[i].outputs else "",
                "reason": r} for i, r in sorted(reasons.items())]
    return QuantErrors(errors=errors, skipped=skipped, samples=int(len(x)),
                       input_snr_db=input_snr if input_quantized else None)


def _group_inputs(group: list, const: set[int]) -> list[int]:
    """The activation tensors a group of ops reads from outside the group."""
    inside = {t for op in group for t in op.outputs}
    out: list[int] = []
    for op in group:
        out += [i for i in op.inputs if i >= 0 and i not in const and i not in inside and i not in out]
    return out


class _Sums:
    """Running sums for one tensor: signal power, noise power, element count."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0
        self.count = 0

    def add(self, reference: np.ndarray, value: np.ndarray) -> None:
        reference = np.asarray(reference, np.float64)
        self.signal += float(np.sum(np.square(reference)))
        self.noise += float(np.sum(np.square(np.asarray(value, np.float64) - reference)))
        self.count += reference.size

    @property
    def snr(self) -> float:
        return snr_db(self.signal, self.noise)

    @property
    def rmse(self) -> float:
        return math.sqrt(self.noise / self.count) if self.count else 0.0


def _check_inputs(model, x, max_samples: int) -> np.ndarray:
    if len(model.inputs) != 1:
        raise EdgeslimError(f"per-layer quantization error needs a one-input model; "
                            f"{model.name!r} has {len(model.inputs)} inputs",
                            "Measure a model with one input tensor.")
    x = np.asarray(x, dtype=np.float32)[: max(1, int(max_samples))]
    want = _shape(model.inputs[0])
    if x.ndim < 1 or len(x) == 0:
        raise DataError("no samples to measure the quantization error on",
                        "Pass real inputs (e.g. the validation split), at least one sample.")
    if None not in want and tuple(x.shape[1:]) != want:
        raise DataError(f"inputs of shape {tuple(x.shape[1:])} do not fit the model's input {want}",
                        "Pass samples shaped like the model's input (the data the model was built with).")
    return x


def _shape(keras_tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in keras_tensor.shape[1:])


def _allocate(interp) -> None:
    from edgeslim._quiet import native_stderr_to

    with native_stderr_to([]):
        interp.allocate_tensors()


def _keras_tensor(model, by_name: dict, name: str):
    if name == "@input":
        return model.inputs[0]
    if name.startswith("@output"):
        return model.outputs[int(name[len("@output"):])]
    return by_name[name].output


def _user_name(by_name: dict, name: str) -> str:
    """A QAT wrapper ("quant_conv1" around conv1) is reported by the name of the layer it wraps."""
    inner = getattr(by_name.get(name), "layer", None)
    return inner.name if name.startswith("quant_") and inner is not None else name


def _output_layer(model, i: int) -> str:
    """The name of the layer whose (only) output is model output ``i``, else "@output<i>"."""
    history = getattr(model.outputs[i], "_keras_history", None)
    layer = getattr(history, "layer", None)
    if layer is not None and layer.name in {lay.name for lay in model.layers}:
        try:
            if layer.output is model.outputs[i]:
                return layer.name
        except (AttributeError, ValueError, RuntimeError):
            pass
    return f"@output{i}"


def _keras_name(model, name: str) -> str:
    """The Keras layer name behind a compared tensor ("@input", "@output<i>" or a layer name)."""
    if name == "@input":
        return model.inputs[0].name.split(":")[0]
    if name.startswith("@output"):
        t = model.outputs[int(name[len("@output"):])]
        history = getattr(t, "_keras_history", None)
        return history.layer.name if history is not None else t.name.split("/")[0]
    return name


def _added(in_snr: float, out_snr: float) -> float:
    """dB lost from input to output; an exact tensor (infinite SNR) counts as SNR_CAP_DB."""
    return min(in_snr, SNR_CAP_DB) - min(out_snr, SNR_CAP_DB)


def _quant(detail: dict) -> tuple[float, int] | None:
    scale, zp = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return None
    return float(scale), int(zp)


def _dequantize(q: np.ndarray, quant) -> np.ndarray:
    if quant is None:
        return np.asarray(q, np.float64)
    return (np.asarray(q, np.float64) - quant[1]) * quant[0]


def _quantize(x: np.ndarray, q, dtype) -> np.ndarray:
    if q is None:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x.astype(np.float64) / q[0]) + q[1], info.min, info.max).astype(dtype)


def suggest(e: LayerError) -> str:
    """What to try for one layer, from its numbers (docs/report.md explains the rules)."""
    if e.added_snr_db < ADDED_DB_FLAG or e.snr_db >= GOOD_SNR_DB:
        return ""
    if e.weight_median_steps is not None and e.weight_median_steps <= WEIGHT_LEVELS_FLAG:
        return (f"its int8 weights are dominated by outliers (median |w| {e.weight_median_steps:g} of 127 "
                "steps): keep it float on targets that allow float ops, or clip/retrain its weights; "
                "exclude it from pruning and clustering")
    if e.rmse_steps is not None and e.rmse_steps <= 1.5:
        return ("its output is rounded too coarsely for its range (error within "
                f"{e.rmse_steps:.2f} steps): use 16x8 (int16 activations) or keep it float on targets "
                "that allow float ops")
    return ("keep it float on targets that allow float ops, or use 16x8; exclude it from pruning "
            "and clustering")


__all__ = ["LayerError", "QuantErrors", "layer_errors", "analyse", "worst_first", "suggest", "snr_db"]
