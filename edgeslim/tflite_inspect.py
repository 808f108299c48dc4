"""What a .tflite file holds: its ops, their dtypes, and its weights as they ship.

Sparsity and unique-values counts are measured here, on the converted file, not
on the Keras model: BatchNorm folding, per-channel int8 rounding and QAT can all
change them, and what the report claims must be what the device gets.

The file is read by edgeslim.modelgraph (the one verified reader; no TensorFlow):
ops, their Keras layers and the weights as stored come from there.

Weight layouts in TFLite (output-channel axis in brackets):
conv ``[O], H, W, I``; depthwise ``1, H, W, [C*M]``; fully connected ``[O], I``.
The 2:4 groups run along the last axis (the input channels) of conv and FC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from edgeslim import modelgraph
from edgeslim.modelgraph import BRIDGE_OPS, WEIGHT_OPS, Operator

NOT_COMPUTE = BRIDGE_OPS


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
    ops: list[Operator]  # every subgraph's, the main one first
    weights: list[WeightInfo]
    input_dtypes: list[str]
    output_dtypes: list[str]
    size_bytes: int

    @property
    def op_names(self) -> list[str]:
        return sorted({o.opcode for o in self.ops})

    @property
    def float_ops(self) -> list[Operator]:
        """Ops computing in float: not (DE)QUANTIZE and with a float32 input or output."""
        return [
            o
            for o in self.ops
            if o.opcode not in NOT_COMPUTE
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
                {"index": o.index, "op": o.opcode, "layer": o.layer} for o in self.float_ops
            ],
            "weight_sparsity": round(self.weight_sparsity, 4),
            "ops": [o.to_dict() for o in self.ops],
            "weights": [w.to_dict() for w in self.weights],
        }


# -- reading -------------------------------------------------------------------


def _per_channel_unique(values: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return np.array([np.unique(row).size for row in moved])


def _blocks_2of4(zeros: np.ndarray, op: str) -> float | None:
    if op == "DEPTHWISE_CONV_2D" or zeros.ndim < 2 or zeros.shape[-1] % 4:
        return None
    groups = zeros.reshape(-1, 4)
    return float(np.mean(groups.sum(axis=1) >= 2))


def inspect_tflite(model_bytes: bytes, layer_names: Iterable[str] | None = None) -> TfliteInfo:
    """What a .tflite holds. ``layer_names``: the Keras layer names, to match ops to.
    Raises ModelFormatError for bytes that are not a readable TFLite model."""
    graph = modelgraph.read(model_bytes, layer_names)
    weights: list[WeightInfo] = []
    for sg in graph.subgraphs:
        for op in sg.operators:
            w = modelgraph.weight_tensor(sg, op)
            if w is None or w.data is None or w.data.ndim == 0:
                continue
            weights.append(weight_info(op, w))
    return TfliteInfo(
        ops=graph.all_operators(),
        weights=weights,
        input_dtypes=[t.dtype for t in graph.input_tensors],
        output_dtypes=[t.dtype for t in graph.output_tensors],
        size_bytes=graph.size_bytes,
    )


def weight_info(op: Operator, t: modelgraph.Tensor) -> WeightInfo:
    """Sparsity, unique values per output channel and 2:4 structure of one weight tensor."""
    values = t.data
    axis = WEIGHT_OPS[op.opcode][1] % values.ndim
    scales, zps = t.scales, [int(z) for z in t.zero_points]
    if scales.size > 1:
        quant = "per-channel"
    elif scales.size == 1:
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
        layer=op.layer,
        op=op.opcode,
        op_index=op.index,
        tensor=t.index,
        tensor_name=t.name,
        shape=tuple(int(s) for s in values.shape),
        dtype=t.dtype,
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
    info.blocks_2of4 = _blocks_2of4(zeros, op.opcode)
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
    "WeightInfo",
    "TfliteInfo",
    "inspect_tflite",
    "unmet_targets",
    "merge_targets",
    "WEIGHT_OPS",
]
