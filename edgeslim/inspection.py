"""`edgeslim inspect`: where a .tflite's size, memory and compute go, before anything is flashed.

Everything is read from the file by edgeslim.modelgraph (the one reader), so each row
joins the Keras layer, the TFLite op, its tensors, its weights and its cost:

- per operator: type, Keras layer, input/output shapes and types, parameters (stride,
  padding, fused activation, ...), weight bytes, parameter count, MACs
  (modelgraph.op_macs), sparsity and unique weight values (tflite_inspect.weight_info);
- memory: the bytes of activations live at each operator in execution order (a tensor
  lives from the op that writes it, or the start for a model input, to the last op that
  reads it, or the end for a model output; every tensor counted on its own, no aliasing
  or in-place reuse), its peak; the TFLite Micro arena, measured (edgeslim.micro); the C
  backend's static plan (edgeslim.codegen.memory_plan);
- size: model bytes, gzip bytes, and for each weight tensor the Shannon entropy of its
  stored values and the size of a Huffman code for them (Deep Compression's point: what
  pruning and weight sharing save once the weights are entropy-coded; code tables not
  counted);
- with a target: op support and flash/RAM margin against the profile (targets.check_model);
- with the float Keras model the int8 model was converted from and real inputs: the per-layer
  quantization error (edgeslim.quant_debug.analyse: cumulative SNR, the dB each layer adds,
  RMSE in output steps, a suggestion), the layer that does the most damage first.
"""

from __future__ import annotations

import gzip
import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping

import numpy as np

from edgeslim import modelgraph
from edgeslim.codegen import memplan
from edgeslim.errors import EdgeslimError, ModelLoadError
from edgeslim.modelgraph import Graph, Operator

_ENUM_OPTIONS = {"padding": modelgraph.padding_name,
                 "fusedActivationFunction": modelgraph.activation_name}


# --------------------------------------------------------------------------- entropy coding


def huffman_code_lengths(counts: Mapping[Hashable, int]) -> dict[Hashable, int]:
    """Code length in bits of each symbol of an optimal prefix (Huffman) code for these
    symbol counts. A lone symbol gets 1 bit (a code needs at least one bit per symbol)."""
    symbols = [(int(c), s) for s, c in counts.items() if c > 0]
    if not symbols:
        return {}
    if len(symbols) == 1:
        return {symbols[0][1]: 1}
    lengths = {s: 0 for _, s in symbols}
    # (count, tie-breaker, symbols under this node): the two rarest nodes merge, and every
    # symbol under them gets one more bit
    heap = [(c, i, [s]) for i, (c, s) in enumerate(symbols)]
    heapq.heapify(heap)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def huffman_bits(values: np.ndarray) -> int:
    """Bits of ``values`` Huffman-coded with a code built for their own histogram."""
    counts = Counter(np.asarray(values).ravel().tolist())
    lengths = huffman_code_lengths(counts)
    return int(sum(counts[s] * n for s, n in lengths.items()))


def entropy_bits(values: np.ndarray) -> float:
    """Shannon entropy of the values' histogram times their count: the bound no symbol
    code beats."""
    counts = np.array(list(Counter(np.asarray(values).ravel().tolist()).values()), dtype=np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


# --------------------------------------------------------------------------- memory


def activation_timeline(graph: Graph) -> tuple[list[memplan.Buffer], list[int]]:
    """The activation tensors as buffers with lifetimes in execution order, and the bytes
    live at each operator (see the module docstring for the rule)."""
    n = len(graph.operators)
    first: dict[int, int] = {i: 0 for i in graph.inputs}
    last: dict[int, int] = {}
    for step, op in enumerate(graph.operators):
        for t in op.present_inputs:
            if not graph.tensors[t].constant:
                first.setdefault(t, step)
                last[t] = step
        for t in op.outputs:
            first.setdefault(t, step)
            last[t] = max(last.get(t, step), step)
    for t in graph.outputs:
        last[t] = max(n - 1, 0)
    for t in graph.tensors:
        if t.variable:
            first[t.index], last[t.index] = 0, max(n - 1, 0)
    buffers = [memplan.Buffer(graph.tensors[t].name, graph.tensors[t].nbytes, first[t],
                              max(last.get(t, first[t]), first[t]))
               for t in sorted(first)]
    return buffers, memplan.live_bytes(buffers, n)


# --------------------------------------------------------------------------- per operator


def _options(op: Operator) -> dict[str, Any]:
    if op.options is None:
        return {}
    out = {}
    for k, v in vars(op.options).items():
        if k.startswith("_"):
            continue
        if k in _ENUM_OPTIONS:
            v = _ENUM_OPTIONS[k](v)
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif not isinstance(v, (int, float, str, bool, list, type(None))):
            continue
        out[k] = v
    return out


def _tensor_row(graph: Graph, i: int) -> dict:
    t = graph.tensors[i]
    return {"index": i, "name": t.name, "shape": list(t.shape), "dtype": t.dtype,
            "constant": t.constant, "bytes": t.nbytes}


def _parameter_tensors(graph: Graph, op: Operator) -> list[int]:
    """The weights and bias of a conv / depthwise / fully-connected op (what Keras counts as
    the layer's parameters); other ops' constants (axes, shapes, paddings) are not."""
    if op.opcode not in modelgraph.WEIGHT_OPS:
        return []
    return [i for pos, i in enumerate(op.inputs) if pos > 0 and i >= 0 and graph.tensors[i].constant]


def _op_row(graph: Graph, op: Operator) -> dict:
    from edgeslim.tflite_inspect import weight_info

    consts = [graph.tensors[i] for i in dict.fromkeys(op.present_inputs) if graph.tensors[i].constant]
    row = {
        "index": op.index,
        "op": op.opcode,
        "layer": op.layer,
        "inputs": [_tensor_row(graph, i) for i in op.present_inputs if not graph.tensors[i].constant],
        "outputs": [_tensor_row(graph, i) for i in op.outputs],
        "constants": [_tensor_row(graph, t.index) for t in consts],
        "params": _options(op),
        "weight_bytes": int(sum(t.nbytes for t in consts)),
        "parameters": int(sum(graph.tensors[i].size for i in _parameter_tensors(graph, op))),
        "macs": modelgraph.op_macs(graph, op),
        "sparsity": None,
        "unique_per_channel_max": None,
        "unique_values": None,
    }
    w = graph.weight_tensor(op)
    if w is not None and w.data is not None and w.data.ndim:
        info = weight_info(op, w)
        row.update(sparsity=round(info.sparsity, 4), unique_per_channel_max=info.unique_per_channel_max,
                   unique_values=int(np.unique(w.data).size), weight_tensor=w.index)
    return row


# --------------------------------------------------------------------------- the whole model


@dataclass
class Inspection:
    """What `edgeslim inspect` found; ``to_dict()`` is its JSON."""

    model_bytes: int
    gzip_bytes: int
    ops: list[dict]
    totals: dict
    memory: dict
    weights: list[dict]  # per weight tensor: stored, entropy and Huffman sizes
    target: dict | None = None
    notes: list[str] = field(default_factory=list)
    # quant_debug.QuantErrors.to_dict() plus "inputs" (where the samples came from), or None
    quantization_error: dict | None = None

    def to_dict(self) -> dict:
        return {
            "size": {"model_bytes": self.model_bytes, "gzip_bytes": self.gzip_bytes,
                     "weights": self.weights,
                     "weights_total": _sum_weights(self.weights)},
            "totals": self.totals,
            "ops": self.ops,
            "memory": self.memory,
            "target": self.target,
            "quantization_error": self.quantization_error,
            "notes": list(self.notes),
        }


def _sum_weights(rows: list[dict]) -> dict:
    stored = sum(r["stored_bytes"] for r in rows)
    huff = sum(r["huffman_bits"] for r in rows)
    ent = sum(r["entropy_bits"] for r in rows)
    return {"tensors": len(rows), "stored_bytes": stored, "entropy_bytes": round(ent / 8, 1),
            "huffman_bits": huff, "huffman_bytes": math.ceil(huff / 8),
            "huffman_ratio": round(huff / 8 / stored, 4) if stored else None}


def _weight_sizes(graph: Graph) -> list[dict]:
    rows, seen = [], set()
    for op in graph.operators:
        w = graph.weight_tensor(op)
        if w is None or w.data is None or w.index in seen:
            continue
        seen.add(w.index)
        ent, huff = entropy_bits(w.data), huffman_bits(w.data)
        rows.append({"tensor": w.index, "name": w.name, "layer": op.layer, "op_index": op.index,
                     "dtype": w.dtype, "values": int(w.data.size), "stored_bytes": w.nbytes,
                     "unique_values": int(np.unique(w.data).size),
                     "entropy_bits": round(ent, 1), "entropy_bytes": round(ent / 8, 1),
                     "huffman_bits": huff, "huffman_bytes": math.ceil(huff / 8)})
    return rows


def _totals(graph: Graph, ops: list[dict]) -> dict:
    consts = {t for op in graph.operators for t in op.present_inputs if graph.tensors[t].constant}
    params = {t for op in graph.operators for t in _parameter_tensors(graph, op)}
    return {
        "ops": len(ops),
        "macs": int(sum(r["macs"] for r in ops)),
        "parameters": int(sum(graph.tensors[t].size for t in params)),
        "weight_bytes": int(sum(graph.tensors[t].nbytes for t in consts)),
        "op_counts": dict(Counter(op.opcode for op in graph.operators)),
    }


def _target_fit(model_bytes: bytes, graph: Graph, target, arena: int | None) -> dict:
    from edgeslim.targets import arena_with_margin, check_model

    fit: dict[str, Any] = {
        "target": target.profile, "kind": target.kind, "runtime": target.runtime,
        "unsupported_ops": sorted({o.opcode for o in graph.operators if o.opcode not in target.ops}),
        "fits": True, "problem": None,
    }
    try:
        check = check_model(model_bytes, target, measure=False)
        fit.update(check.to_dict())
    except EdgeslimError as exc:
        fit.update(fits=False, problem=exc.message, hint=exc.hint)
    if target.kind == "mcu":
        needed = len(model_bytes) + target.runtime_flash_bytes
        fit.update(flash_needed_bytes=needed, flash_budget_bytes=target.flash_bytes,
                   flash_headroom_bytes=target.flash_bytes - needed)
        if arena is not None:
            with_margin = arena_with_margin(arena, target.arena_margin)
            fit.update(arena_measured_bytes=arena, arena_margin=target.arena_margin,
                       arena_bytes=with_margin, ram_budget_bytes=target.arena_budget_bytes,
                       ram_headroom_bytes=target.arena_budget_bytes - with_margin)
            if with_margin > target.arena_budget_bytes and fit["fits"]:
                fit.update(fits=False, problem=f"tensor arena {with_margin} B (with margin) > "
                                               f"{target.arena_budget_bytes} B available")
    return fit


def _check_same_input(graph: Graph, keras_model) -> None:
    """The Keras model must take what the .tflite takes (batch aside): a float model of
    another shape is not the one this .tflite was converted from."""
    model = keras_model
    if len(getattr(model, "inputs", None) or ()) != 1 or len(graph.inputs) != 1:
        return  # quant_debug.analyse says why it needs one Keras model with one input
    want = tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])
    have = tuple(None if d is None else int(d) for d in model.inputs[0].shape[1:])
    if len(want) != len(have) or any(h is not None and h != w for h, w in zip(have, want)):
        raise ModelLoadError(
            f"the Keras model {model.name!r} takes inputs of shape {have}, the .tflite "
            f"{want}: it is not the float model this .tflite was converted from",
            hint="Give --keras the model the .tflite was converted from (for a QAT build, the QAT model).")


def quantization_error(model_bytes: bytes, keras_model, x: np.ndarray, *, inputs: str = "",
                       max_samples: int = 256) -> dict:
    """Per-layer quantization error of the .tflite against the float ``keras_model`` on ``x``
    (quant_debug.analyse's dict; ``inputs`` says which samples, for the report)."""
    from edgeslim.quant_debug import analyse

    _check_same_input(modelgraph.read(bytes(model_bytes)), keras_model)
    result = analyse(bytes(model_bytes), keras_model, x, max_samples=max_samples).to_dict()
    result["inputs"] = inputs
    return result


def inspect_model(model_bytes: bytes, *, target=None, measure_arena: bool = True,
                  keras_model=None, x: np.ndarray | None = None, inputs: str = "",
                  max_samples: int = 256) -> Inspection:
    """Inspect an int8 (or any) .tflite. ``target``: a Target, for the fit section.
    ``measure_arena``: run TFLite Micro (a child process) to measure the exact arena.
    ``keras_model`` and ``x``: the float model the .tflite was converted from and real inputs
    (at most ``max_samples`` used; ``inputs`` names them), for the per-layer quantization error.

    Raises ModelFormatError for bytes that are not a readable TFLite model; what cannot be
    measured for this model (the C backend's plan of an op it lacks, a TFLM arena for a
    model TFLM cannot run) is reported with the reason instead."""
    data = bytes(model_bytes)
    graph = modelgraph.read(data)
    if (keras_model is None) != (x is None):
        raise EdgeslimError("the per-layer quantization error needs both the float Keras model and inputs",
                            "Pass keras_model and x together (edgeslim inspect --keras M --data D).")
    qerr = None
    if keras_model is not None:
        qerr = quantization_error(data, keras_model, x, inputs=inputs, max_samples=max_samples)
    ops = [_op_row(graph, op) for op in graph.operators]
    buffers, timeline = activation_timeline(graph)
    notes: list[str] = []
    peak = max(timeline, default=0)
    memory: dict[str, Any] = {
        "activations_peak_bytes": peak,
        "activations_peak_op": timeline.index(peak) if timeline else None,
        "timeline": [{"op": i, "op_type": graph.operators[i].opcode, "layer": graph.operators[i].layer,
                      "live_bytes": b,
                      "live": [x.name for x in buffers if x.first <= i <= x.last]}
                     for i, b in enumerate(timeline)],
        "activations": [x.as_dict() for x in buffers],
        "tflm_arena_bytes": None,
        "c_plan": None,
    }
    arena = None
    if measure_arena:
        from edgeslim import micro

        try:
            arena = micro.measure_arena(data)
            memory["tflm_arena_bytes"] = arena
            notes.append("TFLite Micro arena measured with the 64-bit host interpreter "
                         "(a 32-bit build needs slightly less)")
        except EdgeslimError as exc:
            memory["tflm_arena_error"] = exc.message
    from edgeslim import codegen

    try:
        plan = codegen.memory_plan(data, target=target)
        memory["c_plan"] = {k: v for k, v in plan.as_dict().items()}
    except EdgeslimError as exc:
        memory["c_plan_error"] = exc.message
    return Inspection(
        model_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)),
        ops=ops, totals=_totals(graph, ops), memory=memory, weights=_weight_sizes(graph),
        target=_target_fit(data, graph, target, arena) if target is not None else None,
        notes=notes, quantization_error=qerr,
    )


# --------------------------------------------------------------------------- rendering


def shapes_text(rows: list[dict]) -> str:
    """Tensor rows as "1x8x8x4 int8" (the text table and the HTML page)."""
    return " ".join("x".join(str(d) for d in r["shape"]) + f" {r['dtype'].lower()}" for r in rows)


_PARAM_KEYS = ("strideH", "strideW", "padding", "fusedActivationFunction", "depthMultiplier",
               "filterHeight", "filterWidth", "dilationHFactor", "dilationWFactor", "keepDims",
               "keepNumDims", "axis", "beta")
_SHORT = {"strideH": "sh", "strideW": "sw", "fusedActivationFunction": "act", "depthMultiplier": "mult",
          "filterHeight": "fh", "filterWidth": "fw", "dilationHFactor": "dh", "dilationWFactor": "dw",
          "keepDims": "keep", "keepNumDims": "keep"}


def params_text(params: dict) -> str:
    """The options that matter, shortly: "sh=2 sw=2 padding=SAME act=RELU"."""
    parts = []
    for k in _PARAM_KEYS:
        if k in params and params[k] is not None:
            v = params[k]
            if k.startswith("dilation") and v == 1 or k == "fusedActivationFunction" and v == "NONE":
                continue
            parts.append(f"{_SHORT.get(k, k)}={v}")
    return " ".join(parts)


def _rows(ins: Inspection) -> list[list[str]]:
    rows = []
    for r in ins.ops:
        rows.append([str(r["index"]), r["op"], r["layer"] or "-", shapes_text(r["inputs"]),
                     shapes_text(r["outputs"]),
                     params_text(r["params"]), str(r["weight_bytes"]), f"{r['macs']:,}",
                     "-" if r["sparsity"] is None else f"{r['sparsity']:.0%}",
                     "-" if r["unique_values"] is None else str(r["unique_values"])])
    return rows


_HEAD = ["#", "op", "layer", "input", "output", "params", "weight B", "MACs", "sparsity", "unique"]


def _summary_lines(ins: Inspection) -> list[str]:
    t, m, w = ins.totals, ins.memory, _sum_weights(ins.weights)
    lines = [
        f"totals: {t['ops']} ops, {t['macs']:,} MACs, {t['parameters']:,} parameters, "
        f"{t['weight_bytes']:,} B of constants",
        f"size: model {ins.model_bytes:,} B, gzip {ins.gzip_bytes:,} B; weights {w['stored_bytes']:,} B "
        f"stored, entropy {w['entropy_bytes']:,} B, Huffman {w['huffman_bytes']:,} B"
        + (f" ({w['huffman_ratio']:.0%})" if w["huffman_ratio"] is not None else ""),
        f"memory: activations peak {m['activations_peak_bytes']:,} B at op {m['activations_peak_op']}",
    ]
    if m.get("tflm_arena_bytes") is not None:
        lines.append(f"memory: TFLite Micro arena {m['tflm_arena_bytes']:,} B (measured)")
    elif m.get("tflm_arena_error"):
        lines.append(f"memory: TFLite Micro arena not measured: {m['tflm_arena_error']}")
    if m.get("c_plan"):
        lines.append(f"memory: C backend static arena {m['c_plan']['arena_size']:,} B "
                     f"(lower bound {m['c_plan']['lower_bound']:,} B)")
    elif m.get("c_plan_error"):
        lines.append(f"memory: no C backend plan: {m['c_plan_error']}")
    if ins.target is not None:
        f = ins.target
        verdict = "fits" if f["fits"] else f"does NOT fit: {f['problem']}"
        lines.append(f"target {f['target']}: {verdict}")
        if f["unsupported_ops"]:
            lines.append(f"  ops {f['runtime']} lacks: {', '.join(f['unsupported_ops'])}")
        if f.get("flash_needed_bytes") is not None:
            lines.append(f"  flash: {f['flash_needed_bytes']:,} B needed of {f['flash_budget_bytes']:,} B "
                         f"({f['flash_headroom_bytes']:,} B to spare)")
        if f.get("ram_headroom_bytes") is not None:
            lines.append(f"  RAM: arena {f['arena_bytes']:,} B with margin of {f['ram_budget_bytes']:,} B "
                         f"({f['ram_headroom_bytes']:,} B to spare)")
    return lines


_QHEAD = ["layer", "op", "SNR dB", "added dB", "RMSE steps", "suggestion"]


def _db(v: float | None) -> str:
    return "-" if v is None else ("exact" if v >= 999 else f"{v:.1f}")


def _quant_rows(q: dict) -> list[list[str]]:
    """The measured layers, worst first (by the dB each adds, as quant_debug.worst_first)."""
    by = {e["layer"]: e for e in q["layers"]}
    return [[e["layer"], f"{e['op_index']} {e['op']}", _db(e["snr_db"]), _db(e["added_snr_db"]),
             "-" if e["rmse_steps"] is None else f"{e['rmse_steps']:.2f}", e["suggestion"] or "-"]
            for e in (by[name] for name in q["worst_first"])]


def _quant_lines(q: dict) -> list[str]:
    """The headline: on what it was measured and the layer that does the most damage."""
    if not q["layers"]:
        return [f"quantization error: no layer of the .tflite has a float counterpart ({q['inputs']})"]
    worst = next(e for e in q["layers"] if e["layer"] == q["worst_first"][0])
    flagged = [e for e in q["layers"] if e["suggestion"]]
    lines = [f"quantization error (int8 vs float, {q['inputs']}; SNR cumulative, added = what the "
             f"layer itself loses, RMSE in steps of its output scale):",
             f"  worst layer: {worst['layer']} ({worst['op']}) adds {_db(worst['added_snr_db'])} dB, "
             f"SNR {_db(worst['snr_db'])} dB"
             + (f"; {len(flagged)} layer(s) need attention" if flagged else "; no layer needs attention")]
    if q.get("skipped"):
        lines.append("  not compared (no float counterpart): "
                     + ", ".join(f"op {s['op_index']} {s['op']}" for s in q["skipped"]))
    return lines


def _table(head: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    rows = [head] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def to_text(ins: Inspection) -> str:
    """The terminal table and summary; with a float model, the layers worst first."""
    lines = _table(_HEAD, _rows(ins)) + [""] + _summary_lines(ins)
    q = ins.quantization_error
    if q is not None:
        lines += [""] + _quant_lines(q)
        if q["layers"]:
            lines += _table(_QHEAD, _quant_rows(q), indent="  ")
    return "\n".join(lines) + "\n"


def to_markdown(ins: Inspection, title: str = "model") -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    out = [f"# edgeslim inspect: {title}", "", "| " + " | ".join(_HEAD) + " |",
           "|" + "---|" * len(_HEAD)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in _rows(ins)]
    out += ["", *[f"- {line}" for line in _summary_lines(ins)], "", "## Activation memory timeline", "",
            "| op | type | layer | live bytes |", "|---|---|---|---|"]
    out += [f"| {r['op']} | {r['op_type']} | {cell(r['layer'] or '-')} | {r['live_bytes']} |"
            for r in ins.memory["timeline"]]
    out += ["", "## Weights: stored vs entropy-coded", "",
            "| tensor | layer | values | unique | stored B | entropy B | Huffman B |", "|---|---|---|---|---|---|---|"]
    out += [f"| {w['tensor']} | {cell(w['layer'] or '-')} | {w['values']} | {w['unique_values']} | "
            f"{w['stored_bytes']} | {w['entropy_bytes']} | {w['huffman_bytes']} |" for w in ins.weights]
    q = ins.quantization_error
    if q is not None:
        out += ["", "## Per-layer quantization error (worst first)", "", *_quant_lines(q)]
        if q["layers"]:
            out += ["", "| " + " | ".join(_QHEAD) + " |", "|" + "---|" * len(_QHEAD)]
            out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in _quant_rows(q)]
    if ins.notes:
        out += ["", *[f"Note: {n}" for n in ins.notes]]
    return "\n".join(out) + "\n"


__all__ = ["Inspection", "inspect_model", "quantization_error", "activation_timeline", "huffman_code_lengths", "huffman_bits",
           "entropy_bits", "to_text", "to_markdown"]
