"""What a .tflite file holds: its ops, their dtypes, and its weights as they ship.

Sparsity and unique-values counts are measured here, on the converted file, not
on the Keras model: BatchNorm folding, per-channel int8 rounding and QAT can all
change them, and what the report claims must be what the device gets.

The file is read with the flatbuffer schema bindings that ship with TensorFlow
(``tensorflow.lite.python.schema_py_generated``), no hand-written parser.

Weight layouts in TFLite (output-channel axis in brackets):
conv ``[O], H, W, I``; depthwise ``1, H, W, [C*M]``; fully connected ``[O], I``.
The 2:4 groups run along the last axis (the input channels) of conv and FC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from edgeslim.errors import ConversionError

# op name -> (index of the weight input, output-channel axis of that weight)
WEIGHT_OPS: dict[str, tuple[int, int]] = {
    "CONV_2D": (1, 0),
    "DEPTHWISE_CONV_2D": (1, -1),
    "FULLY_CONNECTED": (1, 0),
    "TRANSPOSE_CONV": (1, 0),
    "CONV_3D": (1, -1),
}
NOT_COMPUTE = frozenset({"QUANTIZE", "DEQUANTIZE"})

_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


@dataclass
class OpInfo:
    index: int
    op: str  # builtin name, e.g. "CONV_2D"; custom ops: "CUSTOM:<code>"
    layer: str | None  # best-effort Keras layer name
    inputs: list[int]
    outputs: list[int]
    input_dtypes: list[str]
    output_dtypes: list[str]
    subgraph: int = 0

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "op": self.op,
            "layer": self.layer,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "input_dtypes": self.input_dtypes,
            "output_dtypes": self.output_dtypes,
            "subgraph": self.subgraph,
        }


@dataclass
class WeightInfo:
    """One weight tensor of a conv / depthwise / fully-connected op, as stored."""

    layer: str | None
    op: str
    op_index: int
    tensor: int
    tensor_name: str
    shape: tuple[int, ...]
    dtype: str
    channel_axis: int  # output-channel axis (non-negative)
    sparsity: float  # fraction of stored values equal to the zero point (real 0.0)
    unique_per_channel_max: int
    unique_per_channel_mean: float
    quantization: str  # "per-channel", "per-tensor" or "none"
    zero_point: int | list[int] | None
    # fraction of 4-groups along the last (input-channel) axis with >= 2 zeros;
    # None when that axis is not a multiple of 4 or for depthwise kernels
    blocks_2of4: float | None
    values: np.ndarray = field(repr=False, default=None)

    @property
    def channels(self) -> int:
        return int(self.shape[self.channel_axis]) if self.shape else 0

    def zeros_mask(self) -> np.ndarray:
        zp = self.zero_point if isinstance(self.zero_point, int) else 0
        if isinstance(self.zero_point, list):
            shape = [1] * self.values.ndim
            shape[self.channel_axis] = -1
            return self.values == np.asarray(self.zero_point).reshape(shape)
        return self.values == zp

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "op": self.op,
            "op_index": self.op_index,
            "tensor": self.tensor,
            "tensor_name": self.tensor_name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "channels": self.channels,
            "sparsity": round(self.sparsity, 4),
            "unique_per_channel_max": self.unique_per_channel_max,
            "unique_per_channel_mean": round(self.unique_per_channel_mean, 2),
            "quantization": self.quantization,
            "zero_point": self.zero_point,
            "blocks_2of4": None if self.blocks_2of4 is None else round(self.blocks_2of4, 4),
        }


@dataclass
class TfliteInfo:
    ops: list[OpInfo]
    weights: list[WeightInfo]
    input_dtypes: list[str]
    output_dtypes: list[str]
    size_bytes: int

    @property
    def op_names(self) -> list[str]:
        return sorted({o.op for o in self.ops})

    @property
    def float_ops(self) -> list[OpInfo]:
        """Ops computing in float: not (DE)QUANTIZE and with a float32 input or output."""
        return [
            o
            for o in self.ops
            if o.op not in NOT_COMPUTE
            and ("FLOAT32" in o.input_dtypes or "FLOAT32" in o.output_dtypes)
        ]

    def weights_by_layer(self) -> dict[str, WeightInfo]:
        return {w.layer: w for w in self.weights if w.layer is not None}

    @property
    def weight_sparsity(self) -> float:
        """Zeros over all conv/depthwise/FC weights of the file."""
        total = sum(w.values.size for w in self.weights)
        if not total:
            return 0.0
        return float(sum(int(w.zeros_mask().sum()) for w in self.weights) / total)

    def to_dict(self) -> dict:
        return {
            "size_bytes": self.size_bytes,
            "input_dtypes": self.input_dtypes,
            "output_dtypes": self.output_dtypes,
            "op_names": self.op_names,
            "float_ops": [
                {"index": o.index, "op": o.op, "layer": o.layer} for o in self.float_ops
            ],
            "weight_sparsity": round(self.weight_sparsity, 4),
            "ops": [o.to_dict() for o in self.ops],
            "weights": [w.to_dict() for w in self.weights],
        }


# -- reading -------------------------------------------------------------------


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _layer_candidates(tensor_name: str) -> list[str]:
    """Keras layer names in a TFLite tensor name ("model/conv1/Conv2D;model/bn1/...")."""
    out = []
    for part in tensor_name.split(";"):
        comps = [c for c in part.split("/") if c]
        if len(comps) >= 2:
            out.append(comps[1])
    return out


def _pick_layer(names: Iterable[str], known: set[str] | None, prefer_last: bool) -> str | None:
    cands = list(names)
    if prefer_last:
        cands = cands[::-1]
    if known:
        for c in cands:
            # QAT wraps layer "conv1" as "quant_conv1": report the Keras layer's own name
            for n in (c[len("quant_"):] if c.startswith("quant_") else None, c):
                if n and n in known:
                    return n
        return None
    if not cands:
        return None
    c = cands[0]
    return c[len("quant_"):] if c.startswith("quant_") else c


def _unpack_int4(raw: np.ndarray, count: int) -> np.ndarray:
    lo = (raw & 0x0F).astype(np.int8)
    hi = (raw >> 4).astype(np.int8)
    both = np.stack([lo, hi], axis=-1).reshape(-1)[:count]
    return np.where(both > 7, both - 16, both).astype(np.int8)


def _tensor_values(model, model_bytes: bytes, tensor, type_names) -> np.ndarray | None:
    buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    if buf is None:
        return None
    raw = buf.data
    if (raw is None or len(raw) == 0) and getattr(buf, "offset", 0) > 1:
        raw = np.frombuffer(model_bytes, np.uint8, count=buf.size, offset=buf.offset)
    if raw is None or len(raw) == 0:
        return None
    raw = np.asarray(raw, dtype=np.uint8)
    shape = tuple(int(s) for s in tensor.shape)
    tname = type_names.get(tensor.type, str(tensor.type))
    if tname == "INT4":
        return _unpack_int4(raw, int(np.prod(shape))).reshape(shape)
    dtype = _NUMPY_TYPES.get(tname)
    if dtype is None:
        return None
    return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)


def _per_channel_unique(values: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return np.array([np.unique(row).size for row in moved])


def _blocks_2of4(zeros: np.ndarray, op: str) -> float | None:
    if op == "DEPTHWISE_CONV_2D" or zeros.ndim < 2 or zeros.shape[-1] % 4:
        return None
    groups = zeros.reshape(-1, 4)
    return float(np.mean(groups.sum(axis=1) >= 2))


def inspect_tflite(model_bytes: bytes, layer_names: Iterable[str] | None = None) -> TfliteInfo:
    """Read a .tflite flatbuffer. ``layer_names``: the Keras layer names, to match ops to."""
    schema = _schema()
    data = bytes(model_bytes)
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 identifier")
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # the flatbuffer runtime raises assorted errors
        raise ConversionError(
            f"these {len(data)} bytes are not a TFLite model ({exc})",
            hint="Pass the bytes of a .tflite file written by the TFLite converter.",
        ) from None
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    known = set(layer_names) if layer_names is not None else None

    ops: list[OpInfo] = []
    weights: list[WeightInfo] = []
    for sg_index, sg in enumerate(model.subgraphs or []):
        tensors = sg.tensors or []
        producers = {}
        for op_index, op in enumerate(sg.operators or []):
            for t in op.outputs if op.outputs is not None else []:
                producers[int(t)] = op_index

        def tname(i: int) -> str:
            n = tensors[i].name
            return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n or "")

        def dtypes(indices) -> list[str]:
            return [type_names.get(tensors[i].type, str(tensors[i].type)) for i in indices]

        for op_index, op in enumerate(sg.operators or []):
            oc = model.operatorCodes[op.opcodeIndex]
            code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
            name = op_names.get(code, f"BUILTIN_{code}")
            if name == "CUSTOM":
                custom = oc.customCode
                name = "CUSTOM:" + (
                    custom.decode() if isinstance(custom, bytes) else str(custom or "")
                )
            inputs = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
            outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]

            weight_tensor = None
            if name in WEIGHT_OPS and len(inputs) > WEIGHT_OPS[name][0]:
                weight_tensor = int(op.inputs[WEIGHT_OPS[name][0]])
                # fp16 / dynamic weights: the constant feeds a DEQUANTIZE op
                if _tensor_values(model, data, tensors[weight_tensor], type_names) is None:
                    p = producers.get(weight_tensor)
                    if p is not None and sg.operators[p].inputs is not None:
                        weight_tensor = int(sg.operators[p].inputs[0])

            name_sources = []
            if weight_tensor is not None:
                name_sources.append((_layer_candidates(tname(weight_tensor)), False))
            for t in outputs:
                name_sources.append((_layer_candidates(tname(t)), True))
            layer = None
            for cands, last in name_sources:
                layer = _pick_layer(cands, known, prefer_last=last)
                if layer:
                    break

            ops.append(
                OpInfo(
                    index=op_index,
                    op=name,
                    layer=layer,
                    inputs=inputs,
                    outputs=outputs,
                    input_dtypes=dtypes(inputs),
                    output_dtypes=dtypes(outputs),
                    subgraph=sg_index,
                )
            )
            if weight_tensor is None:
                continue
            t = tensors[weight_tensor]
            values = _tensor_values(model, data, t, type_names)
            if values is None or values.ndim == 0:
                continue
            weights.append(
                _weight_info(name, op_index, layer, weight_tensor, tname(weight_tensor), t,
                             values, type_names)
            )

    main = model.subgraphs[0] if model.subgraphs else None

    def io_types(indices) -> list[str]:
        if main is None or indices is None:
            return []
        return [type_names.get(main.tensors[i].type, "?") for i in indices]

    return TfliteInfo(
        ops=ops,
        weights=weights,
        input_dtypes=io_types(main.inputs if main else None),
        output_dtypes=io_types(main.outputs if main else None),
        size_bytes=len(data),
    )


def _weight_info(op_name, op_index, layer, tensor_index, tensor_name, t, values, type_names):
    axis = WEIGHT_OPS[op_name][1] % values.ndim
    q = t.quantization
    scales = [] if q is None or q.scale is None else list(np.asarray(q.scale).reshape(-1))
    zps = [] if q is None or q.zeroPoint is None else [int(z) for z in np.asarray(q.zeroPoint)]
    if len(scales) > 1:
        quant = "per-channel"
    elif len(scales) == 1:
        quant = "per-tensor"
    else:
        quant = "none"
    if not zps:
        zero_point: Any = None
    elif len(set(zps)) == 1:
        zero_point = zps[0]
    else:
        zero_point = zps
    info = WeightInfo(
        layer=layer,
        op=op_name,
        op_index=op_index,
        tensor=tensor_index,
        tensor_name=tensor_name,
        shape=tuple(int(s) for s in values.shape),
        dtype=type_names.get(t.type, str(t.type)),
        channel_axis=axis,
        sparsity=0.0,
        unique_per_channel_max=0,
        unique_per_channel_mean=0.0,
        quantization=quant,
        zero_point=zero_point,
        blocks_2of4=None,
        values=values,
    )
    zeros = info.zeros_mask()
    uniq = _per_channel_unique(values, axis)
    info.sparsity = float(zeros.mean()) if zeros.size else 0.0
    info.unique_per_channel_max = int(uniq.max()) if uniq.size else 0
    info.unique_per_channel_mean = float(uniq.mean()) if uniq.size else 0.0
    info.blocks_2of4 = _blocks_2of4(zeros, op_name)
    return info


# -- targets -------------------------------------------------------------------


def unmet_targets(
    info: TfliteInfo,
    targets: Mapping[str, Mapping[str, Any]],
    *,
    tolerance: float = 0.02,
) -> list[dict]:
    """Which per-layer targets the shipped file misses.

    ``targets``: {layer: {"sparsity": 0.5, "structure": "2:4", "clusters": 16}}, as
    the prune and cluster stages put in ``StageOutcome.info["targets"]``. A sparsity
    counts as reached at ``>= target - tolerance``; clusters at ``<= clusters``
    unique values in every output channel; 2:4 when every group of 4 has 2 zeros.
    """
    by_layer = info.weights_by_layer()
    unmet = []
    for layer, want in targets.items():
        w = by_layer.get(layer)
        if w is None:
            unmet.append({"layer": layer, "key": "layer", "target": layer, "reached": None,
                          "note": "no weight tensor of this layer found in the .tflite"})
            continue
        if want.get("sparsity") is not None and w.sparsity < want["sparsity"] - tolerance:
            unmet.append({"layer": layer, "key": "sparsity", "target": want["sparsity"],
                          "reached": round(w.sparsity, 4)})
        if want.get("structure") == "2:4" and (w.blocks_2of4 or 0.0) < 1.0:
            unmet.append({"layer": layer, "key": "structure", "target": "2:4",
                          "reached": w.blocks_2of4})
        if want.get("clusters") is not None and w.unique_per_channel_max > want["clusters"]:
            unmet.append({"layer": layer, "key": "clusters", "target": want["clusters"],
                          "reached": w.unique_per_channel_max})
    return unmet


def merge_targets(*target_maps: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Combine the ``info["targets"]`` of several stages (later stages add keys)."""
    merged: dict[str, dict] = {}
    for tm in target_maps:
        for layer, want in (tm or {}).items():
            merged.setdefault(layer, {}).update(want)
    return merged


__all__ = [
    "OpInfo",
    "WeightInfo",
    "TfliteInfo",
    "inspect_tflite",
    "unmet_targets",
    "merge_targets",
    "WEIGHT_OPS",
]
